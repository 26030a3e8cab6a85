//! The data part of a plan and of an apply's report: what the `profiles:` syncs and the lists'
//! `members:` would send, what they sent, and what the full check found. Pure data and the
//! words for it; the `klsync` package's sync engine computes these by running the queries,
//! reading klsync's state and talking to Klaviyo.

mod check;
mod render;

use std::collections::BTreeMap;
use std::time::Duration;

use klaviyo_spec::operations::Operation;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::manifest::OnMissingRow;
use crate::manifest::types::{IdentifyBy, MembershipMode};

pub use check::{CheckCost, CheckScope, DataCheck, MembershipCheck, ProfileCheck};
pub use render::{check_summary, render_check, render_report, render_text, render_text_sampled};

/// Rows kept in each sample of a plan or report.
pub const SAMPLE_SIZE: usize = 10;
/// Bulk import jobs created and polled at the same time.
pub const JOBS_IN_FLIGHT: usize = 4;
/// `profile-import` requests (property removals) in flight at once (the client paces them).
pub const UNSETS_IN_FLIGHT: usize = 8;
/// Lookups of the full check in flight (the client paces them to Klaviyo's limits).
pub const LOOKUPS_IN_FLIGHT: usize = 4;

/// The wait before a job's first poll: 250 ms plus 50 ms per 1,000 profiles (750 ms for a full
/// job of 10,000), since a big job is never done after a quarter of a second and each early
/// poll is a wasted request.
pub fn first_poll_delay(profiles: usize) -> Duration {
    Duration::from_millis(250 + 50 * (profiles as u64 / 1_000))
}

/// One property whose value changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FieldChange {
    /// The Klaviyo property name.
    pub property: String,
    /// The value klsync last applied (`None`: never set by klsync).
    pub before: Option<Value>,
    /// The new value (`None`: the property is removed from the profile).
    pub after: Option<Value>,
}

/// The data part of a plan: every `profiles:` sync and every list with `members:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DataPlan {
    /// One entry per `profiles:` sync, by id.
    pub profiles: Vec<ProfileSyncPlan>,
    /// One entry per list with `members:`, by list key.
    pub memberships: Vec<MembershipPlan>,
    /// Requests the apply sends, per `operationId` (lower bound: one poll per job).
    pub requests: BTreeMap<String, u64>,
    /// Least time those requests take at Klaviyo's published limits on their own, in seconds.
    /// The plan's `cost.estimated_seconds` is the one estimate of an apply, configuration and
    /// data together.
    pub estimated_seconds: u64,
    /// Restricted by `--target` ([`DataPlan::retain`]): apply runs only the syncs listed here.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub targeted: bool,
}

impl DataPlan {
    /// Keep only the profile syncs and the lists' member syncs the predicates accept (a
    /// targeted plan, [`crate::plan::targeted`]), with the requests and time of what is left.
    pub fn retain(
        &mut self,
        keep_profiles: impl Fn(&str) -> bool,
        keep_list: impl Fn(&str) -> bool,
    ) {
        self.targeted = true;
        self.profiles.retain(|sync| keep_profiles(&sync.id));
        self.memberships.retain(|sync| keep_list(&sync.list));
        let mut total: BTreeMap<Operation, u64> = BTreeMap::new();
        let parts = self
            .profiles
            .iter()
            .map(|sync| &sync.requests)
            .chain(self.memberships.iter().map(|sync| &sync.requests));
        for part in parts {
            for (name, count) in part {
                if let Some(operation) = Operation::ALL.iter().find(|op| op.operation_id() == name)
                {
                    *total.entry(*operation).or_default() += count;
                }
            }
        }
        self.requests = request_names(&total);
        self.estimated_seconds = seconds(&total);
    }

    /// The syncs planned with `--resync`, as `--resync` names them.
    pub fn resyncs(&self) -> Vec<String> {
        let profiles = self
            .profiles
            .iter()
            .filter(|sync| sync.resync)
            .map(|sync| format!("profiles.{}", sync.id));
        let members = self
            .memberships
            .iter()
            .filter(|sync| sync.resync)
            .map(|sync| format!("list.{}.members", sync.list));
        profiles.chain(members).collect()
    }

