//! Text and markdown renderings of a [`DataPlan`].

use std::fmt::Write;

use super::{
    DataApplyReport, DataCheck, DataPlan, Drift, FailedRow, FieldChange, MembershipCheck,
    ProfileCheck, RejectedRow, SAMPLE_SIZE,
};
use crate::plan::saturating_total;

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
    render_text_sampled(plan, SAMPLE_SIZE, true)
}

/// The data plan for a terminal, showing at most `sample` rows of each sample, each with its
/// property changes (`fields`) or on one line.
pub fn render_text_sampled(plan: &DataPlan, sample: usize, fields: bool) -> String {
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
        for row in sync.diff_sample.iter().take(sample) {
            let symbol = match row.action.as_str() {
                "new" => '+',
                "unset" => '-',
                _ => '~',
            };
            if !fields {
                let _ = writeln!(
                    out,
                    "  {symbol} {} ({}: {} propert{})",
                    row.identifier,
                    row.action,
                    row.changes.len(),
                    if row.changes.len() == 1 { "y" } else { "ies" }
                );
                continue;
            }
            let _ = writeln!(out, "  {symbol} {} ({})", row.identifier, row.action);
            for change in &row.changes {
                let _ = writeln!(out, "      {}", change_line(change));
            }
        }
        rejected_lines(&mut out, &sync.rejected_sample, sample);
        for drift in &sync.drift {
            let _ = writeln!(out, "  {}", drift_line(drift));
        }
        if let Some(check) = &sync.check {
            let drifted = check.drifted_profiles();
            let _ = writeln!(
                out,
                "  full check: {} recorded profile(s) read back, {drifted} changed in Klaviyo{}",
                check.checked,
                if drifted > 0 {
                    ": planned as changed, so apply restores those the query still returns"
                } else {
                    ""
                }
            );
            sampled_lines(&mut out, &check.drift, drift_line);
        }
    }
    for list in &plan.memberships {
        let c = &list.counts;
        let _ = writeln!(
            out,
            "lists.{}.members ({} rows): +{} add, -{} remove, {} unchanged, {} rejected",
            list.list, list.rows, c.add, c.remove, c.unchanged, c.rejected
        );
        count_note(
            &mut out,
            c.unconfirmed,
            "of the adds were sent by an earlier apply that did not learn the outcome: apply checks the list and records those already there as added by klsync",
        );
        if count_note(
            &mut out,
            c.pending_removals,
            "of the removals could not be resolved last time: planned again",
        ) {
            failed_lines(&mut out, '?', &list.pending_removal_sample);
        }
        if list.exceeds_max_removals {
            let _ = writeln!(
                out,
                "  ! {} removals exceed max_removals ({}): apply refuses without --force",
                c.remove,
                list.max_removals.unwrap_or(0)
            );
        }
        if let Some(check) = &list.check {
            let _ = writeln!(out, "  full check: {}", member_check_line(check));
            sampled_lines(&mut out, &check.missing, |identifier| {
                format!("missing {identifier}")
            });
        }
        for identifier in list.add_sample.iter().take(sample) {
            let _ = writeln!(out, "  + {identifier}");
        }
        for identifier in list.remove_sample.iter().take(sample) {
            let _ = writeln!(out, "  - {identifier}");
        }
        rejected_lines(&mut out, &list.rejected_sample, sample);
    }
    let total = saturating_total(plan.requests.values().copied());
    // Their time is in the plan's one estimate, with the configuration's.
    let _ = writeln!(out, "data: {total} request(s)");
    if fields {
        for (operation, count) in &plan.requests {
            let _ = writeln!(out, "  {operation}: {count}");
        }
    }
    out
}

/// `  {count} {what}` when `count` is not zero; whether it was written.
fn count_note(out: &mut String, count: u64, what: &str) -> bool {
    if count > 0 {
        let _ = writeln!(out, "  {count} {what}");
    }
    count > 0
}

/// The first `sample` rejected rows, one `  ! row N identifier: reason` line each.
fn rejected_lines(out: &mut String, rows: &[RejectedRow], sample: usize) {
    for row in rows.iter().take(sample) {
        let _ = writeln!(
            out,
            "  ! row {} {}: {}",
            row.row, row.identifier, row.reason
        );
    }
}

