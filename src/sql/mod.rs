//! SQL sources: run the queries that drive list membership and profile data, and keep reusable
//! queries in the `saved_queries` table.
//!
//! [`QueryManager`] is what the rest of klsync uses. It connects to the user's `DATABASE_URL`
//! (PostgreSQL, MySQL/MariaDB or SQLite: one module each, behind the [`source::Source`] trait;
//! MySQL's own decisions are in `mysql/mod.rs`) and offers three things: [`QueryManager::execute_query`]
//! (rows as a stream of JSON objects), [`QueryManager::save_query`] /
//! [`QueryManager::load_query`] / [`QueryManager::list_queries`] (the `saved_queries` table), and
//! [`QueryManager::resolve_query`] (a manifest's query name, looked up in `queries:` then in the
//! table).
//!
//! # Decisions
//!
//! * **Where saved queries live.** `saved_queries` is in the same database the queries run on:
//!   that is where data teams keep their SQL, and it is the table of the design klsync grew
//!   from (`migrations/saved_queries/{postgres,sqlite}.sql`, plus a unique index on `name`
//!   so that saving an existing name updates it).
//! * **No migrations just to read.** Running a manifest's query must never change a user's
//!   database, so the table is created only by [`QueryManager::save_query`]; loading or listing
//!   treats a missing table as "no saved queries". The migration file's text is executed
//!   directly (it is idempotent: `CREATE ... IF NOT EXISTS`) instead of through sqlx's migrator,
//!   which would add a `_sqlx_migrations` bookkeeping table to the user's database and would
//!   conflict with klsync's own state migrations if both ever shared one database.
//! * **Read-only, always rolled back.** PostgreSQL queries run inside `BEGIN READ ONLY` with
//!   `statement_timeout` set locally (through `set_config`, so even the timeout is a bound
//!   value), and the transaction is rolled back whether the query succeeded, failed or was
//!   abandoned. SQLite queries run on connections opened read-only (`SQLITE_OPEN_READONLY`) with
//!   `PRAGMA query_only = ON`, which also covers `ATTACH`ed and temporary databases. A write
//!   attempt fails with [`SqlError::ReadOnly`].
//! * **Statement timeout.** PostgreSQL enforces it server-side (`SET LOCAL statement_timeout`).
//!   SQLite has no such setting, so a progress handler interrupts the statement once the
//!   deadline passes (checked every few thousand virtual-machine steps); the handler is removed
//!   before the connection goes back to the pool. Either way the error is
//!   [`SqlError::Timeout`]. A zero timeout disables it. The clock runs while the statement is
//!   open, including time the caller spends consuming rows.
//! * **One statement.** PostgreSQL's prepared statements refuse a second statement; SQLite would
//!   run it and return the rows of both, so there a second statement is refused before the query
//!   runs, naming where it starts (`statement.rs`).
//! * **Interrupts.** When the run is stopped (Ctrl-C, SIGTERM: `crate::interrupt`) or the rows'
//!   consumer goes away, a running query is cancelled: on PostgreSQL with `pg_cancel_backend`
//!   from a connection of its own (sqlx sends no cancel request; without it the server would
//!   run the query to its statement timeout), on SQLite by its progress handler. A query
//!   stopped by the run ends with [`SqlError::Interrupted`].
//! * **Bound parameters only.** The SQL text is sent as written (as one prepared statement, so
//!   it cannot smuggle in a second one) and parameters are bound by their JSON type: string →
//!   `text`, integer → `int8`, other number → `float8`, bool → `bool`, object/array → `jsonb`,
//!   null → NULL (SQLite: TEXT, INTEGER, REAL, 1/0, JSON text, NULL). Nothing is ever
//!   interpolated. PostgreSQL checks bound types strictly, so cast where a column is of another
//!   type: `WHERE signed_up >= $1::date`.
//! * **SQLite files must exist.** The query connections are read-only and never create the
//!   file; `sqlite::memory:` gives each connection its own empty database and is of no use.
//! * **Streaming.** Rows come from sqlx's `fetch`, are converted one at a time by a task of
//!   their own and handed over in batches of 1,024 through a bounded channel of four batches, so
//!   memory stays flat however many rows a query returns, a slow consumer slows the query
//!   instead of buffering it, and the channel's cost is paid per batch, not per row.
//! * **`COPY` for PostgreSQL queries without parameters.** Such a query is read through
//!   `COPY (query) TO STDOUT (FORMAT binary)` in the same read-only transaction, which streams
//!   a million rows at several times the speed of row-by-row reads and yields the very same
//!   values (`copy.rs` says when it applies and how a statement `COPY` refuses falls back). A
//!   server that refuses `COPY` itself (an engine or pooler that does not speak it) is read row
//!   by row for the rest of the run, said once at `-v`; nothing is remembered across runs.
//!   `database.copy: off` ([`QueryOptions::copy`]) never tries.
//!   Queries with parameters are read row by row: `COPY` cannot bind parameters, and klsync
//!   never interpolates them.
//! * **Rows** are [`Row`]s: JSON objects in column order (serde_json's `preserve_order`
//!   feature, enabled in Cargo.toml, keeps insertion order). Two columns with the same name are an
//!   error ([`SqlError::DuplicateColumn`]) rather than one silently hiding the other. Types are
//!   converted as documented in `decode.rs`: numbers stay numbers (NUMERIC only when exact, else
//!   a string), timestamps become ISO 8601, JSON stays JSON, `bytea` becomes `\x` hex.
//! * **Connections.** sslmode and every other option come from the URL (sqlx parses them).
//!   Transient connect failures (I/O, pool timeout, "starting up", "too many connections") are
//!   retried with exponential backoff; authentication and configuration errors are not. The
//!   password never appears in logs or errors: URLs are shown through
//!   [`crate::settings::redact_url`].

