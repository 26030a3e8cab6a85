//! The plan: what `apply` will do to Klaviyo, as a value. Pure: no I/O, clock or randomness.
//!
//! [`diff`] compares the desired state (manifests) with the live state (Klaviyo) and the managed
//! state (what klsync owns) and returns a [`Plan`]. The renders (`crate::render`) and the
//! executor both read that one value; neither recomputes it. The property tests apply plans
//! with the executor itself, against an in-memory Klaviyo (`apply::FakeKlaviyo`), to prove that
//! applying a plan converges.
//!
//! # Rules
//! - A managed resource that still exists and differs gets an `update`, field by field. A
//!   field differs when the manifest differs from what klsync last sent, or Klaviyo's value
//!   from what Klaviyo returned after that write ([`three_way`]); records without that pair
//!   compare the manifest with Klaviyo directly. A managed resource deleted outside klsync is
//!   created again.
//! - An unmanaged manifest resource whose exact name matches exactly one unmanaged Klaviyo
//!   resource (tags: same name in the same group) is adopted; more than one match is
//!   [`PlanError::AmbiguousAdoption`]; no match is a create.
//! - A managed resource gone from the manifests is destroyed; `prevented` marks destroys that
//!   `prevent_destroy` forbids, and group destroys that would take unmanaged tags with them.
//!   The flag is read from the managed row (what was last applied), not from the manifests, so
//!   it holds for a resource deleted from them; lifting it takes an apply of
//!   `prevent_destroy: false` first (the change's note says so).
//! - Tag links are attached and detached only for tags klsync manages; links to unmanaged tags
//!   are never touched.
//! - `exclusive` of a tag group cannot change in Klaviyo ([`PlanError::ExclusiveChanged`]); a
//!   tag cannot move between groups, so that is a `replace` (destroy, then create).
//!
//! # Order
//! Deterministic: creates, updates, adopts and replaces by dependency (tag groups, tags, lists,
//! segments), then tag detaches before attaches (so a tag swap in an exclusive group never
//! holds two tags at once), then destroys in reverse dependency order (segments, lists, tags,
//! tag groups). Within a class, by address.

#![deny(missing_docs)]

mod cost;
mod diff;
mod normalize;
pub mod references;
pub mod schedule;
mod target;
pub mod three_way;

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::{ResourceKey, ResourceKind};
use klaviyo_spec::operations::Operation;

pub use cost::{
    daily_cap_warnings, estimate, estimated_duration, ordered_requests, requests, whole_seconds,
};
pub use diff::{diff, live_fields};
pub use normalize::{definition_diff, definition_yaml, normalize_definition};
pub use target::targeted;

/// The version of the JSON plan format (`schemas/plan.schema.json`). Bumped on any change a
/// reader of saved plans would notice.
pub const FORMAT_VERSION: u32 = 1;

/// The format version of a plan with a data part ([`Plan::data`]). Plans without one keep
/// [`FORMAT_VERSION`], so their JSON is byte for byte what earlier klsync wrote and read; a
/// klsync that cannot apply data syncs refuses a plan that has them instead of ignoring them.
pub const DATA_FORMAT_VERSION: u32 = 2;

/// Facts about the run that produced a plan, passed in so the plan stays pure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PlanMeta {
    /// When the plan was made, RFC 3339.
    pub created_at: String,
    /// Digest of the manifests the plan was made from.
    pub manifest_digest: String,
    /// The klsync version that made the plan.
    pub klsync_version: String,
}

/// What a change does.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Create a resource.
    Create,
    /// Change fields of a managed resource (or only klsync's record of it).
    Update,
    /// Take ownership of an existing unmanaged resource (and update it if `fields` say so).
    Adopt,
    /// Delete a managed resource.
    Destroy,
    /// Delete a managed resource and create it again (a tag moving between groups).
    Replace,
    /// Put a tag on a list or segment.
    Attach,
    /// Take a tag off a list or segment.
    Detach,
}

impl Action {
    /// Every action, in the order summaries list them.
    pub const ALL: [Action; 7] = [
        Action::Create,
        Action::Update,
        Action::Adopt,
        Action::Replace,
        Action::Destroy,
        Action::Attach,
        Action::Detach,
    ];

    /// The lowercase name, e.g. `create`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Adopt => "adopt",
            Action::Destroy => "destroy",
            Action::Replace => "replace",
            Action::Attach => "attach",
            Action::Detach => "detach",
        }
    }
}

/// What a change is about.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// A tag group.
    TagGroup,
    /// A tag.
    Tag,
    /// A list.
    List,
    /// A segment.
    Segment,
    /// A tag on a list or segment.
    TagLink,
}

