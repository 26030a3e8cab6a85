//! The three states klsync reasons about, as plain values. Pure: no I/O.
//!
//! - [`DesiredState`]: what the manifests ask for, keyed by manifest key.
//! - [`LiveState`]: what Klaviyo has now, keyed by Klaviyo id.
//! - [`ManagedState`]: which Klaviyo resources klsync owns, and what it last applied to them.
//!
//! A resource in [`ManagedState`] is "managed". Anything else in Klaviyo is never changed or
//! deleted: the only way klsync takes ownership of an existing resource is adoption, when a
//! manifest resource's exact name matches exactly one unmanaged Klaviyo resource.
//!
//! Manifest keys ([`ResourceKey::key`]):
//! - tag group: its name;
//! - tag: `group/name`, or the bare `name` for a tag in Klaviyo's default tag group;
//! - list and segment: the manifest `id`.

#![deny(missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::manifest::{ManifestFile, OptInProcess};

/// The kinds of Klaviyo resource klsync manages.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ResourceKind {
    /// A tag group.
    TagGroup,
    /// A tag.
    Tag,
    /// A list.
    List,
    /// A segment.
    Segment,
}

impl ResourceKind {
    /// Every kind, in dependency order (a tag needs its group; lists and segments need tags).
    pub const ALL: [ResourceKind; 4] = [
        ResourceKind::TagGroup,
        ResourceKind::Tag,
        ResourceKind::List,
        ResourceKind::Segment,
    ];

    /// The prefix of addresses of this kind, e.g. `tag_group` in `tag_group.lifecycle`.
    pub fn prefix(self) -> &'static str {
        match self {
            ResourceKind::TagGroup => "tag_group",
            ResourceKind::Tag => "tag",
            ResourceKind::List => "list",
            ResourceKind::Segment => "segment",
        }
    }
}

impl ResourceKind {
    /// The plural noun for messages, e.g. `tag groups`.
    pub fn plural(self) -> &'static str {
        match self {
            ResourceKind::TagGroup => "tag groups",
            ResourceKind::Tag => "tags",
            ResourceKind::List => "lists",
            ResourceKind::Segment => "segments",
        }
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.prefix())
    }
}

/// A resource's identity in the manifests: its kind and manifest key.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub struct ResourceKey {
    /// The kind of resource.
    pub kind: ResourceKind,
    /// The manifest key (see the module docs).
    pub key: String,
}

impl ResourceKey {
    /// A key of `kind` named `key`.
    pub fn new(kind: ResourceKind, key: impl Into<String>) -> Self {
        Self {
            kind,
            key: key.into(),
        }
    }

    /// The address used in plans, e.g. `list.vip` or `tag.lifecycle/vip`.
    pub fn address(&self) -> String {
        format!("{}.{}", self.kind.prefix(), self.key)
    }
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.kind.prefix(), self.key)
    }
}

/// The manifest key of a tag: `group/name`, or `name` in Klaviyo's default group.
pub fn tag_key(group: Option<&str>, name: &str) -> String {
    match group {
        Some(group) => format!("{group}/{name}"),
        None => name.to_owned(),
    }
}

/// A tag group the manifests declare.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredTagGroup {
    /// Name in Klaviyo, also the manifest key.
    pub name: String,
    /// Whether a resource may carry at most one tag of the group. Fixed at creation.
    pub exclusive: bool,
    /// klsync must never destroy the group.
    pub prevent_destroy: bool,
}

/// A tag the manifests declare.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredTag {
    /// Manifest key: `group/name` or `name`.
    pub key: String,
    /// The tag group's name; `None` for Klaviyo's default group.
    pub group: Option<String>,
    /// Name in Klaviyo.
    pub name: String,
    /// klsync must never destroy the tag (inherited from its group).
    pub prevent_destroy: bool,
}