mod batch;
mod copy;
mod decode;
mod error;
mod mysql;
pub mod output;
mod params;
mod postgres;
mod postgres_wire;
mod saved;
mod source;
mod sqlite;
mod wire_error;
// Reading SQL text (statements, placeholders) is pure: the manifest checks use it too.
pub use klsync_core::sql_statement as statement;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, Stream, StreamExt};
use serde_json::Value;
use sqlx::ConnectOptions;
use tokio::sync::mpsc;

use crate::manifest::types::QuerySpec;
use crate::settings::{Secret, redact_url};

use batch::Undecodable;
pub use batch::{RowBatch, RowRef};
pub use error::SqlError;
pub use saved::SavedQuery;

use params::Param;
use saved::{SavedOp, SavedOutcome};
use source::Source;

/// One result row: column name → value, in the query's column order.
pub type Row = serde_json::Map<String, Value>;

/// How queries are run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryOptions {
    /// Cancel a statement that runs longer than this. `Duration::ZERO` disables the limit.
    pub statement_timeout: Duration,
    /// Extra connection attempts after a transient connect failure.
    pub connect_retries: u32,
    /// PostgreSQL: read queries without parameters through `COPY` where the server accepts it
    /// (`database.copy: auto`); `false` never tries (`off`).
    pub copy: bool,
}

impl Default for QueryOptions {
    fn default() -> Self {
        QueryOptions {
            statement_timeout: Duration::from_secs(60),
            connect_retries: 3,
            copy: true,
        }
    }
}

/// Rows per hand-off between the task that converts rows and the consumer: a channel hand-off
/// (with its wake-ups) costs about as much as converting a small row, so rows travel in batches.
const ROW_BATCH: usize = 1024;
/// Batches converted ahead of the consumer; few, because rows may be large.
const BATCH_BUFFER: usize = 4;
/// The most connections one klsync run keeps to a user's database.
const MAX_CONNECTIONS: u32 = 4;
/// How long a query waits for a pooled connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(15);
/// First retry delay; doubles each attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Runs read-only queries on the user's database and keeps its saved queries.
#[derive(Debug, Clone)]
pub struct QueryManager {
    /// The database, whichever it is (`source.rs`).
    source: Arc<dyn Source>,
    url: String,
}

