//! `members:` on a list: add the query's profiles; in mirror mode remove those klsync added that
//! left the query. Members who joined any other way are never removed: before recording its
//! adds, apply reads the list's members (with their identifiers) and records a profile that was
//! already there as `preexisting`, not as added by klsync.
//!
//! Whatever klsync sends is owned by it: each job's profiles are recorded as
//! [`MemberOrigin::Sent`] before the job is sent ([`Intents`]), and only the job's known outcome
//! turns them into `Added` (accepted) or drops them (refused). An apply killed after Klaviyo
//! accepted a job, or one that gave up polling it, leaves them `Sent`: the next plan counts them
//! as adds to confirm, and the next apply, finding them on the list, records them as added by
//! klsync (never as preexisting), so mirror mode removes them once they leave the query.

use std::collections::{BTreeMap, HashMap};

use futures::StreamExt;
use serde_json::Value;

use super::chunk::{Chunker, chunk_ranges};
use super::{
    FailedRow, MembershipCounts, MembershipPlan, MembershipReport, RejectedRow, SAMPLE_SIZE,
    SyncError,
};
use super::{check, diff, identify};
use crate::klaviyo::{KlaviyoClient, Operation, ProfileIdentifier, limits};
use crate::manifest::types::{MaxRemovals, MembershipMode, MembershipSpec};
use crate::state::{MemberOrigin, RemovedMember, StateStore, SyncMemberRecord};

const WHAT: &str = "members of list";
/// Profile ids per list relationship request.
const IDS_PER_REMOVE: u64 = limits::LIST_MEMBERS_PER_CALL as u64;
/// Identifiers per `any(...)` profile lookup.
const IDS_PER_LOOKUP: u64 = limits::PROFILE_FILTER_BATCH as u64;
/// Profiles per page of a bulk import job's profiles.
const JOB_PROFILES_PER_PAGE: u64 = limits::PROFILES_PAGE_MAX as u64;

/// What an apply sends for one list; empty when planning.
#[derive(Default)]
pub(super) struct MemberWork {
    adds: Vec<String>,
    /// Keys of the adds klsync already owns (sent by an earlier apply that never learned the
    /// outcome): found on the list, they are recorded as added by klsync, not as preexisting.
    owned: diff::KeySet,
    removes: Vec<SyncMemberRecord>,
    /// Preexisting members that left the query: forgotten, never removed.
    stale: Vec<String>,
    /// Members with a pending removal that the query returns again: klsync no longer owes it.
    unpend: Vec<String>,
}

/// Records a list's adds in klsync's state before their bulk import job is sent, and the job
/// once Klaviyo accepted it ([`MemberOrigin::Sent`]), so that whatever klsync sent is owned by
/// it even if the apply dies or loses track of the job. One send per job: one multi-row write
/// before it is sent, one single-row write once accepted.
pub(super) struct Intents<'a> {
    store: &'a StateStore,
    list_key: &'a str,
    /// The adds; job `i` sends `identifiers[ranges[i]]`.
    identifiers: &'a [String],
    ranges: &'a [std::ops::Range<usize>],
    /// klsync's id for each job's send.
    send_ids: Vec<String>,
}

impl Intents<'_> {
    /// Job `job` is about to be sent.
    pub(super) async fn sending(&self, job: usize) -> Result<(), SyncError> {
        let identifiers = &self.identifiers[self.ranges[job].clone()];
        Ok(self
            .store
            .record_member_send(self.list_key, &self.send_ids[job], identifiers)
            .await?)
    }

    /// Klaviyo accepted job `job` as `job_id`.
    pub(super) async fn accepted(&self, job: usize, job_id: &str) -> Result<(), SyncError> {
        Ok(self
            .store
            .record_member_send_job(&self.send_ids[job], job_id)
            .await?)
    }
}

/// The removal limit as a count: a percentage is of the members klsync added (the only ones
/// it may remove), rounded down.
pub(super) fn removal_limit(limit: &MaxRemovals, recorded: u64) -> u64 {
    match limit {
        MaxRemovals::Count(count) => *count,
        MaxRemovals::Percent(text) => {
            let percent: f64 = text.trim_end_matches('%').trim().parse().unwrap_or(0.0);
            // Exact for the manifest's syntax (at most 100%, a few decimals).
            ((recorded as f64) * percent / 100.0 + 1e-9).floor() as u64
        }
    }
}

