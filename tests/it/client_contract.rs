//! Contract test: every request body the client sends validates against the `requestBody`
//! schema of its operation in Klaviyo's OpenAPI spec (revision 2026-07-15, the vendored subset),
//! with object schemas closed (see `support::openapi`) so misspelt attribute names fail too.

use crate::support::openapi::{Body, Objects, validate_component, validate_operation};
use klsync::klaviyo::{
    ClientConfig, KlaviyoClient, Operation, OptInProcess, ProfileAttributes, SegmentUpdate,
};
use klsync::settings::Secret;
use serde_json::{Map, Value, json};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

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

    let mut checked = std::collections::BTreeSet::new();
    let requests = server.received_requests().await.unwrap();
    let mut with_body = 0;
    for request in &requests {
        if request.body.is_empty() {
            continue;
        }
        with_body += 1;
        let method = request.method.as_str();
        let op = klsync::klaviyo::operations::operation_for(method, request.url.path())
            .unwrap_or_else(|| panic!("no operation for {method} {}", request.url.path()));
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        if let Err(errors) = validate_operation(op, Body::Request, &body) {
            panic!(
                "{} body does not match the spec: {errors:#?}\n{body:#}",
                op.operation_id()
            );
        }
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
    let list = |body: Value| validate_component("ListCreateQuery", &body, Objects::Closed);
    assert!(list(json!({"data": {"type": "list", "attributes": {"name": "x"}}})).is_ok());
    assert!(list(json!({"data": {"type": "list", "attributes": {}}})).is_err());
    assert!(list(json!({"data": {"type": "lists", "attributes": {"name": "x"}}})).is_err());
    let misspelt = json!({"data": {"type": "list", "attributes": {"name": "x", "optin": 1}}});
    assert!(list(misspelt.clone()).is_err());
    // As published the spec leaves attributes open: closing objects is what catches the typo.
    assert!(validate_component("ListCreateQuery", &misspelt, Objects::AsPublished).is_ok());
    let update =
        |body: Value| validate_component("ProfilePartialUpdateQuery", &body, Objects::Closed);
    assert!(
        update(json!({"data": {"type": "profile", "id": "1",
        "attributes": {"first_name": null}, "meta": {"patch_properties": {"unset": ["a"]}}}}))
        .is_ok()
    );
    assert!(
        update(json!({"data": {"type": "profile", "id": "1",
        "attributes": {}, "meta": {"patch_properties": {"unset": {"a": 1}}}}}))
        .is_err()
    );
    // The operation-level entry point closes request bodies.
    assert!(validate_operation(Operation::CreateList, Body::Request, &misspelt).is_err());
}
