//! Query-driven profile data and list membership (issue 5): `profiles:` syncs and `members:` on
//! lists. See `docs/sync.md` for the user-facing semantics.
//!
//! Layout: [`identify`], [`diff`] and [`chunk`] are pure; `profiles` and `members` run the
//! queries (through [`QueryManager`], read-only), read and write klsync's state
//! ([`StateStore`]) and talk to Klaviyo ([`KlaviyoClient`]).
//!
//! # How a run works
//!
//! [`plan_data`] streams every sync's query once and classifies each row against what klsync
//! last applied for it. Memory stays compact: the stored row hashes are loaded as
//! `identifier hash (u64) -> (row hash, class of the row seen)`, rows with no stored hash as
//! `u64 -> class`, so each row costs one table probe, and only
//! rows whose hash changed are looked up in the state (500 at a time) for a field-level diff.
//! The plan keeps counts, bounded samples and the request cost, never the rows.
//!
//! [`apply_data`] runs the same classification again (the data is read at apply time, not
//! frozen at plan time: a data sync sends what the query returns now) and writes the profile
//! rows to send to a temporary file ([`spill`]; list adds stay in memory). It then refuses, before sending anything, when a
//! list's removals exceed `max_removals` (in the plan given or in the fresh computation) unless
//! `force`. Counts that differ from the plan's are reported as `drift` in the report.
//!
//! Profiles go out in bulk import jobs (≤ 10,000 profiles and ≤ 5 MB each, chunked by bytes),
//! at most [`JOBS_IN_FLIGHT`] at once, polled with backoff; import errors are read only when a
//! job reports failures and are placed on rows by the identifier in their `original_payload`
//! (nested or flat) or their `source.pointer` ([`refusals`]); failures they do not place are
//! isolated by sending the job's rows again in halves. Only accepted rows are recorded, so
//! refused ones are sent again by the next apply; one refused row never fails its whole job. Removing properties needs `profile-import` with `patch_properties.unset`, one
//! request per profile (bulk import cannot remove).

mod check;
pub mod chunk;
pub mod diff;
pub mod identify;
mod members;
mod profiles;
mod refusals;
mod spill;
pub mod table;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::klaviyo::{ApiError, KlaviyoClient, Operation};
use crate::manifest::types::{IdentifyBy, ManifestFile, QuerySpec};
use crate::sql::{QueryManager, SqlError};
use crate::state::{StateError, StateStore};

pub use check::{check_cost, check_data};
// The plan and report types live in the pure core; the engine here fills them in.
pub use klsync_core::data::{
    CheckCost, CheckScope, DataApplyReport, DataCheck, DataPlan, Drift, FailedRow, FieldChange,
    MembershipCheck, MembershipCounts, MembershipPlan, MembershipReport, ProfileCheck,
    ProfileCounts, ProfileSyncPlan, ProfileSyncReport, RejectedRow, RowChange, SAMPLE_SIZE,
    check_summary, render_check, render_report, render_text, render_text_sampled,
};
use klsync_core::data::{count_difference, failed_sample, request_names, requests_of, seconds};
// How many requests the engine keeps in flight: facts the plan's estimate simulates too.
pub use klsync_core::data::{
    JOBS_IN_FLIGHT, LOOKUPS_IN_FLIGHT, UNSETS_IN_FLIGHT, first_poll_delay,
};
/// Most failures of one job that klsync isolates by resending halves when the import errors do
/// not say which rows they are: at most `2 · 20 · ⌈log2 10,000⌉ = 560` more jobs, about four
/// minutes at Klaviyo's 150 a minute. Past it, the job's rows not known to be refused are all
/// reported failed (and not recorded), with a reason that says so.
pub const ISOLATE_AT_MOST: u64 = 20;

/// How an apply gives a list the Klaviyo id its members sync needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListGiven {
    /// The apply creates the list: it starts empty.
    Created,
    /// The apply adopts a list that exists, unmanaged until then.
    Adopted,
}

impl ListGiven {
    /// The past participle a report uses: `created`, `adopted`.
    pub fn as_str(self) -> &'static str {
        match self {
            ListGiven::Created => "created",
            ListGiven::Adopted => "adopted",
        }
    }
}

