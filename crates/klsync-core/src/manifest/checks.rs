//! Semantic checks across all files of a project. Each check is a named function that pushes
//! diagnostics and never stops early, so one run reports every problem.
//!
//! Limits chosen (Klaviyo documents some, the rest are conservative choices, see
//! docs/manifests.md, "Limits"): 100 tags per list or segment, 500 tags and 50 tag groups per account (the
//! default group is one of the 50, so at most 49 may be declared), tag and tag group names 1–64
//! characters without `/`, list and segment names 1–255 characters (in the schema), and no
//! control characters in any of these names.
//!
//! Invisible characters (bidirectional controls, zero-width characters) anywhere in a manifest
//! are warnings ([`invisible_characters`]): right-to-left names may need a direction mark, and
//! plans show each one as an escape, so a review sees it either way.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use serde_json::Value;

use super::diagnostic::{Diagnostic, Related, Severity};
use super::types::{ManifestFile, MembershipSpec};
use super::yaml::{SpanIndex, escape_segment};
use crate::render::invisible_kind;

pub use klaviyo_spec::limits::{
    MAX_TAG_GROUPS_PER_ACCOUNT, MAX_TAGS_PER_ACCOUNT, MAX_TAGS_PER_RESOURCE,
};
/// Longest tag or tag group name klsync accepts.
pub const MAX_TAG_NAME_CHARS: usize = 64;

/// One parsed, schema-valid file with its span index.
pub(crate) struct Checked<'a> {
    pub path: &'a Path,
    pub manifest: &'a ManifestFile,
    pub index: &'a SpanIndex,
}

impl Checked<'_> {
    fn at(&self, severity: Severity, pointer: &str, message: String) -> Diagnostic {
        diagnostic_at(self.path, self.index, severity, pointer, message)
    }

    fn related(&self, pointer: &str) -> Related {
        let span = self.index.nearest(pointer);
        let pos = span.key.unwrap_or(span.value);
        Related {
            file: self.path.to_path_buf(),
            line: pos.line,
            column: pos.column,
        }
    }
}

/// Where something was declared: file number and JSON pointer.
type Place = (usize, String);

/// A diagnostic about the node at `pointer` of the file at `path`.
fn diagnostic_at(
    path: &Path,
    index: &SpanIndex,
    severity: Severity,
    pointer: &str,
    message: String,
) -> Diagnostic {
    // Anchor at the key when there is one: a block scalar's value may start lines later.
    let span = index.nearest(pointer);
    let pos = span.key.unwrap_or(span.value);
    Diagnostic {
        severity,
        file: path.to_path_buf(),
        line: pos.line,
        column: pos.column,
        field: span.field,
        message,
        hint: None,
        related: None,
    }
}

/// Warn about invisible characters (bidirectional controls, zero-width characters) in any key
/// or string of a parsed file: they can make a name or a query read as something else in a
/// review. Warnings, not errors: right-to-left names may need a direction mark; plans show
/// every such character as a `\u{..}` escape either way.
pub(crate) fn invisible_characters(
    path: &Path,
    value: &Value,
    index: &SpanIndex,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut visit = |pointer: &str, text: &str| {
        let Some((ch, kind)) = text.chars().find_map(|ch| Some((ch, invisible_kind(ch)?))) else {
            return;
        };
        let mut d = diagnostic_at(
            path,
            index,
            Severity::Warning,
            pointer,
            format!(
                "contains U+{:04X} ({kind}), an invisible character that can make the text read as something else in a review",
                u32::from(ch)
            ),
        );
        d.hint = Some(format!(
            "remove it unless it is meant; plans show it as `{}`",
            ch.escape_unicode()
        ));
        out.push(d);
    };
    walk_strings(value, "", &mut visit);
    out
}

/// Call `visit` with the pointer and text of every key and string under `value`.
fn walk_strings(value: &Value, pointer: &str, visit: &mut impl FnMut(&str, &str)) {
    match value {
        Value::String(text) => visit(pointer, text),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk_strings(item, &format!("{pointer}/{i}"), visit);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                let child = format!("{pointer}/{}", escape_segment(key));
                visit(&child, key);
                walk_strings(item, &child, visit);
            }
        }
        _ => {}
    }
}

