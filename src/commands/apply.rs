//! `klsync apply [PLAN_FILE]`: make Klaviyo match the manifests.
//!
//! Without a file it plans, shows the plan and asks for confirmation (or needs
//! `--auto-approve` without a terminal). With a file it applies exactly that plan, after checking
//! it is the very file `klsync plan --out` registered in this state (not edited), was made from
//! the current manifests, is neither too old nor dated in the future, was never applied, and
//! that Klaviyo has not changed since. Destroys need `--allow-destroy`; `prevent_destroy` forbids them.
//!
//! A saved plan counts as applied from the moment its apply starts sending. If that apply stopped
//! part way (some changes failed, or it was killed), the same file may be applied again: it then
//! does only what is left of the plan, and refuses if anything else would change.
//!
//! Data syncs (`profiles:`, `members:` on lists) run after the configuration changes, so lists
//! created by the same apply exist and have ids. Their data is read again at apply time (a saved
//! plan fixes the configuration changes, not the rows); counts that differ from the saved plan's
//! are reported as drift. A plan whose list removals exceed `max_removals` (the saved plan's or
//! the fresh one) is refused before anything is sent, configuration included, unless `--force`.
//! Data syncs are skipped when a configuration change failed (a list they fill may not exist).
//!
//! The apply lock is taken before Klaviyo is read, so two applies never interleave
//! (`--lock-timeout` waits for it). If its heartbeat finds it lost, the run stops as for a
//! signal, before sending more, and fails.
//!
//! Ctrl-C and SIGTERM stop it gracefully (see [`crate::interrupt`]): nothing new is sent, what is
//! in flight gets a grace period, the journal is left consistent, the lock is released and the
//! run is recorded as `interrupted`; the message says to run apply again, which resumes.
//!
//! Exit status: 0 success, 3 when some changes or data rows failed (run it again to resume), 1
//! when it was refused or nothing could be done, 130 / 143 when stopped by SIGINT / SIGTERM.

use std::collections::BTreeSet;
use std::io::IsTerminal as _;
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;

use super::plan::{PlanRequest, Planned, created_lists, data_rows, lists_given_ids};
use super::session::{AuditedRun, Connection, Locked, LockedRun, load, print_stdout, runtime};
use crate::apply::executor::{self, Settled};
use crate::apply::saved::{
    MAX_PLAN_BYTES, check_age, check_destroys, check_digest, parse_saved_plan, plan_id,
    remainder_mismatches, stale_addresses,
};
use crate::apply::{ApplyError, Event, ExecutionReport, Executor};
use crate::cli::ApplyArgs;
use crate::context::{self, EnvLookup, Pacing};
use crate::error::{Error, ExitStatus};
use crate::interrupt::{self, Stop};
use crate::manifest::Project;
use crate::model::{DesiredState, ResourceKey, ResourceKind};
use crate::plan::{Plan, record_converged_tags};
use crate::render;
use crate::run::Output;
use crate::sql::QueryManager;
use crate::state::{
    JournalRow, Phase, RunId, RunOutcome, RunStart, StateError, detect_actor, detect_git_commit,
};
use crate::sync::{self, DataApplyReport, DataPlan};

/// Run `klsync apply`.
pub fn run(args: &ApplyArgs, output: &Output) -> Result<ExitStatus, Error> {
    let interactive = std::io::stdin().is_terminal();
    let runtime = runtime()?;
    let result = runtime.block_on(async {
        interrupt::listen(output.quiet);
        apply_command(
            args,
            output,
            &context::process_env,
            Pacing::Published,
            interactive,
        )
        .await
    });
    // A confirmation question cut short by a signal may still be reading stdin: do not wait.
    runtime.shutdown_background();
    result
}

/// How many recent runs are searched for the earlier apply of a saved plan. Plans expire within
/// a day, so the run that applied one is recent.
const PLAN_HISTORY_DEPTH: u32 = 200;

/// A saved plan that passed the checks possible before the lock is taken.
struct SavedPlan {
    plan: Plan,
    id: String,
}

