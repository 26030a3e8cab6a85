//! MySQL and MariaDB as a source (`mysql://...` or `mariadb://...`; sqlx's `mysql` driver
//! speaks both).
//!
//! # Decisions
//!
//! * **Which server.** MySQL and MariaDB differ in how a statement timeout is set, so the
//!   server is told apart once, when klsync connects, by its version string: MariaDB's always
//!   contains `MariaDB` (`10.11.6-MariaDB-0+deb12u1`), MySQL's never does (`8.0.36`). A
//!   proxy that rewrites the version string would be taken for MySQL; then setting
//!   `max_execution_time` fails on the first query, naming the variable.
//! * **Read-only, twice.** Every connection of the query pool is made read-only for its whole
//!   session (`SET SESSION TRANSACTION READ ONLY`) and every query runs inside `START
//!   TRANSACTION READ ONLY`, always rolled back. The transaction alone is not enough: a DDL
//!   statement commits the open transaction implicitly and then runs outside it; the session
//!   setting refuses it too. A query must also start with `SELECT`, `WITH`, `VALUES` or `TABLE`
//!   and must not write a file (`SELECT ... INTO OUTFILE|DUMPFILE`, which neither setting
//!   refuses); both are checked in the text before it is sent. Saving a query (the one write
//!   klsync makes, to `saved_queries`) uses a connection of its own, closed right after.
//! * **Statement timeout.** Set for the session when a pool connection is opened, so a query
//!   costs no extra round trip: MariaDB `max_statement_time` (seconds), MySQL
//!   `max_execution_time` (milliseconds; it applies to SELECT, the only statement klsync runs
//!   there). Zero disables both. A statement over it fails with [`SqlError::Timeout`].
//! * **Interrupts.** When the run is stopped or the rows' consumer goes away, the statement is
//!   killed with `KILL QUERY <connection id>` from a connection of its own (the pool's may all
//!   be busy), and the connection it ran on is closed rather than pooled again.
//! * **Placeholders.** MySQL's are `?`, one parameter each, in order. klsync's portable `$n`
//!   (what manifests use, so a query runs unchanged on every database) is turned into `?` with
//!   each parameter bound where it is used; one text cannot mix both. They are found outside
//!   string literals (with MySQL's backslash escapes), `` `identifiers` `` and comments
//!   (`statement::MySqlText`).
//! * **Errors in the user's SQL.** MySQL gives no position, only `near '<the rest of the
//!   statement, at most 80 bytes>' at line N`; klsync finds that text in the statement it sent,
//!   from line N on, and maps it back to a line and column of the user's text.
//! * **Values** (see [`MySqlColumn`]) are converted so that the same logical value is the same
//!   JSON, and so hashes the same, as on PostgreSQL and SQLite: a sync moved from one database
//!   to another plans no change. The session time zone is forced to UTC (whatever the URL
//!   says), so `TIMESTAMP` values, stored in UTC, are read in UTC.
//! * **TLS** by URL parameter: `?ssl-mode=required` (or `verify_ca`, `verify_identity` with
//!   `ssl-ca=...`), through rustls, as sqlx parses it. The password never appears in logs or
//!   errors: the URL is only shown redacted, and sqlx's errors do not carry it.
//! * **Reading.** A query without parameters is read by klsync's own reader of the protocol
//!   (`wire.rs`) where it applies (no TLS, no socket, the usual authentication), several times
//!   cheaper per row than sqlx's; everything else through sqlx. Both decode with the same
//!   [`MySqlColumn`]s, on sessions set up alike ([`session_statements`]).

mod wire;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use futures::TryStreamExt;
use futures::future::BoxFuture;
use serde_json::Value;
use sqlx::mysql::{
    MySql, MySqlConnectOptions, MySqlConnection, MySqlPool, MySqlPoolOptions, MySqlRow,
    MySqlTypeInfo,
};
use sqlx::{AssertSqlSafe, Column, Connection, Decode, Row as _, Type, TypeInfo};

use super::batch::BinaryRows;
use super::decode;
use super::error::SqlError;
use super::params::{self, Param};
use super::saved::{self, Dialect, SavedOp, SavedOutcome};
use super::source::{Answer, Source};
use super::statement::{self, MySqlStatement, MySqlText};
use super::{
    ACQUIRE_TIMEOUT, Batcher, MAX_CONNECTIONS, QueryOptions, ROW_BATCH, RowBatch, RowSender,
    Stopped, stop_statement, stop_when_asked,
};

type BoxDynError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The server behind a `mysql://` URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flavor {
    MariaDb,
    MySql,
}

