//! Lists named by their manifest id inside segment definitions.
//!
//! Klaviyo's `profile-group-membership` condition wants Klaviyo list ids in `group_ids`. A
//! manifest may write a list's manifest id there instead (`group_ids: [vip]`), so a segment can
//! refer to a list declared next to it, including one the same apply creates.
//!
//! Decisions:
//! * An entry equal to the manifest id of a declared list is that list; any other entry is
//!   sent as written (a Klaviyo list id). Manifest ids win the rare tie with a Klaviyo id.
//! * At plan time a reference to a list that exists becomes its Klaviyo id, so the plan, the
//!   comparison with Klaviyo and what klsync records all hold Klaviyo ids, as if the manifest
//!   had written them.
//! * A reference to a list this plan creates has no id yet: the plan holds the placeholder
//!   `${list.KEY}` (shown as such in the plan) and the segment's change depends on the list's,
//!   so it runs after it and is skipped if the list could not be created. The executor
//!   replaces the placeholder with the new id before sending and before recording.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::model::{ResourceKey, ResourceKind};

/// What a manifest id in `group_ids` stands for at plan time.
pub enum ListTarget {
    /// The list exists in Klaviyo (or is adopted): its id.
    Exists(String),
    /// This plan creates the list.
    Created,
}

/// The definition with every list reference resolved for the plan, and the addresses of the
/// lists it waits for (those this plan creates). `target` answers for manifest ids of declared
/// lists and `None` for anything else.
pub fn resolve_for_plan(
    definition: &Value,
    target: impl Fn(&str) -> Option<ListTarget>,
) -> (Value, Vec<String>) {
    let mut resolved = definition.clone();
    let mut waits_for = Vec::new();
    for_each_group_id(&mut resolved, &mut |entry| {
        let key = ResourceKey::new(ResourceKind::List, entry.as_str());
        match target(entry) {
            Some(ListTarget::Exists(id)) => *entry = id,
            Some(ListTarget::Created) => {
                waits_for.push(key.address());
                *entry = placeholder(&key);
            }
            None => {}
        }
        Ok::<(), String>(())
    })
    .unwrap_or_default();
    waits_for.sort();
    waits_for.dedup();
    (resolved, waits_for)
}

/// Replace each placeholder in `value` (a definition, or a change's `applied` value holding one
/// under `definition`) with the id `ids` has for its address. Whether anything was replaced;
/// an error names a list without an id.
pub fn substitute(value: &mut Value, ids: &BTreeMap<String, String>) -> Result<bool, String> {
    let mut replaced = false;
    for_each_group_id(value, &mut |entry| {
        let Some(address) = entry
            .strip_prefix("${")
            .and_then(|rest| rest.strip_suffix('}'))
        else {
            return Ok::<(), String>(());
        };
        let id = ids.get(address).ok_or_else(|| {
            format!("{address} has no Klaviyo id, so the segment cannot refer to it")
        })?;
        *entry = id.clone();
        replaced = true;
        Ok(())
    })?;
    Ok(replaced)
}

/// The inverse, for `klsync import`: each Klaviyo list id in `definition` that `key_of` knows
/// (a list imported with it) written as that list's manifest id, so the imported manifests
/// refer to each other as a user would write them.
pub fn with_manifest_ids(definition: &Value, key_of: impl Fn(&str) -> Option<String>) -> Value {
    let mut named = definition.clone();
    let _ = for_each_group_id(&mut named, &mut |entry| {
        if let Some(key) = key_of(entry) {
            *entry = key;
        }
        Ok::<(), String>(())
    });
    named
}

/// Whether `value` holds a placeholder anywhere in its `group_ids`.
pub fn has_placeholder(value: &Value) -> bool {
    let mut copy = value.clone();
    let mut found = false;
    let _ = for_each_group_id(&mut copy, &mut |entry| {
        found |= entry.starts_with("${");
        Ok::<(), String>(())
    });
    found
}

