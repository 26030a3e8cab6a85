//! What the emulator does where Klaviyo's spec is silent, as switchable modes (issue 12).
//!
//! Every test of klsync runs against the emulator. Where the spec allows more than one
//! behaviour, klsync must work with each, so the emulator offers each as a mode and the tests run
//! in all of them:
//! - [`ImportErrorShape`]: how an import error of a bulk import job names the profile it is
//!   about (`GET /api/profile-bulk-import-jobs/{id}/import-errors`; the spec types
//!   `original_payload` as a free, nullable object and `source.pointer` as any pointer).
//! - `canonical_segments`: whether a segment definition is stored (and so read back) in a
//!   canonical form of Klaviyo's own ([`canonicalize_definition`]) instead of as sent.

use serde_json::{Map, Value};

/// The emulator's modes; the default is the behaviour earlier versions had.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Modes {
    /// How import errors name their profile.
    pub import_errors: ImportErrorShape,
    /// Store segment definitions canonicalised ([`canonicalize_definition`]).
    pub canonical_segments: bool,
}

/// How an import error names the profile Klaviyo refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ImportErrorShape {
    /// `original_payload` is the profile as sent (`{"type": "profile", "attributes": {...}}`);
    /// `source.pointer` points into it (e.g. `/data/attributes/email`).
    #[default]
    Nested,
    /// `original_payload` is the profile's attributes, flat (`{"email": ..., ...}`), as
    /// third-party documentation shows it; `source.pointer` as for `Nested`.
    Flat,
    /// No `original_payload`; `source.pointer` points at the profile in the job's request
    /// (`/data/attributes/profiles/data/{index}/attributes/email`).
    Pointer,
    /// No `original_payload` and `source.pointer` is the spec's default `/data`: nothing says
    /// which profile was refused (only the job's `failed_count` says how many).
    Opaque,
}