impl QueryManager {
    /// Connect to a `postgres://`/`postgresql://`, `mysql://`/`mariadb://` or `sqlite:` URL,
    /// retrying transient failures.
    ///
    /// Nothing is created or migrated in the database.
    pub async fn connect(url: &Secret, options: QueryOptions) -> Result<Self, SqlError> {
        let raw = url.expose();
        let shown = redact_url(raw);
        let scheme = raw
            .split_once(':')
            .map(|(scheme, _)| scheme.to_ascii_lowercase())
            .unwrap_or_default();
        let authority = raw[scheme.len()..].starts_with("://");
        let source: Arc<dyn Source> = match scheme.as_str() {
            // Only `postgres://...`: sqlx reads `postgres:/user:pw@host/db` as a database named
            // `user:pw@host/db` on localhost, and the server echoes that name in its error.
            "postgres" | "postgresql" if authority => {
                Arc::new(postgres::connect(raw, &shown, &options).await?)
            }
            "mysql" | "mariadb" if authority => {
                Arc::new(mysql::connect(raw, &shown, &options).await?)
            }
            "sqlite" => Arc::new(sqlite::connect(raw, &shown, &options).await?),
            _ => return Err(SqlError::UnsupportedUrl { url: shown }),
        };
        Ok(QueryManager { source, url: shown })
    }

    /// The database URL with its password masked, for messages.
    pub fn redacted_url(&self) -> &str {
        &self.url
    }