impl Flavor {
    /// The server of a `SELECT VERSION()` answer.
    pub(super) fn of(version: &str) -> Flavor {
        if version.to_ascii_lowercase().contains("mariadb") {
            Flavor::MariaDb
        } else {
            Flavor::MySql
        }
    }

    /// The statement that bounds each statement of the session by `timeout` (zero: none).
    /// The value is klsync's own number, not user input, so it is written into the text (a
    /// system variable cannot be set through a placeholder in MySQL's text protocol).
    fn timeout_statement(self, timeout: Duration) -> String {
        match self {
            Flavor::MariaDb => format!(
                "SET SESSION max_statement_time = {}.{:06}",
                timeout.as_secs(),
                timeout.subsec_micros()
            ),
            Flavor::MySql => format!("SET SESSION max_execution_time = {}", timeout.as_millis()),
        }
    }
}

/// A MySQL or MariaDB source: read-only pooled connections.
#[derive(Debug, Clone)]
pub(super) struct MySqlSource {
    pool: MySqlPool,
    timeout: Duration,
    /// How the fast reader connects (`wire.rs`), when it applies to the URL.
    wire: Option<wire::WireOptions>,
    /// What every connection runs once opened (see [`session_statements`]).
    session: Arc<[String]>,
}

/// Connect to `raw` (shown as `shown`), checking the server is reachable and telling MySQL
/// from MariaDB.
pub(super) async fn connect(
    raw: &str,
    shown: &str,
    options: &QueryOptions,
) -> Result<MySqlSource, SqlError> {
    let connect = MySqlConnectOptions::from_str(raw)
        .map_err(|source| SqlError::InvalidUrl {
            url: shown.to_string(),
            source,
        })?
        // TIMESTAMP values are read in the session's time zone: UTC, so they mean what
        // PostgreSQL's timestamptz means.
        .timezone(Some("+00:00".to_string()));
    let mut probe = super::probe(shown, options.connect_retries, &connect).await?;
    let version: String = sqlx::query_scalar("SELECT VERSION()")
        .fetch_one(&mut probe)
        .await
        .map_err(|source| SqlError::Connect {
            url: shown.to_string(),
            attempts: 1,
            source,
        })?;
    let _ = probe.close().await;
    let flavor = Flavor::of(&version);
    tracing::debug!(url = shown, version, ?flavor, "connected to the SQL source");
    let session: Arc<[String]> = session_statements(flavor, options.statement_timeout).into();
    let pool_session = Arc::clone(&session);
    let pool = MySqlPoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .after_connect(move |connection, _| {
            let session = Arc::clone(&pool_session);
            Box::pin(async move {
                // sqlx has already set its own (see `session_statements`).
                for statement in &session[1..] {
                    sqlx::raw_sql(AssertSqlSafe(statement.clone()))
                        .execute(&mut *connection)
                        .await?;
                }
                Ok(())
            })
        })
        .connect_lazy_with(connect);
    Ok(MySqlSource {
        pool,
        timeout: options.statement_timeout,
        wire: wire::WireOptions::from_url(raw),
        session,
    })
}

/// What a query connection runs once opened, in order: first what sqlx runs on each
/// connection it opens with klsync's options (its `sql_mode` additions, the time zone forced to
/// UTC, `SET NAMES` in its default character set), which the fast reader (`wire.rs`) must run
/// too so that a query means the same on both; then klsync's own: the session made read-only
/// and the statement timeout.
fn session_statements(flavor: Flavor, timeout: Duration) -> Vec<String> {
    vec![
        "SET sql_mode=(SELECT CONCAT(@@sql_mode, ',PIPES_AS_CONCAT,NO_ENGINE_SUBSTITUTION')),\
         time_zone='+00:00',NAMES utf8mb4;"
            .to_string(),
        "SET SESSION TRANSACTION READ ONLY".to_string(),
        flavor.timeout_statement(timeout),
    ]
}

impl Source for MySqlSource {
    fn read<'a>(&'a self, sql: String, params: Vec<Param>, rows: &'a RowSender) -> Answer<'a, ()> {
        Box::pin(self.run(sql, params, rows))
    }

    fn check<'a>(&'a self, sql: &'a str, params: Vec<Param>) -> Answer<'a, ()> {
        Box::pin(self.prepare(sql, params))
    }

