//! MySQL's client/server protocol, spoken directly to read a large result fast.
//!
//! sqlx reads a MySQL result one packet, one row object and one generator wake-up at a time;
//! over a million rows that costs more than all of the plan's own work (docs/BENCHMARKS.md). So
//! a query without parameters is read on a connection of klsync's own: set up as sqlx sets up
//! its connections (the same session statements, [`super::session_statements`]), the statement
//! prepared and executed, so values arrive in the binary protocol and are decoded by the very
//! same [`super::MySqlColumn`]s, and the rows are parsed straight from the read buffer into the
//! batch, as `copy.rs` does for PostgreSQL's `COPY`.
//!
//! It is used only where it behaves exactly as sqlx would; everything else is read through
//! sqlx ([`Opened::Declined`], [`Read::Declined`]), which then also reports any error in its
//! usual words:
//! * a TCP URL ([`WireOptions::from_url`]) whose only parameter, if any, is `ssl-mode` =
//!   `disabled` or `preferred`: no socket, charset, collation, time zone or certificates; and,
//!   when TLS is preferred (the default), a server that offers none (sqlx would use it);
//! * authentication by `mysql_native_password`, or by `caching_sha2_password` where the server
//!   has the password cached (its fast path); a server asking for anything else (the full
//!   `caching_sha2_password` exchange, `ed25519`, PAM, ...) is left to sqlx;
//! * a statement the server prepares: an error before the first row (syntax, unknown column,
//!   permission) is reported by reading the query through sqlx, which fails the same way.
//!
//! Once rows have started, an error is the query's own (timeout, `KILL`, connection lost).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::super::batch::BinaryRows;
use super::super::wire_error::{self, protocol};
use super::super::{
    ACQUIRE_TIMEOUT, Batcher, ROW_BATCH, RowBatch, RowSender, SqlError, decode, percent_decoded,
};
use super::MySqlColumn;

/// Capability flags (`CLIENT_*`) of the handshake.
mod client {
    pub(super) const LONG_PASSWORD: u32 = 0x1;
    pub(super) const FOUND_ROWS: u32 = 0x2;
    pub(super) const LONG_FLAG: u32 = 0x4;
    pub(super) const CONNECT_WITH_DB: u32 = 0x8;
    pub(super) const IGNORE_SPACE: u32 = 0x100;
    pub(super) const PROTOCOL_41: u32 = 0x200;
    pub(super) const SSL: u32 = 0x800;
    pub(super) const TRANSACTIONS: u32 = 0x2000;
    pub(super) const SECURE_CONNECTION: u32 = 0x8000;
    pub(super) const MULTI_RESULTS: u32 = 0x2_0000;
    pub(super) const PLUGIN_AUTH: u32 = 0x8_0000;
    pub(super) const PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 0x20_0000;
}

const COM_QUIT: u8 = 0x01;
const COM_QUERY: u8 = 0x03;
const COM_STMT_PREPARE: u8 = 0x16;
const COM_STMT_EXECUTE: u8 = 0x17;
/// `utf8mb4_general_ci`, the handshake's character set (the session's is set by `SET NAMES`).
const UTF8MB4: u8 = 45;
/// The `binary` character set: a column of bytes, not text.
const BINARY_CHARSET: u16 = 63;
/// A payload of this length continues in the next packet.
const MAX_PAYLOAD: usize = 0xFF_FFFF;
/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 256 * 1024;

/// Where and as whom the fast reader connects: the URL's, read as sqlx reads it. The password
/// shows as `[REDACTED]` in debug output.
#[derive(Clone, Debug)]
pub(super) struct WireOptions {
    host: String,
    port: u16,
    user: String,
    password: SecretString,
    database: Option<String>,
    /// `ssl-mode=preferred` (sqlx's default): TLS if the server offers it, so then sqlx reads.
    tls_preferred: bool,
}

impl WireOptions {
    /// The options of a `mysql://` URL, or `None` when the fast reader does not apply to it
    /// (see the module's list).
    pub(super) fn from_url(raw: &str) -> Option<WireOptions> {
        let url = url::Url::parse(raw).ok()?;
        let mut tls_preferred = true;
        for (key, value) in url.query_pairs() {
            match (&*key, value.to_ascii_lowercase().as_str()) {
                ("ssl-mode" | "sslmode", "disabled") => tls_preferred = false,
                ("ssl-mode" | "sslmode", "preferred") => tls_preferred = true,
                _ => return None,
            }
        }
        let host = match url.host()? {
            url::Host::Domain(name) => name.to_string(),
            url::Host::Ipv4(address) => address.to_string(),
            url::Host::Ipv6(address) => address.to_string(),
        };
        let path = url.path().trim_start_matches('/');
        let user = percent_decoded(url.username())?;
        Some(WireOptions {
            host,
            port: url.port().unwrap_or(3306),
            // sqlx's default user.
            user: if user.is_empty() { "root".into() } else { user },
            password: percent_decoded(url.password().unwrap_or_default())?.into(),
            database: (!path.is_empty()).then(|| percent_decoded(path)).flatten(),
            tls_preferred,
        })
    }
}

