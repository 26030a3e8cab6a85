//! The Klaviyo client, and the real `klsync apply`, against a hostile or dead Klaviyo: an HTML
//! 502 page, truncated JSON, a 2xx of the wrong shape, a 100 MB or endless body, a server that
//! never answers, one that never accepts, writes that are never answered, a `links.next` loop and
//! the run deadline. Each must give one clear error naming the operation and what was wrong (never
//! the API key), retry only what is safe to repeat, keep memory bounded, and leave the state
//! consistent: no journal entry left open, and the next apply against a healthy emulator
//! converges without a duplicate.
//!
//! The hostile server speaks raw HTTP/1.1 over TCP, because a truncated body, an endless one and
//! silence cannot be scripted with wiremock. It forwards what it is not told to break to an
//! emulator, so an apply plans normally and meets the hostility where a test puts it. Timeouts are
//! shrunk through `klsync.yaml` (client tests: `ClientConfig`), so no test waits long.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use klsync::emulator::{self, EmulatorConfig, EmulatorHandle, RateLimitMode};
use klsync::klaviyo::{ApiError, ClientConfig, KlaviyoClient, MAX_RESPONSE_BYTES};
use klsync::settings::Secret;
use klsync::state::StateStore;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::support::project::{Finished, TempProject, klsync};

/// Recognisable, so a leak into any message is caught.
const KEY: &str = "pk_hostile_5ecret_0123456789";

const HTML_502: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n";
const JSON_API: &str = "application/vnd.api+json";
const EMPTY_PAGE: &str = r#"{"data": [], "links": {"self": "x", "next": null}}"#;
/// What a declared flood claims to be, and what it sends at most.
const FLOOD_BYTES: u64 = 100 * 1024 * 1024;

// ---- the hostile server -------------------------------------------------------------------

/// One request as the hostile server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    /// Decoded query parameters.
    query: BTreeMap<String, String>,
}

impl Seen {
    fn is(&self, method: &str, path: &str) -> bool {
        self.method == method && self.path == path
    }

    fn param(&self, key: &str) -> Option<&str> {
        self.query.get(key).map(String::as_str)
    }
}

/// What the server sends back.
#[derive(Debug, Clone)]
enum Reply {
    /// The emulator's answer as it is (the request must be forwarded).
    Relay,
    /// The emulator's answer with its full length declared, cut off half way, connection closed.
    RelayCut,
    /// This answer.
    Answer {
        status: u16,
        content_type: &'static str,
        body: String,
    },
    /// Declares `declared` bytes, sends `body`, closes the connection.
    Cut { declared: usize, body: String },
    /// A 200 of JSON that does not end: declared as 100 MiB, or chunked and endless.
    Flood { declared: bool },
    /// Nothing, ever; the connection stays open.
    Silence,
}

/// What the server does with one request.
#[derive(Debug, Clone)]
struct Act {
    /// Pass the request to the emulator first (so a write takes effect).
    forward: bool,
    /// Hold the reply this long.
    delay: Duration,
    reply: Reply,
}

fn relay() -> Act {
    forward_then(Reply::Relay)
}

fn forward_then(reply: Reply) -> Act {
    Act {
        forward: true,
        delay: Duration::ZERO,
        reply,
    }
}

fn only(reply: Reply) -> Act {
    Act {
        forward: false,
        delay: Duration::ZERO,
        reply,
    }
}

fn answer(status: u16, content_type: &'static str, body: &str) -> Act {
    only(Reply::Answer {
        status,
        content_type,
        body: body.to_owned(),
    })
}

type Rule = Arc<dyn Fn(&Seen) -> Act + Send + Sync>;

struct Hostile {
    base_url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Body bytes the floods handed to the kernel.
    flooded: Arc<AtomicU64>,
}

impl Hostile {
    /// A server answering each request as `rule` says, forwarding to `upstream` when told to.
    async fn start(
        upstream: Option<&str>,
        rule: impl Fn(&Seen) -> Act + Send + Sync + 'static,
    ) -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base_url = format!("http://{}", listener.local_addr().expect("addr"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let flooded = Arc::new(AtomicU64::new(0));
        let rule: Rule = Arc::new(rule);
        let upstream = upstream.map(str::to_owned);
        let (log, counter) = (seen.clone(), flooded.clone());
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve(
                    socket,
                    upstream.clone(),
                    rule.clone(),
                    log.clone(),
                    counter.clone(),
                ));
            }
        });
        Hostile {
            base_url,
            seen,
            flooded,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("log").clone()
    }

    fn count(&self, method: &str, path: &str) -> usize {
        self.seen().iter().filter(|s| s.is(method, path)).count()
    }

    /// The methods of the requests to `path`, in order.
    fn methods(&self, path: &str) -> Vec<String> {
        self.seen()
            .into_iter()
            .filter(|s| s.path == path)
            .map(|s| s.method)
            .collect()
    }
}