/// Anything that stops a data sync.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The sync's query failed (including a refused write: queries are read-only).
    #[error(
        "{what} `{name}`: query `{query}`{} failed: {source}",
        .declared_at.as_deref().map(|at| format!(" ({at})")).unwrap_or_default()
    )]
    Query {
        /// "profiles sync" or "members of list".
        what: &'static str,
        /// The sync id or list key.
        name: String,
        /// The query name.
        query: String,
        /// Where the query is declared (`queries.yaml:12:3`, or `saved_queries`), once the
        /// command that holds the project filled it in ([`SyncError::declared_in`]).
        declared_at: Option<String>,
        /// The SQL layer's error (boxed: it is large).
        #[source]
        source: Box<SqlError>,
    },
    /// A column the manifest maps is not in the query's result.
    #[error("{what} `{name}`: query `{query}` returns no column `{column}` (columns: {available})")]
    MissingColumn {
        /// "profiles sync" or "members of list".
        what: &'static str,
        /// The sync id or list key.
        name: String,
        /// The query name.
        query: String,
        /// The missing column.
        column: String,
        /// The columns the query does return.
        available: String,
    },
    /// klsync's state database failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The temporary file holding the rows to send could not be written or read back.
    #[error("the temporary file of the rows to send failed: {0}")]
    Spill(#[source] std::io::Error),
    /// A Klaviyo request failed (after the client's retries).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// A list with `members:` has no Klaviyo id yet (apply the list itself first).
    #[error("list `{list}` has no Klaviyo id yet; apply the list before its members")]
    UnknownList {
        /// The list key.
        list: String,
    },
    /// Removals exceed `max_removals` and `force` was not given.
    #[error(
        "list `{list}`: {removals} removal(s) exceed max_removals ({limit}); nothing was sent (use --force to apply anyway)"
    )]
    MaxRemovalsExceeded {
        /// The list key.
        list: String,
        /// Removals planned.
        removals: u64,
        /// The limit.
        limit: u64,
    },
    /// Klaviyo cancelled a bulk import job: which of its rows it applied is unknown.
    #[error("bulk import job {job_id} was cancelled by Klaviyo")]
    JobCancelled {
        /// The job id.
        job_id: String,
    },
    /// A bulk import job did not finish in time.
    #[error("bulk import job {job_id} still not complete after {waited:?}")]
    JobTimeout {
        /// The job id.
        job_id: String,
        /// How long klsync polled.
        waited: Duration,
    },
}

impl SyncError {
    /// `what` `name`'s query `query` failed with `source`; where the query is declared is
    /// filled in later ([`SyncError::declared_in`]).
    fn query(what: &'static str, name: &str, query: &str, source: SqlError) -> SyncError {
        SyncError::Query {
            what,
            name: name.to_owned(),
            query: query.to_owned(),
            declared_at: None,
            source: Box::new(source),
        }
    }

    /// Names where the failed query is declared: its manifest file, line and column, or the
    /// `saved_queries` table when no manifest declares it.
    pub fn declared_in(self, project: &crate::manifest::Project) -> SyncError {
        match self {
            SyncError::Query {
                what,
                name,
                query,
                source,
                ..
            } => {
                let declared_at = project
                    .query_location(&query)
                    .unwrap_or_else(|| "saved_queries".to_owned());
                SyncError::Query {
                    what,
                    name,
                    query,
                    declared_at: Some(declared_at),
                    source,
                }
            }
            other => other,
        }
    }
}

/// What a sync reads: its query (declared in the manifest, else saved), the SQL sources that
/// run it, and what klsync recorded of earlier applies.
#[derive(Clone, Copy)]
pub(super) struct Sources<'a> {
    /// The manifest's `queries:`.
    pub manifest_queries: &'a BTreeMap<String, QuerySpec>,
    /// The SQL sources.
    pub queries: &'a QueryManager,
    /// klsync's state.
    pub store: &'a StateStore,
}

impl Sources<'_> {
    /// The query named `query` of `what` `name`: the manifest's, else a saved one.
    async fn resolve(
        &self,
        what: &'static str,
        name: &str,
        query: &str,
    ) -> Result<QuerySpec, SyncError> {
        self.queries
            .resolve_query(query, self.manifest_queries)
            .await
            .map_err(|source| SyncError::query(what, name, query, source))
    }
}