    /// Writes on a connection that is not read-only: one of its own, closed after.
    fn saved_queries<'a>(&'a self, op: SavedOp<'a>) -> Answer<'a, SavedOutcome> {
        Box::pin(async move {
            let action = op.action();
            let failed = |source| SqlError::SavedQueries { action, source };
            if !op.writes() {
                let mut connection = self.pool.acquire().await.map_err(failed)?;
                return saved::run::<MySql>(&mut connection, op).await;
            }
            let mut connection = self.writable().await.map_err(failed)?;
            let done = saved::run::<MySql>(&mut connection, op).await;
            let _ = connection.close().await;
            done
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.pool.close())
    }
}

impl MySqlSource {
    /// A connection of its own, not read-only (for saving a query, or stopping one).
    async fn writable(&self) -> Result<MySqlConnection, sqlx::Error> {
        MySqlConnection::connect_with(&self.pool.connect_options()).await
    }

    /// Check `sql` as [`Source::check`] asks: the statement klsync would send, prepared (parsed and analysed by the server) in a read-only transaction and
    /// rolled back.
    async fn prepare(&self, sql: &str, params: Vec<Param>) -> Result<(), SqlError> {
        let timeout = self.timeout;
        let statement = statement_of(sql, params)?;
        let failed = |source| SqlError::from_query(source, timeout);
        let mut connection = self.pool.acquire().await.map_err(failed)?;
        let mut transaction = connection
            .begin_with("START TRANSACTION READ ONLY")
            .await
            .map_err(failed)?;
        let prepared = sqlx::Executor::prepare(
            &mut *transaction,
            sqlx::SqlSafeStr::into_sql_str(AssertSqlSafe(statement.sql.clone())),
        )
        .await;
        let rolled_back = transaction.rollback().await;
        prepared.map_err(|err| locate(failed(err), &statement, sql))?;
        rolled_back.map_err(failed)?;
        Ok(())
    }

    /// Run `sql` with `params`, streaming its rows to `sender` (see the module's decisions).
    async fn run(
        &self,
        sql: String,
        params: Vec<Param>,
        sender: &RowSender,
    ) -> Result<(), SqlError> {
        let timeout = self.timeout;
        let statement = statement_of(&sql, params)?;
        if statement.params.is_empty()
            && let Some(options) = &self.wire
        {
            match wire::WireConnection::open(options, &self.session).await {
                wire::Opened::Ready(connection) => {
                    let id = connection.id();
                    let read = connection.read(&statement.sql, sender, timeout);
                    match stop_when_asked(read, sender, self.kill(id)).await {
                        (Ok(wire::Read::Complete), _) => return Ok(()),
                        (Ok(wire::Read::Declined(why)), None) => {
                            tracing::debug!(why, "reading the query through sqlx");
                        }
                        (_, Some(Stopped::ByTheRun)) => return Err(SqlError::Interrupted),
                        (Ok(wire::Read::Declined(_)), Some(Stopped::ByTheConsumer)) => {
                            return Ok(());
                        }
                        (Err(err), _) => return Err(locate(err, &statement, &sql)),
                    }
                }
                wire::Opened::Declined(why) => {
                    tracing::debug!(why, "reading the query through sqlx");
                }
            }
        }
        let failed = |source| SqlError::from_query(source, timeout);
        let mut connection = self.pool.acquire().await.map_err(failed)?;
        let id: u64 = sqlx::query_scalar("SELECT CONNECTION_ID()")
            .fetch_one(&mut *connection)
            .await
            .map_err(failed)?;
        let read = read(&mut connection, &statement, &sql, timeout, sender);
        let (outcome, stopped) = stop_when_asked(read, sender, self.kill(id)).await;
        match stopped {
            None => outcome,
            Some(stopped) => {
                // The statement was killed part way: the next query gets a fresh connection.
                connection.close_on_drop();
                match outcome {
                    Err(_) if stopped == Stopped::ByTheRun => Err(SqlError::Interrupted),
                    outcome => outcome,
                }
            }
        }
    }

    /// Stop the statement running on connection `id`.
    async fn kill(&self, id: u64) {
        stop_statement::<MySql>(&self.pool.connect_options(), format!("KILL QUERY {id}")).await;
    }
}

impl Dialect for MySql {
    const MIGRATION: &'static str = include_str!("../../../migrations/saved_queries/mysql.sql");
    const TABLE_EXISTS: &'static str = "SELECT COUNT(*) > 0 FROM information_schema.tables \
        WHERE table_schema = DATABASE() AND table_name = 'saved_queries'";
    const FIRST_AS_TEXT: &'static str = "?";
    // Constant within a statement, so one instant for both columns.
    const NOW: &'static str = "UTC_TIMESTAMP(3)";
    // MySQL has no RETURNING (MariaDB's is for INSERT only, not with ON DUPLICATE KEY).
    const UPSERT_RETURNS: bool = false;

    fn param(_: usize) -> String {
        "?".into()
    }

