//! The HTTP side: a TCP listener whose connections can be killed (for `reset` faults), and the
//! request pipeline every `/api` call goes through:
//!
//! route (404/405) → latency → auth (401) → revision (400) → injected fault → rate limit (429)
//! → body checks (413/415/400) → handler → response with `RateLimit-*` headers → stats.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use axum::serve::{IncomingStream, Listener};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::spec;
use klaviyo_spec::operations::{Operation, match_template};

use super::faults::{Fault, FaultInjector, Timing};
use super::handlers::{self, bulk};
use super::jsonapi::{ApiError, Reply, RequestCtx};
use super::ratelimit::{Bucket, Decision, Limiter};
use super::state::State;
use super::stats::StatsSnapshot;

/// Largest request body Klaviyo accepts (decompressed).
pub const MAX_BODY: usize = 5 * 1024 * 1024;

/// Shared emulator internals.
#[derive(Debug)]
pub struct App {
    /// The account.
    pub state: Mutex<State>,
    /// Request counters.
    pub stats: Mutex<StatsSnapshot>,
    /// Rate limiter.
    pub limiter: Mutex<Limiter>,
    /// Fault injector.
    pub faults: Mutex<FaultInjector>,
    /// Accepted API keys, each with its scopes.
    pub api_keys: Vec<KeyGrant>,
    /// Seed, for resetting the state.
    pub seed: u64,
    /// Delay before a bulk job starts, and again before it completes.
    pub job_delay: Duration,
}

/// An API key the emulator accepts, and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyGrant {
    /// The key, as sent after `Klaviyo-API-Key `.
    pub key: String,
    /// `None`: every scope (a full-access key).
    pub scopes: Option<std::collections::BTreeSet<String>>,
}

impl KeyGrant {
    /// `KEY` (full access) or `KEY:scope,scope` (only those scopes; `lists:write` does not
    /// imply `lists:read`, as in Klaviyo's key settings where each is granted on its own).
    /// Klaviyo's private keys never hold a `:`.
    pub fn parse(text: &str) -> Result<KeyGrant, String> {
        let (key, scopes) = match text.split_once(':') {
            None => (text, None),
            Some((key, scopes)) => {
                let scopes: std::collections::BTreeSet<String> = scopes
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                for scope in &scopes {
                    let known = Operation::ALL
                        .iter()
                        .any(|op| op.scopes().contains(&scope.as_str()));
                    if !known {
                        return Err(format!(
                            "API key {}…: unknown scope {scope:?}; scopes look like lists:read, \
                             profiles:write",
                            key.chars().take(6).collect::<String>()
                        ));
                    }
                }
                (key, Some(scopes))
            }
        };
        if key.trim().is_empty() {
            return Err("an API key is empty".into());
        }
        Ok(KeyGrant {
            key: key.trim().to_owned(),
            scopes,
        })
    }

    /// The scopes `op` needs that this key lacks.
    pub fn missing_scopes(&self, op: Operation) -> Vec<&'static str> {
        match &self.scopes {
            None => Vec::new(),
            Some(granted) => op
                .scopes()
                .iter()
                .copied()
                .filter(|scope| !granted.contains(*scope))
                .collect(),
        }
    }
}

/// Locks a mutex, recovering the data if a panicking request poisoned it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A connection's kill switch, handed to each request as connect info.
#[derive(Debug, Clone)]
pub struct Conn {
    killed: Arc<AtomicBool>,
}

/// A TCP stream that fails every read and write once its kill switch is thrown, so the server
/// drops the connection without sending the response.
#[derive(Debug)]
pub struct KillableStream {
    inner: TcpStream,
    killed: Arc<AtomicBool>,
}

fn reset_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        "connection reset by fault injection",
    )
}