impl From<ResourceKind> for ChangeKind {
    fn from(kind: ResourceKind) -> Self {
        match kind {
            ResourceKind::TagGroup => ChangeKind::TagGroup,
            ResourceKind::Tag => ChangeKind::Tag,
            ResourceKind::List => ChangeKind::List,
            ResourceKind::Segment => ChangeKind::Segment,
        }
    }
}

impl ChangeKind {
    /// Plural heading for renders, e.g. `Tag groups`.
    pub fn heading(self) -> &'static str {
        match self {
            ChangeKind::TagGroup => "Tag groups",
            ChangeKind::Tag => "Tags",
            ChangeKind::List => "Lists",
            ChangeKind::Segment => "Segments",
            ChangeKind::TagLink => "Tag links",
        }
    }
}

/// One field's value before and after a change. `before` is `null` on creates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FieldChange {
    /// Field name: `name`, `exclusive`, `group`, `opt_in_process`, `definition`, `is_starred`,
    /// or `prevent_destroy` (klsync's own record only, never sent to Klaviyo).
    pub field: String,
    /// Value now.
    pub before: serde_json::Value,
    /// Value after the change.
    pub after: serde_json::Value,
}

impl FieldChange {
    /// Whether the field lives in Klaviyo (and so costs a request to change) rather than only
    /// in klsync's state.
    pub fn is_klaviyo_field(&self) -> bool {
        self.field != STATE_ONLY_FIELD
    }
}

/// The one field klsync records but never sends to Klaviyo.
pub(crate) const STATE_ONLY_FIELD: &str = "prevent_destroy";

/// The field of a list's or segment's `applied` value that records the keys of the tags klsync
/// last linked to it, sorted. Records written before klsync kept it have none.
pub const APPLIED_TAGS: &str = "tags";

/// Records in a list's or segment's `applied` value that klsync linked (`linked`) or unlinked
/// tag `tag`. A record without [`APPLIED_TAGS`] (written by an earlier klsync) is left alone:
/// one link cannot tell what the others are. Returns whether the value changed.
pub fn record_link(applied: &mut serde_json::Value, tag: &str, linked: bool) -> bool {
    let Some(tags) = applied
        .get_mut(APPLIED_TAGS)
        .and_then(serde_json::Value::as_array_mut)
    else {
        return false;
    };
    let mut keys: std::collections::BTreeSet<String> = tags
        .iter()
        .filter_map(|tag| tag.as_str().map(str::to_owned))
        .collect();
    let changed = if linked {
        keys.insert(tag.to_owned())
    } else {
        keys.remove(tag)
    };
    if changed {
        *tags = keys.into_iter().map(serde_json::Value::String).collect();
    }
    changed
}

/// Once an apply has converged, a declared list's or segment's links to klsync's tags are the
/// declared ones, also where nothing was sent because someone had already made them so by hand.
/// Sets [`APPLIED_TAGS`] of that record accordingly (records of earlier versions gain it here);
/// returns whether the value changed. Not declared, or not a list or segment: unchanged.
pub fn record_converged_tags(
    desired: &crate::model::DesiredState,
    kind: crate::model::ResourceKind,
    key: &str,
    applied: &mut serde_json::Value,
) -> bool {
    use crate::model::ResourceKind;
    let declared = match kind {
        ResourceKind::List => desired.lists.get(key).map(|list| &list.tags),
        ResourceKind::Segment => desired.segments.get(key).map(|segment| &segment.tags),
        ResourceKind::TagGroup | ResourceKind::Tag => None,
    };
    let Some(tags) = declared else { return false };
    let tags = serde_json::json!(tags);
    if !applied.is_object() || applied.get(APPLIED_TAGS) == Some(&tags) {
        return false;
    }
    applied[APPLIED_TAGS] = tags;
    true
}

/// The two ends of a tag link. Ids are `None` when the resource is created by this plan; the
/// executor then takes the id from the change that creates it (see `depends_on`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TagLink {
    /// The tag's manifest key.
    pub tag: String,
    /// The tag's Klaviyo id, when it exists already.
    pub tag_id: Option<String>,
    /// The list or segment.
    pub target: ResourceKey,
    /// Its Klaviyo id, when it exists already.
    pub target_id: Option<String>,
}