    /// Run `sql` read-only with `params` bound to `$1`, `$2`, ... and stream its rows.
    ///
    /// The query starts when the stream is first polled. Dropping the stream early stops the
    /// query and rolls its transaction back. The stream ends after the first error.
    pub fn execute_query(
        &self,
        sql: &str,
        params: &[Value],
    ) -> impl Stream<Item = Result<Row, SqlError>> + Send + 'static {
        self.execute_query_batches(sql, params)
            .flat_map(|item| match item {
                Ok(batch) => stream::iter(batch.into_rows()).left_stream(),
                Err(err) => stream::iter([Err(err)]).right_stream(),
            })
    }

    /// [`QueryManager::execute_query`] in batches of up to 1,024 rows of bare values: the same
    /// rows, typed the same way, without building a map per row.
    pub fn execute_query_batches(
        &self,
        sql: &str,
        params: &[Value],
    ) -> impl Stream<Item = Result<RowBatch, SqlError>> + Send + 'static {
        let job = params::classify(params).map(|params| Job {
            source: Arc::clone(&self.source),
            sql: sql.to_string(),
            params,
        });
        stream::once(async move {
            match job {
                Err(err) => stream::iter([Err(err)]).left_stream(),
                Ok(job) => {
                    let (sender, receiver) = mpsc::channel(BATCH_BUFFER);
                    // The producer owns the connection and its transaction; it stops (and rolls
                    // back) as soon as the receiver is gone.
                    tokio::spawn(job.run(sender));
                    stream::unfold(receiver, |mut receiver| async move {
                        receiver.recv().await.map(|item| (item, receiver))
                    })
                    .right_stream()
                }
            }
        })
        .flatten()
    }

    /// Check `sql` as a query klsync could run with `params`, without running it: one
    /// statement, a SELECT or WITH, one parameter per placeholder, values that can be bound,
    /// and the database's own parse and analysis (syntax, unknown tables and columns) by
    /// preparing it.
    ///
    /// Preparing happens in a read-only transaction or on a read-only connection that is then
    /// rolled back or dropped: nothing is changed, and nothing runs.
    pub async fn check_query(&self, sql: &str, params: &[Value]) -> Result<(), SqlError> {
        match statement::first_keyword(sql) {
            Some((keyword, ..)) if keyword == "SELECT" || keyword == "WITH" => {}
            Some((keyword, line, column)) => {
                return Err(SqlError::NotAQuery {
                    keyword,
                    line,
                    column,
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
        let params = params::classify(params)?;
        self.source.check(sql, params).await
    }

    /// Save a query under `name`, creating the saved_queries table if needed.
    ///
    /// An existing name is updated: its SQL and parameters are replaced, its description too
    /// when one is given (kept otherwise), and `updated_at` advances. Returns the stored row.
    pub async fn save_query(
        &self,
        name: &str,
        sql: &str,
        description: Option<&str>,
        params: &[Value],
    ) -> Result<SavedQuery, SqlError> {
        saved::validate_name(name)?;
        let save = SavedOp::Save {
            name,
            sql,
            description,
            params,
        };
        match self.source.saved_queries(save).await? {
            SavedOutcome::Saved(saved) => Ok(saved),
            _ => unreachable!("a save saves"),
        }
    }

    /// Deletes the saved query called `name`; whether there was one.
    pub async fn delete_query(&self, name: &str) -> Result<bool, SqlError> {
        match self.source.saved_queries(SavedOp::Delete { name }).await? {
            SavedOutcome::Deleted(deleted) => Ok(deleted),
            _ => unreachable!("a delete deletes"),
        }
    }

    /// The saved query called `name`, or `None` (also when the table does not exist).
    pub async fn load_query(&self, name: &str) -> Result<Option<SavedQuery>, SqlError> {
        Ok(self.load(Some(name)).await?.pop())
    }

    /// Every saved query, by name (empty when the table does not exist).
    pub async fn list_queries(&self) -> Result<Vec<SavedQuery>, SqlError> {
        self.load(None).await
    }

    async fn load(&self, name: Option<&str>) -> Result<Vec<SavedQuery>, SqlError> {
        match self.source.saved_queries(SavedOp::Load { name }).await? {
            SavedOutcome::Loaded(loaded) => Ok(loaded),
            _ => unreachable!("a load loads"),
        }
    }

    /// The query a manifest names: its own `queries:` entry wins (it is reviewed in git with
    /// the manifest), else the saved query of that name, else [`SqlError::NotFound`].
    pub async fn resolve_query(
        &self,
        name: &str,
        manifest_queries: &BTreeMap<String, QuerySpec>,
    ) -> Result<QuerySpec, SqlError> {
        if let Some(spec) = manifest_queries.get(name) {
            return Ok(spec.clone());
        }
        match self.load_query(name).await? {
            Some(saved) => Ok(QuerySpec {
                sql: saved.sql,
                params: saved.params,
                description: saved.description,
            }),
            None => Err(SqlError::NotFound {
                name: name.to_string(),
            }),
        }
    }

    /// Close every pooled connection.
    pub async fn close(&self) {
        self.source.close().await;
    }
}

/// The checks of a query's text in klsync's portable form (`$n` placeholders, standard
/// strings), for databases that read it as written (PostgreSQL, SQLite): one statement, one
/// parameter per `$n`.
fn check_portable_text(sql: &str, params: usize) -> Result<(), SqlError> {
    if let Some((line, column)) = statement::second_statement(sql) {
        return Err(SqlError::MultipleStatements { line, column });
    }
    if let Some(mismatch) = statement::placeholder_mismatch(sql, params) {
        return Err(SqlError::Placeholders { mismatch });
    }
    Ok(())
}

/// Open one connection, retrying only failures another attempt could fix, and return it (the
/// caller closes it): the pool connects lazily, and this is where an unreachable or
/// misconfigured database is reported. (The pool's own connect loop is not used for this because it retries a refused
/// connection silently until its acquire timeout.)
async fn probe<O>(url: &str, retries: u32, options: &O) -> Result<O::Connection, SqlError>
where
    O: ConnectOptions,
    O::Connection: Sized,
{
    let mut attempt = 0;
    let mut delay = FIRST_BACKOFF;
    loop {
        attempt += 1;
        match options.connect().await {
            Ok(connection) => return Ok(connection),
            Err(err) if attempt <= retries && is_transient(&err) => {
                tracing::warn!(url, attempt, error = %err, "database connection failed; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_BACKOFF);
            }
            Err(source) => {
                return Err(SqlError::Connect {
                    url: url.to_string(),
                    attempts: attempt,
                    source,
                });
            }
        }
    }
}

fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => true,
        // PostgreSQL cannot_connect_now (starting up) and too_many_connections.
        sqlx::Error::Database(db) => {
            matches!(db.code().as_deref(), Some("57P03" | "53300"))
                // MySQL's ER_CON_COUNT_ERROR (too many connections).
                || db
                    .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                    .is_some_and(|my| my.number() == 1040)
        }
        _ => false,
    }
}

/// How a statement read with [`stop_when_asked`] was stopped part way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stopped {
    /// The run was stopped (Ctrl-C, SIGTERM): the query ends with [`SqlError::Interrupted`].
    ByTheRun,
    /// The rows' consumer went away.
    ByTheConsumer,
}

/// Run `read` (a statement on the server); if the run is stopped or the rows' consumer goes
/// away first, run `stop` (which stops the statement on the server, from a connection of its
/// own: the pool's may all be busy) and let `read` end with the server's answer.
async fn stop_when_asked<T>(
    read: impl std::future::Future<Output = T>,
    sender: &RowSender,
    stop: impl std::future::Future<Output = ()>,
) -> (T, Option<Stopped>) {
    let mut read = std::pin::pin!(read);
    let stopped = tokio::select! {
        done = &mut read => return (done, None),
        _ = crate::interrupt::stopped() => Stopped::ByTheRun,
        () = sender.closed() => Stopped::ByTheConsumer,
    };
    stop.await;
    (read.await, Some(stopped))
}

/// Stop a running statement with `statement` (klsync's own text, naming the server's number
/// for the connection: no user input), run on a connection of its own, opened for it and
/// closed after (the pool's may all be busy). A failure is worth a warning, not an error: the
/// statement timeout still bounds the query.
async fn stop_statement<DB: sqlx::Database>(
    options: &<DB::Connection as sqlx::Connection>::Options,
    statement: String,
) where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let stopped = async {
        let mut connection = <DB::Connection as sqlx::Connection>::connect_with(options).await?;
        let stopped = sqlx::raw_sql(sqlx::AssertSqlSafe(statement.clone()))
            .execute(&mut connection)
            .await;
        let _ = sqlx::Connection::close(connection).await;
        stopped
    }
    .await;
    if let Err(err) = stopped {
        tracing::warn!(statement, error = %err, "could not stop the query on the server");
    }
}

