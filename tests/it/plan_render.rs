//! Snapshot tests of the three renders, the Markdown size cap and injection safety.

use crate::plan_common::*;
use klsync::model::{DesiredState, ManagedState, ResourceKind};
use klsync::plan::{Action, Plan, diff};
use klsync::render;

fn every_kind_plan() -> Plan {
    let (desired, live, managed) = every_kind();
    diff(&desired, &live, &managed, meta()).expect("plan")
}

#[test]
fn the_fixture_has_every_kind_of_change() {
    let plan = every_kind_plan();
    for action in Action::ALL {
        assert!(
            plan.changes.iter().any(|change| change.action == action),
            "no {action:?} in {:#?}",
            plan.changes
        );
    }
    assert!(plan.changes.iter().any(|change| change.prevented));
    assert!(
        plan.changes
            .iter()
            .any(|change| change.definition_diff.is_some() && change.action == Action::Update)
    );
}

#[test]
fn text_render() {
    insta::assert_snapshot!("text", render::text(&every_kind_plan(), false));
}

#[test]
fn text_render_colours_only_when_asked() {
    let plan = every_kind_plan();
    assert!(!render::text(&plan, false).contains('\x1b'));
    let coloured = render::text(&plan, true);
    assert!(coloured.contains("\x1b[32m+ create\x1b[0m"), "{coloured}");
}

#[test]
fn markdown_render() {
    insta::assert_snapshot!("markdown", render::markdown(&every_kind_plan()));
}

#[test]
fn json_render() {
    insta::assert_snapshot!("json", render::json(&every_kind_plan()));
}

#[test]
fn json_render_round_trips_and_matches_the_schema() {
    let plan = every_kind_plan();
    let rendered = render::json(&plan);
    let parsed: Plan = serde_json::from_str(&rendered).expect("parse rendered plan");
    assert_eq!(parsed, plan);
    let schema = klsync::plan::json_schema();
    let validator = jsonschema::validator_for(&schema).expect("compile plan schema");
    let instance: serde_json::Value = serde_json::from_str(&rendered).unwrap();
    assert!(validator.is_valid(&instance));
    assert_eq!(instance["format_version"], klsync::plan::FORMAT_VERSION);
}

#[test]
fn empty_plan_says_so() {
    let mut live = live();
    live_list(&mut live, "L1", "Unmanaged", None, &[]);
    let plan = diff(
        &DesiredState::default(),
        &live,
        &ManagedState::new(),
        meta(),
    )
    .unwrap();
    assert!(plan.is_empty());
    assert_eq!(
        render::text(&plan, true),
        "No changes. Klaviyo matches the manifests.\n"
    );
    assert!(render::markdown(&plan).contains("No changes."));
}

#[test]
fn markdown_stays_under_githubs_comment_limit() {
    let mut desired = DesiredState::default();
    for index in 0..5_000 {
        want_list(
            &mut desired,
            &format!("list-{index:05}"),
            &format!("Generated list number {index}"),
            None,
            &[],
        );
    }
    let plan = diff(&desired, &live(), &ManagedState::new(), meta()).unwrap();
    assert_eq!(plan.changes.len(), 5_000);
    let markdown = render::markdown(&plan);
    let length = markdown.chars().count();
    assert!(length < render::MARKDOWN_LIMIT, "{length} characters");
    assert!(
        length > render::MARKDOWN_LIMIT - 2_000,
        "cap wastes room: {length}"
    );
    let shown = markdown.matches("**`+` create**").count();
    assert!(shown > 0 && shown < 5_000);
    let note = format!(
        "…{} more changes not shown; run `klsync plan` locally",
        5_000 - shown
    );
    assert!(
        markdown.contains(&note),
        "missing note in tail: {}",
        &markdown[markdown.len() - 300..]
    );
    assert_eq!(
        markdown.matches("<details>").count(),
        markdown.matches("</details>").count()
    );
    // The create-list cost is still reported in full: 5,000 requests, over the daily cap.
    assert!(markdown.contains("Requests: 5000"));
    assert!(plan.warnings.iter().any(|w| w.contains("create_list")));
}

