//! The apply engine: check a plan may run, then make Klaviyo match it, change by change,
//! journaled so that an apply killed at any point converges when run again.
//!
//! - [`saved`]: the checks a saved plan must pass (format, manifests, age, already applied,
//!   unchanged Klaviyo) and the destroy safety rules. Pure.
//! - [`executor`]: sends the changes through the Klaviyo client and records each one in the
//!   state database before and after it is sent.
//! - [`write`]: the Klaviyo operations the executor sends, as a trait the client implements
//!   (and, with the `test-support` feature, the in-memory `fake` Klaviyo the tests use).
//!
//! # Crash safety
//! A change is journaled as started before its request is sent and the resource is recorded as
//! managed before the journal entry is closed. A process killed in between leaves either:
//! - a create that landed in Klaviyo but was never recorded: the next plan finds the resource by
//!   its exact name among unmanaged resources and adopts it instead of creating a duplicate
//!   (and a create of a resource that was managed before, such as the second half of a tag
//!   replace, looks the name up first when the journal shows an earlier attempt);
//! - a change recorded but its journal entry still open: harmless, the next plan has nothing
//!   to do for it.
//!
//! Entries left open by a killed run are reported by the next apply and closed once it
//! converges.

#![deny(missing_docs)]

pub mod executor;
#[cfg(feature = "test-support")]
pub mod fake;
pub mod saved;
pub mod write;

use crate::model::{ManagedRecord, ManagedState, ResourceKey, ResourceKind};
use crate::state::{ManagedRow, StateError};

pub use crate::duration::human_duration;
pub use executor::{Event, ExecutionReport, Executor, Failure, FailureCause};
#[cfg(feature = "test-support")]
pub use fake::FakeKlaviyo;
pub use write::KlaviyoWrite;

