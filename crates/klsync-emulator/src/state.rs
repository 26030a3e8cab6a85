//! The emulated Klaviyo account: every resource, in memory, serialisable to the state file.
//!
//! Collections are maps keyed by id; each record carries a creation sequence number so listings
//! come back in creation order regardless of the id format. The typed helpers here
//! (`create_list`, `create_profile`, `tag_resources`, ...) are what the HTTP handlers use after
//! validating a request, and what tests use to seed an account directly through
//! [`super::EmulatorHandle::seed`] without spending requests or rate limit.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::ids::IdGen;
use super::jsonapi::ApiError;

pub use klaviyo_spec::limits::{
    MAX_TAG_GROUPS_PER_ACCOUNT, MAX_TAGS_PER_ACCOUNT, MAX_TAGS_PER_RESOURCE, PROFILE_IDENTIFIERS,
    PROFILE_STRING_FIELDS,
};

/// Name of the tag group every account has.
pub const DEFAULT_TAG_GROUP_NAME: &str = "Default Tag Group";

/// The current time as Klaviyo prints it, e.g. `2022-11-08T00:00:00+00:00`.
pub fn timestamp() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S+00:00")
        .to_string()
}

/// A profile.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Profile {
    /// Creation order.
    pub seq: u64,
    /// ULID.
    pub id: String,
    /// Writable attributes: the string fields, `location` and `properties`, absent when unset.
    pub attributes: Map<String, Value>,
    /// Creation time.
    pub created: String,
    /// Last update time.
    pub updated: String,
}

impl Profile {
    /// A string attribute.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).and_then(Value::as_str)
    }
}

/// A list member.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Member {
    /// Join order.
    pub seq: u64,
    /// When the profile joined.
    pub joined_group_at: String,
}

/// A list.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct List {
    /// Creation order.
    pub seq: u64,
    /// 6-char id.
    pub id: String,
    /// Name.
    pub name: String,
    /// `single_opt_in` / `double_opt_in`.
    pub opt_in_process: Option<String>,
    /// Creation time.
    pub created: String,
    /// Last update time.
    pub updated: String,
    /// Members by profile id.
    pub members: BTreeMap<String, Member>,
}

/// A segment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Segment {
    /// Creation order.
    pub seq: u64,
    /// 6-char id.
    pub id: String,
    /// Name.
    pub name: String,
    /// `{condition_groups: [...]}` as sent.
    pub definition: Value,
    /// Deactivated segments stop updating.
    pub is_active: bool,
    /// Always false here: membership is computed on read.
    pub is_processing: bool,
    /// Starred in the UI.
    pub is_starred: bool,
    /// Creation time.
    pub created: String,
    /// Last update time.
    pub updated: String,
}

/// A tag group.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TagGroup {
    /// Creation order.
    pub seq: u64,
    /// UUID.
    pub id: String,
    /// Name.
    pub name: String,
    /// A resource may carry at most one tag of an exclusive group.
    pub exclusive: bool,
    /// The account's default group, which cannot be deleted.
    pub default: bool,
}

/// A tag.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Tag {
    /// Creation order.
    pub seq: u64,
    /// UUID.
    pub id: String,
    /// Name.
    pub name: String,
    /// Owning tag group.
    pub group_id: String,
    /// Tagged lists.
    pub lists: BTreeSet<String>,
    /// Tagged segments.
    pub segments: BTreeSet<String>,
}

/// Which kind of resource a tag is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taggable {
    /// A list.
    List,
    /// A segment.
    Segment,
}

impl Taggable {
    /// The JSON:API type.
    pub fn kind(self) -> &'static str {
        match self {
            Taggable::List => "list",
            Taggable::Segment => "segment",
        }
    }
}

/// A per-row failure of a bulk import.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImportErrorRecord {
    /// UUID.
    pub id: String,
    /// Machine code.
    pub code: String,
    /// Short title.
    pub title: String,
    /// Detail.
    pub detail: String,
    /// Pointer into the row.
    pub pointer: String,
    /// The row's index in the job's profiles.
    #[serde(default)]
    pub index: usize,
    /// The row as sent.
    pub original_payload: Value,
}

