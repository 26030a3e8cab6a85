//! `klsync drift`: what changed in Klaviyo behind klsync's back. Pure: no I/O.
//!
//! Each managed resource's live values are compared with what Klaviyo returned after klsync's
//! last write (the `returned` value of its managed record, in Klaviyo's own form: a definition
//! Klaviyo canonicalised is no drift), or, for records and fields without one, with what klsync
//! last applied (`applied`); see [`crate::plan::three_way`]:
//! - tag groups: `name`, `exclusive`;
//! - tags: `name` (a tag cannot move between groups; a renamed group shows on the group);
//! - lists: `name`, and `opt_in_process` when klsync set one;
//! - segments: `name`, `definition` (compared normalised, shown as a YAML diff), `is_starred`;
//! - any kind: deleted in Klaviyo.
//!
//! Tag links: a managed list's or segment's applied record holds the keys of the tags klsync
//! last linked to it (`tags`), so a link between a managed tag and a managed list or segment is
//! compared with that: a link present in Klaviyo but not recorded was attached by hand, a
//! recorded link missing in Klaviyo was detached by hand. Unapplied manifest edits are not drift.
//! Records written by klsync versions that did not keep `tags` fall back to the links the
//! manifests declare. Links to resources klsync does not manage are never drift.

#![deny(missing_docs)]

use crate::render::sanitize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::model::{DesiredState, LiveState, ManagedState, ResourceKind};
use crate::plan::three_way::expected_live;
use crate::plan::{APPLIED_TAGS, ChangeKind, definition_diff, normalize_definition};

/// The version of the JSON drift format. Bumped on any change a reader would notice.
pub const FORMAT_VERSION: u32 = 1;

/// What happened to a resource or link.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    /// A field differs from what klsync applied.
    Changed,
    /// The resource no longer exists in Klaviyo.
    Deleted,
    /// A tag was put on a list or segment outside klsync.
    Attached,
    /// A tag was taken off a list or segment outside klsync.
    Detached,
}

impl DriftKind {
    /// The lowercase name, e.g. `changed`.
    pub fn as_str(self) -> &'static str {
        match self {
            DriftKind::Changed => "changed",
            DriftKind::Deleted => "deleted",
            DriftKind::Attached => "attached",
            DriftKind::Detached => "detached",
        }
    }
}

/// One difference between Klaviyo and what klsync last applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DriftEntry {
    /// The address, as in plans: `list.vip`, `tag_link.lifecycle/vip->segment.big-spenders`.
    pub address: String,
    /// What the entry is about.
    pub kind: ChangeKind,
    /// What happened.
    pub drift: DriftKind,
    /// The Klaviyo id (for links: the list's or segment's).
    pub klaviyo_id: String,
    /// The name klsync applied (for links: the list's or segment's).
    pub name: String,
    /// The field: `name`, `exclusive`, `opt_in_process`, `definition`, `is_starred`; `exists`
    /// for deletions and `linked` for links.
    pub field: String,
    /// The value Klaviyo returned after klsync's last write, or (without one) the value klsync
    /// applied (for `definition`, normalised).
    pub before: Value,
    /// The value in Klaviyo now.
    pub after: Value,
    /// For `definition`: a unified diff of the two as YAML (`-` applied, `+` Klaviyo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition_diff: Option<String>,
}

/// A resource in Klaviyo that klsync does not manage.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub struct Unmanaged {
    /// Its kind.
    pub kind: ResourceKind,
    /// Its Klaviyo id.
    pub klaviyo_id: String,
    /// Its name.
    pub name: String,
}

/// Everything `klsync drift` found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DriftReport {
    /// Version of this format (currently 1).
    pub format_version: u32,
    /// Differences, by address then field.
    pub drift: Vec<DriftEntry>,
    /// Unmanaged resources, when asked for (`--include-unmanaged`); by kind, name, id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmanaged: Option<Vec<Unmanaged>>,
    /// Things worth knowing that are not drift.
    pub warnings: Vec<String>,
    /// What the data syncs' records look like in Klaviyo (`--data` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<crate::data::DataCheck>,
}

impl DriftReport {
    /// Whether anything drifted (or, when listed, anything is unmanaged).
    pub fn has_drift(&self) -> bool {
        !self.drift.is_empty()
            || self.unmanaged.as_ref().is_some_and(|u| !u.is_empty())
            || self
                .data
                .as_ref()
                .is_some_and(crate::data::DataCheck::has_drift)
    }
}

