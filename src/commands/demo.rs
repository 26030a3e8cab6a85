//! `klsync demo`: the whole workflow against an emulator started in this process, on a copy of
//! the `examples/shop` project embedded in the binary (so it works from any directory), with
//! state in a temporary SQLite file. It never reads the user's Klaviyo, state or database
//! settings from the environment, so it can never touch a real account or database.
//!
//! The project's data syncs (`profiles:`, `members:`) read a temporary SQLite database seeded
//! from `examples/shop/demo-data.sql`: 200 sample customers, two of them with invalid emails.

use std::path::{Path, PathBuf};

use super::apply::apply_command;
use super::plan::plan_command;
use super::session::{print_stdout, runtime};
use crate::cli::{
    ApplyArgs, DemoArgs, DiagnosticFormat, PlanArgs, PlanFormat, ProjectArgs, ValidateArgs,
};
use crate::context::Pacing;
use crate::emulator::{self, EmulatorConfig, RateLimitMode};
use crate::error::{Error, ExitStatus};
use crate::manifest;
use crate::render::Detail;
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

/// The emulator's account, saved into a kept demo directory (`--keep`) at exit.
const EMULATOR_STATE_FILE: &str = "emulator-state.json";

/// Run `klsync demo`.
pub fn run(args: &DemoArgs, output: &Output, verbose: bool) -> Result<ExitStatus, Error> {
    let dir = match &args.keep {
        Some(keep) => DemoDir::kept(keep)?,
        None => DemoDir::temporary()?,
    };
    // A first look shows a summary (`Detail::BRIEF`, and apply lists only failed changes);
    // `-v` shows everything.
    let detail = if verbose { Detail::FULL } else { Detail::BRIEF };
    let result = runtime()?.block_on(demo(&dir, output, detail));
    if result
        .as_ref()
        .is_ok_and(|status| *status == ExitStatus::Success)
        && !output.quiet
    {
        print_stdout(&closing_words(&dir));
    }
    drop(dir);
    result
}

async fn demo(dir: &DemoDir, output: &Output, detail: Detail) -> Result<ExitStatus, Error> {
    for (name, text) in SHOP {
        let path = dir.path().join(name);
        std::fs::write(&path, text).map_err(|source| Error::Io { path, source })?;
    }
    // At Klaviyo's published limits the first apply takes about 20 s (tags allow 60 requests a
    // minute); a first look should not, so limits are off on both sides and the plan states
    // the real cost.
    let emulator = emulator::start(EmulatorConfig {
        rate_limits: RateLimitMode::Off,
        api_keys: vec![DEMO_API_KEY.to_owned()],
        state_file: dir.kept.then(|| dir.path().join(EMULATOR_STATE_FILE)),
        ..EmulatorConfig::default()
    })
    .await
    .map_err(|err| Error::Emulator(err.to_string()))?;
    let result = steps(dir, &emulator.base_url, output, detail).await;
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

async fn steps(
    demo_dir: &DemoDir,
    base_url: &str,
    output: &Output,
    detail: Detail,
) -> Result<ExitStatus, Error> {
    let dir = demo_dir.path();
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
        "klsync demo: a Klaviyo emulator runs in this process at {base_url} (rate limits off; each\n\
         plan states its cost at Klaviyo's). No real account is touched. The example shop project,\n\
         its state and a sample database of 200 customers are in {} ({}).\n",
        dir.display(),
        if demo_dir.kept {
            "kept"
        } else {
            "removed at exit; --keep DIR keeps them"
        },
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
        &plan_args(project.clone(), Some(plan_file.clone()), false, detail),
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
            detail,
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
        &plan_args(project, None, true, detail),
        output,
        &env,
        Pacing::Off,
    )
    .await?;
    Ok(again)
}

/// The arguments of a demo step's `klsync plan` (text output, the whole project, no refresh).
fn plan_args(
    project: ProjectArgs,
    out: Option<PathBuf>,
    detailed_exitcode: bool,
    detail: Detail,
) -> PlanArgs {
    PlanArgs {
        project,
        out,
        format: PlanFormat::Text,
        detailed_exitcode,
        refresh: None,
        detail,
        target: Vec::new(),
        resync: Vec::new(),
    }
}

fn heading(text: &str) {
    print_stdout(&format!("\n== {text}\n"));
}

/// What the demo ends with: only what still exists after it, and how to go on.
fn closing_words(dir: &DemoDir) -> String {
    let mut text = String::from("\nNothing is left to do: Klaviyo matches the manifests.\n");
    if dir.kept {
        let dir = dir.path().display();
        text.push_str(&format!(
            "\nKept in {dir}: the project, its state (.klsync/state.db), the sample database\n\
             (shop.db) and the emulator's account ({EMULATOR_STATE_FILE}). Carry on with it:\n  \
             klsync emulator --state-file {dir}/{EMULATOR_STATE_FILE} &\n  \
             export KLAVIYO_BASE_URL=http://127.0.0.1:8787 KLAVIYO_API_KEY={DEMO_API_KEY} \
             SHOP_DATABASE_URL=sqlite://{dir}/shop.db\n  \
             klsync plan -C {dir}\n"
        ));
    } else {
        text.push_str(
            "The demo's project, state and emulator were temporary and are gone (`klsync demo --keep DIR`\n\
             keeps them; `-v` shows every change).\n",
        );
    }
    text.push_str(
        "\nYour own account:\n  \
         klsync init my-klaviyo                # or: klsync import --out my-klaviyo\n  \
         export KLAVIYO_API_KEY=pk_...         # a private API key\n  \
         klsync plan -C my-klaviyo             # then: klsync apply -C my-klaviyo\n",
    );
    text
}

/// Where the demo project lives: a temporary directory removed at exit, or `--keep DIR`.
struct DemoDir {
    path: PathBuf,
    kept: bool,
}

impl DemoDir {
    fn temporary() -> Result<DemoDir, Error> {
        let path =
            std::env::temp_dir().join(format!("klsync-demo-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        Ok(DemoDir { path, kept: false })
    }

    /// `dir`, which must be new or empty: the demo never writes over a user's files.
    fn kept(dir: &Path) -> Result<DemoDir, Error> {
        let io = |source| Error::Io {
            path: dir.to_path_buf(),
            source,
        };
        if dir.exists() && std::fs::read_dir(dir).map_err(io)?.next().is_some() {
            return Err(Error::Config(format!(
                "--keep {}: the directory is not empty; give a new or empty directory",
                dir.display()
            )));
        }
        std::fs::create_dir_all(dir).map_err(io)?;
        Ok(DemoDir {
            path: dir.to_path_buf(),
            kept: true,
        })
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DemoDir {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