/// How opening a connection of klsync's own ended.
pub(super) enum Opened {
    Ready(WireConnection),
    /// The fast reader does not apply (or the server could not be reached this way): read
    /// through sqlx. The reason is for `-vv`.
    Declined(String),
}

/// How reading a query on a [`WireConnection`] ended, when it did not fail.
pub(super) enum Read {
    /// Every row was sent (or the consumer went away).
    Complete,
    /// The server refused the statement before its first row: read through sqlx, which reports
    /// the error as it always does.
    Declined(String),
}

/// The server's error packet: its number and message.
struct ServerError(u16, String);

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (error {})", self.1, self.0)
    }
}

type WireError = wire_error::WireError<ServerError>;

/// One connection, set up for reading, used for one query and closed.
pub(super) struct WireConnection {
    stream: TcpStream,
    buffer: Vec<u8>,
    /// The unread bytes are `buffer[start..end]`.
    start: usize,
    end: usize,
    /// The sequence number of the next packet sent.
    sequence: u8,
    /// The server's number for this connection (for `KILL QUERY`).
    id: u32,
    /// A payload longer than one packet, reassembled.
    long: Vec<u8>,
}

impl WireConnection {
    /// Connect, authenticate and run `session` (the statements that set the session up, each
    /// expected to answer OK). Anything that does not go exactly as sqlx's own would is
    /// [`Opened::Declined`].
    pub(super) async fn open(options: &WireOptions, session: &[String]) -> Opened {
        // As long as sqlx's pool would wait for a connection; then sqlx tries, and reports.
        match tokio::time::timeout(ACQUIRE_TIMEOUT, Self::try_open(options, session)).await {
            Ok(Ok(opened)) => opened,
            Ok(Err(err)) => Opened::Declined(format!("setting up the connection failed: {err}")),
            Err(_) => Opened::Declined(format!(
                "no connection within {}s",
                ACQUIRE_TIMEOUT.as_secs()
            )),
        }
    }

