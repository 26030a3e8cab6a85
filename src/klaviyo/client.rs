//! The HTTP engine: authentication, pacing, retries, pagination, tracing and metrics. The only
//! module of the crate that imports reqwest; the typed operations in `resources` are built on
//! [`KlaviyoClient::execute`].
//!
//! Retry rules (a request is *repeatable* when doing it twice leaves Klaviyo as doing it once):
//! - 429: nothing was done, so every request waits `Retry-After` and tries again.
//! - A connection that could not be established: nothing was sent, so every request retries.
//! - 5xx, timeouts, connections dropped after sending: the server may have acted. Repeatable
//!   requests back off (exponential, full jitter) and retry; creates do not, they go through
//!   [`KlaviyoClient::create_with_recovery`], which first checks whether the create happened.
//! - A response larger than [`MAX_RESPONSE_BYTES`] is not read past the limit; the server may
//!   have acted, so it is treated like a dropped connection.
//!
//! How long it may all take (each configurable in `klsync.yaml`, see [`ClientConfig`]): a
//! connection must be made within `connect_timeout` and a whole exchange done within `timeout`;
//! nothing is sent after the run's deadline, and after `max_consecutive_failures` attempts in a
//! row without an answer the client stops sending altogether (see `gate`). Without the last two,
//! a dead server cost every request `max_attempts` timeouts plus backoff: 5 x 30 s + up to
//! 7.5 s = ~152 s per read, more per create with its lookups, so minutes per change.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use super::decode::{self, Reply};
use super::error::{ApiError, ApiErrorObject, snippet};
use super::gate::Gate;
use super::operations::Operation;
use super::ratelimit::{Acquisition, InFlight, RateLimiters};
use super::record::{self, HttpRecorder};
use crate::settings::{self, Secret};

/// JSON:API media type, used for `accept` and `content-type`.
const JSON_API: &str = "application/vnd.api+json";

/// A stream of items from a paginated Klaviyo collection.
pub type ApiStream<T> = BoxStream<'static, Result<T, ApiError>>;

/// The largest response body klsync reads. Klaviyo's largest legitimate answers (a page of 100
/// profiles with every property, a bulk job's error page) are a few MB; anything much larger is
/// a broken or hostile server, and reading it unbounded could exhaust memory.
pub const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// The most pages read of one collection: 100 million items at 100 per page, far beyond any
/// Klaviyo account, yet a server whose `links.next` never ends is stopped. (A chain that comes
/// back to a page already read is stopped at once.)
pub const MAX_PAGES_PER_COLLECTION: u64 = 1_000_000;

// The defaults of `klaviyo:` in klsync.yaml, written down beside the settings they fill in.
pub use crate::manifest::settings::client_defaults::*;

/// How to reach Klaviyo and how patiently.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Origin such as `https://a.klaviyo.com` or the emulator's `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// Private API key.
    pub api_key: Secret,
    /// `revision` header value.
    pub revision: String,
    /// Timeout of one HTTP attempt, connect to last body byte.
    pub timeout: Duration,
    /// Timeout of establishing a connection.
    pub connect_timeout: Duration,
    /// Attempts per request, first included (retries on 429, 5xx, timeouts, resets).
    pub max_attempts: u32,
    /// Attempts in a row that got no answer (timeout, no connection) after which the client
    /// sends nothing more (the circuit breaker; see `gate`).
    pub max_consecutive_failures: u32,
    /// No request starts later than this after the client was built; `None`: no deadline.
    pub run_timeout: Option<Duration>,
    /// The largest response body read; see [`MAX_RESPONSE_BYTES`].
    pub max_response_bytes: usize,
    /// `None`: no client-side pacing. `Some(f)`: pace to Klaviyo's published limits times `f`
    /// (`1.0` = as published), including daily caps.
    pub rate_limit_factor: Option<f64>,
    /// The longest `Retry-After` the client waits out; a longer one fails the request with
    /// [`ApiError::RateLimitExhausted`] rather than stalling a run for hours.
    pub max_retry_after: Duration,
    /// First backoff step after a 5xx or transport failure; doubles per attempt (with full
    /// jitter), capped at 30 s.
    pub backoff_base: Duration,
    /// `--record-http`: where every exchange is written (see [`super::record`]).
    pub record_http: Option<HttpRecorder>,
}

