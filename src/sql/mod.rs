//! SQL sources: run the queries that drive list membership and profile data, and keep reusable
//! queries in the `saved_queries` table.
//!
//! [`QueryManager`] is the only type here that touches a database. It connects to the user's
//! `DATABASE_URL` (PostgreSQL, MySQL/MariaDB or SQLite; MySQL's decisions are in `mysql.rs`)
//! and offers three things: [`QueryManager::execute_query`]
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
mod saved;
// Reading SQL text (statements, placeholders) is pure: the manifest checks use it too.
pub use klsync_core::sql_statement as statement;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::stream::{self, Stream, StreamExt, TryStreamExt};
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Executor as _, SqlSafeStr as _};
use tokio::sync::mpsc;

use crate::manifest::types::QuerySpec;
use crate::settings::{Secret, redact_url};

use batch::Undecodable;
pub use batch::{RowBatch, RowRef};
pub use error::SqlError;
pub use saved::SavedQuery;

use params::Param;

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
/// SQLite virtual-machine steps between two looks at the clock.
const SQLITE_PROGRESS_STEPS: i32 = 4_000;
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
    backend: Backend,
    url: String,
    options: QueryOptions,
}

#[derive(Debug, Clone)]
enum Backend {
    Postgres {
        pool: PgPool,
        /// Whether `COPY` may still be tried on this source: off by setting, or once the
        /// server refused it (for this run only: nothing is remembered that could go stale).
        copy: Arc<AtomicBool>,
    },
    /// MySQL or MariaDB (`mysql.rs`).
    MySql(mysql::MySqlSource),
    Sqlite {
        /// Read-only, `query_only` connections: every query and every read of saved_queries.
        read_only: SqlitePool,
        /// The URL's own options, for the rare writable connection `save_query` opens.
        writable: Box<SqliteConnectOptions>,
    },
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
        let invalid = |source| SqlError::InvalidUrl {
            url: shown.clone(),
            source,
        };
        let backend = match scheme.as_str() {
            // Only `postgres://...`: sqlx reads `postgres:/user:pw@host/db` as a database named
            // `user:pw@host/db` on localhost, and the server echoes that name in its error.
            "postgres" | "postgresql" if raw[scheme.len()..].starts_with("://") => {
                let connect = PgConnectOptions::from_str(raw).map_err(invalid)?;
                let _ = probe(&shown, options.connect_retries, &connect)
                    .await?
                    .close()
                    .await;
                let pool = PgPoolOptions::new()
                    .max_connections(MAX_CONNECTIONS)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_lazy_with(connect);
                Backend::Postgres {
                    pool,
                    copy: Arc::new(AtomicBool::new(options.copy)),
                }
            }
            "sqlite" => {
                let writable = SqliteConnectOptions::from_str(raw).map_err(invalid)?;
                let read_only = writable
                    .clone()
                    .read_only(true)
                    .create_if_missing(false)
                    .pragma("query_only", "ON");
                let _ = probe(&shown, options.connect_retries, &read_only)
                    .await?
                    .close()
                    .await;
                let pool = SqlitePoolOptions::new()
                    .max_connections(MAX_CONNECTIONS)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_lazy_with(read_only);
                Backend::Sqlite {
                    read_only: pool,
                    writable: Box::new(writable),
                }
            }
            "mysql" | "mariadb" if raw[scheme.len()..].starts_with("://") => {
                Backend::MySql(mysql::connect(raw, &shown, &options).await?)
            }
            _ => return Err(SqlError::UnsupportedUrl { url: shown }),
        };
        Ok(QueryManager {
            backend,
            url: shown,
            options,
        })
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
            backend: self.backend.clone(),
            sql: sql.to_string(),
            params,
            timeout: self.options.statement_timeout,
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
    /// statement, a SELECT or WITH, one parameter per `$n`, values that can be bound, and the
    /// database's own parse and analysis (syntax, unknown tables and columns) by preparing it.
    ///
    /// Preparing happens in a read-only transaction (PostgreSQL) or on a read-only connection
    /// (SQLite) that is then rolled back or dropped: nothing is changed, and nothing runs.
    pub async fn check_query(&self, sql: &str, params: &[Value]) -> Result<(), SqlError> {
        // MySQL's text is read by its own rules (`mysql.rs`), statements and placeholders alike.
        let mysql = match &self.backend {
            Backend::MySql(source) => Some(source),
            _ => None,
        };
        if mysql.is_none()
            && let Some((line, column)) = statement::second_statement(sql)
        {
            return Err(SqlError::MultipleStatements { line, column });
        }
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
        if let Some(source) = mysql {
            let params = params::classify(params)?;
            return source
                .check(sql, params, self.options.statement_timeout)
                .await;
        }
        if let Some(mismatch) = statement::placeholder_mismatch(sql, params.len()) {
            return Err(SqlError::Placeholders { mismatch });
        }
        params::classify(params)?;
        let failed = |source| SqlError::from_query(source, self.options.statement_timeout);
        let prepare = || AssertSqlSafe(sql.to_owned()).into_sql_str();
        match &self.backend {
            Backend::Postgres { pool, .. } => {
                let mut connection = pool.acquire().await.map_err(failed)?;
                sqlx::query("BEGIN READ ONLY")
                    .execute(&mut *connection)
                    .await
                    .map_err(failed)?;
                let prepared = (&mut *connection).prepare(prepare()).await;
                let rolled_back = sqlx::query("ROLLBACK").execute(&mut *connection).await;
                prepared.map_err(|err| failed(err).located(sql, 0, sql))?;
                rolled_back.map_err(failed)?;
            }
            Backend::MySql(_) => unreachable!("checked above"),
            Backend::Sqlite { read_only, .. } => {
                let mut connection = read_only.acquire().await.map_err(failed)?;
                (&mut *connection)
                    .prepare(prepare())
                    .await
                    .map_err(failed)?;
            }
        }
        Ok(())
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
        match &self.backend {
            Backend::Postgres { pool, .. } => {
                saved::save_pg(pool, name, sql, description, params).await
            }
            Backend::MySql(source) => {
                saved::save_mysql(source, name, sql, description, params).await
            }
            Backend::Sqlite { writable, .. } => {
                saved::save_sqlite(writable, name, sql, description, params).await
            }
        }
    }

