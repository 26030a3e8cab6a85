//! `klsync import`: turn what an account holds ([`LiveState`]) into manifests. Pure: no I/O.
//!
//! Output is meant to be committed and reviewed, so it is stable: resources sorted by name, tags
//! sorted by key, segment definitions normalised (keys sorted, `null`s dropped) and written as
//! YAML. Names are written by serde_yaml, which quotes every string that would otherwise read
//! back as something else (`yes`, `null`, `123`, `Sale: 50% off`, `#1 fans`, `*star`, ...).
//!
//! Manifest ids are derived from names (see [`slug`]) and made unique with `-2`, `-3`, ...
//! suffixes; a resource klsync already manages keeps the key it is recorded under, so importing
//! again never renames a key.
//!
//! Klaviyo accepts names that klsync's validator rejects. Such resources are skipped, never
//! written and never marked managed, and each is reported with its reason:
//! - tag groups and tags: empty names, names with `/`, longer than 64 characters, or with
//!   leading or trailing spaces (a skipped group takes its tags with it);
//! - lists and segments: names empty or longer than 255 characters;
//! - any kind: a name shared by two resources of the kind (tags: in the same group), because
//!   klsync could not tell them apart;
//! - lists and segments with more than 100 tags or two tags of one exclusive group;
//! - segments whose definition Klaviyo's published schema rejects.
//!
//! Links to tags that are not imported (skipped, or not part of `--only`) are left out of the
//! manifests unless klsync already manages the tag: `plan` never touches links to tags it does
//! not manage, so leaving them out keeps the plan empty.
//!
//! What to record as applied for each imported resource is not built here: [`managed_records`]
//! asks the planner, through an adoption plan, for exactly the `applied` value `apply` records.

#![deny(missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::manifest::checks::{MAX_TAG_NAME_CHARS, MAX_TAGS_PER_RESOURCE};
use crate::manifest::{ListSpec, ManifestFile, SegmentSpec, TagGroupSpec};
use crate::model::{
    DesiredState, LiveState, ManagedRecord, ManagedState, ResourceKey, ResourceKind, tag_key,
};
use crate::plan::{self, Action, PlanError, PlanMeta, normalize_definition};

/// Longest list or segment name the manifest schema accepts.
const MAX_NAME_CHARS: usize = 255;
/// Longest manifest id (`^[a-z0-9][a-z0-9_-]{0,63}$`).
const MAX_ID_CHARS: usize = 64;

/// The comment every imported manifest starts with: the editor modeline and where its schema
/// comes from. The schema path is relative to the file, so import writes the schema beside it.
pub const MANIFEST_HEADER: &str = "\
# yaml-language-server: $schema=klsync.schema.json
# Imported from Klaviyo by `klsync import`. klsync.schema.json beside this file is
# `klsync schema > klsync.schema.json`; regenerate it after upgrading klsync.
";

/// The manifest schema file import writes beside the manifests.
pub const MANIFEST_SCHEMA_FILE: &str = "klsync.schema.json";
/// The settings schema file import writes beside `klsync.yaml`.
pub const SETTINGS_SCHEMA_FILE: &str = "klsync-settings.schema.json";

/// What `--only` can select. `tags` covers tag groups and tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportKind {
    /// Tag groups and tags, written to `tags.yaml`.
    Tags,
    /// Lists, written to `lists.yaml`.
    Lists,
    /// Segments, written to `segments.yaml`.
    Segments,
}

impl ImportKind {
    /// Every kind.
    pub const ALL: [ImportKind; 3] = [ImportKind::Tags, ImportKind::Lists, ImportKind::Segments];

    /// The file this kind is written to.
    pub fn file_name(self) -> &'static str {
        match self {
            ImportKind::Tags => "tags.yaml",
            ImportKind::Lists => "lists.yaml",
            ImportKind::Segments => "segments.yaml",
        }
    }

    /// The resource kinds this selection covers.
    pub fn resource_kinds(self) -> &'static [ResourceKind] {
        match self {
            ImportKind::Tags => &[ResourceKind::TagGroup, ResourceKind::Tag],
            ImportKind::Lists => &[ResourceKind::List],
            ImportKind::Segments => &[ResourceKind::Segment],
        }
    }
}

/// A Klaviyo resource import left out, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Skipped {
    /// Its kind.
    pub kind: ResourceKind,
    /// Its Klaviyo id.
    pub klaviyo_id: String,
    /// Its name in Klaviyo.
    pub name: String,
    /// Why it was left out.
    pub reason: String,
}

/// One manifest file import writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedFile {
    /// File name, relative to the output directory.
    pub name: &'static str,
    /// Its content.
    pub text: String,
}

/// The result of an import.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    /// Everything imported, as one manifest.
    pub manifest: ManifestFile,
    /// The files to write, one per selected kind.
    pub files: Vec<ImportedFile>,
    /// Every imported resource and the Klaviyo id it comes from.
    pub resources: BTreeMap<ResourceKey, String>,
    /// What was left out, sorted.
    pub skipped: Vec<Skipped>,
}

