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

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use super::error::{ApiError, ApiErrorObject, snippet};
use super::operations::Operation;
use super::ratelimit::{Acquisition, RateLimiters};
use super::types::CollectionDocument;
use crate::settings::{self, Secret};

/// JSON:API media type, used for `accept` and `content-type`.
const JSON_API: &str = "application/vnd.api+json";

/// A stream of items from a paginated Klaviyo collection.
pub type ApiStream<T> = BoxStream<'static, Result<T, ApiError>>;

/// How to reach Klaviyo and how patiently.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Origin such as `https://a.klaviyo.com` or the emulator's `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// Private API key.
    pub api_key: Secret,
    /// `revision` header value.
    pub revision: String,
    /// Timeout of one HTTP request, connect to last body byte.
    pub timeout: Duration,
    /// Attempts per request, first included (retries on 429, 5xx, timeouts, resets).
    pub max_attempts: u32,
    /// `None`: no client-side pacing. `Some(f)`: pace to Klaviyo's published limits times `f`
    /// (`1.0` = as published), including daily caps.
    pub rate_limit_factor: Option<f64>,
    /// The longest `Retry-After` the client waits out; a longer one fails the request with
    /// [`ApiError::RateLimitExhausted`] rather than stalling a run for hours.
    pub max_retry_after: Duration,
    /// First backoff step after a 5xx or transport failure; doubles per attempt (with full
    /// jitter), capped at 30 s.
    pub backoff_base: Duration,
}

