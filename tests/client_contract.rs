//! Contract test: every request body the client sends validates against the `requestBody`
//! schema of its operation in Klaviyo's OpenAPI spec (revision 2026-07-15).
//!
//! The spec is read from `$KLAVIYO_OPENAPI_SPEC`, else `spec/klaviyo-openapi.json` in the
//! package, else the shared workspace copy; the test fails if none exists. The spec's schemas
//! are OpenAPI 3.0, so `nullable: true` is rewritten to `anyOf [schema, null]`, and every object
//! schema that lists `properties` is closed (`additionalProperties: false`) to catch misspelt
//! attribute names, which the spec alone would accept.

use std::path::PathBuf;

use klsync::klaviyo::{
    ClientConfig, KlaviyoClient, Operation, OptInProcess, ProfileAttributes, SegmentUpdate,
};
use klsync::settings::Secret;
use serde_json::{Map, Value, json};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

fn spec() -> Value {
    let candidates = [
        std::env::var_os("KLAVIYO_OPENAPI_SPEC").map(PathBuf::from),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("spec/klaviyo-openapi.json")),
        Some(PathBuf::from("/work/shared/klaviyo-openapi/stable.json")),
    ];
    let path = candidates
        .into_iter()
        .flatten()
        .find(|p| p.exists())
        .expect("Klaviyo OpenAPI spec not found; set KLAVIYO_OPENAPI_SPEC");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// OpenAPI 3.0 schema → JSON Schema 2020-12, closing objects with listed properties.
fn convert(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for child in map.values_mut() {
                convert(child);
            }
            let closable = map.get("properties").is_some_and(Value::is_object)
                && map.get("type") == Some(&json!("object"))
                && !map.contains_key("additionalProperties")
                && !map.contains_key("allOf");
            if closable {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            if map.remove("nullable") == Some(Value::Bool(true)) {
                let inner = Value::Object(std::mem::take(map));
                map.insert("anyOf".into(), json!([inner, {"type": "null"}]));
            }
        }
        Value::Array(items) => items.iter_mut().for_each(convert),
        _ => {}
    }
}

fn path_matches(template: &str, path: &str) -> bool {
    let template: Vec<&str> = template.split('/').collect();
    let path: Vec<&str> = path.split('/').collect();
    template.len() == path.len()
        && template
            .iter()
            .zip(&path)
            .all(|(t, p)| t.starts_with('{') || t == p)
}