/// A list the manifests declare.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredList {
    /// Manifest key (`id`).
    pub key: String,
    /// Name in Klaviyo.
    pub name: String,
    /// Opt-in process; `None` leaves Klaviyo's value alone.
    pub opt_in_process: Option<OptInProcess>,
    /// Tag keys on the list.
    pub tags: BTreeSet<String>,
    /// klsync must never destroy the list.
    pub prevent_destroy: bool,
}

/// A segment the manifests declare.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredSegment {
    /// Manifest key (`id`).
    pub key: String,
    /// Name in Klaviyo.
    pub name: String,
    /// Klaviyo's segment definition (`condition_groups`), as written in the manifest.
    pub definition: serde_json::Value,
    /// Starred in Klaviyo's UI.
    pub is_starred: bool,
    /// Tag keys on the segment.
    pub tags: BTreeSet<String>,
    /// klsync must never destroy the segment.
    pub prevent_destroy: bool,
}

/// Everything the manifests ask Klaviyo to hold, keyed by manifest key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DesiredState {
    /// Tag groups by name.
    pub tag_groups: BTreeMap<String, DesiredTagGroup>,
    /// Tags by key.
    pub tags: BTreeMap<String, DesiredTag>,
    /// Lists by key.
    pub lists: BTreeMap<String, DesiredList>,
    /// Segments by key.
    pub segments: BTreeMap<String, DesiredSegment>,
}

impl DesiredState {
    /// The desired state of an already validated and merged manifest.
    ///
    /// Tags of a group inherit the group's `prevent_destroy`: destroying a group destroys its
    /// tags in Klaviyo, so protecting one without the other would be meaningless.
    pub fn from_manifest(manifest: &ManifestFile) -> DesiredState {
        let mut state = DesiredState::default();
        for group in &manifest.tag_groups {
            state.tag_groups.insert(
                group.name.clone(),
                DesiredTagGroup {
                    name: group.name.clone(),
                    exclusive: group.exclusive,
                    prevent_destroy: group.prevent_destroy,
                },
            );
            for tag in &group.tags {
                let key = tag_key(Some(&group.name), tag);
                state.tags.insert(
                    key.clone(),
                    DesiredTag {
                        key,
                        group: Some(group.name.clone()),
                        name: tag.clone(),
                        prevent_destroy: group.prevent_destroy,
                    },
                );
            }
        }
        for tag in &manifest.tags {
            state.tags.insert(
                tag.clone(),
                DesiredTag {
                    key: tag.clone(),
                    group: None,
                    name: tag.clone(),
                    prevent_destroy: false,
                },
            );
        }
        for list in &manifest.lists {
            state.lists.insert(
                list.id.clone(),
                DesiredList {
                    key: list.id.clone(),
                    name: list.name.clone(),
                    opt_in_process: list.opt_in_process,
                    tags: list.tags.iter().cloned().collect(),
                    prevent_destroy: list.prevent_destroy,
                },
            );
        }
        for segment in &manifest.segments {
            state.segments.insert(
                segment.id.clone(),
                DesiredSegment {
                    key: segment.id.clone(),
                    name: segment.name.clone(),
                    definition: segment.definition.clone(),
                    is_starred: segment.is_starred,
                    tags: segment.tags.iter().cloned().collect(),
                    prevent_destroy: segment.prevent_destroy,
                },
            );
        }
        state
    }
}

/// A tag group as Klaviyo reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveTagGroup {
    /// Klaviyo id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Exclusive (immutable).
    pub exclusive: bool,
    /// The account's default tag group (exactly one; cannot be deleted).
    pub default: bool,
}

/// A tag as Klaviyo reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveTag {
    /// Klaviyo id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Id of the tag's group (the default group when created without one).
    pub group_id: String,
}

/// A list as Klaviyo reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveList {
    /// Klaviyo id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Opt-in process (nullable in Klaviyo).
    pub opt_in_process: Option<OptInProcess>,
    /// Ids of the tags on the list.
    pub tag_ids: BTreeSet<String>,
}