    /// Whether apply would send anything.
    pub fn has_changes(&self) -> bool {
        self.profiles
            .iter()
            .any(|p| p.counts.new > 0 || p.counts.changed > 0 || p.counts.unset > 0)
            || self
                .memberships
                .iter()
                .any(|m| m.counts.add > 0 || m.counts.remove > 0)
    }

    /// Whether any list's removals exceed its `max_removals` (apply refuses without force).
    pub fn exceeds_max_removals(&self) -> bool {
        self.memberships.iter().any(|m| m.exceeds_max_removals)
    }

    /// Requests `--refresh` sends to read the sampled profiles (one filter request per sync
    /// with a non-empty diff sample).
    pub fn refresh_requests(&self) -> u64 {
        self.profiles
            .iter()
            .map(|p| u64::from(!p.diff_sample.is_empty()))
            .sum()
    }
}

/// The plan of one `profiles:` sync.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProfileSyncPlan {
    /// The sync's manifest id.
    pub id: String,
    /// The query it runs.
    pub query: String,
    /// The identifier column.
    pub identify_by: IdentifyBy,
    /// What happens to properties of rows that disappeared (and to null values).
    pub on_missing_row: OnMissingRow,
    /// Rows the query returned.
    pub rows: u64,
    /// Rows by outcome.
    pub counts: ProfileCounts,
    /// Some rejected rows, with the reason.
    pub rejected_sample: Vec<RejectedRow>,
    /// Some rows that change, field by field.
    pub diff_sample: Vec<RowChange>,
    /// Requests, per `operationId`.
    pub requests: BTreeMap<String, u64>,
    /// Least time at Klaviyo's limits, in seconds.
    pub estimated_seconds: u64,
    /// Live values that differ from what klsync last applied (only with `--refresh`).
    pub drift: Vec<Drift>,
    /// What the full check (`plan --refresh=full`) found: the rows it found changed in Klaviyo
    /// are planned as `changed`, and apply sends them again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<ProfileCheck>,
    /// `--resync`: every row is sent again, whatever klsync recorded (after an account was
    /// restored or wiped); apply does the same.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resync: bool,
}

/// Row counts of a `profiles:` sync.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProfileCounts {
    /// Rows klsync never applied: sent through bulk import.
    pub new: u64,
    /// Rows whose values changed: sent through bulk import.
    pub changed: u64,
    /// Profiles losing properties (a null with `on_missing_row: unset`, or a row gone): one
    /// `profile-import` request each. A row can be both changed and unset.
    pub unset: u64,
    /// Rows exactly as last applied.
    pub unchanged: u64,
    /// Rows refused before sending (bad or duplicate identifier, profile over 100 KB).
    pub rejected: u64,
    /// Rows gone from the query whose properties are kept (`on_missing_row: keep`).
    pub missing_kept: u64,
}

/// A row refused before sending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RejectedRow {
    /// 1-based position in the query's result.
    pub row: u64,
    /// The identifier as the query returned it (JSON text).
    pub identifier: String,
    /// Why it was refused.
    pub reason: String,
}

/// A row's field-level changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RowChange {
    /// The normalised identifier.
    pub identifier: String,
    /// `new`, `changed` or `unset`.
    pub action: String,
    /// The changed properties.
    pub changes: Vec<FieldChange>,
}

/// A property whose live value differs from what klsync last applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Drift {
    /// The normalised identifier.
    pub identifier: String,
    /// The property.
    pub property: String,
    /// What klsync last applied.
    pub applied: Option<serde_json::Value>,
    /// What Klaviyo has now (`None`: absent, or no such profile).
    pub live: Option<serde_json::Value>,
}