/// Compare Klaviyo (`live`) with what klsync applied (`managed`); links of records without
/// applied `tags` (written by earlier versions) are compared with the links `declared` in the
/// manifests instead. `include_unmanaged` also lists what klsync does not manage.
pub fn detect(
    managed: &ManagedState,
    live: &LiveState,
    declared: &DesiredState,
    include_unmanaged: bool,
) -> DriftReport {
    let mut drift = Vec::new();
    for (key, record) in managed {
        let applied = &record.applied;
        let id = record.klaviyo_id.as_str();
        let applied_name = applied
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let entry = |field: &str, before: Value, after: Value| DriftEntry {
            address: key.address(),
            kind: key.kind.into(),
            drift: DriftKind::Changed,
            klaviyo_id: id.to_owned(),
            name: applied_name.clone(),
            field: field.to_owned(),
            before,
            after,
            definition_diff: None,
        };
        let mut found: Vec<DriftEntry> = Vec::new();
        let mut definition: Option<DriftEntry> = None;
        let returned = record.returned.as_ref();
        let mut compare = |field: &str, after: Value| {
            let before = expected_live(applied, returned, field)
                .cloned()
                .unwrap_or(Value::Null);
            if before != after {
                found.push(entry(field, before, after));
            }
        };
        let exists = match key.kind {
            ResourceKind::TagGroup => live.tag_groups.get(id).map(|group| {
                compare("name", json!(group.name));
                compare("exclusive", json!(group.exclusive));
            }),
            ResourceKind::Tag => live
                .tags
                .get(id)
                .map(|tag| compare("name", json!(tag.name))),
            ResourceKind::List => live.lists.get(id).map(|list| {
                compare("name", json!(list.name));
                // No applied opt-in process means klsync leaves Klaviyo's value alone.
                if applied.get("opt_in_process").is_some_and(|v| !v.is_null()) {
                    compare("opt_in_process", json!(list.opt_in_process));
                }
            }),
            ResourceKind::Segment => live.segments.get(id).map(|segment| {
                compare("name", json!(segment.name));
                compare("is_starred", json!(segment.is_starred));
                let before = normalize_definition(
                    expected_live(applied, returned, "definition").unwrap_or(&Value::Null),
                );
                let after = normalize_definition(&segment.definition);
                if before != after {
                    let mut changed = entry("definition", before.clone(), after.clone());
                    changed.definition_diff =
                        Some(definition_diff(Some(&before), &after).replacen(
                            "--- klaviyo\n+++ manifest\n",
                            "--- applied\n+++ klaviyo\n",
                            1,
                        ));
                    definition = Some(changed);
                }
            }),
        };
        found.extend(definition);
        if exists.is_none() {
            found.push(DriftEntry {
                drift: DriftKind::Deleted,
                ..entry("exists", json!(true), json!(false))
            });
        }
        drift.extend(found);
    }
    let mut warnings = Vec::new();
    drift.extend(link_drift(managed, live, declared, &mut warnings));
    drift.sort_by(|a, b| (&a.address, &a.field).cmp(&(&b.address, &b.field)));
    let unmanaged = include_unmanaged.then(|| unmanaged(managed, live));
    DriftReport {
        format_version: FORMAT_VERSION,
        drift,
        unmanaged,
        warnings,
        data: None,
    }
}