/// Plan every `profiles:` sync and every list's `members:` of `manifest` (the project's merged
/// manifest). `list_ids` maps list keys to Klaviyo ids for lists that exist. With `check` (the
/// full check, [`check_data`]), the plan also restores what it found changed in Klaviyo, and
/// carries it so that apply does the same.
pub async fn plan_data(
    manifest: &ManifestFile,
    list_ids: &BTreeMap<String, String>,
    queries: &QueryManager,
    store: &StateStore,
    check: Option<&DataCheck>,
    resync: &BTreeSet<String>,
) -> Result<DataPlan, SyncError> {
    let mut total: BTreeMap<Operation, u64> = BTreeMap::new();
    let mut plan = DataPlan {
        profiles: Vec::new(),
        memberships: Vec::new(),
        requests: BTreeMap::new(),
        estimated_seconds: 0,
        targeted: false,
    };
    let sources = Sources {
        manifest_queries: &manifest.queries,
        queries,
        store,
    };
    for spec in &manifest.profiles {
        let found = check.and_then(|check| check.profiles.iter().find(|p| p.id == spec.id));
        let (sync_plan, _, requests) = profiles::compute(spec, sources, false, found, {
            resync.contains(&format!("profiles.{}", spec.id))
        })
        .await?;
        merge(&mut total, &requests);
        plan.profiles.push(sync_plan);
    }
    for list in &manifest.lists {
        let Some(members) = &list.members else {
            continue;
        };
        let list_id = list_ids.get(&list.id).cloned();
        let found = check.and_then(|check| check.memberships.iter().find(|m| m.list == list.id));
        let (member_plan, _, requests) = members::compute(
            &list.id,
            list_id,
            members,
            sources,
            false,
            found,
            resync.contains(&format!("list.{}.members", list.id)),
        )
        .await?;
        merge(&mut total, &requests);
        plan.memberships.push(member_plan);
    }
    plan.requests = request_names(&total);
    plan.estimated_seconds = seconds(&total);
    Ok(plan)
}

/// Read the profiles of each sync's diff sample from Klaviyo and record, in
/// [`ProfileSyncPlan::drift`], properties whose live value is not what klsync last applied.
pub async fn refresh_data(
    plan: &mut DataPlan,
    store: &StateStore,
    client: &KlaviyoClient,
) -> Result<(), SyncError> {
    for sync in &mut plan.profiles {
        sync.drift = profiles::drift(sync, store, client).await?;
    }
    Ok(())
}

/// Apply the data part of a plan: recompute every sync (of a targeted plan: every sync it
/// shows) from the data as it is now, refuse (before sending anything) lists over
/// `max_removals` unless `force`, then send. Every list is taken to exist (or to be missing for
/// good) already: see [`apply_data_beside_changes`] for an apply that creates lists meanwhile.
pub async fn apply_data(
    plan: &DataPlan,
    manifest: &ManifestFile,
    list_ids: &BTreeMap<String, String>,
    queries: &QueryManager,
    client: &KlaviyoClient,
    store: &StateStore,
    force: bool,
) -> Result<DataApplyReport, SyncError> {
    let given = BTreeMap::new();
    let never = |_: String| std::future::ready(None);
    let apply = DataApply {
        plan,
        manifest,
        list_ids,
        queries,
        client,
        store,
        force,
    };
    apply_data_beside_changes(apply, &given, never).await
}

/// What [`apply_data_beside_changes`] applies, and with what.
#[derive(Clone, Copy)]
pub struct DataApply<'a> {
    /// The data part of the plan.
    pub plan: &'a DataPlan,
    /// The project's merged manifest.
    pub manifest: &'a ManifestFile,
    /// Klaviyo ids of the lists that exist, by key.
    pub list_ids: &'a BTreeMap<String, String>,
    /// The SQL sources.
    pub queries: &'a QueryManager,
    /// Klaviyo.
    pub client: &'a KlaviyoClient,
    /// klsync's state.
    pub store: &'a StateStore,
    /// Apply lists over `max_removals` anyway.
    pub force: bool,
}