impl AsyncRead for KillableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.killed.load(Ordering::SeqCst) {
            return Poll::Ready(Err(reset_error()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.killed.load(Ordering::SeqCst) {
            return Poll::Ready(Err(reset_error()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.killed.load(Ordering::SeqCst) {
            return Poll::Ready(Err(reset_error()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A listener producing [`KillableStream`]s.
#[derive(Debug)]
pub struct KillableListener {
    inner: TcpListener,
}

impl KillableListener {
    /// Wraps a bound listener.
    pub fn new(inner: TcpListener) -> Self {
        KillableListener { inner }
    }
}

impl Listener for KillableListener {
    type Io = KillableStream;
    type Addr = (SocketAddr, Conn);

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let killed = Arc::new(AtomicBool::new(false));
                    let conn = Conn {
                        killed: Arc::clone(&killed),
                    };
                    return (
                        KillableStream {
                            inner: stream,
                            killed,
                        },
                        (addr, conn),
                    );
                }
                // Out of file descriptors and the like: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok((
            self.inner.local_addr()?,
            Conn {
                killed: Arc::new(AtomicBool::new(false)),
            },
        ))
    }
}

impl Connected<IncomingStream<'_, KillableListener>> for Conn {
    fn connect_info(stream: IncomingStream<'_, KillableListener>) -> Self {
        stream.remote_addr().1.clone()
    }
}

/// The buckets a request counts against: its operation, plus the stricter extras it joins. The
/// extras come from `Operation::extra_buckets`, the same rules the client paces itself by.
pub fn buckets_for(op: Operation, query: &[(String, String)]) -> Vec<Bucket> {
    let primary = Bucket {
        name: op.operation_id().to_owned(),
        limit: op.rate_limit(),
    };
    let extras = op
        .extra_buckets(query.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .into_iter()
        .map(|extra| Bucket {
            name: format!("{}:{}", op.operation_id(), extra.name()),
            limit: extra.rate_limit(),
        });
    std::iter::once(primary).chain(extras).collect()
}

/// The decoded `key=value` pairs of `uri`'s query string, into a list or a map.
fn query_pairs<C: FromIterator<(String, String)>>(uri: &axum::http::Uri) -> C {
    uri.query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_else(|| std::iter::empty().collect())
}

fn route(method: &Method, path: &str) -> Result<(Operation, Vec<String>), ApiError> {
    let mut path_known = false;
    for op in Operation::ALL {
        if let Some(params) = match_template(op.path_template(), path) {
            if op.method() == method.as_str() {
                return Ok((*op, params.into_iter().map(str::to_owned).collect()));
            }
            path_known = true;
        }
    }
    if path_known {
        Err(ApiError::method_not_allowed(method.as_str()))
    } else {
        Err(ApiError::no_route(path))
    }
}

fn valid_revision(value: &str) -> bool {
    let date = value.strip_suffix(".pre").unwrap_or(value);
    date.len() == 10 && chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_ok()
}

fn takes_body(op: Operation) -> bool {
    matches!(op.method(), "POST" | "PATCH")
        || matches!(
            op,
            Operation::RemoveProfilesFromList
                | Operation::RemoveTagFromLists
                | Operation::RemoveTagFromSegments
        )
}

fn json_response(status: u16, body: Option<&Value>) -> Response {
    let mut builder = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
    let body = match body {
        Some(v) => {
            builder = builder.header(header::CONTENT_TYPE, "application/vnd.api+json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    builder.body(body).unwrap_or_default()
}

fn error_response(app: &App, err: &ApiError) -> Response {
    let id = lock(&app.state).uuid();
    let mut response = json_response(err.status, Some(&err.body(id)));
    if let Some(seconds) = err.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

fn base_url(headers: &HeaderMap, local: SocketAddr) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map_or_else(|| local.to_string(), str::to_owned);
    format!("http://{host}")
}

/// Outcome of the pipeline before stats are recorded.
enum Outcome {
    Respond(Response),
    Reset,
}

/// The axum fallback handler for every request.
pub async fn handle(
    AxumState((app, local)): AxumState<(Arc<App>, SocketAddr)>,
    ConnectInfo(conn): ConnectInfo<Conn>,
    request: Request,
) -> Response {
    let path = request.uri().path().to_owned();
    if path.starts_with("/__emulator/") {
        return admin(&app, request).await;
    }
    let method = request.method().clone();
    let trimmed = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path.as_str()
    }
    .to_owned();
    let (key, outcome) = match route(&method, &trimmed) {
        Err(err) => (
            format!("{method} unmatched"),
            Outcome::Respond(error_response(&app, &err)),
        ),
        Ok((op, params)) => {
            let key = format!("{} {}", op.method(), op.path_template());
            (
                key,
                pipeline(&app, local, op, params, trimmed, request).await,
            )
        }
    };
    let (status, response) = match outcome {
        Outcome::Respond(r) => (r.status().as_u16().to_string(), r),
        Outcome::Reset => {
            conn.killed.store(true, Ordering::SeqCst);
            ("reset".to_owned(), json_response(500, None))
        }
    };
    lock(&app.stats).record(&key, &status);
    response
}

async fn pipeline(
    app: &Arc<App>,
    local: SocketAddr,
    op: Operation,
    params: Vec<String>,
    path: String,
    request: Request,
) -> Outcome {
    let latency = lock(&app.faults).latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let grant = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Klaviyo-API-Key "))
        .and_then(|key| app.api_keys.iter().find(|grant| grant.key == key.trim()));
    let Some(grant) = grant else {
        return Outcome::Respond(error_response(app, &ApiError::unauthorized()));
    };
    let missing = grant.missing_scopes(op);
    if !missing.is_empty() {
        return Outcome::Respond(error_response(app, &ApiError::permission_denied(&missing)));
    }
    match headers.get("revision").and_then(|h| h.to_str().ok()) {
        Some(r) if valid_revision(r) => {}
        Some(r) => {
            return Outcome::Respond(error_response(
                app,
                &ApiError::invalid_parameter(
                    "revision",
                    format!("'{r}' is not a valid revision; use YYYY-MM-DD."),
                ),
            ));
        }
        None => {
            return Outcome::Respond(error_response(
                app,
                &ApiError::invalid_parameter("revision", "The 'revision' header is required."),
            ));
        }
    }
    let is_write = op.method() != "GET";
    let fault = lock(&app.faults).next(is_write);
    match fault {
        Fault::TooManyRequests => {
            return Outcome::Respond(error_response(app, &ApiError::throttled(1)));
        }
        Fault::ServerError(Timing::BeforeWrite) => {
            return Outcome::Respond(error_response(app, &ApiError::server_error()));
        }
        Fault::Reset(Timing::BeforeWrite) => return Outcome::Reset,
        _ => {}
    }
    let query: Vec<(String, String)> = query_pairs(&parts.uri);
    let decision = lock(&app.limiter).check(&buckets_for(op, &query));
    if let Decision::Limited {
        retry_after_seconds,
    } = decision
    {
        return Outcome::Respond(error_response(
            app,
            &ApiError::throttled(retry_after_seconds),
        ));
    }
    let mut body = match read_body(op, headers, body).await {
        Ok(b) => b,
        Err(err) => return Outcome::Respond(error_response(app, &err)),
    };
    if matches!(op, Operation::CreateSegment | Operation::UpdateSegment)
        && lock(&app.state).modes.canonical_segments
        && let Some(body) = body.as_mut()
    {
        crate::modes::accept_canonical(body);
    }
    let checked = spec::validate_query(op, &query).and_then(|()| match &body {
        Some(body) => spec::validate_request(op, body),
        None => Ok(()),
    });
    if let Err(err) = checked {
        return Outcome::Respond(error_response(app, &err));
    }
    let ctx = RequestCtx {
        base: base_url(headers, local),
        path,
        query,
        params,
        body,
    };
    let result = {
        let mut state = lock(&app.state);
        handlers::dispatch(op, &ctx, &mut state)
    };
    match fault {
        Fault::ServerError(Timing::AfterWrite) => {
            return Outcome::Respond(error_response(app, &ApiError::server_error()));
        }
        Fault::Reset(Timing::AfterWrite) => {
            if let Ok(Reply {
                start_job: Some(job),
                ..
            }) = &result
            {
                spawn_job(app, job.clone());
            }
            return Outcome::Reset;
        }
        _ => {}
    }
    let mut response = match result {
        Ok(reply) => {
            if let Some(job) = &reply.start_job {
                spawn_job(app, job.clone());
            }
            json_response(reply.status, reply.body.as_ref())
        }
        Err(err) => error_response(app, &err),
    };
    if let Decision::Allowed {
        limit,
        remaining,
        reset_seconds,
    } = decision
        && limit > 0
    {
        let h = response.headers_mut();
        h.insert("RateLimit-Limit", HeaderValue::from(limit));
        h.insert("RateLimit-Remaining", HeaderValue::from(remaining));
        h.insert("RateLimit-Reset", HeaderValue::from(reset_seconds));
    }
    Outcome::Respond(response)
}

async fn read_body(
    op: Operation,
    headers: &HeaderMap,
    body: Body,
) -> Result<Option<Value>, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_BODY + 1)
        .await
        .map_err(|_| ApiError::too_large("5 MB"))?;
    if bytes.len() > MAX_BODY {
        return Err(ApiError::too_large("5 MB"));
    }
    if !takes_body(op) && bytes.is_empty() {
        return Ok(None);
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media != "application/vnd.api+json" && media != "application/json" {
        return Err(ApiError::unsupported_media_type(content_type));
    }
    let single_profile = matches!(
        op,
        Operation::CreateProfile | Operation::UpdateProfile | Operation::CreateOrUpdateProfile
    );
    if single_profile && bytes.len() > handlers::profiles::MAX_PROFILE_BODY {
        return Err(ApiError::too_large("100 KB"));
    }
    if bytes.is_empty() {
        return Err(ApiError::invalid("/data", "A request body is required."));
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| ApiError::invalid("/", format!("The request body is not valid JSON: {e}")))
}

fn spawn_job(app: &Arc<App>, id: String) {
    let app = Arc::clone(app);
    tokio::spawn(async move {
        tokio::time::sleep(app.job_delay).await;
        bulk::start_job(&mut lock(&app.state), &id);
        tokio::time::sleep(app.job_delay).await;
        // Importing 10,000 rows holds the account's lock for a while: on a blocking thread, so
        // the runtime's workers keep answering (requests wait for the lock, not for a worker).
        let _ = tokio::task::spawn_blocking(move || {
            bulk::process_job(&mut lock(&app.state), &id);
        })
        .await;
    });
}

async fn admin(app: &App, request: Request) -> Response {
    let path = request.uri().path().trim_end_matches('/');
    let query: HashMap<String, String> = query_pairs(request.uri());
    match (request.method().as_str(), path) {
        ("GET", "/__emulator/stats") => {
            let snapshot = lock(&app.stats).clone();
            json_response(
                200,
                Some(&serde_json::to_value(snapshot).unwrap_or_default()),
            )
        }
        ("POST", "/__emulator/reset") => {
            *lock(&app.stats) = StatsSnapshot::default();
            let wipe = query.get("state").is_some_and(|v| v == "true");
            if wipe {
                let mut state = lock(&app.state);
                let modes = state.modes;
                *state = State::new(app.seed);
                state.modes = modes;
            }
            json_response(
                200,
                Some(&json!({ "stats_reset": true, "state_reset": wipe })),
            )
        }
        _ => json_response(404, Some(&ApiError::no_route(path).body(String::new()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(buckets: &[Bucket]) -> Vec<&str> {
        buckets.iter().map(|b| b.name.as_str()).collect()
    }

    fn query(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn query_pairs_decode_into_a_list_or_a_map() {
        let uri: axum::http::Uri = "/api/lists?page%5Bsize%5D=10&filter=equals(name,%22a%20b%22)"
            .parse()
            .unwrap();
        let pairs: Vec<(String, String)> = query_pairs(&uri);
        assert_eq!(
            pairs,
            query(&[("page[size]", "10"), ("filter", "equals(name,\"a b\")")])
        );
        let map: HashMap<String, String> = query_pairs(&uri);
        assert_eq!(map["page[size]"], "10");
        let none: Vec<(String, String)> = query_pairs(&"/api/lists".parse().unwrap());
        assert!(none.is_empty());
    }

    #[test]
    fn extras_join_stricter_buckets() {
        assert_eq!(names(&buckets_for(Operation::GetList, &[])), ["get_list"]);
        let counted = buckets_for(
            Operation::GetList,
            &query(&[("additional-fields[list]", "profile_count")]),
        );
        assert_eq!(names(&counted), ["get_list", "get_list:profile_count"]);
        assert_eq!(counted[1].limit.steady_per_minute, 15);
        let profile = buckets_for(
            Operation::GetProfile,
            &query(&[
                ("include", "lists"),
                ("additional-fields[profile]", "predictive_analytics"),
            ]),
        );
        assert_eq!(
            names(&profile),
            [
                "get_profile",
                "get_profile:include_lists",
                "get_profile:predictive_analytics"
            ]
        );
        let tags = buckets_for(Operation::GetLists, &query(&[("include", "tags")]));
        assert_eq!(names(&tags), ["get_lists"]);
    }

    #[test]
    fn routing_tells_unknown_paths_from_wrong_methods() {
        assert_eq!(
            route(&Method::GET, "/api/tags/abc"),
            Ok((Operation::GetTag, vec!["abc".to_owned()]))
        );
        assert_eq!(
            route(&Method::PUT, "/api/tags/abc").unwrap_err().status,
            405
        );
        assert_eq!(route(&Method::GET, "/api/unknown").unwrap_err().status, 404);
    }

    #[test]
    fn revisions_must_be_dates() {
        assert!(valid_revision("2026-07-15"));
        assert!(valid_revision("2024-02-15.pre"));
        assert!(!valid_revision("2026-7-15"));
        assert!(!valid_revision("2026-02-30"));
        assert!(!valid_revision("2026-07-15.beta"));
    }
}