    async fn try_open(options: &WireOptions, session: &[String]) -> Result<Opened, WireError> {
        let stream = TcpStream::connect((options.host.as_str(), options.port)).await?;
        stream.set_nodelay(true)?;
        let mut connection = WireConnection {
            stream,
            buffer: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            sequence: 0,
            id: 0,
            long: Vec::new(),
        };
        let handshake = Handshake::parse(connection.packet().await?)?;
        connection.id = handshake.connection_id;
        let needed = client::PROTOCOL_41 | client::SECURE_CONNECTION | client::PLUGIN_AUTH;
        if handshake.capabilities & needed != needed {
            return Ok(Opened::Declined("the server's handshake is too old".into()));
        }
        if options.tls_preferred && handshake.capabilities & client::SSL != 0 {
            return Ok(Opened::Declined("the server offers TLS".into()));
        }
        let Some(auth) = scramble(
            &handshake.plugin,
            options.password.expose_secret(),
            &handshake.nonce,
        ) else {
            return Ok(Opened::Declined(format!(
                "authentication plugin {}",
                handshake.plugin
            )));
        };
        // As sqlx asks, where it changes what a query means: IGNORE_SPACE (a function name may
        // be followed by a space, and is then a reserved word) and FOUND_ROWS. sqlx's
        // DEPRECATE_EOF and MULTI_STATEMENTS change only the framing and what COM_QUERY
        // accepts; a prepared statement is one statement either way.
        let mut wanted = client::LONG_PASSWORD
            | client::FOUND_ROWS
            | client::IGNORE_SPACE
            | client::LONG_FLAG
            | client::PROTOCOL_41
            | client::TRANSACTIONS
            | client::SECURE_CONNECTION
            | client::MULTI_RESULTS
            | client::PLUGIN_AUTH
            | client::PLUGIN_AUTH_LENENC_CLIENT_DATA;
        if options.database.is_some() {
            wanted |= client::CONNECT_WITH_DB;
        }
        let capabilities = wanted & handshake.capabilities;
        let mut response = Vec::with_capacity(128);
        response.extend_from_slice(&capabilities.to_le_bytes());
        response.extend_from_slice(&(MAX_PAYLOAD as u32).to_le_bytes());
        response.push(UTF8MB4);
        response.extend_from_slice(&[0; 23]);
        response.extend_from_slice(options.user.as_bytes());
        response.push(0);
        if capabilities & client::PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
            put_lenenc(&mut response, auth.len() as u64);
        } else {
            response.push(auth.len() as u8);
        }
        response.extend_from_slice(&auth);
        if let Some(database) = &options.database
            && capabilities & client::CONNECT_WITH_DB != 0
        {
            response.extend_from_slice(database.as_bytes());
            response.push(0);
        }
        response.extend_from_slice(handshake.plugin.as_bytes());
        response.push(0);
        connection.send(&response).await?;
        if let Some(declined) = connection.authenticated(options).await? {
            return Ok(Opened::Declined(declined));
        }
        for statement in session {
            connection.command(COM_QUERY, statement.as_bytes()).await?;
            connection.expect_ok().await?;
        }
        Ok(Opened::Ready(connection))
    }

    /// Follow the server's answers to the handshake response until it accepts (`None`) or asks
    /// for something only sqlx does (`Some(why)`).
    async fn authenticated(&mut self, options: &WireOptions) -> Result<Option<String>, WireError> {
        loop {
            let packet = self.packet().await?;
            match packet.first() {
                Some(0x00) => return Ok(None),
                Some(0xFF) => {
                    let (number, message) = server_error(packet);
                    return Ok(Some(format!("authentication: {message} ({number})")));
                }
                // AuthSwitchRequest: another plugin, with its own nonce.
                Some(0xFE) => {
                    let rest = &packet[1..];
                    let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
                    let plugin = String::from_utf8_lossy(&rest[..end]).into_owned();
                    let nonce = rest.get(end + 1..).unwrap_or_default();
                    let nonce = nonce.strip_suffix(&[0]).unwrap_or(nonce).to_vec();
                    let Some(auth) = scramble(&plugin, options.password.expose_secret(), &nonce)
                    else {
                        return Ok(Some(format!("authentication plugin {plugin}")));
                    };
                    self.send(&auth).await?;
                }
                // caching_sha2_password: 3 is "fast authentication succeeded" (an OK follows);
                // 4 asks for the full exchange (TLS or RSA), which sqlx does.
                Some(0x01) if packet.get(1) == Some(&3) => {}
                Some(other) => {
                    return Ok(Some(format!(
                        "authentication answer 0x{other:02x} {:?}",
                        packet.get(1)
                    )));
                }
                None => return Err(protocol("an empty packet")),
            }
        }
    }

    /// The server's number for this connection.
    pub(super) fn id(&self) -> u64 {
        u64::from(self.id)
    }

    /// Read `sql` (no parameters) in a read-only transaction, its rows sent through `batch` in
    /// [`ROW_BATCH`]es, then roll back and close.
    pub(super) async fn read(
        mut self,
        sql: &str,
        sender: &RowSender,
        timeout: Duration,
    ) -> Result<Read, SqlError> {
        let failed = |err: WireError| {
            err.into_sql(|ServerError(number, message)| {
                SqlError::from_mysql(number, message, timeout)
            })
        };
        self.command(COM_QUERY, b"START TRANSACTION READ ONLY")
            .await
            .map_err(failed)?;
        self.expect_ok().await.map_err(failed)?;
        let columns = match self.prepare_and_execute(sql).await.map_err(failed)? {
            Ok(columns) => columns,
            Err(declined) => return Ok(Read::Declined(declined)),
        };
        decode::distinct_names(columns.iter().map(|c| c.column.name.as_str()))?;
        let names: Arc<[String]> = columns.iter().map(|c| c.column.name.clone()).collect();
        let decoders: Arc<[MySqlColumn]> = columns.iter().map(|c| c.column.clone()).collect();
        let types: Vec<u8> = columns.iter().map(|c| c.type_id).collect();
        let unsupported: Vec<usize> = (0..decoders.len())
            .filter(|index| decoders[*index].kind == super::Kind::Unsupported)
            .collect();
        let batch = Batcher::new(sender);
        let mut rows = BinaryRows::new(Arc::clone(&decoders), ROW_BATCH);
        let mut fields: Vec<Option<(usize, usize)>> = Vec::with_capacity(types.len());
        let streamed = loop {
            let packet = match self.packet().await {
                Ok(packet) => packet,
                Err(err) => break Err(failed(err)),
            };
            match packet.first() {
                Some(0x00) => {}
                Some(0xFE) if packet.len() < 9 => break Ok(()),
                Some(0xFF) => {
                    let (number, message) = server_error(packet);
                    break Err(failed(WireError::Server(ServerError(number, message))));
                }
                _ => break Err(failed(protocol("an unexpected packet among the rows"))),
            }
            if let Err(err) = row_fields(packet, &types, &mut fields) {
                break Err(failed(err));
            }
            // A value of a type klsync does not convert stops the query (a NULL does not).
            if let Some(column) = unsupported
                .iter()
                .find(|index| fields[**index].is_some())
                .map(|index| &decoders[*index])
            {
                break Err(SqlError::UnsupportedType {
                    column: column.name.clone(),
                    type_name: column.type_name.clone(),
                });
            }
            rows.push(
                fields
                    .iter()
                    .map(|field| field.map(|(start, end)| &packet[start..end])),
            );
            if rows.len() >= ROW_BATCH {
                let full =
                    std::mem::replace(&mut rows, BinaryRows::new(Arc::clone(&decoders), ROW_BATCH));
                if !batch.send(RowBatch::from_binary(names.clone(), full)).await {
                    // The consumer is gone; closing the connection ends the statement.
                    return Ok(Read::Complete);
                }
            }
        };
        // The last rows, also those before an error (they arrive first).
        if !rows.is_empty() {
            batch.send(RowBatch::from_binary(names, rows)).await;
        }
        streamed?;
        // A sync query never commits. The connection closes right after, which would roll back
        // too; saying it keeps the server's log plain.
        self.command(COM_QUERY, b"ROLLBACK").await.map_err(failed)?;
        self.expect_ok().await.map_err(failed)?;
        let _ = self.command(COM_QUIT, &[]).await;
        Ok(Read::Complete)
    }

    /// Prepare `sql` and execute it; its columns, or why sqlx should read it instead (`Err`:
    /// the server refused it, or it has parameters after all).
    async fn prepare_and_execute(
        &mut self,
        sql: &str,
    ) -> Result<Result<Vec<WireColumn>, String>, WireError> {
        self.command(COM_STMT_PREPARE, sql.as_bytes()).await?;
        let packet = self.packet().await?;
        let (statement, declared_columns, params) = match packet.first() {
            Some(0x00) if packet.len() >= 12 => (
                u32::from_le_bytes([packet[1], packet[2], packet[3], packet[4]]),
                u16::from_le_bytes([packet[5], packet[6]]),
                u16::from_le_bytes([packet[7], packet[8]]),
            ),
            Some(0xFF) => {
                let (number, message) = server_error(packet);
                return Ok(Err(format!("prepare: {message} ({number})")));
            }
            _ => return Err(protocol("an unexpected answer to PREPARE")),
        };
        if params > 0 {
            return Ok(Err("the statement has parameters".into()));
        }
        if declared_columns > 0 {
            for _ in 0..declared_columns {
                self.packet().await?;
            }
            self.expect_eof().await?;
        }
        // Execute: no cursor, one iteration, no parameters.
        let mut execute = Vec::with_capacity(9);
        execute.extend_from_slice(&statement.to_le_bytes());
        execute.push(0);
        execute.extend_from_slice(&1u32.to_le_bytes());
        self.command(COM_STMT_EXECUTE, &execute).await?;
        let packet = self.packet().await?;
        let count = match packet.first() {
            Some(0xFF) => {
                let (number, message) = server_error(packet);
                return Ok(Err(format!("execute: {message} ({number})")));
            }
            Some(0x00) => return Err(protocol("a query that returns no result set")),
            _ => lenenc(&mut &packet[..]).ok_or_else(|| protocol("a column count"))?,
        };
        let mut columns = Vec::with_capacity(count as usize);
        for _ in 0..count {
            columns.push(WireColumn::parse(self.packet().await?)?);
        }
        self.expect_eof().await?;
        Ok(Ok(columns))
    }

    async fn expect_ok(&mut self) -> Result<(), WireError> {
        let packet = self.packet().await?;
        match packet.first() {
            Some(0x00) => Ok(()),
            Some(0xFF) => {
                let (number, message) = server_error(packet);
                Err(WireError::Server(ServerError(number, message)))
            }
            _ => Err(protocol("expected OK")),
        }
    }

    async fn expect_eof(&mut self) -> Result<(), WireError> {
        let packet = self.packet().await?;
        match packet.first() {
            Some(0xFE) if packet.len() < 9 => Ok(()),
            _ => Err(protocol("expected EOF")),
        }
    }

    /// Send a command (a new exchange: sequence 0).
    async fn command(&mut self, command: u8, body: &[u8]) -> Result<(), WireError> {
        self.sequence = 0;
        let mut payload = Vec::with_capacity(1 + body.len());
        payload.push(command);
        payload.extend_from_slice(body);
        self.send(&payload).await
    }

    /// Send one payload (split into packets of at most [`MAX_PAYLOAD`] bytes).
    async fn send(&mut self, payload: &[u8]) -> Result<(), WireError> {
        let mut out = Vec::with_capacity(payload.len() + 8);
        let mut chunks = payload.chunks(MAX_PAYLOAD).peekable();
        if payload.is_empty() {
            out.extend_from_slice(&[0, 0, 0, self.sequence]);
            self.sequence = self.sequence.wrapping_add(1);
        }
        while let Some(chunk) = chunks.next() {
            out.extend_from_slice(&(chunk.len() as u32).to_le_bytes()[..3]);
            out.push(self.sequence);
            self.sequence = self.sequence.wrapping_add(1);
            out.extend_from_slice(chunk);
            // A payload of exactly a multiple of the maximum ends with an empty packet.
            if chunks.peek().is_none() && chunk.len() == MAX_PAYLOAD {
                out.extend_from_slice(&[0, 0, 0, self.sequence]);
                self.sequence = self.sequence.wrapping_add(1);
            }
        }
        self.stream.write_all(&out).await?;
        Ok(())
    }

    /// The next payload, borrowed from the read buffer (or reassembled when it spans packets).
    async fn packet(&mut self) -> Result<&[u8], WireError> {
        let (start, length) = self.packet_part().await?;
        if length < MAX_PAYLOAD {
            return Ok(&self.buffer[start..start + length]);
        }
        let mut long = std::mem::take(&mut self.long);
        long.clear();
        long.extend_from_slice(&self.buffer[start..start + length]);
        loop {
            let (start, length) = self.packet_part().await?;
            long.extend_from_slice(&self.buffer[start..start + length]);
            if length < MAX_PAYLOAD {
                break;
            }
        }
        self.long = long;
        Ok(&self.long)
    }

    /// Read one packet's header and payload into the buffer; the payload's place in it.
    async fn packet_part(&mut self) -> Result<(usize, usize), WireError> {
        self.fill(4).await?;
        let header = &self.buffer[self.start..self.start + 4];
        let length =
            usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
        self.sequence = header[3].wrapping_add(1);
        self.fill(4 + length).await?;
        let start = self.start + 4;
        self.start = start + length;
        Ok((start, length))
    }

    /// Make sure `need` unread bytes are in the buffer.
    async fn fill(&mut self, need: usize) -> Result<(), WireError> {
        while self.end - self.start < need {
            if self.buffer.len() - self.start < need {
                // Move the unread bytes to the front, growing the buffer for a long packet.
                self.buffer.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
                if self.buffer.len() < need {
                    self.buffer.resize(need.max(READ_CHUNK), 0);
                }
            }
            let read = self.stream.read(&mut self.buffer[self.end..]).await?;
            if read == 0 {
                return Err(WireError::Io(io::ErrorKind::UnexpectedEof.into()));
            }
            self.end += read;
        }
        Ok(())
    }
}

