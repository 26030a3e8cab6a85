//! One emulator, one project and its data: the setup most end-to-end tests repeat. The real
//! `klsync` binary runs against them with the project's directory, the emulator's address and
//! key, a SQLite data database and a SQLite state of its own, and nothing from the caller's
//! environment.

use std::process::Command;

use klsync::emulator::{self, EmulatorConfig, EmulatorHandle};

use super::project::{Finished, TempProject, klsync, run};

/// The key every scenario's emulator accepts unless the config names others.
pub const KEY: &str = "pk_emulator";

pub struct Scenario {
    pub emulator: EmulatorHandle,
    pub project: TempProject,
    /// The API key commands send.
    pub key: String,
    files: tempfile::TempDir,
}

impl Scenario {
    /// An emulator started with `config` and a project of `manifests` (name, YAML).
    pub async fn start(config: EmulatorConfig, manifests: &[(&str, &str)]) -> Scenario {
        let key = config
            .api_keys
            .first()
            .map(|key| key.split(':').next().unwrap_or(key).to_owned())
            .unwrap_or_else(|| KEY.to_owned());
        let emulator = emulator::start(config).await.expect("start the emulator");
        Scenario {
            emulator,
            project: TempProject::new(manifests),
            key,
            files: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// The data database's URL (`DATABASE_URL` of every command).
    pub fn data_url(&self) -> String {
        format!(
            "sqlite://{}?mode=rwc",
            self.files.path().join("data.db").display()
        )
    }

    /// A path in the scenario's own scratch directory (outside the project), e.g. a saved plan.
    pub fn scratch(&self, name: &str) -> std::path::PathBuf {
        self.files.path().join(name)
    }

    /// Runs `sql` on the data database (tables, rows, changes between runs).
    pub async fn data(&self, sql: &str) {
        let pool = sqlx::SqlitePool::connect(&self.data_url())
            .await
            .expect("data");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&pool)
            .await
            .expect("data SQL");
        pool.close().await;
    }

    /// `klsync ARGS -C PROJECT` with this scenario's environment, to add to before running.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = klsync();
        command
            .args(args)
            .arg("-C")
            .arg(self.project.path())
            .env("KLAVIYO_API_KEY", &self.key)
            .env("KLAVIYO_BASE_URL", &self.emulator.base_url)
            .env(
                "KLSYNC_STATE_URL",
                format!("sqlite://{}", self.files.path().join("state.db").display()),
            )
            .env("DATABASE_URL", self.data_url());
        command
    }

    /// Runs `klsync ARGS -C PROJECT` to completion.
    pub fn run(&self, args: &[&str]) -> Finished {
        run(&mut self.command(args))
    }

    /// Runs it with the key `key` instead.
    pub fn run_as(&self, key: &str, args: &[&str]) -> Finished {
        run(self.command(args).env("KLAVIYO_API_KEY", key))
    }
}