/// Stream the list's query and compare it with the members klsync added. With `check` (the
/// full check's findings for this list), recorded members it found missing from the list are
/// added again if the query returns them, and forgotten if not.
pub(super) async fn compute(
    list_key: &str,
    list_id: Option<String>,
    spec: &MembershipSpec,
    sources: super::Sources<'_>,
    keep_work: bool,
    check: Option<&super::MembershipCheck>,
    resync: bool,
) -> Result<(MembershipPlan, MemberWork, BTreeMap<Operation, u64>), SyncError> {
    let query_error = |source| SyncError::query(WHAT, list_key, &spec.query, source);
    let super::Sources { queries, store, .. } = sources;
    let query = sources.resolve(WHAT, list_key, &spec.query).await?;
    let recorded = store.sync_members(list_key).await?;
    // Compact keys, not strings: a list query may return millions of rows.
    let recorded_keys: diff::KeySet = recorded
        .iter()
        .map(|m| diff::process_identifier_key(&m.identifier))
        .collect();
    // Sent by an apply that never learned the outcome: added again (apply first checks the
    // list, and records those it finds as klsync's).
    let unconfirmed_keys: diff::KeySet = recorded
        .iter()
        .filter(|m| matches!(m.origin, MemberOrigin::Sent { .. }))
        .map(|m| diff::process_identifier_key(&m.identifier))
        .collect();
    // Removals klsync still owes from an earlier apply.
    let pending_keys: diff::KeySet = recorded
        .iter()
        .filter(|m| m.removal_pending.is_some())
        .map(|m| diff::process_identifier_key(&m.identifier))
        .collect();
    let mut unpend = Vec::new();
    let klsyncs_keys: diff::KeySet = recorded
        .iter()
        .filter(|m| m.origin.is_klsyncs())
        .map(|m| diff::process_identifier_key(&m.identifier))
        .collect();
    // Recorded, but the full check found them gone from the list.
    let missing_keys: diff::KeySet = check
        .filter(|check| !check.list_deleted)
        .map(|check| {
            check
                .missing
                .iter()
                .map(|identifier| diff::process_identifier_key(identifier))
                .collect()
        })
        .unwrap_or_default();
    let mut owned = diff::KeySet::default();
    let mut counts = MembershipCounts::default();
    let mut rejected_sample = Vec::new();
    let mut add_sample = Vec::new();
    let mut adds = Vec::new();
    let mut desired = diff::KeySet::default();
    let column = super::identifier_field(spec.identify_by).to_string();
    let mut rows = std::pin::pin!(queries.execute_query(&query.sql, &query.params));
    let mut index = 0u64;
    while let Some(row) = rows.next().await {
        let row = row.map_err(query_error)?;
        index += 1;
        if index == 1 {
            super::check_columns(&row, [&column], WHAT, list_key, &spec.query)?;
        }
        let raw = row.get(&column).cloned().unwrap_or(Value::Null);
        let identifier = match identify::normalize(spec.identify_by, &raw) {
            Ok(identifier) => identifier,
            Err(problem) => {
                counts.rejected += 1;
                if rejected_sample.len() < SAMPLE_SIZE {
                    rejected_sample.push(RejectedRow {
                        row: index,
                        identifier: raw.to_string(),
                        reason: problem.to_string(),
                    });
                }
                continue;
            }
        };
        let key = diff::process_identifier_key(&identifier);
        if !desired.insert(key) {
            counts.duplicates += 1;
            continue;
        }
        let unconfirmed = unconfirmed_keys.contains(&key);
        if recorded_keys.contains(&key) && !unconfirmed && !missing_keys.contains(&key) && !resync {
            counts.unchanged += 1;
            if keep_work && pending_keys.contains(&key) {
                unpend.push(identifier);
            }
        } else {
            counts.add += 1;
            counts.unconfirmed += u64::from(unconfirmed);
            if klsyncs_keys.contains(&key) {
                owned.insert(key);
            }
            if add_sample.len() < SAMPLE_SIZE {
                add_sample.push(identifier.clone());
            }
            if keep_work {
                adds.push(identifier);
            }
        }
    }
    // Gone from the query: those klsync added are removed (mirror mode); those that joined
    // otherwise, and those the full check found no longer on the list, are forgotten.
    let (gone_added, gone_preexisting): (Vec<&SyncMemberRecord>, Vec<&SyncMemberRecord>) = recorded
        .iter()
        .filter(|m| !desired.contains(&diff::process_identifier_key(&m.identifier)))
        .partition(|m| {
            m.origin.is_klsyncs()
                && !missing_keys.contains(&diff::process_identifier_key(&m.identifier))
        });
    let removes: Vec<SyncMemberRecord> = if spec.mode == MembershipMode::Mirror {
        gone_added.into_iter().cloned().collect()
    } else {
        Vec::new()
    };
    let stale: Vec<String> = gone_preexisting
        .into_iter()
        .map(|m| m.identifier.clone())
        .collect();
    counts.remove = removes.len() as u64;
    let pending: Vec<&SyncMemberRecord> = removes
        .iter()
        .filter(|m| m.removal_pending.is_some())
        .collect();
    counts.pending_removals = pending.len() as u64;
    let pending_removal_sample: Vec<FailedRow> = pending
        .iter()
        .take(SAMPLE_SIZE)
        .filter_map(|m| {
            Some(FailedRow {
                identifier: m.identifier.clone(),
                reason: m.removal_pending.as_ref()?.reason.clone(),
            })
        })
        .collect();
    let added_by_klsync = recorded.iter().filter(|m| m.origin.is_klsyncs()).count() as u64;
    let max_removals = spec
        .max_removals
        .as_ref()
        .map(|limit| removal_limit(limit, added_by_klsync));
    let exceeds_max_removals = max_removals.is_some_and(|limit| counts.remove > limit);
    let add_jobs = add_job_count(spec, counts.add);
    let lookups = removes.iter().filter(|m| m.profile_id.is_none()).count() as u64;
    let requests = super::requests_of([
        (
            Operation::GetProfilesForList,
            check::member_lookup_requests(spec.identify_by, counts.add, recorded.len() as u64),
        ),
        (Operation::BulkImportProfiles, add_jobs),
        // Mirror mode records the profile ids of what it adds ([`record_profile_ids`]).
        (
            Operation::GetProfilesForBulkImportProfilesJob,
            if spec.mode == MembershipMode::Mirror {
                counts.add.div_ceil(JOB_PROFILES_PER_PAGE)
            } else {
                0
            },
        ),
        (Operation::GetBulkImportProfilesJob, add_jobs),
        (Operation::GetProfiles, lookups.div_ceil(IDS_PER_LOOKUP)),
        (
            Operation::RemoveProfilesFromList,
            counts.remove.div_ceil(IDS_PER_REMOVE),
        ),
    ]);
    let plan = MembershipPlan {
        list: list_key.to_string(),
        list_id,
        query: spec.query.clone(),
        identify_by: spec.identify_by,
        mode: spec.mode,
        rows: index,
        counts,
        add_sample,
        remove_sample: removes
            .iter()
            .take(SAMPLE_SIZE)
            .map(|m| m.identifier.clone())
            .collect(),
        rejected_sample,
        pending_removal_sample,
        max_removals,
        exceeds_max_removals,
        requests: super::request_names(&requests),
        estimated_seconds: super::seconds(&requests),
        check: check.cloned(),
        resync,
    };
    let work = if keep_work {
        MemberWork {
            adds,
            owned,
            removes,
            stale,
            unpend,
        }
    } else {
        MemberWork::default()
    };
    Ok((plan, work, requests))
}

