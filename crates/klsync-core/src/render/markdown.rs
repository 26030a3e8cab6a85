//! The plan as a GitHub pull-request comment.
//!
//! Layout: a summary table, the cost, then one collapsed `<details>` section per kind of
//! resource, with definition diffs in `diff` blocks. The comment stays under GitHub's 65,536
//! character limit: details are cut at a change boundary with a note saying how many were left
//! out.
//!
//! Untrusted values (names, keys, ids, field values, diffs) only ever appear inside code spans
//! or fenced code blocks, where GitHub renders no HTML, links, autolinks or @mentions. Code span
//! fences are longer than any backtick run in the value, so a value cannot close its span. The
//! few free-text strings (notes, warnings) are backslash-escaped and have links and mentions
//! broken with a zero-width space.

use std::fmt::Write as _;

use super::{cost_sentence, invisible_kind, summary_sentence, symbol};
use crate::plan::{Action, Change, ChangeKind, Plan, saturating_total};

/// GitHub's limit on the length of a comment, in characters.
pub const MARKDOWN_LIMIT: usize = 65_536;

/// Room kept below the limit for closing tags and the truncation note.
const RESERVE: usize = 512;

/// A definition diff longer than this is cut, so one huge segment cannot crowd out the rest.
const MAX_DIFF_CHARS: usize = 16_000;

/// At most this many warnings are listed; the rest are counted.
const MAX_WARNINGS: usize = 50;

const KINDS: [ChangeKind; 5] = [
    ChangeKind::TagGroup,
    ChangeKind::Tag,
    ChangeKind::List,
    ChangeKind::Segment,
    ChangeKind::TagLink,
];

/// The plan as a Markdown pull-request comment, always shorter than [`MARKDOWN_LIMIT`]
/// characters.
pub fn markdown(plan: &Plan) -> String {
    let mut out = String::from("### klsync plan\n\n");
    if plan.is_empty() {
        out.push_str("No changes. Klaviyo matches the manifests.\n");
        write_data(&mut out, plan);
        write_warnings(&mut out, plan);
        return out;
    }
    let summary = plan.summary();
    let _ = writeln!(out, "**Plan:** {}.\n", summary_sentence(plan));
    if !plan.changes.is_empty() {
        out.push_str("| Action | Count |\n|---|---:|\n");
        for action in Action::ALL {
            let count = summary.count(action);
            if count > 0 {
                let _ = writeln!(
                    out,
                    "| `{}` {} | {count} |",
                    symbol(action),
                    action.as_str()
                );
            }
        }
        out.push('\n');
    }
    if summary.prevented > 0 {
        let _ = writeln!(
            out,
            "> [!CAUTION]\n> {}\n",
            super::prevented_sentence(summary.prevented)
        );
    }
    // The cost sentence holds only operation ids and numbers, no data.
    let _ = writeln!(out, "{}.\n", cost_sentence(plan));
    if let Some(scopes) = super::scopes_sentence(plan) {
        let _ = writeln!(out, "{scopes}.\n");
    }
    write_data(&mut out, plan);
    write_warnings(&mut out, plan);

    let mut used = out.chars().count();
    let mut shown = 0usize;
    'kinds: for kind in KINDS {
        let changes: Vec<&Change> = plan.changes.iter().filter(|c| c.kind == kind).collect();
        if changes.is_empty() {
            continue;
        }
        let open = format!(
            "<details><summary>{} ({} change{})</summary>\n\n",
            kind.heading(),
            changes.len(),
            if changes.len() == 1 { "" } else { "s" }
        );
        let close = "</details>\n\n";
        let mut opened = false;
        for change in changes {
            let block = change_block(change);
            let cost =
                block.chars().count() + if opened { 0 } else { open.chars().count() } + close.len();
            if used + cost + RESERVE > MARKDOWN_LIMIT {
                if opened {
                    out.push_str(close);
                }
                break 'kinds;
            }
            if !opened {
                out.push_str(&open);
                used += open.chars().count();
                opened = true;
            }
            used += block.chars().count();
            out.push_str(&block);
            shown += 1;
        }
        out.push_str(close);
        used += close.len();
    }
    let hidden = plan.changes.len() - shown;
    if hidden > 0 {
        let _ = writeln!(
            out,
            "…{hidden} more changes not shown; run `klsync plan` locally to see them all."
        );
    }
    out
}