    /// Deletes the saved query called `name`; whether there was one.
    pub async fn delete_query(&self, name: &str) -> Result<bool, SqlError> {
        match &self.backend {
            Backend::Postgres { pool, .. } => saved::delete_pg(pool, name).await,
            Backend::MySql(source) => saved::delete_mysql(source, name).await,
            Backend::Sqlite { writable, .. } => saved::delete_sqlite(writable, name).await,
        }
    }

    /// The saved query called `name`, or `None` (also when the table does not exist).
    pub async fn load_query(&self, name: &str) -> Result<Option<SavedQuery>, SqlError> {
        match &self.backend {
            Backend::Postgres { pool, .. } => saved::load_pg(pool, Some(name)).await,
            Backend::MySql(source) => saved::load_mysql(source.pool(), Some(name)).await,
            Backend::Sqlite { read_only, .. } => saved::load_sqlite(read_only, Some(name)).await,
        }
        .map(|mut found| found.pop())
    }

    /// Every saved query, by name (empty when the table does not exist).
    pub async fn list_queries(&self) -> Result<Vec<SavedQuery>, SqlError> {
        match &self.backend {
            Backend::Postgres { pool, .. } => saved::load_pg(pool, None).await,
            Backend::MySql(source) => saved::load_mysql(source.pool(), None).await,
            Backend::Sqlite { read_only, .. } => saved::load_sqlite(read_only, None).await,
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
        match &self.backend {
            Backend::Postgres { pool, .. } => pool.close().await,
            Backend::MySql(source) => source.close().await,
            Backend::Sqlite { read_only, .. } => read_only.close().await,
        }
    }
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

/// One query execution, owned by the task that streams its rows.
struct Job {
    backend: Backend,
    sql: String,
    params: Vec<Param>,
    timeout: Duration,
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
            backend,
            sql,
            params,
            timeout,
        } = self;
        let outcome = match backend {
            Backend::Postgres { pool, copy } => {
                run_pg(&pool, &copy, sql, params, timeout, &sender).await
            }
            Backend::MySql(source) => source.run(sql, params, timeout, &sender).await,
            Backend::Sqlite { read_only, .. } => {
                run_sqlite(&read_only, sql, params, timeout, &sender).await
            }
        };
        if let Err(err) = outcome {
            // The consumer may be gone already; then nobody is left to tell.
            let _ = sender.send(Err(err)).await;
        }
    }
}

