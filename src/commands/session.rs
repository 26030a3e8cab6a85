//! What the commands share to do their work: the async runtime they run on, the loaded project,
//! its connections (the Klaviyo client, klsync's state, the data source), the run recorded in
//! the audit log and done under the apply lock (`apply`, `import`), and writing to stdout and
//! to files.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::context::{self, EnvLookup, Pacing};
use crate::duration::human_duration;
use crate::error::Error;
use crate::interrupt::{self, Stop};
use crate::klaviyo::KlaviyoClient;
use crate::manifest::diagnostic::{self, Severity};
use crate::manifest::{self, Project, ProjectError};
use crate::model::ResourceKind;
use crate::run::Output;
use crate::sql::QueryManager;
use crate::state::{
    ApplyLock, LockHolder, LockOptions, ManagedRow, RunId, RunOutcome, RunStart, StateStore,
};

/// The async runtime every command that talks to Klaviyo or a database runs on (the emulator's
/// server too).
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|err| Error::Config(format!("cannot start the async runtime: {err}")))
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

/// The Klaviyo client, state database and data source of a project.
pub(crate) struct Connection {
    /// The Klaviyo client.
    pub client: KlaviyoClient,
    /// klsync's state.
    pub store: StateStore,
    /// The database the data syncs read; `None` when the manifests declare none.
    pub queries: Option<QueryManager>,
}

impl Connection {
    /// Build the client and open the state database named by the project's settings.
    pub(crate) async fn open(
        project: &Project,
        env: EnvLookup<'_>,
        pacing: Pacing,
        output: &Output,
    ) -> Result<Connection, Error> {
        let config = context::client_config(&project.settings, env)?;
        let client = context::client(config, pacing, output)?;
        // Before the state database: a missing DATABASE_URL is a setup error best reported
        // before anything is opened.
        let data = context::data_source(&project.settings, &project.merged(), env)?;
        let url = context::state_url(&project.settings, &project.root, env);
        // Side by side: each takes a few round trips (a connection, a migration check) that
        // would otherwise delay the first query.
        let (queries, store) = futures::join!(
            async {
                match data {
                    Some(data) => data.connect().await.map(Some),
                    None => Ok(None),
                }
            },
            context::connect_state(&url)
        );
        let (queries, store) = match (queries, store) {
            (Ok(queries), Ok(store)) => (queries, store),
            (Err(err), store) => {
                if let Ok(store) = store {
                    store.close().await;
                }
                return Err(err);
            }
            (Ok(queries), Err(err)) => {
                if let Some(queries) = &queries {
                    queries.close().await;
                }
                return Err(err);
            }
        };
        Ok(Connection {
            client,
            store,
            queries,
        })
    }

    /// Close the state database and the data source.
    pub(crate) async fn close(&self) {
        let queries = async {
            if let Some(queries) = &self.queries {
                queries.close().await;
            }
        };
        futures::join!(self.store.close(), queries);
    }

    /// The Klaviyo ids of the lists klsync manages, by key (the lists data syncs fill).
    pub(crate) async fn list_ids(&self) -> Result<BTreeMap<String, String>, Error> {
        Ok(list_ids(&self.store.managed().await?))
    }
}

/// Klaviyo ids of managed lists, by key.
pub(crate) fn list_ids(managed: &[ManagedRow]) -> BTreeMap<String, String> {
    managed
        .iter()
        .filter(|row| row.kind == ResourceKind::List.prefix())
        .map(|row| (row.key.clone(), row.klaviyo_id.clone()))
        .collect()
}

/// A command whose work is done holding the apply lock and recorded in the audit log (`apply`,
/// `import`), as [`AuditedRun::locked`] runs it.
pub(crate) trait LockedRun {
    /// What the work returns.
    type Value;
    /// What the run returns.
    type Output;
    /// `true` (apply): once a stop is requested the work gets [`interrupt::GRACE`] to end and
    /// is then given up, and a lost lock stops the run as a signal does, before anything more
    /// is sent. `false` (import): the work always runs to its end (a stop makes its reads
    /// refuse) and a lost lock is only reported to [`LockedRun::conclude`].
    const STOPS_WITHIN_GRACE: bool;

    /// The work done while the apply lock is held.
    async fn work(&self) -> Result<Self::Value, Error>;

    /// The run's result from how the locked part ended, once the lock is released.
    async fn conclude(&self, locked: Locked<Self::Value>) -> Result<Self::Output, Error>;

    /// The outcome and summary the audit log records for the run's result.
    fn audit(&self, result: &Result<Self::Output, Error>) -> (RunOutcome, serde_json::Value);
}