/// [`apply_data`] while the configuration changes may still be running: the `profiles:` syncs
/// and the `members:` syncs run side by side, each kind one sync at a time in manifest order,
/// and the members of a list in `given` (a list the same apply creates or adopts, so that its id
/// is known only once that change is made) wait for `wait_for_list(key)`: the list's id, or
/// `None` when its change failed, and the sync is skipped (reported in
/// [`DataApplyReport::skipped`]). A created list starts empty, whatever klsync recorded.
pub async fn apply_data_beside_changes<W, F>(
    apply: DataApply<'_>,
    given: &BTreeMap<String, ListGiven>,
    wait_for_list: W,
) -> Result<DataApplyReport, SyncError>
where
    W: Fn(String) -> F,
    F: std::future::Future<Output = Option<String>>,
{
    let (plan, manifest, list_ids) = (apply.plan, apply.manifest, apply.list_ids);
    let (queries, client, store, force) = (apply.queries, apply.client, apply.store, apply.force);
    let mut report = DataApplyReport::default();
    let sources = Sources {
        manifest_queries: &manifest.queries,
        queries,
        store,
    };
    let mut profile_work = Vec::new();
    for spec in &manifest.profiles {
        let planned = plan.profiles.iter().find(|p| p.id == spec.id);
        if planned.is_none() && plan.targeted {
            // A targeted plan left this sync out.
            continue;
        }
        // What the plan's full check found is restored as the plan showed it.
        let check = planned.and_then(|p| p.check.as_ref());
        let resync = planned.is_some_and(|p| p.resync);
        let (fresh, work, _) = profiles::compute(spec, sources, true, check, resync).await?;
        if let Some(planned) = planned
            && planned.counts != fresh.counts
        {
            report.drift.push(count_difference(
                &format!("profiles.{}", spec.id),
                &planned.counts.labelled(),
                &fresh.counts.labelled(),
            ));
        }
        profile_work.push((spec, work));
    }
    let mut member_work = Vec::new();
    for list in &manifest.lists {
        let Some(members) = &list.members else {
            continue;
        };
        let awaited = given.get(&list.id).copied();
        let creating = awaited == Some(ListGiven::Created);
        // A list being created has no members yet, whatever id the state last knew.
        let list_id = if creating {
            None
        } else {
            list_ids.get(&list.id).cloned()
        };
        let planned = plan.memberships.iter().find(|m| m.list == list.id);
        if planned.is_none() && plan.targeted {
            continue;
        }
        let check = planned.and_then(|p| p.check.as_ref());
        let (fresh, work, _) = members::compute(
            &list.id,
            list_id,
            members,
            sources,
            true,
            check,
            planned.is_some_and(|p| p.resync),
        )
        .await?;
        if let Some(planned) = planned
            && planned.counts != fresh.counts
        {
            report.drift.push(count_difference(
                &format!("lists.{}.members", list.id),
                &planned.counts.labelled(),
                &fresh.counts.labelled(),
            ));
        }
        let flagged = planned.is_some_and(|p| p.exceeds_max_removals) || fresh.exceeds_max_removals;
        if flagged && !force {
            let limit = fresh
                .max_removals
                .or(planned.and_then(|p| p.max_removals))
                .unwrap_or(0);
            let removals = fresh
                .counts
                .remove
                .max(planned.map_or(0, |p| p.counts.remove));
            return Err(SyncError::MaxRemovalsExceeded {
                list: list.id.clone(),
                removals,
                limit,
            });
        }
        // A list the apply adopts has an id only once the adoption is recorded.
        let awaited = awaited.filter(|_| fresh.list_id.is_none());
        member_work.push((list, awaited, fresh.list_id.clone(), members, work));
    }
    let profiles = async {
        let mut reports = Vec::new();
        for (spec, work) in profile_work {
            reports.push(profiles::apply(spec, work, client, store).await?);
        }
        Ok::<_, SyncError>(reports)
    };
    let memberships = async {
        let mut reports = Vec::new();
        let mut skipped = Vec::new();
        for (list, awaited, list_id, members, work) in member_work {
            let list_id = if let Some(how) = awaited {
                match wait_for_list(list.id.clone()).await {
                    Some(id) => Some(id),
                    None => {
                        skipped.push(format!(
                            "lists.{}.members: not synced, as list.{} was not {}",
                            list.id,
                            list.id,
                            how.as_str()
                        ));
                        continue;
                    }
                }
            } else {
                list_id
            };
            reports.push(members::apply(&list.id, list_id, members, work, client, store).await?);
        }
        Ok::<_, SyncError>((reports, skipped))
    };
    // Both run to their end even when one fails: a job the other has sent is still followed.
    let (profiles, memberships) = futures::join!(profiles, memberships);
    let (profiles, (memberships, skipped)) = (profiles?, memberships?);
    report.profiles = profiles;
    report.memberships = memberships;
    report.skipped = skipped;
    Ok(report)
}