    fn upsert_sql() -> String {
        let now = Self::NOW;
        // VALUES(col) is the row that was to be inserted (deprecated in MySQL 8.0.20 for a row
        // alias, which MariaDB does not have; both still accept it).
        format!(
            "INSERT INTO saved_queries (name, description, query_text, parameters, created_at, updated_at)
VALUES (?, ?, ?, ?, {now}, {now})
ON DUPLICATE KEY UPDATE
    description = COALESCE(VALUES(description), description),
    query_text = VALUES(query_text),
    parameters = VALUES(parameters),
    updated_at = VALUES(updated_at)"
        )
    }

    fn select_sql() -> String {
        // One placeholder, as MySQL binds each `?` once: `name` is NOT NULL.
        format!(
            "SELECT {} FROM saved_queries WHERE name = COALESCE(?, name) ORDER BY name",
            saved::COLUMNS
        )
    }
}

/// The statement klsync sends for the user's `sql`: checked to be one read-only query, with
/// its placeholders in MySQL's form.
fn statement_of(sql: &str, params: Vec<Param>) -> Result<MySqlStatement<Param>, SqlError> {
    let text = MySqlText::parse(sql);
    if let Some(second) = text.second {
        let (line, column) = statement::line_column(sql, second);
        return Err(SqlError::MultipleStatements { line, column });
    }
    match statement::first_keyword(sql) {
        Some((keyword, ..))
            if matches!(keyword.as_str(), "SELECT" | "WITH" | "VALUES" | "TABLE") => {}
        Some((keyword, line, column)) => {
            return Err(SqlError::ReadOnly {
                message: format!(
                    "`{keyword}` at line {line}, column {column}: a sync query must be one SELECT or WITH statement"
                ),
            });
        }
        None => {
            return Err(SqlError::NotAQuery {
                keyword: String::new(),
                line: 1,
                column: 1,
            });
        }
    }
    if let Some(at) = text.writes_file {
        let (line, column) = statement::line_column(sql, at);
        return Err(SqlError::ReadOnly {
            message: format!(
                "`INTO OUTFILE`/`INTO DUMPFILE` at line {line}, column {column} writes a file on the database server"
            ),
        });
    }
    text.bind_order(sql, params)
        .map_err(|mismatch| SqlError::Placeholders { mismatch })
}

/// The rows being read: the column names, their decoders, and the batch filling up.
type Reading = (Arc<[String]>, Arc<[MySqlColumn]>, BinaryRows);

/// Read the statement in a read-only transaction on `connection`, rolled back at the end.
async fn read(
    connection: &mut MySqlConnection,
    statement: &MySqlStatement<Param>,
    user_sql: &str,
    timeout: Duration,
    sender: &RowSender,
) -> Result<(), SqlError> {
    let failed = |source| SqlError::from_query(source, timeout);
    let mut transaction = connection
        .begin_with("START TRANSACTION READ ONLY")
        .await
        .map_err(failed)?;
    let batch = Batcher::new(sender);
    let mut binary: Option<Reading> = None;
    let streamed = async {
        let query = params::bind(
            sqlx::query(AssertSqlSafe(statement.sql.clone())),
            statement.params.clone(),
        );
        let mut rows = query.fetch(&mut *transaction);
        while let Some(row) = rows
            .try_next()
            .await
            .map_err(|err| locate(failed(err), statement, user_sql))?
        {
            let (names, columns, rows) = match &mut binary {
                Some(binary) => binary,
                None => {
                    let found: Arc<[MySqlColumn]> = mysql_columns(&row)?.into();
                    let names: Arc<[String]> = found.iter().map(|c| c.name.clone()).collect();
                    let rows = BinaryRows::new(Arc::clone(&found), ROW_BATCH);
                    binary.insert((names, found, rows))
                }
            };
            push_row(rows, &row, columns)?;
            if rows.len() >= ROW_BATCH {
                let full = std::mem::replace(rows, BinaryRows::new(Arc::clone(columns), ROW_BATCH));
                if !batch.send(RowBatch::from_binary(names.clone(), full)).await {
                    break;
                }
            }
        }
        Ok(())
    }
    .await;
    // The last rows, also those before an error (they arrive first).
    if let Some((names, _, rows)) = binary
        && !rows.is_empty()
    {
        batch.send(RowBatch::from_binary(names, rows)).await;
    }
    // A sync query never commits, whatever happened above.
    let rolled_back = transaction.rollback().await.map_err(failed);
    streamed.and(rolled_back)
}

/// Put MySQL's `near '...' at line N` of a syntax error at its line and column in the user's
/// SQL (see the module's decisions); any other error is returned as it is.
fn locate(error: SqlError, statement: &MySqlStatement<Param>, user_sql: &str) -> SqlError {
    let SqlError::Database {
        message,
        at: None,
        detail,
        hint,
        ..
    } = &error
    else {
        return error;
    };
    let Some(sent) = near_offset(message, &statement.sql) else {
        return error;
    };
    let user = statement.user_offset(sent).min(user_sql.len());
    let user = (0..=user)
        .rev()
        .find(|at| user_sql.is_char_boundary(*at))
        .unwrap_or(0);
    SqlError::Database {
        message: message.clone(),
        at: Some(statement::line_column(user_sql, user)),
        position: None,
        detail: detail.clone(),
        hint: hint.clone(),
    }
}

/// The byte offset in `sent` that a MySQL `... near '<text>' at line N` message points at.
fn near_offset(message: &str, sent: &str) -> Option<usize> {
    let start = message.find(" near '")? + " near '".len();
    let (snippet, line) = message[start..].rsplit_once("' at line ")?;
    let line: usize = line.trim().parse().ok()?;
    // A character cut by the server's 80-byte limit arrives as a replacement character.
    let snippet = snippet.split('\u{FFFD}').next().unwrap_or_default();
    let line_start = if line <= 1 {
        0
    } else {
        sent.match_indices('\n').nth(line - 2)?.0 + 1
    };
    if snippet.is_empty() {
        return Some(sent.len());
    }
    // Short of the limit, the text is all the rest of the statement.
    if snippet.len() < 80 && sent.ends_with(snippet) && sent.len() - snippet.len() >= line_start {
        return Some(sent.len() - snippet.len());
    }
    sent[line_start..].find(snippet).map(|at| line_start + at)
}

/// How the values of one result column become JSON, resolved once per column from its type:
///
/// | MySQL / MariaDB                                   | JSON (as PostgreSQL's ...)               |
/// |---------------------------------------------------|------------------------------------------|
/// | `TINYINT(1)` = `BOOL`/`BOOLEAN`                   | `true`/`false` for 0/1 (`bool`); other values numbers |
/// | `TINYINT` .. `BIGINT`, `YEAR`, `BIT(n)`, unsigned | number (`int2`..`int8`)                  |
/// | `DECIMAL`                                         | number when exact, else its text (`numeric`) |
/// | `FLOAT`                                           | number, shortest form (`float4`)         |
/// | `DOUBLE`                                          | number (`float8`)                        |
/// | `CHAR`, `VARCHAR`, `TEXT`s, `ENUM`, `SET`         | string (`text`)                          |
/// | `BINARY`, `VARBINARY`, `BLOB`s                    | `\x` + hex (`bytea`)                     |
/// | `DATE`                                            | `2024-05-01` (`date`)                    |
/// | `DATETIME`                                        | ISO 8601 without offset (`timestamp`)    |
/// | `TIMESTAMP`                                       | ISO 8601 in UTC, `Z` (`timestamptz`)     |
/// | `TIME` within a day                               | `10:30:00` (`time`); beyond: row refused |
/// | `JSON` (MySQL)                                    | the JSON itself (`jsonb`)                |
/// | `JSON` (MariaDB: an alias of `LONGTEXT`)          | string, as SQLite's JSON in TEXT         |
/// | zero dates (`0000-00-00`)                         | `null`: the driver reads no value (as MySQL's connectors' `convertToNull`) |
/// | NULL                                              | `null`                                   |
/// | `GEOMETRY` and others                             | the sync stops: cast it                  |
///
/// A comparison (`a > b`) is an integer in MySQL, so it is a number, where PostgreSQL has a
/// `bool`: a column of type `BOOLEAN` is what reads as one.
#[derive(Debug, Clone)]
pub(crate) struct MySqlColumn {
    name: String,
    type_name: String,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `BIT(n)`: big-endian bytes.
    Bit,
    /// `TINYINT(1)`; whether it is unsigned.
    Bool(bool),
    Int,
    Unsigned,
    Float,
    Double,
    Decimal,
    Text,
    Bytes,
    Date,
    DateTime,
    Timestamp,
    Time,
    Json,
    Null,
    Unsupported,
}

/// The decoder of a column of type `name` (sqlx's name for it), given whether it is an
/// unsigned integer and whether it holds text (a string type not in the `binary` character
/// set).
fn kind_of(name: &str, unsigned: bool, text: bool) -> Kind {
    match name {
        "BOOLEAN" => Kind::Bool(unsigned),
        "BIT" => Kind::Bit,
        "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "YEAR" => Kind::Int,
        name if name.ends_with("UNSIGNED") => Kind::Unsigned,
        "FLOAT" => Kind::Float,
        "DOUBLE" => Kind::Double,
        "DECIMAL" => Kind::Decimal,
        "DATE" => Kind::Date,
        "DATETIME" => Kind::DateTime,
        "TIMESTAMP" => Kind::Timestamp,
        "TIME" => Kind::Time,
        "JSON" => Kind::Json,
        "NULL" => Kind::Null,
        "CHAR" | "VARCHAR" | "TEXT" | "TINYTEXT" | "MEDIUMTEXT" | "LONGTEXT" | "ENUM" | "SET"
        | "BINARY" | "VARBINARY" | "BLOB" | "TINYBLOB" | "MEDIUMBLOB" | "LONGBLOB" => {
            // The type name follows the column's BINARY flag, which a text column with a
            // binary collation (`utf8mb4_bin`) has too; the collation itself says which.
            if text { Kind::Text } else { Kind::Bytes }
        }
        _ if unsigned => Kind::Unsigned,
        _ => Kind::Unsupported,
    }
}

impl MySqlColumn {
    fn new(name: &str, type_name: &str, unsigned: bool, text: bool) -> MySqlColumn {
        MySqlColumn {
            name: name.to_string(),
            type_name: type_name.to_string(),
            kind: kind_of(type_name, unsigned, text),
        }
    }