/// `klsync apply` with the environment read through `env`; `interactive` says whether the user
/// can be asked for confirmation.
pub(crate) async fn apply_command(
    args: &ApplyArgs,
    output: &Output,
    env: EnvLookup<'_>,
    pacing: Pacing,
    interactive: bool,
) -> Result<ExitStatus, Error> {
    let project = load(&args.project.dir, output)?;
    let saved = match &args.plan_file {
        Some(path) => Some(check_saved(args, &project, path)?),
        None => None,
    };
    let connection = Connection::open(&project, env, pacing, output).await?;
    let start = RunStart {
        command: "apply".to_owned(),
        actor: detect_actor(),
        git_commit: detect_git_commit(&project.root),
        manifest_digest: Some(project.digest()),
        plan_id: saved.as_ref().map(|saved| saved.id.clone()),
    };
    let audited = match AuditedRun::begin(&connection.store, start).await {
        Ok(audited) => audited,
        Err(err) => {
            connection.close().await;
            return Err(err);
        }
    };
    let run = Run {
        args,
        output,
        project: &project,
        connection: &connection,
        run_id: audited.run_id,
        interactive,
        saved,
    };
    let result = audited.locked(&run, args.lock_timeout, output.quiet).await;
    output.metrics.add_client(&connection.client.metrics());
    connection.close().await;
    Ok(result?.status)
}

/// Where a stop (Ctrl-C, SIGTERM) cut an apply short.
#[derive(Clone, Copy)]
enum CutShort {
    /// Before any change was started: waiting for the lock, or planning.
    Early,
    /// During or right after the configuration changes, `not_started` of them left.
    Changes { not_started: usize },
    /// During the data syncs, whose report is printed above the message.
    Data,
    /// Work was still running at the end of the grace period and was given up.
    Abandoned,
}

/// How an apply that ran ended.
struct Finished {
    status: ExitStatus,
    outcome: RunOutcome,
    summary: serde_json::Value,
}

/// Parse a saved plan and run the checks that need neither Klaviyo nor the state database.
fn check_saved(
    args: &ApplyArgs,
    project: &Project,
    path: &std::path::Path,
) -> Result<SavedPlan, Error> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    // One byte past the limit is read so that `parse_saved_plan` sees the file is too large.
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| {
            use std::io::Read as _;
            file.take(MAX_PLAN_BYTES + 1).read_to_end(&mut bytes)
        })
        .map_err(io)?;
    let plan = parse_saved_plan(&path.display().to_string(), &bytes)?;
    let id = plan_id(&bytes);
    check_digest(&plan, &project.digest())?;
    let max_age = match &args.max_age {
        Some(text) => crate::duration::parse_duration(text)
            .map_err(|reason| Error::Config(format!("--max-age {reason}")))?,
        None => Duration::from_secs(project.settings.plan.max_age_hours.saturating_mul(3600)),
    };
    check_age(&plan, chrono::Utc::now(), max_age)?;
    Ok(SavedPlan { plan, id })
}

/// One apply, with everything it needs.
struct Run<'a> {
    args: &'a ApplyArgs,
    output: &'a Output,
    project: &'a Project,
    connection: &'a Connection,
    run_id: RunId,
    interactive: bool,
    /// The saved plan applied, if any.
    saved: Option<SavedPlan>,
}