/// One `  {mark} identifier: reason` line per row: `!` failed, `?` unresolved.
fn failed_lines(out: &mut String, mark: char, rows: &[FailedRow]) {
    for row in rows {
        let _ = writeln!(out, "  {mark} {}: {}", row.identifier, row.reason);
    }
}

fn drift_line(drift: &Drift) -> String {
    format!(
        "drift {} {}: applied {} but Klaviyo has {}",
        drift.identifier,
        drift.property,
        value(&drift.applied),
        value(&drift.live)
    )
}

/// Nothing for no `items`; else a header made from their count, then [`sampled_lines`].
fn sampled_section<T>(
    out: &mut String,
    items: &[T],
    header: impl FnOnce(usize) -> String,
    line: impl Fn(&T) -> String,
) {
    if items.is_empty() {
        return;
    }
    let _ = writeln!(out, "{}", header(items.len()));
    sampled_lines(out, items, line);
}

/// The first [`SAMPLE_SIZE`] of `items`, one indented line each, then how many more there are.
fn sampled_lines<T>(out: &mut String, items: &[T], line: impl Fn(&T) -> String) {
    for item in items.iter().take(SAMPLE_SIZE) {
        let _ = writeln!(out, "  {}", line(item));
    }
    if items.len() > SAMPLE_SIZE {
        let _ = writeln!(out, "  ... and {} more", items.len() - SAMPLE_SIZE);
    }
}

fn member_check_line(check: &MembershipCheck) -> String {
    if check.list_deleted {
        return "the list no longer exists in Klaviyo".to_string();
    }
    format!(
        "{} recorded member(s) looked up, {} no longer on the list{}",
        check.checked,
        check.missing.len(),
        if check.missing.is_empty() {
            ""
        } else {
            ": added again if the query returns them, else forgotten"
        }
    )
}

/// What the full check found, for `klsync drift --data`: each sync with differences, a sample
/// of them.
pub fn render_check(check: &DataCheck) -> String {
    let mut out = String::new();
    for sync in check.profiles.iter().filter(|p| !p.drift.is_empty()) {
        let _ = writeln!(
            out,
            "~ profiles.{}: {} of {} recorded profile(s) changed in Klaviyo",
            sync.id,
            sync.drifted_profiles(),
            sync.checked
        );
        sampled_lines(&mut out, &sync.drift, |drift| {
            format!(
                "  {} {}: {} → {}",
                drift.identifier,
                drift.property,
                value(&drift.applied),
                value(&drift.live)
            )
        });
    }
    for list in &check.memberships {
        if list.list_deleted {
            let _ = writeln!(
                out,
                "- lists.{}.members: the list no longer exists in Klaviyo",
                list.list
            );
        } else {
            sampled_section(
                &mut out,
                &list.missing,
                |count| {
                    format!(
                        "- lists.{}.members: {count} of {} recorded member(s) no longer on the list",
                        list.list, list.checked
                    )
                },
                |identifier| format!("  {identifier}"),
            );
        }
        sampled_section(
            &mut out,
            &list.back_on_list,
            |count| {
                format!(
                    "+ lists.{}.members: {count} member(s) klsync removed are on the list again",
                    list.list
                )
            },
            |identifier| format!("  {identifier}"),
        );
        sampled_section(
            &mut out,
            &list.pending_removals,
            |count| {
                format!(
                    "? lists.{}.members: {count} removal(s) klsync could not make (kept, tried again by every apply)",
                    list.list
                )
            },
            |row| format!("  {}: {}", row.identifier, row.reason),
        );
    }
    out
}

