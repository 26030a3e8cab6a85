//! `klsync import --out DIR`: write manifests for what exists in Klaviyo and record it as
//! managed, so that `klsync plan` right after shows no changes.
//!
//! Order matters for safety: existing files are checked before anything is read, the apply lock
//! is held from reading the state to writing it (`--lock-timeout` waits for it), and the state
//! is only written once the written project validates. Nothing is ever sent to Klaviyo. Exit
//! status 0, or 1 on any error; Ctrl-C or SIGTERM while Klaviyo is read stops it with nothing
//! written (exit 130 or 143, recorded as `interrupted`).

use std::collections::BTreeSet;
use std::path::Path;

use chrono::{SecondsFormat, Utc};
use serde_json::json;

use super::session::{AuditedRun, Locked, LockedRun, print_stdout, runtime, write_atomically};
use crate::apply::managed_state;
use crate::cli::{ImportArgs, ImportKindArg};
use crate::context::{self, EnvLookup, Pacing};
use crate::error::{Error, ExitStatus};
use crate::import::{self, ImportKind, Imported, MANIFEST_SCHEMA_FILE, SETTINGS_SCHEMA_FILE};
use crate::klaviyo::KlaviyoClient;
use crate::klaviyo::observe::read_live;
use crate::manifest::diagnostic::{self, Severity};
use crate::manifest::settings::commented_settings_file;
use crate::manifest::{self, ProjectError, ProjectSettings, SETTINGS_FILE};
use crate::model::ResourceKind;
use crate::plan::PlanMeta;
use crate::run::Output;
use crate::state::{
    ManagedRow, RunId, RunOutcome, RunStart, StateStore, detect_actor, detect_git_commit,
};

/// Run `klsync import`.
pub fn run(args: &ImportArgs, output: &Output) -> Result<ExitStatus, Error> {
    runtime()?.block_on(async {
        crate::interrupt::listen(output.quiet);
        import_command(args, output, &context::process_env, Pacing::Published).await
    })
}

/// The kinds `--only` selects; all of them without it.
pub fn selected_kinds(only: &[ImportKindArg]) -> BTreeSet<ImportKind> {
    if only.is_empty() {
        return ImportKind::ALL.into_iter().collect();
    }
    only.iter()
        .map(|kind| match kind {
            ImportKindArg::Tags => ImportKind::Tags,
            ImportKindArg::Lists => ImportKind::Lists,
            ImportKindArg::Segments => ImportKind::Segments,
        })
        .collect()
}

/// `klsync import` with the environment read through `env`.
pub(crate) async fn import_command(
    args: &ImportArgs,
    output: &Output,
    env: EnvLookup<'_>,
    pacing: Pacing,
) -> Result<ExitStatus, Error> {
    let dir = args.out.as_path();
    let kinds = selected_kinds(&args.only);
    let existing: Vec<String> = kinds
        .iter()
        .map(|kind| kind.file_name())
        .filter(|name| dir.join(name).exists())
        .map(str::to_owned)
        .collect();
    if !existing.is_empty() && !args.force {
        return Err(Error::Config(format!(
            "{}: {} already exist(s); import never overwrites manifests unless --force is given",
            dir.display(),
            existing.join(", ")
        )));
    }
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let settings = settings(dir)?;
    let config = context::client_config(&settings, env)?;
    let client = context::client(config, pacing, output)?;
    let url = context::state_url(&settings, dir, env);
    let store = context::connect_state(&url).await?;
    let start = RunStart {
        command: "import".to_owned(),
        actor: detect_actor(),
        git_commit: detect_git_commit(dir),
        manifest_digest: None,
        plan_id: None,
    };
    let result = match AuditedRun::begin(&store, start).await {
        Ok(audited) => {
            let work = Work {
                store: &store,
                client: &client,
                run_id: audited.run_id,
                kinds: &kinds,
                dir,
                force: args.force,
            };
            audited.locked(&work, args.lock_timeout, output.quiet).await
        }
        Err(err) => Err(err),
    };
    output.metrics.add_client(&client.metrics());
    let location = store.location().to_owned();
    store.close().await;
    if let Some(stop) = stopped_by(&result) {
        return Ok(interrupted(stop));
    }
    let Some((imported, forgotten)) = result? else {
        return Err(Error::Config(
            "import stopped before it took the lock".to_owned(),
        ));
    };
    report(output, dir, &kinds, &imported, &forgotten, &location);
    Ok(ExitStatus::Success)
}

/// The signal that cut the import short: it stopped waiting for the lock, or a read was refused
/// because of it.
fn stopped_by<T>(result: &Result<Option<T>, Error>) -> Option<crate::interrupt::Stop> {
    let cut_short = match result {
        Ok(done) => done.is_none(),
        Err(err) => err.is_interruption(),
    };
    crate::interrupt::requested().filter(|stop| cut_short && stop.signal_name().is_some())
}