/// An apply holds the lock from reading Klaviyo to its end; a stop (Ctrl-C, SIGTERM, the lock
/// lost) cuts it short, and what is still in flight after the grace is given up.
impl LockedRun for Run<'_> {
    type Value = Finished;
    type Output = Finished;
    const STOPS_WITHIN_GRACE: bool = true;

    async fn work(&self) -> Result<Finished, Error> {
        self.locked().await
    }

    async fn conclude(&self, locked: Locked<Finished>) -> Result<Finished, Error> {
        let Locked::Taken { result, lost } = locked else {
            let stop = interrupt::requested().unwrap_or(Stop::Interrupt);
            return self.interrupted(stop, CutShort::Early, None).await;
        };
        match (interrupt::requested(), result) {
            _ if lost => Err(StateError::LockLost {
                run_id: self.run_id.to_string(),
            }
            .into()),
            (Some(stop), None) => self.interrupted(stop, CutShort::Abandoned, None).await,
            (Some(stop), Some(Err(err)))
                if stop.signal_name().is_some() && err.is_interruption() =>
            {
                self.interrupted(stop, CutShort::Early, None).await
            }
            (_, Some(result)) => result,
            // Abandoned only after a stop.
            (None, None) => Err(Error::Config("the apply was abandoned".to_owned())),
        }
    }

    fn audit(&self, result: &Result<Finished, Error>) -> (RunOutcome, serde_json::Value) {
        match result {
            Ok(finished) => (finished.outcome, finished.summary.clone()),
            Err(err) => {
                let outcome = match err {
                    Error::Apply(_)
                    | Error::State(
                        StateError::Locked { .. } | StateError::LockWaitTimedOut { .. },
                    ) => RunOutcome::Refused,
                    _ => RunOutcome::Failed,
                };
                (outcome, json!({"error": err.to_string()}))
            }
        }
    }
}