/// The full check in a phrase: what differs, of how much was read back.
pub fn check_summary(check: &DataCheck) -> String {
    let profiles = saturating_total(check.profiles.iter().map(|p| p.checked));
    let members = saturating_total(check.memberships.iter().map(|m| m.checked));
    if !check.has_drift() {
        return format!("{profiles} profile(s) and {members} list member(s) read back");
    }
    let drifted: usize = check
        .profiles
        .iter()
        .map(ProfileCheck::drifted_profiles)
        .sum();
    let missing: usize = check.memberships.iter().map(|m| m.missing.len()).sum();
    let deleted = check.memberships.iter().filter(|m| m.list_deleted).count();
    let back: usize = check.memberships.iter().map(|m| m.back_on_list.len()).sum();
    let pending: usize = check
        .memberships
        .iter()
        .map(|m| m.pending_removals.len())
        .sum();
    // `drift --members` alone checks no profiles: nothing to say about them.
    let mut summary = if check.profiles.is_empty() {
        String::new()
    } else {
        format!("{drifted} of {profiles} profile(s) changed, ")
    };
    summary.push_str(&format!("{missing} of {members} list member(s) missing"));
    for (count, what) in [
        (back, "removed member(s) on the list again"),
        (pending, "removal(s) pending"),
        (deleted, "list(s) deleted"),
    ] {
        if count > 0 {
            summary.push_str(&format!(", {count} {what}"));
        }
    }
    summary
}

