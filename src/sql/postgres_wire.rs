//! PostgreSQL's frontend/backend protocol, spoken directly to read a `COPY` fast.
//!
//! sqlx hands a `COPY` over one message at a time: each row is read into a buffer of its own,
//! split off as a shared `Bytes`, and yielded through a generator with a wake-up per row; over
//! ten million rows that is about a quarter of a no-op plan (docs/BENCHMARKS.md). So the `COPY`
//! that `copy.rs` builds is run on a connection of klsync's own, set up as sqlx sets up its
//! connections (the same start-up parameters, TLS as the URL asks), and its messages are parsed
//! straight from a 256 KiB read buffer into the same [`super::copy::CopySink`] the sqlx path uses,
//! so values go through the same decoders and come out identical. The statement is still
//! prepared by sqlx first (`copy.rs`): that proves it is one statement and gives its columns,
//! with sqlx's own type resolution.
//!
//! It is used only where it behaves exactly as sqlx would; everything else is read through
//! sqlx ([`Copied::Declined`]), which then also reports any error in its usual words:
//! * a TCP connection ([`WireOptions::from_url`]: host, port, user, database, `options` and
//!   `application_name` as sqlx read them from the URL and environment) with `sslmode` =
//!   `disable`, `prefer` or `require` (sqlx checks no certificate in these modes, and neither
//!   does this reader), and no client certificate;
//! * authentication by trust, password, MD5 or SCRAM-SHA-256 with the URL's password (a
//!   password sqlx would take from `PGPASSWORD` or `.pgpass` is left to sqlx);
//! * a `COPY` that starts: an error before its first row is reported by reading the query
//!   through sqlx, which fails the same way.
//!
//! Once rows have started, an error is the query's own (timeout, cancel, connection lost).
//! The connection is opened for one query and closed after it: its transaction, read-only and
//! with the statement timeout, is rolled back by the server as the connection goes.

use std::io;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::copy::CopySink;
use super::wire_error::{self, protocol};
use super::{ACQUIRE_TIMEOUT, Batcher, SqlError};

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 256 * 1024;
/// The protocol version of the start-up message (3.0).
const PROTOCOL_3: i32 = 196_608;
/// The request code of `SSLRequest`.
const SSL_REQUEST: i32 = 80_877_103;

/// How the URL asks for TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tls {
    Disable,
    /// sqlx's default: TLS if the server offers it.
    Prefer,
    Require,
}

/// Where and as whom the fast reader connects: what sqlx made of the URL and environment. The
/// password shows as `[REDACTED]` in debug output.
#[derive(Clone, Debug)]
pub(super) struct WireOptions {
    host: String,
    port: u16,
    user: String,
    password: Option<SecretString>,
    database: Option<String>,
    tls: Tls,
    application_name: Option<String>,
    /// The `options` start-up parameter (`-c search_path=...`).
    options: Option<String>,
}

impl WireOptions {
    /// The options of the URL `raw`, which sqlx read as `parsed`, or `None` when the fast
    /// reader does not apply to it (see the module's list).
    pub(super) fn from_url(raw: &str, parsed: &PgConnectOptions) -> Option<WireOptions> {
        Self::from_url_and_env(raw, parsed, |name| std::env::var(name).ok())
    }