/// The server's first packet (protocol version 10).
struct Handshake {
    connection_id: u32,
    capabilities: u32,
    /// The authentication nonce (20 bytes).
    nonce: Vec<u8>,
    plugin: String,
}

impl Handshake {
    fn parse(packet: &[u8]) -> Result<Handshake, WireError> {
        let short = || protocol("a short handshake");
        if packet.first() == Some(&0xFF) {
            let (number, message) = server_error(packet);
            return Err(WireError::Server(ServerError(number, message)));
        }
        if packet.first() != Some(&10) {
            return Err(protocol("a handshake of another protocol version"));
        }
        let version_end = packet[1..].iter().position(|b| *b == 0).ok_or_else(short)? + 1;
        let rest = packet.get(version_end + 1..).ok_or_else(short)?;
        if rest.len() < 31 {
            return Err(short());
        }
        let connection_id = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let mut nonce = rest[4..12].to_vec();
        // rest[12] is a filler byte.
        let lower = u16::from_le_bytes([rest[13], rest[14]]);
        // rest[15] is the character set, rest[16..18] the status.
        let upper = u16::from_le_bytes([rest[18], rest[19]]);
        let capabilities = u32::from(lower) | u32::from(upper) << 16;
        let nonce_length = usize::from(rest[20]);
        // rest[21..31] is reserved.
        let mut tail = &rest[31..];
        if capabilities & client::SECURE_CONNECTION != 0 {
            let second = nonce_length.saturating_sub(8).max(13);
            let part = tail.get(..second).ok_or_else(short)?;
            // The part ends with a NUL that is not part of the nonce.
            nonce.extend_from_slice(part.strip_suffix(&[0]).unwrap_or(part));
            tail = &tail[second..];
        }
        let plugin = if capabilities & client::PLUGIN_AUTH != 0 {
            let end = tail.iter().position(|b| *b == 0).unwrap_or(tail.len());
            String::from_utf8_lossy(&tail[..end]).into_owned()
        } else {
            String::new()
        };
        Ok(Handshake {
            connection_id,
            capabilities,
            nonce,
            plugin,
        })
    }
}

