//! `klsync demo`: the whole workflow against an emulator started in this process, on a copy of
//! the `examples/shop` project embedded in the binary (so it works from any directory), with
//! state in a temporary SQLite file. It never reads the user's Klaviyo, state or database
//! settings from the environment, so it can never touch a real account or database.
//!
//! The project's data syncs (`profiles:`, `members:`) read a temporary SQLite database seeded
//! from `examples/shop/demo-data.sql`: 200 sample customers, two of them with invalid emails.

use std::path::{Path, PathBuf};

use super::apply::apply_command;
use super::plan::{plan_command, print_stdout, runtime};
use crate::cli::{
    ApplyArgs, DemoArgs, DiagnosticFormat, PlanArgs, PlanFormat, ProjectArgs, ValidateArgs,
};
use crate::context::Pacing;
use crate::emulator::{self, EmulatorConfig, RateLimitMode};
use crate::error::{Error, ExitStatus};
use crate::manifest;
use crate::run::Output;

/// The demo project: `examples/shop`, as committed.
const SHOP: &[(&str, &str)] = &[
    (
        "klsync.yaml",
        include_str!("../../examples/shop/klsync.yaml"),
    ),
    ("lists.yaml", include_str!("../../examples/shop/lists.yaml")),
    (
        "profiles.yaml",
        include_str!("../../examples/shop/profiles.yaml"),
    ),
    (
        "queries.yaml",
        include_str!("../../examples/shop/queries.yaml"),
    ),
    (
        "segments.yaml",
        include_str!("../../examples/shop/segments.yaml"),
    ),
    ("tags.yaml", include_str!("../../examples/shop/tags.yaml")),
];

/// The sample shop database (SQLite), for the project's data syncs.
const DEMO_DATA: &str = include_str!("../../examples/shop/demo-data.sql");

/// The key the demo's emulator accepts.
const DEMO_API_KEY: &str = "pk_emulator";

/// Run `klsync demo`.
pub fn run(_args: &DemoArgs, output: &Output) -> Result<ExitStatus, Error> {
    let dir = TempDir::create()?;
    let result = runtime()?.block_on(demo(dir.path(), output));
    drop(dir);
    result
}

async fn demo(dir: &Path, output: &Output) -> Result<ExitStatus, Error> {
    for (name, text) in SHOP {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|source| Error::Io { path, source })?;
    }
    // At Klaviyo's published limits the first apply takes about 20 s (tags allow 60 requests a
    // minute); a first look should not, so limits are off on both sides and the plan states
    // the real cost.
    let emulator = emulator::start(EmulatorConfig {
        rate_limits: RateLimitMode::Off,
        api_keys: vec![DEMO_API_KEY.to_owned()],
        ..EmulatorConfig::default()
    })
    .await
    .map_err(|err| Error::Emulator(err.to_string()))?;
    let result = steps(dir, &emulator.base_url, output).await;
    emulator.shutdown().await;
    result
}

/// Create the sample shop database at `path` and return its URL.
async fn seed_database(path: &Path) -> Result<String, Error> {
    use sqlx::Connection as _;
    let failed = |err: sqlx::Error| {
        Error::Config(format!(
            "cannot create the demo database {}: {err}",
            path.display()
        ))
    };
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true);
    let mut connection = sqlx::SqliteConnection::connect_with(&options)
        .await
        .map_err(failed)?;
    sqlx::raw_sql(DEMO_DATA)
        .execute(&mut connection)
        .await
        .map_err(failed)?;
    connection.close().await.map_err(failed)?;
    Ok(format!("sqlite://{}", path.display()))
}