    fn from_url_and_env(
        raw: &str,
        parsed: &PgConnectOptions,
        env: impl Fn(&str) -> Option<String>,
    ) -> Option<WireOptions> {
        // A client certificate, which sqlx would present.
        if ["PGSSLCERT", "PGSSLKEY"]
            .iter()
            .any(|name| env(name).is_some())
        {
            return None;
        }
        let url = url::Url::parse(raw).ok()?;
        let mut password = url.password().map(super::percent_decoded);
        for (key, value) in url.query_pairs() {
            match &*key {
                "sslcert" | "ssl-cert" | "sslkey" | "ssl-key" => return None,
                "password" => password = Some(Some(value.into_owned())),
                _ => {}
            }
        }
        let password = match password {
            None => None,
            Some(Some(password)) => Some(password),
            // Not UTF-8 once decoded.
            Some(None) => return None,
        };
        if parsed.get_socket().is_some() || parsed.get_username().is_empty() {
            return None;
        }
        let tls = match parsed.get_ssl_mode() {
            PgSslMode::Disable => Tls::Disable,
            PgSslMode::Prefer => Tls::Prefer,
            PgSslMode::Require => Tls::Require,
            // Certificates checked (verify-ca, verify-full), or `allow`'s plain-text first.
            _ => return None,
        };
        Some(WireOptions {
            host: parsed.get_host().to_owned(),
            port: parsed.get_port(),
            user: parsed.get_username().to_owned(),
            password: password.map(SecretString::from),
            database: parsed.get_database().map(str::to_owned),
            tls,
            application_name: parsed.get_application_name().map(str::to_owned),
            options: parsed.get_options().map(str::to_owned),
        })
    }
}

/// How a `COPY` on a connection of klsync's own ended.
pub(super) enum Copied {
    /// Every row was sent (or the consumer went away).
    Complete,
    /// The rows had started when the query failed.
    Failed(SqlError),
    /// Nothing was read: read through sqlx. The reason is for `-vv`.
    Declined(String),
}

type WireError = wire_error::WireError<ServerError>;

