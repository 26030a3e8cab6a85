//! Validates JSON bodies against Klaviyo's official OpenAPI spec (the vendored subset in
//! `vendor/klaviyo-openapi/klaviyo-subset.json`), with the emulator's own reading of it
//! (`klsync::emulator::spec`: `nullable`, a `oneOf` of scalar types read as `anyOf`), so the
//! tests and the emulator never read the spec differently.
//!
//! [`Objects::Closed`] is stricter than the spec: every object schema that lists `properties`
//! (and is not an `allOf` composition, whose parts must stay open) rejects other keys. Klaviyo
//! ignores or rejects unknown attributes depending on the endpoint, so a misspelt attribute in a
//! request would pass the published schema and silently do nothing; request bodies are checked
//! closed. Responses are checked as published, since Klaviyo may add fields at any time.
//!
//! The converter is the emulator's (`klsync::emulator::spec`); every contract test uses it through here.

use std::collections::BTreeMap;

use klsync::klaviyo::Operation;
use serde_json::{Value, json};

use klsync::emulator::spec::compiled;
pub use klsync::emulator::spec::{Objects, spec, to_json_schema_with};

/// Rewrites OpenAPI 3.0 schema objects into JSON Schema (draft 2020-12), as published.
pub fn to_json_schema(node: &Value) -> Value {
    to_json_schema_with(node, Objects::AsPublished)
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
