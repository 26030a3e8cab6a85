//! The plan for a terminal, in the style users know from Terraform.

use std::fmt::Write as _;

use super::{cost_sentence, sanitize, summary_sentence, symbol};
use crate::plan::{Action, Change, ChangeKind, Plan};

const RESET: &str = "\x1b[0m";
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const MAGENTA: &str = "\x1b[35m";
const CYAN: &str = "\x1b[36m";

/// ANSI styling, or none at all.
struct Paint {
    color: bool,
}

impl Paint {
    fn paint(&self, style: &str, text: &str) -> String {
        if self.color {
            format!("{style}{text}{RESET}")
        } else {
            text.to_owned()
        }
    }
}

fn action_style(action: Action) -> &'static str {
    match action {
        Action::Create | Action::Attach => GREEN,
        Action::Update => YELLOW,
        Action::Adopt => CYAN,
        Action::Destroy | Action::Detach => RED,
        Action::Replace => MAGENTA,
    }
}

/// How much of a plan the text shows: everything for `plan`, a summary for a first look
/// (`demo` without `--verbose`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detail {
    /// At most this many rows of each data sample.
    pub sample: usize,
    /// Every field, definitions as diffs and one line per tag link (`true`); or one line per
    /// resource, definitions as the condition types they use, tag links counted, and one line
    /// per sampled data row.
    pub full: bool,
}

impl Detail {
    /// What `klsync plan` shows.
    pub const FULL: Detail = Detail {
        sample: usize::MAX,
        full: true,
    };

    /// A first look: a few lines per kind of change.
    pub const BRIEF: Detail = Detail {
        sample: 3,
        full: false,
    };
}

/// The plan as terminal text; ANSI colours only when `color` (the caller honours `NO_COLOR`).
pub fn text(plan: &Plan, color: bool) -> String {
    text_with(plan, color, Detail::FULL)
}

/// [`text`], showing as much as `detail` says.
pub fn text_with(plan: &Plan, color: bool, detail: Detail) -> String {
    let paint = Paint { color };
    let mut out = String::new();
    if plan.is_empty() {
        out.push_str("No changes. Klaviyo matches the manifests.\n");
        write_data(&mut out, plan, &paint, detail);
        write_warnings(&mut out, plan, &paint);
        return out;
    }
    if detail.full {
        for change in &plan.changes {
            write_change(&mut out, change, &paint, detail);
        }
    } else {
        write_brief_changes(&mut out, plan, &paint);
    }
    write_data(&mut out, plan, &paint, detail);
    out.push('\n');
    let _ = writeln!(
        out,
        "{}",
        paint.paint(BOLD, &format!("Plan: {}.", summary_sentence(plan)))
    );
    let prevented = plan.summary().prevented;
    if prevented > 0 {
        let _ = writeln!(
            out,
            "{}",
            paint.paint(RED, &super::prevented_sentence(prevented))
        );
    }
    let _ = writeln!(out, "{}", cost_sentence(plan));
    if let Some(scopes) = super::scopes_sentence(plan) {
        let _ = writeln!(out, "{scopes}");
    }
    write_warnings(&mut out, plan, &paint);
    out
}

/// The changes in brief: tag groups and tags created, and tag links, counted on one line
/// each; every other change on its own line, a segment's conditions after its name.
fn write_brief_changes(out: &mut String, plan: &Plan, paint: &Paint) {
    let counted = |change: &Change| {
        change.link.is_some()
            || (change.action == Action::Create
                && matches!(change.kind, ChangeKind::TagGroup | ChangeKind::Tag))
    };
    let counted_line = |out: &mut String, kind: ChangeKind, action: Action, noun: &str| {
        let names: Vec<&str> = plan
            .changes
            .iter()
            .filter(|change| counted(change) && change.kind == kind && change.action == action)
            .map(|change| change.address.split_once('.').map_or("", |(_, key)| key))
            .collect();
        if names.is_empty() {
            return;
        }
        let head = format!("{} {}", symbol(action), action.as_str());
        let listed = if kind == ChangeKind::TagLink {
            String::new()
        } else {
            format!(": {}", sanitize(&names.join(", ")))
        };
        let _ = writeln!(
            out,
            "{} {} {noun}{listed}",
            paint.paint(action_style(action), &head),
            names.len()
        );
    };
    // In plan order: groups and tags first, links last.
    counted_line(out, ChangeKind::TagGroup, Action::Create, "tag group(s)");
    counted_line(out, ChangeKind::Tag, Action::Create, "tag(s)");
    for change in plan.changes.iter().filter(|change| !counted(change)) {
        write_change(out, change, paint, Detail::BRIEF);
    }
    counted_line(out, ChangeKind::TagLink, Action::Detach, "tag link(s)");
    counted_line(out, ChangeKind::TagLink, Action::Attach, "tag link(s)");
}