/// Why [`managed_records`] failed: the adoption plan did not map the imported manifests back
/// onto the resources they were made from. A bug, not a user error.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The planner refused the imported manifests.
    #[error("planning the adoption of the imported resources failed: {0}")]
    Plan(#[from] PlanError),
    /// The planner adopted another resource than the one a manifest entry was made from.
    #[error(
        "{address} was imported from Klaviyo id {expected}, but the adoption plan maps it to {found}"
    )]
    Mismatch {
        /// The resource's address.
        address: String,
        /// The id it was imported from.
        expected: String,
        /// What the plan found (`nothing` when it did not adopt it).
        found: String,
    },
}

/// Turn the live account into manifests for the `kinds` selected. `managed` is klsync's state:
/// managed resources keep their keys, and links to managed tags are kept when tags are not
/// imported.
pub fn import(live: &LiveState, managed: &ManagedState, kinds: &BTreeSet<ImportKind>) -> Imported {
    let mut importer = Importer {
        live,
        managed,
        skipped: Vec::new(),
        resources: BTreeMap::new(),
        tag_keys: BTreeMap::new(),
    };
    let mut manifest = ManifestFile::default();
    if kinds.contains(&ImportKind::Tags) {
        let (groups, tags) = importer.tags();
        manifest.tag_groups = groups;
        manifest.tags = tags;
    } else {
        // Not imported: links to tags klsync already manages stay, under their keys.
        importer.tag_keys = managed
            .iter()
            .filter(|(key, record)| {
                key.kind == ResourceKind::Tag && live.tags.contains_key(&record.klaviyo_id)
            })
            .map(|(key, record)| (record.klaviyo_id.clone(), key.key.clone()))
            .collect();
    }
    if kinds.contains(&ImportKind::Lists) {
        manifest.lists = importer.lists();
    }
    if kinds.contains(&ImportKind::Segments) {
        manifest.segments = importer.segments();
    }
    let files = kinds
        .iter()
        .map(|kind| ImportedFile {
            name: kind.file_name(),
            text: render_file(*kind, &manifest),
        })
        .collect();
    let mut skipped = importer.skipped;
    skipped.sort();
    Imported {
        manifest,
        files,
        resources: importer.resources,
        skipped,
    }
}

/// The text of `kind`'s file: the header, then `kind`'s sections of `manifest`.
pub fn render_file(kind: ImportKind, manifest: &ManifestFile) -> String {
    let section = match kind {
        ImportKind::Tags => ManifestFile {
            tag_groups: manifest.tag_groups.clone(),
            tags: manifest.tags.clone(),
            ..ManifestFile::default()
        },
        ImportKind::Lists => ManifestFile {
            lists: manifest.lists.clone(),
            ..ManifestFile::default()
        },
        ImportKind::Segments => ManifestFile {
            segments: manifest.segments.clone(),
            ..ManifestFile::default()
        },
    };
    let body = if section == ManifestFile::default() {
        // `{}` would do, but an explicit empty section says what the file is for.
        match kind {
            ImportKind::Tags => "tag_groups: []\ntags: []\n".to_owned(),
            ImportKind::Lists => "lists: []\n".to_owned(),
            ImportKind::Segments => "segments: []\n".to_owned(),
        }
    } else {
        // Manifest types hold strings, booleans and JSON values only: they always serialise.
        let text = serde_yaml::to_string(&section).unwrap_or_else(|error| format!("# {error}\n"));
        quote_yaml11_booleans(&text)
    };
    format!("{MANIFEST_HEADER}{body}")
}

/// Words YAML 1.1 reads as booleans. klsync reads YAML 1.2, where they are strings, and so
/// serde_yaml leaves them bare; but many editors and tools still read YAML 1.1, where a list
/// named `yes` would become `true`.
const YAML11_BOOLEANS: &[&str] = &[
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off",
    "OFF",
];

/// `text` (serde_yaml output) with every plain scalar that YAML 1.1 would read as a boolean
/// single-quoted. serde_yaml writes real booleans as `true`/`false`, so a bare `yes` is always
/// a string. Lines inside block scalars (`|`, `>`) are content and left alone.
fn quote_yaml11_booleans(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // Indentation of the line that opened a block scalar, while inside one.
    let mut block: Option<usize> = None;
    for line in text.split_inclusive('\n') {
        let content = line.trim_end_matches('\n');
        let indent = content.len() - content.trim_start().len();
        if let Some(opened) = block {
            if content.trim().is_empty() || indent > opened {
                out.push_str(line);
                continue;
            }
            block = None;
        }
        let rest = content.trim_start();
        // The value part: after `- ` markers and a `key: `.
        let mut value_start = indent;
        let mut value = rest;
        while let Some(item) = value.strip_prefix("- ") {
            value_start += 2;
            value = item;
        }
        if let Some(colon) = value.find(": ")
            && !value.starts_with(['\'', '"'])
        {
            value_start += colon + 2;
            value = &value[colon + 2..];
        }
        if value.starts_with('|') || value.starts_with('>') {
            block = Some(indent);
        }
        if YAML11_BOOLEANS.contains(&value) {
            out.push_str(&content[..value_start]);
            out.push_str(&format!("'{value}'"));
            out.push_str(&line[content.len()..]);
        } else {
            out.push_str(line);
        }
    }
    out
}