/// `${list.KEY}`: a list this plan creates, by address.
fn placeholder(key: &ResourceKey) -> String {
    format!("${{{}}}", key.address())
}

/// Call `visit` on every string in a `group_ids` array of a `profile-group-membership`
/// condition, anywhere in `value`.
fn for_each_group_id<E>(
    value: &mut Value,
    visit: &mut impl FnMut(&mut String) -> Result<(), E>,
) -> Result<(), E> {
    match value {
        Value::Object(map) => {
            let membership =
                map.get("type").and_then(Value::as_str) == Some("profile-group-membership");
            for (field, child) in map.iter_mut() {
                match child {
                    Value::Array(entries) if membership && field == "group_ids" => {
                        for entry in entries {
                            if let Value::String(text) = entry {
                                visit(text)?;
                            }
                        }
                    }
                    child => for_each_group_id(child, visit)?,
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                for_each_group_id(item, visit)?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn definition(ids: Value) -> Value {
        json!({"condition_groups": [{"conditions": [
            {"type": "profile-group-membership", "is_member": true, "group_ids": ids},
            {"type": "profile-property", "property": "properties['group_ids']",
             "filter": {"type": "string", "operator": "equals", "value": "vip"}}
        ]}]})
    }

    fn targets(key: &str) -> Option<ListTarget> {
        match key {
            "vip" => Some(ListTarget::Exists("XyZ123".into())),
            "fresh" => Some(ListTarget::Created),
            _ => None,
        }
    }

    #[test]
    fn manifest_ids_become_klaviyo_ids_or_placeholders_and_the_rest_is_kept() {
        let (resolved, waits) =
            resolve_for_plan(&definition(json!(["vip", "fresh", "AbC999"])), targets);
        assert_eq!(
            resolved,
            definition(json!(["XyZ123", "${list.fresh}", "AbC999"]))
        );
        assert_eq!(waits, ["list.fresh"]);
        // Only group_ids of membership conditions are references: the property filter's "vip"
        // stays as written.
        assert_eq!(
            resolved["condition_groups"][0]["conditions"][1]["filter"]["value"],
            "vip"
        );
        assert!(has_placeholder(&resolved));
    }

    #[test]
    fn the_executor_fills_in_created_ids_and_names_a_missing_one() {
        let (mut resolved, _) = resolve_for_plan(&definition(json!(["fresh"])), targets);
        let mut applied = json!({"name": "S", "definition": resolved.clone()});
        let ids = BTreeMap::from([("list.fresh".to_owned(), "NeW456".to_owned())]);
        assert!(substitute(&mut resolved, &ids).unwrap());
        assert_eq!(resolved, definition(json!(["NeW456"])));
        assert!(substitute(&mut applied, &ids).unwrap());
        assert_eq!(applied["definition"], definition(json!(["NeW456"])));
        assert!(!has_placeholder(&applied));

        let (mut waiting, _) = resolve_for_plan(&definition(json!(["fresh"])), targets);
        let err = substitute(&mut waiting, &BTreeMap::new()).unwrap_err();
        assert!(err.contains("list.fresh has no Klaviyo id"), "{err}");
    }

    #[test]
    fn import_writes_the_manifest_ids_of_lists_it_knows() {
        let key_of = |id: &str| (id == "XyZ123").then(|| "vip".to_owned());
        assert_eq!(
            with_manifest_ids(&definition(json!(["XyZ123", "AbC999"])), key_of),
            definition(json!(["vip", "AbC999"]))
        );
    }

    #[test]
    fn a_definition_without_references_is_unchanged() {
        let plain = definition(json!(["AbC999"]));
        let (resolved, waits) = resolve_for_plan(&plain, targets);
        assert_eq!(resolved, plain);
        assert!(waits.is_empty());
        assert!(!substitute(&mut plain.clone(), &BTreeMap::new()).unwrap());
    }
}