impl Run<'_> {
    /// Everything that happens while the apply lock is held.
    async fn locked(&self) -> Result<Finished, Error> {
        let saved = &self.saved;
        let store = &self.connection.store;
        let mut resuming = false;
        if let Some(saved) = saved
            && !store.is_saved_plan_registered(&saved.id).await?
        {
            let plan_id = saved.id.clone();
            return Err(ApplyError::UnregisteredPlan { plan_id }.into());
        }
        if let Some(saved) = saved
            && store.is_plan_applied(&saved.id).await?
        {
            if !self.stopped_part_way(&saved.id).await? {
                return Err(ApplyError::AlreadyApplied {
                    plan_id: saved.id.clone(),
                }
                .into());
            }
            resuming = true;
        }
        let unfinished = store.unfinished_journal().await?;
        self.report_unfinished(&unfinished);
        let reading = self
            .output
            .progress()
            .spinner("Reading Klaviyo and running the data queries");
        // A saved plan is compared with a fresh plan restricted as it was (`--target`).
        let targets = saved
            .as_ref()
            .map_or(&self.args.target, |saved| &saved.plan.targets);
        // So is its resync: the saved plan's data part says which syncs resend everything.
        let resync = saved
            .as_ref()
            .and_then(|saved| saved.plan.data.as_ref())
            .map_or_else(|| self.args.resync.clone(), sync::DataPlan::resyncs);
        let request = PlanRequest {
            check: None,
            targets,
            resync: &resync,
        };
        let fresh = self.connection.plan_checked(self.project, &request).await;
        reading.finish_and_clear();
        let fresh = fresh?;
        if let Some(data) = &fresh.plan.data {
            self.output.metrics.add_rows_read(data_rows(data));
        }
        let plan = match saved {
            Some(saved) if resuming => {
                let mismatched = remainder_mismatches(&saved.plan.changes, &fresh.plan.changes);
                if !mismatched.is_empty() {
                    return Err(ApplyError::Stale {
                        addresses: mismatched,
                    }
                    .into());
                }
                if !self.output.quiet {
                    eprintln!(
                        "Resuming saved plan {}: its earlier apply stopped part way; {} of its {} change(s) remain.",
                        saved.id,
                        fresh.plan.changes.len(),
                        saved.plan.changes.len()
                    );
                }
                fresh.plan.clone()
            }
            Some(saved) => {
                let stale = stale_addresses(&saved.plan.changes, &fresh.plan.changes);
                if !stale.is_empty() {
                    return Err(ApplyError::Stale { addresses: stale }.into());
                }
                saved.plan.clone()
            }
            None => fresh.plan.clone(),
        };
        check_destroys(&plan, self.args.allow_destroy)?;
        // The data part the user saw: the saved plan's, else the one just made.
        let data_planned = match saved {
            Some(saved) if !resuming => saved.plan.data.as_ref(),
            _ => fresh.plan.data.as_ref(),
        };
        if !self.args.force {
            check_max_removals(data_planned, fresh.plan.data.as_ref())?;
        }
        // A saved plan made with `--refresh=full` restores what its check found, which the
        // fresh plan (made without it) cannot see.
        let data_changes = fresh.plan.data.as_ref().is_some_and(DataPlan::has_changes)
            || data_planned.is_some_and(DataPlan::has_changes);
        if plan.changes.is_empty() && !data_changes {
            if !self.output.quiet {
                // The data as it is now: a saved plan's data part may have been applied since.
                let mut shown = plan.clone();
                shown.data = fresh.plan.data.clone();
                print_stdout(&render::text(&shown, self.output.color));
            }
            self.converged(&fresh, &unfinished).await?;
            return Ok(Finished {
                status: ExitStatus::Success,
                outcome: RunOutcome::Success,
                summary: json!({"changed": 0, "failed": 0}),
            });
        }
        if saved.is_none() {
            if !self.output.quiet || !self.args.auto_approve {
                print_stdout(&render::text(&plan, self.output.color));
            }
            if !self.args.auto_approve {
                self.confirm().await?;
            }
        }
        let run_id = self.run_id;
        if let Some(saved) = saved.as_ref().filter(|_| !resuming) {
            // Recorded before any change is sent: a crashed apply's plan is never re-applied
            // blindly; applying it again (or running `klsync apply` without it) resumes.
            store.mark_plan_applied(&saved.id, run_id).await?;
            if !self.output.quiet {
                eprintln!(
                    "Applying saved plan {} (made {}): {} change(s).",
                    saved.id,
                    saved.plan.meta.created_at,
                    plan.changes.len()
                );
            }
        }
        let resumed: BTreeSet<String> = unfinished.iter().map(|row| row.address.clone()).collect();
        let mut executor = Executor::new(
            &self.connection.client,
            store,
            run_id,
            &fresh.managed,
            resumed,
        );
        // The data syncs run beside the configuration changes (docs/operations.md): a profiles
        // sync needs no list, and the members of a list this apply creates wait for it.
        let syncing_data = match (&self.connection.queries, data_planned) {
            (Some(queries), Some(data_planned)) => {
                self.forget_members_of_created_lists(&plan).await?;
                if !self.output.quiet {
                    eprintln!("Syncing data from SQL...");
                }
                Some((queries, data_planned))
            }
            _ => None,
        };
        let settled = executor.settled();
        let quiet = self.output.quiet;
        let every_change = self.args.detail.full;
        let metrics = &self.output.metrics;
        let bar = self
            .output
            .progress()
            .bar(plan.changes.len() as u64, "Applying");
        let mut progress = |event: &Event| {
            match event {
                Event::Done { address, .. } => {
                    metrics.change_applied();
                    bar.set_message(address.clone());
                }
                Event::Failed(_) => metrics.change_failed(),
            }
            bar.inc(1);
            if !quiet && (every_change || matches!(event, Event::Failed(_))) {
                // Printed above the bar, so neither tears the other.
                bar.suspend(|| eprintln!("{}", progress_line(event)));
            }
        };
        let changes = async {
            let report = executor.execute(&plan, &mut progress).await;
            bar.finish_and_clear();
            report
        };
        let data = async {
            let Some((queries, data_planned)) = syncing_data else {
                return Ok(None);
            };
            let syncing = self
                .output
                .progress()
                .spinner("Syncing profile properties and list members");
            let data = self.apply_data(queries, data_planned, &plan, settled).await;
            syncing.finish_and_clear();
            data.map(Some)
        };
        let (report, data) = tokio::join!(changes, data);
        let report = report?;
        let data = data?;
        if let Some(stop) = interrupt::requested()
            && report.not_started.is_some_and(|n| n > 0)
        {
            // Stopped during the configuration changes.
            let not_started = report.not_started.unwrap_or(0);
            return self
                .stopped(stop, CutShort::Changes { not_started }, data.as_ref())
                .await;
        }
        if let Some(stop) = interrupt::requested() {
            // Stopped during the data syncs (jobs the stop kept from being sent are among the
            // failures), or right after the last change.
            let cut = match &data {
                Some(data) if data.has_failures() => CutShort::Data,
                _ => CutShort::Changes { not_started: 0 },
            };
            return self.stopped(stop, cut, data.as_ref()).await;
        }
        let outcome = outcome(&report, data.as_ref());
        let client_metrics = self.connection.client.metrics();
        let summary = json!({
            "changed": report.succeeded.len(),
            "failed": report.failed.len(),
            "failures": report.failed.iter().map(|failure| json!({
                "address": failure.address,
                "action": failure.action.as_str(),
                "reason": failure.cause.to_string(),
                "skipped": failure.skipped(),
            })).collect::<Vec<_>>(),
            // Requests per endpoint, as `klsync history` reads them; the rest of the client's
            // counters (retries, 429s, time waited) beside them.
            "requests": client_metrics.requests,
            "client": client_metrics,
            "data": data,
        });
        if report.failed.is_empty() {
            self.converged(&fresh, &unfinished).await?;
        }
        Ok(Finished {
            status: self.print_summary(&report, data.as_ref()),
            outcome,
            summary,
        })
    }

    /// A list this apply created is empty, whatever klsync recorded for its key (the list was
    /// deleted outside klsync): forget those records so the data sync adds the members anew, and
    /// the members klsync removed from the old list, so that `drift --members` does not report
    /// one added to the new list by hand as back on it.
    async fn forget_members_of_created_lists(&self, plan: &Plan) -> Result<(), Error> {
        for key in created_lists(plan) {
            self.connection.store.forget_list_members(key).await?;
        }
        Ok(())
    }

    /// Run the data syncs beside the configuration changes of `plan`, which `settled` follows:
    /// the members of a list the plan creates or adopts wait for its id.
    async fn apply_data(
        &self,
        queries: &QueryManager,
        planned: &DataPlan,
        plan: &Plan,
        settled: watch::Receiver<Settled>,
    ) -> Result<DataApplyReport, Error> {
        let list_ids = self.connection.list_ids().await?;
        let given = lists_given_ids(plan);
        let wait_for_list = |key: String| {
            let mut settled = settled.clone();
            async move {
                let address = ResourceKey::new(ResourceKind::List, &key).address();
                executor::wait_for(&mut settled, &address).await
            }
        };
        let manifest = self.project.merged();
        let apply = sync::DataApply {
            plan: planned,
            manifest: &manifest,
            list_ids: &list_ids,
            queries,
            client: &self.connection.client,
            store: &self.connection.store,
            force: self.args.force,
        };
        let report = sync::apply_data_beside_changes(apply, &given, wait_for_list)
            .await
            .map_err(|err| err.declared_in(self.project))?;
        Ok(report)
    }

    /// Whether the last apply of saved plan `plan_id` (refusals aside) stopped part way: some
    /// changes failed, or it was killed. Such a plan may be applied again to finish it.
    async fn stopped_part_way(&self, plan_id: &str) -> Result<bool, Error> {
        let history = self.connection.store.history(PLAN_HISTORY_DEPTH).await?;
        let last = history.iter().find(|run| {
            run.run_id != self.run_id
                && run.plan_id.as_deref() == Some(plan_id)
                && run.outcome != Some(RunOutcome::Refused)
        });
        Ok(last.is_some_and(|run| run.outcome != Some(RunOutcome::Success)))
    }

    fn report_unfinished(&self, unfinished: &[JournalRow]) {
        if unfinished.is_empty() || self.output.quiet {
            return;
        }
        let runs: BTreeSet<String> = unfinished
            .iter()
            .map(|row| row.run_id.to_string())
            .collect();
        let addresses: Vec<String> = unfinished
            .iter()
            .map(|row| format!("{} {}", row.action, row.address))
            .collect();
        eprintln!(
            "An earlier apply (run {}) was interrupted; these changes have no recorded outcome and are checked again: {}",
            runs.into_iter().collect::<Vec<_>>().join(", "),
            addresses.join(", ")
        );
    }

    /// Klaviyo matches the manifests: close the journal entries of interrupted runs and forget
    /// managed resources that are neither declared nor in Klaviyo any more.
    async fn converged(&self, planned: &Planned, unfinished: &[JournalRow]) -> Result<(), Error> {
        let store = &self.connection.store;
        for row in unfinished {
            store
                .journal_failed(
                    row.id,
                    &format!("interrupted; run {} converged afterwards", self.run_id),
                )
                .await?;
        }
        for row in &planned.managed {
            let Some(kind) = crate::apply::kind_from_prefix(&row.kind) else {
                continue;
            };
            if !declared(&planned.desired, kind, &row.key)
                && !planned.live.contains(kind, &row.klaviyo_id)
            {
                store.remove_managed(&row.kind, &row.key).await?;
                if !self.output.quiet {
                    eprintln!(
                        "forgot {}.{} ({}): it no longer exists in Klaviyo",
                        row.kind, row.key, row.klaviyo_id
                    );
                }
            }
        }
        // Converged: each declared list's and segment's links to klsync's tags are now the
        // declared ones, also where nothing was sent because they were changed by hand to what
        // the manifests now say. Records of earlier versions gain their applied tags here.
        for mut row in store.managed().await? {
            let Some(kind) = crate::apply::kind_from_prefix(&row.kind) else {
                continue;
            };
            if record_converged_tags(&planned.desired, kind, &row.key, &mut row.applied) {
                store.upsert_managed(&row, self.run_id).await?;
            }
        }
        Ok(())
    }

    async fn confirm(&self) -> Result<(), Error> {
        if !self.interactive {
            return Err(ApplyError::NeedsApproval.into());
        }
        let read = tokio::task::spawn_blocking(|| super::answered_yes("Apply these changes?"));
        // Ctrl-C at the question declines: nothing was sent.
        let approved = tokio::select! {
            read = read => read.map_err(|err| Error::Config(format!("reading the answer failed: {err}")))??,
            _ = interrupt::stopped() => return Err(ApplyError::Declined.into()),
        };
        if approved {
            Ok(())
        } else {
            Err(ApplyError::Declined.into())
        }
    }

    /// The run was stopped part way: with [`Stop::LockLost`] it fails; by a signal, it ends as
    /// `interrupted`, after printing the data syncs' report if they ran.
    async fn stopped(
        &self,
        stop: Stop,
        cut: CutShort,
        data: Option<&DataApplyReport>,
    ) -> Result<Finished, Error> {
        if stop == Stop::LockLost {
            return Err(StateError::LockLost {
                run_id: self.run_id.to_string(),
            }
            .into());
        }
        if let Some(data) = data {
            print_stdout(&sync::render_report(data));
        }
        self.interrupted(stop, cut, data).await
    }

    /// How a run stopped by a signal ends: the message, counted from this run's journal, and
    /// the audit outcome `interrupted`.
    async fn interrupted(
        &self,
        stop: Stop,
        cut: CutShort,
        data: Option<&DataApplyReport>,
    ) -> Result<Finished, Error> {
        let journal = self.connection.store.run_journal(self.run_id).await?;
        let count = |phase: Phase| journal.iter().filter(|row| row.phase == phase).count();
        let (made, failed, open) = (
            count(Phase::Succeeded),
            count(Phase::Failed),
            count(Phase::Started),
        );
        let signal = stop.signal_name().unwrap_or("a signal");
        let mut text = format!(
            "Apply interrupted by {signal}: {made} change(s) made before it stopped; no new change was sent after the signal"
        );
        if failed > 0 {
            text.push_str(&format!("; {failed} change(s) failed or were not sent"));
        }
        let grace = interrupt::GRACE.as_secs();
        match cut {
            CutShort::Early => {}
            CutShort::Changes { not_started: 0 } => {}
            CutShort::Changes { not_started } => {
                text.push_str(&format!("; {not_started} change(s) not started"));
            }
            CutShort::Data => text.push_str("; the data syncs stopped part way (see above)"),
            CutShort::Abandoned if open > 0 => text.push_str(&format!(
                "; {open} change(s) still in flight after {grace}s were abandoned, and the next apply checks whether they landed"
            )),
            CutShort::Abandoned => text.push_str(&format!(
                "; work still running after {grace}s (reading Klaviyo, a query or a bulk job) was abandoned"
            )),
        }
        text.push_str(".\nRun `klsync apply` again to resume.\n");
        eprint!("{text}");
        let client = self.connection.client.metrics();
        let not_started = match cut {
            CutShort::Changes { not_started } => Some(not_started),
            CutShort::Data | CutShort::Early | CutShort::Abandoned => None,
        };
        Ok(Finished {
            status: stop.exit_status(),
            outcome: RunOutcome::Interrupted,
            summary: json!({
                "signal": signal,
                "changed": made,
                "failed": failed,
                "not_started": not_started,
                "abandoned": open,
                "requests": client.requests,
                "client": client,
                "data": data,
            }),
        })
    }

    fn print_summary(
        &self,
        report: &ExecutionReport,
        data: Option<&DataApplyReport>,
    ) -> ExitStatus {
        let changed = report.succeeded.len();
        let failed = report.failed.len();
        if let Some(data) = data
            && (!self.output.quiet || data.has_failures())
        {
            print_stdout(&sync::render_report(data));
        }
        let data_failed = data.is_some_and(DataApplyReport::has_failures);
        if failed == 0 && data_failed {
            eprintln!(
                "Apply partially complete: {changed} changed, 0 failed; some data rows failed or removals could not be resolved (listed above). Run `klsync apply` again to retry them."
            );
            return ExitStatus::Partial;
        }
        if failed == 0 {
            if !self.output.quiet {
                print_stdout(&format!("Apply complete: {changed} changed, 0 failed.\n"));
            }
            return ExitStatus::Success;
        }
        let mut text = if changed == 0 {
            format!("Apply failed: 0 changed, {failed} failed:\n")
        } else {
            format!("Apply partially complete: {changed} changed, {failed} failed:\n")
        };
        for failure in &report.failed {
            text.push_str(&format!(
                "  {} {}: {}\n",
                failure.action.as_str(),
                failure.address,
                failure.cause
            ));
        }
        text.push_str("Fix the cause and run `klsync apply` again to resume.\n");
        eprint!("{text}");
        if changed == 0 {
            ExitStatus::Error
        } else {
            ExitStatus::Partial
        }
    }
}

