//! What the full check of the data syncs found (`klsync plan --refresh=full`, `klsync drift
//! --data`), and what it costs, known before anything is read. The check itself runs in the
//! `klsync` package's sync engine (`sync/check.rs`).

use std::collections::{BTreeMap, HashMap, HashSet};

use klaviyo_spec::operations::Operation;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Drift;

/// What reading the data syncs back from Klaviyo found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DataCheck {
    /// One entry per `profiles:` sync.
    pub profiles: Vec<ProfileCheck>,
    /// One entry per list with `members:` that exists in Klaviyo.
    pub memberships: Vec<MembershipCheck>,
}

impl DataCheck {
    /// Whether anything differs from what klsync recorded.
    pub fn has_drift(&self) -> bool {
        self.profiles.iter().any(|p| !p.drift.is_empty())
            || self.memberships.iter().any(|m| {
                !m.missing.is_empty()
                    || m.list_deleted
                    || !m.back_on_list.is_empty()
                    || !m.pending_removals.is_empty()
            })
    }
}

/// What the check reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckScope {
    /// Read back the `profiles:` syncs' recorded rows.
    pub profiles: bool,
    /// Read every list with `members:` whole, instead of looking its recorded members up: also
    /// finds members klsync removed that are on the list again.
    pub whole_lists: bool,
}

impl CheckScope {
    /// `plan --refresh=full` and `drift --data`: profiles, and recorded members looked up.
    pub const FULL: CheckScope = CheckScope {
        profiles: true,
        whole_lists: false,
    };
}

/// What the full check found for one `profiles:` sync.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProfileCheck {
    /// The sync id.
    pub id: String,
    /// Recorded rows whose profile was read back.
    pub checked: u64,
    /// Recorded properties whose value in Klaviyo differs (`live` null: the property is gone,
    /// or the whole profile), sorted by identifier then property.
    pub drift: Vec<Drift>,
}

impl ProfileCheck {
    /// Profiles with at least one differing property.
    pub fn drifted_profiles(&self) -> usize {
        self.drift
            .iter()
            .map(|d| d.identifier.as_str())
            .collect::<HashSet<_>>()
            .len()
    }

    /// Per drifted identifier, its differing properties with Klaviyo's value (`None`: absent).
    pub fn live_values(&self) -> HashMap<&str, Vec<(&str, Option<&Value>)>> {
        let mut live: HashMap<&str, Vec<(&str, Option<&Value>)>> = HashMap::new();
        for drift in &self.drift {
            live.entry(drift.identifier.as_str())
                .or_default()
                .push((drift.property.as_str(), drift.live.as_ref()));
        }
        live
    }
}

/// What the full check found for one list's `members:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MembershipCheck {
    /// The list key.
    pub list: String,
    /// Recorded members looked up (added by klsync, or found on the list when it would have
    /// added them).
    pub checked: u64,
    /// Recorded members no longer on the list, sorted.
    pub missing: Vec<String>,
    /// The list no longer exists in Klaviyo: nothing was looked up (the configuration plan
    /// creates it again, and its members are added anew).
    pub list_deleted: bool,
    /// Members klsync removed that are on the list again (found by profile id or identifier),
    /// sorted; only when the list was read whole (`drift --members`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub back_on_list: Vec<String>,
    /// Removals klsync owes but could not make (see `docs/sync.md`), with the reason; only when
    /// the list was read whole (`drift --members`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_removals: Vec<super::FailedRow>,
}

impl MembershipCheck {
    /// A check of `list` over `checked` recorded members that has found nothing yet.
    pub fn of(list: &str, checked: usize) -> Self {
        MembershipCheck {
            list: list.to_string(),
            checked: checked as u64,
            missing: Vec::new(),
            list_deleted: false,
            back_on_list: Vec::new(),
            pending_removals: Vec::new(),
        }
    }

    /// The check of `list` when the list no longer exists in Klaviyo: nothing was checked.
    pub fn deleted(list: &str) -> Self {
        MembershipCheck {
            list_deleted: true,
            ..MembershipCheck::of(list, 0)
        }
    }
}

/// What the full check costs, known from klsync's records before anything is read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckCost {
    /// Requests per operation (for lists read whole, the least: one per 100 recorded members).
    pub requests: BTreeMap<Operation, u64>,
    /// Lists read whole (keyed by `external_id`, or all of them with
    /// [`CheckScope::whole_lists`]): one more request per 100 members klsync did not record.
    pub read_whole: Vec<String>,
    /// Every list is read whole because it was asked for (`drift --members`).
    pub whole_lists: bool,
}

impl CheckCost {
    /// The sentence the commands print before reading, e.g. `Checking the data syncs against
    /// Klaviyo: 12 request(s) (get_profiles 10, get_profiles_for_list 2), at least 2s at
    /// Klaviyo's rate limits.`
    pub fn sentence(&self) -> String {
        let total: u64 = self.requests.values().sum();
        if total == 0 {
            return "Checking the data syncs against Klaviyo: nothing recorded to read back."
                .to_string();
        }
        let per_operation: Vec<String> = super::request_names(&self.requests)
            .iter()
            .map(|(operation, count)| format!("{operation} {count}"))
            .collect();
        let mut sentence = format!(
            "Checking the data syncs against Klaviyo: {}{total} request(s){}, at least {} at Klaviyo's rate limits.",
            if self.read_whole.is_empty() {
                ""
            } else {
                "at least "
            },
            if per_operation.is_empty() {
                String::new()
            } else {
                format!(" ({})", per_operation.join(", "))
            },
            // Whole seconds, rounded up: requests the limits let go at once still take a round
            // trip each.
            crate::duration::format_estimate(std::time::Duration::from_secs(
                crate::plan::estimated_duration(&self.requests)
                    .as_secs()
                    .saturating_add(1)
            ))
        );
        if !self.read_whole.is_empty() {
            let lists: Vec<String> = self
                .read_whole
                .iter()
                .map(|list| format!("lists.{list}.members"))
                .collect();
            let (verb, pronoun) = if lists.len() == 1 {
                ("is", "it is")
            } else {
                ("are", "they are")
            };
            let why = if self.whole_lists {
                format!("{} {verb} read whole (--members)", lists.join(", "))
            } else {
                format!(
                    "{} {verb} keyed by external_id, which Klaviyo cannot filter members by: {pronoun} read whole",
                    lists.join(", ")
                )
            };
            sentence.push_str(&format!(
                " {why}, one more request per 100 members klsync did not add."
            ));
        }
        sentence
    }
}