/// The plan of one list's `members:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MembershipPlan {
    /// The list's manifest key.
    pub list: String,
    /// Its Klaviyo id, when it exists.
    pub list_id: Option<String>,
    /// The query it runs.
    pub query: String,
    /// The identifier column.
    pub identify_by: IdentifyBy,
    /// `add_only` or `mirror`.
    pub mode: MembershipMode,
    /// Rows the query returned.
    pub rows: u64,
    /// Members by outcome.
    pub counts: MembershipCounts,
    /// Some identifiers to add.
    pub add_sample: Vec<String>,
    /// Some identifiers to remove.
    pub remove_sample: Vec<String>,
    /// Some rejected rows.
    pub rejected_sample: Vec<RejectedRow>,
    /// Some of the removals an earlier apply could not make, with why (planned again).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_removal_sample: Vec<FailedRow>,
    /// The removal limit resolved to a count (a percentage applies to the members klsync added).
    pub max_removals: Option<u64>,
    /// Removals exceed the limit: apply refuses without `--force`.
    pub exceeds_max_removals: bool,
    /// Requests, per `operationId`.
    pub requests: BTreeMap<String, u64>,
    /// Least time at Klaviyo's limits, in seconds.
    pub estimated_seconds: u64,
    /// What the full check (`plan --refresh=full`) found: recorded members missing from the
    /// list that the query still returns are planned as adds (those it no longer returns are
    /// forgotten), and apply sends them again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<MembershipCheck>,
    /// `--resync`: every member the query returns is added again, whatever klsync recorded
    /// (apply still first checks the list and sends only those missing from it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resync: bool,
}

/// Member counts of one list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MembershipCounts {
    /// Profiles to add.
    pub add: u64,
    /// Profiles klsync added that left the query (mirror mode only).
    pub remove: u64,
    /// Profiles in the query that klsync already added.
    pub unchanged: u64,
    /// Rows with an unusable identifier.
    pub rejected: u64,
    /// Rows repeating an identifier already seen (the profile is added once).
    pub duplicates: u64,
    /// Of the adds, profiles an earlier apply sent without learning whether Klaviyo added them
    /// (it was killed, or gave up polling the job): apply checks the list first and records
    /// those it finds there as added by klsync.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unconfirmed: u64,
    /// Of the removals, members an earlier apply could not remove (no profile id recorded, and
    /// none found by their identifier): still recorded, planned again.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pending_removals: u64,
}

fn is_zero(count: &u64) -> bool {
    *count == 0
}

impl ProfileCounts {
    /// Each count with the word the plan shows it under.
    pub fn labelled(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("new", self.new),
            ("changed", self.changed),
            ("unset", self.unset),
            ("unchanged", self.unchanged),
            ("rejected", self.rejected),
            ("gone (kept)", self.missing_kept),
        ]
    }
}

impl MembershipCounts {
    /// Each count with the word the plan shows it under.
    pub fn labelled(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("to add", self.add),
            ("to remove", self.remove),
            ("unchanged", self.unchanged),
            ("rejected", self.rejected),
            ("duplicate", self.duplicates),
            ("to confirm", self.unconfirmed),
            ("removal(s) pending", self.pending_removals),
        ]
    }
}