/// Identifier-only profiles are far below 5 MB per 10,000, so jobs are counted by number; the
/// chunker still checks bytes at apply.
fn add_job_count(_spec: &MembershipSpec, adds: u64) -> u64 {
    adds.div_ceil(crate::klaviyo::BULK_IMPORT_MAX_PROFILES as u64)
}

/// Send one list's adds and removes and record them.
pub(super) async fn apply(
    list_key: &str,
    list_id: Option<String>,
    spec: &MembershipSpec,
    work: MemberWork,
    client: &KlaviyoClient,
    store: &StateStore,
) -> Result<MembershipReport, SyncError> {
    let mut report = MembershipReport {
        list: list_key.to_string(),
        ..MembershipReport::default()
    };
    if !work.stale.is_empty() {
        store.forget_sync_members(list_key, &work.stale).await?;
    }
    store
        .record_pending_removals(list_key, &work.unpend, None)
        .await?;
    if work.adds.is_empty() && work.removes.is_empty() {
        return Ok(report);
    }
    let list_id = list_id.ok_or_else(|| SyncError::UnknownList {
        list: list_key.to_string(),
    })?;
    let mut failed: BTreeMap<String, String> = BTreeMap::new();

    // Profiles already on the list joined some other way: recorded as such, never sent, so
    // mirror mode will not remove them when they leave the query. Those an earlier apply sent
    // are klsync's: recorded as added.
    let (adds, already) = split_existing(list_id.as_str(), spec, work.adds, client).await?;
    let already: Vec<SyncMemberRecord> = already
        .into_iter()
        .map(|mut member| {
            if work
                .owned
                .contains(&diff::process_identifier_key(&member.identifier))
            {
                member.origin = MemberOrigin::Added;
                report.confirmed += 1;
            } else {
                report.already_members += 1;
            }
            member
        })
        .collect();
    store.record_sync_members(list_key, &already).await?;

    // Adds: bulk import with the list relationship, identifier only.
    let profile = |identifier: &String| super::attributes_for(spec.identify_by, identifier, None);
    let sizes: Vec<usize> = adds
        .iter()
        .map(|identifier| {
            serde_json::to_vec(&crate::klaviyo::types::profile_upsert_object(&profile(
                identifier,
            )))
            .map_or(usize::MAX, |bytes| bytes.len())
        })
        .collect();
    let ranges = chunk_ranges(&sizes, Chunker::default());
    let lists = [list_id.clone()];
    let build = |range: std::ops::Range<usize>| Ok(adds[range].iter().map(profile).collect());
    let intents = Intents {
        store,
        list_key,
        identifiers: &adds,
        ranges: &ranges,
        send_ids: ranges
            .iter()
            .map(|_| uuid::Uuid::new_v4().to_string())
            .collect(),
    };
    let outcomes = super::run_jobs(
        client,
        &build,
        &ranges,
        &lists,
        spec.identify_by,
        Some(&intents),
    )
    .await;
    for ((range, send_id), outcome) in ranges.iter().zip(&intents.send_ids).zip(outcomes) {
        let chunk = &adds[range.clone()];
        let reason = match outcome {
            super::JobOutcome::Finished { job_ids, refused } => {
                let refused_here: Vec<String> = refused.keys().cloned().collect();
                store
                    .settle_member_send(list_key, send_id, &refused_here)
                    .await?;
                if spec.mode == MembershipMode::Mirror {
                    let accepted = chunk.iter().filter(|id| !refused.contains_key(*id));
                    record_profile_ids(list_key, spec, &job_ids, accepted, client, store).await?;
                }
                report.jobs.extend(job_ids);
                report.added += chunk
                    .iter()
                    .filter(|identifier| !refused.contains_key(*identifier))
                    .count() as u64;
                failed.extend(refused);
                continue;
            }
            super::JobOutcome::NotSent(error) => {
                store.drop_member_send(list_key, send_id).await?;
                error.to_string()
            }
            super::JobOutcome::Unknown { job_ids, error } => {
                report.jobs.extend(job_ids);
                format!("{error}; {OUTCOME_UNKNOWN}")
            }
        };
        for identifier in chunk {
            failed.insert(identifier.clone(), reason.clone());
        }
    }

    // Removes: resolve missing profile ids (100 per lookup), then 1,000 per request.
    if !work.removes.is_empty() {
        let unresolved: Vec<String> = work
            .removes
            .iter()
            .filter(|m| m.profile_id.is_none())
            .map(|m| m.identifier.clone())
            .collect();
        let mut ids: HashMap<String, String> = work
            .removes
            .iter()
            .filter_map(|m| Some((m.identifier.clone(), m.profile_id.clone()?)))
            .collect();
        if !unresolved.is_empty() {
            for profile in client
                .find_profiles_by(super::profile_identifier(spec.identify_by), &unresolved)
                .await?
            {
                if let Some(identifier) =
                    super::identifier_of(spec.identify_by, &profile.attributes)
                {
                    ids.insert(identifier, profile.id);
                }
            }
        }
        // A member no profile id was found for may still be on the list (its identifier was
        // changed in Klaviyo): kept, with the reason, and tried again by every apply, never
        // forgotten as if removed.
        let (removed, pending): (Vec<SyncMemberRecord>, Vec<SyncMemberRecord>) = work
            .removes
            .into_iter()
            .partition(|m| ids.contains_key(&m.identifier));
        let removed: Vec<RemovedMember> = removed
            .into_iter()
            .map(|m| RemovedMember {
                profile_id: ids.get(&m.identifier).cloned(),
                identifier: m.identifier,
            })
            .collect();
        let profile_ids: Vec<String> = removed
            .iter()
            .filter_map(|m| m.profile_id.clone())
            .collect();
        remove_by_id(client, &list_id, &profile_ids).await?;
        store.record_member_removals(list_key, &removed).await?;
        report.removed = removed.len() as u64;
        let reason = unresolved_removal(spec.identify_by);
        let pending: Vec<String> = pending.into_iter().map(|m| m.identifier).collect();
        store
            .record_pending_removals(list_key, &pending, Some(&reason))
            .await?;
        report.removal_pending = pending.len() as u64;
        report.removal_pending_sample = pending
            .into_iter()
            .take(SAMPLE_SIZE)
            .map(|identifier| FailedRow {
                identifier,
                reason: reason.clone(),
            })
            .collect();
    }

    // Sends settled since (their members found on the list, or removed) are history.
    store.forget_settled_sends(list_key).await?;

    report.failed = failed.len() as u64;
    report.failed_sample = super::failed_sample(failed);
    Ok(report)
}