/// Say that the import stopped before it wrote anything.
fn interrupted(stop: crate::interrupt::Stop) -> ExitStatus {
    eprintln!(
        "Import interrupted by {}: nothing was written or recorded. Run `klsync import` again.",
        stop.signal_name().unwrap_or("a signal")
    );
    stop.exit_status()
}

/// One import, with everything it needs.
struct Work<'a> {
    store: &'a StateStore,
    client: &'a KlaviyoClient,
    run_id: RunId,
    kinds: &'a BTreeSet<ImportKind>,
    dir: &'a Path,
    force: bool,
}

/// Import holds the apply lock from reading the state to writing it, so an import never
/// interleaves with an apply; it sends nothing, so a stop only makes its reads refuse.
impl LockedRun for Work<'_> {
    type Value = (Imported, Vec<String>);
    /// `None` when a stop came while waiting for the lock.
    type Output = Option<(Imported, Vec<String>)>;
    const STOPS_WITHIN_GRACE: bool = false;

    async fn work(&self) -> Result<Self::Value, Error> {
        self.import().await
    }

    async fn conclude(&self, locked: Locked<Self::Value>) -> Result<Self::Output, Error> {
        match locked {
            Locked::NotTaken => Ok(None),
            Locked::Taken { result, .. } => result.transpose(),
        }
    }

    fn audit(&self, result: &Result<Self::Output, Error>) -> (RunOutcome, serde_json::Value) {
        match (result, stopped_by(result)) {
            (_, Some(stop)) => (
                RunOutcome::Interrupted,
                json!({"signal": stop.signal_name()}),
            ),
            (Ok(Some((imported, forgotten))), None) => (
                RunOutcome::Success,
                json!({
                    "imported": imported.resources.len(),
                    "skipped": imported.skipped.len(),
                    "forgotten": forgotten.len(),
                }),
            ),
            (Err(err), None) => (RunOutcome::Failed, json!({"error": err.to_string()})),
            (Ok(None), None) => (RunOutcome::Failed, json!({})),
        }
    }
}

impl Work<'_> {
    async fn import(&self) -> Result<(Imported, Vec<String>), Error> {
        let live = read_live(self.client).await?;
        let rows = self.store.managed().await?;
        let imported = import::import(&live, &managed_state(&rows)?, self.kinds);
        write_project(self.dir, &imported, self.force)?;
        let project = load_written(self.dir)?;
        let meta = PlanMeta {
            created_at: Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
            manifest_digest: project.digest(),
            klsync_version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        let records = import::managed_records(&imported, &live, meta)?;
        let forgotten = record_state(
            self.store,
            self.run_id,
            self.kinds,
            &imported,
            &records,
            &rows,
            &live,
        )
        .await?;
        Ok((imported, forgotten))
    }
}

/// The settings of `dir`'s `klsync.yaml`, or the defaults when there is none yet.
pub(crate) fn settings(dir: &Path) -> Result<ProjectSettings, Error> {
    let path = dir.join(SETTINGS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            commented_settings_file(SETTINGS_SCHEMA_FILE)
        }
        Err(source) => return Err(Error::Io { path, source }),
    };
    let invalid = |reason: String| {
        Error::Config(format!(
            "{}: {reason}; run `klsync validate -C {}` for details",
            path.display(),
            dir.display()
        ))
    };
    let (value, _) = manifest::yaml::parse(&text).map_err(|err| invalid(err.message))?;
    serde_json::from_value(value).map_err(|err| invalid(err.to_string()))
}

/// Write the manifests, `klsync.yaml` when missing and the schema files the modelines name.
fn write_project(dir: &Path, imported: &Imported, force: bool) -> Result<(), Error> {
    for file in &imported.files {
        write_atomically(&dir.join(file.name), &file.text)?;
    }
    let settings_path = dir.join(SETTINGS_FILE);
    if !settings_path.exists() {
        write_atomically(
            &settings_path,
            &commented_settings_file(SETTINGS_SCHEMA_FILE),
        )?;
    }
    for (name, kind) in [
        (MANIFEST_SCHEMA_FILE, crate::cli::SchemaKind::Manifest),
        (SETTINGS_SCHEMA_FILE, crate::cli::SchemaKind::Settings),
    ] {
        let path = dir.join(name);
        if force || !path.exists() {
            write_atomically(&path, &super::schema::render(kind))?;
        }
    }
    Ok(())
}