/// A profile bulk import job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BulkJob {
    /// Creation order.
    pub seq: u64,
    /// ULID.
    pub id: String,
    /// `queued`, `processing`, `complete` or `cancelled`.
    pub status: String,
    /// Creation time.
    pub created_at: String,
    /// When processing began.
    pub started_at: Option<String>,
    /// When processing ended.
    pub completed_at: Option<String>,
    /// When the job's results expire.
    pub expires_at: Option<String>,
    /// Rows sent.
    pub total_count: u64,
    /// Rows imported.
    pub completed_count: u64,
    /// Rows rejected.
    pub failed_count: u64,
    /// Lists every imported profile joins.
    pub list_ids: Vec<String>,
    /// Profiles created or updated.
    pub profile_ids: Vec<String>,
    /// Per-row errors.
    pub errors: Vec<ImportErrorRecord>,
    /// Rows not yet processed.
    pub pending: Vec<Value>,
}

/// The whole emulated account.
#[derive(Debug, Serialize, Deserialize)]
pub struct State {
    /// Profiles by id.
    pub profiles: BTreeMap<String, Profile>,
    /// Lists by id.
    pub lists: BTreeMap<String, List>,
    /// Segments by id.
    pub segments: BTreeMap<String, Segment>,
    /// Tags by id.
    pub tags: BTreeMap<String, Tag>,
    /// Tag groups by id.
    pub tag_groups: BTreeMap<String, TagGroup>,
    /// Bulk import jobs by id.
    pub jobs: BTreeMap<String, BulkJob>,
    next_seq: u64,
    #[serde(skip)]
    ids: IdGen,
    /// Identifier value -> profile, kept in step with every profile the emulator writes (and
    /// rebuilt after a state file is loaded), so that finding a profile by email costs the same
    /// with 10 million profiles as with ten.
    #[serde(skip)]
    identifiers: IdentifierIndex,
    /// The emulator's modes (set at start, kept by a reset; not part of the account).
    #[serde(skip)]
    pub modes: super::Modes,
}

impl State {
    /// An empty account (with its default tag group), ids drawn from `seed`.
    pub fn new(seed: u64) -> Self {
        let mut state = State {
            profiles: BTreeMap::new(),
            lists: BTreeMap::new(),
            segments: BTreeMap::new(),
            tags: BTreeMap::new(),
            tag_groups: BTreeMap::new(),
            jobs: BTreeMap::new(),
            next_seq: 0,
            ids: IdGen::new(seed),
            identifiers: IdentifierIndex::default(),
            modes: super::Modes::default(),
        };
        state.ensure_default_tag_group();
        state
    }

    /// Restores the parts a state file does not hold: the id generator and the default group.
    pub fn after_load(&mut self, seed: u64) {
        self.ids = IdGen::new(seed);
        self.identifiers = IdentifierIndex::default();
        for p in self.profiles.values() {
            self.identifiers.insert(p);
        }
        self.ensure_default_tag_group();
    }

    fn ensure_default_tag_group(&mut self) {
        if !self.tag_groups.values().any(|g| g.default) {
            self.create_tag_group_unchecked(DEFAULT_TAG_GROUP_NAME, false, true);
        }
    }

    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    fn fresh_id(&mut self, make: fn(&mut IdGen) -> String) -> String {
        // A reloaded state file re-seeds the generator, so an id may already be taken.
        loop {
            let id = make(&mut self.ids);
            let taken = self.profiles.contains_key(&id)
                || self.lists.contains_key(&id)
                || self.segments.contains_key(&id)
                || self.tags.contains_key(&id)
                || self.tag_groups.contains_key(&id)
                || self.jobs.contains_key(&id);
            if !taken {
                return id;
            }
        }
    }

    /// A fresh ULID for a bulk import job.
    pub fn new_job_id(&mut self) -> String {
        self.fresh_id(IdGen::ulid)
    }

