//! `klsync drift`: compare Klaviyo with what klsync last applied, without changing anything.
//!
//! Read-only: nothing is sent to Klaviyo but reads, and no row of klsync's state is written. A
//! missing SQLite state file is reported, never created. Exit status: 0 no drift, 2 drift, 1 on
//! any error.
//!
//! `--data` also reads back what the data syncs recorded (`sync::check_data`, the mechanism
//! `plan --refresh=full` plans from), after printing what that costs. It needs no database:
//! it compares klsync's records with Klaviyo. `--members` reads each list with `members:` whole
//! through the same mechanism (`CheckScope::whole_lists`); alone it checks no profiles.

use std::path::PathBuf;
use std::str::FromStr as _;

use super::session::{list_ids, load, print_stdout, runtime};
use crate::apply::managed_state;
use crate::cli::{DriftArgs, DriftFormat};
use crate::context::{self, EnvLookup, Pacing};
use crate::drift::{self, DriftReport};
use crate::error::{Error, ExitStatus};
use crate::klaviyo::KlaviyoClient;
use crate::klaviyo::observe::read_live;
use crate::manifest::Project;
use crate::model::DesiredState;
use crate::run::Output;
use crate::settings::redact_url;
use crate::state::StateStore;
use crate::sync::{self, CheckScope, DataCheck};

/// Run `klsync drift`.
pub fn run(args: &DriftArgs, output: &Output) -> Result<ExitStatus, Error> {
    runtime()?.block_on(drift_command(
        args,
        output,
        &context::process_env,
        Pacing::Published,
    ))
}

/// `klsync drift` with the environment read through `env`.
pub(crate) async fn drift_command(
    args: &DriftArgs,
    output: &Output,
    env: EnvLookup<'_>,
    pacing: Pacing,
) -> Result<ExitStatus, Error> {
    let project = load(&args.project.dir, output)?;
    let config = context::client_config(&project.settings, env)?;
    let client = context::client(config, pacing, output)?;
    let url = context::state_url(&project.settings, &project.root, env);
    if let Some(path) = sqlite_file(&url)
        && !path.exists()
    {
        return Err(Error::Config(format!(
            "no klsync state at {}: nothing was applied or imported for this project yet, so nothing can have drifted (set {} if the state lives elsewhere)",
            redact_url(&url),
            project.settings.state.url_env
        )));
    }
    let store = context::connect_state(&url).await?;
    let read = async {
        let managed = managed_state(&store.managed().await?)?;
        // Its cost is printed before anything is read from Klaviyo.
        let scope = CheckScope {
            profiles: args.data,
            whole_lists: args.members,
        };
        let data = match args.data || args.members {
            true => Some(check_data_syncs(&project, &store, &client, output, scope).await?),
            false => None,
        };
        let reading = output.progress().spinner("Reading Klaviyo");
        let live = read_live(&client).await;
        reading.finish_and_clear();
        Ok::<_, Error>((managed, data, live?))
    }
    .await;
    store.close().await;
    output.metrics.add_client(&client.metrics());
    let (managed, data, live) = read?;
    let declared = DesiredState::from_manifest(&project.merged());
    let mut report = drift::detect(&managed, &live, &declared, args.include_unmanaged);
    report.data = data;
    print_stdout(&render(&report, args.format));
    Ok(if report.has_drift() {
        ExitStatus::Changes
    } else {
        ExitStatus::Success
    })
}

/// The full check of the project's data syncs (`drift --data`/`--members`, `plan
/// --refresh=full`): prints its cost first (unless quiet), then reads back what `scope` says.
pub(crate) async fn check_data_syncs(
    project: &Project,
    store: &StateStore,
    client: &KlaviyoClient,
    output: &Output,
    scope: CheckScope,
) -> Result<DataCheck, Error> {
    let merged = project.merged();
    let lists = list_ids(&store.managed().await?);
    let cost = sync::check_cost(&merged, &lists, store, scope).await?;
    if !output.quiet {
        eprintln!("{}", cost.sentence());
    }
    let reading = output
        .progress()
        .spinner("Reading back the data syncs from Klaviyo");
    let check = sync::check_data(&merged, &lists, store, client, scope).await;
    reading.finish_and_clear();
    Ok(check?)
}

/// The report in the chosen format.
pub fn render(report: &DriftReport, format: DriftFormat) -> String {
    match format {
        DriftFormat::Text => drift::render_text(report),
        DriftFormat::Json => drift::render_json(report),
    }
}

/// The file an `sqlite:` state URL names (`None` for other databases and in-memory SQLite).
fn sqlite_file(url: &str) -> Option<PathBuf> {
    if !url.starts_with("sqlite:") {
        return None;
    }
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url).ok()?;
    let file = options.get_filename();
    (!file.to_string_lossy().starts_with("file:") && file != std::path::Path::new(":memory:"))
        .then(|| file.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sqlite_files_are_checked_for_existence() {
        assert_eq!(
            sqlite_file("sqlite:///p/.klsync/state.db"),
            Some(PathBuf::from("/p/.klsync/state.db"))
        );
        assert_eq!(sqlite_file("postgres://db/state"), None);
    }
}