/// Load the written project; the state is not touched when it does not validate (another
/// manifest in the directory may clash with the imported ones).
fn load_written(dir: &Path) -> Result<manifest::Project, Error> {
    match manifest::load_project(dir) {
        Ok(project) => Ok(project),
        Err(ProjectError::Invalid(diagnostics)) => {
            eprint!("{}", diagnostic::render_text(&diagnostics, false));
            eprintln!(
                "The imported manifests were written, but the project in {} does not validate with them; klsync's state was not changed.",
                dir.display()
            );
            Err(Error::InvalidManifests {
                count: diagnostic::count(&diagnostics, Severity::Error),
            })
        }
        Err(other) => Err(other.into()),
    }
}

/// Record the imported resources as managed and forget what the import replaced: records of the
/// imported kinds under another key for the same Klaviyo resource, of resources gone from
/// Klaviyo, and of resources skipped (so `plan` never destroys what import could not write).
/// Returns the addresses forgotten.
async fn record_state(
    store: &StateStore,
    run_id: RunId,
    kinds: &BTreeSet<ImportKind>,
    imported: &Imported,
    records: &[(crate::model::ResourceKey, crate::model::ManagedRecord)],
    before: &[ManagedRow],
    live: &crate::model::LiveState,
) -> Result<Vec<String>, Error> {
    let imported_kinds: BTreeSet<ResourceKind> = kinds
        .iter()
        .flat_map(|kind| kind.resource_kinds().iter().copied())
        .collect();
    let imported_ids: BTreeSet<(ResourceKind, &str)> = records
        .iter()
        .map(|(key, record)| (key.kind, record.klaviyo_id.as_str()))
        .collect();
    let mut forgotten = Vec::new();
    for row in before {
        let Some(kind) = crate::apply::kind_from_prefix(&row.kind) else {
            continue;
        };
        if !imported_kinds.contains(&kind) {
            continue;
        }
        let reimported = records
            .iter()
            .any(|(key, _)| key.kind == kind && key.key == row.key);
        let elsewhere = imported_ids.contains(&(kind, row.klaviyo_id.as_str()));
        let gone = !live.contains(kind, &row.klaviyo_id);
        let skipped = imported
            .skipped
            .iter()
            .any(|s| s.kind == kind && s.klaviyo_id == row.klaviyo_id);
        if !reimported && (elsewhere || gone || skipped) {
            store.remove_managed(&row.kind, &row.key).await?;
            forgotten.push(format!("{}.{}", row.kind, row.key));
        }
    }
    for (key, record) in records {
        let row = ManagedRow {
            kind: key.kind.prefix().to_owned(),
            key: key.key.clone(),
            klaviyo_id: record.klaviyo_id.clone(),
            applied: record.applied.clone(),
            returned: record.returned.clone(),
        };
        store.upsert_managed(&row, run_id).await?;
    }
    Ok(forgotten)
}

fn report(
    output: &Output,
    dir: &Path,
    kinds: &BTreeSet<ImportKind>,
    imported: &Imported,
    forgotten: &[String],
    location: &str,
) {
    for skipped in &imported.skipped {
        eprintln!(
            "warning: skipped {} {} (id {}): {}",
            skipped.kind,
            serde_json::Value::String(skipped.name.clone()),
            skipped.klaviyo_id,
            skipped.reason
        );
    }
    for address in forgotten {
        eprintln!("warning: {address} is no longer recorded as managed (replaced by this import)");
    }
    if output.quiet {
        return;
    }
    let count = |kind: ResourceKind| {
        imported
            .resources
            .keys()
            .filter(|key| key.kind == kind)
            .count()
    };
    let files: Vec<String> = kinds
        .iter()
        .map(|kind| dir.join(kind.file_name()).display().to_string())
        .collect();
    print_stdout(&format!(
        "Imported {} tag group(s), {} tag(s), {} list(s) and {} segment(s) into {}; {} skipped.\nRecorded them as managed in {location}. `klsync plan -C {}` now shows no changes.\n",
        count(ResourceKind::TagGroup),
        count(ResourceKind::Tag),
        count(ResourceKind::List),
        count(ResourceKind::Segment),
        files.join(", "),
        imported.skipped.len(),
        dir.display(),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_selects_kinds_and_defaults_to_all() {
        assert_eq!(selected_kinds(&[]).len(), 3);
        assert_eq!(
            selected_kinds(&[ImportKindArg::Lists, ImportKindArg::Lists]),
            [ImportKind::Lists].into()
        );
    }

    #[test]
    fn settings_default_when_absent() {
        let dir = std::env::temp_dir().join(format!("klsync-import-{}", std::process::id()));
        let settings = settings(&dir).expect("defaults");
        assert_eq!(settings.version, 1);
        assert_eq!(settings.state.url_env, "KLSYNC_STATE_URL");
    }
}
