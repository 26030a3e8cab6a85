//! The emulator's strictness, read from Klaviyo's OpenAPI spec rather than written by hand: every
//! request body is validated against its operation's request schema and every query parameter
//! against the operation's declared parameters, before any handler runs. The handlers keep only
//! the rules the spec cannot express (filters' grammar, limits, uniqueness).
//!
//! The spec is the vendored subset (`vendor/klaviyo-openapi/klaviyo-subset.json`, revision
//! 2026-07-15). OpenAPI 3.0 schemas are almost JSON Schema; the differences that matter for
//! Klaviyo's spec:
//!
//! - `nullable: true` is rewritten to allow `null` (the official Python SDK sends
//!   `is_starred: null` in `update_segment`, which the spec allows);
//! - a `oneOf` of plain scalar types is read as `anyOf`: Klaviyo writes a number as
//!   `oneOf: [{type: integer}, {type: number}]`, which read literally refuses every integer
//!   (it matches both), while Klaviyo and the SDKs generated from the spec take either;
//! - `example`, `discriminator` and `nullable` themselves are dropped.
//!
//! Request bodies are checked [`Objects::Closed`]: an object that lists its `properties` takes
//! no other key, as Klaviyo refuses unknown attributes (its 400 `invalid` names the
//! attribute). Responses are checked as published by the tests (Klaviyo may add fields).
//! `tests/it/support/openapi.rs` uses this same converter, so the tests and the emulator can never
//! read the spec differently.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Map, Value, json};

use super::jsonapi::ApiError;
use klaviyo_spec::operations::Operation;

/// The vendored spec subset, parsed once.
pub fn spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| {
        let text = include_str!("../../../vendor/klaviyo-openapi/klaviyo-subset.json");
        serde_json::from_str(text).expect("the vendored spec is valid JSON")
    })
}

/// How object schemas that list their `properties` treat other keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Objects {
    /// As the spec says (mostly open).
    AsPublished,
    /// `additionalProperties: false` wherever properties are listed (and the object is not an
    /// `allOf` composition, whose parts must stay open): catches misspelt keys.
    Closed,
}

/// The spec's components, converted once per [`Objects`] mode.
pub fn converted_components(objects: Objects) -> &'static Value {
    static OPEN: OnceLock<Value> = OnceLock::new();
    static CLOSED: OnceLock<Value> = OnceLock::new();
    let cell = match objects {
        Objects::AsPublished => &OPEN,
        Objects::Closed => &CLOSED,
    };
    cell.get_or_init(|| to_json_schema_with(&spec()["components"], objects))
}

/// Rewrites OpenAPI 3.0 schema objects into JSON Schema (draft 2020-12); see the module docs.
pub fn to_json_schema_with(node: &Value, objects: Objects) -> Value {
    match node {
        Value::Object(map) => {
            let mut out = Map::new();
            for (key, value) in map {
                if key == "nullable" || key == "example" || key == "discriminator" {
                    continue;
                }
                let key = if key == "oneOf" && only_scalar_types(value) {
                    "anyOf"
                } else {
                    key
                };
                out.insert(key.to_owned(), to_json_schema_with(value, objects));
            }
            let closable = objects == Objects::Closed
                && map.get("properties").is_some_and(Value::is_object)
                && map.get("type") == Some(&json!("object"))
                && !map.contains_key("additionalProperties")
                && !map.contains_key("allOf");
            if closable {
                out.insert("additionalProperties".into(), Value::Bool(false));
            }
            if map.get("nullable") == Some(&Value::Bool(true)) {
                make_nullable(out)
            } else {
                Value::Object(out)
            }
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| to_json_schema_with(item, objects))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Whether `branches` (a `oneOf` list) are all plain scalar types.
fn only_scalar_types(branches: &Value) -> bool {
    branches.as_array().is_some_and(|branches| {
        branches.iter().all(|branch| {
            branch.as_object().is_some_and(|b| {
                b.len() == 1
                    && matches!(
                        b.get("type").and_then(Value::as_str),
                        Some("integer" | "number" | "string" | "boolean")
                    )
            })
        })
    })
}

fn make_nullable(mut schema: Map<String, Value>) -> Value {
    if let Some(Value::Array(values)) = schema.get_mut("enum") {
        values.push(Value::Null);
    }
    match schema.get("type").cloned() {
        Some(Value::String(kind)) => {
            schema.insert("type".into(), json!([kind, "null"]));
            Value::Object(schema)
        }
        _ => json!({"anyOf": [Value::Object(schema), {"type": "null"}]}),
    }
}

/// Compiles (once per `key`) a validator for an OpenAPI-form `schema` whose references point
/// into the spec's components.
pub fn compiled(
    key: String,
    schema: &Value,
    objects: Objects,
) -> Result<Arc<jsonschema::Validator>, String> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<jsonschema::Validator>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(validator) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Ok(Arc::clone(validator));
    }
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": converted_components(objects),
        "allOf": [to_json_schema_with(schema, objects)],
    });
    let validator = Arc::new(
        jsonschema::options()
            .should_validate_formats(true)
            .build(&root)
            .map_err(|e| format!("does not compile: {e}"))?,
    );
    cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, Arc::clone(&validator));
    Ok(validator)
}