/// One change to Klaviyo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Change {
    /// Stable address, e.g. `list.vip`, `tag.lifecycle/vip`,
    /// `tag_link.lifecycle/vip->list.vip`.
    pub address: String,
    /// What the change is about.
    pub kind: ChangeKind,
    /// What it does.
    pub action: Action,
    /// The resource, for resource changes.
    pub resource: Option<ResourceKey>,
    /// The link, for attach and detach.
    pub link: Option<TagLink>,
    /// The Klaviyo id the change acts on (`None` for creates).
    pub klaviyo_id: Option<String>,
    /// Human name: the resource's name (desired, or live for destroys); for links, the list's
    /// or segment's name.
    pub name: String,
    /// Field changes. On creates: every field the new resource gets. On replaces: the fields
    /// that differ (the new resource gets `name` and the `after` values).
    pub fields: Vec<FieldChange>,
    /// Unified diff of the segment definition as YAML, when it changes.
    pub definition_diff: Option<String>,
    /// The change is forbidden (`prevent_destroy`, or it would delete unmanaged resources);
    /// `apply` refuses a plan containing it.
    pub prevented: bool,
    /// Why, when there is more to say (deleted outside klsync, why prevented, ...).
    pub note: Option<String>,
    /// Fingerprint of the live resource this change was planned against, so `apply` can refuse a
    /// stale saved plan.
    pub expected: Option<serde_json::Value>,
    /// What to record in klsync's state as last applied once the change succeeds.
    pub applied: Option<serde_json::Value>,
    /// Addresses of changes that must succeed first.
    pub depends_on: Vec<String>,
}

#[cfg(any(test, feature = "test-support"))]
impl Change {
    /// A bare change for tests: `action` of a `kind` at `address`, named after it, with no
    /// fields, link, id or dependencies.
    pub fn example(address: &str, kind: ChangeKind, action: Action) -> Change {
        Change {
            address: address.into(),
            kind,
            action,
            resource: None,
            link: None,
            klaviyo_id: None,
            name: address.into(),
            fields: Vec::new(),
            definition_diff: None,
            prevented: false,
            note: None,
            expected: None,
            applied: None,
            depends_on: Vec::new(),
        }
    }
}

/// The API requests a plan will send and how long that takes at Klaviyo's limits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Cost {
    /// Requests per operation (`operationId` of the spec).
    pub requests: BTreeMap<String, u64>,
    /// Sum of `requests`.
    pub total_requests: u64,
    /// Wall time in whole seconds that `apply` takes at the published rate limits: its schedule
    /// (configuration changes, then data jobs and polls, when the plan has a data part)
    /// simulated through the client's limiters; server latency and job processing beyond the
    /// first poll are not counted.
    pub estimated_seconds: u64,
}

/// Counts of changes per action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Summary {
    /// Creates.
    pub create: usize,
    /// Updates.
    pub update: usize,
    /// Adoptions.
    pub adopt: usize,
    /// Replacements.
    pub replace: usize,
    /// Destroys.
    pub destroy: usize,
    /// Tag attaches.
    pub attach: usize,
    /// Tag detaches.
    pub detach: usize,
    /// Changes `apply` will refuse.
    pub prevented: usize,
}

impl Summary {
    /// The count for `action`.
    pub fn count(&self, action: Action) -> usize {
        match action {
            Action::Create => self.create,
            Action::Update => self.update,
            Action::Adopt => self.adopt,
            Action::Replace => self.replace,
            Action::Destroy => self.destroy,
            Action::Attach => self.attach,
            Action::Detach => self.detach,
        }
    }
}

/// A plan: the changes that make Klaviyo match the manifests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Plan {
    /// Version of this format: 1, or 2 when the plan has a `data` part; readers refuse versions
    /// they do not know.
    pub format_version: u32,
    /// Facts about the run.
    pub meta: PlanMeta,
    /// The changes, in execution order.
    pub changes: Vec<Change>,
    /// What applying costs.
    pub cost: Cost,
    /// Things the user should know that are not changes.
    pub warnings: Vec<String>,
    /// Profile properties and list memberships from SQL (`profiles:`, `members:`), when the
    /// manifests declare any. Apply reads the data again; see `docs/sync.md`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<crate::data::DataPlan>,
    /// The API scopes the key needs to apply this plan: those of the reads apply makes and of
    /// every request it sends (`x-klaviyo-scopes` in Klaviyo's spec); see [`required_scopes`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// The `--target` addresses the plan was restricted to (empty: the whole project); see
    /// [`targeted`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
}