/// The data part, when the manifests declare one. Its size is bounded (counts and samples of at
/// most `sync::SAMPLE_SIZE` rows per sync), so it comes before the resource details that are
/// cut to fit. Sync ids, identifiers and values come from manifests and the user's database,
/// so they go in code spans like every other untrusted value here.
fn write_data(out: &mut String, plan: &Plan) {
    let Some(data) = &plan.data else {
        return;
    };
    out.push_str("\n#### Data from SQL\n\n");
    if !data.profiles.is_empty() {
        out.push_str("| Profiles | Rows | New | Changed | Unset | Unchanged | Rejected |\n");
        out.push_str("|---|---:|---:|---:|---:|---:|---:|\n");
        for sync in &data.profiles {
            let c = &sync.counts;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                code_cell(&sync.id),
                sync.rows,
                c.new,
                c.changed,
                c.unset,
                c.unchanged,
                c.rejected
            );
        }
        out.push('\n');
    }
    if !data.memberships.is_empty() {
        out.push_str("| List members | Rows | Add | Remove | Unchanged | Rejected |\n");
        out.push_str("|---|---:|---:|---:|---:|---:|\n");
        for list in &data.memberships {
            let c = &list.counts;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                code_cell(&list.list),
                list.rows,
                c.add,
                c.remove,
                c.unchanged,
                c.rejected
            );
        }
        out.push('\n');
        for list in data.memberships.iter().filter(|m| m.exceeds_max_removals) {
            let _ = writeln!(
                out,
                "> [!CAUTION]\n> {}: {} removals exceed max_removals ({}); `klsync apply` refuses without `--force`.\n",
                code(&format!("lists.{}.members", list.list)),
                list.counts.remove,
                list.max_removals.unwrap_or(0)
            );
        }
    }
    let samples = data_samples(data);
    if !samples.is_empty() {
        out.push_str("<details><summary>Data samples</summary>\n\n");
        for line in samples {
            let _ = writeln!(out, "- {line}");
        }
        out.push_str("\n</details>\n\n");
    }
    let total = saturating_total(data.requests.values().copied());
    let per_operation: Vec<String> = data
        .requests
        .iter()
        .map(|(operation, count)| format!("{operation} {count}"))
        .collect();
    if total > 0 {
        // Their time is in the plan's one estimate, with the configuration's.
        let _ = writeln!(
            out,
            "Data requests: {total} ({}).\n",
            per_operation.join(", ")
        );
    }
}

/// One line per sampled row: changes, rejections, drift, members to add and remove.
fn data_samples(data: &crate::data::DataPlan) -> Vec<String> {
    let value = |value: &Option<serde_json::Value>| match value {
        Some(value) => code(&value.to_string()),
        None => "(none)".to_owned(),
    };
    let mut lines = Vec::new();
    for sync in &data.profiles {
        let id = code(&format!("profiles.{}", sync.id));
        for row in &sync.diff_sample {
            for change in &row.changes {
                lines.push(format!(
                    "{id} {} ({}): {} {} → {}",
                    code(&row.identifier),
                    escape_text(&row.action),
                    code(&change.property),
                    value(&change.before),
                    value(&change.after)
                ));
            }
        }
        for row in &sync.rejected_sample {
            lines.push(format!(
                "{id} rejected row {} {}: {}",
                row.row,
                code(&row.identifier),
                escape_text(&row.reason)
            ));
        }
        for drift in &sync.drift {
            lines.push(format!(
                "{id} drift {} {}: applied {}, Klaviyo has {}",
                code(&drift.identifier),
                code(&drift.property),
                value(&drift.applied),
                value(&drift.live)
            ));
        }
    }
    for list in &data.memberships {
        let id = code(&format!("lists.{}.members", list.list));
        for identifier in &list.add_sample {
            lines.push(format!("{id} + {}", code(identifier)));
        }
        for identifier in &list.remove_sample {
            lines.push(format!("{id} − {}", code(identifier)));
        }
        for row in &list.rejected_sample {
            lines.push(format!(
                "{id} rejected row {} {}: {}",
                row.row,
                code(&row.identifier),
                escape_text(&row.reason)
            ));
        }
    }
    lines
}