struct Request {
    seen: Seen,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

async fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    reader.read_line(&mut line).await.ok()?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut headers = Vec::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_owned());
        if name == "content-length" {
            length = value.parse().ok()?;
        }
        headers.push((name, value));
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.ok()?;
    let url = url::Url::parse(&format!("http://hostile{target}")).ok()?;
    let seen = Seen {
        method,
        path: url.path().to_owned(),
        query: url.query_pairs().into_owned().collect(),
    };
    Some(Request {
        seen,
        target,
        headers,
        body,
    })
}

/// The emulator's answer: status, content type, body.
async fn forward(upstream: &str, request: &Request) -> (u16, String, Vec<u8>) {
    let method = reqwest::Method::from_bytes(request.seen.method.as_bytes()).expect("method");
    let mut outgoing = reqwest::Client::new()
        .request(method, format!("{upstream}{}", request.target))
        .body(request.body.clone());
    for (name, value) in &request.headers {
        if ["authorization", "revision", "accept", "content-type"].contains(&name.as_str()) {
            outgoing = outgoing.header(name, value);
        }
    }
    let response = outgoing.send().await.expect("the emulator answers");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or(JSON_API)
        .to_owned();
    let body = response.bytes().await.expect("emulator body").to_vec();
    (status, content_type, body)
}

fn head(status: u16, content_type: &str, framing: &str) -> String {
    format!(
        "HTTP/1.1 {status} Hostile\r\ncontent-type: {content_type}\r\n{framing}\r\nconnection: close\r\n\r\n"
    )
}

async fn serve(
    socket: TcpStream,
    upstream: Option<String>,
    rule: Rule,
    log: Arc<Mutex<Vec<Seen>>>,
    flooded: Arc<AtomicU64>,
) {
    let mut reader = BufReader::new(socket);
    let Some(request) = read_request(&mut reader).await else {
        return;
    };
    log.lock().expect("log").push(request.seen.clone());
    let act = rule(&request.seen);
    let relayed = if act.forward {
        let upstream = upstream
            .as_deref()
            .expect("a rule that forwards needs an upstream");
        Some(forward(upstream, &request).await)
    } else {
        None
    };
    tokio::time::sleep(act.delay).await;
    let stream = reader.get_mut();
    // Write errors mean the client hung up, which is its right.
    let _ = match act.reply {
        Reply::Relay => {
            let (status, content_type, body) = relayed.expect("Relay needs forward");
            let framing = format!("content-length: {}", body.len());
            write(
                stream,
                &[head(status, &content_type, &framing).as_bytes(), &body],
            )
            .await
        }
        Reply::RelayCut => {
            let (status, content_type, body) = relayed.expect("RelayCut needs forward");
            let framing = format!("content-length: {}", body.len());
            let half = &body[..body.len() / 2];
            write(
                stream,
                &[head(status, &content_type, &framing).as_bytes(), half],
            )
            .await
        }
        Reply::Answer {
            status,
            content_type,
            body,
        } => {
            let framing = format!("content-length: {}", body.len());
            let head = head(status, content_type, &framing);
            write(stream, &[head.as_bytes(), body.as_bytes()]).await
        }
        Reply::Cut { declared, body } => {
            let head = head(200, JSON_API, &format!("content-length: {declared}"));
            write(stream, &[head.as_bytes(), body.as_bytes()]).await
        }
        Reply::Flood { declared } => flood(stream, declared, &flooded).await,
        Reply::Silence => {
            std::future::pending::<()>().await;
            Ok(())
        }
    };
}

async fn write(stream: &mut TcpStream, parts: &[&[u8]]) -> std::io::Result<()> {
    for part in parts {
        stream.write_all(part).await?;
    }
    stream.flush().await
}

/// `{"data":[` and list resources, 64 KiB at a time, until the client hangs up (or, declared,
/// after 100 MiB).
async fn flood(stream: &mut TcpStream, declared: bool, flooded: &AtomicU64) -> std::io::Result<()> {
    let framing = if declared {
        format!("content-length: {FLOOD_BYTES}")
    } else {
        "transfer-encoding: chunked".to_owned()
    };
    stream
        .write_all(head(200, JSON_API, &framing).as_bytes())
        .await?;
    let item = br#"{"type":"list","id":"L","attributes":{"name":"flood"}},"#;
    let mut piece = b"{\"data\":[".to_vec();
    while piece.len() < 64 * 1024 {
        piece.extend_from_slice(item);
    }
    let mut sent = 0u64;
    while !declared || sent < FLOOD_BYTES {
        if declared {
            stream.write_all(&piece).await?;
        } else {
            let chunk = [format!("{:x}\r\n", piece.len()).as_bytes(), &piece, b"\r\n"].concat();
            stream.write_all(&chunk).await?;
        }
        sent += piece.len() as u64;
        flooded.fetch_add(piece.len() as u64, Ordering::Relaxed);
    }
    Ok(())
}

/// A listener that never accepts, with its queue full: a connection attempt gets no answer at
/// all, the way a firewalled or overloaded host behaves (deterministic and offline, on Linux).
struct NeverAccepts {
    base_url: String,
    _listener: TcpListener,
    _filler: TcpStream,
}