/// The operation's object in the spec.
fn operation(op: Operation) -> &'static Value {
    &spec()["paths"][op.path_template()][op.method().to_ascii_lowercase()]
}

/// Validates a request body of `op` against the spec (closed objects). The error is Klaviyo's
/// 400 `invalid` pointing at the first offending place.
pub fn validate_request(op: Operation, body: &Value) -> Result<(), ApiError> {
    let content = &operation(op)["requestBody"]["content"];
    let Some(schema) = content
        .get("application/vnd.api+json")
        .or_else(|| content.get("application/json"))
        .map(|media| &media["schema"])
    else {
        return Ok(());
    };
    let validator = compiled(
        format!("request {}", op.operation_id()),
        schema,
        Objects::Closed,
    )
    .map_err(|err| ApiError::bad_request(format!("the emulator's spec: {err}")))?;
    match validator.iter_errors(body).next() {
        None => Ok(()),
        Some(error) => {
            let (pointer, error) = innermost(&error);
            let pointer = if pointer.is_empty() {
                "/".to_owned()
            } else {
                pointer
            };
            Err(ApiError::invalid(pointer, describe(error)))
        }
    }
}

/// The error to report and where it points: inside an `anyOf`/`oneOf` (every nullable field is
/// one), the deepest failure of its branches, preferring a wrong discriminator (`enum`,
/// `const`) over a missing field at the same depth; a missing field points at the field itself,
/// as Klaviyo's `source.pointer` does.
fn innermost<'a>(
    error: &'a jsonschema::ValidationError<'a>,
) -> (String, &'a jsonschema::ValidationError<'a>) {
    use jsonschema::error::ValidationErrorKind as Kind;
    let rank = |(pointer, error): &(String, &jsonschema::ValidationError<'_>)| {
        let discriminator = matches!(error.kind(), Kind::Enum { .. } | Kind::Constant { .. });
        let null_only = matches!(error.kind(), Kind::Type { .. })
            && error.to_string().ends_with("is not of type \"null\"");
        (pointer.matches('/').count(), discriminator, !null_only)
    };
    let here = match error.kind() {
        Kind::Required { property } => format!(
            "{}/{}",
            error.instance_path(),
            property.as_str().unwrap_or_default()
        ),
        _ => error.instance_path().to_string(),
    };
    let branches = match error.kind() {
        Kind::AnyOf { context } | Kind::OneOfNotValid { context } => context,
        _ => return (here, error),
    };
    let own = rank(&(here.clone(), error));
    branches
        .iter()
        .flatten()
        .map(innermost)
        .max_by_key(rank)
        .filter(|deepest| rank(deepest) >= own)
        .unwrap_or((here, error))
}