async fn run_pg(
    pool: &PgPool,
    copy: &AtomicBool,
    sql: String,
    params: Vec<Param>,
    timeout: Duration,
    sender: &RowSender,
) -> Result<(), SqlError> {
    let failed = |source| SqlError::from_query(source, timeout);
    let mut try_copy = params.is_empty() && copy.load(Ordering::Relaxed);
    let mut params = Some(params);
    loop {
        let mut connection = pool.acquire().await.map_err(failed)?;
        let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *connection)
            .await
            .map_err(failed)?;
        let read = read_pg(
            &mut connection,
            &sql,
            &mut params,
            timeout,
            sender,
            try_copy,
        );
        let (read, stopped) = cancel_when_stopped(read, pool, backend, sender).await;
        let read = match (read, stopped) {
            // A query the run stopped says so, whatever the server answered the cancel with.
            (PgRead::Done(Err(_)), true) => PgRead::Done(Err(SqlError::Interrupted)),
            (PgRead::Discard(Err(_)) | PgRead::NotCopyable(_), true) => {
                PgRead::Discard(Err(SqlError::Interrupted))
            }
            (read, _) => read,
        };
        match read {
            PgRead::Done(outcome) => return outcome,
            PgRead::Discard(outcome) => {
                connection.close_on_drop();
                return outcome;
            }
            PgRead::NotCopyable(refused) => {
                connection.close_on_drop();
                try_copy = false;
                // Said once per run (`-v`), when the server first refuses; later queries of
                // the run go row by row straight away.
                if let Some(reason) = refused
                    && copy.swap(false, Ordering::Relaxed)
                {
                    tracing::info!(
                        reason,
                        "the database refused COPY; reading this source row by row for the rest \
                         of the run (set `database.copy: off` in klsync.yaml to skip trying)"
                    );
                }
            }
        }
    }
}

/// Run `read` (the query on backend `backend`); if the run is stopped or the rows' consumer goes
/// away first, cancel the statement on the server and let `read` end with its answer. The flag
/// says whether the run was stopped.
async fn cancel_when_stopped(
    read: impl std::future::Future<Output = PgRead>,
    pool: &PgPool,
    backend: i32,
    sender: &RowSender,
) -> (PgRead, bool) {
    let mut read = std::pin::pin!(read);
    let stopped = tokio::select! {
        done = &mut read => return (done, false),
        _ = crate::interrupt::stopped() => true,
        () = sender.closed() => false,
    };
    // Not from the pool: its connections may all be busy with queries.
    let cancelled = async {
        let mut connection = sqlx::PgConnection::connect_with(&pool.connect_options()).await?;
        let cancelled = sqlx::query("SELECT pg_cancel_backend($1)")
            .bind(backend)
            .execute(&mut connection)
            .await;
        let _ = connection.close().await;
        cancelled
    }
    .await;
    if let Err(err) = cancelled {
        tracing::warn!(backend, error = %err, "could not cancel the query on the server");
    }
    (read.await, stopped)
}

/// How one attempt at a PostgreSQL query ended.
enum PgRead {
    /// With this outcome; the connection is reusable.
    Done(Result<(), SqlError>),
    /// With this outcome; the connection is out of step (see [`copy::Copied::Abandoned`]).
    Discard(Result<(), SqlError>),
    /// The query must be read without `COPY`, on another connection; with the server's reason
    /// when it refused `COPY` itself (not this statement inside it).
    NotCopyable(Option<String>),
}

/// Read `sql` in a read-only transaction on `connection`: through `COPY` when `try_copy` and
/// it applies (see `copy.rs`), else row by row with `params` bound.
async fn read_pg(
    connection: &mut sqlx::PgConnection,
    sql: &str,
    params: &mut Option<Vec<Param>>,
    timeout: Duration,
    sender: &RowSender,
    try_copy: bool,
) -> PgRead {
    let failed = |source| SqlError::from_query(source, timeout);
    let mut transaction = match connection.begin_with("BEGIN READ ONLY").await {
        Ok(transaction) => transaction,
        Err(err) => return PgRead::Discard(Err(failed(err))),
    };
    let mut batch = Batcher::new(sender);
    let streamed = async {
        // set_config(..., true) is SET LOCAL: it ends with the transaction.
        sqlx::query("SELECT set_config('statement_timeout', $1, true)")
            .bind(format!("{}ms", timeout.as_millis()))
            .execute(&mut *transaction)
            .await
            .map_err(failed)?;
        if try_copy {
            match copy::copy_rows(&mut transaction, sql, failed, &mut batch).await? {
                copy::Copied::NotApplicable => {}
                copy::Copied::Complete => return Ok(None),
                copy::Copied::NotCopyable(refused) => {
                    return Ok(Some(PgRead::NotCopyable(refused)));
                }
                copy::Copied::Abandoned(outcome) => {
                    batch.flush().await;
                    return Ok(Some(PgRead::Discard(outcome)));
                }
            }
        }
        let query = params::bind(
            sqlx::query(AssertSqlSafe(sql.to_string())),
            params.take().unwrap_or_default(),
        );
        let mut rows = query.fetch(&mut *transaction);
        let mut columns: Option<Vec<decode::PgColumn>> = None;
        while let Some(row) = rows
            .try_next()
            .await
            .map_err(|err| failed(err).located(sql, 0, sql))?
        {
            let columns = match &mut columns {
                Some(columns) => columns,
                None => {
                    use sqlx::Row as _;
                    let found = decode::pg_columns(
                        row.columns()
                            .iter()
                            .map(|c| (sqlx::Column::name(c), sqlx::Column::type_info(c))),
                    )?;
                    batch.set_columns(found.iter().map(|c| c.name().to_string()).collect());
                    columns.insert(found)
                }
            };
            if !batch.push(decode::pg_values(&row, columns)?).await? {
                break;
            }
        }
        Ok(None)
    }
    .await;
    match streamed {
        Ok(Some(early)) => early,
        outcome => {
            batch.flush().await;
            // A sync query never commits, whatever happened above.
            let rolled_back = transaction.rollback().await.map_err(failed);
            PgRead::Done(outcome.map(|_| ()).and(rolled_back))
        }
    }
}

