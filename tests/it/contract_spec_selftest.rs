//! Self-test of the OpenAPI contract checker: it must accept the spec's own shapes and reject
//! wrong ones, or every contract test built on it proves nothing.

use crate::support::openapi::{Body, match_path, validate_body};
use serde_json::json;

#[test]
fn matches_concrete_paths_to_templates() {
    assert_eq!(match_path("/api/lists/Y6nRLr"), Some("/api/lists/{id}"));
    assert_eq!(
        match_path("/api/lists/Y6nRLr/relationships/profiles"),
        Some("/api/lists/{id}/relationships/profiles")
    );
    assert_eq!(match_path("/api/lists"), Some("/api/lists"));
    assert_eq!(match_path("/api/nope"), None);
}

#[test]
fn accepts_a_valid_create_list_body_and_rejects_broken_ones() {
    let good = json!({"data": {"type": "list", "attributes": {"name": "VIP"}}});
    validate_body("POST", "/api/lists", Body::Request, &good).expect("valid body");

    let wrong_type = json!({"data": {"type": "segment", "attributes": {"name": "VIP"}}});
    assert!(validate_body("POST", "/api/lists", Body::Request, &wrong_type).is_err());

    let missing_name = json!({"data": {"type": "list", "attributes": {}}});
    assert!(validate_body("POST", "/api/lists", Body::Request, &missing_name).is_err());
}

#[test]
fn nullable_fields_accept_null() {
    let response = json!({
        "data": {
            "type": "list",
            "id": "Y6nRLr",
            "attributes": {"name": "VIP", "created": "2022-11-08T00:00:00+00:00",
                            "updated": "2022-11-08T00:00:00+00:00", "opt_in_process": null},
            "relationships": {},
            "links": {"self": "https://a.klaviyo.com/api/lists/Y6nRLr"}
        },
        "links": {"self": "https://a.klaviyo.com/api/lists"}
    });
    let result = validate_body("POST", "/api/lists", Body::Response(201), &response);
    assert!(result.is_ok(), "{result:?}");
}

#[test]
fn error_bodies_are_checked_against_the_error_schema() {
    let error = json!({"errors": [{"id": "x", "code": "invalid", "title": "Invalid input.",
                                    "detail": "bad", "source": {"pointer": "/data"}}]});
    validate_body("POST", "/api/lists", Body::Response(400), &error).expect("valid error");
    let broken = json!({"errors": [{"code": "invalid"}]});
    assert!(validate_body("POST", "/api/lists", Body::Response(400), &broken).is_err());
}

/// The scopes klsync names (in plans and 403 errors) and the emulator enforces are the spec's.
#[test]
fn operation_scopes_are_the_specs() {
    use klsync::klaviyo::Operation;
    let spec = crate::support::openapi::spec();
    for op in Operation::ALL {
        let declared: Vec<&str> =
            spec["paths"][op.path_template()][op.method().to_lowercase()]["x-klaviyo-scopes"]
                .as_array()
                .unwrap_or_else(|| panic!("{} has no x-klaviyo-scopes", op.operation_id()))
                .iter()
                .map(|scope| scope.as_str().expect("a scope"))
                .collect();
        assert_eq!(op.scopes(), declared.as_slice(), "{}", op.operation_id());
    }
}

#[test]
fn a_oneof_of_integer_or_number_takes_an_integer() {
    // Klaviyo's numeric filter value is `oneOf: [integer, number]`; read literally, 100 would
    // match both and be refused.
    let definition = json!({"condition_groups": [{"conditions": [{
        "type": "profile-property",
        "property": "properties['ltv']",
        "filter": {"type": "numeric", "operator": "greater-than", "value": 100}
    }]}]});
    let body = json!({"data": {"type": "segment", "attributes": {"name": "Big", "definition": definition}}});
    validate_body("POST", "/api/segments", Body::Request, &body).expect("an integer value");
    let mut wrong = body.clone();
    wrong["data"]["attributes"]["definition"]["condition_groups"][0]["conditions"][0]["filter"]["value"] =
        json!("100");
    assert!(validate_body("POST", "/api/segments", Body::Request, &wrong).is_err());
}