/// What to record as managed for each imported resource: the Klaviyo id and the `applied`
/// value, taken from the adoption plan of the imported manifests (the changes `apply` would
/// record if it adopted them), so import and apply can never record different shapes.
pub fn managed_records(
    imported: &Imported,
    live: &LiveState,
    meta: PlanMeta,
) -> Result<Vec<(ResourceKey, ManagedRecord)>, ImportError> {
    // Links to tags outside this import would not resolve, and the adoption plan only knows the
    // imported tags as klsync's: the applied `tags` are the links the manifests were written
    // with (links to imported or already managed tags), as `apply` records them once it linked
    // them.
    let mut linked: BTreeMap<ResourceKey, Vec<String>> = BTreeMap::new();
    for list in &imported.manifest.lists {
        linked.insert(
            ResourceKey::new(ResourceKind::List, &list.id),
            list.tags.clone(),
        );
    }
    for segment in &imported.manifest.segments {
        linked.insert(
            ResourceKey::new(ResourceKind::Segment, &segment.id),
            segment.tags.clone(),
        );
    }
    let mut manifest = imported.manifest.clone();
    for list in &mut manifest.lists {
        list.tags.clear();
    }
    for segment in &mut manifest.segments {
        segment.tags.clear();
    }
    let desired = DesiredState::from_manifest(&manifest);
    let adoption = plan::diff(&desired, live, &ManagedState::new(), meta)?;
    // Each record holds the pair the three-way comparison needs: the manifest written (as
    // `applied`, what klsync would send) and Klaviyo's values as read (the adoption's
    // `expected`, in Klaviyo's own form).
    let mut adopted: BTreeMap<ResourceKey, (String, serde_json::Value, Option<serde_json::Value>)> =
        BTreeMap::new();
    for change in adoption.changes {
        if let (Action::Adopt, Some(key), Some(id), Some(applied)) = (
            change.action,
            change.resource,
            change.klaviyo_id,
            change.applied,
        ) {
            let mut applied = applied;
            if let Some(tags) = linked.get(&key) {
                let tags: BTreeSet<&String> = tags.iter().collect();
                applied[plan::APPLIED_TAGS] = serde_json::json!(tags);
            }
            adopted.insert(key, (id, applied, change.expected));
        }
    }
    imported
        .resources
        .iter()
        .map(|(key, expected)| match adopted.remove(key) {
            Some((id, applied, returned)) if &id == expected => Ok((
                key.clone(),
                ManagedRecord {
                    klaviyo_id: id,
                    applied,
                    returned,
                },
            )),
            other => Err(ImportError::Mismatch {
                address: key.address(),
                expected: expected.clone(),
                found: other.map_or_else(|| "nothing".to_owned(), |(id, _, _)| id),
            }),
        })
        .collect()
}