fn merge(total: &mut BTreeMap<Operation, u64>, part: &BTreeMap<Operation, u64>) {
    for (operation, count) in part {
        *total.entry(*operation).or_default() += count;
    }
}

/// Poll a bulk import job of `profiles` profiles until it completes: first after
/// [`first_poll_delay`], then 1.5 times longer each time, at most 10 s apart, for at most an hour.
async fn wait_for_job(
    client: &KlaviyoClient,
    job_id: &str,
    profiles: usize,
) -> Result<crate::klaviyo::BulkImportJob, SyncError> {
    use crate::klaviyo::JobStatus;
    const LONGEST: Duration = Duration::from_secs(10);
    const GIVE_UP: Duration = Duration::from_secs(3600);
    let started = std::time::Instant::now();
    let mut delay = first_poll_delay(profiles);
    loop {
        tokio::time::sleep(delay).await;
        let job = client.get_bulk_import_job(job_id).await?;
        if matches!(job.status, JobStatus::Complete | JobStatus::Cancelled) {
            return Ok(job);
        }
        if started.elapsed() > GIVE_UP {
            return Err(SyncError::JobTimeout {
                job_id: job_id.to_string(),
                waited: started.elapsed(),
            });
        }
        delay = delay.mul_f64(1.5).min(LONGEST);
    }
}

/// The rows of a finished job Klaviyo refused (identifier → Klaviyo's reason). `profiles` are
/// the job's profiles as sent, in order.
///
/// The job's import errors are read only when it reports failures, and placed on rows
/// ([`refusals::place`]). Failures they do not place are isolated: the rows not known to be
/// refused are sent again in two halves (bulk import is an idempotent upsert, and adding to a
/// list is a set operation), each half's job is read the same way, and so on down to single
/// rows, so only rows Klaviyo refused on their own end up refused. With `k` such rows in a job
/// of `n`, that costs at most `2·k·⌈log2 n⌉` more jobs (each polled until it completes), one
/// import-errors read per job that reports failures, and the rows accepted along the way are
/// sent up to `⌈log2 n⌉` more times. A job whose failures are as many as its unplaced rows
/// needs no isolating (all of them were refused), and one with more than [`ISOLATE_AT_MOST`]
/// unplaced failures is not isolated (its unplaced rows are all reported failed). The halves are
/// sent one after the other, so isolating a job never has more than one job of its own in
/// flight. Every job sent is pushed to `jobs`.
async fn job_refusals(
    client: &KlaviyoClient,
    job: &crate::klaviyo::BulkImportJob,
    profiles: &[crate::klaviyo::ProfileAttributes],
    list_ids: &[String],
    identify_by: IdentifyBy,
    jobs: &mut Vec<String>,
) -> Result<BTreeMap<String, String>, SyncError> {
    use futures::TryStreamExt;
    if job.status != crate::klaviyo::JobStatus::Complete {
        return Err(SyncError::JobCancelled {
            job_id: job.id.clone(),
        });
    }
    if job.failed_count == 0 {
        return Ok(BTreeMap::new());
    }
    let identifiers: Vec<String> = profiles
        .iter()
        .map(|profile| identifier_of_attributes(identify_by, profile))
        .collect();
    let errors: Vec<crate::klaviyo::ImportError> =
        client.bulk_import_errors(&job.id).try_collect().await?;
    let placed = refusals::place(&errors, &identifiers, identify_by);
    let complete = placed.complete(job.failed_count);
    let mut refused: BTreeMap<String, String> = placed
        .refused
        .iter()
        .map(|(at, reason)| (identifiers[*at].clone(), reason.clone()))
        .collect();
    if complete {
        return Ok(refused);
    }
    let suspects: Vec<crate::klaviyo::ProfileAttributes> = profiles
        .iter()
        .enumerate()
        .filter(|(at, _)| !placed.refused.contains_key(at))
        .map(|(_, profile)| profile.clone())
        .collect();
    // Failures the errors did not place, by Klaviyo's count of failed rows (one profile may have
    // several errors); at least one, or the job would be complete.
    let unplaced = job
        .failed_count
        .saturating_sub(placed.refused.len() as u64)
        .max(1);
    let reason = placed.unplaced.first().cloned().unwrap_or_else(|| {
        format!(
            "bulk import job {} counted it as failed without an import error",
            job.id
        )
    });
    if suspects.is_empty() {
        return Ok(refused);
    }
    // As many failures as rows left: every one of them was refused, nothing to isolate.
    if unplaced >= suspects.len() as u64 {
        for suspect in &suspects {
            refused.insert(
                identifier_of_attributes(identify_by, suspect),
                reason.clone(),
            );
        }
        return Ok(refused);
    }
    if unplaced > ISOLATE_AT_MOST {
        let reason = format!(
            "bulk import job {}: Klaviyo refused {unplaced} of these {} rows without saying which \
             (more than {ISOLATE_AT_MOST}, so not isolated by sending them again; none of them \
             is recorded). One of its errors: {reason}",
            job.id,
            suspects.len()
        );
        for suspect in &suspects {
            refused.insert(
                identifier_of_attributes(identify_by, suspect),
                reason.clone(),
            );
        }
        return Ok(refused);
    }
    tracing::info!(
        job = %job.id,
        failed = job.failed_count,
        unplaced,
        rows = suspects.len(),
        "import errors do not say which rows Klaviyo refused; sending the rows again in halves"
    );
    for half in suspects.chunks(suspects.len().div_ceil(2)) {
        crate::interrupt::check(Operation::BulkImportProfiles)?;
        let sub = client.create_bulk_import_job(half, list_ids).await?;
        jobs.push(sub.id.clone());
        let finished = wait_for_job(client, &sub.id, half.len()).await?;
        let found = Box::pin(job_refusals(
            client,
            &finished,
            half,
            list_ids,
            identify_by,
            jobs,
        ))
        .await?;
        refused.extend(found);
    }
    Ok(refused)
}