/// A list or segment name with a control character (from a YAML escape such as `"\n"`): names
/// are one line of visible text in Klaviyo.
fn control_in_name(
    file: &Checked<'_>,
    name: &str,
    pointer: &str,
    what: &str,
    out: &mut Vec<Diagnostic>,
) {
    if let Some((message, hint)) = control_character_problem(name, what) {
        out.push(error(file, pointer, message, hint));
    }
}

fn control_character_problem(name: &str, what: &str) -> Option<(String, Option<String>)> {
    let ch = name.chars().find(|ch| ch.is_control())?;
    Some((
        format!(
            "{what} contains the control character U+{:04X}",
            u32::from(ch)
        ),
        Some("a name is one line of visible text; remove the escape that produced it".into()),
    ))
}

/// Run every semantic check over all files.
pub(crate) fn run(files: &[Checked<'_>]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    duplicates(files, &mut out);
    let tags = tag_catalog(files, &mut out);
    tag_references(files, &tags, &mut out);
    queries(files, &mut out);
    profiles(files, &mut out);
    list_references(files, &mut out);
    out
}

/// A `group_ids` entry that names no list of the project and does not look like a Klaviyo list
/// id (six letters and digits) is most likely a mistyped manifest id: it would reach Klaviyo as
/// a list id and fail there, or match nothing. A warning, since Klaviyo's ids are not ours to
/// define.
fn list_references(files: &[Checked<'_>], out: &mut Vec<Diagnostic>) {
    let declared: BTreeSet<&str> = files
        .iter()
        .flat_map(|f| f.manifest.lists.iter().map(|list| list.id.as_str()))
        .collect();
    let klaviyo_like =
        |entry: &str| entry.len() == 6 && entry.bytes().all(|b| b.is_ascii_alphanumeric());
    for file in files {
        for (s, segment) in file.manifest.segments.iter().enumerate() {
            let groups = segment.definition["condition_groups"].as_array();
            for (g, group) in groups.into_iter().flatten().enumerate() {
                let conditions = group["conditions"].as_array();
                for (c, condition) in conditions.into_iter().flatten().enumerate() {
                    if condition["type"] != "profile-group-membership" {
                        continue;
                    }
                    let entries = condition["group_ids"].as_array();
                    for (k, entry) in entries.into_iter().flatten().enumerate() {
                        let Some(entry) = entry.as_str() else {
                            continue;
                        };
                        if declared.contains(entry) || klaviyo_like(entry) {
                            continue;
                        }
                        let pointer = format!(
                            "/segments/{s}/definition/condition_groups/{g}/conditions/{c}/group_ids/{k}"
                        );
                        let mut d = file.at(
                            Severity::Warning,
                            &pointer,
                            format!(
                                "`{entry}` is not the id of a list in this project, nor shaped like a Klaviyo list id (6 letters and digits); it would be sent to Klaviyo as it is"
                            ),
                        );
                        d.hint = Some(
                            match super::schema::did_you_mean(entry, declared.iter().copied()) {
                                Some(close) => format!("did you mean the list `{close}`?"),
                                None => "name a list declared under `lists:` by its id, or give the list's id from Klaviyo".into(),
                            },
                        );
                        out.push(d);
                    }
                }
            }
        }
    }
}

fn error(file: &Checked<'_>, pointer: &str, message: String, hint: Option<String>) -> Diagnostic {
    let mut d = file.at(Severity::Error, pointer, message);
    d.hint = hint;
    d
}

/// Report a second declaration of `key`, pointing back at the first.
fn first_or_duplicate(
    seen: &mut HashMap<String, Place>,
    key: &str,
    place: Place,
    files: &[Checked<'_>],
    what: &str,
    out: &mut Vec<Diagnostic>,
) {
    match seen.get(key) {
        Some((first_file, first_ptr)) => {
            let first = &files[*first_file];
            let mut d = error(
                &files[place.0],
                &place.1,
                format!("duplicate {what}: `{key}`"),
                Some(format!(
                    "first declared at {}; each {what} must be unique across the project",
                    first.related(first_ptr).display()
                )),
            );
            d.related = Some(first.related(first_ptr));
            out.push(d);
        }
        None => {
            seen.insert(key.to_owned(), place);
        }
    }
}

impl Related {
    fn display(&self) -> String {
        format!(
            "{}:{}:{}",
            self.file.display().to_string().replace('\\', "/"),
            self.line,
            self.column
        )
    }
}

fn duplicates(files: &[Checked<'_>], out: &mut Vec<Diagnostic>) {
    let mut list_ids = HashMap::new();
    let mut list_names = HashMap::new();
    let mut segment_ids = HashMap::new();
    let mut segment_names = HashMap::new();
    let mut profile_ids = HashMap::new();
    let mut query_names = HashMap::new();
    for (n, file) in files.iter().enumerate() {
        for (i, list) in file.manifest.lists.iter().enumerate() {
            let p = format!("/lists/{i}");
            first_or_duplicate(
                &mut list_ids,
                &list.id,
                (n, format!("{p}/id")),
                files,
                "list id",
                out,
            );
            first_or_duplicate(
                &mut list_names,
                &list.name,
                (n, format!("{p}/name")),
                files,
                "list name",
                out,
            );
            control_in_name(file, &list.name, &format!("{p}/name"), "list name", out);
        }
        for (i, segment) in file.manifest.segments.iter().enumerate() {
            let p = format!("/segments/{i}");
            first_or_duplicate(
                &mut segment_ids,
                &segment.id,
                (n, format!("{p}/id")),
                files,
                "segment id",
                out,
            );
            first_or_duplicate(
                &mut segment_names,
                &segment.name,
                (n, format!("{p}/name")),
                files,
                "segment name",
                out,
            );
            control_in_name(
                file,
                &segment.name,
                &format!("{p}/name"),
                "segment name",
                out,
            );
        }
        for (i, profile) in file.manifest.profiles.iter().enumerate() {
            first_or_duplicate(
                &mut profile_ids,
                &profile.id,
                (n, format!("/profiles/{i}/id")),
                files,
                "profile sync id",
                out,
            );
        }
        for name in file.manifest.queries.keys() {
            first_or_duplicate(
                &mut query_names,
                name,
                (n, format!("/queries/{}", escape_segment(name))),
                files,
                "query name",
                out,
            );
        }
    }
}

/// Declared tags: group name → (exclusive, tag names). The default group has the key `""`.
struct TagCatalog {
    groups: BTreeMap<String, (bool, BTreeSet<String>)>,
}

fn tag_name_problem(name: &str, what: &str) -> Option<(String, Option<String>)> {
    let len = name.chars().count();
    if name.trim().is_empty() {
        Some((format!("{what} must not be empty"), None))
    } else if name.contains('/') {
        Some((
            format!("{what} `{name}` contains `/`"),
            Some("`/` separates a group from a tag in references (`group/tag`)".into()),
        ))
    } else if let Some(problem) = control_character_problem(name, what) {
        Some(problem)
    } else if len > MAX_TAG_NAME_CHARS {
        Some((
            format!("{what} is {len} characters long, the limit is {MAX_TAG_NAME_CHARS}"),
            None,
        ))
    } else if name != name.trim() {
        Some((
            format!("{what} `{name}` has leading or trailing spaces"),
            None,
        ))
    } else {
        None
    }
}

fn tag_catalog(files: &[Checked<'_>], out: &mut Vec<Diagnostic>) -> TagCatalog {
    let mut groups: BTreeMap<String, (bool, BTreeSet<String>)> = BTreeMap::new();
    groups.insert(String::new(), (false, BTreeSet::new()));
    let mut group_names = HashMap::new();
    let mut tag_places: HashMap<String, Place> = HashMap::new();
    let mut total_tags = 0usize;
    let mut group_count = 0usize;
    let mut last_place: Option<Place> = None;
    for (n, file) in files.iter().enumerate() {
        for (i, tag) in file.manifest.tags.iter().enumerate() {
            let ptr = format!("/tags/{i}");
            if let Some((message, hint)) = tag_name_problem(tag, "tag name") {
                out.push(error(file, &ptr, message, hint));
            }
            first_or_duplicate(
                &mut tag_places,
                tag,
                (n, ptr.clone()),
                files,
                "default-group tag",
                out,
            );
            groups
                .entry(String::new())
                .or_default()
                .1
                .insert(tag.clone());
            total_tags += 1;
            last_place = Some((n, ptr));
        }
        for (g, group) in file.manifest.tag_groups.iter().enumerate() {
            let gptr = format!("/tag_groups/{g}");
            group_count += 1;
            if let Some((message, hint)) = tag_name_problem(&group.name, "tag group name") {
                out.push(error(file, &format!("{gptr}/name"), message, hint));
            }
            first_or_duplicate(
                &mut group_names,
                &group.name,
                (n, format!("{gptr}/name")),
                files,
                "tag group",
                out,
            );
            if group_count == MAX_TAG_GROUPS_PER_ACCOUNT {
                out.push(error(
                    file,
                    &format!("{gptr}/name"),
                    format!(
                        "too many tag groups: Klaviyo allows {MAX_TAG_GROUPS_PER_ACCOUNT} per account including the default group, so at most {} may be declared",
                        MAX_TAG_GROUPS_PER_ACCOUNT - 1
                    ),
                    Some("merge groups or use default-group tags".into()),
                ));
            }
            let entry = groups
                .entry(group.name.clone())
                .or_insert((group.exclusive, BTreeSet::new()));
            let mut in_group: HashMap<String, Place> = HashMap::new();
            for (t, tag) in group.tags.iter().enumerate() {
                let ptr = format!("{gptr}/tags/{t}");
                if let Some((message, hint)) = tag_name_problem(tag, "tag name") {
                    out.push(error(file, &ptr, message, hint));
                }
                first_or_duplicate(
                    &mut in_group,
                    tag,
                    (n, ptr.clone()),
                    files,
                    &format!("tag in group `{}`", group.name),
                    out,
                );
                entry.1.insert(tag.clone());
                total_tags += 1;
                last_place = Some((n, ptr));
            }
        }
    }
    if total_tags > MAX_TAGS_PER_ACCOUNT
        && let Some((n, ptr)) = last_place
    {
        out.push(error(
            &files[n],
            &ptr,
            format!(
                "{total_tags} tags declared, Klaviyo allows at most {MAX_TAGS_PER_ACCOUNT} per account"
            ),
            Some("remove unused tags".into()),
        ));
    }
    TagCatalog { groups }
}

fn tag_references(files: &[Checked<'_>], catalog: &TagCatalog, out: &mut Vec<Diagnostic>) {
    for file in files {
        let lists = file
            .manifest
            .lists
            .iter()
            .enumerate()
            .map(|(i, l)| (format!("/lists/{i}"), &l.tags, "list"));
        let segments = file
            .manifest
            .segments
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("/segments/{i}"), &s.tags, "segment"));
        for (base, tags, kind) in lists.chain(segments) {
            check_resource_tags(file, catalog, &base, tags, kind, out);
        }
    }
}

fn check_resource_tags(
    file: &Checked<'_>,
    catalog: &TagCatalog,
    base: &str,
    tags: &[String],
    kind: &str,
    out: &mut Vec<Diagnostic>,
) {
    if tags.len() > MAX_TAGS_PER_RESOURCE {
        out.push(error(
            file,
            &format!("{base}/tags"),
            format!(
                "{} tags on one {kind}, Klaviyo allows at most {MAX_TAGS_PER_RESOURCE}",
                tags.len()
            ),
            None,
        ));
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut exclusive_used: HashMap<&str, (usize, &str)> = HashMap::new();
    for (i, reference) in tags.iter().enumerate() {
        let ptr = format!("{base}/tags/{i}");
        if let Some(first) = seen.insert(reference.as_str(), i) {
            out.push(error(
                file,
                &ptr,
                format!("tag `{reference}` is listed twice on this {kind}"),
                Some(format!("it is already at tags[{first}]")),
            ));
            continue;
        }
        let (group, tag) = reference
            .split_once('/')
            .unwrap_or(("", reference.as_str()));
        let Some((exclusive, members)) = catalog.groups.get(group) else {
            let known: Vec<&str> = catalog
                .groups
                .keys()
                .filter(|g| !g.is_empty())
                .map(String::as_str)
                .collect();
            let hint = match super::schema::did_you_mean(group, known.iter().copied()) {
                Some(close) => {
                    format!("did you mean `{close}/{tag}`? declare groups under `tag_groups:`")
                }
                None => "declare the group under `tag_groups:`".to_owned(),
            };
            out.push(error(
                file,
                &ptr,
                format!("undeclared tag group `{group}`"),
                Some(hint),
            ));
            continue;
        };
        if !members.contains(tag) {
            let hint = match super::schema::did_you_mean(tag, members.iter().map(String::as_str)) {
                Some(close) if group.is_empty() => format!("did you mean `{close}`?"),
                Some(close) => format!("did you mean `{group}/{close}`?"),
                None if group.is_empty() => {
                    "declare it under the top-level `tags:`, or write `group/tag` for a grouped tag"
                        .to_owned()
                }
                None => format!("declare it under the `{group}` tag group's `tags:`"),
            };
            let message = if group.is_empty() {
                format!("undeclared tag `{tag}`")
            } else {
                format!("undeclared tag `{tag}` in group `{group}`")
            };
            out.push(error(file, &ptr, message, Some(hint)));
            continue;
        }
        if *exclusive {
            if let Some((first, first_tag)) = exclusive_used.get(group) {
                out.push(error(
                    file,
                    &ptr,
                    format!(
                        "tag group `{group}` is exclusive, but this {kind} already has `{first_tag}` from it"
                    ),
                    Some(format!("keep one of tags[{first}] and tags[{i}]")),
                ));
            } else {
                exclusive_used.insert(group, (i, reference.as_str()));
            }
        }
    }
}

fn queries(files: &[Checked<'_>], out: &mut Vec<Diagnostic>) {
    let declared: BTreeSet<&str> = files
        .iter()
        .flat_map(|f| f.manifest.queries.keys().map(String::as_str))
        .collect();
    for file in files {
        for (name, query) in &file.manifest.queries {
            let ptr = format!("/queries/{}", escape_segment(name));
            if let Some(mismatch) =
                crate::sql_statement::placeholder_mismatch(&query.sql, query.params.len())
            {
                out.push(error(
                    file,
                    &format!("{ptr}/sql"),
                    mismatch,
                    Some("`params:` must list one value for each of `$1`..`$n`, in order".into()),
                ));
            }
        }
        let memberships = file.manifest.lists.iter().enumerate().filter_map(|(i, l)| {
            l.members
                .as_ref()
                .map(|m: &MembershipSpec| (format!("/lists/{i}/members/query"), m.query.as_str()))
        });
        let profiles = file
            .manifest
            .profiles
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("/profiles/{i}/query"), p.query.as_str()));
        for (ptr, name) in memberships.chain(profiles) {
            if name.trim().is_empty() {
                out.push(error(
                    file,
                    &ptr,
                    "query name must not be empty".into(),
                    None,
                ));
            } else if !declared.contains(name) {
                let mut d = file.at(
                    Severity::Warning,
                    &ptr,
                    format!("query `{name}` is not declared in any `queries:` section"),
                );
                d.hint = Some(
                    match super::schema::did_you_mean(name, declared.iter().copied()) {
                        Some(close) => format!(
                            "did you mean `{close}`? (or it must exist in the saved_queries table when plan runs)"
                        ),
                        None => "it must exist in the saved_queries database table when plan runs"
                            .into(),
                    },
                );
                out.push(d);
            }
        }
    }
}

fn profiles(files: &[Checked<'_>], out: &mut Vec<Diagnostic>) {
    let mut writers: HashMap<String, Place> = HashMap::new();
    for (n, file) in files.iter().enumerate() {
        for (i, profile) in file.manifest.profiles.iter().enumerate() {
            let base = format!("/profiles/{i}");
            if profile.properties.is_empty() {
                out.push(error(
                    file,
                    &format!("{base}/properties"),
                    "`properties` is empty: this sync would set nothing".into(),
                    Some("map at least one Klaviyo property to a query column".into()),
                ));
            }
            for (property, column) in &profile.properties {
                let ptr = format!("{base}/properties/{}", escape_segment(property));
                let lower = property.to_ascii_lowercase();
                if property.trim().is_empty() {
                    out.push(error(
                        file,
                        &ptr,
                        "property name must not be empty".into(),
                        None,
                    ));
                } else if klaviyo_spec::limits::is_profile_attribute(&lower)
                    || property.starts_with('$')
                {
                    out.push(error(
                        file,
                        &ptr,
                        format!(
                            "`{property}` is a Klaviyo profile attribute, not a custom property"
                        ),
                        Some("choose another name, e.g. with a prefix such as `shop_`".into()),
                    ));
                }
                if column.trim().is_empty() {
                    out.push(error(
                        file,
                        &ptr,
                        format!("no query column given for `{property}`"),
                        None,
                    ));
                }
                first_or_duplicate(
                    &mut writers,
                    property,
                    (n, ptr),
                    files,
                    "synced property",
                    out,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::yaml;

    /// Run the semantic checks over in-memory files; `(severity, file, line, message)` each.
    fn check(files: &[(&str, &str)]) -> Vec<(Severity, String, usize, String)> {
        let parsed: Vec<(std::path::PathBuf, ManifestFile, SpanIndex)> = files
            .iter()
            .map(|(path, text)| {
                let (value, index) = yaml::parse(text).unwrap();
                (path.into(), serde_json::from_value(value).unwrap(), index)
            })
            .collect();
        let checked: Vec<Checked<'_>> = parsed
            .iter()
            .map(|(path, manifest, index)| Checked {
                path,
                manifest,
                index,
            })
            .collect();
        run(&checked)
            .into_iter()
            .map(|d| (d.severity, d.file.display().to_string(), d.line, d.message))
            .collect()
    }

    #[test]
    fn a_group_id_that_is_neither_a_declared_list_nor_klaviyo_shaped_is_warned_about() {
        let lists = "lists:\n  - {id: vip, name: VIP}\n";
        let segment = |ids: &str| {
            format!(
                "segments:\n  - id: s\n    name: S\n    definition:\n      condition_groups:\n        - conditions:\n            - {{type: profile-group-membership, is_member: true, group_ids: {ids}}}\n"
            )
        };
        assert_eq!(
            check(&[("l.yaml", lists), ("s.yaml", &segment("[vip, XyZ123]"))]),
            []
        );
        let found = check(&[("l.yaml", lists), ("s.yaml", &segment("[vpi]"))]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, Severity::Warning);
        assert_eq!(found[0].2, 7);
        assert!(
            found[0]
                .3
                .starts_with("`vpi` is not the id of a list in this project"),
            "{found:?}"
        );
    }

    #[test]
    fn duplicates_across_files_name_both_places() {
        let found = check(&[
            ("a.yaml", "lists:\n  - {id: vip, name: VIP}\n"),
            (
                "b.yaml",
                "lists:\n  - {id: x, name: X}\n  - {id: vip, name: Other}\n",
            ),
        ]);
        assert_eq!(
            found,
            [(
                Severity::Error,
                "b.yaml".into(),
                3,
                "duplicate list id: `vip`".into()
            )]
        );
    }

    #[test]
    fn tag_references_resolve_against_declarations() {
        let tags = "tags: [seasonal]\ntag_groups:\n  - {name: stage, exclusive: true, tags: [a, b]}\n  - {name: life, tags: [x, y]}\n";
        let ok = "lists:\n  - {id: l, name: L, tags: [seasonal, stage/a, life/x, life/y]}\n";
        assert_eq!(check(&[("t.yaml", tags), ("l.yaml", ok)]), []);
        let bad = "segments:\n  - {id: s, name: S, definition: {}, tags: [stage/a, stage/b, nope/x, life/z, vip]}\n";
        let messages: Vec<String> = check(&[("t.yaml", tags), ("s.yaml", bad)])
            .into_iter()
            .map(|(_, _, _, m)| m)
            .collect();
        assert_eq!(
            messages,
            [
                "tag group `stage` is exclusive, but this segment already has `stage/a` from it",
                "undeclared tag group `nope`",
                "undeclared tag `z` in group `life`",
                "undeclared tag `vip`",
            ]
        );
    }

    #[test]
    fn limits_are_enforced() {
        let many: Vec<String> = (0..101).map(|i| format!("t{i}")).collect();
        let text = format!(
            "tags: [{0}]\nlists:\n  - {{id: l, name: L, tags: [{0}]}}\n",
            many.join(", ")
        );
        let found = check(&[("a.yaml", &text)]);
        assert!(
            found
                .iter()
                .any(|f| f.3 == "101 tags on one list, Klaviyo allows at most 100")
        );
        let groups: String = (0..50).map(|i| format!("  - {{name: g{i}}}\n")).collect();
        let found = check(&[("g.yaml", &format!("tag_groups:\n{groups}"))]);
        assert_eq!(found.len(), 1);
        assert!(found[0].3.starts_with("too many tag groups"));
    }

    #[test]
    fn undeclared_query_is_only_a_warning() {
        let found = check(&[(
            "p.yaml",
            "profiles:\n  - {id: p, query: ltv, identify_by: email, properties: {shop_ltv: v}}\n",
        )]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, Severity::Warning);
    }
}
