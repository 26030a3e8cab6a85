//! PostgreSQL (and engines that speak its protocol) as a source: `postgres://...`.
//!
//! Queries run in `BEGIN READ ONLY` with `statement_timeout` set locally, always rolled back;
//! queries without parameters are read through `COPY` where the server accepts it (`copy.rs`;
//! on a connection of klsync's own where the URL allows: `postgres_wire.rs`), else row by row;
//! a stopped run cancels the statement with `pg_cancel_backend` (see the decisions in `mod.rs`).

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

use futures::TryStreamExt;
use futures::future::BoxFuture;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, Executor as _, Postgres};

use super::params::{self, Param};
use super::saved::{self, Dialect, SavedOp, SavedOutcome};
use super::source::{Answer, Source};
use super::{
    ACQUIRE_TIMEOUT, Batcher, MAX_CONNECTIONS, QueryOptions, RowSender, SqlError, Stopped, copy,
    decode, postgres_wire, stop_statement, stop_when_asked,
};

/// A PostgreSQL source: pooled connections, each query in a read-only transaction.
#[derive(Debug)]
pub(super) struct PgSource {
    pool: PgPool,
    /// Whether `COPY` may still be tried on this source: off by setting, or once the
    /// server refused it (for this run only: nothing is remembered that could go stale).
    copy: AtomicBool,
    timeout: Duration,
    /// How `COPY` is read on a connection of klsync's own, when the URL allows it.
    wire: Option<postgres_wire::WireOptions>,
}

/// Connect to `raw` (shown as `shown`), checking the server is reachable.
pub(super) async fn connect(
    raw: &str,
    shown: &str,
    options: &QueryOptions,
) -> Result<PgSource, SqlError> {
    let connect = PgConnectOptions::from_str(raw).map_err(|source| SqlError::InvalidUrl {
        url: shown.to_string(),
        source,
    })?;
    let _ = super::probe(shown, options.connect_retries, &connect)
        .await?
        .close()
        .await;
    let wire = postgres_wire::WireOptions::from_url(raw, &connect);
    let pool = PgPoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_lazy_with(connect);
    // The first query's connection opens now, while the run loads the state and reads Klaviyo,
    // rather than when the query starts (a TLS handshake and authentication off the plan's
    // path). A failure is the query's to report, when it acquires a connection itself.
    let warm = pool.clone();
    tokio::spawn(async move {
        let _ = warm.acquire().await;
    });
    Ok(PgSource {
        pool,
        copy: AtomicBool::new(options.copy),
        timeout: options.statement_timeout,
        wire,
    })
}

impl Source for PgSource {
    fn read<'a>(&'a self, sql: String, params: Vec<Param>, rows: &'a RowSender) -> Answer<'a, ()> {
        Box::pin(run_pg(self, sql, params, rows))
    }

    /// Prepared (parsed and analysed) in a read-only transaction, then rolled back.
    fn check<'a>(&'a self, sql: &'a str, params: Vec<Param>) -> Answer<'a, ()> {
        Box::pin(async move {
            super::check_portable_text(sql, params.len())?;
            let failed = |source| SqlError::from_query(source, self.timeout);
            let mut connection = self.pool.acquire().await.map_err(failed)?;
            sqlx::query("BEGIN READ ONLY")
                .execute(&mut *connection)
                .await
                .map_err(failed)?;
            let prepared = (&mut *connection)
                .prepare(sqlx::SqlSafeStr::into_sql_str(AssertSqlSafe(
                    sql.to_owned(),
                )))
                .await;
            let rolled_back = sqlx::query("ROLLBACK").execute(&mut *connection).await;
            prepared.map_err(|err| failed(err).located(sql, 0, sql))?;
            rolled_back.map_err(failed)?;
            Ok(())
        })
    }

    fn saved_queries<'a>(&'a self, op: SavedOp<'a>) -> Answer<'a, SavedOutcome> {
        Box::pin(async move {
            let action = op.action();
            let mut connection = self
                .pool
                .acquire()
                .await
                .map_err(|source| SqlError::SavedQueries { action, source })?;
            saved::run::<Postgres>(&mut connection, op).await
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.pool.close())
    }
}

impl Dialect for Postgres {
    const MIGRATION: &'static str = include_str!("../../migrations/saved_queries/postgres.sql");
    // to_regclass follows search_path, like the unqualified name in the queries below.
    const TABLE_EXISTS: &'static str = "SELECT to_regclass('saved_queries') IS NOT NULL";
    const FIRST_AS_TEXT: &'static str = "$1::text";
    // now() is the transaction start: one instant for both columns, and a later one on each
    // save.
    const NOW: &'static str = "now() AT TIME ZONE 'UTC'";

    fn param(n: usize) -> String {
        format!("${n}")
    }
}

async fn run_pg(
    source: &PgSource,
    sql: String,
    params: Vec<Param>,
    sender: &RowSender,
) -> Result<(), SqlError> {
    let PgSource {
        pool,
        copy,
        timeout,
        wire,
    } = source;
    let timeout = *timeout;
    let failed = |source| SqlError::from_query(source, timeout);
    let mut try_copy = params.is_empty() && copy.load(Ordering::Relaxed);
    let mut params = Some(params);
    loop {
        let mut connection = pool.acquire().await.map_err(failed)?;
        let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *connection)
            .await
            .map_err(failed)?;
        // The server process of klsync's own COPY connection while it reads (0: none).
        let own_backend = AtomicI32::new(0);
        // Opened beside the transaction and the statement's preparing, not after them; closed
        // unused if the query cannot go through COPY.
        let own = wire
            .as_ref()
            .filter(|_| try_copy)
            .map(|options| copy::OwnConnection {
                opening: tokio::spawn(postgres_wire::open(options.clone())),
                timeout,
                backend: &own_backend,
            });
        let read = read_pg(
            &mut connection,
            &sql,
            &mut params,
            timeout,
            sender,
            try_copy,
            own,
        );
        // The statement runs on klsync's own connection while that reads, else on the pool's.
        let stop = async {
            match own_backend.load(Ordering::Relaxed) {
                0 => cancel(pool, backend).await,
                own => cancel(pool, own).await,
            }
        };
        let (read, stopped) = stop_when_asked(read, sender, stop).await;
        let stopped = stopped == Some(Stopped::ByTheRun);
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

/// Cancel the statement running on backend `backend`.
async fn cancel(pool: &PgPool, backend: i32) {
    stop_statement::<Postgres>(
        &pool.connect_options(),
        format!("SELECT pg_cancel_backend({backend})"),
    )
    .await;
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
    own: Option<copy::OwnConnection<'_>>,
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
            match copy::copy_rows(&mut transaction, sql, failed, &mut batch, own).await? {
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