/// A validation error in Klaviyo's words where they are known (`'x' is not a valid field for
/// the resource 'list'.`), else the validator's.
fn describe(error: &jsonschema::ValidationError<'_>) -> String {
    use jsonschema::error::ValidationErrorKind;
    match error.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            format!(
                "{} is not a valid field for this resource.",
                unexpected.join(", ")
            )
        }
        _ => {
            let mut detail = error.to_string();
            if detail.len() > 300 {
                let mut end = 300;
                while !detail.is_char_boundary(end) {
                    end -= 1;
                }
                detail.truncate(end);
                detail.push('…');
            }
            detail
        }
    }
}

/// Validates the query parameters of a request to `op`: each must be declared by the spec for
/// the operation (Klaviyo answers an undeclared one with 400 `invalid`), and its value must fit
/// the declared schema (arrays are comma-separated, as `explode: false` says; integers are
/// parsed).
pub fn validate_query(op: Operation, query: &[(String, String)]) -> Result<(), ApiError> {
    let parameters = operation(op)["parameters"].as_array();
    for (name, value) in query {
        let declared = parameters.and_then(|all| {
            all.iter()
                .find(|p| p["in"] == "query" && p["name"].as_str() == Some(name.as_str()))
        });
        let Some(declared) = declared else {
            return Err(ApiError::invalid_parameter(
                name.clone(),
                format!("'{name}' is not a valid parameter for this endpoint."),
            ));
        };
        let schema = &declared["schema"];
        let instance = match schema["type"].as_str() {
            Some("array") => Value::Array(
                value
                    .split(',')
                    .map(|item| Value::String(item.to_owned()))
                    .collect(),
            ),
            Some("integer") => match value.trim().parse::<i64>() {
                Ok(number) => json!(number),
                Err(_) => {
                    return Err(ApiError::invalid_parameter(
                        name.clone(),
                        format!("'{value}' is not a valid integer."),
                    ));
                }
            },
            _ => Value::String(value.clone()),
        };
        let validator = compiled(
            format!("query {} {name}", op.operation_id()),
            schema,
            Objects::AsPublished,
        )
        .map_err(|err| ApiError::bad_request(format!("the emulator's spec: {err}")))?;
        if let Some(error) = validator.iter_errors(&instance).next() {
            return Err(ApiError::invalid_parameter(
                name.clone(),
                format!("Invalid value for '{name}': {}", describe(&error)),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nullable_fields_take_null_and_unknown_attributes_are_refused() {
        let body = json!({"data": {"type": "segment", "id": "S1",
                                   "attributes": {"name": "A", "is_starred": null}}});
        validate_request(Operation::UpdateSegment, &body).expect("is_starred: null");
        let body = json!({"data": {"type": "segment", "id": "S1",
                                   "attributes": {"name": "A", "colour": "red"}}});
        let err = validate_request(Operation::UpdateSegment, &body).unwrap_err();
        assert_eq!(err.status, 400);
        assert!(err.detail.contains("colour"), "{}", err.detail);
    }

    #[test]
    fn integers_are_numbers() {
        let body = json!({"data": {"type": "segment", "attributes": {"name": "Big",
            "definition": {"condition_groups": [{"conditions": [{
                "type": "profile-property", "property": "properties['ltv']",
                "filter": {"type": "numeric", "operator": "greater-than", "value": 100}}]}]}}}});
        validate_request(Operation::CreateSegment, &body).expect("an integer value");
    }

    #[test]
    fn query_parameters_are_checked_against_their_declaration() {
        let query = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        validate_query(
            Operation::GetProfiles,
            &query(&[
                ("page[size]", "100"),
                ("fields[profile]", "email,phone_number"),
            ]),
        )
        .expect("declared");
        for (pairs, parameter) in [
            (&[("page[size]", "101")][..], "page[size]"),
            (&[("page[size]", "ten")][..], "page[size]"),
            (
                &[("fields[profile]", "email,shoe_size")][..],
                "fields[profile]",
            ),
            (&[("pagesize", "10")][..], "pagesize"),
        ] {
            let err = validate_query(Operation::GetProfiles, &query(pairs)).unwrap_err();
            assert_eq!(err.status, 400, "{pairs:?}");
            assert!(
                matches!(&err.source, Some(super::super::jsonapi::ErrorSource::Parameter(p)) if p == parameter),
                "{pairs:?}: {:?}",
                err.source
            );
        }
    }
}