/// What an apply did, for a terminal.
pub fn render_report(report: &DataApplyReport) -> String {
    let mut out = String::new();
    for sync in &report.profiles {
        let _ = writeln!(
            out,
            "profiles.{}: {} sent in {} job(s), {} unset, {} recorded, {} failed",
            sync.id,
            sync.sent,
            sync.jobs.len(),
            sync.unset,
            sync.recorded,
            sync.failed
        );
        failed_lines(&mut out, '!', &sync.failed_sample);
    }
    for skipped in &report.skipped {
        let _ = writeln!(out, "{skipped}");
    }
    for list in &report.memberships {
        let _ = writeln!(
            out,
            "lists.{}.members: +{} added, -{} removed, {} failed",
            list.list, list.added, list.removed, list.failed
        );
        count_note(
            &mut out,
            list.confirmed,
            "member(s) sent by an earlier apply found on the list: recorded as added by klsync",
        );
        count_note(
            &mut out,
            list.already_members,
            "already member(s) (joined another way): recorded, never removed by mirror",
        );
        failed_lines(&mut out, '!', &list.failed_sample);
        if count_note(
            &mut out,
            list.removal_pending,
            "removal(s) could not be resolved: kept in klsync's record, tried again by the next apply",
        ) {
            failed_lines(&mut out, '?', &list.removal_pending_sample);
        }
    }
    if report.profiles.iter().any(|p| p.failed > 0)
        || report.memberships.iter().any(|m| m.failed > 0)
    {
        out.push_str("failed rows were not recorded: the next apply sends them again\n");
    }
    for drift in &report.drift {
        let _ = writeln!(out, "data changed since the plan: {drift}");
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::data::{
        MembershipCounts, MembershipPlan, ProfileCounts, ProfileSyncPlan, RejectedRow, RowChange,
    };
    use crate::manifest::types::{IdentifyBy, MembershipMode, OnMissingRow};

    #[test]
    fn row_lines_and_count_notes() {
        let mut out = String::new();
        assert!(!count_note(&mut out, 0, "never shown"));
        assert!(count_note(&mut out, 2, "shown"));
        let failed = [FailedRow {
            identifier: "a@x.com".into(),
            reason: "refused".into(),
        }];
        failed_lines(&mut out, '?', &failed);
        let rejected = [1, 2].map(|row| RejectedRow {
            row,
            identifier: format!("\"{row}\""),
            reason: "bad".into(),
        });
        rejected_lines(&mut out, &rejected, 1);
        assert_eq!(
            out,
            "  2 shown\n  ? a@x.com: refused\n  ! row 1 \"1\": bad\n"
        );
    }

    fn plan() -> DataPlan {
        DataPlan {
            profiles: vec![ProfileSyncPlan {
                id: "customers".into(),
                query: "q".into(),
                identify_by: IdentifyBy::Email,
                on_missing_row: OnMissingRow::Keep,
                rows: 5,
                counts: ProfileCounts {
                    new: 1,
                    changed: 1,
                    unchanged: 2,
                    rejected: 1,
                    ..ProfileCounts::default()
                },
                rejected_sample: vec![RejectedRow {
                    row: 4,
                    identifier: "\"nope\"".into(),
                    reason: "invalid email address".into(),
                }],
                diff_sample: vec![RowChange {
                    identifier: "a@x.com".into(),
                    action: "changed".into(),
                    changes: vec![FieldChange {
                        property: "ltv".into(),
                        before: Some(json!(1)),
                        after: Some(json!(2)),
                    }],
                }],
                requests: BTreeMap::new(),
                estimated_seconds: 1,
                drift: Vec::new(),
                check: None,
                resync: false,
            }],
            memberships: vec![MembershipPlan {
                list: "vip".into(),
                list_id: Some("L1".into()),
                query: "v".into(),
                identify_by: IdentifyBy::Email,
                mode: MembershipMode::Mirror,
                rows: 3,
                counts: MembershipCounts {
                    add: 1,
                    remove: 3,
                    ..MembershipCounts::default()
                },
                add_sample: vec!["n@x.com".into()],
                remove_sample: vec!["o@x.com".into()],
                rejected_sample: Vec::new(),
                pending_removal_sample: Vec::new(),
                max_removals: Some(2),
                exceeds_max_removals: true,
                requests: BTreeMap::new(),
                estimated_seconds: 1,
                check: None,
                resync: false,
            }],
            requests: BTreeMap::from([("bulk_import_profiles".to_string(), 2)]),
            estimated_seconds: 1,
            targeted: false,
        }
    }

    #[test]
    fn text_shows_counts_diffs_rejections_and_the_removal_guard() {
        let text = render_text(&plan());
        for expected in [
            "profiles.customers (5 rows): 1 new, 1 changed, 0 unset, 2 unchanged, 1 rejected",
            "ltv: 1 -> 2",
            "row 4 \"nope\": invalid email address",
            "lists.vip.members (3 rows): +1 add, -3 remove",
            "3 removals exceed max_removals (2)",
            "bulk_import_profiles: 2",
        ] {
            assert!(text.contains(expected), "{expected:?} missing in\n{text}");
        }
    }

    #[test]
    fn removals_klsync_could_not_make_are_shown_with_their_reason_everywhere() {
        use crate::data::{FailedRow, MembershipCheck, MembershipReport};
        let pending = FailedRow {
            identifier: "c@x.com".into(),
            reason: "no profile has this email".into(),
        };
        let mut planned = plan();
        planned.memberships[0].counts.pending_removals = 1;
        planned.memberships[0].pending_removal_sample = vec![pending.clone()];
        let text = render_text(&planned);
        for expected in [
            "  1 of the removals could not be resolved last time: planned again\n",
            "  ? c@x.com: no profile has this email\n",
        ] {
            assert!(text.contains(expected), "{expected:?} missing in\n{text}");
        }
        let report = DataApplyReport {
            memberships: vec![MembershipReport {
                list: "vip".into(),
                removed: 2,
                removal_pending: 1,
                removal_pending_sample: vec![pending.clone()],
                ..MembershipReport::default()
            }],
            ..DataApplyReport::default()
        };
        assert!(report.has_failures(), "the apply is partial");
        let text = render_report(&report);
        assert!(text.contains("-2 removed, 0 failed"), "{text}");
        assert!(
            text.contains("1 removal(s) could not be resolved"),
            "{text}"
        );
        assert!(
            text.contains("? c@x.com: no profile has this email"),
            "{text}"
        );
        assert!(!text.contains("failed rows were not recorded"), "{text}");
        let check = DataCheck {
            profiles: Vec::new(),
            memberships: vec![MembershipCheck {
                list: "vip".into(),
                checked: 4,
                missing: vec!["a@x.com".into()],
                list_deleted: false,
                back_on_list: vec!["b@x.com".into()],
                pending_removals: vec![pending],
            }],
        };
        assert!(check.has_drift());
        assert_eq!(
            check_summary(&check),
            "1 of 4 list member(s) missing, 1 removed member(s) on the list again, 1 removal(s) pending"
        );
        let text = render_check(&check);
        for expected in [
            "+ lists.vip.members: 1 member(s) klsync removed are on the list again\n    b@x.com\n",
            "? lists.vip.members: 1 removal(s) klsync could not make",
            "    c@x.com: no profile has this email\n",
        ] {
            assert!(text.contains(expected), "{expected:?} missing in\n{text}");
        }
    }
}