/// Why `apply` refused to run. Nothing was changed in Klaviyo when one of these is returned.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The saved plan file could not be parsed.
    #[error("{path}: not a klsync plan: {reason}")]
    UnreadablePlan {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The saved plan was written in a format this klsync does not know.
    #[error(
        "the plan uses format version {found}, this klsync reads versions up to {supported}; make a new plan with this klsync"
    )]
    FormatVersion {
        /// The plan's version.
        found: u64,
        /// The version this build reads.
        supported: u32,
    },
    /// The saved plan was written in a format older than this klsync applies (its changes
    /// carry no payload).
    #[error(
        "{path}: the plan uses format version {found}, written by an older klsync; this klsync ({klsync_version}) applies plans of format version {oldest} or later. Run `klsync plan --out` again and apply the new file"
    )]
    OldFormatVersion {
        /// The file.
        path: String,
        /// The plan's version.
        found: u64,
        /// The oldest version this build applies.
        oldest: u32,
        /// This klsync's version.
        klsync_version: &'static str,
    },
    /// The saved plan was made from other manifests than the project's current ones (another
    /// project's plan, or one made before the manifests were edited).
    #[error(
        "the plan was made from other manifests than this project's (another project, or these manifests before an edit): digest {planned}, the project's is now {current}; run `klsync plan` again"
    )]
    OtherManifests {
        /// Digest recorded in the plan.
        planned: String,
        /// Digest of the project now.
        current: String,
    },
    /// The saved plan is older than the allowed maximum age.
    #[error(
        "the plan is too old: made {age} ago, the maximum age is {max_age} (klsync.yaml plan.max_age_hours or --max-age); run `klsync plan` again"
    )]
    TooOld {
        /// How old it is, human readable.
        age: String,
        /// The limit, human readable.
        max_age: String,
    },
    /// The plan is dated later than now, beyond the clock skew allowed between machines.
    #[error(
        "the plan is dated in the future: made {created_at}, {ahead} ahead of this machine's clock (more than the {allowed} allowed for clock skew); check the clocks, then run `klsync plan` again"
    )]
    FromTheFuture {
        /// The plan's `created_at`.
        created_at: String,
        /// How far ahead it is, human readable.
        ahead: String,
        /// The allowance, human readable.
        allowed: String,
    },
    /// The saved plan names a change (or a data sync) more than once.
    #[error(
        "{path}: the plan names these more than once, so it was edited by hand: {}; run `klsync plan` again",
        .addresses.join(", ")
    )]
    DuplicateAddresses {
        /// The file.
        path: String,
        /// Each repeated address, once.
        addresses: Vec<String>,
    },
    /// The saved plan's digest was never registered by `klsync plan --out` in this state.
    #[error(
        "plan {plan_id} was not made by `klsync plan --out` against this state, or was edited since; run `klsync plan --out` again and apply the new file"
    )]
    UnregisteredPlan {
        /// The digest of the file.
        plan_id: String,
    },
    /// The plan's `created_at` is not a timestamp.
    #[error("the plan's created_at {0:?} is not an RFC 3339 timestamp")]
    BadTimestamp(String),
    /// The saved plan was applied before.
    #[error("plan {plan_id} was already applied; run `klsync plan` again")]
    AlreadyApplied {
        /// The plan's id.
        plan_id: String,
    },
    /// Klaviyo (or klsync's state) changed since the plan was made.
    #[error(
        "resources changed in Klaviyo since the plan was made: {}; run `klsync plan` again",
        .addresses.join(", ")
    )]
    Stale {
        /// Addresses whose planned change no longer matches.
        addresses: Vec<String>,
    },
    /// The plan deletes resources and `--allow-destroy` was not given.
    #[error(
        "the plan deletes resources in Klaviyo: {}; pass --allow-destroy to allow it",
        .addresses.join(", ")
    )]
    DestroyNotAllowed {
        /// The destroys and replaces.
        addresses: Vec<String>,
    },
    /// The plan contains changes that are forbidden outright.
    #[error("the plan contains forbidden changes, even with --allow-destroy: {}", .reasons.join("; "))]
    Prevented {
        /// `address (name): why`, per change.
        reasons: Vec<String>,
    },
    /// Confirmation is needed and there is no terminal to ask on.
    #[error(
        "apply needs confirmation, and stdin is not a terminal; pass --auto-approve (or apply a reviewed plan file)"
    )]
    NeedsApproval,
    /// The user answered something other than `yes`.
    #[error("apply cancelled; nothing was changed")]
    Declined,
    /// Lists would lose more members than their `max_removals` allows and `--force` was not
    /// given. Checked before anything is sent, configuration changes included.
    #[error(
        "members would be removed beyond max_removals: {}; nothing was changed. Check the queries, or pass --force to apply anyway",
        .lists.join(", ")
    )]
    MaxRemovalsExceeded {
        /// `lists.vip.members: 12 removal(s), max_removals 5`, per list.
        lists: Vec<String>,
    },
}

/// The managed rows read from the state database, as the planner wants them.
pub fn managed_state(rows: &[ManagedRow]) -> Result<ManagedState, StateError> {
    let mut managed = ManagedState::new();
    for row in rows {
        let kind = kind_from_prefix(&row.kind).ok_or_else(|| StateError::Corrupt {
            what: format!("managed resource kind {:?}", row.kind),
        })?;
        managed.insert(
            ResourceKey::new(kind, &row.key),
            ManagedRecord {
                klaviyo_id: row.klaviyo_id.clone(),
                applied: row.applied.clone(),
                returned: row.returned.clone(),
            },
        );
    }
    Ok(managed)
}

/// The kind whose [`ResourceKind::prefix`] is `prefix`.
pub fn kind_from_prefix(prefix: &str) -> Option<ResourceKind> {
    ResourceKind::ALL
        .into_iter()
        .find(|kind| kind.prefix() == prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managed_rows_map_to_keys_and_unknown_kinds_are_refused() {
        let row = |kind: &str| ManagedRow {
            kind: kind.into(),
            key: "vip".into(),
            klaviyo_id: "L1".into(),
            applied: serde_json::json!({"name": "VIP"}),
            returned: None,
        };
        let managed = managed_state(&[row("list")]).expect("known kind");
        let key = ResourceKey::new(ResourceKind::List, "vip");
        assert_eq!(managed[&key].klaviyo_id, "L1");
        assert!(managed_state(&[row("flow")]).is_err());
        for kind in ResourceKind::ALL {
            assert_eq!(kind_from_prefix(kind.prefix()), Some(kind));
        }
    }
}