    /// The next creation sequence number, for records built outside this module.
    pub fn next_job_seq(&mut self) -> u64 {
        self.seq()
    }

    /// A fresh UUID (for error and import-error ids).
    pub fn uuid(&mut self) -> String {
        self.ids.uuid()
    }

    /// The id of the account's default tag group.
    pub fn default_tag_group_id(&self) -> String {
        self.tag_groups
            .values()
            .find(|g| g.default)
            .map(|g| g.id.clone())
            .unwrap_or_default()
    }

    /// Creates a profile with already-validated attributes; returns its id.
    pub fn create_profile(&mut self, attributes: Map<String, Value>) -> String {
        let id = self.fresh_id(IdGen::ulid);
        let now = timestamp();
        let seq = self.seq();
        let attributes = attributes
            .into_iter()
            .filter(|(_, v)| !v.is_null())
            .collect();
        self.put_profile(Profile {
            seq,
            id: id.clone(),
            attributes,
            created: now.clone(),
            updated: now,
        });
        id
    }

    /// Stores a new or changed profile, keeping the identifier index in step. Every write of a
    /// profile goes through here; tests that edit `profiles` directly may change properties but
    /// not identifiers (a removed profile is tolerated: the index checks what it finds).
    pub fn put_profile(&mut self, profile: Profile) {
        if let Some(old) = self.profiles.get(&profile.id) {
            self.identifiers.remove(old);
        }
        self.identifiers.insert(&profile);
        self.profiles.insert(profile.id.clone(), profile);
    }

    /// Ids of the distinct profiles that share an identifier with `attributes`, in creation
    /// order, ignoring `except`.
    pub fn profiles_matching(
        &self,
        attributes: &Map<String, Value>,
        except: Option<&str>,
    ) -> Vec<String> {
        let mut found: Vec<&Profile> = PROFILE_IDENTIFIERS
            .iter()
            .filter_map(|key| Some((*key, attributes.get(*key)?.as_str()?)))
            .flat_map(|(key, wanted)| {
                self.identifiers
                    .ids(key, wanted)
                    .filter_map(|id| self.profiles.get(id))
                    // An entry left by a profile edited outside `put_profile` is not trusted.
                    .filter(move |p| {
                        p.get_str(key)
                            .is_some_and(|have| identifier_eq(key, wanted, have))
                    })
            })
            .filter(|p| Some(p.id.as_str()) != except)
            .collect();
        found.sort_by_key(|p| p.seq);
        found.dedup_by_key(|p| p.seq);
        found.into_iter().map(|p| p.id.clone()).collect()
    }

    /// Creates a list; returns its id.
    pub fn create_list(&mut self, name: &str, opt_in_process: Option<&str>) -> String {
        let id = self.fresh_id(IdGen::short);
        let now = timestamp();
        let seq = self.seq();
        self.lists.insert(
            id.clone(),
            List {
                seq,
                id: id.clone(),
                name: name.to_owned(),
                opt_in_process: Some(opt_in_process.unwrap_or("single_opt_in").to_owned()),
                created: now.clone(),
                updated: now,
                members: BTreeMap::new(),
            },
        );
        id
    }

    /// Adds existing profiles to a list; re-adding a member keeps its original join time.
    pub fn add_members(&mut self, list_id: &str, profile_ids: &[String]) {
        let now = timestamp();
        let mut seqs = Vec::with_capacity(profile_ids.len());
        for _ in profile_ids {
            seqs.push(self.seq());
        }
        if let Some(list) = self.lists.get_mut(list_id) {
            for (profile_id, seq) in profile_ids.iter().zip(seqs) {
                list.members.entry(profile_id.clone()).or_insert(Member {
                    seq,
                    joined_group_at: now.clone(),
                });
            }
        }
    }

