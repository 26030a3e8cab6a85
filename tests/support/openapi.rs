//! Validates JSON bodies against Klaviyo's official OpenAPI spec (the vendored subset in
//! `vendor/klaviyo-openapi/klaviyo-subset.json`).
//!
//! OpenAPI 3.0 schemas are almost JSON Schema; the differences that matter for Klaviyo's spec are
//! `nullable: true`, which is rewritten to allow `null`, and a `oneOf` of plain scalar types
//! (`[integer, number]`, which every integer matches twice), read as `anyOf` as OpenAPI tools
//! do. Everything else (`required`, `enum`, other `oneOf`s, `additionalProperties`, formats) is
//! kept, so a body that passes here passes Klaviyo's own schema.
//!
//! [`Objects::Closed`] is stricter than the spec: every object schema that lists `properties`
//! (and is not an `allOf` composition, whose parts must stay open) rejects other keys. Klaviyo
//! ignores or rejects unknown attributes depending on the endpoint, so a misspelt attribute in a
//! request would pass the published schema and silently do nothing; request bodies are checked
//! closed. Responses are checked as published, since Klaviyo may add fields at any time.
//!
//! This is the only OpenAPI-to-JSON-Schema converter in the tests; every contract test uses it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use klsync::klaviyo::Operation;
use serde_json::{Map, Value, json};

/// How object schemas that list their `properties` treat other keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Objects {
    /// As the spec says (mostly open).
    AsPublished,
    /// `additionalProperties: false` wherever properties are listed, to catch misspelt keys.
    Closed,
}

/// The vendored spec subset, parsed once.
pub fn spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| {
        let text = include_str!("../../vendor/klaviyo-openapi/klaviyo-subset.json");
        serde_json::from_str(text).expect("vendored spec is valid JSON")
    })
}

fn converted_components(objects: Objects) -> &'static Value {
    static OPEN: OnceLock<Value> = OnceLock::new();
    static CLOSED: OnceLock<Value> = OnceLock::new();
    let cell = match objects {
        Objects::AsPublished => &OPEN,
        Objects::Closed => &CLOSED,
    };
    cell.get_or_init(|| to_json_schema_with(&spec()["components"], objects))
}

/// Rewrites OpenAPI 3.0 schema objects into JSON Schema (draft 2020-12), as published.
pub fn to_json_schema(node: &Value) -> Value {
    to_json_schema_with(node, Objects::AsPublished)
}

/// Rewrites OpenAPI 3.0 schema objects into JSON Schema (draft 2020-12).
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
        Value::Array(items) => Value::Array(items.iter().map(to_json_schema).collect()),
        other => other.clone(),
    }
}

/// Whether `branches` (a `oneOf` list) are all plain scalar types. Klaviyo's spec writes a
/// number as `oneOf: [{type: integer}, {type: number}]`, where every integer matches both
/// branches, so read as JSON Schema it would refuse every integer; Klaviyo, and the SDKs
/// generated from the spec, take either. Such a `oneOf` is read as `anyOf`.
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

/// Which body of an operation to validate.
#[derive(Debug, Clone, Copy)]
pub enum Body {
    /// The request body.
    Request,
    /// The response body sent with this status.
    Response(u16),
}

/// Finds the spec path template (`/api/lists/{id}`) matching a concrete path.
pub fn match_path(path: &str) -> Option<&'static str> {
    let path = path.trim_end_matches('/');
    let concrete: Vec<&str> = path.split('/').collect();
    spec()["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .find(|template| {
            let parts: Vec<&str> = template.split('/').collect();
            parts.len() == concrete.len()
                && parts
                    .iter()
                    .zip(&concrete)
                    .all(|(t, c)| (t.starts_with('{') && !c.is_empty()) || t == c)
        })
        .map(String::as_str)
}