/// The fields of an `ErrorResponse` klsync reports.
#[derive(Debug, Default)]
struct ServerError {
    code: String,
    message: String,
    position: Option<usize>,
    detail: Option<String>,
    hint: Option<String>,
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl ServerError {
    fn parse(body: &[u8]) -> ServerError {
        let mut error = ServerError::default();
        for field in body.split(|b| *b == 0) {
            let Some((&kind, value)) = field.split_first() else {
                continue;
            };
            let value = String::from_utf8_lossy(value).into_owned();
            match kind {
                b'C' => error.code = value,
                b'M' => error.message = value,
                b'P' => error.position = value.parse().ok(),
                b'D' => error.detail = Some(value),
                b'H' => error.hint = Some(value),
                _ => {}
            }
        }
        error
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One connection, used for one `COPY` and closed.
pub(super) struct WireConnection {
    stream: Box<dyn Io>,
    buffer: Vec<u8>,
    /// The unread bytes are `buffer[start..end]`.
    start: usize,
    end: usize,
}

/// A connection of klsync's own, opened (with its server process) or not (why).
pub(super) type Opened = Result<(WireConnection, i32), String>;

/// Open a connection of klsync's own. Started as soon as a query may need it, so that its TLS
/// handshake and authentication overlap sqlx's preparing of the statement.
pub(super) async fn open(options: WireOptions) -> Opened {
    match tokio::time::timeout(ACQUIRE_TIMEOUT, WireConnection::open(&options)).await {
        Ok(Ok(opened)) => opened,
        Ok(Err(err)) => Err(format!("setting up the connection: {err}")),
        Err(_) => Err(format!(
            "no connection within {}s",
            ACQUIRE_TIMEOUT.as_secs()
        )),
    }
}

/// Run `copy` (a `COPY ... TO STDOUT (FORMAT binary)` statement) on the connection `opened`
/// in a read-only transaction with the statement timeout, its rows going to `sink` and
/// `batch`, then close it. `backend` is set to the connection's server process while it runs
/// (for a cancel). Rows are sent only once the `COPY` has started: a declined read has sent
/// none.
pub(super) async fn copy(
    opened: Opened,
    copy: &str,
    timeout: Duration,
    backend: &AtomicI32,
    sink: &mut CopySink,
    batch: &mut Batcher<'_>,
) -> Copied {
    let (mut connection, process) = match opened {
        Ok(opened) => opened,
        Err(declined) => return Copied::Declined(declined),
    };
    backend.store(process, Ordering::Relaxed);
    let copied = connection.copy(copy, timeout, sink, batch).await;
    backend.store(0, Ordering::Relaxed);
    connection.close().await;
    copied
}

impl WireConnection {
    /// Connect (TLS as the URL asks), start up as sqlx does and authenticate; the connection and
    /// its server process, or why the fast reader does not apply.
    async fn open(options: &WireOptions) -> Result<Result<(Self, i32), String>, WireError> {
        let mut tcp = TcpStream::connect((options.host.as_str(), options.port)).await?;
        tcp.set_nodelay(true)?;
        let stream: Box<dyn Io> = match options.tls {
            Tls::Disable => Box::new(tcp),
            Tls::Prefer | Tls::Require => {
                let mut request = Vec::with_capacity(8);
                request.extend_from_slice(&8i32.to_be_bytes());
                request.extend_from_slice(&SSL_REQUEST.to_be_bytes());
                tcp.write_all(&request).await?;
                match tcp.read_u8().await? {
                    b'S' => Box::new(tls::connect(&options.host, tcp).await?),
                    b'N' if options.tls == Tls::Prefer => Box::new(tcp),
                    _ => return Ok(Err("the server refuses TLS, which the URL requires".into())),
                }
            }
        };
        let mut connection = WireConnection {
            stream,
            buffer: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
        };
        // sqlx's start-up parameters (sqlx-postgres, connection/establish.rs).
        let mut parameters: Vec<(&str, &str)> = vec![("user", &options.user)];
        if let Some(database) = &options.database {
            parameters.push(("database", database));
        }
        parameters.extend([
            ("DateStyle", "ISO, MDY"),
            ("client_encoding", "UTF8"),
            ("TimeZone", "UTC"),
            ("extra_float_digits", "2"),
        ]);
        if let Some(name) = &options.application_name {
            parameters.push(("application_name", name));
        }
        if let Some(value) = &options.options {
            parameters.push(("options", value));
        }
        let mut startup = Vec::with_capacity(128);
        startup.extend_from_slice(&[0; 4]);
        startup.extend_from_slice(&PROTOCOL_3.to_be_bytes());
        for (name, value) in parameters {
            put_cstr(&mut startup, name);
            put_cstr(&mut startup, value);
        }
        startup.push(0);
        let length = (startup.len() as i32).to_be_bytes();
        startup[..4].copy_from_slice(&length);
        connection.stream.write_all(&startup).await?;
        let mut process = 0;
        let mut scram: Option<Scram> = None;
        loop {
            let (kind, body) = connection.message().await?;
            match kind {
                b'R' => {
                    let mut reader = Reader(body);
                    let method = reader.i32().ok_or_else(|| protocol("authentication"))?;
                    let password = options.password.as_ref().map(ExposeSecret::expose_secret);
                    let answer = match (method, password) {
                        (0, _) => None,
                        (3, Some(password)) => Some(password_message(b'p', password.as_bytes())),
                        (5, Some(password)) => {
                            let salt = reader.take(4).ok_or_else(|| protocol("MD5 salt"))?;
                            let hashed = md5_password(&options.user, password, salt);
                            Some(password_message(b'p', hashed.as_bytes()))
                        }
                        (10, Some(password)) => {
                            let mechanisms = reader.0;
                            if !mechanisms
                                .split(|b| *b == 0)
                                .any(|mechanism| mechanism == b"SCRAM-SHA-256")
                            {
                                return Ok(Err("SASL without SCRAM-SHA-256".into()));
                            }
                            let started = Scram::new(password);
                            let message = started.initial_response();
                            scram = Some(started);
                            Some(message)
                        }
                        (11, _) => {
                            let scram = scram.as_mut().ok_or_else(|| protocol("SASL"))?;
                            let Some(response) = scram.client_final(reader.0) else {
                                return Ok(Err("the server's SCRAM challenge".into()));
                            };
                            Some(password_message(b'p', response.as_bytes()))
                        }
                        (12, _) => {
                            let proven = scram
                                .as_ref()
                                .is_some_and(|scram| scram.server_final_ok(reader.0));
                            if !proven {
                                return Ok(Err("the server's SCRAM signature".into()));
                            }
                            None
                        }
                        (method, _) => {
                            return Ok(Err(format!(
                                "authentication method {method} (or no password in the URL)"
                            )));
                        }
                    };
                    if let Some(answer) = answer {
                        connection.stream.write_all(&answer).await?;
                    }
                }
                b'K' => process = Reader(body).i32().ok_or_else(|| protocol("key data"))?,
                b'Z' => return Ok(Ok((connection, process))),
                b'E' => {
                    let error = ServerError::parse(body);
                    return Ok(Err(format!("start-up: {} ({})", error.message, error.code)));
                }
                // Parameter status, notices.
                b'S' | b'N' => {}
                other => return Err(protocol(format!("message {:?} at start-up", other as char))),
            }
        }
    }

    /// The next message: its type and body (borrowed from the read buffer).
    async fn message(&mut self) -> Result<(u8, &[u8]), WireError> {
        loop {
            let available = self.end - self.start;
            if available >= 5 {
                let header = &self.buffer[self.start..self.start + 5];
                let length = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
                let length = usize::try_from(length)
                    .ok()
                    .filter(|length| *length >= 4)
                    .ok_or_else(|| protocol("a message length"))?;
                if available > length {
                    let kind = header[0];
                    let body = self.start + 5..self.start + 1 + length;
                    self.start += 1 + length;
                    return Ok((kind, &self.buffer[body]));
                }
                if 1 + length > self.buffer.len() {
                    self.buffer.resize((1 + length).next_power_of_two(), 0);
                }
            }
            self.fill().await?;
        }
    }

    /// Read more bytes after the unread ones (moved to the front first).
    async fn fill(&mut self) -> Result<(), WireError> {
        if self.start > 0 {
            self.buffer.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let read = self.stream.read(&mut self.buffer[self.end..]).await?;
        if read == 0 {
            return Err(WireError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        self.end += read;
        Ok(())
    }

    async fn copy(
        &mut self,
        copy: &str,
        timeout: Duration,
        sink: &mut CopySink,
        batch: &mut Batcher<'_>,
    ) -> Copied {
        // Two simple queries, sent at once: the transaction (set_config(..., true) is SET LOCAL,
        // ended by the transaction, as on sqlx's connection in `postgres.rs`), then the COPY
        // alone, so that it is the statement the server shows (`current_query()`,
        // `pg_stat_activity`). If the first fails, the second fails too (the transaction is
        // aborted) and the read is declined.
        let setup = format!(
            "BEGIN READ ONLY; SET LOCAL statement_timeout = '{}ms'",
            timeout.as_millis()
        );
        let mut message = Vec::with_capacity(setup.len() + copy.len() + 12);
        for query in [setup.as_str(), copy] {
            message.push(b'Q');
            message.extend_from_slice(&((query.len() + 5) as i32).to_be_bytes());
            put_cstr(&mut message, query);
        }
        if let Err(err) = self.stream.write_all(&message).await {
            return Copied::Declined(format!("sending the COPY: {err}"));
        }
        // The first ReadyForQuery ends the setup query.
        let mut set_up = false;
        // The COPY began (CopyOutResponse: the server runs the query from here) and a row came.
        let mut began = false;
        let mut started = false;
        let outcome = loop {
            let (kind, body) = match self.message().await {
                Ok(message) => message,
                Err(err) => break Err(err),
            };
            match kind {
                b'd' => {
                    started = true;
                    match sink.take(body, batch).await {
                        Ok(true) => {}
                        // The consumer is gone; closing the connection ends the statement.
                        Ok(false) => return Copied::Complete,
                        Err(reason) => break Err(protocol(reason)),
                    }
                }
                b'E' => break Err(WireError::Server(ServerError::parse(body))),
                b'Z' if !set_up => set_up = true,
                b'Z' if started => break Ok(()),
                b'Z' => break Err(protocol("the COPY ended before it started")),
                b'H' => began = true,
                // Command completions (BEGIN, SET, COPY), the COPY's end, notices, parameter
                // status.
                b'C' | b'c' | b'N' | b'S' => {}
                other => break Err(protocol(format!("message {:?} in a COPY", other as char))),
            }
        };
        match outcome.map(|()| sink.ended()) {
            Ok(Err(incomplete)) => Copied::Failed(incomplete),
            Ok(Ok(())) => {
                sink.flush(batch).await;
                Copied::Complete
            }
            Err(err) if !started && !query_failed(&err, began) => {
                Copied::Declined(format!("before the first row: {err}"))
            }
            Err(err) => {
                // The rows before the error arrive first.
                sink.flush(batch).await;
                Copied::Failed(err.into_sql(|error| {
                    SqlError::from_postgres(
                        &error.code,
                        error.message,
                        error.position,
                        error.detail,
                        error.hint,
                        timeout,
                    )
                }))
            }
        }
    }

    /// Say goodbye (`Terminate`); the server rolls the transaction back.
    async fn close(mut self) {
        let _ = self.stream.write_all(&[b'X', 0, 0, 0, 4]).await;
        let _ = self.stream.shutdown().await;
    }
}

/// Whether `err`, before the first row, is the query's own failure, to report rather than leave
/// to sqlx (which would run the query again): a cancel or timeout (a stopped run, whose cancel
/// was meant for this query), or any error once the COPY began, except those by which a server
/// refuses `COPY` itself (which `copy.rs` handles on sqlx's side: feature not supported,
/// protocol violation, a syntax error under `COPY`). Before the COPY began, everything else
/// (the statement's own errors at planning included) is declined: sqlx then fails the same way
/// at once and reports it in its usual words.
fn query_failed(err: &WireError, began: bool) -> bool {
    match err {
        WireError::Server(error) => {
            error.code == "57014"
                || (began && !matches!(error.code.as_str(), "0A000" | "08P01" | "42601"))
        }
        WireError::Io(_) | WireError::Protocol(_) => false,
    }
}

fn put_cstr(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(text.as_bytes());
    out.push(0);
}

/// A `PasswordMessage`-shaped message (`p`: password, SASL responses) of `body`, NUL-ended for
/// passwords.
fn password_message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(body.len() + 6);
    message.push(kind);
    message.extend_from_slice(&((body.len() + 5) as i32).to_be_bytes());
    message.extend_from_slice(body);
    message.push(0);
    message
}

/// `md5` + md5hex(md5hex(password + user) + salt), PostgreSQL's MD5 password answer.
fn md5_password(user: &str, password: &str, salt: &[u8]) -> String {
    let inner = hex(&md5::Md5::digest(format!("{password}{user}").as_bytes()));
    let mut outer = md5::Md5::new();
    outer.update(inner.as_bytes());
    outer.update(salt);
    format!("md5{}", hex(&outer.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A big-endian reader over a message body.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        if self.0.len() < count {
            return None;
        }
        let (taken, rest) = self.0.split_at(count);
        self.0 = rest;
        Some(taken)
    }

    fn i32(&mut self) -> Option<i32> {
        self.take(4)
            .map(|bytes| i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }
}

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// SCRAM-SHA-256 without channel binding (RFC 5802, RFC 7677), as sqlx and libpq do it by
/// default.
struct Scram {
    password: String,
    nonce: String,
    client_first_bare: String,
    /// The server's signature to expect, once the proof is sent.
    server_signature: Option<[u8; 32]>,
}

impl Scram {
    fn new(password: &str) -> Scram {
        let nonce: [u8; 18] = rand::random();
        Self::with_nonce(password, BASE64.encode(nonce))
    }

    fn with_nonce(password: &str, nonce: String) -> Scram {
        // SASLprep, or the password as it is when it cannot be prepared (as libpq does).
        let password = stringprep::saslprep(password)
            .map(|prepared| prepared.into_owned())
            .unwrap_or_else(|_| password.to_owned());
        // The user name is the start-up message's; PostgreSQL ignores this one.
        let client_first_bare = format!("n=,r={nonce}");
        Scram {
            password,
            nonce,
            client_first_bare,
            server_signature: None,
        }
    }

    /// `SASLInitialResponse`: the mechanism and the client-first message.
    fn initial_response(&self) -> Vec<u8> {
        let first = format!("n,,{}", self.client_first_bare);
        let mut body = Vec::new();
        put_cstr(&mut body, "SCRAM-SHA-256");
        body.extend_from_slice(&(first.len() as i32).to_be_bytes());
        body.extend_from_slice(first.as_bytes());
        let mut message = Vec::with_capacity(body.len() + 5);
        message.push(b'p');
        message.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        message.extend_from_slice(&body);
        message
    }

    /// The client-final message answering `server_first`, or `None` if it is malformed or its
    /// nonce does not extend ours.
    fn client_final(&mut self, server_first: &[u8]) -> Option<String> {
        let server_first = std::str::from_utf8(server_first).ok()?;
        let attribute = |name: &str| {
            server_first
                .split(',')
                .find_map(|part| part.strip_prefix(name)?.strip_prefix('='))
        };
        let nonce = attribute("r").filter(|nonce| nonce.starts_with(&self.nonce))?;
        let salt = BASE64.decode(attribute("s")?).ok()?;
        let iterations: u32 = attribute("i")?.parse().ok().filter(|i| *i > 0)?;
        // Hi(password, salt, i): PBKDF2 with HMAC-SHA-256, one block.
        let mut block = salt.clone();
        block.extend_from_slice(&1u32.to_be_bytes());
        let mut previous = hmac(self.password.as_bytes(), &block);
        let mut salted = previous;
        for _ in 1..iterations {
            previous = hmac(self.password.as_bytes(), &previous);
            for (out, byte) in salted.iter_mut().zip(previous) {
                *out ^= byte;
            }
        }
        let client_key = hmac(&salted, b"Client Key");
        let stored_key = Sha256::digest(client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac(&salted, b"Server Key");
        self.server_signature = Some(hmac(&server_key, auth_message.as_bytes()));
        Some(format!("{without_proof},p={}", BASE64.encode(proof)))
    }

    /// Whether `server_final` carries the signature only a server knowing the password makes.
    fn server_final_ok(&self, server_final: &[u8]) -> bool {
        let Some(expected) = self.server_signature else {
            return false;
        };
        std::str::from_utf8(server_final)
            .ok()
            .and_then(|text| text.strip_prefix("v="))
            .and_then(|signature| BASE64.decode(signature.trim_end_matches('\0')).ok())
            .is_some_and(|signature| signature == expected)
    }
}

/// TLS as sqlx does it in the modes this reader takes (`prefer`, `require`): encrypted, the
/// server's certificate not checked.
mod tls {
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::WebPkiSupportedAlgorithms;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};
    use tokio::net::TcpStream;
    use tokio_rustls::TlsConnector;
    use tokio_rustls::client::TlsStream;

    #[derive(Debug)]
    struct Unchecked(WebPkiSupportedAlgorithms);

    impl ServerCertVerifier for Unchecked {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_schemes()
        }
    }

    pub(super) async fn connect(
        host: &str,
        tcp: TcpStream,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let algorithms = provider.signature_verification_algorithms;
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unchecked(algorithms)))
            .with_no_client_auth();
        let name = ServerName::try_from(host.to_owned()).map_err(std::io::Error::other)?;
        TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options_of(url: &str, env: impl Fn(&str) -> Option<String>) -> Option<WireOptions> {
        use std::str::FromStr as _;
        let parsed = PgConnectOptions::from_str(url).expect("a URL sqlx reads");
        WireOptions::from_url_and_env(url, &parsed, env)
    }

    #[test]
    fn urls_the_reader_takes_and_leaves() {
        let none = |_: &str| None;
        let options = options_of(
            "postgres://ann:p%40ss@db.example:6543/shop?sslmode=require&options=-c%20search_path%3Dx",
            none,
        )
        .expect("applies");
        assert_eq!(options.host, "db.example");
        assert_eq!(options.port, 6543);
        assert_eq!(options.user, "ann");
        assert_eq!(
            options.password.as_ref().map(ExposeSecret::expose_secret),
            Some("p@ss")
        );
        assert_eq!(options.database.as_deref(), Some("shop"));
        assert_eq!(options.tls, Tls::Require);
        assert!(format!("{options:?}").contains("REDACTED"));
        assert_eq!(options.options.as_deref(), Some("-c search_path=x"));
        assert!(!format!("{options:?}").contains("p@ss"));
        let default = options_of("postgresql://ann@127.0.0.1/x", none).unwrap();
        assert_eq!((default.port, default.tls), (5432, Tls::Prefer));
        assert!(default.password.is_none());
        let in_query = options_of("postgres://ann@h/x?password=s%20t&sslmode=disable", none);
        let in_query = in_query.unwrap();
        assert_eq!(
            in_query.password.as_ref().map(ExposeSecret::expose_secret),
            Some("s t")
        );
        assert_eq!(in_query.tls, Tls::Disable);
        for declined in [
            "postgres://ann@%2Fvar%2Frun%2Fpostgresql/x",
            "postgres://ann@127.0.0.1/x?sslmode=verify-full",
            "postgres://ann@127.0.0.1/x?sslmode=allow",
            "postgres://ann@127.0.0.1/x?sslcert=/c.pem&sslkey=/k.pem",
        ] {
            assert!(options_of(declined, none).is_none(), "{declined}");
        }
        let env = |name: &str| (name == "PGSSLKEY").then(|| "/k.pem".to_string());
        assert!(options_of("postgres://ann@h/x", env).is_none());
    }

    #[test]
    fn md5_answer_matches_postgresql() {
        // "md5" + md5hex(md5hex("secret" + "ann") + salt), by Python's hashlib.
        assert_eq!(
            md5_password("ann", "secret", &[1, 2, 3, 4]),
            "md59009ce60b9ca97f1e752376843d1309e"
        );
    }

    #[test]
    fn scram_follows_rfc_7677() {
        // RFC 7677's example: user "user", password "pencil", client nonce
        // "rOprNGfwEbeRWgbNEkqO".
        let mut scram = Scram::with_nonce("pencil", "rOprNGfwEbeRWgbNEkqO".into());
        scram.client_first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO".into();
        let server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                             s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let client_final = scram.client_final(server_first).expect("answer");
        assert_eq!(
            client_final,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
             p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        assert!(scram.server_final_ok(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="));
        assert!(!scram.server_final_ok(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="));
        // A server nonce that does not extend ours is refused.
        let mut other = Scram::with_nonce("pencil", "abc".into());
        assert!(
            other
                .client_final(b"r=xyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
                .is_none()
        );
    }

    #[test]
    fn error_fields_are_read() {
        let body = b"SERROR\0C42P01\0Mrelation \"x\" does not exist\0P15\0\0";
        let error = ServerError::parse(body);
        assert_eq!(error.code, "42P01");
        assert_eq!(error.message, "relation \"x\" does not exist");
        assert_eq!(error.position, Some(15));
    }
}
