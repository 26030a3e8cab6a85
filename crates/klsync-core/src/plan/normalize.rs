//! Segment definitions compared by meaning, not by spelling.
//!
//! Klaviyo returns a definition with its own key order and spells optional fields it did not
//! receive as `null` (e.g. `timeframe_filter: null` on a `profile-group-membership` condition).
//! Normalising sorts object keys and drops `null` members, so neither shows up as a change. The
//! spec (revision 2026-07-15) declares no `default` for any segment condition field, so nulls
//! are the only defaults that can be dropped safely. Array order is kept: it is what Klaviyo
//! stores and shows.

use serde_json::{Map, Value};

/// `definition` with object keys sorted and `null` members dropped, recursively.
pub fn normalize_definition(definition: &Value) -> Value {
    match definition {
        Value::Object(object) => {
            let mut keys: Vec<&String> = object.keys().collect();
            keys.sort();
            let mut normalized = Map::new();
            for key in keys {
                let value = &object[key];
                if !value.is_null() {
                    normalized.insert(key.clone(), normalize_definition(value));
                }
            }
            Value::Object(normalized)
        }
        Value::Array(items) => Value::Array(items.iter().map(normalize_definition).collect()),
        other => other.clone(),
    }
}

/// The normalised definition as YAML, the form users write and review.
pub fn definition_yaml(definition: &Value) -> String {
    // A serde_json::Value always serialises to YAML; a failure would be a serde_yaml bug.
    serde_yaml::to_string(&normalize_definition(definition))
        .unwrap_or_else(|error| format!("# cannot show the definition as YAML: {error}\n"))
}

/// A unified diff (`-` Klaviyo, `+` manifest) of two definitions as normalised YAML. `before` is
/// `None` for a new segment, which shows the whole definition as added.
pub fn definition_diff(before: Option<&Value>, after: &Value) -> String {
    definition_diff_from("klaviyo", before, after)
}

/// [`definition_diff`] from another starting point, named by `before_label` (`last applied`:
/// what klsync last sent, so a manifest change shows alone, without Klaviyo's own spelling).
pub(crate) fn definition_diff_from(
    before_label: &str,
    before: Option<&Value>,
    after: &Value,
) -> String {
    let old = before.map(definition_yaml).unwrap_or_default();
    let new = definition_yaml(after);
    similar::TextDiff::from_lines(&old, &new)
        .unified_diff()
        .context_radius(3)
        .header(before_label, "manifest")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_and_nulls_do_not_matter() {
        let manifest = json!({"condition_groups": [{"conditions": [
            {"type": "profile-group-membership", "is_member": true, "group_ids": ["L1"]}
        ]}]});
        let klaviyo = json!({"condition_groups": [{"conditions": [
            {"group_ids": ["L1"], "timeframe_filter": null, "is_member": true,
             "type": "profile-group-membership"}
        ]}]});
        assert_eq!(
            normalize_definition(&manifest),
            normalize_definition(&klaviyo)
        );
    }

    #[test]
    fn array_order_and_values_matter() {
        let a = json!({"g": [1, 2]});
        let b = json!({"g": [2, 1]});
        assert_ne!(normalize_definition(&a), normalize_definition(&b));
    }

    #[test]
    fn diff_shows_changed_lines_as_yaml() {
        let before = json!({"condition_groups": [{"conditions": [{"property": "email"}]}]});
        let after = json!({"condition_groups": [{"conditions": [{"property": "first_name"}]}]});
        let diff = definition_diff(Some(&before), &after);
        assert!(diff.contains("-  - property: email\n"), "{diff}");
        assert!(diff.contains("+  - property: first_name\n"), "{diff}");
        assert!(diff.starts_with("--- klaviyo\n+++ manifest\n"), "{diff}");
    }
}