/// How the part of a [`LockedRun`] that needs the apply lock ended.
pub(crate) enum Locked<T> {
    /// A stop (Ctrl-C, SIGTERM) came while waiting for the lock: the work never started.
    NotTaken,
    /// The lock was taken and the work started. `result` is `None` when a stop came and the
    /// work was still running at the end of the grace, so it was given up; `lost` says whether
    /// the lock was found lost meanwhile.
    Taken {
        result: Option<Result<T, Error>>,
        lost: bool,
    },
}

/// A run recorded as begun in the audit log: [`AuditedRun::locked`] does its work under the
/// apply lock and records how it ended.
pub(crate) struct AuditedRun<'a> {
    store: &'a StateStore,
    /// The run's id in the audit log (and the lock's holder, and the journal).
    pub run_id: RunId,
    actor: String,
    command: String,
}

impl<'a> AuditedRun<'a> {
    /// Record the start of the run in `store`'s audit log.
    pub(crate) async fn begin(store: &'a StateStore, start: RunStart) -> Result<Self, Error> {
        let run_id = store.begin_run(&start).await?;
        Ok(AuditedRun {
            store,
            run_id,
            actor: start.actor,
            command: start.command,
        })
    }

    /// Take the apply lock (waiting up to `lock_timeout`), do `run`'s work, give the lock back
    /// whatever happened (also when a stop cut the work short or it had to be given up), and
    /// record the run's outcome. An error of the run comes before one recording it.
    pub(crate) async fn locked<R: LockedRun>(
        self,
        run: &R,
        lock_timeout: Duration,
        quiet: bool,
    ) -> Result<R::Output, Error> {
        let result = self.holding_lock(run, lock_timeout, quiet).await;
        // Every attempt ends in the audit record, refusals included.
        let (outcome, summary) = run.audit(&result);
        let recorded = self.store.finish_run(self.run_id, outcome, &summary).await;
        let output = result?;
        recorded?;
        Ok(output)
    }

    async fn holding_lock<R: LockedRun>(
        &self,
        run: &R,
        lock_timeout: Duration,
        quiet: bool,
    ) -> Result<R::Output, Error> {
        let holder = LockHolder::current(self.run_id, &self.actor, &self.command);
        let Some(lock) = take_apply_lock(self.store, &holder, lock_timeout, quiet).await? else {
            return run.conclude(Locked::NotTaken).await;
        };
        let result = if R::STOPS_WITHIN_GRACE {
            // A lost lock stops the run like a signal: before anything more is sent.
            let lost = lock.lost();
            let watcher = tokio::spawn(async move {
                lost.await;
                if interrupt::request(Stop::LockLost) && !quiet {
                    eprintln!("The apply lock was lost: stopping. No new change is sent.");
                }
            });
            let result = interrupt::within_grace(run.work()).await;
            watcher.abort();
            result
        } else {
            Some(run.work().await)
        };
        let lost = lock.is_lost();
        let released = lock.release().await;
        let output = run.conclude(Locked::Taken { result, lost }).await?;
        released?;
        Ok(output)
    }
}

/// Take the apply lock for `holder` as `apply` and `import` do: waiting up to `timeout` for
/// another run (saying once that it waits, and for whom), and saying so when it takes over the
/// lock of a holder that is gone. `None` when a stop (Ctrl-C, SIGTERM) came first.
async fn take_apply_lock(
    store: &StateStore,
    holder: &LockHolder,
    timeout: Duration,
    quiet: bool,
) -> Result<Option<ApplyLock>, Error> {
    let options = LockOptions {
        timeout,
        ..LockOptions::default()
    };
    let mut waiting = |held_by: &str| {
        if !quiet {
            eprintln!(
                "Waiting up to {} (--lock-timeout) for the apply lock, held by {held_by}",
                human_duration(timeout)
            );
        }
    };
    let lock = tokio::select! {
        lock = store.acquire_apply_lock_with(holder, &options, &mut waiting) => lock?,
        _ = interrupt::stopped() => return Ok(None),
    };
    if let Some(previous) = lock.took_over() {
        tracing::info!(previous, "took over the apply lock");
        if !quiet {
            eprintln!("Took over the apply lock of {previous}.");
        }
    }
    Ok(Some(lock))
}

/// Write `text` to `path` via a temporary file in the same directory and a rename, so a reader
/// never sees half a plan.
pub(crate) fn write_atomically(path: &Path, text: &str) -> Result<(), Error> {
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