async fn run_sqlite(
    pool: &SqlitePool,
    sql: String,
    params: Vec<Param>,
    timeout: Duration,
    sender: &RowSender,
) -> Result<(), SqlError> {
    let failed = |source| {
        match SqlError::from_query(source, timeout) {
            // The progress handler also stops the statement when the run is stopped.
            SqlError::Timeout { .. } if crate::interrupt::requested().is_some() => {
                SqlError::Interrupted
            }
            other => other,
        }
    };
    if let Some((line, column)) = statement::second_statement(&sql) {
        return Err(SqlError::MultipleStatements { line, column });
    }
    let mut connection = pool.acquire().await.map_err(failed)?;
    let deadline = (!timeout.is_zero()).then(|| Instant::now() + timeout);
    let consumer = sender.clone();
    connection
        .lock_handle()
        .await
        .map_err(failed)?
        .set_progress_handler(SQLITE_PROGRESS_STEPS, move || {
            deadline.is_none_or(|deadline| Instant::now() < deadline)
                && crate::interrupt::requested().is_none()
                && !consumer.is_closed()
        });
    let streamed = async {
        let mut transaction = connection.begin().await.map_err(failed)?;
        let outcome = async {
            let query = params::bind(sqlx::query(AssertSqlSafe(sql)), params);
            let mut rows = query.fetch(&mut *transaction);
            let mut batch = Batcher::new(sender);
            let read = async {
                while let Some(row) = rows.try_next().await.map_err(failed)? {
                    if !batch.has_columns() {
                        batch.set_columns(decode::column_names(&row)?);
                    }
                    if !batch.push(decode::sqlite_values(&row)).await? {
                        break;
                    }
                }
                Ok(())
            }
            .await;
            batch.flush().await;
            read
        }
        .await;
        let rolled_back = transaction.rollback().await.map_err(failed);
        outcome.and(rolled_back)
    }
    .await;
    // The deadline belongs to this query only; the pooled connection must not inherit it.
    let cleared = connection
        .lock_handle()
        .await
        .map(|mut handle| handle.remove_progress_handler());
    let cleared = cleared.map_err(|source| {
        // A connection whose handler cannot be cleared must not be reused.
        connection.detach();
        failed(source)
    });
    streamed.and(cleared)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sqlite_refuses_a_second_statement_naming_where_it_starts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("data.db");
        let create = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let mut connection = create.connect().await.expect("create the database");
        sqlx::query("CREATE TABLE t (a INTEGER); INSERT INTO t VALUES (1), (2)")
            .execute(&mut connection)
            .await
            .expect("fill it");
        connection.close().await.expect("close");
        let url = Secret::new(format!("sqlite://{}", path.display()));
        let manager = QueryManager::connect(&url, QueryOptions::default())
            .await
            .expect("connect");

        let rows: Vec<_> = manager
            .execute_query("SELECT a FROM t WHERE a = 1;\n  SELECT a FROM t", &[])
            .collect()
            .await;
        assert!(
            matches!(
                rows.as_slice(),
                [Err(SqlError::MultipleStatements { line: 2, column: 3 })]
            ),
            "{rows:?}"
        );
        let one: Vec<_> = manager
            .execute_query("SELECT a FROM t ORDER BY a; -- one statement", &[])
            .collect()
            .await;
        assert_eq!(one.len(), 2, "{one:?}");
        manager.close().await;
    }
}