/// The authentication response of `plugin` for `password` and the server's `nonce`, for the
/// plugins the fast reader speaks.
fn scramble(plugin: &str, password: &str, nonce: &[u8]) -> Option<Vec<u8>> {
    if password.is_empty() {
        return matches!(plugin, "mysql_native_password" | "caching_sha2_password").then(Vec::new);
    }
    let nonce = nonce.get(..20).unwrap_or(nonce);
    match plugin {
        // SHA1(password) XOR SHA1(nonce + SHA1(SHA1(password)))
        "mysql_native_password" => Some(masked::<Sha1>(password, nonce, true)),
        // SHA256(password) XOR SHA256(SHA256(SHA256(password)) + nonce)
        "caching_sha2_password" => Some(masked::<Sha256>(password, nonce, false)),
        _ => None,
    }
}

/// `H(password)` XOR `H(nonce + H(H(password)))` (`nonce_first`) or `H(H(H(password)) + nonce)`:
/// the two plugins' scrambles differ only in their hash and in that order.
fn masked<H: Digest>(password: &str, nonce: &[u8], nonce_first: bool) -> Vec<u8> {
    let once = H::digest(password.as_bytes());
    let twice = H::digest(&once);
    let mut salted = H::new();
    if nonce_first {
        salted.update(nonce);
        salted.update(&twice);
    } else {
        salted.update(&twice);
        salted.update(nonce);
    }
    let salted = salted.finalize();
    once.iter().zip(salted.iter()).map(|(a, b)| a ^ b).collect()
}

