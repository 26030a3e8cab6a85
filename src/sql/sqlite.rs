//! SQLite as a source: `sqlite:path` (the file must exist).
//!
//! Queries run on connections opened read-only with `PRAGMA query_only = ON`; the statement
//! timeout and a stopped run interrupt the statement through a progress handler (see the
//! decisions in `mod.rs`).

use std::str::FromStr;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use futures::future::BoxFuture;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqlitePool, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, Connection, Executor as _, Sqlite};

use super::params::{self, Param};
use super::saved::{self, Dialect, SavedOp, SavedOutcome};
use super::source::{Answer, Source};
use super::{
    ACQUIRE_TIMEOUT, Batcher, MAX_CONNECTIONS, QueryOptions, RowSender, SqlError, decode, statement,
};

/// SQLite virtual-machine steps between two looks at the clock.
const SQLITE_PROGRESS_STEPS: i32 = 4_000;

/// A SQLite source: a pool of read-only connections.
#[derive(Debug)]
pub(super) struct SqliteSource {
    /// Read-only, `query_only` connections: every query and every read of saved_queries.
    read_only: SqlitePool,
    /// The URL's own options, for the rare writable connection saving a query opens.
    writable: SqliteConnectOptions,
    timeout: Duration,
}

/// Open `raw` (shown as `shown`) read-only, checking the file exists and opens.
pub(super) async fn connect(
    raw: &str,
    shown: &str,
    options: &QueryOptions,
) -> Result<SqliteSource, SqlError> {
    let writable = SqliteConnectOptions::from_str(raw).map_err(|source| SqlError::InvalidUrl {
        url: shown.to_string(),
        source,
    })?;
    let read_only = writable
        .clone()
        .read_only(true)
        .create_if_missing(false)
        .pragma("query_only", "ON");
    let _ = super::probe(shown, options.connect_retries, &read_only)
        .await?
        .close()
        .await;
    let read_only = SqlitePoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_lazy_with(read_only);
    Ok(SqliteSource {
        read_only,
        writable,
        timeout: options.statement_timeout,
    })
}

impl Source for SqliteSource {
    fn read<'a>(&'a self, sql: String, params: Vec<Param>, rows: &'a RowSender) -> Answer<'a, ()> {
        Box::pin(run_sqlite(&self.read_only, sql, params, self.timeout, rows))
    }

    /// Prepared (parsed and analysed) on a read-only connection.
    fn check<'a>(&'a self, sql: &'a str, params: Vec<Param>) -> Answer<'a, ()> {
        Box::pin(async move {
            super::check_portable_text(sql, params.len())?;
            let failed = |source| SqlError::from_query(source, self.timeout);
            let mut connection = self.read_only.acquire().await.map_err(failed)?;
            (&mut *connection)
                .prepare(sqlx::SqlSafeStr::into_sql_str(AssertSqlSafe(
                    sql.to_owned(),
                )))
                .await
                .map_err(failed)?;
            Ok(())
        })
    }

    /// Writes on the one writable SQLite connection klsync ever opens on a user's database,
    /// opened for this change and closed right after, whatever it did.
    fn saved_queries<'a>(&'a self, op: SavedOp<'a>) -> Answer<'a, SavedOutcome> {
        Box::pin(async move {
            let action = op.action();
            if !op.writes() {
                let mut connection = self
                    .read_only
                    .acquire()
                    .await
                    .map_err(|source| SqlError::SavedQueries { action, source })?;
                return saved::run::<Sqlite>(&mut connection, op).await;
            }
            let failed = |action| move |source| SqlError::SavedQueries { action, source };
            let mut connection = SqliteConnection::connect_with(&self.writable)
                .await
                .map_err(failed("opening the database for writing"))?;
            let done = saved::run::<Sqlite>(&mut connection, op).await;
            let closed = connection.close().await.map_err(failed("closing"));
            let done = done?;
            closed?;
            Ok(done)
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.read_only.close())
    }
}

impl Dialect for Sqlite {
    const MIGRATION: &'static str = include_str!("../../migrations/saved_queries/sqlite.sql");
    const TABLE_EXISTS: &'static str = "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'saved_queries')";
    const FIRST_AS_TEXT: &'static str = "?1";
    const NOW: &'static str = "strftime('%Y-%m-%d %H:%M:%f', 'now')";

    fn param(n: usize) -> String {
        format!("?{n}")
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
    use crate::settings::Secret;
    use crate::sql::QueryManager;
    use futures::StreamExt;
    use sqlx::ConnectOptions;

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
