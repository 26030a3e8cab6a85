//! The checks a plan must pass before `apply` sends anything. Pure: the caller passes the
//! clock, the project's digest and the freshly made plan.
//!
//! A saved plan is applied exactly as `klsync plan --out` wrote it. Its id ([`plan_id`]) is a
//! digest of the file's bytes, registered in the state database when the file is written;
//! `apply FILE` refuses a file whose id was never registered there (edited by hand, cut short,
//! or made against another state). The digest is of the bytes rather than of the parsed plan so
//! that nothing a parser forgives (reformatting, a field it ignores, a number it rounds) can
//! pass for the reviewed file. Beside that check, and whatever the registry says, a plan that
//! names an address twice is refused, and so is one dated in the future beyond
//! [`MAX_CLOCK_SKEW`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest as _, Sha256};

use super::{ApplyError, human_duration};
use crate::plan::{
    Action, Change, DATA_FORMAT_VERSION, FORMAT_VERSION, OLDEST_FORMAT_VERSION, Plan,
};

/// The largest saved plan read. `klsync plan --out` writes configuration changes and at most
/// a sample of each data sync's rows, so real plans are far smaller; a larger file is not a
/// plan, and is refused before it is read whole into memory.
pub const MAX_PLAN_BYTES: u64 = 64 * 1024 * 1024;

/// Parse a saved plan's bytes, checking its format version before anything else so that a plan
/// from a newer klsync, or from an older one whose format this klsync no longer applies, is
/// refused with that reason rather than a parse error. Every change's payload must be what its
/// action and kind need ([`Change::payload_problem`]): apply sends nothing else.
pub fn parse_saved_plan(path: &str, bytes: &[u8]) -> Result<Plan, ApplyError> {
    let unreadable = |reason: String| ApplyError::UnreadablePlan {
        path: path.to_owned(),
        reason,
    };
    if bytes.len() as u64 > MAX_PLAN_BYTES {
        return Err(unreadable(format!(
            "the file is larger than {} MB, too large for a plan; save the plan again with `klsync plan --out`",
            MAX_PLAN_BYTES / (1024 * 1024)
        )));
    }
    let text = std::str::from_utf8(bytes).map_err(|err| {
        let line = bytes[..err.valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1;
        unreadable(format!(
            "not UTF-8 text (first bad byte on line {line}): not a plan written by `klsync plan --out`"
        ))
    })?;
    let value: serde_json::Value = serde_json::from_str(text).map_err(|err| {
        unreadable(if err.is_eof() {
            format!(
                "the file ends early, at line {} column {}: it was cut short; save the plan again with `klsync plan --out`",
                err.line(),
                err.column()
            )
        } else {
            err.to_string()
        })
    })?;
    let version = value
        .get("format_version")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| unreadable("no format_version".to_owned()))?;
    if version < u64::from(OLDEST_FORMAT_VERSION) {
        return Err(ApplyError::OldFormatVersion {
            path: path.to_owned(),
            found: version,
            oldest: OLDEST_FORMAT_VERSION,
            klsync_version: env!("CARGO_PKG_VERSION"),
        });
    }
    if version != u64::from(FORMAT_VERSION) && version != u64::from(DATA_FORMAT_VERSION) {
        return Err(ApplyError::FormatVersion {
            found: version,
            supported: DATA_FORMAT_VERSION,
        });
    }
    let plan: Plan = serde_json::from_value(value).map_err(|err| unreadable(err.to_string()))?;
    let addresses = repeated_addresses(&plan);
    if !addresses.is_empty() {
        return Err(ApplyError::DuplicateAddresses {
            path: path.to_owned(),
            addresses,
        });
    }
    if let Some(problem) = plan.changes.iter().find_map(Change::payload_problem) {
        return Err(unreadable(problem));
    }
    Ok(plan)
}