/// The scopes needed to read what `reads` name (operation ids: the plan's own reads, which
/// apply makes again) and to send every request `plan` costs, configuration and data; sorted.
pub fn required_scopes<'a>(
    plan: &'a Plan,
    reads: impl IntoIterator<Item = &'a str>,
) -> Vec<String> {
    let data_requests = plan.data.iter().flat_map(|data| {
        let profiles = data.profiles.iter().flat_map(|p| p.requests.keys());
        let members = data.memberships.iter().flat_map(|m| m.requests.keys());
        profiles.chain(members)
    });
    let used: BTreeSet<&str> = reads
        .into_iter()
        .chain(plan.cost.requests.keys().map(String::as_str))
        .chain(data_requests.map(String::as_str))
        .collect();
    let scopes: BTreeSet<&str> = Operation::ALL
        .iter()
        .filter(|op| used.contains(op.operation_id()))
        .flat_map(|op| op.scopes().iter().copied())
        .collect();
    scopes.into_iter().map(str::to_owned).collect()
}

impl Plan {
    /// No changes to Klaviyo's configuration and no data to send.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && !self.data.as_ref().is_some_and(|data| data.has_changes())
    }

    /// This plan with its data part, in the format version that carries one.
    pub fn with_data(mut self, data: crate::data::DataPlan) -> Plan {
        self.format_version = DATA_FORMAT_VERSION;
        // One estimate for the configuration and the data together: the data syncs run after
        // the changes.
        self.cost.estimated_seconds =
            cost::whole_seconds(cost::estimate(&self.changes, Some(&data)));
        self.data = Some(data);
        self
    }

    /// Requests of the configuration changes and the data part together.
    pub fn total_requests(&self) -> u64 {
        let data = self
            .data
            .as_ref()
            .map_or(0, |data| saturating_total(data.requests.values().copied()));
        self.cost.total_requests.saturating_add(data)
    }

    /// Counts per action.
    pub fn summary(&self) -> Summary {
        let mut summary = Summary::default();
        for change in &self.changes {
            let slot = match change.action {
                Action::Create => &mut summary.create,
                Action::Update => &mut summary.update,
                Action::Adopt => &mut summary.adopt,
                Action::Replace => &mut summary.replace,
                Action::Destroy => &mut summary.destroy,
                Action::Attach => &mut summary.attach,
                Action::Detach => &mut summary.detach,
            };
            *slot += 1;
            if change.prevented {
                summary.prevented += 1;
            }
        }
        summary
    }

    /// Whether any change deletes something in Klaviyo (`apply` needs `--allow-destroy`).
    pub fn has_destroys(&self) -> bool {
        self.changes
            .iter()
            .any(|change| matches!(change.action, Action::Destroy | Action::Replace))
    }

    /// The changes `apply` must refuse.
    pub fn prevented(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(|change| change.prevented)
    }
}

/// The sum of a plan's counts, stopping at `u64::MAX`. The counts of a saved plan are read from
/// a file that may have been edited by hand; adding them must not overflow (a panic in a debug
/// build, a wrong total in a release one).
pub fn saturating_total(counts: impl IntoIterator<Item = u64>) -> u64 {
    counts.into_iter().fold(0, u64::saturating_add)
}

/// The JSON schema of [`Plan`], as committed in `schemas/plan.schema.json`.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(Plan);
    serde_json::to_value(schema).expect("a schema is plain JSON")
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A `--target` names nothing the project has.
    #[error(
        "--target {address}: the project has no such resource or data sync; use tag_group.NAME, tag.KEY, list.KEY, list.KEY.members, segment.KEY or profiles.ID, as the plan names them"
    )]
    UnknownTarget {
        /// The address as given.
        address: String,
    },
    /// Several unmanaged Klaviyo resources match a manifest resource's name.
    #[error(
        "{address}: {count} unmanaged Klaviyo {kinds} are named {name:?} (ids: {ids}); klsync cannot tell which one to adopt. Rename or delete the extra ones in Klaviyo, or give the manifest resource another name",
        count = ids.len(),
        kinds = kind.plural(),
        ids = ids.join(", ")
    )]
    AmbiguousAdoption {
        /// The manifest resource's address.
        address: String,
        /// Its kind.
        kind: ResourceKind,
        /// The name that matches.
        name: String,
        /// Ids of the matching Klaviyo resources.
        ids: Vec<String>,
    },
    /// A tag group's `exclusive` differs from Klaviyo's, which cannot change it.
    #[error(
        "tag group {group:?} is {live} in Klaviyo but the manifest makes it {desired}; Klaviyo cannot change `exclusive` after a group is created. Hint: give the group a new name in the manifest to create a new group",
        live = exclusivity(*live),
        desired = exclusivity(*desired)
    )]
    ExclusiveChanged {
        /// The group's name.
        group: String,
        /// `exclusive` in Klaviyo.
        live: bool,
        /// `exclusive` in the manifest.
        desired: bool,
    },
    /// A tag names a tag group the manifests do not declare.
    #[error("tag {tag:?} is in tag group {group:?}, which no manifest declares")]
    UnknownTagGroup {
        /// The tag's key.
        tag: String,
        /// The missing group.
        group: String,
    },
    /// A list or segment carries a tag the manifests do not declare.
    #[error("{address} has tag {tag:?}, which no manifest declares")]
    UnknownTag {
        /// The list's or segment's address.
        address: String,
        /// The missing tag key.
        tag: String,
    },
    /// A tag belongs in Klaviyo's default tag group, but Klaviyo reported none.
    #[error(
        "tag {tag:?} belongs in Klaviyo's default tag group, but Klaviyo reported no default group"
    )]
    NoDefaultTagGroup {
        /// The tag's key.
        tag: String,
    },
}