    /// Creates a segment with an already-validated definition; returns its id.
    pub fn create_segment(&mut self, name: &str, definition: Value, is_starred: bool) -> String {
        let id = self.fresh_id(IdGen::short);
        let now = timestamp();
        let seq = self.seq();
        self.segments.insert(
            id.clone(),
            Segment {
                seq,
                id: id.clone(),
                name: name.to_owned(),
                definition,
                is_active: true,
                is_processing: false,
                is_starred,
                created: now.clone(),
                updated: now,
            },
        );
        id
    }

    fn create_tag_group_unchecked(&mut self, name: &str, exclusive: bool, default: bool) -> String {
        let id = self.fresh_id(IdGen::uuid);
        let seq = self.seq();
        self.tag_groups.insert(
            id.clone(),
            TagGroup {
                seq,
                id: id.clone(),
                name: name.to_owned(),
                exclusive,
                default,
            },
        );
        id
    }

    /// Creates a tag group, enforcing the 50-group account limit; returns its id.
    pub fn create_tag_group(&mut self, name: &str, exclusive: bool) -> Result<String, ApiError> {
        if self.tag_groups.len() >= MAX_TAG_GROUPS_PER_ACCOUNT {
            return Err(ApiError::invalid(
                "/data",
                format!("An account can have at most {MAX_TAG_GROUPS_PER_ACCOUNT} tag groups."),
            ));
        }
        Ok(self.create_tag_group_unchecked(name, exclusive, false))
    }

    /// Creates a tag in `group_id` (default group when `None`), enforcing the 500-tag limit.
    pub fn create_tag(&mut self, name: &str, group_id: Option<&str>) -> Result<String, ApiError> {
        if self.tags.len() >= MAX_TAGS_PER_ACCOUNT {
            return Err(ApiError::invalid(
                "/data",
                format!("An account can have at most {MAX_TAGS_PER_ACCOUNT} tags."),
            ));
        }
        let group_id = match group_id {
            Some(g) if self.tag_groups.contains_key(g) => g.to_owned(),
            Some(g) => return Err(ApiError::not_found("tag-group", g)),
            None => self.default_tag_group_id(),
        };
        let id = self.fresh_id(IdGen::uuid);
        let seq = self.seq();
        self.tags.insert(
            id.clone(),
            Tag {
                seq,
                id: id.clone(),
                name: name.to_owned(),
                group_id,
                lists: BTreeSet::new(),
                segments: BTreeSet::new(),
            },
        );
        Ok(id)
    }

    /// Tag ids on a list or segment, in tag creation order.
    pub fn tags_of(&self, kind: Taggable, resource_id: &str) -> Vec<String> {
        let mut tags: Vec<&Tag> = self
            .tags
            .values()
            .filter(|t| match kind {
                Taggable::List => t.lists.contains(resource_id),
                Taggable::Segment => t.segments.contains(resource_id),
            })
            .collect();
        tags.sort_by_key(|t| t.seq);
        tags.into_iter().map(|t| t.id.clone()).collect()
    }

    /// Attaches a tag to resources, all or nothing: unknown resources, more than 100 tags on a
    /// resource, or a second tag from an exclusive group are 400s.
    pub fn tag_resources(
        &mut self,
        tag_id: &str,
        kind: Taggable,
        ids: &[String],
    ) -> Result<(), ApiError> {
        let tag = self
            .tags
            .get(tag_id)
            .ok_or_else(|| ApiError::not_found("tag", tag_id))?;
        let exclusive = self
            .tag_groups
            .get(&tag.group_id)
            .is_some_and(|g| g.exclusive);
        for (i, id) in ids.iter().enumerate() {
            let exists = match kind {
                Taggable::List => self.lists.contains_key(id),
                Taggable::Segment => self.segments.contains_key(id),
            };
            if !exists {
                return Err(ApiError::invalid(
                    format!("/data/{i}/id"),
                    format!("A {} with id {id} does not exist.", kind.kind()),
                ));
            }
            let current = self.tags_of(kind, id);
            if current.iter().any(|t| t == tag_id) {
                continue;
            }
            if current.len() >= MAX_TAGS_PER_RESOURCE {
                return Err(ApiError::invalid(
                    format!("/data/{i}/id"),
                    format!(
                        "A {} can have at most {MAX_TAGS_PER_RESOURCE} tags.",
                        kind.kind()
                    ),
                ));
            }
            if exclusive
                && current
                    .iter()
                    .any(|t| self.tags.get(t).is_some_and(|t| t.group_id == tag.group_id))
            {
                return Err(ApiError::invalid(
                    format!("/data/{i}/id"),
                    format!(
                        "The {} {id} already has a tag from this exclusive tag group.",
                        kind.kind()
                    ),
                ));
            }
        }
        if let Some(tag) = self.tags.get_mut(tag_id) {
            let set = match kind {
                Taggable::List => &mut tag.lists,
                Taggable::Segment => &mut tag.segments,
            };
            set.extend(ids.iter().cloned());
        }
        Ok(())
    }