/// Addresses the plan names more than once, each once: changes by address, data syncs as
/// `profiles.ID` and `list.KEY.members`. `klsync plan` never writes such a plan.
fn repeated_addresses(plan: &Plan) -> Vec<String> {
    let changes = plan.changes.iter().map(|change| change.address.clone());
    let data = plan.data.iter().flat_map(|data| {
        let profiles = data
            .profiles
            .iter()
            .map(|sync| format!("profiles.{}", sync.id));
        let members = data
            .memberships
            .iter()
            .map(|sync| format!("list.{}.members", sync.list));
        profiles.chain(members)
    });
    let mut seen = BTreeSet::new();
    let mut repeated = BTreeSet::new();
    for address in changes.chain(data) {
        if !seen.insert(address.clone()) {
            repeated.insert(address);
        }
    }
    repeated.into_iter().collect()
}

/// A saved plan's identity: a digest of the file's exact text, as `klsync plan --out` wrote it
/// and registered it. Any edit gives another id (and an unregistered one), and so does a new
/// plan made a moment later (its `created_at` differs), so "already applied" cannot be dodged
/// by touching the file and two plans never share an id.
pub fn plan_id(text: impl AsRef<[u8]>) -> String {
    let digest = Sha256::digest(text.as_ref());
    hex::encode(&digest[..16])
}

/// Refuse a plan made from other manifests.
pub fn check_digest(plan: &Plan, current: &str) -> Result<(), ApplyError> {
    if plan.meta.manifest_digest == current {
        Ok(())
    } else {
        Err(ApplyError::OtherManifests {
            planned: short(&plan.meta.manifest_digest),
            current: short(current),
        })
    }
}

fn short(digest: &str) -> String {
    digest.chars().take(12).collect()
}

/// How far ahead of this machine's clock a plan may be dated: the clocks of the machine that
/// planned and of this one may differ a little (NTP keeps them within seconds); more than this
/// is a plan dated by hand.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// Refuse a plan older than `max_age` at `now`, or dated more than [`MAX_CLOCK_SKEW`] after
/// `now`. A plan from the near future (clock skew) counts as new.
pub fn check_age(plan: &Plan, now: DateTime<Utc>, max_age: Duration) -> Result<(), ApplyError> {
    let created = DateTime::parse_from_rfc3339(&plan.meta.created_at)
        .map_err(|_| ApplyError::BadTimestamp(plan.meta.created_at.clone()))?
        .with_timezone(&Utc);
    if let Ok(ahead) = (created - now).to_std()
        && ahead > MAX_CLOCK_SKEW
    {
        return Err(ApplyError::FromTheFuture {
            created_at: plan.meta.created_at.clone(),
            ahead: human_duration(ahead),
            allowed: human_duration(MAX_CLOCK_SKEW),
        });
    }
    let age = (now - created).to_std().unwrap_or(Duration::ZERO);
    if age > max_age {
        return Err(ApplyError::TooOld {
            age: human_duration(age),
            max_age: human_duration(max_age),
        });
    }
    Ok(())
}

/// Addresses whose change differs between the saved plan and one made now from the same
/// manifests: something changed in Klaviyo (or in klsync's state) since the plan was made.
pub fn stale_addresses(saved: &[Change], fresh: &[Change]) -> Vec<String> {
    let saved: BTreeMap<&str, &Change> = saved.iter().map(|c| (c.address.as_str(), c)).collect();
    let fresh: BTreeMap<&str, &Change> = fresh.iter().map(|c| (c.address.as_str(), c)).collect();
    let mut addresses: Vec<String> = saved
        .keys()
        .chain(fresh.keys())
        .filter(|address| saved.get(*address) != fresh.get(*address))
        .map(|address| (*address).to_owned())
        .collect();
    addresses.sort();
    addresses.dedup();
    addresses
}

/// Addresses of `fresh` changes that are not what is left of the `saved` plan, when a saved
/// plan whose apply stopped part way is applied again.
///
/// What is left may differ from the saved plan only where the first attempt made progress: a
/// create that landed without being recorded is now an adoption, and changes that waited for a
/// new resource's id now carry it. A change to a resource that existed when the plan was made
/// must be exactly as reviewed, and nothing may be new.
pub fn remainder_mismatches(saved: &[Change], fresh: &[Change]) -> Vec<String> {
    let saved: BTreeMap<&str, &Change> = saved.iter().map(|c| (c.address.as_str(), c)).collect();
    fresh
        .iter()
        .filter(|change| {
            let Some(planned) = saved.get(change.address.as_str()) else {
                return true;
            };
            let same_action = planned.action == change.action
                || (planned.action == Action::Create && change.action == Action::Adopt);
            let existed = planned.klaviyo_id.is_some() && planned.link.is_none();
            !same_action || (existed && *planned != *change)
        })
        .map(|change| change.address.clone())
        .collect()
}

