//! Segment definitions: a minimal shape check for writes, and membership for the conditions that
//! can be decided from emulator state.
//!
//! Membership is computed on every read (so `is_processing` is always false). Groups are ANDed
//! and the conditions inside a group ORed, as in Klaviyo. Decidable conditions:
//! `profile-group-membership` (list ids) and `profile-property` with string, numeric, boolean
//! and existence filters on profile attributes, `location['..']` or `properties['..']`.
//! Conditions on events, consent, predictions and the like never match, so such segments are
//! empty here.

use serde_json::Value;

use super::jsonapi::ApiError;
use super::state::{Profile, State};

/// Condition `type`s the spec defines.
pub const CONDITION_TYPES: &[&str] = &[
    "profile-group-membership",
    "profile-property",
    "profile-metric",
    "profile-metric-funnel",
    "profile-marketing-consent",
    "profile-postal-code-distance",
    "profile-region",
    "profile-predictive-analytics",
    "profile-has-custom-object",
    "profile-permissions",
];

/// Checks the shape of a definition sent at `pointer` (e.g. `/data/attributes/definition`).
pub fn validate(definition: &Value, pointer: &str) -> Result<(), ApiError> {
    let groups = definition
        .get("condition_groups")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            ApiError::invalid(
                format!("{pointer}/condition_groups"),
                "'condition_groups' is a required array.",
            )
        })?;
    if groups.is_empty() {
        return Err(ApiError::invalid(
            format!("{pointer}/condition_groups"),
            "At least one condition group is required.",
        ));
    }
    for (g, group) in groups.iter().enumerate() {
        let at = format!("{pointer}/condition_groups/{g}/conditions");
        let conditions = group
            .get("conditions")
            .and_then(Value::as_array)
            .filter(|c| !c.is_empty())
            .ok_or_else(|| ApiError::invalid(&at, "'conditions' must be a non-empty array."))?;
        for (c, condition) in conditions.iter().enumerate() {
            let at = format!("{at}/{c}");
            let kind = condition.get("type").and_then(Value::as_str).unwrap_or("");
            if !CONDITION_TYPES.contains(&kind) {
                return Err(ApiError::invalid(
                    format!("{at}/type"),
                    format!("'{kind}' is not a valid condition type."),
                ));
            }
            match kind {
                "profile-group-membership" => {
                    if !condition.get("is_member").is_some_and(Value::is_boolean) {
                        return Err(ApiError::invalid(
                            format!("{at}/is_member"),
                            "'is_member' must be a boolean.",
                        ));
                    }
                    let ids_ok = condition
                        .get("group_ids")
                        .and_then(Value::as_array)
                        .is_some_and(|ids| !ids.is_empty() && ids.iter().all(Value::is_string));
                    if !ids_ok {
                        return Err(ApiError::invalid(
                            format!("{at}/group_ids"),
                            "'group_ids' must be a non-empty array of list ids.",
                        ));
                    }
                }
                "profile-property" => {
                    if !condition.get("property").is_some_and(Value::is_string) {
                        return Err(ApiError::invalid(
                            format!("{at}/property"),
                            "'property' is a required string.",
                        ));
                    }
                    let filter_ok = condition.get("filter").is_some_and(|f| {
                        f.get("type").is_some_and(Value::is_string)
                            && f.get("operator").is_some_and(Value::is_string)
                    });
                    if !filter_ok {
                        return Err(ApiError::invalid(
                            format!("{at}/filter"),
                            "'filter' needs a 'type' and an 'operator'.",
                        ));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Whether `profile` is in a segment with `definition`.
pub fn matches(definition: &Value, profile: &Profile, state: &State) -> bool {
    let Some(groups) = definition.get("condition_groups").and_then(Value::as_array) else {
        return false;
    };
    !groups.is_empty()
        && groups.iter().all(|group| {
            group
                .get("conditions")
                .and_then(Value::as_array)
                .is_some_and(|conds| conds.iter().any(|c| condition_matches(c, profile, state)))
        })
}

fn condition_matches(condition: &Value, profile: &Profile, state: &State) -> bool {
    match condition.get("type").and_then(Value::as_str) {
        Some("profile-group-membership") => {
            let is_member = condition.get("is_member").and_then(Value::as_bool);
            let in_any = condition
                .get("group_ids")
                .and_then(Value::as_array)
                .is_some_and(|ids| {
                    ids.iter().filter_map(Value::as_str).any(|id| {
                        state
                            .lists
                            .get(id)
                            .is_some_and(|l| l.members.contains_key(&profile.id))
                    })
                });
            match is_member {
                Some(true) => in_any,
                Some(false) => !in_any,
                None => false,
            }
        }
        Some("profile-property") => {
            let value = condition
                .get("property")
                .and_then(Value::as_str)
                .and_then(|p| property_value(profile, p));
            condition
                .get("filter")
                .is_some_and(|f| filter_matches(f, value))
        }
        _ => false,
    }
}

fn property_value<'a>(profile: &'a Profile, property: &str) -> Option<&'a Value> {
    for container in ["properties", "location"] {
        if let Some(rest) = property.strip_prefix(container) {
            let key = rest
                .strip_prefix("['")
                .and_then(|r| r.strip_suffix("']"))
                .or_else(|| rest.strip_prefix('.'))?;
            return profile.attributes.get(container)?.get(key);
        }
    }
    profile.attributes.get(property)
}

fn filter_matches(filter: &Value, value: Option<&Value>) -> bool {
    let op = filter.get("operator").and_then(Value::as_str).unwrap_or("");
    let expected = filter.get("value");
    let value = value.filter(|v| !v.is_null());
    match filter.get("type").and_then(Value::as_str) {
        Some("existence") => match op {
            "is-set" => value.is_some(),
            "not-set" => value.is_none(),
            _ => false,
        },
        Some("string") => {
            let have = value.and_then(Value::as_str);
            let want = expected.and_then(Value::as_str);
            let list: Vec<&str> = expected
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            match (op, have, want) {
                ("equals", Some(h), Some(w)) => h == w,
                ("not-equals", h, Some(w)) => h != Some(w),
                ("contains", Some(h), Some(w)) => h.contains(w),
                ("not-contains", h, Some(w)) => !h.is_some_and(|h| h.contains(w)),
                ("starts-with", Some(h), Some(w)) => h.starts_with(w),
                ("not-starts-with", h, Some(w)) => !h.is_some_and(|h| h.starts_with(w)),
                ("ends-with", Some(h), Some(w)) => h.ends_with(w),
                ("not-ends-with", h, Some(w)) => !h.is_some_and(|h| h.ends_with(w)),
                ("in", Some(h), _) => list.contains(&h),
                ("not-in", h, _) => !h.is_some_and(|h| list.contains(&h)),
                _ => false,
            }
        }
        Some("numeric") => {
            let (Some(h), Some(w)) = (
                value.and_then(Value::as_f64),
                expected.and_then(Value::as_f64),
            ) else {
                return false;
            };
            match op {
                "equals" => h == w,
                "not-equals" => h != w,
                "greater-than" => h > w,
                "greater-than-or-equal" => h >= w,
                "less-than" => h < w,
                "less-than-or-equal" => h <= w,
                _ => false,
            }
        }
        Some("boolean") => {
            op == "equals"
                && value.and_then(Value::as_bool).is_some()
                && value.and_then(Value::as_bool) == expected.and_then(Value::as_bool)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, json};

    fn state_with_profile(attrs: Value) -> (State, String) {
        let mut state = State::new(0);
        let map: Map<String, Value> = attrs.as_object().cloned().unwrap_or_default();
        let id = state.create_profile(map);
        (state, id)
    }

    #[test]
    fn validate_points_at_the_bad_part() {
        assert!(validate(&json!({"condition_groups": [{"conditions": [{"type": "profile-region", "in_region": true, "region": "european_union"}]}]}), "/d").is_ok());
        let err = validate(&json!({}), "/d").unwrap_err();
        assert_eq!(
            err.source,
            Some(super::super::jsonapi::ErrorSource::Pointer(
                "/d/condition_groups".into()
            ))
        );
        let err = validate(
            &json!({"condition_groups": [{"conditions": [{"type": "bogus"}]}]}),
            "/d",
        )
        .unwrap_err();
        assert_eq!(
            err.source,
            Some(super::super::jsonapi::ErrorSource::Pointer(
                "/d/condition_groups/0/conditions/0/type".into()
            ))
        );
        assert!(validate(&json!({"condition_groups": [{"conditions": []}]}), "/d").is_err());
    }

    #[test]
    fn property_and_membership_conditions_decide_membership() {
        let (mut state, id) = state_with_profile(
            json!({"email": "a@vip.com", "properties": {"tier": "gold", "spend": 120}}),
        );
        let list = state.create_list("L", None);
        let gold = json!({"condition_groups": [{"conditions": [
            {"type": "profile-property", "property": "properties['tier']", "filter": {"type": "string", "operator": "equals", "value": "gold"}}
        ]}]});
        let profile = state.profiles[&id].clone();
        assert!(matches(&gold, &profile, &state));
        let in_list = json!({"condition_groups": [{"conditions": [
            {"type": "profile-group-membership", "is_member": true, "group_ids": [list.clone()]}
        ]}]});
        assert!(!matches(&in_list, &profile, &state));
        state.add_members(&list, std::slice::from_ref(&id));
        assert!(matches(&in_list, &profile, &state));
        let both = json!({"condition_groups": [
            {"conditions": [{"type": "profile-property", "property": "properties['spend']", "filter": {"type": "numeric", "operator": "greater-than", "value": 100}}]},
            {"conditions": [{"type": "profile-property", "property": "email", "filter": {"type": "string", "operator": "ends-with", "value": "@other.com"}}]}
        ]});
        assert!(!matches(&both, &profile, &state));
        let metric = json!({"condition_groups": [{"conditions": [{"type": "profile-metric"}]}]});
        assert!(!matches(&metric, &profile, &state));
    }
}