/// A segment as Klaviyo reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveSegment {
    /// Klaviyo id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Definition (`condition_groups`).
    pub definition: serde_json::Value,
    /// Starred in the UI.
    pub is_starred: bool,
    /// Ids of the tags on the segment.
    pub tag_ids: BTreeSet<String>,
}

/// What Klaviyo holds now, keyed by Klaviyo id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LiveState {
    /// Tag groups by id.
    pub tag_groups: BTreeMap<String, LiveTagGroup>,
    /// Tags by id.
    pub tags: BTreeMap<String, LiveTag>,
    /// Lists by id.
    pub lists: BTreeMap<String, LiveList>,
    /// Segments by id.
    pub segments: BTreeMap<String, LiveSegment>,
}

impl LiveState {
    /// The id of the account's default tag group, if Klaviyo reported one.
    pub fn default_tag_group_id(&self) -> Option<&str> {
        self.tag_groups
            .values()
            .find(|group| group.default)
            .map(|group| group.id.as_str())
    }

    /// Whether a resource of `kind` with Klaviyo id `id` exists.
    pub fn contains(&self, kind: ResourceKind, id: &str) -> bool {
        match kind {
            ResourceKind::TagGroup => self.tag_groups.contains_key(id),
            ResourceKind::Tag => self.tags.contains_key(id),
            ResourceKind::List => self.lists.contains_key(id),
            ResourceKind::Segment => self.segments.contains_key(id),
        }
    }
}

/// One resource klsync owns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManagedRecord {
    /// Its Klaviyo id.
    pub klaviyo_id: String,
    /// What klsync last applied (attributes plus `prevent_destroy`), for drift and stale-plan
    /// checks. Written from [`crate::plan::Change::applied`].
    pub applied: serde_json::Value,
    /// What Klaviyo returned for the fields klsync compares after its last write (or showed
    /// when klsync imported or adopted the resource), in Klaviyo's own form: the other half of
    /// the three-way comparison ([`crate::plan::three_way`]). `None` for records written before
    /// klsync kept it: those compare the manifest with Klaviyo's value directly.
    pub returned: Option<serde_json::Value>,
}

/// The resources klsync owns, by manifest key.
pub type ManagedState = BTreeMap<ResourceKey, ManagedRecord>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{ListSpec, TagGroupSpec};

    #[test]
    fn from_manifest_keys_tags_by_group_and_inherits_prevent_destroy() {
        let manifest = ManifestFile {
            tag_groups: vec![TagGroupSpec {
                name: "lifecycle".into(),
                exclusive: true,
                tags: vec!["vip".into()],
                prevent_destroy: true,
            }],
            tags: vec!["newsletter".into()],
            lists: vec![ListSpec {
                id: "vip".into(),
                name: "VIP".into(),
                opt_in_process: None,
                tags: vec!["lifecycle/vip".into(), "newsletter".into()],
                members: None,
                prevent_destroy: false,
            }],
            ..ManifestFile::default()
        };
        let state = DesiredState::from_manifest(&manifest);
        assert_eq!(
            state.tags.keys().collect::<Vec<_>>(),
            ["lifecycle/vip", "newsletter"]
        );
        assert!(state.tags["lifecycle/vip"].prevent_destroy);
        assert_eq!(
            state.tags["lifecycle/vip"].group.as_deref(),
            Some("lifecycle")
        );
        assert_eq!(state.tags["newsletter"].group, None);
        assert!(state.tag_groups["lifecycle"].exclusive);
        assert_eq!(state.lists["vip"].tags.len(), 2);
    }

    #[test]
    fn addresses_are_prefixed_by_kind() {
        assert_eq!(
            ResourceKey::new(ResourceKind::Tag, "lifecycle/vip").address(),
            "tag.lifecycle/vip"
        );
        assert_eq!(
            ResourceKey::new(ResourceKind::TagGroup, "x").to_string(),
            "tag_group.x"
        );
    }
}