/// The destroy rules: prevented changes are refused outright; destroys and replaces need
/// `allow_destroy`.
pub fn check_destroys(plan: &Plan, allow_destroy: bool) -> Result<(), ApplyError> {
    let reasons: Vec<String> = plan
        .prevented()
        .map(|change| {
            format!(
                "{} ({}): {}",
                change.address,
                change.name,
                change
                    .note
                    .as_deref()
                    .unwrap_or("prevent_destroy forbids it")
            )
        })
        .collect();
    if !reasons.is_empty() {
        return Err(ApplyError::Prevented { reasons });
    }
    if plan.has_destroys() && !allow_destroy {
        let addresses = plan
            .changes
            .iter()
            .filter(|change| matches!(change.action, Action::Destroy | Action::Replace))
            .map(|change| format!("{} ({})", change.address, change.name))
            .collect();
        return Err(ApplyError::DestroyNotAllowed { addresses });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{ChangeKind, Cost, NewResource, Payload, PlanMeta, ResourceEdit};

    /// A list change with the payload its action needs.
    fn change(address: &str, action: Action) -> Change {
        let payload = match action {
            Action::Create | Action::Replace => Some(Payload::Create(NewResource::List {
                name: "N".into(),
                opt_in_process: None,
            })),
            Action::Update | Action::Adopt => Some(Payload::Update(ResourceEdit::List {
                name: Some("N".into()),
                opt_in_process: None,
            })),
            Action::Destroy | Action::Attach | Action::Detach => None,
        };
        Change {
            name: "N".into(),
            payload,
            ..Change::example(address, ChangeKind::List, action)
        }
    }

    fn plan(changes: Vec<Change>) -> Plan {
        Plan {
            format_version: FORMAT_VERSION,
            meta: PlanMeta {
                created_at: "2026-01-01T00:00:00Z".into(),
                manifest_digest: "abc".into(),
                klsync_version: "0".into(),
            },
            changes,
            cost: Cost::default(),
            warnings: Vec::new(),
            data: None,
            scopes: Vec::new(),
            targets: Vec::new(),
        }
    }

    #[test]
    fn a_future_format_version_is_named() {
        let err = parse_saved_plan("p.json", br#"{"format_version": 99}"#).unwrap_err();
        assert!(
            matches!(err, ApplyError::FormatVersion { found: 99, .. }),
            "{err}"
        );
        let err = parse_saved_plan("p.json", b"not json").unwrap_err();
        assert!(matches!(err, ApplyError::UnreadablePlan { .. }), "{err}");
        let text = crate::render::json(&plan(Vec::new()));
        assert_eq!(
            parse_saved_plan("p.json", text.as_bytes()).unwrap(),
            plan(Vec::new())
        );
    }

    #[test]
    fn an_older_format_version_is_refused_with_what_to_do() {
        for old in [1, 2] {
            let text = format!(r#"{{"format_version": {old}, "changes": []}}"#);
            let err = parse_saved_plan("old.json", text.as_bytes()).unwrap_err();
            assert!(
                matches!(err, ApplyError::OldFormatVersion { found, .. } if found == old),
                "{err}"
            );
            let message = err.to_string();
            for part in [
                "old.json: ".to_owned(),
                format!("format version {old}"),
                format!("this klsync ({})", env!("CARGO_PKG_VERSION")),
                format!("format version {FORMAT_VERSION} or later"),
                "run `klsync plan --out` again".to_owned(),
            ] {
                assert!(
                    message.to_lowercase().contains(&part.to_lowercase()),
                    "{part}: {message}"
                );
            }
        }
    }

    #[test]
    fn a_saved_plan_round_trips_with_its_payloads() {
        let mut segment = change("segment.big", Action::Update);
        segment.kind = ChangeKind::Segment;
        segment.payload = Some(Payload::Update(ResourceEdit::Segment {
            name: None,
            definition: Some(serde_json::json!({"condition_groups": []})),
            is_starred: Some(true),
        }));
        let saved = plan(vec![
            change("list.a", Action::Create),
            change("list.b", Action::Adopt),
            segment,
            change("list.c", Action::Destroy),
        ]);
        let text = crate::render::json(&saved);
        assert!(text.contains(r#""kind": "segment""#), "{text}");
        assert_eq!(parse_saved_plan("p.json", text.as_bytes()).unwrap(), saved);
    }

    #[test]
    fn a_payload_that_does_not_fit_its_change_is_refused_at_load() {
        let mut wrong = change("list.a", Action::Create);
        wrong.payload = Some(Payload::Create(NewResource::TagGroup {
            name: "G".into(),
            exclusive: false,
        }));
        let mut missing = change("list.b", Action::Update);
        missing.payload = None;
        for (bad, says) in [
            (wrong, "create list.a: its payload is for a tag group"),
            (missing, "update list.b: it has no payload"),
        ] {
            let text = crate::render::json(&plan(vec![bad]));
            let err = parse_saved_plan("p.json", text.as_bytes()).unwrap_err();
            assert!(matches!(err, ApplyError::UnreadablePlan { .. }), "{err}");
            assert!(err.to_string().contains(says), "{err}");
        }
        // A value its kind cannot take is a parse error naming it.
        let text = crate::render::json(&plan(vec![change("list.c", Action::Create)]))
            .replace(r#""opt_in_process": null"#, r#""opt_in_process": "maybe""#);
        let err = parse_saved_plan("p.json", text.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("maybe"), "{err}");
    }

    #[test]
    fn age_is_measured_from_created_at() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T02:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let p = plan(Vec::new());
        assert!(check_age(&p, now, Duration::from_secs(3 * 3600)).is_ok());
        let err = check_age(&p, now, Duration::from_secs(3600)).unwrap_err();
        assert_eq!(
            err.to_string().split(':').next().unwrap(),
            "the plan is too old"
        );
        assert!(err.to_string().contains("made 2h ago"), "{err}");
    }

    #[test]
    fn digest_mismatch_is_refused() {
        assert!(check_digest(&plan(Vec::new()), "abc").is_ok());
        assert!(matches!(
            check_digest(&plan(Vec::new()), "def"),
            Err(ApplyError::OtherManifests { .. })
        ));
    }

    #[test]
    fn stale_addresses_are_the_symmetric_and_changed_ones() {
        let a = change("list.a", Action::Create);
        let b = change("list.b", Action::Update);
        let mut b2 = b.clone();
        b2.expected = Some(serde_json::json!({"name": "renamed"}));
        let c = change("list.c", Action::Create);
        assert!(stale_addresses(&[a.clone(), b.clone()], &[a.clone(), b.clone()]).is_empty());
        assert_eq!(
            stale_addresses(&[a.clone(), b], &[b2, c]),
            vec!["list.a", "list.b", "list.c"]
        );
    }

    #[test]
    fn the_rest_of_a_saved_plan_is_accepted_and_anything_else_is_named() {
        let create = change("list.a", Action::Create);
        let mut update = change("list.b", Action::Update);
        update.klaviyo_id = Some("L2".into());
        let saved = [create.clone(), update.clone()];
        assert!(remainder_mismatches(&saved, &[update.clone()]).is_empty());
        let mut adopted = create.clone();
        adopted.action = Action::Adopt;
        adopted.klaviyo_id = Some("L1".into());
        assert!(remainder_mismatches(&saved, &[adopted]).is_empty());
        let mut drifted = update.clone();
        drifted.expected = Some(serde_json::json!({"name": "changed by hand"}));
        let new = change("list.c", Action::Create);
        let mut destroy = create;
        destroy.action = Action::Destroy;
        assert_eq!(
            remainder_mismatches(&saved, &[drifted, new, destroy]),
            vec!["list.b", "list.c", "list.a"]
        );
    }

    #[test]
    fn destroys_need_the_flag_and_prevented_changes_never_run() {
        let destroy = plan(vec![change("list.a", Action::Destroy)]);
        assert!(matches!(
            check_destroys(&destroy, false),
            Err(ApplyError::DestroyNotAllowed { .. })
        ));
        assert!(check_destroys(&destroy, true).is_ok());
        let mut forbidden = change("list.b", Action::Destroy);
        forbidden.prevented = true;
        let err = check_destroys(&plan(vec![forbidden]), true).unwrap_err();
        assert!(err.to_string().contains("list.b (N)"), "{err}");
    }

    #[test]
    fn plan_ids_follow_the_bytes() {
        let text = crate::render::json(&plan(Vec::new()));
        assert_eq!(plan_id(&text), plan_id(text.clone()));
        assert_eq!(plan_id(&text).len(), 32);
        // Reformatting parses to the same plan, but is not the file that was reviewed.
        assert_ne!(plan_id(&text), plan_id(text.replace('\n', "\r\n")));
        let mut later = plan(Vec::new());
        later.meta.created_at = "2026-01-01T00:00:01Z".into();
        assert_ne!(plan_id(&text), plan_id(crate::render::json(&later)));
    }

    #[test]
    fn a_plan_dated_in_the_future_is_refused_beyond_the_clock_skew() {
        let at = |text: &str| {
            DateTime::parse_from_rfc3339(text)
                .unwrap()
                .with_timezone(&Utc)
        };
        let day = Duration::from_secs(86_400);
        let p = plan(Vec::new());
        // Made at 00:00:00; this machine's clock a little behind is skew, not an edit.
        assert!(check_age(&p, at("2025-12-31T23:56:00Z"), day).is_ok());
        let err = check_age(&p, at("2025-12-31T23:50:00Z"), day).unwrap_err();
        assert!(matches!(err, ApplyError::FromTheFuture { .. }), "{err}");
        assert!(err.to_string().contains("10m ahead"), "{err}");
        let mut far = plan(Vec::new());
        far.meta.created_at = "2099-01-01T00:00:00Z".into();
        let err = check_age(&far, at("2026-01-01T00:00:00Z"), day).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("the plan is dated in the future"),
            "{err}"
        );
    }

    #[test]
    fn a_plan_naming_an_address_twice_is_refused() {
        let create = change("list.a", Action::Create);
        let text = crate::render::json(&plan(vec![
            create.clone(),
            change("list.b", Action::Create),
            create.clone(),
            create,
        ]));
        let err = parse_saved_plan("p.json", text.as_bytes()).unwrap_err();
        assert!(
            matches!(&err, ApplyError::DuplicateAddresses { addresses, .. } if addresses == &["list.a"]),
            "{err}"
        );
        assert!(err.to_string().starts_with("p.json: "), "{err}");
    }

    #[test]
    fn a_plan_naming_a_data_sync_twice_is_refused() {
        let membership = serde_json::json!({
            "list": "vip", "list_id": null, "query": "q", "identify_by": "email",
            "mode": "mirror", "rows": 1,
            "counts": {"add": 1, "remove": 0, "unchanged": 0, "rejected": 0, "duplicates": 0},
            "add_sample": [], "remove_sample": [], "rejected_sample": [],
            "max_removals": null, "exceeds_max_removals": false,
            "requests": {}, "estimated_seconds": 0
        });
        let data: crate::sync::DataPlan = serde_json::from_value(serde_json::json!({
            "profiles": [], "memberships": [membership.clone(), membership],
            "requests": {}, "estimated_seconds": 0
        }))
        .expect("data plan");
        let text = crate::render::json(&plan(Vec::new()).with_data(data));
        let err = parse_saved_plan("p.json", text.as_bytes()).unwrap_err();
        assert!(
            matches!(&err, ApplyError::DuplicateAddresses { addresses, .. } if addresses == &["list.vip.members"]),
            "{err}"
        );
    }

    #[test]
    fn a_truncated_plan_is_named_as_cut_short() {
        let text = crate::render::json(&plan(vec![change("list.a", Action::Create)]));
        for cut in [text.len() / 2, text.len() - 3, 0] {
            let err = parse_saved_plan("p.json", &text.as_bytes()[..cut]).unwrap_err();
            assert!(matches!(err, ApplyError::UnreadablePlan { .. }), "{err}");
            assert!(err.to_string().contains("cut short"), "{cut}: {err}");
        }
    }
}