impl ClientConfig {
    /// Defaults: revision [`settings::DEFAULT_REVISION`], the `DEFAULT_*` timeouts and limits
    /// of this module, published rate limits, `Retry-After` up to 120 s.
    pub fn new(base_url: impl Into<String>, api_key: Secret) -> Self {
        ClientConfig {
            base_url: base_url.into(),
            api_key,
            revision: settings::DEFAULT_REVISION.to_string(),
            timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            max_consecutive_failures: DEFAULT_MAX_CONSECUTIVE_FAILURES,
            run_timeout: Some(DEFAULT_RUN_TIMEOUT),
            max_response_bytes: MAX_RESPONSE_BYTES,
            rate_limit_factor: Some(1.0),
            max_retry_after: Duration::from_secs(120),
            backoff_base: DEFAULT_RETRY_BACKOFF,
            record_http: None,
        }
    }
}

/// Counters of one client (and all its clones), for run summaries.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ClientMetrics {
    /// HTTP requests sent, per `operationId` (retries included).
    pub requests: BTreeMap<String, u64>,
    /// Requests repeated after a 429, 5xx or transport failure.
    pub retries: u64,
    /// 429 responses received.
    pub rate_limited: u64,
    /// Time spent waiting on the client-side limiters, in milliseconds.
    pub limiter_wait_ms: u64,
    /// Time spent waiting before retries (`Retry-After` and backoff), in milliseconds.
    pub retry_wait_ms: u64,
    /// Creates whose outcome was ambiguous and that were found to have taken effect.
    pub recovered_creates: u64,
}

/// A Klaviyo API client. Cheap to clone; clones share the connection pool, the rate limiters
/// and the metrics.
#[derive(Clone)]
pub struct KlaviyoClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: url::Url,
    timeout: Duration,
    connect_timeout: Duration,
    max_response_bytes: usize,
    /// The one place that decides whether another request may be sent.
    gate: Gate,
    max_attempts: u32,
    max_retry_after: Duration,
    backoff_base: Duration,
    limiters: Option<RateLimiters>,
    metrics: Mutex<ClientMetrics>,
    recorder: Option<HttpRecorder>,
    /// For the recording: the key to redact and the headers sent with every request.
    api_key: Secret,
    revision: String,
}

impl std::fmt::Debug for KlaviyoClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KlaviyoClient")
            .field("base_url", &settings::redact_url(self.inner.base.as_str()))
            .field("paced", &self.inner.limiters.is_some())
            .finish_non_exhaustive()
    }
}

/// One HTTP request to make.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub op: Operation,
    /// Percent-encoded path starting with `/api/`.
    pub path: String,
    pub query: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    /// Whether sending it twice is the same as sending it once (see module docs).
    pub repeatable: bool,
    /// Why it is repeatable, for the retry log.
    pub why_repeatable: &'static str,
}

impl Call {
    /// A call to `op` at `path` (build it with [`path`]); repeatable unless it is a plain POST.
    /// Relationship POSTs, `profile-import` and bulk import jobs override this via
    /// [`Call::repeatable`].
    pub(crate) fn new(op: Operation, path: String) -> Self {
        let why_repeatable = match op.method() {
            "GET" => "a read changes nothing",
            "PATCH" => "a PATCH sets absolute values",
            "DELETE" => "deleting twice leaves the same state",
            _ => "",
        };
        Call {
            op,
            path,
            query: Vec::new(),
            body: None,
            repeatable: !why_repeatable.is_empty(),
            why_repeatable,
        }
    }

    pub(crate) fn query(mut self, key: &str, value: impl Into<String>) -> Self {
        self.query.push((key.to_string(), value.into()));
        self
    }

    pub(crate) fn json(mut self, body: &serde_json::Value) -> Self {
        self.body = Some(serde_json::to_vec(body).expect("JSON values always serialize"));
        self
    }

    /// Mark a POST as safe to repeat; `why` documents the reason at the call site.
    pub(crate) fn repeatable(mut self, why: &'static str) -> Self {
        self.repeatable = true;
        self.why_repeatable = why;
        self
    }
}

/// Deletes of a whole resource, for which a 404 on a repeat means the first attempt worked.
/// (Relationship deletes are excluded: their 404 means the parent resource does not exist.)
fn deletes_a_resource(op: Operation) -> bool {
    matches!(
        op,
        Operation::DeleteList
            | Operation::DeleteSegment
            | Operation::DeleteTag
            | Operation::DeleteTagGroup
    )
}

