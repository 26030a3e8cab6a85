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
pub use text::{Detail, text, text_with};

use crate::plan::{Action, saturating_total};

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

/// `value` with control characters (including ESC) and invisible characters shown as `\u{..}`
/// escapes (line breaks and tabs kept).
pub(crate) fn sanitize(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for ch in value.chars() {
        if (ch.is_control() && ch != '\n' && ch != '\t') || invisible_kind(ch).is_some() {
            out.extend(ch.escape_unicode());
        } else {
            out.push(ch);
        }
    }
    out
}

/// What kind of invisible character `ch` is, or `None` for any other character: characters
/// that display as nothing, or reorder the text around them, and so can make a name or a query
/// look like another in a terminal or a review ("Trojan Source", CVE-2021-42574). Renders
/// show them as `\u{..}` escapes; `klsync validate` warns about them.
pub fn invisible_kind(ch: char) -> Option<&'static str> {
    match ch {
        '\u{061C}'
        | '\u{200E}'
        | '\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2066}'..='\u{2069}' => Some("a bidirectional control"),
        '\u{2028}' | '\u{2029}' => Some("a line or paragraph separator"),
        '\u{00AD}'
        | '\u{034F}'
        | '\u{115F}'
        | '\u{1160}'
        | '\u{17B4}'
        | '\u{17B5}'
        | '\u{180B}'..='\u{180F}'
        | '\u{200B}'..='\u{200D}'
        | '\u{2060}'..='\u{2065}'
        | '\u{206A}'..='\u{206F}'
        | '\u{3164}'
        | '\u{FEFF}'
        | '\u{FFA0}'
        | '\u{FFF9}'..='\u{FFFB}'
        | '\u{E0000}'..='\u{E007F}' => Some("a zero-width or invisible character"),
        _ => None,
    }
}

/// The plan's summary sentence, e.g. `3 to create, 1 to update`, followed by what the data
/// part sends, e.g. `120 profile(s) to set, 40 member(s) to add`.
pub(crate) fn summary_sentence(plan: &crate::plan::Plan) -> String {
    let summary = plan.summary();
    let mut parts: Vec<String> = Action::ALL
        .iter()
        .filter(|action| summary.count(**action) > 0)
        .map(|action| format!("{} to {}", summary.count(*action), action.as_str()))
        .collect();
    if let Some(data) = &plan.data {
        parts.extend(data_parts(data));
    }
    parts.join(", ")
}

/// The data part's counts that make apply send something.
fn data_parts(data: &crate::data::DataPlan) -> Vec<String> {
    let sum = |f: &dyn Fn(&crate::data::ProfileSyncPlan) -> u64| -> u64 {
        saturating_total(data.profiles.iter().map(f))
    };
    let set = sum(&|p| p.counts.new.saturating_add(p.counts.changed));
    let unset = sum(&|p| p.counts.unset);
    let add = saturating_total(data.memberships.iter().map(|m| m.counts.add));
    let remove = saturating_total(data.memberships.iter().map(|m| m.counts.remove));
    [
        (set, "profile(s) to set properties on"),
        (unset, "profile(s) to unset properties on"),
        (add, "list member(s) to add"),
        (remove, "list member(s) to remove"),
    ]
    .into_iter()
    .filter(|(count, _)| *count > 0)
    .map(|(count, what)| format!("{count} {what}"))
    .collect()
}

/// Why `apply` will refuse the plan.
pub(crate) fn prevented_sentence(prevented: usize) -> String {
    if prevented == 1 {
        "1 change is prevented; `klsync apply` will refuse this plan.".to_owned()
    } else {
        format!("{prevented} changes are prevented; `klsync apply` will refuse this plan.")
    }
}

/// The scopes sentence, e.g. `API key scopes needed: lists:read, lists:write`; `None` when the
/// plan names none (an old saved plan).
pub(crate) fn scopes_sentence(plan: &crate::plan::Plan) -> Option<String> {
    (!plan.scopes.is_empty()).then(|| format!("API key scopes needed: {}", plan.scopes.join(", ")))
}