/// Links between managed tags and managed, existing lists and segments that differ from the
/// applied links (or, for records without them, the declared links).
fn link_drift(
    managed: &ManagedState,
    live: &LiveState,
    declared: &DesiredState,
    warnings: &mut Vec<String>,
) -> Vec<DriftEntry> {
    let tags: BTreeMap<&str, &str> = managed
        .iter()
        .filter(|(key, record)| {
            key.kind == ResourceKind::Tag && live.tags.contains_key(&record.klaviyo_id)
        })
        .map(|(key, record)| (record.klaviyo_id.as_str(), key.key.as_str()))
        .collect();
    let managed_tag_keys: BTreeSet<&str> = tags.values().copied().collect();
    let mut out = Vec::new();
    for (key, record) in managed {
        let id = record.klaviyo_id.as_str();
        let (linked, wanted): (&BTreeSet<String>, Option<&BTreeSet<String>>) = match key.kind {
            ResourceKind::List => match live.lists.get(id) {
                Some(list) => (&list.tag_ids, declared.lists.get(&key.key).map(|l| &l.tags)),
                None => continue,
            },
            ResourceKind::Segment => match live.segments.get(id) {
                Some(segment) => (
                    &segment.tag_ids,
                    declared.segments.get(&key.key).map(|s| &s.tags),
                ),
                None => continue,
            },
            _ => continue,
        };
        let applied_tags = record
            .applied
            .get(APPLIED_TAGS)
            .and_then(Value::as_array)
            .map(|tags| tags.iter().filter_map(Value::as_str).collect::<Vec<_>>());
        let wanted: Vec<&str> = match (applied_tags, wanted) {
            (Some(applied), _) => applied,
            // Recorded by an earlier klsync: the manifests are the best guess.
            (None, Some(declared)) => declared.iter().map(String::as_str).collect(),
            // A target the manifests dropped is about to be destroyed: its links say nothing.
            (None, None) => {
                warnings.push(format!(
                    "{} is managed but no manifest declares it (`klsync plan` would destroy it) and its record predates applied tag links; its tag links were not compared",
                    key.address()
                ));
                continue;
            }
        };
        let name = record
            .applied
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let wanted: BTreeSet<&str> = wanted
            .into_iter()
            .filter(|tag| managed_tag_keys.contains(tag))
            .collect();
        let live_keys: BTreeSet<&str> = linked
            .iter()
            .filter_map(|tag_id| tags.get(tag_id.as_str()).copied())
            .collect();
        let link = |tag: &str, drift: DriftKind, before: bool| DriftEntry {
            address: format!("tag_link.{tag}->{}", key.address()),
            kind: ChangeKind::TagLink,
            drift,
            klaviyo_id: id.to_owned(),
            name: name.to_owned(),
            field: "linked".to_owned(),
            before: json!(before),
            after: json!(!before),
            definition_diff: None,
        };
        for tag in live_keys.difference(&wanted) {
            out.push(link(tag, DriftKind::Attached, false));
        }
        for tag in wanted.difference(&live_keys) {
            out.push(link(tag, DriftKind::Detached, true));
        }
    }
    out
}

/// Live resources klsync does not manage (Klaviyo's default tag group aside).
fn unmanaged(managed: &ManagedState, live: &LiveState) -> Vec<Unmanaged> {
    let ids: BTreeSet<(ResourceKind, &str)> = managed
        .iter()
        .map(|(key, record)| (key.kind, record.klaviyo_id.as_str()))
        .collect();
    let groups = live
        .tag_groups
        .values()
        .filter(|g| !g.default)
        .map(|g| (ResourceKind::TagGroup, &g.id, &g.name));
    let tags = live
        .tags
        .values()
        .map(|t| (ResourceKind::Tag, &t.id, &t.name));
    let lists = live
        .lists
        .values()
        .map(|l| (ResourceKind::List, &l.id, &l.name));
    let segments = live
        .segments
        .values()
        .map(|s| (ResourceKind::Segment, &s.id, &s.name));
    let mut out: Vec<Unmanaged> = groups
        .chain(tags)
        .chain(lists)
        .chain(segments)
        .filter(|(kind, id, _)| !ids.contains(&(*kind, id.as_str())))
        .map(|(kind, id, name)| Unmanaged {
            kind,
            klaviyo_id: id.clone(),
            name: name.clone(),
        })
        .collect();
    out.sort_by(|a, b| (a.kind, &a.name, &a.klaviyo_id).cmp(&(b.kind, &b.name, &b.klaviyo_id)));
    out
}

/// The report as pretty JSON with a trailing newline.
pub fn render_json(report: &DriftReport) -> String {
    let mut text = serde_json::to_string_pretty(report).unwrap_or_default();
    text.push('\n');
    text
}

