//! A recording reverse proxy: sits between a client and the emulator and keeps every exchange,
//! so a contract test can check both sides of the wire against the spec.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::Value;

/// One request/response pair as seen on the wire.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub request_content_type: Option<String>,
    pub request_body: Value,
    pub status: u16,
    pub response_body: Value,
}

/// What the proxy does with a request instead of plainly forwarding it, for tests that need
/// Klaviyo (or the network) to misbehave at one exact point.
#[derive(Clone)]
pub enum Interception {
    /// Answer with this status, headers and body; the request never reaches the upstream.
    Respond(u16, Vec<(&'static str, String)>, String),
    /// Forward it, then tell `forwarded` and never answer: the client is left where a process
    /// killed right after sending would be, and Klaviyo has acted on the request.
    ForwardThenHang(Arc<tokio::sync::Notify>),
}

/// Decides, from a request's method and path, whether to intercept it.
pub type Interceptor = Arc<dyn Fn(&str, &str) -> Option<Interception> + Send + Sync>;

#[derive(Clone)]
struct Proxy {
    upstream: String,
    http: reqwest::Client,
    log: Arc<Mutex<Vec<Exchange>>>,
    intercept: Option<Interceptor>,
}

/// A running recorder.
pub struct Recorder {
    /// Point the client here.
    pub base_url: String,
    log: Arc<Mutex<Vec<Exchange>>>,
}

impl Recorder {
    /// Starts a recorder forwarding to `upstream` (e.g. the emulator's base URL).
    pub async fn start(upstream: &str) -> Recorder {
        Recorder::start_with(upstream, None).await
    }

    /// Starts a recorder that lets `intercept` take over the requests it picks.
    pub async fn intercepting(upstream: &str, intercept: Interceptor) -> Recorder {
        Recorder::start_with(upstream, Some(intercept)).await
    }

    async fn start_with(upstream: &str, intercept: Option<Interceptor>) -> Recorder {
        let log = Arc::new(Mutex::new(Vec::new()));
        let proxy = Proxy {
            upstream: upstream.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            log: log.clone(),
            intercept,
        };
        let app = axum::Router::new().fallback(forward).with_state(proxy);
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind recorder");
        let addr = listener.local_addr().expect("recorder addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Recorder {
            base_url: format!("http://{addr}"),
            log,
        }
    }

    /// Everything recorded so far.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.log.lock().expect("recorder log").clone()
    }
}

fn parse_json(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
    }
}

async fn forward(State(proxy): State<Proxy>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let interception = proxy
        .intercept
        .as_ref()
        .and_then(|intercept| intercept(parts.method.as_str(), parts.uri.path()));
    let hang_after = match interception {
        Some(Interception::Respond(status, headers, body)) => {
            let mut response = Response::builder().status(status);
            for (name, value) in headers {
                response = response.header(name, value);
            }
            return response.body(Body::from(body)).expect("response");
        }
        Some(Interception::ForwardThenHang(forwarded)) => Some(forwarded),
        None => None,
    };
    let bytes = to_bytes(body, 64 * 1024 * 1024).await.unwrap_or_default();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_else(|| parts.uri.path().to_string());
    let mut outgoing = proxy
        .http
        .request(
            parts.method.clone(),
            format!("{}{}", proxy.upstream, path_and_query),
        )
        .body(bytes.to_vec());
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            outgoing = outgoing.header(name, value);
        }
    }
    let upstream = match outgoing.send().await {
        Ok(response) => response,
        Err(err) => {
            return Response::builder()
                .status(StatusCode::BAD_GATEWAY)
                .body(Body::from(format!("recorder: upstream failed: {err}")))
                .expect("response");
        }
    };
    let status = upstream.status();
    let headers: HeaderMap = upstream.headers().clone();
    let response_bytes = upstream.bytes().await.unwrap_or_default();
    proxy.log.lock().expect("recorder log").push(Exchange {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        request_content_type: parts
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        request_body: parse_json(&bytes),
        status: status.as_u16(),
        response_body: parse_json(&response_bytes),
    });
    if let Some(forwarded) = hang_after {
        forwarded.notify_one();
        std::future::pending::<()>().await;
    }
    let mut response = Response::builder().status(status.as_u16());
    for (name, value) in &headers {
        if name != "content-length" && name != "transfer-encoding" {
            response = response.header(name, value);
        }
    }
    response.body(Body::from(response_bytes)).expect("response")
}