fn write_warnings(out: &mut String, plan: &Plan) {
    if plan.warnings.is_empty() {
        return;
    }
    out.push_str("**Warnings**\n\n");
    for warning in plan.warnings.iter().take(MAX_WARNINGS) {
        let _ = writeln!(out, "- {}", escape_text(warning));
    }
    if plan.warnings.len() > MAX_WARNINGS {
        let _ = writeln!(out, "- …{} more", plan.warnings.len() - MAX_WARNINGS);
    }
    out.push('\n');
}

fn change_block(change: &Change) -> String {
    let mut block = format!(
        "**`{}` {}** {}",
        symbol(change.action),
        change.action.as_str(),
        code(&change.address)
    );
    if change.link.is_none() {
        let _ = write!(block, " — {}", code(&change.name));
    }
    if let Some(id) = &change.klaviyo_id {
        let _ = write!(block, " (id {})", code(id));
    }
    if change.prevented {
        block.push_str(" **prevented**");
    }
    block.push_str("\n\n");
    if let Some(note) = &change.note {
        let _ = writeln!(block, "_{}_\n", escape_text(note));
    }
    let creating = change.action == Action::Create;
    let rows: Vec<String> = change
        .fields
        .iter()
        .filter(|field| field.field != "definition" && !(creating && field.field == "name"))
        .map(|field| {
            let before = if creating {
                String::new()
            } else {
                code_cell(&field.before.to_string())
            };
            format!(
                "| {} | {before} | {} |",
                code_cell(&field.field),
                code_cell(&field.after.to_string())
            )
        })
        .collect();
    if !rows.is_empty() {
        block.push_str("| Field | Before | After |\n|---|---|---|\n");
        for row in rows {
            block.push_str(&row);
            block.push('\n');
        }
        block.push('\n');
    }
    if let Some(diff) = &change.definition_diff {
        let (diff, cut) = cut_at_line(diff, MAX_DIFF_CHARS);
        let fence = "`".repeat(longest_backtick_run(diff).max(2) + 1);
        let _ = writeln!(block, "{fence}diff\n{}{fence}\n", ensure_newline(diff));
        if cut {
            block.push_str("_Diff cut short; run `klsync plan` locally to see all of it._\n\n");
        }
    }
    block
}

/// The longest prefix of `text` ending at a line break and at most `max` characters long.
fn cut_at_line(text: &str, max: usize) -> (&str, bool) {
    let Some((end, _)) = text.char_indices().nth(max) else {
        return (text, false);
    };
    let end = text[..end].rfind('\n').map_or(0, |newline| newline + 1);
    (&text[..end], true)
}

fn ensure_newline(text: &str) -> String {
    if text.ends_with('\n') {
        text.to_owned()
    } else {
        format!("{text}\n")
    }
}