/// The report for a terminal. Names come from Klaviyo: control characters are escaped.
pub fn render_text(report: &DriftReport) -> String {
    let mut out = String::new();
    let mut entries = report.drift.iter().peekable();
    while let Some(first) = entries.next() {
        let symbol = match first.drift {
            DriftKind::Changed => "~",
            DriftKind::Deleted | DriftKind::Detached => "-",
            DriftKind::Attached => "+",
        };
        let what = match first.drift {
            DriftKind::Changed => "changed in Klaviyo",
            DriftKind::Deleted => "deleted in Klaviyo",
            DriftKind::Attached => "attached in Klaviyo",
            DriftKind::Detached => "detached in Klaviyo",
        };
        let _ = writeln!(
            out,
            "{symbol} {} {} (id {}): {what}",
            sanitize(&first.address),
            quoted(&first.name),
            sanitize(&first.klaviyo_id)
        );
        let mut group = vec![first];
        while let Some(next) = entries.next_if(|next| next.address == first.address) {
            group.push(next);
        }
        if first.drift != DriftKind::Changed {
            continue;
        }
        for entry in group {
            match &entry.definition_diff {
                Some(diff) => {
                    let _ = writeln!(out, "    {}:", entry.field);
                    for line in diff.lines() {
                        let _ = writeln!(out, "      {}", sanitize(line));
                    }
                }
                None => {
                    let _ = writeln!(
                        out,
                        "    {}: {} → {}",
                        entry.field,
                        sanitize(&entry.before.to_string()),
                        sanitize(&entry.after.to_string())
                    );
                }
            }
        }
    }
    if let Some(unmanaged) = report.unmanaged.as_ref().filter(|u| !u.is_empty()) {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str("Not managed by klsync:\n");
        for resource in unmanaged {
            let _ = writeln!(
                out,
                "  ? {} {} (id {})",
                resource.kind,
                quoted(&resource.name),
                sanitize(&resource.klaviyo_id)
            );
        }
    }
    if let Some(data) = &report.data {
        out.push_str(&sanitize(&crate::data::render_check(data)));
    }
    if report.has_drift() {
        let resources: BTreeSet<&str> = report.drift.iter().map(|e| e.address.as_str()).collect();
        let unmanaged = report.unmanaged.as_ref().map_or(0, Vec::len);
        let mut parts = Vec::new();
        if !report.drift.is_empty() || unmanaged > 0 || report.data.is_none() {
            parts.push(format!(
                "{} difference(s) on {} resource(s) or link(s){}",
                report.drift.len(),
                resources.len(),
                match &report.unmanaged {
                    Some(u) => format!(", {} unmanaged resource(s)", u.len()),
                    None => String::new(),
                }
            ));
        }
        if let Some(data) = report
            .data
            .as_ref()
            .filter(|data| crate::data::DataCheck::has_drift(data))
        {
            parts.push(format!("data syncs: {}", crate::data::check_summary(data)));
        }
        let _ = writeln!(out, "\nDrift: {}.", parts.join("; "));
    } else {
        out.push_str("No drift. Klaviyo matches what klsync last applied");
        if let Some(data) = &report.data {
            let _ = write!(
                out,
                " (data syncs included: {})",
                crate::data::check_summary(data)
            );
        }
        out.push_str(".\n");
    }
    for warning in &report.warnings {
        let _ = writeln!(out, "Warning: {}", sanitize(warning));
    }
    out
}

fn quoted(name: &str) -> String {
    Value::String(name.to_owned()).to_string()
}