impl NeverAccepts {
    async fn start() -> NeverAccepts {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.bind("127.0.0.1:0".parse().unwrap()).expect("bind");
        let listener = socket.listen(0).expect("listen");
        let addr = listener.local_addr().expect("addr");
        // Backlog 0 holds one connection; it takes the only place.
        let filler = TcpStream::connect(addr).await.expect("filler connects");
        let probe =
            tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await;
        assert!(
            probe.is_err(),
            "this kernel answers connections beyond the listen queue ({probe:?}); the connect-timeout test needs it not to"
        );
        NeverAccepts {
            base_url: format!("http://{addr}"),
            _listener: listener,
            _filler: filler,
        }
    }
}

// ---- the client against it ---------------------------------------------------------------

/// A client with short timeouts and backoff; 3 attempts, breaker after 3 failures.
fn config(base_url: &str) -> ClientConfig {
    let mut config = ClientConfig::new(base_url, Secret::new(KEY));
    config.rate_limit_factor = None;
    config.backoff_base = Duration::from_millis(5);
    config.max_attempts = 3;
    config.timeout = Duration::from_millis(300);
    config.connect_timeout = Duration::from_millis(300);
    config.max_consecutive_failures = 3;
    config
}

fn client(base_url: &str) -> KlaviyoClient {
    KlaviyoClient::new(config(base_url)).expect("client")
}

/// The error's message, after checking that neither it nor its debug form holds the key.
fn message(error: &ApiError) -> String {
    let text = error.to_string();
    assert!(
        !text.contains(KEY) && !format!("{error:?}").contains(KEY),
        "the API key leaked: {text}"
    );
    text
}

/// Whether every repeat of a create was preceded by a lookup: no create is resent blindly.
fn each_resend_follows_a_lookup(methods: &[String]) -> bool {
    methods
        .windows(2)
        .all(|pair| !(pair[0] == "POST" && pair[1] == "POST"))
}

#[tokio::test]
async fn an_html_502_page_is_reported_with_its_content_type_and_retried_only_when_safe() {
    let server = Hostile::start(None, |seen| {
        if seen.is("GET", "/api/lists") {
            answer(200, JSON_API, EMPTY_PAGE)
        } else {
            answer(502, "text/html", HTML_502)
        }
    })
    .await;
    let client = client(&server.base_url);

    let err = client.get_list("L1").await.unwrap_err();
    assert_eq!(err.status(), Some(502));
    assert_eq!(
        message(&err),
        "get_list failed with HTTP 502: not a Klaviyo error body (text/html): <html> <head><title>502 Bad Gateway</title></head> <body> <center><h1>502 Bad Gateway</h1></center> </body> </html>"
    );
    assert_eq!(server.count("GET", "/api/lists/L1"), 3, "a read is retried");

    let err = client.create_list("A", None).await.unwrap_err();
    assert_eq!(err.status(), Some(502), "{err}");
    let methods = server.methods("/api/lists");
    assert_eq!(server.count("POST", "/api/lists"), 3, "{methods:?}");
    assert!(each_resend_follows_a_lookup(&methods), "{methods:?}");
    assert_eq!(methods.first().map(String::as_str), Some("POST"));
}

#[tokio::test]
async fn truncated_json_is_a_broken_off_response_retried_only_when_safe() {
    let cut = Reply::Cut {
        declared: 1000,
        body: r#"{"data": {"type": "list", "id": "L1", "attri"#.to_owned(),
    };
    let server = Hostile::start(None, move |seen| {
        if seen.is("GET", "/api/lists") {
            answer(200, JSON_API, EMPTY_PAGE)
        } else {
            only(cut.clone())
        }
    })
    .await;
    let client = client(&server.base_url);

    let err = client.get_list("L1").await.unwrap_err();
    assert!(matches!(err, ApiError::Transport { .. }), "{err:?}");
    let text = message(&err);
    assert!(
        text.starts_with("get_list /api/lists/L1: the response broke off: "),
        "{text}"
    );
    assert_eq!(server.count("GET", "/api/lists/L1"), 3, "a read is retried");

    let err = client.create_list("A", None).await.unwrap_err();
    assert!(err.is_ambiguous(), "{err:?}");
    let methods = server.methods("/api/lists");
    assert_eq!(server.count("POST", "/api/lists"), 3, "{methods:?}");
    assert!(each_resend_follows_a_lookup(&methods), "{methods:?}");
}