/// Remove profiles from a list by id. The emulator refuses (400) a removal naming a profile that
/// no longer exists, and the spec does not say what Klaviyo does; a profile deleted in Klaviyo
/// (its id was recorded when klsync added it) is on no list, so on a refusal the ids still in
/// use are looked up (`GET /api/profiles?filter=any(id,[...])`, 100 a request) and only those are
/// removed. Removal is a set operation: repeating the batches that went through is harmless.
async fn remove_by_id(
    client: &KlaviyoClient,
    list_id: &str,
    profile_ids: &[String],
) -> Result<(), SyncError> {
    let refusal = match client.remove_profiles_from_list(list_id, profile_ids).await {
        Ok(()) => return Ok(()),
        Err(error) if error.status() == Some(400) => error,
        Err(error) => return Err(error.into()),
    };
    let existing: Vec<String> = client
        .find_profiles_by(ProfileIdentifier::Id, profile_ids)
        .await?
        .into_iter()
        .map(|profile| profile.id)
        .collect();
    if existing.len() == profile_ids.len() {
        // Every profile exists: the refusal was about something else.
        return Err(refusal.into());
    }
    Ok(client.remove_profiles_from_list(list_id, &existing).await?)
}

/// Record the profile ids of a finished job's accepted adds (`accepted`), read from the profiles
/// its jobs created or updated (one request per 100), so that mirror mode removes them by id
/// later, whatever happens to their identifier in Klaviyo meanwhile. Only mirror mode removes,
/// so only it pays for this. A failed read is not an apply failure: those members stay without
/// an id and are looked up by identifier when removed, as before.
async fn record_profile_ids(
    list_key: &str,
    spec: &MembershipSpec,
    job_ids: &[String],
    accepted: impl Iterator<Item = &String>,
    client: &KlaviyoClient,
    store: &StateStore,
) -> Result<(), SyncError> {
    use futures::TryStreamExt;
    let mut ids: HashMap<String, String> = HashMap::new();
    for job_id in job_ids {
        let mut profiles = client.bulk_import_job_profiles(job_id);
        loop {
            match profiles.try_next().await {
                Ok(Some(profile)) => {
                    if let Some(identifier) =
                        super::identifier_of(spec.identify_by, &profile.attributes)
                    {
                        ids.insert(identifier, profile.id);
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(
                        list = list_key,
                        job = %job_id,
                        %error,
                        "could not read the profiles of a bulk import job: their ids stay \
                         unknown, and mirror mode looks them up by identifier to remove them"
                    );
                    break;
                }
            }
        }
    }
    let members: Vec<SyncMemberRecord> = accepted
        .filter_map(|identifier| {
            Some(SyncMemberRecord {
                identifier: identifier.clone(),
                profile_id: Some(ids.get(identifier)?.clone()),
                origin: MemberOrigin::Added,
                removal_pending: None,
            })
        })
        .collect();
    Ok(store.record_sync_members(list_key, &members).await?)
}

/// Why a recorded member could not be removed: no profile id recorded for it, and none found by
/// its identifier.
fn unresolved_removal(identify_by: crate::manifest::types::IdentifyBy) -> String {
    let field = super::identifier_field(identify_by);
    format!(
        "no profile id recorded and no profile in Klaviyo has this {field}: if its {field} was \
         changed in Klaviyo, it is still on the list; kept and tried again by every apply \
         (`klsync drift --members` reads the list)"
    )
}

/// Why an add whose job's outcome klsync did not learn is not simply retried.
const OUTCOME_UNKNOWN: &str = "klsync may have added these profiles, so they stay recorded as \
     sent by klsync; the next apply checks the list for them";

/// Split `adds` into profiles to add and those already members of the list (as records marked
/// `preexisting`, with their profile id), looking up only the profiles being added
/// ([`check::member_lookup_requests`]: `adds / 100` requests by email or phone number, however
/// long the list; a whole read of the list for external ids, which Klaviyo cannot filter
/// members by).
async fn split_existing(
    list_id: &str,
    spec: &MembershipSpec,
    adds: Vec<String>,
    client: &KlaviyoClient,
) -> Result<(Vec<String>, Vec<SyncMemberRecord>), SyncError> {
    if adds.is_empty() {
        return Ok((adds, Vec::new()));
    }
    let members = check::members_on_list(client, list_id, spec.identify_by, &adds).await?;
    if members.is_empty() {
        return Ok((adds, Vec::new()));
    }
    let mut already = Vec::new();
    let mut to_add = Vec::with_capacity(adds.len());
    for identifier in adds {
        match members.get(&identifier) {
            Some(profile_id) => already.push(SyncMemberRecord {
                identifier,
                profile_id: Some(profile_id.clone()),
                origin: MemberOrigin::Preexisting,
                removal_pending: None,
            }),
            None => to_add.push(identifier),
        }
    }
    Ok((to_add, already))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_cost_lookups_of_the_added_not_reads_of_the_list() {
        use crate::manifest::types::IdentifyBy;
        use check::member_lookup_requests as lookups;
        assert_eq!(lookups(IdentifyBy::Email, 0, 5_000), 0);
        assert_eq!(lookups(IdentifyBy::Email, 1, 0), 1);
        assert_eq!(lookups(IdentifyBy::Email, 1_000, 1_000_000), 10);
        assert_eq!(lookups(IdentifyBy::PhoneNumber, 101, 7), 2);
        // Klaviyo cannot filter a list's members by external id: the list is read whole.
        assert_eq!(lookups(IdentifyBy::ExternalId, 1, 0), 1);
        assert_eq!(lookups(IdentifyBy::ExternalId, 1_000, 1_000_000), 10_000);
    }

    #[test]
    fn percentages_apply_to_recorded_members_rounding_down() {
        assert_eq!(removal_limit(&MaxRemovals::Count(7), 1000), 7);
        assert_eq!(removal_limit(&MaxRemovals::Percent("5%".into()), 1000), 50);
        assert_eq!(
            removal_limit(&MaxRemovals::Percent("2.5%".into()), 1000),
            25
        );
        assert_eq!(removal_limit(&MaxRemovals::Percent("10%".into()), 19), 1);
        assert_eq!(removal_limit(&MaxRemovals::Percent("100%".into()), 3), 3);
        assert_eq!(removal_limit(&MaxRemovals::Percent("0.1%".into()), 0), 0);
    }
}