/// The JSON schema of [`DriftReport`], as committed in `schemas/drift.schema.json`.
pub fn json_schema() -> Value {
    serde_json::to_value(schemars::schema_for!(DriftReport)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::OptInProcess;
    use crate::model::{
        DesiredList, LiveList, LiveSegment, LiveTag, LiveTagGroup, ManagedRecord, ResourceKey,
    };

    #[test]
    fn committed_schema_is_current() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../schemas/drift.schema.json"
        );
        let generated = format!(
            "{}\n",
            serde_json::to_string_pretty(&json_schema()).expect("serialize schema")
        );
        if std::env::var_os("KLSYNC_UPDATE_SCHEMA").is_some_and(|value| value == "1") {
            std::fs::write(path, &generated).expect("write schemas/drift.schema.json");
            return;
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "schemas/drift.schema.json is stale; run `KLSYNC_UPDATE_SCHEMA=1 cargo test -p klsync-core drift::tests::committed_schema_is_current`"
        );
    }

    fn record(id: &str, applied: Value) -> ManagedRecord {
        ManagedRecord {
            klaviyo_id: id.into(),
            applied,
            returned: None,
        }
    }

    fn setup() -> (ManagedState, LiveState, DesiredState) {
        let mut managed = ManagedState::new();
        managed.insert(
            ResourceKey::new(ResourceKind::TagGroup, "lifecycle"),
            record(
                "g1",
                json!({"name": "lifecycle", "exclusive": true, "prevent_destroy": false}),
            ),
        );
        managed.insert(
            ResourceKey::new(ResourceKind::Tag, "lifecycle/vip"),
            record(
                "t1",
                json!({"name": "vip", "group": "lifecycle", "prevent_destroy": false}),
            ),
        );
        managed.insert(
            ResourceKey::new(ResourceKind::Tag, "seasonal"),
            record(
                "t2",
                json!({"name": "seasonal", "group": null, "prevent_destroy": false}),
            ),
        );
        managed.insert(
            ResourceKey::new(ResourceKind::List, "vip"),
            record(
                "L1",
                json!({"name": "VIP", "opt_in_process": "double_opt_in", "prevent_destroy": false}),
            ),
        );
        managed.insert(
            ResourceKey::new(ResourceKind::List, "loose"),
            record(
                "L2",
                json!({"name": "Loose", "opt_in_process": null, "prevent_destroy": false}),
            ),
        );
        managed.insert(
            ResourceKey::new(ResourceKind::Segment, "big"),
            record("S1", json!({"name": "Big", "definition": {"condition_groups": [{"conditions": [{"a": 1}]}]}, "is_starred": false, "prevent_destroy": false})),
        );
        let mut live = LiveState::default();
        live.tag_groups.insert(
            "g1".into(),
            LiveTagGroup {
                id: "g1".into(),
                name: "lifecycle".into(),
                exclusive: true,
                default: false,
            },
        );
        for (id, name, group) in [
            ("t1", "vip", "g1"),
            ("t2", "seasonal", "g0"),
            ("t9", "x", "g0"),
        ] {
            live.tags.insert(
                id.into(),
                LiveTag {
                    id: id.into(),
                    name: name.into(),
                    group_id: group.into(),
                },
            );
        }
        live.lists.insert(
            "L1".into(),
            LiveList {
                id: "L1".into(),
                name: "VIP".into(),
                opt_in_process: Some(OptInProcess::DoubleOptIn),
                tag_ids: ["t1".to_owned(), "t9".to_owned()].into(),
            },
        );
        live.lists.insert(
            "L2".into(),
            LiveList {
                id: "L2".into(),
                name: "Loose".into(),
                opt_in_process: Some(OptInProcess::SingleOptIn),
                tag_ids: BTreeSet::new(),
            },
        );
        live.segments.insert(
            "S1".into(),
            LiveSegment {
                id: "S1".into(),
                name: "Big".into(),
                definition: json!({"condition_groups": [{"conditions": [{"a": 1, "b": null}]}]}),
                is_starred: false,
                tag_ids: BTreeSet::new(),
            },
        );
        let mut declared = DesiredState::default();
        for (key, name, tags) in [
            ("vip", "VIP", vec!["lifecycle/vip"]),
            ("loose", "Loose", vec![]),
        ] {
            declared.lists.insert(
                key.into(),
                DesiredList {
                    key: key.into(),
                    name: name.into(),
                    opt_in_process: None,
                    tags: tags.into_iter().map(str::to_owned).collect(),
                    prevent_destroy: false,
                },
            );
        }
        (managed, live, declared)
    }

    #[test]
    fn nothing_changed_is_no_drift() {
        let (managed, live, declared) = setup();
        let report = detect(&managed, &live, &declared, false);
        assert_eq!(report.drift, Vec::new(), "{}", render_text(&report));
        assert!(!report.has_drift());
        assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
        assert!(report.warnings[0].starts_with("segment.big is managed but no manifest"));
        assert!(render_text(&report).starts_with("No drift."));
    }

    #[test]
    fn each_hand_change_is_one_entry_with_both_values() {
        let (managed, mut live, declared) = setup();
        live.lists.get_mut("L1").unwrap().name = "VIP members".into();
        live.lists.get_mut("L1").unwrap().tag_ids = ["t2".to_owned()].into();
        live.lists.get_mut("L2").unwrap().opt_in_process = None;
        live.segments.get_mut("S1").unwrap().definition =
            json!({"condition_groups": [{"conditions": [{"a": 2}]}]});
        live.tags.remove("t2");
        let report = detect(&managed, &live, &declared, false);
        let got: Vec<(String, &str, DriftKind, Value, Value)> = report
            .drift
            .iter()
            .map(|e| {
                (
                    e.address.clone(),
                    e.field.as_str(),
                    e.drift,
                    e.before.clone(),
                    e.after.clone(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "list.vip".into(),
                    "name",
                    DriftKind::Changed,
                    json!("VIP"),
                    json!("VIP members")
                ),
                (
                    "segment.big".into(),
                    "definition",
                    DriftKind::Changed,
                    json!({"condition_groups": [{"conditions": [{"a": 1}]}]}),
                    json!({"condition_groups": [{"conditions": [{"a": 2}]}]})
                ),
                (
                    "tag.seasonal".into(),
                    "exists",
                    DriftKind::Deleted,
                    json!(true),
                    json!(false)
                ),
                (
                    "tag_link.lifecycle/vip->list.vip".into(),
                    "linked",
                    DriftKind::Detached,
                    json!(true),
                    json!(false)
                ),
            ]
        );
        let diff = report.drift[1].definition_diff.as_deref().unwrap();
        assert!(
            diff.contains("-  - a: 1") && diff.contains("+  - a: 2"),
            "{diff}"
        );
        let text = render_text(&report);
        assert!(text.contains("name: \"VIP\" → \"VIP members\""), "{text}");
        assert!(
            text.contains("- tag.seasonal \"seasonal\" (id t2): deleted in Klaviyo"),
            "{text}"
        );
    }

    #[test]
    fn attached_links_and_unmanaged_resources_are_listed() {
        let (managed, mut live, declared) = setup();
        live.lists.get_mut("L2").unwrap().tag_ids = ["t1".to_owned(), "t9".to_owned()].into();
        live.lists.insert(
            "L9".into(),
            LiveList {
                id: "L9".into(),
                name: "Other".into(),
                opt_in_process: None,
                tag_ids: BTreeSet::new(),
            },
        );
        let report = detect(&managed, &live, &declared, true);
        assert_eq!(report.drift.len(), 1);
        assert_eq!(
            report.drift[0].address,
            "tag_link.lifecycle/vip->list.loose"
        );
        assert_eq!(report.drift[0].drift, DriftKind::Attached);
        let unmanaged = report.unmanaged.as_ref().unwrap();
        let names: Vec<&str> = unmanaged.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["x", "Other"]);
        let json: Value = serde_json::from_str(&render_json(&report)).unwrap();
        assert_eq!(json["format_version"], 1);
        assert_eq!(json["drift"][0]["drift"], "attached");
        assert_eq!(json["unmanaged"][1]["kind"], "list");
    }

    #[test]
    fn links_are_compared_with_the_applied_tags_not_the_manifests() {
        let (mut managed, mut live, mut declared) = setup();
        for (key, tags) in [("vip", json!(["lifecycle/vip"])), ("loose", json!([]))] {
            let record = managed
                .get_mut(&ResourceKey::new(ResourceKind::List, key))
                .unwrap();
            record.applied[APPLIED_TAGS] = tags;
        }
        managed
            .get_mut(&ResourceKey::new(ResourceKind::Segment, "big"))
            .unwrap()
            .applied[APPLIED_TAGS] = json!(["seasonal"]);
        live.segments.get_mut("S1").unwrap().tag_ids = ["t2".to_owned()].into();
        // Unapplied manifest edits: a new link on `loose`, the link on `vip` dropped.
        declared.lists.get_mut("loose").unwrap().tags = ["seasonal".to_owned()].into();
        declared.lists.get_mut("vip").unwrap().tags.clear();
        let report = detect(&managed, &live, &declared, false);
        assert_eq!(report.drift, Vec::new(), "{}", render_text(&report));
        // An undeclared target with recorded tags is still compared: no warning.
        assert_eq!(report.warnings, Vec::<String>::new());

        // Retagged by hand: `seasonal` swapped for `lifecycle/vip` on the segment.
        live.segments.get_mut("S1").unwrap().tag_ids = ["t1".to_owned()].into();
        let report = detect(&managed, &live, &declared, false);
        let got: Vec<(&str, DriftKind, &Value, &Value)> = report
            .drift
            .iter()
            .map(|e| (e.address.as_str(), e.drift, &e.before, &e.after))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "tag_link.lifecycle/vip->segment.big",
                    DriftKind::Attached,
                    &json!(false),
                    &json!(true)
                ),
                (
                    "tag_link.seasonal->segment.big",
                    DriftKind::Detached,
                    &json!(true),
                    &json!(false)
                ),
            ]
        );
        assert!(report.drift.iter().all(|e| e.field == "linked"));
    }
}
