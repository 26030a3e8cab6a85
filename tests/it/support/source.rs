//! SQL sources for the tests: a MariaDB/MySQL database of a test's own, and running set-up SQL
//! on any source URL (the sync's own connections are read-only).

use std::time::Duration;

use klsync::settings::redact_url;
use sqlx::{Connection, Executor};

/// Where the MariaDB (or MySQL) tests run: `KLSYNC_TEST_MYSQL_URL`, a server URL whose user may
/// create databases (.ci/run sets `mysql://root@127.0.0.1:3306/test`).
pub const MYSQL_URL_VAR: &str = "KLSYNC_TEST_MYSQL_URL";

/// A database of its own in the test MariaDB, dropped (with everything in it) on drop.
#[derive(Debug)]
pub struct TestMySql {
    server: String,
    database: String,
    url: String,
}

impl TestMySql {
    /// Create a database `klsync_t_<uuid>`. `None` only when `KLSYNC_TEST_MYSQL_URL` is unset
    /// (the test then says it skipped); a server that is named but does not answer panics.
    pub async fn create() -> Option<TestMySql> {
        let Ok(server) = std::env::var(MYSQL_URL_VAR) else {
            eprintln!("skipped: {MYSQL_URL_VAR} is not set (.ci/run sets it)");
            return None;
        };
        let connect = tokio::time::timeout(
            Duration::from_secs(5),
            sqlx::MySqlConnection::connect(&server),
        )
        .await;
        let mut conn = match connect {
            Ok(Ok(conn)) => conn,
            Ok(Err(error)) => panic!("test MariaDB {}: {error}", redact_url(&server)),
            Err(_) => panic!("test MariaDB {}: timed out", redact_url(&server)),
        };
        let database = format!("klsync_t_{}", uuid::Uuid::new_v4().simple());
        // The name is generated above from hex digits: nothing to inject.
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
            .await
            .expect("create a test database");
        let _ = conn.close().await;
        let mut url = url::Url::parse(&server).expect("test MariaDB URL");
        url.set_path(&format!("/{database}"));
        Some(TestMySql {
            url: url.to_string(),
            server,
            database,
        })
    }

    /// A URL whose connections use this database.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestMySql {
    fn drop(&mut self) {
        let server = self.server.clone();
        let drop_database = format!("DROP DATABASE IF EXISTS {}", self.database);
        // Drop cannot await, and may run inside a runtime: use a thread with a runtime of its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async move {
                let mut conn = sqlx::MySqlConnection::connect(&server).await.ok()?;
                conn.execute(sqlx::AssertSqlSafe(drop_database))
                    .await
                    .ok()?;
                conn.close().await.ok()
            })
        });
        if cleanup.join().ok().flatten().is_none() {
            eprintln!("could not drop test database {}", self.database);
        }
    }
}

/// Run `sql` (one or more statements) on the source at `url`, on a writable connection of its
/// own: `postgres://`, `mysql://` or `sqlite://` (created if missing).
pub async fn execute(url: &str, sql: &str) {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    if url.starts_with("sqlite") {
        let mut conn = sqlx::SqliteConnection::connect(&format!("{url}?mode=rwc"))
            .await
            .expect("sqlite");
        sqlx::raw_sql(sql).execute(&mut conn).await.expect("sql");
        conn.close().await.expect("close");
    } else if url.starts_with("mysql") || url.starts_with("mariadb") {
        let mut conn = sqlx::MySqlConnection::connect(url).await.expect("mysql");
        sqlx::raw_sql(sql).execute(&mut conn).await.expect("sql");
        conn.close().await.expect("close");
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await.expect("pg");
        sqlx::raw_sql(sql).execute(&mut conn).await.expect("sql");
        conn.close().await.expect("close");
    }
}
