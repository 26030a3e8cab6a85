//! PostgreSQL (and engines that speak its protocol) as a source: `postgres://...`.
//!
//! Queries run in `BEGIN READ ONLY` with `statement_timeout` set locally, always rolled back;
//! queries without parameters are read through `COPY` where the server accepts it (`copy.rs`),
//! else row by row; a stopped run cancels the statement with `pg_cancel_backend` (see the
//! decisions in `mod.rs`).

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::TryStreamExt;
use futures::future::BoxFuture;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::query::Query;
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, Connection, Executor as _, Postgres, Row as _};

use super::params::{self, Param};
use super::saved::{self, Dialect, SavedQuery};
use super::source::Source;
use super::{
    ACQUIRE_TIMEOUT, Batcher, MAX_CONNECTIONS, QueryOptions, RowSender, SqlError, copy, decode,
};

/// A PostgreSQL source: pooled connections, each query in a read-only transaction.
#[derive(Debug)]
pub(super) struct PgSource {
    pool: PgPool,
    /// Whether `COPY` may still be tried on this source: off by setting, or once the
    /// server refused it (for this run only: nothing is remembered that could go stale).
    copy: AtomicBool,
    timeout: Duration,
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
    let pool = PgPoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_lazy_with(connect);
    Ok(PgSource {
        pool,
        copy: AtomicBool::new(options.copy),
        timeout: options.statement_timeout,
    })
}

impl Source for PgSource {
    fn read<'a>(
        &'a self,
        sql: String,
        params: Vec<Param>,
        rows: &'a RowSender,
    ) -> BoxFuture<'a, Result<(), SqlError>> {
        Box::pin(run_pg(
            &self.pool,
            &self.copy,
            sql,
            params,
            self.timeout,
            rows,
        ))
    }

    /// Prepared (parsed and analysed) in a read-only transaction, then rolled back.
    fn check<'a>(
        &'a self,
        sql: &'a str,
        params: Vec<Param>,
    ) -> BoxFuture<'a, Result<(), SqlError>> {
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

    fn save<'a>(
        &'a self,
        name: &'a str,
        sql: &'a str,
        description: Option<&'a str>,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<SavedQuery, SqlError>> {
        Box::pin(async move {
            let mut connection =
                self.pool
                    .acquire()
                    .await
                    .map_err(|source| SqlError::SavedQueries {
                        action: "saving",
                        source,
                    })?;
            saved::upsert::<Postgres>(&mut connection, name, sql, description, params).await
        })
    }

    fn delete<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool, SqlError>> {
        Box::pin(async move {
            let mut connection =
                self.pool
                    .acquire()
                    .await
                    .map_err(|source| SqlError::SavedQueries {
                        action: "deleting",
                        source,
                    })?;
            saved::delete::<Postgres>(&mut connection, name).await
        })
    }

    fn load<'a>(
        &'a self,
        name: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<SavedQuery>, SqlError>> {
        Box::pin(saved::load(&self.pool, name))
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

    fn bind_params(
        query: Query<'_, Self, Self::Arguments>,
        params: Option<Value>,
    ) -> Query<'_, Self, Self::Arguments> {
        query.bind(params.map(Json))
    }

    fn read_params(row: &PgRow, _name: &str) -> Result<Option<Value>, SqlError> {
        let params: Option<Json<Value>> = row.try_get("parameters").map_err(saved::reading)?;
        Ok(params.map(|json| json.0))
    }

    fn rows_affected(result: &sqlx::postgres::PgQueryResult) -> u64 {
        result.rows_affected()
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