/// A manifest id from a name: ASCII letters (common accented Latin letters folded) and digits
/// lowercased, every other run of characters one `-`, at most 64 characters; `fallback` when
/// nothing is left.
pub fn slug(name: &str, fallback: &str) -> String {
    let mut out = String::new();
    let mut pending_dash = false;
    for ch in name.chars() {
        let folded = fold(ch);
        if folded.is_empty() {
            pending_dash = true;
            continue;
        }
        for c in folded.chars() {
            if pending_dash && !out.is_empty() {
                out.push('-');
            }
            pending_dash = false;
            out.push(c);
        }
    }
    out.truncate(MAX_ID_CHARS);
    let trimmed = out.trim_end_matches('-');
    if trimmed.is_empty() {
        fallback.to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// `ch` as lowercase ASCII letters or digits; empty for a separator.
fn fold(ch: char) -> String {
    if ch.is_ascii_alphanumeric() {
        return ch.to_ascii_lowercase().to_string();
    }
    let folded = match ch.to_lowercase().next().unwrap_or(ch) {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' => "a",
        'æ' => "ae",
        'ç' => "c",
        'è' | 'é' | 'ê' | 'ë' => "e",
        'ì' | 'í' | 'î' | 'ï' => "i",
        'ñ' => "n",
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' => "o",
        'œ' => "oe",
        'ß' => "ss",
        'ù' | 'ú' | 'û' | 'ü' => "u",
        'ý' | 'ÿ' => "y",
        _ => "",
    };
    folded.to_owned()
}

/// Whether `id` is a valid manifest id (`^[a-z0-9][a-z0-9_-]{0,63}$`).
fn is_valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && id.len() <= MAX_ID_CHARS
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// Why klsync's validator would reject a tag or tag group name, if it would.
fn tag_name_problem(name: &str) -> Option<String> {
    let chars = name.chars().count();
    if name.trim().is_empty() {
        Some("the name is empty".to_owned())
    } else if name.contains('/') {
        Some("the name contains `/`, which separates group and tag in references".to_owned())
    } else if chars > MAX_TAG_NAME_CHARS {
        Some(format!(
            "the name is {chars} characters long; klsync accepts at most {MAX_TAG_NAME_CHARS}"
        ))
    } else if name != name.trim() {
        Some("the name has leading or trailing spaces".to_owned())
    } else {
        None
    }
}

/// Why klsync's validator would reject a list or segment name, if it would.
fn name_problem(name: &str) -> Option<String> {
    let chars = name.chars().count();
    if chars == 0 {
        Some("the name is empty".to_owned())
    } else if chars > MAX_NAME_CHARS {
        Some(format!(
            "the name is {chars} characters long; klsync accepts at most {MAX_NAME_CHARS}"
        ))
    } else {
        None
    }
}

/// Names used more than once among `names`.
fn shared_names<T: Ord + Copy>(names: impl IntoIterator<Item = T>) -> BTreeSet<T> {
    let mut seen = BTreeSet::new();
    let mut shared = BTreeSet::new();
    for name in names {
        if !seen.insert(name) {
            shared.insert(name);
        }
    }
    shared
}

struct Importer<'a> {
    live: &'a LiveState,
    managed: &'a ManagedState,
    skipped: Vec<Skipped>,
    resources: BTreeMap<ResourceKey, String>,
    /// Live tag id → manifest key, for the tags lists and segments may reference.
    tag_keys: BTreeMap<String, String>,
}

impl Importer<'_> {
    /// Whether klsync protects the resource with Klaviyo id `id` from destruction: a re-import
    /// keeps `prevent_destroy` rather than silently dropping the protection.
    fn protected(&self, kind: ResourceKind, id: &str) -> bool {
        self.managed.iter().any(|(key, record)| {
            key.kind == kind
                && record.klaviyo_id == id
                && record.applied.get("prevent_destroy") == Some(&serde_json::Value::Bool(true))
        })
    }

    fn skip(&mut self, kind: ResourceKind, id: &str, name: &str, reason: String) {
        self.skipped.push(Skipped {
            kind,
            klaviyo_id: id.to_owned(),
            name: name.to_owned(),
            reason,
        });
    }

    /// Tag groups (with their tags) and default-group tags, sorted by name.
    fn tags(&mut self) -> (Vec<TagGroupSpec>, Vec<String>) {
        let live = self.live;
        let groups: Vec<_> = live.tag_groups.values().filter(|g| !g.default).collect();
        let shared = shared_names(groups.iter().map(|g| g.name.as_str()));
        // Live group id → its name in the manifests (`None`: the default group).
        let mut kept: BTreeMap<&str, Option<&str>> = BTreeMap::new();
        if let Some(default) = live.default_tag_group_id() {
            kept.insert(default, None);
        }
        for group in &groups {
            let problem = tag_name_problem(&group.name).or_else(|| {
                shared.contains(group.name.as_str()).then(|| {
                    "another tag group has the same name; rename one in Klaviyo".to_owned()
                })
            });
            match problem {
                Some(reason) => self.skip(ResourceKind::TagGroup, &group.id, &group.name, reason),
                None => {
                    kept.insert(&group.id, Some(&group.name));
                    self.resources.insert(
                        ResourceKey::new(ResourceKind::TagGroup, &group.name),
                        group.id.clone(),
                    );
                }
            }
        }
        let shared_tags = shared_names(
            live.tags
                .values()
                .map(|t| (t.group_id.as_str(), t.name.as_str())),
        );
        let mut members: BTreeMap<Option<&str>, BTreeSet<String>> = BTreeMap::new();
        for tag in live.tags.values() {
            let Some(group) = kept.get(tag.group_id.as_str()).copied() else {
                let reason = if live.tag_groups.contains_key(&tag.group_id) {
                    "its tag group is not imported".to_owned()
                } else {
                    format!("Klaviyo reported no tag group {}", tag.group_id)
                };
                self.skip(ResourceKind::Tag, &tag.id, &tag.name, reason);
                continue;
            };
            let problem = tag_name_problem(&tag.name).or_else(|| {
                shared_tags
                    .contains(&(tag.group_id.as_str(), tag.name.as_str()))
                    .then(|| {
                        "another tag in its group has the same name; rename one in Klaviyo"
                            .to_owned()
                    })
            });
            if let Some(reason) = problem {
                self.skip(ResourceKind::Tag, &tag.id, &tag.name, reason);
                continue;
            }
            let key = tag_key(group, &tag.name);
            self.resources
                .insert(ResourceKey::new(ResourceKind::Tag, &key), tag.id.clone());
            self.tag_keys.insert(tag.id.clone(), key);
            members.entry(group).or_default().insert(tag.name.clone());
        }
        let mut specs: Vec<TagGroupSpec> = groups
            .iter()
            .filter(|g| kept.contains_key(g.id.as_str()))
            .map(|g| TagGroupSpec {
                name: g.name.clone(),
                exclusive: g.exclusive,
                tags: members
                    .remove(&Some(g.name.as_str()))
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
                prevent_destroy: self.protected(ResourceKind::TagGroup, &g.id),
            })
            .collect();
        specs.sort_by(|a, b| a.name.cmp(&b.name));
        let default_tags = members.remove(&None).unwrap_or_default();
        (specs, default_tags.into_iter().collect())
    }

    /// The manifest references for the tags on a list or segment, or why they cannot be written.
    fn tag_refs(&self, tag_ids: &BTreeSet<String>) -> Result<Vec<String>, String> {
        let mut refs = BTreeSet::new();
        let mut exclusive_groups: BTreeMap<&str, usize> = BTreeMap::new();
        for id in tag_ids {
            let Some(key) = self.tag_keys.get(id) else {
                continue;
            };
            refs.insert(key.clone());
            let exclusive = self
                .live
                .tags
                .get(id)
                .and_then(|tag| self.live.tag_groups.get(&tag.group_id))
                .filter(|group| group.exclusive);
            if let Some(group) = exclusive {
                *exclusive_groups.entry(group.name.as_str()).or_default() += 1;
            }
        }
        if refs.len() > MAX_TAGS_PER_RESOURCE {
            return Err(format!(
                "it has {} tags; klsync accepts at most {MAX_TAGS_PER_RESOURCE}",
                refs.len()
            ));
        }
        if let Some((group, _)) = exclusive_groups.iter().find(|(_, count)| **count > 1) {
            return Err(format!(
                "it has more than one tag of the exclusive tag group {group:?}"
            ));
        }
        Ok(refs.into_iter().collect())
    }

    /// Manifest ids for `candidates` (Klaviyo id, name) of `kind`: the managed key when there
    /// is one, else a unique slug of the name. Candidates come sorted by name, then id.
    fn assign_ids(&self, kind: ResourceKind, candidates: &[(&str, &str)]) -> Vec<String> {
        let managed_keys: BTreeMap<&str, &str> = self
            .managed
            .iter()
            .filter(|(key, _)| key.kind == kind && is_valid_id(&key.key))
            .map(|(key, record)| (record.klaviyo_id.as_str(), key.key.as_str()))
            .collect();
        let mut taken: BTreeSet<String> = self
            .managed
            .keys()
            .filter(|key| key.kind == kind)
            .map(|key| key.key.clone())
            .collect();
        let fallback = kind.prefix();
        candidates
            .iter()
            .map(|(id, name)| {
                if let Some(key) = managed_keys.get(id) {
                    return (*key).to_owned();
                }
                let base = slug(name, fallback);
                let mut candidate = base.clone();
                let mut n = 2;
                while taken.contains(&candidate) {
                    let suffix = format!("-{n}");
                    let mut stem = base.clone();
                    stem.truncate(MAX_ID_CHARS - suffix.len());
                    candidate = format!("{}{suffix}", stem.trim_end_matches('-'));
                    n += 1;
                }
                taken.insert(candidate.clone());
                candidate
            })
            .collect()
    }

    /// Candidates of one kind with a valid, unshared name, sorted by name then id; the rest
    /// are skipped.
    fn named<'n>(
        &mut self,
        kind: ResourceKind,
        all: impl Iterator<Item = (&'n str, &'n str)>,
    ) -> Vec<(&'n str, &'n str)> {
        let all: Vec<(&str, &str)> = all.collect();
        let shared = shared_names(all.iter().map(|(_, name)| *name));
        let mut kept = Vec::new();
        for (id, name) in all {
            let problem = name_problem(name).or_else(|| {
                shared.contains(name).then(|| {
                    format!(
                        "another {} has the same name; rename one in Klaviyo",
                        kind.prefix()
                    )
                })
            });
            match problem {
                Some(reason) => self.skip(kind, id, name, reason),
                None => kept.push((id, name)),
            }
        }
        kept.sort_by(|a, b| (a.1, a.0).cmp(&(b.1, b.0)));
        kept
    }

    fn lists(&mut self) -> Vec<ListSpec> {
        let live = self.live;
        let candidates = self.named(
            ResourceKind::List,
            live.lists
                .values()
                .map(|l| (l.id.as_str(), l.name.as_str())),
        );
        let mut specs = Vec::new();
        let ids = self.assign_ids(ResourceKind::List, &candidates);
        for ((live_id, _), key) in candidates.iter().zip(ids) {
            let list = &live.lists[*live_id];
            let tags = match self.tag_refs(&list.tag_ids) {
                Ok(tags) => tags,
                Err(reason) => {
                    self.skip(ResourceKind::List, &list.id, &list.name, reason);
                    continue;
                }
            };
            self.resources
                .insert(ResourceKey::new(ResourceKind::List, &key), list.id.clone());
            specs.push(ListSpec {
                id: key,
                name: list.name.clone(),
                opt_in_process: list.opt_in_process,
                tags,
                members: None,
                prevent_destroy: self.protected(ResourceKind::List, &list.id),
            });
        }
        specs
    }

    fn segments(&mut self) -> Vec<SegmentSpec> {
        let live = self.live;
        let candidates = self.named(
            ResourceKind::Segment,
            live.segments
                .values()
                .map(|s| (s.id.as_str(), s.name.as_str())),
        );
        let mut specs = Vec::new();
        let ids = self.assign_ids(ResourceKind::Segment, &candidates);
        for ((live_id, _), key) in candidates.iter().zip(ids) {
            let segment = &live.segments[*live_id];
            // Lists imported with the segment are named by their manifest id, as a user writes
            // them; plan resolves them back to the same Klaviyo ids.
            let list_keys: BTreeMap<&str, &str> = self
                .resources
                .iter()
                .filter(|(key, _)| key.kind == ResourceKind::List)
                .map(|(key, id)| (id.as_str(), key.key.as_str()))
                .collect();
            let definition = plan::references::with_manifest_ids(
                &normalize_definition(&segment.definition),
                |id| list_keys.get(id).map(|key| (*key).to_owned()),
            );
            let checked = self
                .tag_refs(&segment.tag_ids)
                .and_then(|tags| definition_problem(&key, &definition).map_or(Ok(tags), Err));
            let tags = match checked {
                Ok(tags) => tags,
                Err(reason) => {
                    self.skip(ResourceKind::Segment, &segment.id, &segment.name, reason);
                    continue;
                }
            };
            self.resources.insert(
                ResourceKey::new(ResourceKind::Segment, &key),
                segment.id.clone(),
            );
            specs.push(SegmentSpec {
                id: key,
                name: segment.name.clone(),
                definition,
                tags,
                is_starred: segment.is_starred,
                prevent_destroy: self.protected(ResourceKind::Segment, &segment.id),
            });
        }
        specs
    }
}

