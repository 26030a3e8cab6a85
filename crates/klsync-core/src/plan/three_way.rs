//! The three-way comparison: whether a field Klaviyo may rewrite needs writing. Pure.
//!
//! Klaviyo may store a value in a form of its own: a segment definition read back with
//! `500.0` for the `500` klsync sent, or with a default field added to a filter. Comparing the
//! manifest with Klaviyo's value would then show a change after every apply, and every apply
//! would spend one of Klaviyo's daily segment writes for nothing. Guessing Klaviyo's canonical
//! form would break the day it changes, so klsync records, per managed resource, what it sent
//! (`applied`) and what Klaviyo returned after that write (`returned`), and compares each side
//! with its own kind:
//!
//! - the manifest with what was **sent**: a difference is a manifest change;
//! - Klaviyo's value with what it **returned**: a difference is an edit made in Klaviyo (drift,
//!   restored by the next apply).
//!
//! Anything else is in step, however differently the two spell the value.
//!
//! **Records without the pair.** Records written before klsync kept `returned` (and fields a
//! write's answer did not carry, such as a tag's name after a rename Klaviyo answers with 204)
//! have no returned value: for them the manifest is compared with Klaviyo's value directly, as
//! before. This never hides a change, and it costs at most one more write per resource Klaviyo
//! rewrites: that write records the pair, and the resource converges from then on. Nothing is
//! backfilled without a write: a record in step stays on the direct comparison, which is right
//! for it as long as Klaviyo does not rewrite its values.
//!
//! Values are compared with [`super::normalize_definition`], which only sorts object keys and
//! drops `null` members (what JSON itself does not distinguish), the same on both sides.

use serde_json::Value;

use super::normalize_definition;

/// Where a field stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to write.
    InStep,
    /// The manifest differs from what klsync last sent (or, without a recorded pair, from
    /// Klaviyo's value).
    ManifestChanged,
    /// Klaviyo's value differs from what it returned after klsync's last write: edited there.
    EditedInKlaviyo,
}

impl Verdict {
    /// Whether Klaviyo must be written.
    pub fn needs_write(self) -> bool {
        self != Verdict::InStep
    }
}

/// What klsync recorded for one field: what it sent and what Klaviyo returned.
#[derive(Debug, Clone, Copy)]
pub struct Recorded<'a> {
    /// The value klsync sent (from the record's `applied`).
    pub sent: &'a Value,
    /// The value Klaviyo returned after that write (from the record's `returned`).
    pub returned: &'a Value,
}

impl<'a> Recorded<'a> {
    /// The pair for `field` of a record, when both halves are there.
    pub fn of(applied: &'a Value, returned: Option<&'a Value>, field: &str) -> Option<Self> {
        Some(Recorded {
            sent: applied.get(field)?,
            returned: returned?.get(field)?,
        })
    }
}

/// Compares a field: `desired` (the manifest), `live` (Klaviyo now) and what was `recorded` at
/// the last write (`None`: no pair, compare `desired` with `live`).
pub fn compare(desired: &Value, live: &Value, recorded: Option<Recorded<'_>>) -> Verdict {
    let same = |a: &Value, b: &Value| normalize_definition(a) == normalize_definition(b);
    match recorded {
        None if same(desired, live) => Verdict::InStep,
        None => Verdict::ManifestChanged,
        Some(Recorded { returned, .. }) if !same(live, returned) => Verdict::EditedInKlaviyo,
        Some(Recorded { sent, .. }) if !same(desired, sent) => Verdict::ManifestChanged,
        Some(_) => Verdict::InStep,
    }
}

/// The value of `field` klsync expects to find in Klaviyo: what Klaviyo returned after the last
/// write, else (no pair) what klsync sent. Drift is Klaviyo's value differing from it.
pub fn expected_live<'a>(
    applied: &'a Value,
    returned: Option<&'a Value>,
    field: &str,
) -> Option<&'a Value> {
    match Recorded::of(applied, returned, field) {
        Some(recorded) => Some(recorded.returned),
        None => applied.get(field),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn definition(value: Value, extra: Option<(&str, Value)>) -> Value {
        let mut filter = json!({"type": "numeric", "operator": "greater-than", "value": value});
        if let Some((key, v)) = extra {
            filter[key] = v;
        }
        json!({"condition_groups": [{"conditions": [
            {"type": "profile-property", "property": "properties['ltv']", "filter": filter}
        ]}]})
    }

    #[test]
    fn a_canonicalised_read_back_is_in_step() {
        let sent = definition(json!(500), None);
        let returned = definition(json!(500.0), Some(("negate", json!(false))));
        let recorded = Recorded {
            sent: &sent,
            returned: &returned,
        };
        assert_eq!(
            compare(&sent, &returned, Some(recorded)),
            Verdict::InStep,
            "Klaviyo's own spelling of what was sent is no change"
        );
        // Without the pair, the direct comparison sees the rewrite as a change (once).
        assert_eq!(compare(&sent, &returned, None), Verdict::ManifestChanged);
    }

    #[test]
    fn a_manifest_change_is_planned() {
        let sent = definition(json!(500), None);
        let returned = definition(json!(500.0), Some(("negate", json!(false))));
        let wanted = definition(json!(600), None);
        let recorded = Recorded {
            sent: &sent,
            returned: &returned,
        };
        let verdict = compare(&wanted, &returned, Some(recorded));
        assert_eq!(verdict, Verdict::ManifestChanged);
        assert!(verdict.needs_write());
    }

    #[test]
    fn a_hand_edit_in_klaviyo_is_planned_even_when_the_manifest_did_not_change() {
        let sent = definition(json!(500), None);
        let returned = definition(json!(500.0), Some(("negate", json!(false))));
        let edited = definition(json!(50.0), Some(("negate", json!(false))));
        let recorded = Recorded {
            sent: &sent,
            returned: &returned,
        };
        assert_eq!(
            compare(&sent, &edited, Some(recorded)),
            Verdict::EditedInKlaviyo
        );
        // Also when it was edited to exactly what klsync sent: Klaviyo's own form is
        // `returned`, so this is still an edit made there.
        assert_eq!(
            compare(&sent, &sent, Some(recorded)),
            Verdict::EditedInKlaviyo
        );
    }

    #[test]
    fn key_order_and_nulls_are_no_change_on_either_side() {
        let sent = json!({"a": 1, "b": null});
        let returned = json!({"b": 2, "a": 1});
        let live = json!({"a": 1, "b": 2, "c": null});
        let recorded = Recorded {
            sent: &sent,
            returned: &returned,
        };
        assert_eq!(
            compare(&json!({"a": 1}), &live, Some(recorded)),
            Verdict::InStep
        );
    }

    #[test]
    fn the_pair_needs_both_halves() {
        let applied = json!({"name": "VIP", "definition": {"x": 1}});
        let returned = json!({"definition": {"x": 1.0}});
        assert!(Recorded::of(&applied, Some(&returned), "definition").is_some());
        assert!(Recorded::of(&applied, Some(&returned), "name").is_none());
        assert!(Recorded::of(&applied, None, "definition").is_none());
        assert_eq!(
            expected_live(&applied, Some(&returned), "definition"),
            Some(&json!({"x": 1.0}))
        );
        assert_eq!(
            expected_live(&applied, Some(&returned), "name"),
            Some(&json!("VIP")),
            "without Klaviyo's answer, drift compares with what was sent"
        );
    }
}