impl ClientConfig {
    /// Defaults: revision [`settings::DEFAULT_REVISION`], 30 s timeout, 5 attempts, published
    /// limits, `Retry-After` up to 120 s, 500 ms backoff base.
    pub fn new(base_url: impl Into<String>, api_key: Secret) -> Self {
        ClientConfig {
            base_url: base_url.into(),
            api_key,
            revision: settings::DEFAULT_REVISION.to_string(),
            timeout: Duration::from_secs(30),
            max_attempts: 5,
            rate_limit_factor: Some(1.0),
            max_retry_after: Duration::from_secs(120),
            backoff_base: Duration::from_millis(500),
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
    max_attempts: u32,
    max_retry_after: Duration,
    backoff_base: Duration,
    limiters: Option<RateLimiters>,
    metrics: Mutex<ClientMetrics>,
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
    pub fn new(op: Operation, path: String) -> Self {
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

    pub fn query(mut self, key: &str, value: impl Into<String>) -> Self {
        self.query.push((key.to_string(), value.into()));
        self
    }

    pub fn json(mut self, body: &serde_json::Value) -> Self {
        self.body = Some(serde_json::to_vec(body).expect("JSON values always serialize"));
        self
    }

    /// Mark a POST as safe to repeat; `why` documents the reason at the call site.
    pub fn repeatable(mut self, why: &'static str) -> Self {
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

/// A response with a 2xx status.
pub(crate) struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json<T: DeserializeOwned>(&self, op: Operation) -> Result<T, ApiError> {
        serde_json::from_slice(&self.body).map_err(|e| ApiError::Decode {
            operation: op,
            status: self.status,
            message: e.to_string(),
            body_snippet: snippet(&self.body),
        })
    }
}

/// What one attempt produced, before retry decisions.
enum Attempt {
    Response {
        status: u16,
        body: Vec<u8>,
        retry_after: Option<Duration>,
    },
    Failed {
        error: ApiError,
        /// The request never left this machine, so repeating it is always safe.
        not_sent: bool,
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
            .user_agent(concat!("klsync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiError::Config(format!("HTTP client: {}", e.without_url())))?;
        let limiters = config.rate_limit_factor.map(RateLimiters::new);
        Ok(KlaviyoClient {
            inner: Arc::new(Inner {
                http,
                base,
                max_attempts: config.max_attempts.max(1),
                max_retry_after: config.max_retry_after,
                backoff_base: config.backoff_base,
                limiters,
                metrics: Mutex::new(ClientMetrics::default()),
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
            self.pace(call.op, &extras).await?;
            crate::interrupt::check(call.op)?;
            match self.attempt(call, attempt).await {
                Attempt::Response { status, body, .. } if (200..300).contains(&status) => {
                    return Ok(Reply { status, body });
                }
                // The earlier, unanswered DELETE did its job: the resource is gone, as asked.
                Attempt::Response { status: 404, .. }
                    if maybe_applied && deletes_a_resource(call.op) =>
                {
                    return Ok(Reply {
                        status: 204,
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
                Attempt::Response { status, body, .. } => {
                    let error = ApiError::Klaviyo {
                        status,
                        errors: ApiErrorObject::parse_body(&body),
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
                Attempt::Failed { error, not_sent } => {
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
    /// or null.
    pub(crate) fn paginate<W, T>(&self, first: Call) -> ApiStream<T>
    where
        W: DeserializeOwned + Send + 'static,
        T: From<W> + Send + 'static,
    {
        let client = self.clone();
        stream::try_unfold(Some(first), move |state| {
            let client = client.clone();
            async move {
                let Some(call) = state else {
                    return Ok(None);
                };
                let reply = client.execute(&call).await?;
                let document: CollectionDocument<W> = reply.json(call.op)?;
                let next = match document.links.and_then(|links| links.next) {
                    Some(next) => Some(client.next_call(&call, &next)?),
                    None => None,
                };
                Ok(Some((document.data, next)))
            }
        })
        .map_ok(|page| stream::iter(page.into_iter().map(|item| Ok(T::from(item)))))
        .try_flatten()
        .boxed()
    }

    /// The call for a `links.next` URL. Only its path and query are used, re-rooted on our base
    /// URL: the API key is sent with every request, so it must never follow a link to another
    /// host.
    fn next_call(&self, current: &Call, next: &str) -> Result<Call, ApiError> {
        let bad = |message: String| ApiError::Decode {
            operation: current.op,
            status: 200,
            message,
            body_snippet: String::new(),
        };
        let url = url::Url::parse(next)
            .or_else(|_| self.inner.base.join(next))
            .map_err(|e| bad(format!("links.next is not a URL: {e}")))?;
        let prefix = self.inner.base.path().trim_end_matches('/');
        let path = url
            .path()
            .strip_prefix(prefix)
            .unwrap_or(url.path())
            .to_string();
        let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        if path == current.path && query == current.query {
            return Err(bad("links.next points at the page just read".into()));
        }
        Ok(Call {
            op: current.op,
            path,
            query,
            body: None,
            repeatable: true,
            why_repeatable: "a read changes nothing",
        })
    }

    /// Wait for the daily cap and every limiter the request charges.
    async fn pace(
        &self,
        op: Operation,
        extras: &[super::operations::ExtraBucket],
    ) -> Result<(), ApiError> {
        let Some(limiters) = &self.inner.limiters else {
            return Ok(());
        };
        limiters
            .count_daily(op)
            .map_err(|reached| ApiError::DailyCapReached {
                operation: reached.operation,
                cap: reached.cap,
            })?;
        let mut acquisition = Acquisition::new(op, extras);
        let started = Instant::now();
        let mut waited = false;
        while let Err(wait) = limiters.poll(&mut acquisition) {
            waited = true;
            tokio::time::sleep(wait).await;
        }
        if waited {
            let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.metrics_lock().limiter_wait_ms += ms;
        }
        Ok(())
    }

    async fn wait_before_retry(
        &self,
        call: &Call,
        attempt: u32,
        wait: Duration,
        reason: &str,
        safe_because: &str,
    ) -> Result<(), ApiError> {
        crate::interrupt::check(call.op)?;
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
        match &outcome {
            Attempt::Response { status, .. } => {
                span.record("status", status);
                span.in_scope(|| tracing::debug!(status, duration_ms, "klaviyo response"));
            }
            Attempt::Failed { error, .. } => {
                span.in_scope(|| tracing::debug!(%error, duration_ms, "klaviyo request failed"));
            }
        }
        outcome
    }

    async fn send(&self, call: &Call) -> Attempt {
        let mut url = self.inner.base.clone();
        let prefix = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{prefix}{}", call.path));
        if call.query.is_empty() {
            url.set_query(None);
        } else {
            url.query_pairs_mut().clear().extend_pairs(&call.query);
        }
        let method = reqwest::Method::from_bytes(call.op.method().as_bytes())
            .expect("operation methods are valid HTTP methods");
        let mut request = self.inner.http.request(method, url);
        if let Some(body) = &call.body {
            request = request.header(CONTENT_TYPE, JSON_API).body(body.clone());
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return self.failed(call, error),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        match response.bytes().await {
            Ok(body) => {
                crate::crashpoint::after_reply(call.op.operation_id());
                Attempt::Response {
                    status,
                    body: body.to_vec(),
                    retry_after,
                }
            }
            Err(error) => self.failed(call, error),
        }
    }

    fn failed(&self, call: &Call, error: reqwest::Error) -> Attempt {
        let not_sent = error.is_connect();
        let error = if error.is_timeout() {
            ApiError::Timeout {
                operation: call.op,
                path: call.path.clone(),
            }
        } else {
            ApiError::Transport {
                operation: call.op,
                path: call.path.clone(),
                source: Box::new(error.without_url()),
            }
        };
        Attempt::Failed { error, not_sent }
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
