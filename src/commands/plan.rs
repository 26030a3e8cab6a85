//! `klsync plan`: show what `apply` would change in Klaviyo and what it costs.
//!
//! The plan goes to stdout in the chosen format; `--out FILE` also saves it as JSON for
//! `klsync apply FILE`. Exit status: 0, or with `--detailed-exitcode` 0 for no changes and 2 for
//! changes; 1 on any error. Nothing is written to Klaviyo or to klsync's state.

use std::io::Write as _;
use std::path::Path;

use chrono::{SecondsFormat, Utc};

use crate::apply::managed_state;
use crate::cli::{PlanArgs, PlanFormat};
use crate::context::{self, EnvLookup, Pacing};
use crate::error::{Error, ExitStatus};
use crate::klaviyo::KlaviyoClient;
use crate::klaviyo::observe::read_live;
use crate::manifest::diagnostic::{self, Severity};
use crate::manifest::{self, Project, ProjectError};
use crate::model::{DesiredState, LiveState};
use crate::plan::{self, Plan, PlanMeta};
use crate::render;
use crate::run::Output;
use crate::state::{ManagedRow, StateStore};

/// Run `klsync plan`.
pub fn run(args: &PlanArgs, output: &Output) -> Result<ExitStatus, Error> {
    runtime()?.block_on(plan_command(
        args,
        output,
        &context::process_env,
        Pacing::Published,
    ))
}

/// The async runtime commands that talk to Klaviyo and the state database run on.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|err| Error::Config(format!("cannot start the async runtime: {err}")))
}

/// `klsync plan` with the environment read through `env`.
pub(crate) async fn plan_command(
    args: &PlanArgs,
    output: &Output,
    env: EnvLookup<'_>,
    pacing: Pacing,
) -> Result<ExitStatus, Error> {
    let project = load(&args.project.dir, output)?;
    let connection = Connection::open(&project, env, pacing).await?;
    let planned = connection.plan(&project).await;
    connection.store.close().await;
    let planned = planned?;
    let plan = &planned.plan;
    let rendered = match args.format {
        PlanFormat::Text => render::text(plan, output.color),
        PlanFormat::Markdown => render::markdown(plan),
        PlanFormat::Json => render::json(plan),
    };
    print_stdout(&rendered);
    if let Some(out) = &args.out {
        write_atomically(out, &render::json(plan))?;
        if !output.quiet {
            eprintln!(
                "Saved the plan to {0}; apply exactly it with `klsync apply {0}`.",
                out.display()
            );
        }
    }
    Ok(if args.detailed_exitcode && !plan.is_empty() {
        ExitStatus::Changes
    } else {
        ExitStatus::Success
    })
}

/// Load and validate the project, printing its problems as `klsync validate` does.
pub(crate) fn load(dir: &Path, output: &Output) -> Result<Project, Error> {
    match manifest::load_project(dir) {
        Ok(project) => {
            if !output.quiet && !project.warnings.is_empty() {
                eprint!(
                    "{}",
                    diagnostic::render_text(&project.warnings, output.color)
                );
            }
            Ok(project)
        }
        Err(ProjectError::Invalid(diagnostics)) => {
            eprint!("{}", diagnostic::render_text(&diagnostics, output.color));
            Err(Error::InvalidManifests {
                count: diagnostic::count(&diagnostics, Severity::Error),
            })
        }
        Err(other) => Err(other.into()),
    }
}

/// The Klaviyo client and state database of a project.
pub(crate) struct Connection {
    /// The Klaviyo client.
    pub client: KlaviyoClient,
    /// klsync's state.
    pub store: StateStore,
}

/// A plan and what it was made from.
pub(crate) struct Planned {
    /// The plan.
    pub plan: Plan,
    /// What the manifests ask for.
    pub desired: DesiredState,
    /// Klaviyo as read.
    pub live: LiveState,
    /// klsync's managed rows as read.
    pub managed: Vec<ManagedRow>,
}

impl Connection {
    /// Build the client and open the state database named by the project's settings.
    pub(crate) async fn open(
        project: &Project,
        env: EnvLookup<'_>,
        pacing: Pacing,
    ) -> Result<Connection, Error> {
        let mut config = context::client_config(&project.settings, env)?;
        if pacing == Pacing::Off {
            config.rate_limit_factor = None;
        }
        let client = context::client(config)?;
        let url = context::state_url(&project.settings, &project.root, env);
        let store = context::connect_state(&url).await?;
        Ok(Connection { client, store })
    }

    /// Read klsync's state and Klaviyo, and plan.
    pub(crate) async fn plan(&self, project: &Project) -> Result<Planned, Error> {
        let desired = DesiredState::from_manifest(&project.merged());
        let managed = self.store.managed().await?;
        let live = read_live(&self.client).await?;
        let meta = PlanMeta {
            created_at: Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
            manifest_digest: project.digest(),
            klsync_version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        let plan = plan::diff(&desired, &live, &managed_state(&managed)?, meta)?;
        Ok(Planned {
            plan,
            desired,
            live,
            managed,
        })
    }
}

/// Write `text` to `path` via a temporary file in the same directory and a rename, so a reader
/// never sees half a plan.
fn write_atomically(path: &Path, text: &str) -> Result<(), Error> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plan".to_owned());
    let temp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&temp, text).map_err(io)?;
    std::fs::rename(&temp, path).map_err(|err| {
        let _ = std::fs::remove_file(&temp);
        io(err)
    })
}

/// Print to stdout; a closed pipe (`klsync plan | head`) is not worth an error.
pub(crate) fn print_stdout(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_plan_replaces_the_file_whole_and_leaves_no_temporary_file() {
        let dir = std::env::temp_dir().join(format!("klsync-plan-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("plan.json");
        std::fs::write(&path, "old").unwrap();
        write_atomically(&path, "{\"new\": true}\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"new\": true}\n");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("plan.json")]);
        let missing = dir.join("no-such-dir/plan.json");
        assert!(matches!(
            write_atomically(&missing, "x"),
            Err(Error::Io { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
