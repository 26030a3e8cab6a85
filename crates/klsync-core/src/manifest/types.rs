//! The manifest language as Rust types. serde reads them, schemars turns them into
//! `schemas/klsync.schema.json`; both come from these definitions so they cannot drift apart.
//!
//! Every struct denies unknown fields: a typo such as `nmae` is an error, never silently ignored.
//! Constraints that JSON Schema can express (id syntax, name lengths, enums) live here as schemars
//! attributes so editors flag them too; cross-file rules live in `checks`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One manifest file. Every section is optional; a project is the union of all its files.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    /// Klaviyo tag groups and the tags in them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tag_groups: Vec<TagGroupSpec>,
    /// Tags in Klaviyo's default tag group. Referenced by bare name (`vip`); grouped tags are
    /// referenced as `group/tag`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Klaviyo lists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lists: Vec<ListSpec>,
    /// Klaviyo segments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<SegmentSpec>,
    /// Profile properties driven by SQL queries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<ProfileSyncSpec>,
    /// Named SQL queries used by `members:` and `profiles:`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub queries: BTreeMap<String, QuerySpec>,
}

/// A Klaviyo tag group. `exclusive` is fixed when Klaviyo creates the group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TagGroupSpec {
    /// The group's name in Klaviyo; also its key in manifests (1 to 64 characters, no `/`).
    #[schemars(length(min = 1, max = 64))]
    pub name: String,
    /// At most one tag of an exclusive group may be on one list or segment.
    #[serde(default)]
    pub exclusive: bool,
    /// The tags in this group, referenced elsewhere as `group/tag`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Refuse to ever destroy this group (and its tags) from klsync.
    #[serde(default, skip_serializing_if = "is_false")]
    pub prevent_destroy: bool,
}

/// A Klaviyo list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListSpec {
    /// Stable key in git; klsync maps it to Klaviyo's list id. Renaming the list keeps the id.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9_-]{0,63}$"))]
    pub id: String,
    /// The list's name in Klaviyo (1 to 255 characters).
    #[schemars(length(min = 1, max = 255))]
    pub name: String,
    /// Opt-in process; omitted means "leave Klaviyo's value (the account default) alone".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opt_in_process: Option<OptInProcess>,
    /// Tags on the list: `tag` (default group) or `group/tag`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Membership driven by a SQL query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<MembershipSpec>,
    /// Refuse to ever destroy this list from klsync.
    #[serde(default, skip_serializing_if = "is_false")]
    pub prevent_destroy: bool,
}

/// A list's opt-in process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OptInProcess {
    /// Subscribers are added at once.
    SingleOptIn,
    /// Subscribers confirm by email first.
    DoubleOptIn,
}

/// List membership from SQL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MembershipSpec {
    /// Name of a query in `queries:` or in the saved_queries table.
    #[schemars(length(min = 1))]
    pub query: String,
    /// Which column identifies a profile.
    pub identify_by: IdentifyBy,
    /// `add_only` (default) never removes; `mirror` removes members klsync added that left the query.
    #[serde(default)]
    pub mode: MembershipMode,
    /// Blast-radius guard: the most members one apply may remove, as a count (`100`) or a
    /// percentage of the list (`5%`). Apply refuses more without `--force`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_removals: Option<MaxRemovals>,
}

/// The profile identifier a query's rows are keyed by.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum IdentifyBy {
    /// The `email` column.
    Email,
    /// The `external_id` column.
    ExternalId,
    /// The `phone_number` column (E.164).
    PhoneNumber,
}

/// How list membership follows its query.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MembershipMode {
    /// Add profiles the query returns; never remove anyone.
    #[default]
    AddOnly,
    /// Also remove profiles klsync added that the query no longer returns.
    Mirror,
}

/// `max_removals`: a count or a percentage string such as `5%`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum MaxRemovals {
    /// At most this many removals.
    Count(u64),
    /// At most this percentage of the list's current members, written `5%` or `2.5%`.
    Percent(#[schemars(regex(pattern = r"^(100|[0-9]{1,2})(\.[0-9]+)?%$"))] String),
}

/// A Klaviyo segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SegmentSpec {
    /// Stable key in git; klsync maps it to Klaviyo's segment id.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9_-]{0,63}$"))]
    pub id: String,
    /// The segment's name in Klaviyo (1 to 255 characters).
    #[schemars(length(min = 1, max = 255))]
    pub name: String,
    /// Klaviyo's own segment definition (`condition_groups`), checked against Klaviyo's schema.
    pub definition: serde_json::Value,
    /// Tags on the segment: `tag` (default group) or `group/tag`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Star the segment in Klaviyo's UI.
    #[serde(default, skip_serializing_if = "is_false")]
    pub is_starred: bool,
    /// Refuse to ever destroy this segment from klsync.
    #[serde(default, skip_serializing_if = "is_false")]
    pub prevent_destroy: bool,
}

/// Profile properties from a SQL query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileSyncSpec {
    /// Stable key of this sync in git.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9_-]{0,63}$"))]
    pub id: String,
    /// Name of a query in `queries:` or in the saved_queries table.
    #[schemars(length(min = 1))]
    pub query: String,
    /// Which column identifies a profile (the column of the same name must be selected).
    pub identify_by: IdentifyBy,
    /// Klaviyo custom property name -> query column.
    pub properties: BTreeMap<String, String>,
    /// What to do when a profile klsync set properties on no longer appears in the query.
    #[serde(default)]
    pub on_missing_row: OnMissingRow,
}

/// What happens to synced properties of a profile whose row disappeared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnMissingRow {
    /// Leave the properties as they were last set.
    #[default]
    Keep,
    /// Remove the synced properties from the profile.
    Unset,
}

/// A named SQL query with bound parameters (`$1`, `$2`, ...). Never string-interpolated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QuerySpec {
    /// The SQL text; parameters as `$1`, `$2`, ...
    #[schemars(length(min = 1))]
    pub sql: String,
    /// Values bound to `$1`, `$2`, ... in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<serde_json::Value>,
    /// What the query selects, for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

fn is_false(value: &bool) -> bool {
    !*value
}