async fn steps(dir: &Path, base_url: &str, output: &Output) -> Result<ExitStatus, Error> {
    let settings = match manifest::load_project(dir) {
        Ok(project) => project.settings,
        Err(err) => return Err(err.into()),
    };
    let database_path = dir.join("shop.db");
    let database_url = seed_database(&database_path).await?;
    let key_var = settings.klaviyo.api_key_env.clone();
    let url_var = settings.klaviyo.base_url_env.clone();
    let database_var = settings.database.url_env.clone();
    let base = base_url.to_owned();
    // Only the demo's own values: the state URL variable stays unset, so state is the SQLite
    // file inside the temporary project.
    let env = move |name: &str| {
        if name == key_var {
            Some(DEMO_API_KEY.to_owned())
        } else if name == url_var {
            Some(base.clone())
        } else if name == database_var {
            Some(database_url.clone())
        } else {
            None
        }
    };
    let project = ProjectArgs {
        dir: dir.to_path_buf(),
    };
    let plan_file = dir.join("demo.plan.json");
    print_stdout(&format!(
        "klsync demo: a Klaviyo emulator is running in this process at {base_url} \
         (no real account is touched).\n\
         Project: examples/shop, copied to {}\n\
         State: a temporary SQLite file, {}\n\
         Data: a sample shop database (SQLite, 200 customers) for profiles: and members:, {}\n\
         Rate limits are off in the demo; each plan states what it costs at Klaviyo's limits.\n",
        dir.display(),
        dir.join(".klsync/state.db").display(),
        database_path.display()
    ));

    heading("1. klsync validate");
    super::validate::run(
        &ValidateArgs {
            project: project.clone(),
            format: DiagnosticFormat::Text,
        },
        output,
    )?;

    heading("2. klsync plan --out demo.plan.json");
    plan_command(
        &PlanArgs {
            project: project.clone(),
            out: Some(plan_file.clone()),
            format: PlanFormat::Text,
            detailed_exitcode: false,
            refresh: None,
            target: Vec::new(),
            resync: Vec::new(),
        },
        output,
        &env,
        Pacing::Off,
    )
    .await?;

    heading("3. klsync apply demo.plan.json");
    let applied = apply_command(
        &ApplyArgs {
            project: project.clone(),
            plan_file: Some(plan_file),
            auto_approve: true,
            allow_destroy: false,
            max_age: None,
            force: false,
            lock_timeout: std::time::Duration::ZERO,
            target: Vec::new(),
            resync: Vec::new(),
        },
        output,
        &env,
        Pacing::Off,
        false,
    )
    .await?;
    if applied != ExitStatus::Success {
        return Ok(applied);
    }

    heading("4. klsync plan --detailed-exitcode (again)");
    let again = plan_command(
        &PlanArgs {
            project,
            out: None,
            format: PlanFormat::Text,
            detailed_exitcode: true,
            refresh: None,
            target: Vec::new(),
            resync: Vec::new(),
        },
        output,
        &env,
        Pacing::Off,
    )
    .await?;
    print_stdout(NEXT_STEPS);
    Ok(again)
}

fn heading(text: &str) {
    print_stdout(&format!("\n== {text}\n"));
}

const NEXT_STEPS: &str = "
Nothing is left to do: Klaviyo matches the manifests.

Point the same commands at your own account:
  export KLAVIYO_API_KEY=pk_...        # a private API key (lists, segments, tags: read and write)
  klsync validate -C your-project      # a directory with klsync.yaml and *.yaml manifests
  klsync plan -C your-project --out plan.json
  klsync apply -C your-project plan.json
Profile properties and list members come from SQL: set the variable klsync.yaml names in
database.url_env (DATABASE_URL by default) to postgres://... or sqlite:... .
State is kept in your-project/.klsync/state.db; in CI set KLSYNC_STATE_URL=postgres://... so
every runner shares it (see examples/ci). To experiment without an account, run
`klsync emulator` and set KLAVIYO_BASE_URL=http://127.0.0.1:8787 KLAVIYO_API_KEY=pk_emulator.
";

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn create() -> Result<TempDir, Error> {
        let path =
            std::env::temp_dir().join(format!("klsync-demo-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        Ok(TempDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
