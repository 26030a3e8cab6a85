//! Where an end-to-end scenario keeps klsync's state, and running a scenario on both backends.

use klsync::state::testing::TestPostgres;

use super::project::Finished;

/// klsync's state database for one scenario: a temporary SQLite file or a fresh PostgreSQL schema.
pub enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres(TestPostgres),
}

impl Backend {
    /// A temporary SQLite state.
    pub fn sqlite() -> Backend {
        Backend::Sqlite(tempfile::tempdir().expect("tempdir"))
    }

    /// A schema of its own in the test PostgreSQL.
    pub async fn postgres() -> Backend {
        Backend::Postgres(
            TestPostgres::create()
                .await
                .expect("KLSYNC_TEST_POSTGRES_URL=skip is not allowed for these tests"),
        )
    }

    /// The `KLSYNC_STATE_URL` for this backend.
    pub fn url(&self) -> String {
        match self {
            Backend::Sqlite(dir) => format!("sqlite://{}", dir.path().join("state.db").display()),
            Backend::Postgres(pg) => pg.url().to_owned(),
        }
    }
}

/// Asserts the exit code, showing both output streams when it differs.
pub fn ok(finished: &Finished, code: i32) {
    assert_eq!(
        finished.code, code,
        "stdout:\n{}\nstderr:\n{}",
        finished.stdout, finished.stderr
    );
}

/// Runs each `async fn scenario(Backend)` once with SQLite state and once with PostgreSQL state.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(crate::support::backend::Backend::sqlite()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(crate::support::backend::Backend::postgres().await).await;
            }
        }
    )*};
}
pub(crate) use on_both_backends;