    /// Deletes a list and its tag links.
    pub fn delete_list(&mut self, id: &str) -> bool {
        for tag in self.tags.values_mut() {
            tag.lists.remove(id);
        }
        self.lists.remove(id).is_some()
    }

    /// Deletes a segment and its tag links.
    pub fn delete_segment(&mut self, id: &str) -> bool {
        for tag in self.tags.values_mut() {
            tag.segments.remove(id);
        }
        self.segments.remove(id).is_some()
    }

    /// Profiles in a segment, computed from its definition (see [`super::segments`]).
    pub fn segment_members(&self, segment_id: &str) -> Vec<String> {
        let Some(segment) = self.segments.get(segment_id) else {
            return Vec::new();
        };
        let mut members: Vec<&Profile> = self
            .profiles
            .values()
            .filter(|p| super::segments::matches(&segment.definition, p, self))
            .collect();
        members.sort_by_key(|p| p.seq);
        members.into_iter().map(|p| p.id.clone()).collect()
    }
}

/// Identifier value → profile id (emails lowercased). Klaviyo keeps identifiers unique, and so
/// does every write the emulator serves; a test that seeds two profiles with one identifier
/// directly gets both back, in `shared`.
#[derive(Debug, Clone, Default)]
struct IdentifierIndex {
    by_value: std::collections::HashMap<(&'static str, String), String>,
    shared: std::collections::HashMap<(&'static str, String), Vec<String>>,
}

impl IdentifierIndex {
    fn key(field: &'static str, value: &str) -> (&'static str, String) {
        if field == "email" {
            (field, value.to_ascii_lowercase())
        } else {
            (field, value.to_owned())
        }
    }

    fn insert(&mut self, p: &Profile) {
        for field in PROFILE_IDENTIFIERS {
            if let Some(value) = p.get_str(field) {
                let key = Self::key(field, value);
                match self.by_value.get(&key) {
                    Some(id) if *id != p.id => {
                        self.shared.entry(key).or_default().push(p.id.clone())
                    }
                    Some(_) => {}
                    None => {
                        self.by_value.insert(key, p.id.clone());
                    }
                }
            }
        }
    }

    fn remove(&mut self, p: &Profile) {
        for field in PROFILE_IDENTIFIERS {
            if let Some(value) = p.get_str(field) {
                let key = Self::key(field, value);
                if let Some(others) = self.shared.get_mut(&key) {
                    others.retain(|id| *id != p.id);
                    if self.by_value.get(&key) == Some(&p.id) {
                        if let Some(next) = others.pop() {
                            self.by_value.insert(key.clone(), next);
                        } else {
                            self.by_value.remove(&key);
                        }
                    }
                    if others.is_empty() {
                        self.shared.remove(&key);
                    }
                } else if self.by_value.get(&key) == Some(&p.id) {
                    self.by_value.remove(&key);
                }
            }
        }
    }

    /// The ids filed under `field` = `value`.
    fn ids<'a>(&'a self, field: &'static str, value: &str) -> impl Iterator<Item = &'a String> {
        let key = Self::key(field, value);
        let shared = self.shared.get(&key).map(Vec::as_slice).unwrap_or_default();
        self.by_value.get(&key).into_iter().chain(shared)
    }
}

/// Emails compare case-insensitively, other identifiers exactly.
pub fn identifier_eq(key: &str, a: &str, b: &str) -> bool {
    if key == "email" {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

/// Records sorted by creation order.
pub fn in_order<T, F: Fn(&T) -> u64>(items: impl IntoIterator<Item = T>, seq: F) -> Vec<T> {
    let mut items: Vec<T> = items.into_iter().collect();
    items.sort_by_key(|i| seq(i));
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_account_has_one_default_group() {
        let state = State::new(0);
        let defaults: Vec<_> = state.tag_groups.values().filter(|g| g.default).collect();
        assert_eq!(defaults.len(), 1);
        assert_eq!(defaults[0].name, DEFAULT_TAG_GROUP_NAME);
    }

    #[test]
    fn exclusive_group_allows_one_tag_per_resource() {
        let mut state = State::new(0);
        let list = state.create_list("L", None);
        let group = state.create_tag_group("Region", true).unwrap();
        let eu = state.create_tag("EU", Some(&group)).unwrap();
        let us = state.create_tag("US", Some(&group)).unwrap();
        state
            .tag_resources(&eu, Taggable::List, std::slice::from_ref(&list))
            .unwrap();
        // Re-tagging with the same tag is a no-op, not an exclusivity violation.
        state
            .tag_resources(&eu, Taggable::List, std::slice::from_ref(&list))
            .unwrap();
        let err = state
            .tag_resources(&us, Taggable::List, std::slice::from_ref(&list))
            .unwrap_err();
        assert_eq!(err.status, 400);
        assert_eq!(state.tags_of(Taggable::List, &list), vec![eu]);
    }

    #[test]
    fn profiles_matching_finds_each_identifier() {
        let mut state = State::new(0);
        let mut a = Map::new();
        a.insert("email".into(), "A@x.com".into());
        let id = state.create_profile(a);
        let mut query = Map::new();
        query.insert("email".into(), "a@X.com".into());
        assert_eq!(state.profiles_matching(&query, None), vec![id.clone()]);
        assert!(state.profiles_matching(&query, Some(&id)).is_empty());
    }

    fn with(pairs: &[(&str, &str)]) -> Map<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
            .collect()
    }

    #[test]
    fn the_identifier_index_follows_every_write_and_distrusts_outside_edits() {
        let mut state = State::new(0);
        let a = state.create_profile(with(&[("email", "a@x.com"), ("external_id", "A")]));
        // A changed identifier is found by its new value only.
        let mut changed = state.profiles[&a].clone();
        changed
            .attributes
            .insert("email".into(), "new@x.com".into());
        state.put_profile(changed);
        assert!(
            state
                .profiles_matching(&with(&[("email", "a@x.com")]), None)
                .is_empty()
        );
        assert_eq!(
            state.profiles_matching(&with(&[("email", "NEW@x.com")]), None),
            vec![a.clone()]
        );
        // Two profiles seeded with one identifier are both found, in creation order, and one
        // matched by two identifiers is listed once.
        let b = state.create_profile(with(&[("email", "new@x.com")]));
        let both = with(&[("email", "new@x.com"), ("external_id", "A")]);
        assert_eq!(
            state.profiles_matching(&both, None),
            vec![a.clone(), b.clone()]
        );
        // A profile removed behind the index's back is not returned, nor is one whose
        // identifier a test changed in place.
        state.profiles.remove(&b);
        state
            .profiles
            .get_mut(&a)
            .unwrap()
            .attributes
            .insert("email".into(), "edited@x.com".into());
        assert!(
            state
                .profiles_matching(&with(&[("email", "new@x.com")]), None)
                .is_empty()
        );
        // A reloaded state file is indexed again.
        let mut reloaded: State =
            serde_json::from_value(serde_json::to_value(&state).unwrap()).unwrap();
        reloaded.after_load(0);
        assert_eq!(
            reloaded.profiles_matching(&with(&[("email", "edited@x.com")]), None),
            vec![a]
        );
    }
}