/// The run's outcome as recorded in the audit log.
fn outcome(report: &ExecutionReport, data: Option<&DataApplyReport>) -> RunOutcome {
    match (report.succeeded.is_empty(), report.failed.is_empty()) {
        (_, true) if data.is_some_and(DataApplyReport::has_failures) => RunOutcome::Partial,
        (_, true) => RunOutcome::Success,
        (false, false) => RunOutcome::Partial,
        (true, false) => RunOutcome::Failed,
    }
}

/// Refuse, before anything is sent, a data part whose list removals exceed `max_removals`, in
/// the plan the user saw or in the one just made.
fn check_max_removals(planned: Option<&DataPlan>, fresh: Option<&DataPlan>) -> Result<(), Error> {
    let mut lists: Vec<String> = Vec::new();
    for data in [planned, fresh].into_iter().flatten() {
        for list in data.memberships.iter().filter(|m| m.exceeds_max_removals) {
            let line = format!(
                "lists.{}.members: {} removal(s), max_removals {}",
                list.list,
                list.counts.remove,
                list.max_removals.unwrap_or(0)
            );
            if !lists.contains(&line) {
                lists.push(line);
            }
        }
    }
    if lists.is_empty() {
        Ok(())
    } else {
        Err(ApplyError::MaxRemovalsExceeded { lists }.into())
    }
}

