//! Self-test of the OpenAPI contract checker: it must accept the spec's own shapes and reject
//! wrong ones, or every contract test built on it proves nothing.

mod support;

use serde_json::json;
use support::openapi::{Body, match_path, validate_body};

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
