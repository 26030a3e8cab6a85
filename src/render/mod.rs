//! A [`Plan`](crate::plan::Plan) as text for terminals, Markdown for pull-request comments and
//! JSON for machines. Pure: each render is a function of the plan (and, for text, whether to
//! colour), so the same plan always renders the same bytes and snapshots never flap.
//!
//! Names, keys and definitions come from users and from Klaviyo, so every render treats them as
//! untrusted: text escapes control characters (no terminal escape injection), Markdown keeps
//! them in code spans and fenced blocks (no HTML, links or @mentions), JSON escapes by nature.

#![deny(missing_docs)]

mod json;
mod markdown;
mod text;

pub use json::json;
pub use markdown::{MARKDOWN_LIMIT, markdown};
pub use text::text;

use crate::plan::Action;

/// The Terraform-like symbol of an action.
pub(crate) fn symbol(action: Action) -> &'static str {
    match action {
        Action::Create | Action::Attach => "+",
        Action::Update => "~",
        Action::Adopt => "=",
        Action::Destroy | Action::Detach => "-",
        Action::Replace => "-/+",
    }
}

/// `value` with control characters (including ESC) shown as `\u{..}` escapes.
pub(crate) fn sanitize(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for ch in value.chars() {
        if ch.is_control() && ch != '\n' && ch != '\t' {
            out.push_str(&ch.escape_unicode().to_string());
        } else {
            out.push(ch);
        }
    }
    out
}

/// The plan's summary sentence, e.g. `3 to create, 1 to update`.
pub(crate) fn summary_sentence(plan: &crate::plan::Plan) -> String {
    let summary = plan.summary();
    let parts: Vec<String> = Action::ALL
        .iter()
        .filter(|action| summary.count(**action) > 0)
        .map(|action| format!("{} to {}", summary.count(*action), action.as_str()))
        .collect();
    parts.join(", ")
}

/// Why `apply` will refuse the plan.
pub(crate) fn prevented_sentence(prevented: usize) -> String {
    if prevented == 1 {
        "1 change is prevented; `klsync apply` will refuse this plan.".to_owned()
    } else {
        format!("{prevented} changes are prevented; `klsync apply` will refuse this plan.")
    }
}

/// The cost sentence, e.g. `Requests: 5 (create_list 2, tag_lists 3); at Klaviyo's limits this
/// takes about 4s`.
pub(crate) fn cost_sentence(plan: &crate::plan::Plan) -> String {
    let per_operation: Vec<String> = plan
        .cost
        .requests
        .iter()
        .map(|(operation, count)| format!("{operation} {count}"))
        .collect();
    let duration =
        crate::plan::format_duration(std::time::Duration::from_secs(plan.cost.estimated_seconds));
    if per_operation.is_empty() {
        "Requests: 0 (klsync's records only)".to_owned()
    } else {
        format!(
            "Requests: {} ({}); at Klaviyo's limits this takes about {duration}",
            plan.cost.total_requests,
            per_operation.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_neutralises_terminal_escapes() {
        assert_eq!(sanitize("a\u{1b}[31mb"), "a\\u{1b}[31mb");
        assert_eq!(sanitize("line\nnext"), "line\nnext");
    }
}