fn write_change(out: &mut String, change: &Change, paint: &Paint, detail: Detail) {
    let style = action_style(change.action);
    let head = format!("{} {}", symbol(change.action), change.action.as_str());
    let mut line = format!(
        "{} {}",
        paint.paint(style, &head),
        sanitize(&change.address)
    );
    if change.link.is_none() {
        let _ = write!(line, " {}", quoted(&change.name));
    }
    if matches!(
        change.action,
        Action::Adopt | Action::Destroy | Action::Replace
    ) && let Some(id) = &change.klaviyo_id
    {
        let _ = write!(line, " (id {})", sanitize(id));
    }
    if change.prevented {
        let _ = write!(line, " {}", paint.paint(RED, "[prevented]"));
    }
    let brief_definition = change
        .fields
        .iter()
        .find(|field| field.field == "definition")
        .filter(|_| !detail.full);
    if let Some(definition) = brief_definition {
        let _ = write!(
            line,
            ": {}",
            sanitize(&definition_summary(&definition.after))
        );
    }
    let _ = writeln!(out, "{line}");
    if let Some(note) = &change.note {
        let _ = writeln!(
            out,
            "    {}",
            paint.paint(DIM, &format!("# {}", sanitize(note)))
        );
    }
    if !detail.full {
        return;
    }
    let creating = change.action == Action::Create;
    for field in &change.fields {
        // The definition is shown as a diff below; a create's name is on the header line.
        if field.field == "definition" || (creating && field.field == "name") {
            continue;
        }
        // Nothing to say about a value a create leaves unset (a tag in the default group).
        if creating && field.after.is_null() {
            continue;
        }
        let value = if creating {
            compact(&field.after)
        } else {
            format!("{} → {}", compact(&field.before), compact(&field.after))
        };
        let _ = writeln!(out, "    {}: {value}", sanitize(&field.field));
    }
    if let Some(diff) = &change.definition_diff {
        let _ = writeln!(out, "    definition:");
        for diff_line in diff
            .lines()
            .filter(|l| !l.starts_with("---") && !l.starts_with("+++"))
        {
            let diff_line = sanitize(diff_line);
            let styled = match diff_line.chars().next() {
                Some('+') => paint.paint(GREEN, &diff_line),
                Some('-') => paint.paint(RED, &diff_line),
                Some('@') => paint.paint(CYAN, &diff_line),
                _ => diff_line,
            };
            let _ = writeln!(out, "      {styled}");
        }
    }
}

/// A definition in one line: the condition types of each group (`or` inside a group, `and`
/// between groups).
fn definition_summary(definition: &serde_json::Value) -> String {
    let groups: Vec<String> = definition["condition_groups"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|group| {
            let types: Vec<&str> = group["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|condition| condition["type"].as_str().unwrap_or("?"))
                .collect();
            if types.len() > 1 {
                format!("({})", types.join(" or "))
            } else {
                types.join("")
            }
        })
        .collect();
    groups.join(" and ")
}

/// The data part (profile properties, list members), when the manifests declare any.
fn write_data(out: &mut String, plan: &Plan, paint: &Paint, detail: Detail) {
    if let Some(data) = &plan.data {
        let _ = writeln!(out, "\n{}", paint.paint(BOLD, "Data from SQL:"));
        out.push_str(&sanitize(&crate::data::render_text_sampled(
            data,
            detail.sample,
            detail.full,
        )));
    }
}

fn write_warnings(out: &mut String, plan: &Plan, paint: &Paint) {
    for warning in &plan.warnings {
        let _ = writeln!(
            out,
            "{} {}",
            paint.paint(YELLOW, "Warning:"),
            sanitize(warning)
        );
    }
}

/// A name as a JSON string: quoted, with control and invisible characters escaped.
fn quoted(name: &str) -> String {
    sanitize(&serde_json::Value::String(name.to_owned()).to_string())
}

fn compact(value: &serde_json::Value) -> String {
    sanitize(&value.to_string())
}