/// What became of one range of profiles sent in a bulk import job.
pub(super) enum JobOutcome {
    /// Klaviyo finished the job (and any job that isolated its refusals): the rows it refused,
    /// with the reason; every other row was accepted.
    Finished {
        /// The jobs: the range's own first, then those that isolated its refusals.
        job_ids: Vec<String>,
        /// Identifier -> Klaviyo's reason.
        refused: BTreeMap<String, String>,
    },
    /// Klaviyo never accepted the job (or it was never sent): nothing of it was applied.
    NotSent(SyncError),
    /// Klaviyo accepted the job, or may have, but klsync did not learn which rows it applied
    /// (including a cancelled job).
    Unknown {
        /// The jobs sent, when Klaviyo's answer to the first one's creation arrived.
        job_ids: Vec<String>,
        /// What stopped klsync from learning the outcome.
        error: SyncError,
    },
}

/// Whether a failed job creation may still have been accepted: only a refusal Klaviyo (or the
/// client, before sending) stated is known to have changed nothing.
fn may_have_been_accepted(error: &ApiError) -> bool {
    error.is_ambiguous() || matches!(error, ApiError::Decode { .. })
}

/// Create one bulk import job per range of profiles, at most [`JOBS_IN_FLIGHT`] at a time,
/// wait for each and learn which rows it refused ([`job_refusals`]). Outcomes are in range
/// order.
///
/// `build` makes a range's profiles when its job is about to be sent (and again when its
/// refusals must be isolated), so only the jobs in flight are ever materialised. With
/// `intents`, each range is recorded as sent before its job is sent, and with its job id once
/// Klaviyo accepted it (see [`members::Intents`]).
async fn run_jobs<B>(
    client: &KlaviyoClient,
    build: &B,
    ranges: &[std::ops::Range<usize>],
    list_ids: &[String],
    identify_by: IdentifyBy,
    intents: Option<&members::Intents<'_>>,
) -> Vec<JobOutcome>
where
    B: Fn(std::ops::Range<usize>) -> Result<Vec<crate::klaviyo::ProfileAttributes>, SyncError>
        + Sync,
{
    use futures::StreamExt;
    job_outcomes(client, build, ranges, list_ids, identify_by, intents)
        .collect()
        .await
}