/// A result column: its decoder and its type on the wire (which sets how its values are framed).
struct WireColumn {
    column: MySqlColumn,
    type_id: u8,
}

impl WireColumn {
    /// A column definition packet (protocol 4.1).
    fn parse(packet: &[u8]) -> Result<WireColumn, WireError> {
        let mut rest = packet;
        let mut strings = Vec::with_capacity(6);
        // catalog, schema, table, original table, name, original name
        for _ in 0..6 {
            strings.push(lenenc_bytes(&mut rest).ok_or_else(|| protocol("a column name"))?);
        }
        lenenc(&mut rest).ok_or_else(|| protocol("a column definition"))?;
        if rest.len() < 10 {
            return Err(protocol("a short column definition"));
        }
        let collation = u16::from_le_bytes([rest[0], rest[1]]);
        let max_size = u32::from_le_bytes([rest[2], rest[3], rest[4], rest[5]]);
        let type_id = rest[6];
        let flags = u16::from_le_bytes([rest[7], rest[8]]);
        // The name as the query gave it (its alias), else the original: as sqlx names it.
        let name = if strings[4].is_empty() {
            strings[5]
        } else {
            strings[4]
        };
        let name = std::str::from_utf8(name).map_err(|_| protocol("a column name not in UTF-8"))?;
        let wire_type = WireType {
            type_id,
            flags,
            collation,
            max_size,
        };
        Ok(WireColumn {
            column: MySqlColumn::new(
                name,
                wire_type.name(),
                wire_type.unsigned(),
                wire_type.text(),
            ),
            type_id,
        })
    }
}

/// A column's type as the server describes it.
struct WireType {
    type_id: u8,
    flags: u16,
    collation: u16,
    max_size: u32,
}

/// Column flags of a definition.
const UNSIGNED_FLAG: u16 = 32;
const BINARY_FLAG: u16 = 128;
const ENUM_FLAG: u16 = 256;

impl WireType {
    /// The type's name, as sqlx's `MySqlTypeInfo` names it (the decoders are chosen by it).
    fn name(&self) -> &'static str {
        let binary = self.flags & BINARY_FLAG != 0;
        let unsigned = self.flags & UNSIGNED_FLAG != 0;
        let is_enum = self.flags & ENUM_FLAG != 0;
        match self.type_id {
            0x01 if self.max_size == 1 => "BOOLEAN",
            0x01 if unsigned => "TINYINT UNSIGNED",
            0x02 if unsigned => "SMALLINT UNSIGNED",
            0x03 if unsigned => "INT UNSIGNED",
            0x09 if unsigned => "MEDIUMINT UNSIGNED",
            0x08 if unsigned => "BIGINT UNSIGNED",
            0x01 => "TINYINT",
            0x02 => "SMALLINT",
            0x03 => "INT",
            0x09 => "MEDIUMINT",
            0x08 => "BIGINT",
            0x04 => "FLOAT",
            0x05 => "DOUBLE",
            0x06 => "NULL",
            0x07 => "TIMESTAMP",
            0x0a => "DATE",
            0x0b => "TIME",
            0x0c => "DATETIME",
            0x0d => "YEAR",
            0x10 => "BIT",
            0xf7 => "ENUM",
            0xf8 => "SET",
            0x00 | 0xf6 => "DECIMAL",
            0xff => "GEOMETRY",
            0xf5 => "JSON",
            0xfe if binary => "BINARY",
            0xfe if is_enum => "ENUM",
            0x0f | 0xfd if binary => "VARBINARY",
            0xfe => "CHAR",
            0x0f | 0xfd => "VARCHAR",
            0xf9 if binary => "TINYBLOB",
            0xf9 => "TINYTEXT",
            0xfc if binary => "BLOB",
            0xfc => "TEXT",
            0xfa if binary => "MEDIUMBLOB",
            0xfa => "MEDIUMTEXT",
            0xfb if binary => "LONGBLOB",
            0xfb => "LONGTEXT",
            _ => "UNKNOWN",
        }
    }

    /// Whether it is an unsigned integer (as sqlx's `u64` accepts it).
    fn unsigned(&self) -> bool {
        matches!(self.type_id, 0x01 | 0x02 | 0x03 | 0x09 | 0x08 | 0x0d | 0x10)
            && self.flags & UNSIGNED_FLAG != 0
    }

    /// Whether it holds text rather than bytes (as sqlx's `str` accepts it): a string type in
    /// a character set other than `binary`.
    fn text(&self) -> bool {
        matches!(
            self.type_id,
            0x0f | 0xfc | 0xf9 | 0xfa | 0xfb | 0xfe | 0xfd | 0xf7
        ) && self.collation != BINARY_CHARSET
    }
}