fn exclusivity(exclusive: bool) -> &'static str {
    if exclusive {
        "exclusive"
    } else {
        "not exclusive"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converged_tags_are_the_declared_ones_for_lists_and_segments_only() {
        use crate::manifest::ManifestFile;
        use crate::model::{DesiredState, ResourceKind};
        let manifest: ManifestFile = serde_yaml::from_str(
            "tags: [new, old]\nlists: [{id: vip, name: VIP, tags: [old, new]}]\n",
        )
        .unwrap();
        let desired = DesiredState::from_manifest(&manifest);
        // A record left at [] although Klaviyo already had both links (made by hand): nothing
        // was sent, yet after convergence the record must name them.
        let mut applied = serde_json::json!({"name": "VIP", "tags": []});
        assert!(record_converged_tags(
            &desired,
            ResourceKind::List,
            "vip",
            &mut applied
        ));
        assert_eq!(applied[APPLIED_TAGS], serde_json::json!(["new", "old"]));
        assert!(!record_converged_tags(
            &desired,
            ResourceKind::List,
            "vip",
            &mut applied
        ));
        let mut other = serde_json::json!({"tags": []});
        assert!(!record_converged_tags(
            &desired,
            ResourceKind::List,
            "gone",
            &mut other
        ));
        assert!(!record_converged_tags(
            &desired,
            ResourceKind::Tag,
            "new",
            &mut other
        ));
        assert_eq!(other, serde_json::json!({"tags": []}));
    }

    #[test]
    fn record_link_keeps_tags_sorted_and_leaves_old_records_alone() {
        let mut applied = serde_json::json!({"name": "VIP", "tags": ["b/x"]});
        assert!(record_link(&mut applied, "a/y", true));
        assert!(!record_link(&mut applied, "a/y", true));
        assert_eq!(applied["tags"], serde_json::json!(["a/y", "b/x"]));
        assert!(record_link(&mut applied, "b/x", false));
        assert!(!record_link(&mut applied, "c/z", false));
        assert_eq!(applied["tags"], serde_json::json!(["a/y"]));
        let mut old = serde_json::json!({"name": "VIP"});
        assert!(!record_link(&mut old, "a/y", true));
        assert_eq!(old, serde_json::json!({"name": "VIP"}));
    }

    #[test]
    fn committed_schema_is_current() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../schemas/plan.schema.json"
        );
        let generated = format!(
            "{}\n",
            serde_json::to_string_pretty(&json_schema()).expect("serialize schema")
        );
        if std::env::var_os("KLSYNC_UPDATE_SCHEMA").is_some_and(|value| value == "1") {
            std::fs::write(path, &generated).expect("write schemas/plan.schema.json");
            return;
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "schemas/plan.schema.json is stale; run `KLSYNC_UPDATE_SCHEMA=1 cargo test -p klsync-core plan::tests::committed_schema_is_current`"
        );
    }

    #[test]
    fn required_scopes_cover_the_reads_and_every_request_sent() {
        let plan: Plan = serde_json::from_value(serde_json::json!({
            "format_version": 1,
            "meta": {"created_at": "t", "manifest_digest": "d", "klsync_version": "0"},
            "changes": [],
            "cost": {"requests": {"create_segment": 1, "tag_lists": 2}, "total_requests": 3,
                     "estimated_seconds": 1},
            "warnings": []
        }))
        .expect("plan");
        assert_eq!(
            required_scopes(&plan, ["get_lists", "get_tag_groups", "not_an_operation"]),
            [
                "lists:read",
                "lists:write",
                "segments:write",
                "tags:read",
                "tags:write"
            ]
        );
        assert!(
            required_scopes(
                &Plan {
                    cost: Cost::default(),
                    ..plan
                },
                []
            )
            .is_empty()
        );
    }

    #[test]
    fn schema_states_the_format_version_field() {
        let schema = json_schema();
        let required = schema["required"].as_array().expect("required list");
        assert!(required.iter().any(|field| field == "format_version"));
    }
}