#[tokio::test]
async fn every_request_body_validates_against_the_spec() {
    let server = MockServer::start().await;
    // One body every single-resource decoder accepts (unknown attributes are ignored).
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": {
            "type": "x", "id": "ID1",
            "attributes": {"name": "n", "status": "queued", "created_at": "2026-01-01T00:00:00+00:00",
                "total_count": 1, "exclusive": false, "default": false},
            "links": {"self": "x"}}, "links": {"self": "x"}})))
        .mount(&server)
        .await;
    let mut config = ClientConfig::new(server.uri(), Secret::new("pk_contract"));
    config.rate_limit_factor = None;
    let client = KlaviyoClient::new(config).unwrap();

    let mut properties = Map::new();
    properties.insert("plan".into(), json!("gold"));
    properties.insert("seats".into(), json!(3));
    let mut location = Map::new();
    location.insert("city".into(), json!("Boston"));
    location.insert("latitude".into(), json!(42.36));
    let full = ProfileAttributes {
        email: Some(Some("a@example.com".into())),
        phone_number: Some(Some("+15005550006".into())),
        external_id: Some(Some("crm-1".into())),
        first_name: Some(Some("Ada".into())),
        last_name: Some(None),
        organization: Some(Some("Acme".into())),
        locale: Some(Some("en-US".into())),
        title: Some(Some("CTO".into())),
        image: Some(None),
        location: Some(location),
        properties: Some(properties),
    };
    let ids = |prefix: &str| vec![format!("{prefix}1"), format!("{prefix}2")];
    let definition = json!({"condition_groups": [{"conditions": [{
        "type": "profile-property", "property": "properties['plan']",
        "filter": {"type": "string", "operator": "equals", "value": "gold"}}]}]});

    client
        .create_list("News", Some(OptInProcess::SingleOptIn))
        .await
        .unwrap();
    client.create_list("News2", None).await.unwrap();
    client
        .update_list("L1", Some("News 2"), Some(OptInProcess::DoubleOptIn))
        .await
        .unwrap();
    client.update_list("L1", None, None).await.unwrap();
    client
        .add_profiles_to_list("L1", &ids("01P"))
        .await
        .unwrap();
    client
        .remove_profiles_from_list("L1", &ids("01P"))
        .await
        .unwrap();
    client.create_profile(&full).await.unwrap();
    client
        .update_profile("01P", &full, &["old".into(), "older".into()])
        .await
        .unwrap();
    client
        .update_profile("01P", &ProfileAttributes::default(), &[])
        .await
        .unwrap();
    client.upsert_profile(&full).await.unwrap();
    client
        .create_bulk_import_job(&[full.clone(), full.clone()], &ids("L")[..1])
        .await
        .unwrap();
    client
        .create_bulk_import_job(std::slice::from_ref(&full), &[])
        .await
        .unwrap();
    client
        .create_segment("VIP", &definition, true)
        .await
        .unwrap();
    client
        .update_segment(
            "S1",
            &SegmentUpdate {
                name: Some("VIP+".into()),
                definition: Some(definition.clone()),
                is_starred: Some(false),
                is_active: Some(false),
            },
        )
        .await
        .unwrap();
    client.create_tag("t", Some("G1")).await.unwrap();
    client.create_tag("t", None).await.unwrap();
    client.update_tag("T1", "t2").await.unwrap();
    client.create_tag_group("g", true).await.unwrap();
    client.update_tag_group("G1", "g2").await.unwrap();
    client.tag_lists("T1", &ids("L")).await.unwrap();
    client.untag_lists("T1", &ids("L")).await.unwrap();
    client.tag_segments("T1", &ids("S")).await.unwrap();
    client.untag_segments("T1", &ids("S")).await.unwrap();

    let mut spec = spec();
    let mut components = spec["components"].take();
    convert(&mut components);
    let mut checked = std::collections::BTreeSet::new();
    let mut validators = std::collections::BTreeMap::new();
    let requests = server.received_requests().await.unwrap();
    let mut with_body = 0;
    for request in &requests {
        if request.body.is_empty() {
            continue;
        }
        with_body += 1;
        let method = request.method.as_str();
        let op = Operation::ALL
            .iter()
            .copied()
            .find(|op| {
                op.method() == method && path_matches(op.path_template(), request.url.path())
            })
            .unwrap_or_else(|| panic!("no operation for {method} {}", request.url.path()));
        let schema_ref = spec["paths"][op.path_template()][method.to_ascii_lowercase()]
            ["requestBody"]["content"]["application/vnd.api+json"]["schema"]["$ref"]
            .as_str()
            .unwrap_or_else(|| panic!("{} has no requestBody schema", op.operation_id()))
            .to_string();
        let validator = validators.entry(schema_ref.clone()).or_insert_with(|| {
            jsonschema::validator_for(&json!({"$ref": schema_ref, "components": components}))
                .unwrap()
        });
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&body)
            .map(|e| e.to_string())
            .collect();
        assert!(
            errors.is_empty(),
            "{} body does not match {schema_ref}: {errors:?}\n{body:#}",
            op.operation_id()
        );
        checked.insert(op.operation_id());
    }
    let expected = [
        "create_list",
        "update_list",
        "add_profiles_to_list",
        "remove_profiles_from_list",
        "create_profile",
        "update_profile",
        "create_or_update_profile",
        "bulk_import_profiles",
        "create_segment",
        "update_segment",
        "create_tag",
        "update_tag",
        "create_tag_group",
        "update_tag_group",
        "tag_lists",
        "remove_tag_from_lists",
        "tag_segments",
        "remove_tag_from_segments",
    ];
    assert_eq!(checked, expected.into_iter().collect());
    assert!(with_body >= expected.len());
}

#[test]
fn the_converted_schemas_reject_what_klaviyo_rejects() {
    // Guard against a vacuous contract: the same machinery must refuse bad bodies.
    let mut spec = spec();
    let mut components = spec["components"].take();
    convert(&mut components);
    let validator = |name: &str| {
        jsonschema::validator_for(&json!({"$ref": format!("#/components/schemas/{name}"),
            "components": components}))
        .unwrap()
    };
    let list = validator("ListCreateQuery");
    assert!(list.is_valid(&json!({"data": {"type": "list", "attributes": {"name": "x"}}})));
    assert!(!list.is_valid(&json!({"data": {"type": "list", "attributes": {}}})));
    assert!(!list.is_valid(&json!({"data": {"type": "lists", "attributes": {"name": "x"}}})));
    assert!(
        !list.is_valid(&json!({"data": {"type": "list", "attributes": {"name": "x", "optin": 1}}}))
    );
    let update = validator("ProfilePartialUpdateQuery");
    assert!(
        update.is_valid(&json!({"data": {"type": "profile", "id": "1",
        "attributes": {"first_name": null}, "meta": {"patch_properties": {"unset": ["a"]}}}}))
    );
    assert!(
        !update.is_valid(&json!({"data": {"type": "profile", "id": "1",
        "attributes": {}, "meta": {"patch_properties": {"unset": {"a": 1}}}}}))
    );
}