/// Removes inline code spans (CommonMark: a run of N backticks up to the next run of exactly N).
fn strip_code_spans(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::new();
    let mut index = 0;
    while index < chars.len() {
        if chars[index] != '`' {
            out.push(chars[index]);
            index += 1;
            continue;
        }
        let start = index;
        while index < chars.len() && chars[index] == '`' {
            index += 1;
        }
        let run = index - start;
        let mut scan = index;
        let mut closed = None;
        while scan < chars.len() {
            if chars[scan] == '`' {
                let begin = scan;
                while scan < chars.len() && chars[scan] == '`' {
                    scan += 1;
                }
                if scan - begin == run {
                    closed = Some(scan);
                    break;
                }
            } else {
                scan += 1;
            }
        }
        match closed {
            Some(end) => {
                out.push_str("CODE");
                index = end;
            }
            None => out.extend(&chars[start..index]),
        }
    }
    out
}

#[test]
fn markdown_never_lets_data_inject_html_links_or_mentions() {
    const EVIL: &str = "<img src=x onerror=alert(1)> [click](http://evil) | @here";
    let mut desired = DesiredState::default();
    want_list(&mut desired, "evil", EVIL, None, &[]);
    want_list(&mut desired, "renamed", EVIL, None, &[]);
    want_list(&mut desired, "tick`s", "``` </details> ```", None, &[]);
    let mut live = live();
    live_list(&mut live, "L-r", "Harmless", None, &[]);
    let mut managed = ManagedState::new();
    manage(&mut managed, ResourceKind::List, "renamed", "L-r", false);
    let plan = diff(&desired, &live, &managed, meta()).unwrap();
    let markdown = render::markdown(&plan);
    assert!(
        markdown.contains(EVIL.split('|').next().unwrap()),
        "{markdown}"
    );

    let mut table_columns = None;
    for line in markdown.lines() {
        let prose = strip_code_spans(line);
        for forbidden in ["<img", "](", "http://", "@here", "</details> ```"] {
            assert!(
                !prose.contains(forbidden),
                "{forbidden:?} outside code in {line:?}"
            );
        }
        if line.starts_with("| `name`") {
            // The name row of the rename: every data `|` is escaped, so 4 cell borders remain.
            let borders = prose.matches('|').count();
            table_columns = Some(borders);
        }
    }
    assert_eq!(table_columns, Some(4), "{markdown}");
    // The only HTML is klsync's own.
    let tags: Vec<&str> = markdown
        .lines()
        .map(|line| line.trim())
        .filter(|line| line.starts_with('<'))
        .collect();
    assert!(
        tags.iter()
            .all(|line| line.starts_with("<details><summary>") || *line == "</details>"),
        "{tags:?}"
    );
}

/// Issue 11, finding 8: a right-to-left override in a name was printed raw, so
/// `"Newsletter\u{202E}lanretxe"` could read as something else in a terminal or a pull request.
/// Every render but JSON (for machines) shows invisible characters as escapes.
#[test]
fn invisible_characters_in_names_are_shown_as_escapes() {
    const DISGUISED: &str = "VIP \u{202E}gnitset\u{202C} list\u{200B}";
    let mut desired = DesiredState::default();
    want_list(&mut desired, "disguised", DISGUISED, None, &[]);
    want_list(&mut desired, "renamed", DISGUISED, None, &[]);
    let mut live = live();
    live_list(&mut live, "L-r", "Old\u{2066}name\u{2069}", None, &[]);
    let mut managed = ManagedState::new();
    manage(&mut managed, ResourceKind::List, "renamed", "L-r", false);
    let plan = diff(&desired, &live, &managed, meta()).unwrap();
    let shown = r"VIP \u{202e}gnitset\u{202c} list\u{200b}";
    for (render, text) in [
        ("text", render::text(&plan, false)),
        ("markdown", render::markdown(&plan)),
    ] {
        for hidden in ['\u{202E}', '\u{202C}', '\u{200B}', '\u{2066}', '\u{2069}'] {
            assert!(
                !text.contains(hidden),
                "{render} shows U+{:04X} raw:\n{text}",
                u32::from(hidden)
            );
        }
        assert!(text.contains(shown), "{render}:\n{text}");
        assert!(
            text.contains(r"Old\u{2066}name\u{2069}"),
            "{render}:\n{text}"
        );
    }
    // The saved plan keeps the names exactly: it is what apply sends.
    assert!(render::json(&plan).contains('\u{202E}'));
}