#[tokio::test]
async fn a_2xx_of_the_wrong_shape_is_a_decode_error_and_never_resent() {
    let server = Hostile::start(None, |seen| {
        match (seen.method.as_str(), seen.path.as_str()) {
            ("GET", "/api/lists") => answer(200, JSON_API, r#"{"data": null}"#),
            ("GET", _) => answer(200, "application/json", r#"{"unexpected": true}"#),
            _ => answer(201, JSON_API, r#"{"data": null}"#),
        }
    })
    .await;
    let client = client(&server.base_url);

    let err = client
        .list_lists(false)
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();
    assert_eq!(
        message(&err),
        r#"get_lists: could not decode HTTP 200 response (application/vnd.api+json): invalid type: null, expected a sequence at line 1 column 13; body starts: {"data": null}"#
    );
    assert_eq!(server.count("GET", "/api/lists"), 1);

    let err = client.get_list("L1").await.unwrap_err();
    assert_eq!(
        message(&err),
        r#"get_list: could not decode HTTP 200 response (application/json): missing field `data` at line 1 column 20; body starts: {"unexpected": true}"#
    );
    assert_eq!(server.count("GET", "/api/lists/L1"), 1);

    // A 2xx says the create happened: sending it again would make a second list.
    let err = client.create_list("A", None).await.unwrap_err();
    assert!(
        matches!(err, ApiError::Decode { status: 201, .. }),
        "{err:?}"
    );
    assert_eq!(server.methods("/api/lists"), ["GET", "POST"]);
}

#[tokio::test]
async fn a_100_mb_or_endless_body_is_not_read_past_the_cap() {
    let server = Hostile::start(None, |seen| {
        match (seen.method.as_str(), seen.path.as_str()) {
            ("GET", "/api/lists") => answer(200, JSON_API, EMPTY_PAGE),
            ("GET", "/api/lists/declared") => only(Reply::Flood { declared: true }),
            _ => only(Reply::Flood { declared: false }),
        }
    })
    .await;
    let client = client(&server.base_url);
    let cap = "the HTTP 200 response is larger than 32 MiB, the most klsync reads of one response";

    let err = client.get_list("declared").await.unwrap_err();
    assert!(
        message(&err).ends_with(&format!("{cap}; it was not read")),
        "{err}"
    );
    assert_eq!(
        server.count("GET", "/api/lists/declared"),
        3,
        "a read is retried"
    );

    let before = server.flooded.load(Ordering::Relaxed);
    let err = client.get_list("endless").await.unwrap_err();
    assert_eq!(
        message(&err),
        format!("get_list /api/lists/endless: {cap}; it was not read")
    );
    assert_eq!(server.count("GET", "/api/lists/endless"), 3);
    // The client read each endless body up to the cap and hung up: what the server got rid of is
    // about the cap plus what the socket buffers hold, never the flood. The lower bound is loose
    // because the server counts only the writes that completed before the hang-up.
    let sent = server.flooded.load(Ordering::Relaxed) - before;
    let cap_bytes = MAX_RESPONSE_BYTES as u64;
    assert!(
        sent >= 3 * (cap_bytes / 2) && sent < 3 * (cap_bytes + 16 * 1024 * 1024),
        "{sent} bytes sent for 3 attempts"
    );

    let err = client.create_list("A", None).await.unwrap_err();
    assert!(
        matches!(err, ApiError::ResponseTooLarge { status: 200, .. }) && err.is_ambiguous(),
        "{err:?}"
    );
    let methods = server.methods("/api/lists");
    assert_eq!(server.count("POST", "/api/lists"), 3, "{methods:?}");
    assert!(each_resend_follows_a_lookup(&methods), "{methods:?}");
}

#[tokio::test]
async fn a_server_that_never_answers_trips_the_breaker_after_three_timeouts() {
    let server = Hostile::start(None, |_| only(Reply::Silence)).await;
    let client = client(&server.base_url);
    let err = client
        .list_lists(false)
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();
    assert!(err.stops_the_run(), "{err:?}");
    assert_eq!(
        message(&err),
        format!(
            "stopped sending requests to Klaviyo at {}: 3 requests in a row got no answer (the last: get_lists /api/lists: no complete response within 300ms). Check that this URL is right and reachable from here (network, proxy, firewall) and that Klaviyo is up, then run the command again",
            server.base_url
        )
    );
    assert_eq!(server.seen().len(), 3);

    // Every further request fails at once, without reaching the server.
    let next = client.get_list("L1").await.unwrap_err();
    assert_eq!(message(&next), message(&err));
    assert!(client.halted().is_some());
    assert_eq!(server.seen().len(), 3);
}

#[tokio::test]
async fn a_server_that_never_accepts_fails_at_the_connect_timeout() {
    let server = NeverAccepts::start().await;
    let mut impatient = config(&server.base_url);
    impatient.connect_timeout = Duration::from_millis(200);
    let client = KlaviyoClient::new(impatient).unwrap();
    let started = Instant::now();
    let err = client.get_list("L1").await.unwrap_err();
    let text = message(&err);
    assert!(
        text.starts_with(&format!(
            "stopped sending requests to Klaviyo at {}: 3 requests in a row got no answer (the last: get_list /api/lists/L1: could not connect within 200ms)",
            server.base_url
        )),
        "{text}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // A create that never connected was never sent: not ambiguous.
    let mut single = config(&server.base_url);
    single.connect_timeout = Duration::from_millis(200);
    single.max_attempts = 1;
    let err = KlaviyoClient::new(single)
        .unwrap()
        .create_list("A", None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ApiError::Timeout {
                connecting: true,
                ..
            }
        ) && !err.is_ambiguous(),
        "{err:?}"
    );
}

#[tokio::test]
async fn creates_never_answered_trip_the_breaker_though_the_lookups_between_them_are() {
    let server = Hostile::start(None, |seen| {
        if seen.method == "POST" {
            only(Reply::Silence)
        } else {
            answer(200, JSON_API, EMPTY_PAGE)
        }
    })
    .await;
    let mut config = config(&server.base_url);
    config.max_attempts = 5;
    let client = KlaviyoClient::new(config).unwrap();
    let err = client.create_list("A", None).await.unwrap_err();
    assert!(
        matches!(err, ApiError::OutcomeUnknown { .. }) && err.stops_the_run(),
        "{err:?}"
    );
    let text = message(&err);
    assert!(
        text.starts_with("create_list was sent but never answered, so it may have taken effect"),
        "{text}"
    );
    assert!(
        text.contains("3 requests in a row got no answer (the last: create_list /api/lists: no complete response within 300ms)"),
        "{text}"
    );
    // Three unanswered creates, a lookup after each of the first two; not five attempts.
    assert_eq!(
        server.methods("/api/lists"),
        ["POST", "GET", "POST", "GET", "POST"]
    );
}

#[tokio::test]
async fn a_links_next_loop_is_stopped() {
    let server = Hostile::start(None, |seen| {
        let next = match seen.param("page[cursor]") {
            None | Some("c") => "b",
            _ => "c",
        };
        let body = serde_json::json!({"data": [], "links": {"self": "x",
            "next": format!("https://a.klaviyo.com/api/lists?page%5Bcursor%5D={next}&page%5Bsize%5D=10")}});
        answer(200, JSON_API, &body.to_string())
    })
    .await;
    let pages = client(&server.base_url)
        .list_lists(false)
        .try_collect::<Vec<_>>();
    let err = tokio::time::timeout(Duration::from_secs(10), pages)
        .await
        .expect("the loop is stopped, not followed forever")
        .unwrap_err();
    assert!(matches!(err, ApiError::BadPagination { .. }), "{err:?}");
    assert!(
        message(&err).starts_with(
            r#"get_lists /api/lists: pagination stopped: after 3 page(s), links.next leads back to a page already read (/api/lists cursor "b")"#
        ),
        "{err}"
    );
    assert_eq!(server.count("GET", "/api/lists"), 3);
}

#[tokio::test]
async fn no_request_starts_after_the_run_deadline() {
    const LIMIT: Duration = Duration::from_millis(400);
    let server = Hostile::start(None, |_| {
        let page = serde_json::json!({"data": [], "links": {"self": "x",
            "next": "https://a.klaviyo.com/api/lists?page%5Bcursor%5D=2"}});
        let mut act = answer(200, JSON_API, &page.to_string());
        // Answered once the deadline, which counts from before the request, has passed.
        act.delay = LIMIT + Duration::from_millis(50);
        act
    })
    .await;
    let mut config = config(&server.base_url);
    config.timeout = Duration::from_secs(5);
    config.run_timeout = Some(LIMIT);
    let client = KlaviyoClient::new(config).unwrap();
    let err = client
        .list_lists(false)
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();
    assert_eq!(
        message(&err),
        "get_lists not sent: the run reached its time limit of 400ms (klaviyo.run_timeout in klsync.yaml); nothing more is sent. Run the command again to continue"
    );
    assert_eq!(server.seen().len(), 1, "the second page was not asked for");
}

// ---- klsync apply against it --------------------------------------------------------------

/// Short timeouts, few quick retries: hostile runs end in about a second. The run deadline
/// makes a regression (a loop followed forever) fail instead of hang.
const IMPATIENT: &str = "\
version: 1
klaviyo:
  connect_timeout: 300ms
  request_timeout: 500ms
  max_attempts: 3
  retry_backoff: 10ms
  run_timeout: 20s
";

/// As [`IMPATIENT`], with time to read 32 MiB on a loaded 2-core machine: a test of the size
/// cap must not end at the request timeout first.
const IMPATIENT_BUT_READING: &str = "\
version: 1
klaviyo:
  connect_timeout: 300ms
  request_timeout: 10s
  max_attempts: 3
  retry_backoff: 10ms
  run_timeout: 60s
";

fn lists(names: &[&str]) -> String {
    let mut text = String::from("lists:\n");
    for name in names {
        text.push_str(&format!(
            "  - id: {}\n    name: {name}\n",
            name.to_lowercase()
        ));
    }
    text
}

/// A project with an SQLite state, an emulator, and a hostile server in front of it.
struct Scenario {
    emulator: EmulatorHandle,
    project: TempProject,
    state: tempfile::TempDir,
}

impl Scenario {
    async fn new(names: &[&str], settings: &str) -> Scenario {
        let emulator = emulator::start(EmulatorConfig {
            rate_limits: RateLimitMode::Off,
            api_keys: vec![KEY.to_owned()],
            ..EmulatorConfig::default()
        })
        .await
        .expect("start the emulator");
        let project = TempProject::new(&[("lists.yaml", &lists(names))]);
        project.write("klsync.yaml", settings);
        Scenario {
            emulator,
            project,
            state: tempfile::tempdir().expect("tempdir"),
        }
    }

    async fn hostile(&self, rule: impl Fn(&Seen) -> Act + Send + Sync + 'static) -> Hostile {
        Hostile::start(Some(&self.emulator.base_url), rule).await
    }

    fn state_url(&self) -> String {
        format!("sqlite://{}", self.state.path().join("state.db").display())
    }

    /// Run klsync against `base_url`; the output and how long it took.
    async fn run(&self, base_url: &str, args: &[&str]) -> (Finished, Duration) {
        let mut command = klsync();
        command
            .args(args)
            .arg("-C")
            .arg(self.project.path())
            .env("KLAVIYO_BASE_URL", base_url)
            .env("KLAVIYO_API_KEY", KEY)
            .env("KLSYNC_STATE_URL", self.state_url())
            .stdin(std::process::Stdio::null());
        let started = Instant::now();
        let finished =
            tokio::task::spawn_blocking(move || Finished::from(command.output().expect("run")))
                .await
                .expect("join");
        let output = format!("{}{}", finished.stdout, finished.stderr);
        assert!(!output.contains(KEY), "the API key leaked:\n{output}");
        (finished, started.elapsed())
    }

    /// `apply --auto-approve` against `base_url`, expecting exit status `code`.
    async fn apply(&self, base_url: &str, code: i32) -> (Finished, Duration) {
        let (finished, took) = self.run(base_url, &["apply", "--auto-approve"]).await;
        assert_eq!(
            finished.code, code,
            "stdout:\n{}\nstderr:\n{}",
            finished.stdout, finished.stderr
        );
        (finished, took)
    }

    /// The state after a hostile run: every journal entry closed, the run recorded as ended.
    async fn assert_state_consistent(&self) {
        let store = StateStore::connect(&self.state_url()).await.expect("state");
        let open = store.unfinished_journal().await.expect("journal");
        assert!(open.is_empty(), "journal entries left open: {open:?}");
        let history = store.history(10).await.expect("history");
        assert!(
            history.iter().all(|run| run.outcome.is_some()),
            "a run left unfinished: {history:?}"
        );
        store.close().await;
    }

    /// Against the healthy emulator with default settings, the project converges: an apply
    /// succeeds, every list exists exactly once, and the plan after it is empty.
    async fn assert_converges(&self, names: &[&str]) {
        self.assert_state_consistent().await;
        self.project.write("klsync.yaml", "version: 1\n");
        let healthy = self.emulator.base_url.clone();
        self.apply(&healthy, 0).await;
        let inventory: BTreeMap<String, usize> = self.emulator.seed(|state| {
            let mut names = BTreeMap::new();
            for list in state.lists.values() {
                *names.entry(list.name.clone()).or_default() += 1;
            }
            names
        });
        let expected: BTreeMap<String, usize> =
            names.iter().map(|name| (name.to_string(), 1)).collect();
        assert_eq!(inventory, expected, "a list is missing or duplicated");
        let (plan, _) = self.run(&healthy, &["plan", "--detailed-exitcode"]).await;
        assert_eq!(plan.code, 0, "{}\n{}", plan.stdout, plan.stderr);
    }
}

fn occurrences(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_meets_an_html_502_on_creates() {
    let names = ["Alpha", "Beta"];
    let scenario = Scenario::new(&names, IMPATIENT).await;
    let server = scenario
        .hostile(|seen| {
            if seen.method == "POST" {
                answer(502, "text/html", HTML_502)
            } else {
                relay()
            }
        })
        .await;
    let (finished, _) = scenario.apply(&server.base_url, 1).await;
    assert!(
        finished.stderr.contains("create list.alpha: create_list failed with HTTP 502: not a Klaviyo error body (text/html): <html> <head><title>502 Bad Gateway</title>"),
        "{}",
        finished.stderr
    );
    let methods = server.methods("/api/lists");
    assert_eq!(server.count("POST", "/api/lists"), 6, "{methods:?}");
    assert!(each_resend_follows_a_lookup(&methods), "{methods:?}");
    scenario.assert_converges(&names).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_recovers_creates_whose_answers_are_cut_off() {
    let names = ["Alpha", "Beta", "Gamma"];
    let scenario = Scenario::new(&names, IMPATIENT).await;
    let server = scenario
        .hostile(|seen| {
            if seen.method == "POST" {
                forward_then(Reply::RelayCut)
            } else {
                relay()
            }
        })
        .await;
    let (finished, _) = scenario.apply(&server.base_url, 0).await;
    assert!(
        finished
            .stdout
            .contains("Apply complete: 3 changed, 0 failed."),
        "{}",
        finished.stdout
    );
    // Each create happened once; the lookup after its broken answer found it.
    assert_eq!(server.count("POST", "/api/lists"), 3);
    scenario.assert_converges(&names).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_meets_answers_of_the_wrong_shape() {
    let names = ["Alpha", "Beta"];
    let scenario = Scenario::new(&names, IMPATIENT).await;

    // While reading Klaviyo: nothing is changed.
    let server = scenario
        .hostile(|seen| {
            if seen.is("GET", "/api/lists") {
                answer(200, JSON_API, r#"{"data": null}"#)
            } else {
                relay()
            }
        })
        .await;
    let (finished, _) = scenario.apply(&server.base_url, 1).await;
    let cause = "get_lists: could not decode HTTP 200 response (application/vnd.api+json): invalid type: null, expected a sequence";
    assert_eq!(
        occurrences(&finished.stderr, cause),
        1,
        "{}",
        finished.stderr
    );
    assert_eq!(
        server.count("GET", "/api/lists"),
        1,
        "a decode error is not retried"
    );
    assert_eq!(server.count("POST", "/api/lists"), 0);
    scenario.assert_state_consistent().await;

    // Answering creates: they happened, so they are not resent; the next apply adopts them.
    let server = scenario
        .hostile(|seen| {
            if seen.method == "POST" {
                forward_then(Reply::Answer {
                    status: 201,
                    content_type: JSON_API,
                    body: r#"{"data": null}"#.to_owned(),
                })
            } else {
                relay()
            }
        })
        .await;
    let (finished, _) = scenario.apply(&server.base_url, 1).await;
    assert!(
        finished
            .stderr
            .contains("create_list: could not decode HTTP 201 response (application/vnd.api+json)"),
        "{}",
        finished.stderr
    );
    assert_eq!(server.count("POST", "/api/lists"), 2);
    scenario.assert_converges(&names).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_meets_an_endless_body() {
    let names = ["Alpha"];
    let scenario = Scenario::new(&names, IMPATIENT_BUT_READING).await;
    let server = scenario
        .hostile(|seen| {
            if seen.is("GET", "/api/segments") {
                only(Reply::Flood { declared: false })
            } else {
                relay()
            }
        })
        .await;
    let (finished, _) = scenario.apply(&server.base_url, 1).await;
    let cause = "get_segments /api/segments: the HTTP 200 response is larger than 32 MiB";
    assert_eq!(
        occurrences(&finished.stderr, cause),
        1,
        "{}",
        finished.stderr
    );
    assert_eq!(server.count("GET", "/api/segments"), 3, "a read is retried");
    scenario.assert_converges(&names).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_against_a_silent_server_ends_at_once_with_one_cause() {
    let names = ["Alpha", "Beta"];
    let scenario = Scenario::new(&names, IMPATIENT).await;
    let server = scenario.hostile(|_| only(Reply::Silence)).await;
    let (finished, took) = scenario.apply(&server.base_url, 1).await;
    let cause = format!(
        "stopped sending requests to Klaviyo at {}: 3 requests in a row got no answer",
        server.base_url
    );
    assert_eq!(
        occurrences(&finished.stderr, &cause),
        1,
        "{}",
        finished.stderr
    );
    assert!(
        finished
            .stderr
            .contains("no complete response within 500ms). Check that this URL is right"),
        "{}",
        finished.stderr
    );
    // The plan reads four collections at once: at most those four and the retries that
    // completed three failures in a row; without the breaker, 4 x 3 attempts of 500 ms.
    assert!(server.seen().len() <= 6, "{:?}", server.seen());
    assert!(took < Duration::from_secs(15), "{took:?}");
    scenario.assert_converges(&names).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_against_a_server_that_never_accepts_ends_with_one_cause() {
    let names = ["Alpha"];
    let scenario = Scenario::new(&names, IMPATIENT).await;
    let server = NeverAccepts::start().await;
    let (finished, took) = scenario.apply(&server.base_url, 1).await;
    let cause = format!(
        "stopped sending requests to Klaviyo at {}: 3 requests in a row got no answer",
        server.base_url
    );
    assert_eq!(
        occurrences(&finished.stderr, &cause),
        1,
        "{}",
        finished.stderr
    );
    assert!(
        finished.stderr.contains("could not connect within 300ms"),
        "{}",
        finished.stderr
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
    scenario.assert_converges(&names).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_whose_creates_are_never_answered_stops_after_three() {
    let names = ["Alpha", "Beta", "Gamma", "Delta", "Epsilon", "Zeta"];
    let scenario = Scenario::new(&names, IMPATIENT).await;
    // The creates take effect; their answers never come. Reads are answered.
    let server = scenario
        .hostile(|seen| {
            if seen.method == "POST" {
                forward_then(Reply::Silence)
            } else {
                relay()
            }
        })
        .await;
    let (finished, took) = scenario.apply(&server.base_url, 3).await;
    // The lookups after the first two found them; the third unanswered create stopped the run.
    assert!(
        finished
            .stderr
            .contains("Apply partially complete: 2 changed, 4 failed:"),
        "{}",
        finished.stderr
    );
    assert_eq!(server.count("POST", "/api/lists"), 3);
    let cause = "create_list was sent but never answered, so it may have taken effect (the next plan finds what it made by name): stopped sending requests to Klaviyo at";
    // Once as it happened, once in the summary; never for the changes not attempted.
    assert_eq!(
        occurrences(&finished.stderr, cause),
        2,
        "{}",
        finished.stderr
    );
    assert_eq!(
        occurrences(
            &finished.stderr,
            "3 requests in a row got no answer (the last: create_list /api/lists: no complete response within 500ms)"
        ),
        2,
        "{}",
        finished.stderr
    );
    assert_eq!(
        occurrences(
            &finished.stderr,
            "not attempted: the run stopped (cause above)"
        ),
        6,
        "{}",
        finished.stderr
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
    // The third list exists though its create was never answered: the next apply adopts it.
    scenario.assert_converges(&names).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_stops_a_links_next_loop() {
    let names = ["Alpha"];
    let scenario = Scenario::new(&names, IMPATIENT).await;
    let server = scenario
        .hostile(|seen| {
            if !seen.is("GET", "/api/lists") {
                return relay();
            }
            let next = match seen.param("page[cursor]") {
                Some("b") => "c",
                _ => "b",
            };
            let body = serde_json::json!({"data": [], "links": {"self": "x",
                "next": format!("/api/lists?page%5Bcursor%5D={next}")}});
            answer(200, JSON_API, &body.to_string())
        })
        .await;
    let (finished, _) = scenario.apply(&server.base_url, 1).await;
    assert_eq!(
        occurrences(
            &finished.stderr,
            "links.next leads back to a page already read"
        ),
        1,
        "{}",
        finished.stderr
    );
    assert_eq!(server.count("GET", "/api/lists"), 3);
    scenario.assert_converges(&names).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_stops_at_the_run_deadline_and_the_next_apply_finishes() {
    const LIMIT: Duration = Duration::from_secs(3);
    let names = ["Alpha", "Beta", "Gamma"];
    let settings = "\
version: 1
klaviyo:
  request_timeout: 10s
  run_timeout: 3s
";
    let scenario = Scenario::new(&names, settings).await;
    let posts = AtomicUsize::new(0);
    let server = scenario
        .hostile(move |seen| {
            let mut act = relay();
            // The first create is answered only once the deadline, which counts from before it
            // was sent, has passed.
            if seen.method == "POST" && posts.fetch_add(1, Ordering::Relaxed) == 0 {
                act.delay = LIMIT;
            }
            act
        })
        .await;
    let (finished, _) = scenario.apply(&server.base_url, 3).await;
    assert!(
        finished
            .stderr
            .contains("Apply partially complete: 1 changed, 2 failed:"),
        "{}",
        finished.stderr
    );
    let cause = "not attempted: the run reached its time limit of 3s (klaviyo.run_timeout in klsync.yaml); nothing more is sent. Run the command again to continue";
    assert_eq!(
        occurrences(&finished.stderr, cause),
        2,
        "{}",
        finished.stderr
    );
    assert_eq!(server.count("POST", "/api/lists"), 1);
    scenario.assert_converges(&names).await;
}

#[test]
fn a_bad_timeout_setting_is_named_with_file_line_and_field() {
    let project = TempProject::new(&[("lists.yaml", &lists(&["Alpha"]))]);
    project.write(
        "klsync.yaml",
        "version: 1\nklaviyo:\n  request_timeout: 0s\n  run_timeout: soon\n",
    );
    let finished =
        crate::support::project::run(klsync().arg("validate").arg("-C").arg(project.path()));
    assert_eq!(finished.code, 1, "{}\n{}", finished.stdout, finished.stderr);
    let output = format!("{}{}", finished.stdout, finished.stderr);
    for expected in [
        "klsync.yaml:3:20: klaviyo.request_timeout: `0s` is not valid here",
        "klsync.yaml:4:16: klaviyo.run_timeout: `soon` is not valid here",
        "write a duration above zero such as `500ms`, `20s`, `10m` or `6h`",
    ] {
        assert!(output.contains(expected), "{expected}\n{output}");
    }
}

/// The figures behind "a dead server ends an apply within about a minute", at the default
/// settings (20 s per attempt, 10 s to connect, breaker after 3): a 6-change apply against a
/// server that never answers, one that never accepts, and one that answers reads but never
/// writes. About a minute and a half, so not in the default run:
/// `cargo test --test it client_hostile:: -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "takes about 90 s; run for the figures in docs/RELIABILITY.md"]
async fn dead_servers_at_the_default_settings() {
    let names = ["Alpha", "Beta", "Gamma", "Delta", "Epsilon", "Zeta"];
    let bound = Duration::from_secs(75);

    let scenario = Scenario::new(&names, "version: 1\n").await;
    let silent = scenario.hostile(|_| only(Reply::Silence)).await;
    let (finished, took) = scenario.apply(&silent.base_url, 1).await;
    assert_eq!(
        occurrences(&finished.stderr, "stopped sending requests to Klaviyo at"),
        1,
        "{}",
        finished.stderr
    );
    eprintln!(
        "never answers: exit 1 after {took:?}, {} requests",
        silent.seen().len()
    );
    assert!(took < bound, "{took:?}");

    let never = NeverAccepts::start().await;
    let (finished, took) = scenario.apply(&never.base_url, 1).await;
    assert!(
        finished.stderr.contains("could not connect within 10s"),
        "{}",
        finished.stderr
    );
    eprintln!("never accepts: exit 1 after {took:?}");
    assert!(took < bound, "{took:?}");

    let writes = scenario
        .hostile(|seen| {
            if seen.method == "POST" {
                forward_then(Reply::Silence)
            } else {
                relay()
            }
        })
        .await;
    let (finished, took) = scenario.apply(&writes.base_url, 3).await;
    eprintln!(
        "writes never answered: exit 3 after {took:?}, {} creates sent\n{}",
        writes.count("POST", "/api/lists"),
        finished.stderr
    );
    assert!(took < bound, "{took:?}");
    scenario.assert_converges(&names).await;
}
