//! Text and markdown renderings of a [`DataPlan`].

use std::fmt::Write;

use super::{DataPlan, FieldChange};
use crate::plan::format_duration;

fn value(v: &Option<serde_json::Value>) -> String {
    v.as_ref()
        .map_or_else(|| "(none)".to_string(), ToString::to_string)
}

fn change_line(change: &FieldChange) -> String {
    format!(
        "{}: {} -> {}",
        change.property,
        value(&change.before),
        value(&change.after)
    )
}

/// The data plan for a terminal.
pub fn render_text(plan: &DataPlan) -> String {
    let mut out = String::new();
    for sync in &plan.profiles {
        let c = &sync.counts;
        let _ = writeln!(
            out,
            "profiles.{} ({} rows): {} new, {} changed, {} unset, {} unchanged, {} rejected{}",
            sync.id,
            sync.rows,
            c.new,
            c.changed,
            c.unset,
            c.unchanged,
            c.rejected,
            if c.missing_kept > 0 {
                format!(", {} gone (kept)", c.missing_kept)
            } else {
                String::new()
            }
        );
        for row in &sync.diff_sample {
            let _ = writeln!(out, "  ~ {} ({})", row.identifier, row.action);
            for change in &row.changes {
                let _ = writeln!(out, "      {}", change_line(change));
            }
        }
        for row in &sync.rejected_sample {
            let _ = writeln!(
                out,
                "  ! row {} {}: {}",
                row.row, row.identifier, row.reason
            );
        }
        for drift in &sync.drift {
            let _ = writeln!(
                out,
                "  drift {} {}: applied {} but Klaviyo has {}",
                drift.identifier,
                drift.property,
                value(&drift.applied),
                value(&drift.live)
            );
        }
    }
    for list in &plan.memberships {
        let c = &list.counts;
        let _ = writeln!(
            out,
            "lists.{}.members ({} rows): +{} add, -{} remove, {} unchanged, {} rejected",
            list.list, list.rows, c.add, c.remove, c.unchanged, c.rejected
        );
        if list.exceeds_max_removals {
            let _ = writeln!(
                out,
                "  ! {} removals exceed max_removals ({}): apply refuses without --force",
                c.remove,
                list.max_removals.unwrap_or(0)
            );
        }
        for identifier in &list.add_sample {
            let _ = writeln!(out, "  + {identifier}");
        }
        for identifier in &list.remove_sample {
            let _ = writeln!(out, "  - {identifier}");
        }
        for row in &list.rejected_sample {
            let _ = writeln!(
                out,
                "  ! row {} {}: {}",
                row.row, row.identifier, row.reason
            );
        }
    }
    let total: u64 = plan.requests.values().sum();
    let _ = writeln!(
        out,
        "data: {total} request(s), at least {} at Klaviyo's rate limits",
        format_duration(std::time::Duration::from_secs(plan.estimated_seconds))
    );
    for (operation, count) in &plan.requests {
        let _ = writeln!(out, "  {operation}: {count}");
    }
    out
}

/// The data plan as markdown (pull-request comments).
pub fn render_markdown(plan: &DataPlan) -> String {
    let mut out = String::from("### Data\n\n");
    if !plan.profiles.is_empty() {
        out.push_str("| profiles | rows | new | changed | unset | unchanged | rejected |\n");
        out.push_str("|---|---:|---:|---:|---:|---:|---:|\n");
        for sync in &plan.profiles {
            let c = &sync.counts;
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} | {} | {} |",
                sync.id, sync.rows, c.new, c.changed, c.unset, c.unchanged, c.rejected
            );
        }
        out.push('\n');
    }
    if !plan.memberships.is_empty() {
        out.push_str("| list members | rows | add | remove | unchanged | rejected |\n");
        out.push_str("|---|---:|---:|---:|---:|---:|\n");
        for list in &plan.memberships {
            let c = &list.counts;
            let warn = if list.exceeds_max_removals {
                " ⚠️ exceeds max_removals"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "| `{}`{warn} | {} | {} | {} | {} | {} |",
                list.list, list.rows, c.add, c.remove, c.unchanged, c.rejected
            );
        }
        out.push('\n');
    }
    let samples: Vec<String> = plan
        .profiles
        .iter()
        .flat_map(|sync| {
            sync.diff_sample.iter().flat_map(move |row| {
                row.changes.iter().map(move |change| {
                    format!(
                        "- `{}` `{}`: {}",
                        sync.id,
                        row.identifier,
                        change_line(change)
                    )
                })
            })
        })
        .collect();
    if !samples.is_empty() {
        out.push_str("<details><summary>Sample changes</summary>\n\n");
        out.push_str(&samples.join("\n"));
        out.push_str("\n\n</details>\n\n");
    }
    let total: u64 = plan.requests.values().sum();
    let _ = writeln!(
        out,
        "{total} request(s), at least {} at Klaviyo's rate limits.",
        format_duration(std::time::Duration::from_secs(plan.estimated_seconds))
    );
    out
}
