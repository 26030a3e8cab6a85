//! The plan for a terminal, in the style users know from Terraform.

use std::fmt::Write as _;

use super::{cost_sentence, sanitize, summary_sentence, symbol};
use crate::plan::{Action, Change, Plan};

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

/// The plan as terminal text; ANSI colours only when `color` (the caller honours `NO_COLOR`).
pub fn text(plan: &Plan, color: bool) -> String {
    let paint = Paint { color };
    let mut out = String::new();
    if plan.is_empty() {
        out.push_str("No changes. Klaviyo matches the manifests.\n");
        write_data(&mut out, plan, &paint);
        write_warnings(&mut out, plan, &paint);
        return out;
    }
    for change in &plan.changes {
        write_change(&mut out, change, &paint);
    }
    write_data(&mut out, plan, &paint);
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

fn write_change(out: &mut String, change: &Change, paint: &Paint) {
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
    let _ = writeln!(out, "{line}");
    if let Some(note) = &change.note {
        let _ = writeln!(
            out,
            "    {}",
            paint.paint(DIM, &format!("# {}", sanitize(note)))
        );
    }
    let creating = change.action == Action::Create;
    for field in &change.fields {
        // The definition is shown as a diff below; a create's name is on the header line.
        if field.field == "definition" || (creating && field.field == "name") {
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

/// The data part (profile properties, list members), when the manifests declare any.
fn write_data(out: &mut String, plan: &Plan, paint: &Paint) {
    if let Some(data) = &plan.data {
        let _ = writeln!(out, "\n{}", paint.paint(BOLD, "Data from SQL:"));
        out.push_str(&sanitize(&crate::sync::render_text(data)));
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