/// The place of each field of a binary row `packet` (`None`: NULL), framed by the columns'
/// wire types, as sqlx frames them (dates and times keep their length byte; strings do not
/// keep theirs).
fn row_fields(
    packet: &[u8],
    types: &[u8],
    fields: &mut Vec<Option<(usize, usize)>>,
) -> Result<(), WireError> {
    fields.clear();
    let short = || protocol("a short row");
    let bitmap_length = (types.len() + 9) / 8;
    let bitmap = packet.get(1..1 + bitmap_length).ok_or_else(short)?;
    let mut at = 1 + bitmap_length;
    for (index, type_id) in types.iter().enumerate() {
        let bit = index + 2;
        if bitmap[bit / 8] & (1 << (bit % 8)) != 0 {
            fields.push(None);
            continue;
        }
        let (start, length) = match type_id {
            0x08 | 0x05 => (at, 8),
            0x03 | 0x09 | 0x04 => (at, 4),
            0x02 | 0x0d => (at, 2),
            0x01 => (at, 1),
            0x07 | 0x0a | 0x0c | 0x0b => (at, usize::from(*packet.get(at).ok_or_else(short)?) + 1),
            _ => {
                let mut rest = packet.get(at..).ok_or_else(short)?;
                let before = rest.len();
                let length = lenenc(&mut rest).ok_or_else(short)?;
                let length = usize::try_from(length).map_err(|_| short())?;
                (at + before - rest.len(), length)
            }
        };
        let end = start.checked_add(length).ok_or_else(short)?;
        if end > packet.len() {
            return Err(short());
        }
        fields.push(Some((start, end)));
        at = end;
    }
    Ok(())
}

/// A length-encoded integer, consumed from the front of `bytes`.
fn lenenc(bytes: &mut &[u8]) -> Option<u64> {
    let (&first, rest) = bytes.split_first()?;
    let (value, used) = match first {
        0..=0xfa => (u64::from(first), 0),
        0xfc => (
            u64::from(u16::from_le_bytes(rest.get(..2)?.try_into().ok()?)),
            2,
        ),
        0xfd => {
            let b = rest.get(..3)?;
            (
                u64::from(b[0]) | u64::from(b[1]) << 8 | u64::from(b[2]) << 16,
                3,
            )
        }
        0xfe => (u64::from_le_bytes(rest.get(..8)?.try_into().ok()?), 8),
        _ => return None,
    };
    *bytes = &rest[used..];
    Some(value)
}

/// A length-encoded string, consumed from the front of `bytes`.
fn lenenc_bytes<'a>(bytes: &mut &'a [u8]) -> Option<&'a [u8]> {
    let length = usize::try_from(lenenc(bytes)?).ok()?;
    let value = bytes.get(..length)?;
    *bytes = &bytes[length..];
    Some(value)
}

fn put_lenenc(out: &mut Vec<u8>, value: u64) {
    match value {
        0..=0xfa => out.push(value as u8),
        0xfb..=0xffff => {
            out.push(0xfc);
            out.extend_from_slice(&(value as u16).to_le_bytes());
        }
        0x1_0000..=0xff_ffff => {
            out.push(0xfd);
            out.extend_from_slice(&(value as u32).to_le_bytes()[..3]);
        }
        _ => {
            out.push(0xfe);
            out.extend_from_slice(&value.to_le_bytes());
        }
    }
}

