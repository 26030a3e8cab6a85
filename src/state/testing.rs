//! Helpers for tests that need a PostgreSQL database (this crate's and its users').
//!
//! Each test gets a schema of its own in the server named by `KLSYNC_TEST_POSTGRES_URL`
//! (default `postgres://postgres@127.0.0.1:5432/test`), so tests run in parallel and reruns start
//! clean. The schema is dropped when the [`TestPostgres`] is.

use std::time::Duration;

use sqlx::{Connection, Executor, PgConnection};

use crate::settings::redact_url;

/// The server tests use when `KLSYNC_TEST_POSTGRES_URL` is not set.
pub const DEFAULT_TEST_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The PostgreSQL server for tests, if one answers.
///
/// `None` only when `KLSYNC_TEST_POSTGRES_URL` is explicitly set to `skip` (or empty), a developer's
/// deliberate opt-out. Panics when the server (named or default) does not answer: a missing database
/// must fail loudly, never silently skip the tests that need it.
pub async fn test_postgres_url() -> Option<String> {
    let url = match std::env::var("KLSYNC_TEST_POSTGRES_URL") {
        Ok(url) if url.trim().is_empty() || url.trim() == "skip" => return None,
        Ok(url) => url,
        Err(_) => DEFAULT_TEST_POSTGRES_URL.to_string(),
    };
    let attempt = tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(&url)).await;
    match attempt {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Some(url)
        }
        Ok(Err(error)) => panic!(
            "test PostgreSQL {}: {error} (start PostgreSQL, or set KLSYNC_TEST_POSTGRES_URL)",
            redact_url(&url)
        ),
        Err(_) => panic!("test PostgreSQL {}: timed out", redact_url(&url)),
    }
}

/// A freshly created schema in the test server, dropped (with everything in it) on drop.
#[derive(Debug)]
pub struct TestPostgres {
    server: String,
    schema: String,
    url: String,
}

impl TestPostgres {
    /// Create a schema `klsync_t_<uuid>`; `None` when there is no test server (see
    /// [`test_postgres_url`]).
    pub async fn create() -> Option<TestPostgres> {
        let server = test_postgres_url().await?;
        let schema = format!("klsync_t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&server)
            .await
            .expect("connect to the test PostgreSQL");
        // The name is generated above from hex digits: nothing to inject.
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .await
            .expect("create a test schema");
        let _ = conn.close().await;
        let mut url = url::Url::parse(&server).expect("test PostgreSQL URL");
        url.query_pairs_mut()
            .append_pair("options", &format!("-c search_path={schema}"));
        Some(TestPostgres {
            url: url.to_string(),
            server,
            schema,
        })
    }

    /// A URL whose connections use only this schema.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The schema's name.
    pub fn schema(&self) -> &str {
        &self.schema
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let server = self.server.clone();
        let drop_schema = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema);
        // Drop cannot await, and may run inside a runtime: use a thread with a runtime of its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async move {
                let mut conn = PgConnection::connect(&server).await.ok()?;
                conn.execute(sqlx::AssertSqlSafe(drop_schema)).await.ok()?;
                conn.close().await.ok()
            })
        });
        if cleanup.join().ok().flatten().is_none() {
            eprintln!("could not drop test schema {}", self.schema);
        }
    }
}