/// The schema (OpenAPI form) for one body of one operation, or `None` when the spec defines no
/// body there (e.g. a 204).
pub fn body_schema(method: &str, template: &str, body: Body) -> Result<Option<Value>, String> {
    let operation = spec()["paths"][template]
        .get(method.to_ascii_lowercase())
        .ok_or_else(|| format!("{method} {template} is not in the spec"))?;
    let content = match body {
        Body::Request => &operation["requestBody"]["content"],
        Body::Response(status) => {
            let responses = &operation["responses"];
            let exact = status.to_string();
            let class = format!("{}XX", status / 100);
            let response = responses
                .get(&exact)
                .or_else(|| responses.get(&class))
                .or_else(|| responses.get("default"))
                .ok_or_else(|| format!("{method} {template}: status {status} is not declared"))?;
            &resolve_response(response)["content"]
        }
    };
    let Some(content) = content.as_object() else {
        return Ok(None);
    };
    Ok(content
        .get("application/vnd.api+json")
        .or_else(|| content.get("application/json"))
        .map(|media| media["schema"].clone()))
}

/// Follows a `#/components/responses/X` reference.
fn resolve_response(response: &'static Value) -> &'static Value {
    match response.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let name = reference.rsplit('/').next().unwrap_or_default();
            &spec()["components"]["responses"][name]
        }
        None => response,
    }
}

/// Validates `instance` against a body schema as published; returns every violation as a
/// readable line.
pub fn validate_body(
    method: &str,
    template: &str,
    body: Body,
    instance: &Value,
) -> Result<(), Vec<String>> {
    validate(method, template, body, instance, Objects::AsPublished)
}

/// Validates one body of `op` (requests closed, responses as published, see the module docs).
pub fn validate_operation(op: Operation, body: Body, instance: &Value) -> Result<(), Vec<String>> {
    let objects = match body {
        Body::Request => Objects::Closed,
        Body::Response(_) => Objects::AsPublished,
    };
    validate(op.method(), op.path_template(), body, instance, objects)
}

/// Validates `instance` against a body schema read as `objects` says; returns every violation as
/// a readable line.
pub fn validate(
    method: &str,
    template: &str,
    body: Body,
    instance: &Value,
    objects: Objects,
) -> Result<(), Vec<String>> {
    let schema = match body_schema(method, template, body) {
        Ok(Some(schema)) => schema,
        Ok(None) => {
            return if instance.is_null() {
                Ok(())
            } else {
                Err(vec![format!(
                    "{method} {template} {body:?}: spec defines no body, got one"
                )])
            };
        }
        Err(err) => return Err(vec![err]),
    };
    let key = format!("{objects:?} {method} {template} {body:?}");
    let validator = compiled(key, &schema, objects)
        .map_err(|e| vec![format!("schema for {method} {template}: {e}")])?;
    collect_errors(
        &validator,
        instance,
        &format!("{method} {template} {body:?}"),
    )
}

/// Validates `instance` against `#/components/schemas/{name}`.
pub fn validate_component(
    name: &str,
    instance: &Value,
    objects: Objects,
) -> Result<(), Vec<String>> {
    let schema = json!({"$ref": format!("#/components/schemas/{name}")});
    let validator = compiled(format!("{objects:?} component {name}"), &schema, objects)
        .map_err(|e| vec![format!("schema {name}: {e}")])?;
    collect_errors(&validator, instance, name)
}

/// Compiles (once per `key`) a validator for an OpenAPI-form `schema` whose references point
/// into the spec's components.
fn compiled(
    key: String,
    schema: &Value,
    objects: Objects,
) -> Result<Arc<jsonschema::Validator>, String> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<jsonschema::Validator>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(validator) = cache.lock().expect("validator cache").get(&key) {
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
        .expect("validator cache")
        .insert(key, Arc::clone(&validator));
    Ok(validator)
}

fn collect_errors(
    validator: &jsonschema::Validator,
    instance: &Value,
    what: &str,
) -> Result<(), Vec<String>> {
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{what}: at {}: {e}", e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Every (METHOD, template) pair the vendored spec declares.
pub fn operations() -> BTreeMap<(String, String), String> {
    let mut out = BTreeMap::new();
    for (template, ops) in spec()["paths"].as_object().expect("paths") {
        for (method, op) in ops.as_object().expect("ops") {
            if let Some(id) = op.get("operationId").and_then(Value::as_str) {
                out.insert(
                    (method.to_ascii_uppercase(), template.clone()),
                    id.to_string(),
                );
            }
        }
    }
    out
}