/// `✓ create list.vip (Y6nRLr)` or `✗ attach tag_link...: reason`.
fn progress_line(event: &Event) -> String {
    match event {
        Event::Done {
            address,
            action,
            id,
        } => match id {
            Some(id) => format!("✓ {} {address} ({id})", action.as_str()),
            None => format!("✓ {} {address}", action.as_str()),
        },
        Event::Failed(failure) => format!(
            "✗ {} {}: {}",
            failure.action.as_str(),
            failure.address,
            failure.cause
        ),
    }
}

fn declared(desired: &DesiredState, kind: ResourceKind, key: &str) -> bool {
    match kind {
        ResourceKind::TagGroup => desired.tag_groups.contains_key(key),
        ResourceKind::Tag => desired.tags.contains_key(key),
        ResourceKind::List => desired.lists.contains_key(key),
        ResourceKind::Segment => desired.segments.contains_key(key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::{Failure, FailureCause};
    use crate::plan::Action;

    #[test]
    fn outcomes_follow_successes_and_failures() {
        let failure = || Failure {
            address: "list.a".into(),
            action: Action::Create,
            cause: FailureCause::Blocked { by: "tag.x".into() },
        };
        let mut report = ExecutionReport::default();
        assert_eq!(outcome(&report, None), RunOutcome::Success);
        let data_failed = DataApplyReport {
            memberships: vec![sync::MembershipReport {
                list: "vip".into(),
                failed: 1,
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(outcome(&report, Some(&data_failed)), RunOutcome::Partial);
        assert_eq!(
            outcome(&report, Some(&DataApplyReport::default())),
            RunOutcome::Success
        );
        report.failed.push(failure());
        assert_eq!(outcome(&report, None), RunOutcome::Failed);
        report.succeeded.push("list.b".into());
        assert_eq!(outcome(&report, None), RunOutcome::Partial);
        assert_eq!(
            progress_line(&Event::Failed(failure())),
            "✗ create list.a: skipped: tag.x did not happen"
        );
        assert_eq!(
            progress_line(&Event::Done {
                address: "list.b".into(),
                action: Action::Create,
                id: Some("L1".into())
            }),
            "✓ create list.b (L1)"
        );
    }

    fn data(flagged: &[(&str, u64)]) -> DataPlan {
        serde_json::from_value(json!({
            "profiles": [],
            "memberships": flagged.iter().map(|(list, remove)| json!({
                "list": list, "list_id": null, "query": "q", "identify_by": "email",
                "mode": "mirror", "rows": 0,
                "counts": {"add": 0, "remove": remove, "unchanged": 0, "rejected": 0,
                           "duplicates": 0},
                "add_sample": [], "remove_sample": [], "rejected_sample": [],
                "max_removals": 1, "exceeds_max_removals": *remove > 1,
                "requests": {}, "estimated_seconds": 0
            })).collect::<Vec<_>>(),
            "requests": {}, "estimated_seconds": 0
        }))
        .expect("data plan")
    }

    #[test]
    fn removals_over_the_limit_in_either_plan_refuse_naming_each_list_once() {
        let calm = data(&[("vip", 1)]);
        assert!(check_max_removals(Some(&calm), Some(&calm)).is_ok());
        assert!(check_max_removals(None, None).is_ok());
        let saved = data(&[("vip", 5), ("win", 1)]);
        let fresh = data(&[("vip", 5), ("win", 3)]);
        let err = check_max_removals(Some(&saved), Some(&fresh)).expect_err("over the limit");
        let Error::Apply(ApplyError::MaxRemovalsExceeded { lists }) = err else {
            panic!("{err}");
        };
        assert_eq!(
            lists,
            [
                "lists.vip.members: 5 removal(s), max_removals 1",
                "lists.win.members: 3 removal(s), max_removals 1"
            ]
        );
        // Flagged only in the saved plan still refuses: the reviewer saw the warning.
        assert!(check_max_removals(Some(&fresh), Some(&calm)).is_err());
    }
}