/// [`run_jobs`] as a stream: each range's outcome as soon as it and those before it are known,
/// so that the caller can record a job's rows while later jobs are still paced.
fn job_outcomes<'a, B>(
    client: &'a KlaviyoClient,
    build: &'a B,
    ranges: &'a [std::ops::Range<usize>],
    list_ids: &'a [String],
    identify_by: IdentifyBy,
    intents: Option<&'a members::Intents<'a>>,
) -> impl futures::Stream<Item = JobOutcome> + 'a
where
    B: Fn(std::ops::Range<usize>) -> Result<Vec<crate::klaviyo::ProfileAttributes>, SyncError>
        + Sync,
{
    use futures::StreamExt;
    futures::stream::iter(ranges.iter().cloned().enumerate())
        .map(move |(index, range)| async move {
            // No new job once the run is stopping (and no intent recorded for it); jobs already
            // sent are still followed.
            if let Err(error) = crate::interrupt::check(Operation::BulkImportProfiles) {
                return JobOutcome::NotSent(error.into());
            }
            if let Some(intents) = intents
                && let Err(error) = intents.sending(index).await
            {
                return JobOutcome::NotSent(error);
            }
            let profiles = match build(range.clone()) {
                Ok(profiles) => profiles,
                Err(error) => return JobOutcome::NotSent(error),
            };
            let count = profiles.len();
            let job = match client.create_bulk_import_job(&profiles, list_ids).await {
                Ok(job) => job,
                Err(error) if may_have_been_accepted(&error) => {
                    return JobOutcome::Unknown {
                        job_ids: Vec::new(),
                        error: error.into(),
                    };
                }
                Err(error) => return JobOutcome::NotSent(error.into()),
            };
            drop(profiles);
            let mut job_ids = vec![job.id.clone()];
            let outcome = async {
                if let Some(intents) = intents {
                    intents.accepted(index, &job.id).await?;
                }
                let finished = wait_for_job(client, &job.id, count).await?;
                if finished.failed_count == 0 {
                    // Nothing to place: spare building the profiles again.
                    return job_refusals(
                        client,
                        &finished,
                        &[],
                        list_ids,
                        identify_by,
                        &mut job_ids,
                    )
                    .await;
                }
                let profiles = build(range)?;
                job_refusals(
                    client,
                    &finished,
                    &profiles,
                    list_ids,
                    identify_by,
                    &mut job_ids,
                )
                .await
            };
            match outcome.await {
                Ok(refused) => JobOutcome::Finished { job_ids, refused },
                Err(error) => JobOutcome::Unknown { job_ids, error },
            }
        })
        .buffered(JOBS_IN_FLIGHT)
}

fn identifier_field(identify_by: IdentifyBy) -> &'static str {
    match identify_by {
        IdentifyBy::Email => "email",
        IdentifyBy::ExternalId => "external_id",
        IdentifyBy::PhoneNumber => "phone_number",
    }
}

fn profile_identifier(identify_by: IdentifyBy) -> crate::klaviyo::ProfileIdentifier {
    match identify_by {
        IdentifyBy::Email => crate::klaviyo::ProfileIdentifier::Email,
        IdentifyBy::ExternalId => crate::klaviyo::ProfileIdentifier::ExternalId,
        IdentifyBy::PhoneNumber => crate::klaviyo::ProfileIdentifier::PhoneNumber,
    }
}

/// A profile's identifier of the kind `identify_by`, normalised (`None`: it has none, or one
/// klsync would not accept).
fn identifier_of(identify_by: IdentifyBy, profile: &crate::klaviyo::ProfileData) -> Option<String> {
    let value = match identify_by {
        IdentifyBy::Email => profile.email.as_ref(),
        IdentifyBy::ExternalId => profile.external_id.as_ref(),
        IdentifyBy::PhoneNumber => profile.phone_number.as_ref(),
    }?;
    identify::normalize(identify_by, &serde_json::Value::String(value.clone())).ok()
}