    /// The column of sqlx's description of it.
    fn of_sqlx(name: &str, type_info: &MySqlTypeInfo) -> MySqlColumn {
        MySqlColumn::new(
            name,
            type_info.name(),
            <u64 as Type<MySql>>::compatible(type_info),
            <str as Type<MySql>>::compatible(type_info),
        )
    }

    fn failed(&self, err: impl std::fmt::Display) -> SqlError {
        decode::decode_error(&self.name, &self.type_name, err)
    }

    /// The JSON form of one value in MySQL's binary protocol (`None`: NULL).
    pub(crate) fn value(&self, bytes: Option<&[u8]>) -> Result<Value, SqlError> {
        let Some(bytes) = bytes else {
            return Ok(Value::Null);
        };
        if self.kind == Kind::Unsupported {
            return Err(SqlError::UnsupportedType {
                column: self.name.clone(),
                type_name: self.type_name.clone(),
            });
        }
        kind_value(self.kind, bytes).map_err(|err| self.failed(err))
    }
}

impl super::batch::FieldDecoder for MySqlColumn {
    fn is_text(&self) -> bool {
        self.kind == Kind::Text
    }

    fn write_plain_json(&self, bytes: &[u8], out: &mut Vec<u8>) -> Result<bool, SqlError> {
        let written = match self.kind {
            Kind::Int => {
                serde_json::to_writer(&mut *out, &signed(bytes).map_err(|e| self.failed(e))?)
            }
            Kind::Unsigned => {
                serde_json::to_writer(&mut *out, &unsigned(bytes).map_err(|e| self.failed(e))?)
            }
            Kind::Bool(_) => {
                let value = kind_value(self.kind, bytes).map_err(|err| self.failed(err))?;
                serde_json::to_writer(&mut *out, &value)
            }
            _ => return Ok(false),
        };
        written.expect("scalars serialize");
        Ok(true)
    }