fn longest_backtick_run(text: &str) -> usize {
    let mut longest = 0;
    let mut run = 0;
    for ch in text.chars() {
        if ch == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    longest
}

/// `value` as an inline code span that nothing in `value` can close or escape from.
fn code(value: &str) -> String {
    // A line break would end a table row or paragraph; show it instead. GitHub applies bidi
    // controls inside code spans too, so invisible characters are shown as escapes.
    let value: String = value
        .chars()
        .flat_map(|ch| match ch {
            '\n' | '\r' => "␤".chars().collect::<Vec<_>>(),
            ch if ch.is_control() || invisible_kind(ch).is_some() => ch.escape_unicode().collect(),
            ch => vec![ch],
        })
        .collect();
    if value.is_empty() {
        return "` `".to_owned();
    }
    let fence = "`".repeat(longest_backtick_run(&value) + 1);
    // CommonMark strips one space from each end of a span; pad so the value survives intact.
    let pad = value.starts_with(['`', ' ']) || value.ends_with(['`', ' ']);
    let pad = if pad { " " } else { "" };
    format!("{fence}{pad}{value}{pad}{fence}")
}

/// [`code`] for a table cell: GitHub splits cells on `|` even inside code spans unless escaped.
fn code_cell(value: &str) -> String {
    code(value).replace('|', "\\|")
}

/// Free text with Markdown punctuation escaped, and links and @mentions broken.
fn escape_text(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    let mut previous = ' ';
    for ch in value.chars() {
        if ch.is_control() {
            out.push(' ');
        } else if invisible_kind(ch).is_some() {
            out.extend(ch.escape_unicode());
        } else if ch.is_ascii_punctuation() && ch != '@' {
            out.push('\\');
            out.push(ch);
        } else {
            out.push(ch);
        }
        // A zero-width space after `@`, after `:` of `scheme:` and inside `www.` keeps GitHub
        // from making mentions, autolinks and email links out of data.
        if ch == '@' || ch == ':' || (ch == '.' && previous.eq_ignore_ascii_case(&'w')) {
            out.push('\u{200B}');
        }
        previous = ch;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_from_the_database_stays_in_code_spans() {
        let mut plan: Plan = serde_json::from_value(serde_json::json!({
            "format_version": 1,
            "meta": {"created_at": "t", "manifest_digest": "d", "klsync_version": "0"},
            "changes": [], "cost": {"requests": {}, "total_requests": 0, "estimated_seconds": 0},
            "warnings": []
        }))
        .expect("plan");
        let data: crate::data::DataPlan = serde_json::from_value(serde_json::json!({
            "profiles": [{
                "id": "ltv", "query": "q", "identify_by": "email", "on_missing_row": "keep",
                "rows": 2,
                "counts": {"new": 1, "changed": 0, "unset": 0, "unchanged": 0, "rejected": 1,
                           "missing_kept": 0},
                "rejected_sample": [{"row": 2, "identifier": "\"`@all <b>x</b>`\"",
                                     "reason": "invalid email address"}],
                "diff_sample": [{"identifier": "a`b@x.io", "action": "new", "changes": [
                    {"property": "note", "before": null, "after": "[link](http://x.io) @team"}
                ]}],
                "requests": {}, "estimated_seconds": 0, "drift": []
            }],
            "memberships": [{
                "list": "vip", "list_id": null, "query": "q", "identify_by": "email",
                "mode": "mirror", "rows": 1,
                "counts": {"add": 0, "remove": 9, "unchanged": 1, "rejected": 0, "duplicates": 0},
                "add_sample": [], "remove_sample": ["r@x.io"], "rejected_sample": [],
                "max_removals": 2, "exceeds_max_removals": true,
                "requests": {}, "estimated_seconds": 0
            }],
            "requests": {"bulk_import_profiles": 1}, "estimated_seconds": 1
        }))
        .expect("data plan");
        plan = plan.with_data(data);
        let text = markdown(&plan);
        assert!(text.contains("| `ltv` | 2 | 1 | 0 | 0 | 0 | 1 |"), "{text}");
        assert!(text.contains("``a`b@x.io``"), "{text}");
        assert!(text.contains("`\"[link](http://x.io) @team\"`"), "{text}");
        assert!(text.contains("``\"`@all <b>x</b>`\"``"), "{text}");
        assert!(
            text.contains("9 removals exceed max_removals (2)"),
            "{text}"
        );
        assert!(
            text.contains("Data requests: 1 (bulk_import_profiles 1)"),
            "{text}"
        );
    }

    #[test]
    fn code_spans_cannot_be_closed_by_the_value() {
        assert_eq!(code("a`b"), "``a`b``");
        assert_eq!(code("`x`"), "`` `x` ``");
        assert_eq!(code(""), "` `");
        assert_eq!(code("two\nlines"), "`two␤lines`");
        assert_eq!(code("VIP\u{202E}tsil"), "`VIP\\u{202e}tsil`");
        assert_eq!(code("a\u{0}b"), "`a\\u{0}b`");
    }

    #[test]
    fn long_diffs_are_cut_at_a_line_break() {
        let diff = "+line\n".repeat(10);
        assert_eq!(cut_at_line(&diff, 100), (diff.as_str(), false));
        assert_eq!(cut_at_line(&diff, 15), ("+line\n+line\n", true));
    }

    #[test]
    fn table_cells_escape_pipes() {
        assert_eq!(code_cell("a|b"), "`a\\|b`");
    }

    #[test]
    fn free_text_breaks_links_and_mentions() {
        let escaped = escape_text("see [x](http://evil) @here <b> www.evil.com");
        assert!(!escaped.contains("]("), "{escaped}");
        assert!(!escaped.contains("http://"), "{escaped}");
        assert!(!escaped.contains("@here"), "{escaped}");
        assert!(!escaped.contains("www."), "{escaped}");
        assert!(escaped.contains("\\<b\\>"), "{escaped}");
        assert_eq!(escape_text("a\u{202E}b"), "a\\u{202e}b");
    }
}