/// `/api/<part>/<part>...` with every part percent-encoded.
pub(crate) fn path(parts: &[&str]) -> String {
    let mut out = String::from("/api");
    for part in parts {
        out.push('/');
        for byte in part.bytes() {
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                out.push(byte as char);
            } else {
                out.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    out
}

/// What one attempt produced, before retry decisions.
enum Attempt {
    Response {
        status: u16,
        content_type: Option<String>,
        body: Vec<u8>,
        retry_after: Option<Duration>,
        /// The headers a `--record-http` recording keeps.
        recorded_headers: Vec<(String, String)>,
    },
    Failed {
        error: ApiError,
        /// The request never left this machine, so repeating it is always safe.
        not_sent: bool,
        /// Nothing at all came back (a timeout, no connection): counts toward the breaker.
        unanswered: bool,
    },
}

impl KlaviyoClient {
    /// Build a client. Fails on an unusable base URL or API key (the message never contains the
    /// key).
    pub fn new(config: ClientConfig) -> Result<Self, ApiError> {
        let base = url::Url::parse(&config.base_url).map_err(|e| {
            ApiError::Config(format!(
                "base URL {}: {e}",
                settings::redact_url(&config.base_url)
            ))
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(ApiError::Config(format!(
                "base URL {} is not an http(s) origin",
                settings::redact_url(&config.base_url)
            )));
        }
        let mut headers = HeaderMap::new();
        let mut auth =
            HeaderValue::from_str(&format!("Klaviyo-API-Key {}", config.api_key.expose()))
                .map_err(|_| {
                    ApiError::Config(
                        "the API key contains characters not allowed in a header".into(),
                    )
                })?;
        // Sensitive values print as `Sensitive` in Debug output (ours, reqwest's, hyper's).
        auth.set_sensitive(true);
        headers.insert(AUTHORIZATION, auth);
        headers.insert(
            "revision",
            HeaderValue::from_str(&config.revision)
                .map_err(|_| ApiError::Config(format!("invalid revision {:?}", config.revision)))?,
        );
        headers.insert(ACCEPT, HeaderValue::from_static(JSON_API));
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .default_headers(headers)
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .user_agent(concat!("klsync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiError::Config(format!("HTTP client: {}", e.without_url())))?;
        let limiters = config.rate_limit_factor.map(RateLimiters::new);
        Ok(KlaviyoClient {
            inner: Arc::new(Inner {
                http,
                gate: Gate::new(
                    settings::redact_url(base.as_str())
                        .trim_end_matches('/')
                        .to_owned(),
                    config.run_timeout,
                    config.max_consecutive_failures,
                ),
                base,
                timeout: config.timeout,
                connect_timeout: config.connect_timeout,
                max_response_bytes: config.max_response_bytes,
                max_attempts: config.max_attempts.max(1),
                max_retry_after: config.max_retry_after,
                backoff_base: config.backoff_base,
                limiters,
                metrics: Mutex::new(ClientMetrics::default()),
                recorder: config.record_http,
                api_key: config.api_key,
                revision: config.revision,
            }),
        })
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> ClientMetrics {
        self.metrics_lock().clone()
    }

    fn metrics_lock(&self) -> std::sync::MutexGuard<'_, ClientMetrics> {
        self.inner.metrics.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Why no more requests may be sent this run (the server stopped answering, or the run's
    /// deadline passed), if so. Callers doing many independent pieces of work check this
    /// before each, and stop rather than fail every remaining piece with the same cause.
    pub fn halted(&self) -> Option<ApiError> {
        self.inner.gate.admit_after(None, Duration::ZERO).err()
    }

    /// Send `call`, pacing and retrying per the module rules; returns the 2xx response.
    pub(crate) async fn execute(&self, call: &Call) -> Result<Reply, ApiError> {
        let extras = call
            .op
            .extra_buckets(call.query.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let mut attempt = 0;
        // Set once an attempt may have taken effect without us seeing the answer.
        let mut maybe_applied = false;
        loop {
            attempt += 1;
            let in_flight = self.pace(call.op, &extras).await?;
            // The one check before anything is sent: deadline, circuit breaker; and a stop
            // (Ctrl-C, SIGTERM: `crate::interrupt`).
            self.inner.gate.admit(call.op)?;
            crate::interrupt::check(call.op)?;
            let outcome = self.attempt(call, attempt).await;
            // Answered (or failed): the limiters time the request's place from now.
            drop(in_flight);
            match outcome {
                Attempt::Response {
                    status,
                    content_type,
                    body,
                    ..
                } if (200..300).contains(&status) => {
                    return Ok(Reply {
                        status,
                        content_type,
                        body,
                    });
                }
                // The earlier, unanswered DELETE did its job: the resource is gone, as asked.
                Attempt::Response { status: 404, .. }
                    if maybe_applied && deletes_a_resource(call.op) =>
                {
                    return Ok(Reply {
                        status: 204,
                        content_type: None,
                        body: Vec::new(),
                    });
                }
                Attempt::Response {
                    status: 429,
                    retry_after,
                    ..
                } => {
                    self.metrics_lock().rate_limited += 1;
                    let too_long = retry_after.is_some_and(|d| d > self.inner.max_retry_after);
                    if attempt >= self.inner.max_attempts || too_long {
                        return Err(ApiError::RateLimitExhausted {
                            operation: call.op,
                            retry_after,
                            attempts: attempt,
                        });
                    }
                    // Without Retry-After (not Klaviyo's behaviour, but proxies), back off.
                    let wait = retry_after.unwrap_or_else(|| self.backoff(attempt));
                    self.wait_before_retry(
                        call,
                        attempt,
                        wait,
                        "429",
                        "a 429 means nothing was done",
                    )
                    .await?;
                }
                Attempt::Response {
                    status,
                    content_type,
                    body,
                    ..
                } => {
                    let error = ApiError::Klaviyo {
                        status,
                        errors: ApiErrorObject::parse_body(&body, content_type.as_deref()),
                        operation: call.op,
                    };
                    if status < 500 || !call.repeatable || attempt >= self.inner.max_attempts {
                        return Err(error);
                    }
                    maybe_applied = true;
                    self.wait_before_retry(
                        call,
                        attempt,
                        self.backoff(attempt),
                        "5xx",
                        call.why_repeatable,
                    )
                    .await?;
                }
                Attempt::Failed {
                    error,
                    not_sent,
                    unanswered,
                } => {
                    // This silence opened the breaker: say so rather than "timed out", and
                    // that a write which cannot be checked now may have happened.
                    if unanswered && let Some(stop) = self.inner.gate.tripped() {
                        return Err(if call.repeatable || not_sent {
                            stop
                        } else {
                            ApiError::OutcomeUnknown {
                                operation: call.op,
                                cause: Box::new(stop),
                            }
                        });
                    }
                    if !(call.repeatable || not_sent) || attempt >= self.inner.max_attempts {
                        return Err(error);
                    }
                    maybe_applied |= !not_sent;
                    let safe_because = if not_sent {
                        "the request was never sent"
                    } else {
                        call.why_repeatable
                    };
                    let wait = self.backoff(attempt);
                    self.wait_before_retry(call, attempt, wait, "transport", safe_because)
                        .await?;
                }
            }
        }
    }

    /// Send a create and, if its outcome is ambiguous (5xx, timeout, reset), look the resource
    /// up by its natural key before deciding to send it again, so a create that did happen is
    /// never duplicated. `lookup` returns the existing resource, if any.
    ///
    /// Names are treated as unique keys for this: klsync manifests enforce unique list, segment
    /// and tag-group names (and tag names within a group), so a resource with the name we just
    /// tried to create is the one we created. Residual risk: if Klaviyo applies the lost create
    /// only after our lookup, the retry makes a duplicate; the next `plan` shows it.
    pub(crate) async fn create_with_recovery<T, D, L, F>(
        &self,
        call: &Call,
        decode: D,
        lookup: L,
    ) -> Result<T, ApiError>
    where
        D: Fn(Reply) -> Result<T, ApiError>,
        L: Fn() -> F,
        F: Future<Output = Result<Option<T>, ApiError>>,
    {
        debug_assert!(!call.repeatable, "creates are never blindly repeatable");
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.execute(call).await {
                Ok(reply) => return decode(reply),
                Err(error) if error.is_ambiguous() => {
                    tracing::warn!(
                        operation = call.op.operation_id(),
                        %error,
                        "create failed ambiguously; checking whether it took effect"
                    );
                    if let Some(existing) = lookup().await? {
                        tracing::info!(
                            operation = call.op.operation_id(),
                            "create had taken effect; using the existing resource"
                        );
                        self.metrics_lock().recovered_creates += 1;
                        return Ok(existing);
                    }
                    if attempt >= self.inner.max_attempts {
                        return Err(error);
                    }
                    self.wait_before_retry(
                        call,
                        attempt,
                        self.backoff(attempt),
                        "ambiguous create",
                        "a lookup found nothing the failed create could have made",
                    )
                    .await?;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Stream every item of a paginated collection, following `links.next` until it is absent
    /// or null. A `links.next` that leads back to a page already read, or a chain longer than
    /// [`MAX_PAGES_PER_COLLECTION`], ends the stream with [`ApiError::BadPagination`].
    pub(crate) fn paginate<W, T>(&self, first: Call) -> ApiStream<T>
    where
        W: DeserializeOwned + Send + 'static,
        T: From<W> + Send + 'static,
    {
        let client = self.clone();
        let pages = Pages::new(&first, MAX_PAGES_PER_COLLECTION);
        stream::try_unfold((Some(first), pages), move |(state, mut pages)| {
            let client = client.clone();
            async move {
                let Some(call) = state else {
                    return Ok(None);
                };
                let reply = client.execute(&call).await?;
                let page = decode::page::<W, T>(&reply, call.op)?;
                let next = match page.next {
                    Some(next) => {
                        let next = client.next_call(&call, &next)?;
                        pages.visit(&next)?;
                        Some(next)
                    }
                    None => None,
                };
                Ok(Some((page.items, (next, pages))))
            }
        })
        .map_ok(|items| stream::iter(items.into_iter().map(Ok)))
        .try_flatten()
        .boxed()
    }

    /// The call for a `links.next` URL. Only its path and query are used, re-rooted on our base
    /// URL: the API key is sent with every request, so it must never follow a link to another
    /// host.
    fn next_call(&self, current: &Call, next: &str) -> Result<Call, ApiError> {
        let url = url::Url::parse(next)
            .or_else(|_| self.inner.base.join(next))
            .map_err(|e| ApiError::BadPagination {
                operation: current.op,
                path: current.path.clone(),
                detail: format!(
                    "links.next is not a URL ({e}): {}",
                    snippet(next.as_bytes())
                ),
            })?;
        let prefix = self.inner.base.path().trim_end_matches('/');
        let path = url
            .path()
            .strip_prefix(prefix)
            .unwrap_or(url.path())
            .to_string();
        let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        Ok(Call {
            op: current.op,
            path,
            query,
            body: None,
            repeatable: true,
            why_repeatable: "a read changes nothing",
        })
    }

    /// Wait for the daily cap and every limiter the request charges; returns the request's place
    /// in the limiters, to be dropped when the request is answered (or given up).
    async fn pace(
        &self,
        op: Operation,
        extras: &[super::operations::ExtraBucket],
    ) -> Result<Option<InFlight>, ApiError> {
        let Some(limiters) = &self.inner.limiters else {
            return Ok(None);
        };
        limiters
            .count_daily(op)
            .map_err(|reached| ApiError::DailyCapReached {
                operation: reached.operation,
                cap: reached.cap,
            })?;
        let started = Instant::now();
        let in_flight = limiters
            .admit(Acquisition::new(op, extras), tokio::time::sleep)
            .await;
        let waited = started.elapsed();
        if waited >= Duration::from_millis(1) {
            let ms = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX);
            self.metrics_lock().limiter_wait_ms += ms;
        }
        Ok(Some(in_flight))
    }

    /// Wait before attempt `attempt + 1`, unless the gate already knows it will refuse it.
    async fn wait_before_retry(
        &self,
        call: &Call,
        attempt: u32,
        wait: Duration,
        reason: &str,
        safe_because: &str,
    ) -> Result<(), ApiError> {
        crate::interrupt::check(call.op)?;
        self.inner.gate.admit_after(Some(call.op), wait)?;
        tracing::warn!(
            operation = call.op.operation_id(),
            attempt,
            reason,
            safe_because,
            wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            "retrying Klaviyo request"
        );
        {
            let mut metrics = self.metrics_lock();
            metrics.retries += 1;
            metrics.retry_wait_ms += u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        }
        // A stop ends the wait; the next attempt is then refused.
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = crate::interrupt::stopped() => {}
        }
        Ok(())
    }

    /// Exponential backoff with full jitter: uniform in `[0, min(30 s, base * 2^(attempt-1))]`.
    fn backoff(&self, attempt: u32) -> Duration {
        let cap = Duration::from_secs(30);
        let ceiling = self
            .inner
            .backoff_base
            .saturating_mul(1u32 << (attempt - 1).min(16))
            .min(cap);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::random_range(0..=nanos))
    }

    /// One HTTP exchange, inside a `klaviyo.request` span.
    async fn attempt(&self, call: &Call, attempt: u32) -> Attempt {
        let span = tracing::info_span!(
            "klaviyo.request",
            operation = call.op.operation_id(),
            method = call.op.method(),
            path = %call.path,
            attempt,
            status = tracing::field::Empty,
            duration_ms = tracing::field::Empty,
        );
        *self
            .metrics_lock()
            .requests
            .entry(call.op.operation_id().to_string())
            .or_default() += 1;
        let started = Instant::now();
        crate::crashpoint::before_send(call.op.operation_id());
        let outcome = self.send(call).instrument(span.clone()).await;
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        span.record("duration_ms", duration_ms);
        if let Some(recorder) = &self.inner.recorder {
            self.record(recorder, call, attempt, duration_ms, &outcome);
        }
        match &outcome {
            Attempt::Response { status, .. } => {
                self.inner.gate.answered(call.op);
                span.record("status", status);
                span.in_scope(|| tracing::debug!(status, duration_ms, "klaviyo response"));
            }
            Attempt::Failed {
                error, unanswered, ..
            } => {
                if *unanswered {
                    self.inner.gate.unanswered(call.op, error);
                } else {
                    self.inner.gate.answered(call.op);
                }
                span.in_scope(|| tracing::debug!(%error, duration_ms, "klaviyo request failed"));
            }
        }
        outcome
    }

    fn record(
        &self,
        recorder: &HttpRecorder,
        call: &Call,
        attempt: u32,
        duration_ms: u64,
        outcome: &Attempt,
    ) {
        let url = self.url(call);
        let mut request_headers = vec![
            ("authorization", "Klaviyo-API-Key [redacted]".to_owned()),
            ("revision", self.inner.revision.clone()),
            ("accept", JSON_API.to_owned()),
        ];
        if call.body.is_some() {
            request_headers.push(("content-type", JSON_API.to_owned()));
        }
        let outcome = match outcome {
            Attempt::Response {
                status,
                body,
                recorded_headers,
                ..
            } => record::Outcome::Response {
                status: *status,
                headers: recorded_headers.clone(),
                body,
            },
            Attempt::Failed { error, .. } => record::Outcome::Failed(error.to_string()),
        };
        let exchange = record::Exchange {
            operation: call.op.operation_id(),
            attempt,
            duration_ms,
            method: call.op.method(),
            url: url.as_str(),
            request_headers,
            request_body: call.body.as_deref(),
            outcome,
        };
        recorder.record(&exchange, &[self.inner.api_key.expose()]);
    }

    fn url(&self, call: &Call) -> url::Url {
        let mut url = self.inner.base.clone();
        let prefix = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{prefix}{}", call.path));
        if call.query.is_empty() {
            url.set_query(None);
        } else {
            url.query_pairs_mut().clear().extend_pairs(&call.query);
        }
        url
    }

    async fn send(&self, call: &Call) -> Attempt {
        let url = self.url(call);
        let method = reqwest::Method::from_bytes(call.op.method().as_bytes())
            .expect("operation methods are valid HTTP methods");
        let mut request = self.inner.http.request(method, url);
        if let Some(body) = &call.body {
            request = request.header(CONTENT_TYPE, JSON_API).body(body.clone());
        }
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(error) => return self.failed(call, error),
        };
        let status = response.status().as_u16();
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let retry_after = header(RETRY_AFTER)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let content_type = header(CONTENT_TYPE);
        let recorded_headers = if self.inner.recorder.is_some() {
            response
                .headers()
                .iter()
                .filter(|(name, _)| record::kept_response_header(name.as_str()))
                .filter_map(|(name, value)| {
                    Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
                })
                .collect()
        } else {
            Vec::new()
        };
        let limit = self.inner.max_response_bytes;
        let too_large = || Attempt::Failed {
            error: ApiError::ResponseTooLarge {
                operation: call.op,
                path: call.path.clone(),
                status,
                limit,
            },
            not_sent: false,
            unanswered: false,
        };
        // Read incrementally, never past the limit: a declared length over it is refused
        // unread, an undeclared or false one is cut off at the limit.
        let declared = response.content_length().unwrap_or(0);
        if declared > limit as u64 {
            return too_large();
        }
        let mut body = Vec::with_capacity(usize::try_from(declared).unwrap_or(0));
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) if body.len() + chunk.len() > limit => return too_large(),
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(error) => return self.failed(call, error),
            }
        }
        crate::crashpoint::after_reply(call.op.operation_id());
        Attempt::Response {
            status,
            content_type,
            body,
            retry_after,
            recorded_headers,
        }
    }

    fn failed(&self, call: &Call, error: reqwest::Error) -> Attempt {
        let error = error.without_url();
        let not_sent = error.is_connect();
        let unanswered = error.is_connect() || error.is_timeout();
        let error = if error.is_timeout() {
            ApiError::Timeout {
                operation: call.op,
                path: call.path.clone(),
                limit: if error.is_connect() {
                    self.inner.connect_timeout
                } else {
                    self.inner.timeout
                },
                connecting: error.is_connect(),
            }
        } else {
            ApiError::Transport {
                operation: call.op,
                path: call.path.clone(),
                reason: transport_reason(&error),
            }
        };
        Attempt::Failed {
            error,
            not_sent,
            unanswered,
        }
    }
}

/// What a transport failure was, in a few words and the innermost cause: `could not connect:
/// Connection refused (os error 111)`, `the response broke off: ...`. `error` has had its URL
/// stripped, and the causes below it never hold one.
fn transport_reason(error: &reqwest::Error) -> String {
    let what = if error.is_connect() {
        "could not connect"
    } else if error.is_body() || error.is_decode() {
        "the response broke off"
    } else {
        "the connection failed before an answer"
    };
    let mut innermost: &dyn std::error::Error = error;
    while let Some(cause) = innermost.source() {
        innermost = cause;
    }
    format!("{what}: {innermost}")
}

/// The pages one pagination has asked for, to stop a `links.next` chain that loops or never
/// ends. Pages are remembered by a hash of their path and query: 8 bytes a page, so even the
/// largest legitimate collection costs little memory.
struct Pages {
    op: Operation,
    first_path: String,
    max_pages: u64,
    seen: std::collections::HashSet<u64>,
}

impl Pages {
    fn new(first: &Call, max_pages: u64) -> Pages {
        let mut pages = Pages {
            op: first.op,
            first_path: first.path.clone(),
            max_pages,
            seen: std::collections::HashSet::new(),
        };
        pages.seen.insert(Self::key(first));
        pages
    }

    fn key(call: &Call) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::hash::DefaultHasher::new();
        (&call.path, &call.query).hash(&mut hasher);
        hasher.finish()
    }

    /// Note that `next` is about to be read; refuse a page read before or one too many.
    fn visit(&mut self, next: &Call) -> Result<(), ApiError> {
        let bad = |detail: String| ApiError::BadPagination {
            operation: self.op,
            path: self.first_path.clone(),
            detail,
        };
        let read = self.seen.len() as u64;
        if !self.seen.insert(Self::key(next)) {
            return Err(bad(format!(
                "after {read} page(s), links.next leads back to a page already read ({}); the server's paging loops. Run the command again; if it persists, the server is not behaving like Klaviyo",
                describe_page(next)
            )));
        }
        if read >= self.max_pages {
            return Err(bad(format!(
                "links.next still continues after {read} pages, the most klsync reads of one collection"
            )));
        }
        Ok(())
    }
}

/// A page for messages: its path and cursor, never anything else of the query.
fn describe_page(call: &Call) -> String {
    match call.query.iter().find(|(key, _)| key == "page[cursor]") {
        Some((_, cursor)) => format!("{} cursor {:?}", call.path, snippet(cursor.as_bytes())),
        None => call.path.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_parts_are_percent_encoded() {
        assert_eq!(path(&["lists", "Y6nRLr"]), "/api/lists/Y6nRLr");
        assert_eq!(path(&["tags", "a/b c"]), "/api/tags/a%2Fb%20c");
    }

    #[test]
    fn only_plain_posts_default_to_not_repeatable() {
        assert!(!Call::new(Operation::CreateList, path(&["lists"])).repeatable);
        assert!(Call::new(Operation::UpdateList, path(&["lists", "x"])).repeatable);
        assert!(Call::new(Operation::RemoveProfilesFromList, path(&["lists", "x"])).repeatable);
    }

    #[test]
    fn client_debug_never_shows_the_key() {
        let mut config =
            ClientConfig::new("https://user:pw@a.klaviyo.com", Secret::new("pk_abc123"));
        config.rate_limit_factor = None;
        let debug = format!("{config:?}");
        assert!(!debug.contains("pk_abc123"), "{debug}");
        let client = KlaviyoClient::new(config).unwrap();
        let debug = format!("{client:?}");
        assert!(
            !debug.contains("pk_abc123") && !debug.contains("pw@"),
            "{debug}"
        );
    }

    #[test]
    fn bad_key_error_does_not_echo_it() {
        let err = KlaviyoClient::new(ClientConfig::new(
            "https://a.klaviyo.com",
            Secret::new("pk_bad\nkey"),
        ))
        .unwrap_err();
        assert!(!format!("{err} {err:?}").contains("pk_bad"));
    }

    #[tokio::test]
    async fn the_breaker_names_the_server_with_its_credentials_redacted() {
        // Nothing listens on port 1: every connection is refused at once.
        let mut config = ClientConfig::new("http://user:pw@127.0.0.1:1", Secret::new("pk_abc123"));
        config.rate_limit_factor = None;
        config.backoff_base = Duration::from_millis(1);
        let client = KlaviyoClient::new(config).unwrap();
        let err = client.get_list("L1").await.unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(err, ApiError::Unreachable { failures: 3, .. }),
            "{err:?}"
        );
        assert!(message.contains("127.0.0.1:1"), "{message}");
        assert!(message.contains("could not connect"), "{message}");
        assert!(
            !message.contains("pw") && !message.contains("pk_abc123"),
            "{message}"
        );
    }

    fn page(cursor: &str) -> Call {
        Call::new(Operation::GetLists, path(&["lists"])).query("page[cursor]", cursor)
    }

    #[test]
    fn a_links_next_chain_that_comes_back_is_stopped_whatever_its_length() {
        let first = Call::new(Operation::GetLists, path(&["lists"]));
        let mut pages = Pages::new(&first, MAX_PAGES_PER_COLLECTION);
        for cursor in ["a", "b", "c"] {
            pages.visit(&page(cursor)).unwrap();
        }
        let err = pages.visit(&page("a")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "get_lists /api/lists: pagination stopped: after 4 page(s), links.next leads back to a page already read (/api/lists cursor \"a\"); the server's paging loops. Run the command again; if it persists, the server is not behaving like Klaviyo"
        );
        let mut pages = Pages::new(&first, MAX_PAGES_PER_COLLECTION);
        assert!(pages.visit(&first).is_err(), "a page pointing at itself");
    }

    #[test]
    fn a_links_next_chain_that_never_ends_is_stopped_at_the_page_cap() {
        let first = Call::new(Operation::GetLists, path(&["lists"]));
        let mut pages = Pages::new(&first, 3);
        pages.visit(&page("1")).unwrap();
        pages.visit(&page("2")).unwrap();
        let err = pages.visit(&page("3")).unwrap_err();
        assert!(
            err.to_string()
                .contains("links.next still continues after 3 pages, the most klsync reads"),
            "{err}"
        );
    }

    #[test]
    fn backoff_stays_under_its_ceiling() {
        let mut config = ClientConfig::new("http://127.0.0.1:1", Secret::new("k"));
        config.backoff_base = Duration::from_millis(100);
        let client = KlaviyoClient::new(config).unwrap();
        for attempt in 1..20 {
            let ceiling = Duration::from_millis(100)
                .saturating_mul(1 << (attempt - 1).min(16))
                .min(Duration::from_secs(30));
            assert!(client.backoff(attempt) <= ceiling);
        }
    }
}