/// The identifier of the kind `identify_by` that [`attributes_for`] put in `attributes`.
fn identifier_of_attributes(
    identify_by: IdentifyBy,
    attributes: &crate::klaviyo::ProfileAttributes,
) -> String {
    let value = match identify_by {
        IdentifyBy::Email => &attributes.email,
        IdentifyBy::ExternalId => &attributes.external_id,
        IdentifyBy::PhoneNumber => &attributes.phone_number,
    };
    value.clone().flatten().unwrap_or_default()
}

/// Profile attributes carrying only the identifier (and `properties` when given).
fn attributes_for(
    identify_by: IdentifyBy,
    identifier: &str,
    properties: Option<serde_json::Map<String, serde_json::Value>>,
) -> crate::klaviyo::ProfileAttributes {
    let value = Some(Some(identifier.to_string()));
    let mut attributes = crate::klaviyo::ProfileAttributes {
        properties,
        ..Default::default()
    };
    match identify_by {
        IdentifyBy::Email => attributes.email = value,
        IdentifyBy::ExternalId => attributes.external_id = value,
        IdentifyBy::PhoneNumber => attributes.phone_number = value,
    }
    attributes
}

/// Checks a query's first row has every column the manifest maps.
fn check_columns<'a>(
    row: &crate::sql::Row,
    columns: impl IntoIterator<Item = &'a String>,
    what: &'static str,
    name: &str,
    query: &str,
) -> Result<(), SyncError> {
    for column in columns {
        if !row.contains_key(column) {
            return Err(SyncError::MissingColumn {
                what,
                name: name.to_string(),
                query: query.to_string(),
                column: column.clone(),
                available: row.keys().cloned().collect::<Vec<_>>().join(", "),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_counts_leave_out_operations_with_none() {
        let requests = requests_of([
            (Operation::BulkImportProfiles, 2),
            (Operation::CreateOrUpdateProfile, 0),
        ]);
        assert_eq!(
            requests.into_iter().collect::<Vec<_>>(),
            [(Operation::BulkImportProfiles, 2)]
        );
    }

    #[test]
    fn a_failed_sample_keeps_the_first_few_with_their_reasons() {
        let failed: BTreeMap<String, String> = (0..SAMPLE_SIZE + 5)
            .map(|i| (format!("p{i:02}"), format!("reason {i}")))
            .collect();
        let sample = failed_sample(failed);
        assert_eq!(sample.len(), SAMPLE_SIZE);
        assert_eq!(
            sample[0],
            FailedRow {
                identifier: "p00".into(),
                reason: "reason 0".into(),
            }
        );
    }

    #[test]
    fn a_query_failure_names_the_sync_and_its_query() {
        let err = SyncError::query("members of list", "vip", "vip_rows", SqlError::Interrupted);
        assert!(
            matches!(
                &err,
                SyncError::Query {
                    declared_at: None,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with("members of list `vip`: query `vip_rows` failed: "),
            "{err}"
        );
    }

    #[test]
    fn data_changed_since_the_plan_is_said_in_the_plan_s_words() {
        let planned = ProfileCounts {
            new: 3,
            changed: 1,
            unchanged: 10,
            ..ProfileCounts::default()
        };
        let found = ProfileCounts {
            new: 4,
            changed: 1,
            unchanged: 9,
            ..ProfileCounts::default()
        };
        assert_eq!(
            count_difference("profiles.customers", &planned.labelled(), &found.labelled()),
            "profiles.customers: planned 3 new, 10 unchanged; found 4 new, 9 unchanged"
        );
        let planned = MembershipCounts {
            add: 2,
            ..MembershipCounts::default()
        };
        let found = MembershipCounts {
            remove: 1,
            ..planned
        };
        assert_eq!(
            count_difference("lists.vip.members", &planned.labelled(), &found.labelled()),
            "lists.vip.members: planned 0 to remove; found 1 to remove"
        );
    }

    #[test]
    fn big_jobs_are_polled_later() {
        assert_eq!(first_poll_delay(1), Duration::from_millis(250));
        assert_eq!(first_poll_delay(999), Duration::from_millis(250));
        assert_eq!(first_poll_delay(10_000), Duration::from_millis(750));
    }
}