    fn undecodable(&self, reason: &dyn std::fmt::Display) -> SqlError {
        self.failed(reason)
    }
}

/// A signed integer of the binary protocol: little-endian, 1, 2, 4 (also `MEDIUMINT`) or 8
/// bytes by type.
fn signed(bytes: &[u8]) -> Result<i64, BoxDynError> {
    Ok(match bytes.len() {
        1 => i64::from(bytes[0] as i8),
        2 => i64::from(i16::from_le_bytes([bytes[0], bytes[1]])),
        4 => i64::from(i32::from_le_bytes(exact(bytes)?)),
        8 => i64::from_le_bytes(exact(bytes)?),
        n => return Err(format!("an integer of {n} bytes").into()),
    })
}

/// An unsigned integer of the binary protocol (little-endian, as [`signed`]).
fn unsigned(bytes: &[u8]) -> Result<u64, BoxDynError> {
    Ok(match bytes.len() {
        1 => u64::from(bytes[0]),
        2 => u64::from(u16::from_le_bytes([bytes[0], bytes[1]])),
        4 => u64::from(u32::from_le_bytes(exact(bytes)?)),
        8 => u64::from_le_bytes(exact(bytes)?),
        n => return Err(format!("an integer of {n} bytes").into()),
    })
}

fn exact<const N: usize>(bytes: &[u8]) -> Result<[u8; N], BoxDynError> {
    bytes
        .try_into()
        .map_err(|_| format!("expected {N} bytes, got {}", bytes.len()).into())
}

/// A date or date-time of the binary protocol: its length (0, 4, 7 or 11), then year (2 bytes),
/// month, day, hour, minute, second, microseconds (4 bytes); `None` for a zero date (length 0
/// or all zeros: `0000-00-00`).
fn date_time(bytes: &[u8]) -> Result<Option<NaiveDateTime>, BoxDynError> {
    let (&length, rest) = bytes.split_first().ok_or("an empty date")?;
    let rest = rest.get(..usize::from(length)).ok_or("a truncated date")?;
    let at = |i: usize| rest.get(i).copied().unwrap_or(0);
    if length == 0 {
        return Ok(None);
    }
    let year = u16::from_le_bytes([at(0), at(1)]);
    let micros = if length >= 11 {
        u32::from_le_bytes(exact(&rest[7..11])?)
    } else {
        0
    };
    if year == 0 && at(2) == 0 && at(3) == 0 {
        return Ok(None);
    }
    let date = NaiveDate::from_ymd_opt(i32::from(year), u32::from(at(2)), u32::from(at(3)))
        .ok_or("an invalid date")?;
    let time =
        NaiveTime::from_hms_micro_opt(u32::from(at(4)), u32::from(at(5)), u32::from(at(6)), micros)
            .ok_or("an invalid time")?;
    Ok(Some(date.and_time(time)))
}

/// A `TIME` of the binary protocol: its length (0, 8 or 12), sign, days (4 bytes), hour, minute,
/// second, microseconds (4 bytes). Only a time of day has a JSON form (see [`MySqlColumn`]).
fn time_of_day(bytes: &[u8]) -> Result<NaiveTime, BoxDynError> {
    let (&length, rest) = bytes.split_first().ok_or("an empty time")?;
    let rest = rest.get(..usize::from(length)).ok_or("a truncated time")?;
    if length == 0 {
        return Ok(NaiveTime::MIN);
    }
    let at = |i: usize| rest.get(i).copied().unwrap_or(0);
    let negative = at(0) != 0;
    let days = u32::from_le_bytes([at(1), at(2), at(3), at(4)]);
    let micros = if length >= 12 {
        u32::from_le_bytes(exact(&rest[8..12])?)
    } else {
        0
    };
    if negative || days > 0 {
        let sign = if negative { "-" } else { "" };
        return Err(format!(
            "{sign}{} hours is not a time of day; cast it to text (`CAST(col AS CHAR)`)",
            u64::from(days) * 24 + u64::from(at(5))
        )
        .into());
    }
    NaiveTime::from_hms_micro_opt(u32::from(at(5)), u32::from(at(6)), u32::from(at(7)), micros)
        .ok_or_else(|| "an invalid time".into())
}

fn kind_value(kind: Kind, bytes: &[u8]) -> Result<Value, BoxDynError> {
    Ok(match kind {
        // TINYINT(1) holds -128..127 (0..255 unsigned): values other than 0 and 1 stay numbers.
        Kind::Bool(unsigned_flag) => {
            let int = if unsigned_flag {
                i64::from(bytes.first().copied().ok_or("an empty integer")?)
            } else {
                signed(bytes)?
            };
            match int {
                0 | 1 => Value::Bool(int == 1),
                other => Value::from(other),
            }
        }
        Kind::Int => Value::from(signed(bytes)?),
        Kind::Unsigned => Value::from(unsigned(bytes)?),
        // BIT(n): big-endian, up to 8 bytes.
        Kind::Bit => Value::from(
            bytes
                .iter()
                .try_fold(0u64, |value, byte| {
                    value.checked_mul(256).map(|value| value | u64::from(*byte))
                })
                .ok_or("a BIT value over 64 bits")?,
        ),
        Kind::Float => decode::float4_to_json(f32::from_le_bytes(exact(bytes)?))?,
        Kind::Double => decode::float_to_json(f64::from_le_bytes(exact(bytes)?))?,
        Kind::Decimal => decode::numeric_to_json(std::str::from_utf8(bytes)?)?,
        Kind::Text => Value::String(std::str::from_utf8(bytes)?.to_owned()),
        Kind::Bytes => Value::String(decode::bytes_hex(bytes)),
        Kind::Date => match date_time(bytes)? {
            Some(at) => Value::String(decode::date_iso(at.date())),
            None => Value::Null,
        },
        Kind::DateTime => match date_time(bytes)? {
            Some(at) => Value::String(decode::timestamp_iso(at)),
            None => Value::Null,
        },
        Kind::Timestamp => match date_time(bytes)? {
            Some(at) => Value::String(decode::timestamptz_iso(at.and_utc())),
            None => Value::Null,
        },
        Kind::Time => Value::String(decode::time_iso(time_of_day(bytes)?)),
        Kind::Json => serde_json::from_slice(bytes)?,
        Kind::Null => Value::Null,
        Kind::Unsupported => unreachable!("refused before decoding"),
    })
}

/// The decoders of a row's columns, checked to have distinct names.
fn mysql_columns(row: &MySqlRow) -> Result<Vec<MySqlColumn>, SqlError> {
    let columns: Vec<MySqlColumn> = row
        .columns()
        .iter()
        .map(|column| MySqlColumn::of_sqlx(column.name(), column.type_info()))
        .collect();
    decode::distinct_names(columns.iter().map(|c| c.name.as_str()))?;
    Ok(columns)
}

/// Append one row's fields to `rows`, as the server sent them; a value of a type klsync does
/// not convert fails the query. The fields are in the binary protocol's form: every query is a
/// prepared statement (`sqlx::query`; only `raw_sql` would read text), and sqlx does not say
/// which form a row is in.
fn push_row(
    rows: &mut BinaryRows,
    row: &MySqlRow,
    columns: &[MySqlColumn],
) -> Result<(), SqlError> {
    let mut fields: [Option<&[u8]>; 16] = [None; 16];
    let mut many = Vec::new();
    for (index, column) in columns.iter().enumerate() {
        let raw = row
            .try_get_raw(index)
            .map_err(|err| decode::decode_error(&column.name, &column.type_name, err))?;
        let bytes = if sqlx::ValueRef::is_null(&raw) {
            None
        } else {
            if column.kind == Kind::Unsupported {
                return Err(SqlError::UnsupportedType {
                    column: column.name.clone(),
                    type_name: column.type_name.clone(),
                });
            }
            Some(
                <&[u8] as Decode<MySql>>::decode(raw)
                    .map_err(|err| decode::decode_error(&column.name, &column.type_name, err))?,
            )
        };
        match fields.get_mut(index) {
            Some(slot) => *slot = bytes,
            None => many.push(bytes),
        }
    }
    let width = columns.len().min(fields.len());
    rows.push(fields[..width].iter().copied().chain(many));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_is_told_by_its_version() {
        assert_eq!(Flavor::of("10.11.6-MariaDB-0+deb12u1"), Flavor::MariaDb);
        assert_eq!(Flavor::of("5.5.5-10.6.12-MariaDB-log"), Flavor::MariaDb);
        assert_eq!(Flavor::of("8.0.36"), Flavor::MySql);
        assert_eq!(
            Flavor::MariaDb.timeout_statement(Duration::from_millis(1500)),
            "SET SESSION max_statement_time = 1.500000"
        );
        assert_eq!(
            Flavor::MySql.timeout_statement(Duration::from_secs(60)),
            "SET SESSION max_execution_time = 60000"
        );
    }

    #[test]
    fn near_text_is_found_from_its_line() {
        let sent = "SELECT email\nFORM customers\nWHERE a = ?";
        let message = "You have an error in your SQL syntax; check the manual that corresponds \
                       to your MariaDB server version for the right syntax to use near \
                       'FORM customers\nWHERE a = ?' at line 2";
        assert_eq!(near_offset(message, sent), sent.find("FORM"));
        let end = "... to use near '' at line 3";
        assert_eq!(near_offset(end, sent), Some(sent.len()));
        // Cut at 80 bytes: found from its line on, not as the statement's end.
        let long = format!("SELECT 1 x\nFROM t WHERE {} AND", "a = 1 AND ".repeat(10));
        let cut = &long[long.find("FROM").unwrap()..][..80];
        let message = format!("... near '{cut}' at line 2");
        assert_eq!(near_offset(&message, &long), long.find("FROM"));
        assert_eq!(near_offset("Unknown column 'x'", sent), None);
    }

    #[test]
    fn only_one_reading_query_is_sent() {
        let refused = |sql: &str| statement_of(sql, Vec::new()).unwrap_err().to_string();
        assert!(refused("CREATE TABLE t (a INT)").contains("read-only"));
        assert!(refused("SELECT 1; DROP TABLE t").contains("line 1, column 11"));
        assert!(refused("SELECT a FROM t INTO OUTFILE '/tmp/x'").contains("writes a file"));
        let sent = statement_of("SELECT a FROM t WHERE a = $1;\n", vec![Param::Int(1)]).unwrap();
        assert_eq!(sent.sql, "SELECT a FROM t WHERE a = ?");
    }
}