/// Why the manifest schema (Klaviyo's definition schema inside it) rejects `definition`.
fn definition_problem(key: &str, definition: &serde_json::Value) -> Option<String> {
    let value =
        serde_json::json!({"segments": [{"id": key, "name": key, "definition": definition}]});
    let problems = crate::manifest::schema::check(
        &crate::manifest::schema::MANIFEST,
        &value,
        &crate::manifest::yaml::SpanIndex::default(),
        Path::new("segments.yaml"),
    );
    let first = problems.first()?;
    Some(format!(
        "its definition does not pass Klaviyo's segment schema: {}{}",
        first.message,
        if first.field.is_empty() {
            String::new()
        } else {
            format!(" (at {})", first.field)
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::OptInProcess;
    use crate::model::{LiveList, LiveSegment, LiveTag, LiveTagGroup};
    use serde_json::json;

    fn group(id: &str, name: &str, exclusive: bool, default: bool) -> LiveTagGroup {
        LiveTagGroup {
            id: id.into(),
            name: name.into(),
            exclusive,
            default,
        }
    }

    fn tag(id: &str, name: &str, group: &str) -> LiveTag {
        LiveTag {
            id: id.into(),
            name: name.into(),
            group_id: group.into(),
        }
    }

    fn list(id: &str, name: &str, tags: &[&str]) -> LiveList {
        LiveList {
            id: id.into(),
            name: name.into(),
            opt_in_process: Some(OptInProcess::SingleOptIn),
            tag_ids: tags.iter().map(|t| (*t).to_owned()).collect(),
        }
    }

    fn definition() -> serde_json::Value {
        json!({"condition_groups": [{"conditions": [{
            "type": "profile-property",
            "property": "properties['ltv']",
            "filter": {"type": "numeric", "operator": "greater-than", "value": 500}
        }]}]})
    }

    fn account() -> LiveState {
        let mut live = LiveState::default();
        for g in [
            group("g0", "Default Tag Group", false, true),
            group("g1", "lifecycle", true, false),
            group("g2", "a/b", false, false),
        ] {
            live.tag_groups.insert(g.id.clone(), g);
        }
        for t in [
            tag("t1", "vip", "g1"),
            tag("t2", "churned", "g1"),
            tag("t3", "yes", "g0"),
            tag("t4", "inside", "g2"),
            tag("t5", " padded", "g0"),
        ] {
            live.tags.insert(t.id.clone(), t);
        }
        for l in [
            list("L1", "Sale: 50% off", &["t1", "t3", "t5"]),
            list("L2", "yes", &[]),
            list("L3", "Twin", &[]),
            list("L4", "Twin", &[]),
            list("L5", "Both", &["t1", "t2"]),
            list("L6", "Sale 50 off", &["t4"]),
        ] {
            live.lists.insert(l.id.clone(), l);
        }
        live.segments.insert(
            "S1".into(),
            LiveSegment {
                id: "S1".into(),
                name: "Café ☕".into(),
                definition: definition(),
                is_starred: true,
                tag_ids: ["t2".to_owned()].into(),
            },
        );
        live.segments.insert(
            "S2".into(),
            LiveSegment {
                id: "S2".into(),
                name: "broken".into(),
                definition: json!({"condition_groups": [{"conditions": [{"type": "nope"}]}]}),
                is_starred: false,
                tag_ids: BTreeSet::new(),
            },
        );
        live
    }

    fn all() -> BTreeSet<ImportKind> {
        ImportKind::ALL.into_iter().collect()
    }

    #[test]
    fn slugs_are_valid_ids() {
        assert_eq!(slug("Sale: 50% off", "list"), "sale-50-off");
        assert_eq!(slug("Café ☕", "list"), "cafe");
        assert_eq!(slug("#1 fans", "list"), "1-fans");
        assert_eq!(slug("☕", "segment"), "segment");
        assert_eq!(slug("  --Straße--  ", "list"), "strasse");
        let long = slug(&"ab ".repeat(100), "list");
        assert!(is_valid_id(&long), "{long}");
        for name in ["yes", "\"quoted\"", "*star", "null", "123", "_x"] {
            let id = slug(name, "list");
            assert!(is_valid_id(&id), "{name} -> {id}");
        }
    }

    #[test]
    fn invalid_and_ambiguous_resources_are_skipped_with_reasons() {
        let imported = import(&account(), &ManagedState::new(), &all());
        let skipped: BTreeMap<&str, &str> = imported
            .skipped
            .iter()
            .map(|s| (s.klaviyo_id.as_str(), s.reason.as_str()))
            .collect();
        assert_eq!(
            skipped.keys().copied().collect::<Vec<_>>(),
            ["L3", "L4", "L5", "S2", "g2", "t4", "t5"]
        );
        assert!(skipped["g2"].contains('/'));
        assert!(skipped["t4"].contains("not imported"));
        assert!(skipped["t5"].contains("spaces"));
        assert!(skipped["L3"].contains("same name"));
        assert!(skipped["L5"].contains("exclusive"));
        assert!(skipped["S2"].contains("schema"));
        for skipped in &imported.skipped {
            assert!(
                !imported
                    .resources
                    .values()
                    .any(|id| id == &skipped.klaviyo_id),
                "{skipped:?}"
            );
        }
    }

    #[test]
    fn ids_are_unique_sorted_by_name_and_managed_keys_are_kept() {
        let mut managed = ManagedState::new();
        managed.insert(
            ResourceKey::new(ResourceKind::List, "my-yes"),
            ManagedRecord {
                klaviyo_id: "L2".into(),
                applied: json!({"prevent_destroy": true}),
                returned: None,
            },
        );
        managed.insert(
            ResourceKey::new(ResourceKind::List, "sale-50-off"),
            ManagedRecord {
                klaviyo_id: "GONE".into(),
                applied: json!({}),
                returned: None,
            },
        );
        let imported = import(&account(), &managed, &all());
        let lists: Vec<(&str, &str)> = imported
            .manifest
            .lists
            .iter()
            .map(|l| (l.id.as_str(), l.name.as_str()))
            .collect();
        assert_eq!(
            lists,
            [
                ("sale-50-off-2", "Sale 50 off"),
                ("sale-50-off-3", "Sale: 50% off"),
                ("my-yes", "yes"),
            ]
        );
        let sale = &imported.manifest.lists[1];
        assert_eq!(sale.tags, ["lifecycle/vip", "yes"]);
        assert!(!sale.prevent_destroy);
        assert!(
            imported.manifest.lists[2].prevent_destroy,
            "kept from the managed record"
        );
        assert_eq!(imported.manifest.tags, ["yes"]);
        assert_eq!(imported.manifest.tag_groups[0].tags, ["churned", "vip"]);
    }

    #[test]
    fn files_round_trip_through_the_manifest_reader() {
        let imported = import(&account(), &ManagedState::new(), &all());
        let mut merged = ManifestFile::default();
        for file in &imported.files {
            assert!(file.text.starts_with(MANIFEST_HEADER), "{}", file.text);
            let (value, _) = crate::manifest::yaml::parse(&file.text).expect("parses");
            let part: ManifestFile = serde_json::from_value(value).expect("a manifest");
            merged.tag_groups.extend(part.tag_groups);
            merged.tags.extend(part.tags);
            merged.lists.extend(part.lists);
            merged.segments.extend(part.segments);
        }
        assert_eq!(merged, imported.manifest);
    }

    #[test]
    fn awkward_names_survive_yaml() {
        let names = [
            "yes",
            "no",
            "on",
            "off",
            "null",
            "~",
            "123",
            "1e3",
            "0x1F",
            ".inf",
            "Sale: 50% off",
            "#1 fans",
            "\"quoted\"",
            "'single'",
            "*star",
            "&anchor",
            "!tag",
            "- dash",
            "? q",
            "Café ☕",
            " lead",
            "trail ",
            "a\nb",
            "%percent",
            "@at",
            "`tick`",
            "[x]",
            "{y}",
            "true",
            "False",
            "2024-01-01",
            "00123",
            "+1",
        ];
        let manifest = ManifestFile {
            lists: names
                .iter()
                .enumerate()
                .map(|(i, name)| ListSpec {
                    id: format!("l{i}"),
                    name: (*name).to_owned(),
                    opt_in_process: None,
                    tags: Vec::new(),
                    members: None,
                    prevent_destroy: false,
                })
                .collect(),
            ..ManifestFile::default()
        };
        let text = render_file(ImportKind::Lists, &manifest);
        assert!(text.contains("  name: 'yes'\n"), "{text}");
        let (value, _) = crate::manifest::yaml::parse(&text).expect("parses");
        let back: ManifestFile = serde_json::from_value(value).expect("a manifest");
        assert_eq!(back, manifest, "{text}");
    }

    #[test]
    fn an_empty_account_gives_empty_valid_sections() {
        let imported = import(&LiveState::default(), &ManagedState::new(), &all());
        for file in &imported.files {
            let (value, _) = crate::manifest::yaml::parse(&file.text).expect("parses");
            let part: ManifestFile = serde_json::from_value(value).expect("a manifest");
            assert_eq!(part, ManifestFile::default(), "{}", file.text);
        }
        assert!(imported.files[1].text.ends_with("lists: []\n"));
    }

    #[test]
    fn yaml11_booleans_are_quoted_outside_block_scalars() {
        let text = "lists:\n- id: yes\n  name: |-\n    a\n    - no\n  tags:\n  - on\n  - 'off'\n  - onward\n";
        assert_eq!(
            quote_yaml11_booleans(text),
            "lists:\n- id: 'yes'\n  name: |-\n    a\n    - no\n  tags:\n  - 'on'\n  - 'off'\n  - onward\n"
        );
    }

    #[test]
    fn managed_records_carry_the_planners_applied_values() {
        let live = account();
        let imported = import(&live, &ManagedState::new(), &all());
        let meta = PlanMeta {
            created_at: "2026-01-01T00:00:00Z".into(),
            manifest_digest: String::new(),
            klsync_version: "test".into(),
        };
        let records: BTreeMap<ResourceKey, ManagedRecord> = managed_records(&imported, &live, meta)
            .expect("records")
            .into_iter()
            .collect();
        assert_eq!(records.len(), imported.resources.len());
        let cafe = &records[&ResourceKey::new(ResourceKind::Segment, "cafe")];
        assert_eq!(cafe.klaviyo_id, "S1");
        assert_eq!(cafe.applied["name"], "Café ☕");
        assert_eq!(cafe.applied["is_starred"], true);
        assert_eq!(
            cafe.applied["definition"],
            normalize_definition(&definition())
        );
        let vip = &records[&ResourceKey::new(ResourceKind::Tag, "lifecycle/vip")];
        assert_eq!(vip.applied["group"], "lifecycle");
        let group = &records[&ResourceKey::new(ResourceKind::TagGroup, "lifecycle")];
        assert_eq!(group.applied["exclusive"], true);
        for (key, record) in &records {
            let tags = match key.kind {
                ResourceKind::List => {
                    &imported
                        .manifest
                        .lists
                        .iter()
                        .find(|l| l.id == key.key)
                        .unwrap()
                        .tags
                }
                ResourceKind::Segment => {
                    &imported
                        .manifest
                        .segments
                        .iter()
                        .find(|s| s.id == key.key)
                        .unwrap()
                        .tags
                }
                _ => continue,
            };
            assert_eq!(record.applied["tags"], json!(tags), "{}", key.address());
        }
        assert!(
            records
                .values()
                .any(|r| r.applied["tags"].as_array().is_some_and(|t| !t.is_empty())),
            "the fixture links some tag"
        );
    }

    #[test]
    fn without_tags_only_links_to_managed_tags_are_written() {
        let live = account();
        let mut managed = ManagedState::new();
        managed.insert(
            ResourceKey::new(ResourceKind::Tag, "lifecycle/vip"),
            ManagedRecord {
                klaviyo_id: "t1".into(),
                applied: json!({}),
                returned: None,
            },
        );
        let kinds: BTreeSet<ImportKind> = [ImportKind::Lists].into();
        let imported = import(&live, &managed, &kinds);
        assert_eq!(imported.files.len(), 1);
        assert_eq!(imported.files[0].name, "lists.yaml");
        let sale = imported
            .manifest
            .lists
            .iter()
            .find(|l| l.name == "Sale: 50% off")
            .expect("imported");
        assert_eq!(sale.tags, ["lifecycle/vip"]);
        assert!(imported.manifest.tags.is_empty());
    }
}
