//! The values stored in and read from the state database.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

use super::StateError;

/// The id of one klsync run (a UUID v4), shared by the audit record, the journal and the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId(uuid::Uuid);

impl RunId {
    /// A fresh random run id.
    pub fn new() -> Self {
        RunId(uuid::Uuid::new_v4())
    }
}

impl Default for RunId {
    fn default() -> Self {
        RunId::new()
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for RunId {
    type Err = StateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s)
            .map(RunId)
            .map_err(|_| StateError::Corrupt {
                what: format!("run id {s:?} is not a UUID"),
            })
    }
}

/// The id of one journal entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JournalId(pub i64);

impl fmt::Display for JournalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A resource klsync manages: which Klaviyo object a manifest entry maps to, and what was last
/// applied to it.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedRow {
    /// The resource kind, e.g. "list".
    pub kind: String,
    /// The manifest id, unique within the kind.
    pub key: String,
    /// The Klaviyo id of the object.
    pub klaviyo_id: String,
    /// The attributes last applied (what klsync sent).
    pub applied: serde_json::Value,
    /// What Klaviyo returned after klsync's last write (or showed at import and adoption), in
    /// its own form; `None` for records written before klsync kept it (see
    /// [`crate::plan::three_way`]).
    pub returned: Option<serde_json::Value>,
}

/// What is known when a run starts, for the audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStart {
    /// The subcommand, e.g. "apply".
    pub command: String,
    /// Who ran it: see [`super::detect_actor`].
    pub actor: String,
    /// The manifests' git commit, when known: see [`super::detect_git_commit`].
    pub git_commit: Option<String>,
    /// Digest of the manifests the run used.
    pub manifest_digest: Option<String>,
    /// The saved plan being applied, if any.
    pub plan_id: Option<String>,
}

/// A plan `klsync plan --out` saved, registered so that `apply` takes only files it wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedPlanRecord {
    /// The digest of the file's bytes (`crate::apply::saved::plan_id`).
    pub plan_id: String,
    /// Digest of the manifests the plan was made from.
    pub manifest_digest: String,
    /// The plan's own `created_at`, as written in the file.
    pub created_at: String,
    /// Who saved it: see [`super::detect_actor`].
    pub actor: String,
}

/// Where a journaled change stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Written before the request was sent; still `Started` means the outcome is unknown.
    Started,
    /// Klaviyo confirmed the change.
    Succeeded,
    /// Klaviyo refused the change, or it could not be sent.
    Failed,
}

impl Phase {
    /// The value stored in the `phase` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Started => "started",
            Phase::Succeeded => "succeeded",
            Phase::Failed => "failed",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Phase {
    type Err = StateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "started" => Ok(Phase::Started),
            "succeeded" => Ok(Phase::Succeeded),
            "failed" => Ok(Phase::Failed),
            other => Err(StateError::Corrupt {
                what: format!("journal phase {other:?}"),
            }),
        }
    }
}

/// How a run ended, as the audit record (`runs.outcome`) stores it. The text of each is written
/// and read here only ([`RunOutcome::as_str`], [`FromStr`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// Everything it set out to do was done.
    Success,
    /// Some of it was done, some failed.
    Partial,
    /// It failed, and changed nothing it set out to change.
    Failed,
    /// It was refused before anything was sent (a saved plan's checks, the lock held).
    Refused,
    /// A signal stopped it.
    Interrupted,
}

impl RunOutcome {
    /// Every outcome.
    pub const ALL: [RunOutcome; 5] = [
        RunOutcome::Success,
        RunOutcome::Partial,
        RunOutcome::Failed,
        RunOutcome::Refused,
        RunOutcome::Interrupted,
    ];

    /// The value stored in the `outcome` column, and shown by `klsync history`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Success => "success",
            RunOutcome::Partial => "partial",
            RunOutcome::Failed => "failed",
            RunOutcome::Refused => "refused",
            RunOutcome::Interrupted => "interrupted",
        }
    }
}

impl fmt::Display for RunOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunOutcome {
    type Err = StateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunOutcome::ALL
            .into_iter()
            .find(|outcome| outcome.as_str() == s)
            .ok_or_else(|| StateError::Corrupt {
                what: format!("run outcome {s:?}"),
            })
    }
}

/// One journaled change.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalRow {
    /// The entry's id.
    pub id: JournalId,
    /// The run that started the change.
    pub run_id: RunId,
    /// 1, 2, ... within the run, in the order the changes were started.
    pub seq: i64,
    /// The plan address of the change, e.g. "list.newsletter".
    pub address: String,
    /// The action, e.g. "create".
    pub action: String,
    /// Where it stands.
    pub phase: Phase,
    /// The Klaviyo id, once known.
    pub klaviyo_id: Option<String>,
    /// What was sent and learnt (the latest detail recorded).
    pub detail: serde_json::Value,
    /// Why it failed, for [`Phase::Failed`].
    pub error: Option<String>,
    /// When it was journaled, before sending.
    pub started_at: DateTime<Utc>,
    /// When the outcome was recorded.
    pub finished_at: Option<DateTime<Utc>>,
}

/// One run in the audit record, with its journal.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    /// The run's id.
    pub run_id: RunId,
    /// The subcommand.
    pub command: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it finished; `None` while running or when it was killed.
    pub finished_at: Option<DateTime<Utc>>,
    /// Who ran it.
    pub actor: String,
    /// The manifests' git commit, when known.
    pub git_commit: Option<String>,
    /// Digest of the manifests used.
    pub manifest_digest: Option<String>,
    /// The saved plan applied, if any.
    pub plan_id: Option<String>,
    /// How it ended; `None` while running or when it was killed.
    pub outcome: Option<RunOutcome>,
    /// Counts and requests used, as given to `finish_run`.
    pub summary: Option<serde_json::Value>,
    /// The changes it journaled, in order.
    pub journal: Vec<JournalRow>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_id_round_trips_through_text() {
        let id = RunId::new();
        assert_eq!(id.to_string().parse::<RunId>().unwrap(), id);
        assert!("not-a-uuid".parse::<RunId>().is_err());
    }

    #[test]
    fn run_outcome_round_trips_and_rejects_unknown_values() {
        for outcome in RunOutcome::ALL {
            assert_eq!(outcome.as_str().parse::<RunOutcome>().unwrap(), outcome);
        }
        assert!(matches!(
            "succeeded".parse::<RunOutcome>(),
            Err(StateError::Corrupt { .. })
        ));
    }

    #[test]
    fn phase_round_trips_and_rejects_unknown_values() {
        for phase in [Phase::Started, Phase::Succeeded, Phase::Failed] {
            assert_eq!(phase.as_str().parse::<Phase>().unwrap(), phase);
        }
        assert!(matches!(
            "done".parse::<Phase>(),
            Err(StateError::Corrupt { .. })
        ));
    }
}