impl ImportErrorShape {
    /// Every shape, as the `--import-errors-shape` flag spells it.
    pub const ALL: [(&'static str, ImportErrorShape); 4] = [
        ("nested", ImportErrorShape::Nested),
        ("flat", ImportErrorShape::Flat),
        ("pointer", ImportErrorShape::Pointer),
        ("opaque", ImportErrorShape::Opaque),
    ];

    /// Parses `nested`, `flat`, `pointer` or `opaque`.
    pub fn parse(value: &str) -> Result<Self, String> {
        Self::ALL
            .iter()
            .find(|(name, _)| *name == value)
            .map(|(_, shape)| *shape)
            .ok_or_else(|| {
                format!(
                    "--import-errors-shape must be one of nested, flat, pointer, opaque; got `{value}`"
                )
            })
    }

    /// The `source.pointer` and `original_payload` of an import error about `row`, the profile
    /// at `index` in the job, refused at `pointer` (a pointer into the profile, `/data/...`).
    pub fn render(self, index: usize, pointer: &str, row: &Value) -> (String, Value) {
        match self {
            ImportErrorShape::Nested => (pointer.to_owned(), row.clone()),
            ImportErrorShape::Flat => (
                pointer.to_owned(),
                row.get("attributes")
                    .cloned()
                    .unwrap_or_else(|| Value::Object(Map::new())),
            ),
            ImportErrorShape::Pointer => {
                let inner = pointer.strip_prefix("/data").unwrap_or(pointer);
                (
                    format!("/data/attributes/profiles/data/{index}{inner}"),
                    Value::Null,
                )
            }
            ImportErrorShape::Opaque => ("/data".to_owned(), Value::Null),
        }
    }
}

/// The field the canonical form adds to every `filter` object that lacks it. No such field is
/// in the spec: it stands for the undocumented defaults a real account was seen to add.
pub const CANONICAL_FILTER_DEFAULT: (&str, bool) = ("negate", false);

/// A segment definition as a canonicalising Klaviyo stores it: every integer becomes a float
/// (`500` → `500.0`) and every `filter` object gains [`CANONICAL_FILTER_DEFAULT`]. Both leave
/// the definition's meaning as it was, and both make a naive comparison with what was sent
/// fail forever.
pub fn canonicalize_definition(definition: &Value) -> Value {
    match definition {
        Value::Object(object) => {
            let mut out = Map::new();
            for (key, value) in object {
                let mut value = canonicalize_definition(value);
                if key == "filter"
                    && let Value::Object(filter) = &mut value
                {
                    let (field, default) = CANONICAL_FILTER_DEFAULT;
                    filter.entry(field).or_insert_with(|| Value::Bool(default));
                }
                out.insert(key.clone(), value);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(canonicalize_definition).collect()),
        Value::Number(number) if number.is_i64() || number.is_u64() => number
            .as_f64()
            .and_then(serde_json::Number::from_f64)
            .map_or_else(|| definition.clone(), Value::Number),
        other => other.clone(),
    }
}

/// A segment write's body with [`CANONICAL_FILTER_DEFAULT`] taken out of every filter of its
/// definition where it has the default value. A Klaviyo that adds the field when it stores a
/// definition takes its own form back on a write (a definition read, edited and sent again), but
/// the spec does not know the field and the emulator checks every request against the spec, so
/// in the `canonical_segments` mode the field is removed before that check (the handler adds it
/// again when it stores the definition).
pub fn accept_canonical(body: &mut Value) {
    fn strip(value: &mut Value) {
        match value {
            Value::Object(object) => {
                let (field, default) = CANONICAL_FILTER_DEFAULT;
                if let Some(Value::Object(filter)) = object.get_mut("filter")
                    && filter.get(field) == Some(&Value::Bool(default))
                {
                    filter.remove(field);
                }
                object.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    if let Some(definition) = body.pointer_mut("/data/attributes/definition") {
        strip(definition);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_definitions_turn_integers_to_floats_and_gain_the_filter_default() {
        let sent = json!({"condition_groups": [{"conditions": [{
            "type": "profile-property", "property": "properties['ltv']",
            "filter": {"type": "numeric", "operator": "greater-than", "value": 500}
        }]}]});
        let stored = canonicalize_definition(&sent);
        let filter = &stored["condition_groups"][0]["conditions"][0]["filter"];
        assert_eq!(filter["value"], json!(500.0));
        assert!(filter["value"].is_f64());
        assert_eq!(filter["negate"], json!(false));
        assert_ne!(stored, sent, "a naive comparison sees a change");
        assert_eq!(canonicalize_definition(&stored), stored, "idempotent");
        assert_eq!(serde_json::to_string(&filter["value"]).unwrap(), "500.0");
    }

    #[test]
    fn a_canonical_definition_sent_back_loses_only_the_added_default() {
        let sent = json!({"condition_groups": [{"conditions": [{
            "type": "profile-property", "property": "properties['ltv']",
            "filter": {"type": "numeric", "operator": "greater-than", "value": 500}
        }]}]});
        let mut body = json!({"data": {"type": "segment", "attributes": {
            "definition": canonicalize_definition(&sent)
        }}});
        accept_canonical(&mut body);
        let filter = &body["data"]["attributes"]["definition"]["condition_groups"][0]["conditions"]
            [0]["filter"];
        assert_eq!(filter.get("negate"), None);
        assert_eq!(
            filter["value"],
            json!(500.0),
            "floats are the spec's numbers: kept"
        );
        // A value other than the default is the sender's, and the spec check refuses it.
        let mut other =
            json!({"data": {"attributes": {"definition": {"filter": {"negate": true}}}}});
        accept_canonical(&mut other);
        assert_eq!(
            other["data"]["attributes"]["definition"]["filter"]["negate"],
            json!(true)
        );
    }

    #[test]
    fn each_shape_names_the_profile_its_own_way() {
        let row = json!({"type": "profile", "attributes": {"email": "a@b..c"}});
        let at = "/data/attributes/email";
        assert_eq!(
            ImportErrorShape::Nested.render(3, at, &row),
            (at.to_owned(), row.clone())
        );
        assert_eq!(
            ImportErrorShape::Flat.render(3, at, &row),
            (at.to_owned(), json!({"email": "a@b..c"}))
        );
        assert_eq!(
            ImportErrorShape::Pointer.render(3, at, &row),
            (
                "/data/attributes/profiles/data/3/attributes/email".to_owned(),
                Value::Null
            )
        );
        assert_eq!(
            ImportErrorShape::Opaque.render(3, at, &row),
            ("/data".to_owned(), Value::Null)
        );
        for (name, shape) in ImportErrorShape::ALL {
            assert_eq!(ImportErrorShape::parse(name), Ok(shape));
        }
        assert!(ImportErrorShape::parse("deep").is_err());
    }
}