/// The number and message of an error packet.
fn server_error(packet: &[u8]) -> (u16, String) {
    let number = match packet.get(1..3) {
        Some(bytes) => u16::from_le_bytes([bytes[0], bytes[1]]),
        None => 0,
    };
    let mut message = packet.get(3..).unwrap_or_default();
    // Protocol 4.1: '#' and a five-character SQL state come first.
    if message.first() == Some(&b'#') && message.len() >= 6 {
        message = &message[6..];
    }
    (number, String::from_utf8_lossy(message).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_urls_are_read_directly() {
        let options = WireOptions::from_url("mysql://us%40er:p%2Fw@db.example:3307/shop").unwrap();
        assert_eq!(
            (
                options.host.as_str(),
                options.port,
                options.user.as_str(),
                options.password.expose_secret()
            ),
            ("db.example", 3307, "us@er", "p/w")
        );
        assert_eq!(options.database.as_deref(), Some("shop"));
        assert!(options.tls_preferred);
        assert!(!format!("{options:?}").contains("p/w"));
        let disabled = WireOptions::from_url("mysql://root@h/db?ssl-mode=DISABLED").unwrap();
        assert!(!disabled.tls_preferred);
        assert_eq!(disabled.user, "root");
        for other in [
            "mysql://root@h/db?ssl-mode=required",
            "mysql://root@h/db?socket=/run/mysqld.sock",
            "mysql://root@h/db?charset=latin1",
        ] {
            assert!(WireOptions::from_url(other).is_none(), "{other}");
        }
    }

    #[test]
    fn passwords_are_scrambled_as_each_plugin_says() {
        let nonce: Vec<u8> = (1..=20).collect();
        // Empty passwords send nothing; unknown plugins are sqlx's.
        assert_eq!(
            scramble("mysql_native_password", "", &nonce),
            Some(Vec::new())
        );
        assert_eq!(scramble("client_ed25519", "secret", &nonce), None);
        let native = scramble("mysql_native_password", "secret", &nonce).unwrap();
        let sha2 = scramble("caching_sha2_password", "secret", &nonce).unwrap();
        assert_eq!((native.len(), sha2.len()), (20, 32));
        // XOR-ing the scramble with SHA1(password) gives SHA1(nonce + SHA1(SHA1(password))).
        let once = Sha1::digest(b"secret");
        let unmasked: Vec<u8> = native.iter().zip(once.iter()).map(|(a, b)| a ^ b).collect();
        let mut expected = Sha1::new();
        expected.update(&nonce);
        expected.update(Sha1::digest(once));
        assert_eq!(unmasked, expected.finalize().to_vec());
        // And SHA256(password) unmasks SHA256(SHA256(SHA256(password)) + nonce).
        let once = Sha256::digest(b"secret");
        let unmasked: Vec<u8> = sha2.iter().zip(once.iter()).map(|(a, b)| a ^ b).collect();
        let mut expected = Sha256::new();
        expected.update(Sha256::digest(once));
        expected.update(&nonce);
        assert_eq!(unmasked, expected.finalize().to_vec());
    }

    #[test]
    fn binary_rows_are_framed_by_column_type() {
        // Three columns: BIGINT 7, NULL VARCHAR, DATE 2024-05-01 (length byte 4).
        let mut packet = vec![0x00, 0b0000_1000];
        packet.extend_from_slice(&7i64.to_le_bytes());
        packet.extend_from_slice(&[4, 0xe8, 0x07, 5, 1]);
        let mut fields = Vec::new();
        row_fields(&packet, &[0x08, 0x0f, 0x0a], &mut fields)
            .map_err(|e| e.to_string())
            .unwrap();
        assert_eq!(fields, vec![Some((2, 10)), None, Some((10, 15))]);
        // A string keeps its bytes, not its length.
        let packet = [0x00, 0x00, 3, b'a', b'b', b'c'];
        row_fields(&packet, &[0xfd], &mut fields)
            .map_err(|e| e.to_string())
            .unwrap();
        assert_eq!(fields, vec![Some((3, 6))]);
        assert!(row_fields(&packet[..4], &[0xfd], &mut fields).is_err());
    }

    #[test]
    fn lengths_are_encoded_both_ways() {
        for value in [
            0u64,
            250,
            251,
            65_535,
            65_536,
            16_777_215,
            16_777_216,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_lenenc(&mut out, value);
            let mut read = &out[..];
            assert_eq!(lenenc(&mut read), Some(value));
            assert!(read.is_empty());
        }
    }

    #[test]
    fn type_names_follow_sqlx() {
        let of = |type_id, flags, collation, max_size| {
            let t = WireType {
                type_id,
                flags,
                collation,
                max_size,
            };
            (t.name(), t.unsigned(), t.text())
        };
        assert_eq!(of(0x01, 0, 63, 1), ("BOOLEAN", false, false));
        assert_eq!(
            of(0x08, UNSIGNED_FLAG, 63, 20),
            ("BIGINT UNSIGNED", true, false)
        );
        assert_eq!(of(0xfd, 0, 45, 256), ("VARCHAR", false, true));
        assert_eq!(of(0xfd, BINARY_FLAG, 46, 256), ("VARBINARY", false, true));
        assert_eq!(of(0xfc, BINARY_FLAG, 63, 65_535), ("BLOB", false, false));
    }
}