/// `subject: planned 3 new, 1 changed; found 4 new, 2 changed`: the counts that differ
/// between the plan and the data at apply time, in the plan's words (counts that agree are
/// left out, so the line says what moved).
pub fn count_difference(
    subject: &str,
    planned: &[(&'static str, u64)],
    found: &[(&'static str, u64)],
) -> String {
    let differing: Vec<(&str, u64, u64)> = planned
        .iter()
        .zip(found)
        .filter(|((_, before), (_, now))| before != now)
        .map(|((label, before), (_, now))| (*label, *before, *now))
        .collect();
    let side = |pick: fn(&(&str, u64, u64)) -> u64| {
        differing
            .iter()
            .map(|entry| format!("{} {}", pick(entry), entry.0))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "{subject}: planned {}; found {}",
        side(|entry| entry.1),
        side(|entry| entry.2)
    )
}

/// What an apply did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, JsonSchema)]
pub struct DataApplyReport {
    /// Per `profiles:` sync.
    pub profiles: Vec<ProfileSyncReport>,
    /// Per list with `members:`.
    pub memberships: Vec<MembershipReport>,
    /// Syncs whose fresh counts differ from the plan's (the data changed in between).
    pub drift: Vec<String>,
    /// Syncs not run, and why (the list they fill was not created).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
}

impl DataApplyReport {
    /// Whether some rows or members failed, or some removals could not be made (all are
    /// retried by the next apply).
    pub fn has_failures(&self) -> bool {
        !self.skipped.is_empty()
            || self.profiles.iter().any(|p| p.failed > 0)
            || self
                .memberships
                .iter()
                .any(|m| m.failed > 0 || m.removal_pending > 0)
    }
}

/// What an apply did for one `profiles:` sync.
#[derive(Debug, Clone, Default, PartialEq, Serialize, JsonSchema)]
pub struct ProfileSyncReport {
    /// The sync id.
    pub id: String,
    /// Profiles sent in bulk import jobs.
    pub sent: u64,
    /// Profiles whose properties were removed through profile-import.
    pub unset: u64,
    /// Rows recorded as applied (accepted by Klaviyo).
    pub recorded: u64,
    /// Rows Klaviyo refused: not recorded, sent again by the next apply.
    pub failed: u64,
    /// Some failed rows, with Klaviyo's reason.
    pub failed_sample: Vec<FailedRow>,
    /// The bulk import jobs created.
    pub jobs: Vec<String>,
}

/// What an apply did for one list.
#[derive(Debug, Clone, Default, PartialEq, Serialize, JsonSchema)]
pub struct MembershipReport {
    /// The list key.
    pub list: String,
    /// Members added (and recorded).
    pub added: u64,
    /// Profiles to add that were already members (joined another way): recorded as such, not
    /// sent, never removed by mirror mode.
    pub already_members: u64,
    /// Adds an earlier apply sent without learning the outcome, found on the list now:
    /// recorded as added by klsync, not sent again.
    pub confirmed: u64,
    /// Members removed (and forgotten).
    pub removed: u64,
    /// Adds Klaviyo refused: retried by the next apply.
    pub failed: u64,
    /// Some failed adds, with Klaviyo's reason.
    pub failed_sample: Vec<FailedRow>,
    /// Removals klsync could not make (no profile id recorded, none found by the identifier):
    /// kept in klsync's record, with the reason, and tried again by the next apply.
    pub removal_pending: u64,
    /// Some of them, with the reason.
    pub removal_pending_sample: Vec<FailedRow>,
    /// The bulk import jobs created.
    pub jobs: Vec<String>,
}

/// A row Klaviyo refused, or a member klsync could not remove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FailedRow {
    /// The normalised identifier.
    pub identifier: String,
    /// Klaviyo's error, or why the whole job failed.
    pub reason: String,
}

/// Request counts per operation, the operations with none left out.
pub fn requests_of(counts: impl IntoIterator<Item = (Operation, u64)>) -> BTreeMap<Operation, u64> {
    counts.into_iter().filter(|(_, count)| *count > 0).collect()
}

/// The first [`SAMPLE_SIZE`] of `failed` (identifier, reason), as a report shows them.
pub fn failed_sample(failed: impl IntoIterator<Item = (String, String)>) -> Vec<FailedRow> {
    failed
        .into_iter()
        .take(SAMPLE_SIZE)
        .map(|(identifier, reason)| FailedRow { identifier, reason })
        .collect()
}

/// Keyed request counts from typed ones.
pub fn request_names(requests: &BTreeMap<Operation, u64>) -> BTreeMap<String, u64> {
    requests
        .iter()
        .filter(|(_, count)| **count > 0)
        .map(|(operation, count)| (operation.operation_id().to_string(), *count))
        .collect()
}

/// Least time `requests` take at Klaviyo's published limits, in whole seconds.
pub fn seconds(requests: &BTreeMap<Operation, u64>) -> u64 {
    crate::plan::estimated_duration(requests).as_secs()
}