/// One query execution, owned by the task that streams its rows.
struct Job {
    source: Arc<dyn Source>,
    sql: String,
    params: Vec<Param>,
}

type RowSender = mpsc::Sender<Result<RowBatch, SqlError>>;

/// Collects converted rows and hands them to the consumer [`ROW_BATCH`] at a time.
struct Batcher<'a> {
    sender: &'a RowSender,
    /// Known before the first row.
    columns: Option<std::sync::Arc<[String]>>,
    rows: Vec<Vec<Value>>,
    /// The values of `rows` that could not be decoded, in order.
    undecodable: Vec<Undecodable>,
}

impl<'a> Batcher<'a> {
    fn new(sender: &'a RowSender) -> Self {
        Batcher {
            sender,
            columns: None,
            rows: Vec::with_capacity(ROW_BATCH),
            undecodable: Vec::new(),
        }
    }

    fn has_columns(&self) -> bool {
        self.columns.is_some()
    }

    fn set_columns(&mut self, names: Vec<String>) {
        self.columns = Some(names.into());
    }

    /// Add a row's values (after [`Batcher::set_columns`]); `Ok(false)` once the consumer is
    /// gone (stop reading).
    async fn push(&mut self, cells: Vec<decode::Cell>) -> Result<bool, SqlError> {
        let row = self.rows.len();
        let mut values = Vec::with_capacity(cells.len());
        for (column, cell) in cells.into_iter().enumerate() {
            values.push(match cell {
                Ok(value) => value,
                Err(error) => {
                    self.undecodable.push(Undecodable::new(row, column, error)?);
                    Value::Null
                }
            });
        }
        self.rows.push(values);
        if self.rows.len() < ROW_BATCH {
            return Ok(true);
        }
        Ok(self.flush().await)
    }

    /// Send what is collected (also before an error, so rows before it still arrive first).
    async fn flush(&mut self) -> bool {
        let Some(columns) = &self.columns else {
            return true;
        };
        if self.rows.is_empty() {
            return true;
        }
        let rows = std::mem::replace(&mut self.rows, Vec::with_capacity(ROW_BATCH));
        let undecodable = std::mem::take(&mut self.undecodable);
        let batch = RowBatch::from_values(columns.clone(), rows, undecodable);
        self.send(batch).await
    }

    /// Hand a whole batch to the consumer; `false` once it is gone.
    async fn send(&self, batch: RowBatch) -> bool {
        self.sender.send(Ok(batch)).await.is_ok()
    }

    /// The column names, once set.
    fn columns(&self) -> Option<std::sync::Arc<[String]>> {
        self.columns.clone()
    }
}

impl Job {
    async fn run(self, sender: RowSender) {
        let Job {
            source,
            sql,
            params,
        } = self;
        if let Err(err) = source.read(sql, params, &sender).await {
            // The consumer may be gone already; then nobody is left to tell.
            let _ = sender.send(Err(err)).await;
        }
    }
}

/// `%XX` escapes decoded, as sqlx decodes the URL's user, password and database.
fn percent_decoded(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%'
            && let Some(hex) = text.get(at + 1..at + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            at += 3;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8(out).ok()
}