/// The cost sentence, e.g. `Requests: 5 (create_list 2, tag_lists 3); at Klaviyo's limits this
/// takes about 4s`: the configuration's requests and the data part's together, and the one
/// estimate of how long `apply` takes for both.
pub(crate) fn cost_sentence(plan: &crate::plan::Plan) -> String {
    let mut requests = plan.cost.requests.clone();
    if let Some(data) = &plan.data {
        for (operation, count) in &data.requests {
            let total = requests.entry(operation.clone()).or_default();
            *total = total.saturating_add(*count);
        }
    }
    let per_operation: Vec<String> = requests
        .iter()
        .map(|(operation, count)| format!("{operation} {count}"))
        .collect();
    let duration = match plan.cost.estimated_seconds {
        0 => "under a second".to_owned(),
        seconds => format!(
            "about {}",
            crate::duration::format_estimate(std::time::Duration::from_secs(seconds))
        ),
    };
    if per_operation.is_empty() {
        "Requests: 0 (klsync's records only)".to_owned()
    } else {
        format!(
            "Requests: {} ({}); at Klaviyo's limits this takes {duration}",
            plan.total_requests(),
            per_operation.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_counts_data_to_send() {
        let mut plan: crate::plan::Plan = serde_json::from_value(serde_json::json!({
            "format_version": 1,
            "meta": {"created_at": "t", "manifest_digest": "d", "klsync_version": "0"},
            "changes": [], "cost": {"requests": {}, "total_requests": 0, "estimated_seconds": 0},
            "warnings": []
        }))
        .expect("plan");
        assert_eq!(summary_sentence(&plan), "");
        let counts = |add: u64, remove: u64| crate::data::MembershipCounts {
            add,
            remove,
            ..Default::default()
        };
        let list = |key: &str, counts| crate::data::MembershipPlan {
            list: key.into(),
            list_id: None,
            query: "q".into(),
            identify_by: crate::manifest::types::IdentifyBy::Email,
            mode: crate::manifest::types::MembershipMode::Mirror,
            rows: 0,
            counts,
            add_sample: vec![],
            remove_sample: vec![],
            rejected_sample: vec![],
            pending_removal_sample: vec![],
            max_removals: None,
            exceeds_max_removals: false,
            requests: Default::default(),
            estimated_seconds: 0,
            check: None,
            resync: false,
        };
        plan = plan.with_data(crate::data::DataPlan {
            profiles: vec![],
            memberships: vec![list("a", counts(3, 0)), list("b", counts(2, 1))],
            requests: Default::default(),
            estimated_seconds: 0,
            targeted: false,
        });
        assert_eq!(
            summary_sentence(&plan),
            "5 list member(s) to add, 1 list member(s) to remove"
        );
        assert!(!plan.is_empty());
    }

    #[test]
    fn sanitize_neutralises_terminal_escapes() {
        assert_eq!(sanitize("a\u{1b}[31mb"), "a\\u{1b}[31mb");
        assert_eq!(sanitize("line\nnext"), "line\nnext");
    }

    /// Issue 11 finding 8: a right-to-left override made `VIP\u{202E}tsil` read as `VIPlist`
    /// reversed in a plan under review.
    #[test]
    fn sanitize_shows_invisible_and_bidirectional_characters() {
        assert_eq!(sanitize("VIP\u{202E}tsil"), "VIP\\u{202e}tsil");
        assert_eq!(
            sanitize("a\u{200B}b\u{2066}c\u{2069}\u{FEFF}"),
            "a\\u{200b}b\\u{2066}c\\u{2069}\\u{feff}"
        );
        // Right-to-left letters themselves are text, not controls.
        assert_eq!(sanitize("עברית ελληνικά"), "עברית ελληνικά");
    }
}
