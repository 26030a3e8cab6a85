//! The Klaviyo client against a scripted HTTP server: headers, retries, recovery, errors,
//! pagination, chunking and size limits.

use std::time::{Duration, Instant};

use futures::TryStreamExt;
use klsync::klaviyo::{
    ApiError, ClientConfig, KlaviyoClient, Operation, OptInProcess, ProfileAttributes,
    ProfileIdentifier,
};
use klsync::settings::{DEFAULT_REVISION, Secret};
use serde_json::{Value, json};
use wiremock::matchers::{
    body_partial_json, header, method, path, query_param, query_param_is_missing,
};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = "pk_test_0123456789abcdef";

fn client(server: &MockServer) -> KlaviyoClient {
    let mut config = ClientConfig::new(server.uri(), Secret::new(KEY));
    config.rate_limit_factor = None;
    config.backoff_base = Duration::from_millis(10);
    config.max_attempts = 4;
    KlaviyoClient::new(config).unwrap()
}

fn list_resource(id: &str, name: &str) -> Value {
    json!({"type": "list", "id": id,
        "attributes": {"name": name, "opt_in_process": "single_opt_in",
            "created": "2026-01-01T00:00:00+00:00", "updated": "2026-01-01T00:00:00+00:00"},
        "links": {"self": format!("https://a.klaviyo.com/api/lists/{id}")}})
}

fn json_api(status: u16, body: Value) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(body.to_string(), "application/vnd.api+json")
}

#[tokio::test]
async fn sends_auth_revision_and_media_type_headers() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/lists"))
        .and(header(
            "authorization",
            format!("Klaviyo-API-Key {KEY}").as_str(),
        ))
        .and(header("revision", DEFAULT_REVISION))
        .and(header("accept", "application/vnd.api+json"))
        .and(header("content-type", "application/vnd.api+json"))
        .and(body_partial_json(json!({"data": {"type": "list",
            "attributes": {"name": "Newsletter", "opt_in_process": "double_opt_in"}}})))
        .respond_with(json_api(
            201,
            json!({"data": list_resource("L1", "Newsletter")}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let list = client(&server)
        .create_list("Newsletter", Some(OptInProcess::DoubleOptIn))
        .await
        .unwrap();
    assert_eq!(list.id, "L1");
    assert_eq!(list.name, "Newsletter");
}

#[tokio::test]
async fn waits_retry_after_on_429_then_succeeds() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/lists/L1"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/lists/L1"))
        .respond_with(json_api(200, json!({"data": list_resource("L1", "A")})))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);
    let started = Instant::now();
    let list = client.get_list("L1").await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(list.id, "L1");
    let metrics = client.metrics();
    assert_eq!(metrics.rate_limited, 1);
    assert_eq!(metrics.retries, 1);
    assert_eq!(metrics.requests["get_list"], 2);
    assert!(metrics.retry_wait_ms >= 1000);
}

#[tokio::test]
async fn retry_after_longer_than_the_cap_fails_fast() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "3600"))
        .expect(1)
        .mount(&server)
        .await;
    let err = client(&server).get_list("L1").await.unwrap_err();
    assert!(
        matches!(err, ApiError::RateLimitExhausted { attempts: 1, retry_after: Some(d), .. } if d == Duration::from_secs(3600)),
        "{err:?}"
    );
}

#[tokio::test]
async fn backs_off_on_5xx_for_a_get_then_succeeds() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/segments/S1"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/segments/S1"))
        .and(query_param("include", "tags"))
        .respond_with(json_api(
            200,
            json!({"data": {"type": "segment", "id": "S1",
            "attributes": {"name": "VIP", "definition": {"condition_groups": []},
                "is_active": true, "is_processing": false, "is_starred": false},
            "relationships": {"tags": {"data": [{"type": "tag", "id": "t9"}]}},
            "links": {"self": "x"}}}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);
    let segment = client.get_segment("S1").await.unwrap();
    assert_eq!(segment.tag_ids, vec!["t9".to_string()]);
    assert_eq!(client.metrics().retries, 2);
}

#[tokio::test]
async fn gives_up_on_5xx_after_max_attempts() {
    let server = MockServer::start().await;
    Mock::given(method("DELETE"))
        .respond_with(ResponseTemplate::new(500))
        .expect(4)
        .mount(&server)
        .await;
    let err = client(&server).delete_list("L1").await.unwrap_err();
    assert_eq!(err.status(), Some(500));
}

#[tokio::test]
async fn ambiguous_list_create_recovers_by_name_without_a_second_post() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/lists"))
        .respond_with(ResponseTemplate::new(500))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/lists"))
        .and(query_param("filter", r#"equals(name,["Newsletter"])"#))
        .respond_with(json_api(
            200,
            json!({"data": [list_resource("L7", "Newsletter")],
            "links": {"self": "x", "next": null}}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);
    let list = client.create_list("Newsletter", None).await.unwrap();
    assert_eq!(list.id, "L7");
    assert_eq!(client.metrics().recovered_creates, 1);
}

#[tokio::test]
async fn ambiguous_create_that_did_not_happen_is_sent_again() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/tag-groups"))
        .respond_with(ResponseTemplate::new(502))
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/tag-groups"))
        .respond_with(json_api(
            201,
            json!({"data": {"type": "tag-group", "id": "G1",
            "attributes": {"name": "Team", "exclusive": true, "default": false},
            "links": {"self": "x"}}}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/tag-groups"))
        .and(query_param("filter", r#"equals(name,"Team")"#))
        .respond_with(json_api(200, json!({"data": [], "links": {"self": "x"}})))
        .expect(1)
        .mount(&server)
        .await;
    let group = client(&server)
        .create_tag_group("Team", true)
        .await
        .unwrap();
    assert_eq!(group.id, "G1");
    assert!(group.exclusive);
}

#[tokio::test]
async fn client_error_is_typed_and_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/profiles"))
        .respond_with(json_api(
            400,
            json!({"errors": [{"id": "e1", "status": 400,
            "code": "invalid", "title": "Invalid input.",
            "detail": "Invalid email address", "source": {"pointer": "/data/attributes/email"},
            "links": {}, "meta": {}}]}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let attributes = ProfileAttributes {
        email: Some(Some("not-an-email".into())),
        ..ProfileAttributes::default()
    };
    let err = client(&server)
        .create_profile(&attributes)
        .await
        .unwrap_err();
    let ApiError::Klaviyo {
        status,
        errors,
        operation,
    } = &err
    else {
        panic!("unexpected {err:?}");
    };
    assert_eq!(*status, 400);
    assert_eq!(*operation, Operation::CreateProfile);
    assert_eq!(errors[0].code, "invalid");
    assert_eq!(errors[0].detail, "Invalid email address");
    assert_eq!(
        errors[0].source_pointer.as_deref(),
        Some("/data/attributes/email")
    );
    assert!(!err.is_ambiguous());
}

#[tokio::test]
async fn duplicate_profile_conflict_exposes_the_existing_id() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/profiles"))
        .respond_with(json_api(
            409,
            json!({"errors": [{"id": "e", "status": 409,
            "code": "duplicate_profile", "title": "Conflict.",
            "detail": "A profile already exists with one of these identifiers.",
            "source": {"pointer": "/data/attributes"}, "links": {},
            "meta": {"duplicate_profile_id": "01GDDKASAP8TKDDA2GRZDSVP4H"}}]}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let attributes = ProfileAttributes {
        email: Some(Some("a@example.com".into())),
        ..ProfileAttributes::default()
    };
    let err = client(&server)
        .create_profile(&attributes)
        .await
        .unwrap_err();
    assert_eq!(
        err.duplicate_profile_id(),
        Some("01GDDKASAP8TKDDA2GRZDSVP4H")
    );
}

#[tokio::test]
async fn pagination_follows_links_next_across_three_pages() {
    let server = MockServer::start().await;
    let uri = server.uri();
    Mock::given(method("GET"))
        .and(path("/api/lists"))
        .and(query_param_is_missing("page[cursor]"))
        .and(query_param("page[size]", "10"))
        .respond_with(json_api(200, json!({"data": [list_resource("L1", "a"), list_resource("L2", "b")],
            "links": {"self": "x", "next": format!("{uri}/api/lists?page%5Bcursor%5D=c2&page%5Bsize%5D=10")}})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/lists"))
        .and(query_param("page[cursor]", "c2"))
        .respond_with(json_api(200, json!({"data": [list_resource("L3", "c")],
            // A next link naming another host is re-rooted on the configured base URL.
            "links": {"self": "x", "next": "https://elsewhere.invalid/api/lists?page%5Bcursor%5D=c3"}})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/lists"))
        .and(query_param("page[cursor]", "c3"))
        .respond_with(json_api(
            200,
            json!({"data": [list_resource("L4", "d")],
            "links": {"self": "x"}}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let ids: Vec<String> = client(&server)
        .list_lists(false)
        .map_ok(|list| list.id)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(ids, ["L1", "L2", "L3", "L4"]);
}

#[tokio::test]
async fn list_membership_is_chunked_to_1000_ids() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/lists/L1/relationships/profiles"))
        .respond_with(ResponseTemplate::new(204))
        .expect(3)
        .mount(&server)
        .await;
    let ids: Vec<String> = (0..2500).map(|i| format!("01P{i:05}")).collect();
    client(&server)
        .add_profiles_to_list("L1", &ids)
        .await
        .unwrap();
    let sizes: Vec<usize> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| {
            r.body_json::<Value>().unwrap()["data"]
                .as_array()
                .unwrap()
                .len()
        })
        .collect();
    assert_eq!(sizes, [1000, 1000, 500]);
}

#[tokio::test]
async fn find_profiles_batches_any_filters_by_100() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/profiles"))
        .respond_with(json_api(
            200,
            json!({"data": [{"type": "profile", "id": "01P",
            "attributes": {"email": "a@example.com", "properties": null}, "links": {"self": "x"}}],
            "links": {"self": "x", "next": null}}),
        ))
        .expect(2)
        .mount(&server)
        .await;
    let emails: Vec<String> = (0..150).map(|i| format!("u{i}@example.com")).collect();
    let found = client(&server)
        .find_profiles_by(ProfileIdentifier::Email, &emails)
        .await
        .unwrap();
    assert_eq!(found.len(), 2);
    let requests = server.received_requests().await.unwrap();
    let filter = requests[0]
        .url
        .query_pairs()
        .find(|(k, _)| k == "filter")
        .unwrap()
        .1
        .into_owned();
    assert!(
        filter.starts_with(r#"any(email,["u0@example.com","#),
        "{filter}"
    );
    assert_eq!(filter.matches('@').count(), 100);
}

#[tokio::test]
async fn bulk_import_limits_are_enforced_before_sending() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(202))
        .expect(0)
        .mount(&server)
        .await;
    let client = client(&server);
    let profile = |i: usize| ProfileAttributes {
        email: Some(Some(format!("u{i}@example.com"))),
        ..ProfileAttributes::default()
    };
    let too_many: Vec<ProfileAttributes> = (0..10_001).map(profile).collect();
    let err = client
        .create_bulk_import_job(&too_many, &[])
        .await
        .unwrap_err();
    assert!(matches!(err, ApiError::TooLarge { .. }), "{err:?}");

    let mut big = serde_json::Map::new();
    big.insert("blob".into(), Value::String("x".repeat(600)));
    let too_big: Vec<ProfileAttributes> = (0..10_000)
        .map(|i| ProfileAttributes {
            properties: Some(big.clone()),
            ..profile(i)
        })
        .collect();
    let err = client
        .create_bulk_import_job(&too_big, &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, ApiError::TooLarge { ref detail, .. } if detail.contains("bytes")),
        "{err:?}"
    );
}

#[tokio::test]
async fn upsert_reports_created_versus_updated() {
    let server = MockServer::start().await;
    let profile = json!({"data": {"type": "profile", "id": "01P",
        "attributes": {"email": "a@example.com"}, "links": {"self": "x"}}});
    Mock::given(method("POST"))
        .and(path("/api/profile-import"))
        .respond_with(json_api(201, profile.clone()))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/profile-import"))
        .respond_with(json_api(200, profile))
        .mount(&server)
        .await;
    let client = client(&server);
    let attributes = ProfileAttributes {
        email: Some(Some("a@example.com".into())),
        ..ProfileAttributes::default()
    };
    assert!(client.upsert_profile(&attributes).await.unwrap().created);
    assert!(!client.upsert_profile(&attributes).await.unwrap().created);
}

#[tokio::test]
async fn undecodable_success_body_is_a_decode_error_with_a_snippet() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>oops</html>"))
        .mount(&server)
        .await;
    let err = client(&server).get_list("L1").await.unwrap_err();
    let ApiError::Decode { body_snippet, .. } = &err else {
        panic!("{err:?}");
    };
    assert!(body_snippet.contains("oops"));
}

#[tokio::test]
async fn segment_deactivation_is_sent_alone() {
    let server = MockServer::start().await;
    let segment = json!({"data": {"type": "segment", "id": "S1",
        "attributes": {"name": "New", "is_active": false, "is_processing": false, "is_starred": false},
        "links": {"self": "x"}}});
    Mock::given(method("PATCH"))
        .and(path("/api/segments/S1"))
        .respond_with(json_api(200, segment))
        .expect(2)
        .mount(&server)
        .await;
    let update = klsync::klaviyo::SegmentUpdate {
        name: Some("New".into()),
        is_active: Some(false),
        ..Default::default()
    };
    client(&server).update_segment("S1", &update).await.unwrap();
    let bodies: Vec<Value> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.body_json::<Value>().unwrap()["data"]["attributes"].clone())
        .collect();
    assert_eq!(
        bodies,
        [json!({"name": "New"}), json!({"is_active": false})]
    );
}

#[tokio::test]
async fn timeouts_are_typed_and_retried_for_repeatable_requests() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/tags"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(2)))
        .expect(2)
        .mount(&server)
        .await;
    let mut config = ClientConfig::new(server.uri(), Secret::new(KEY));
    config.rate_limit_factor = None;
    config.backoff_base = Duration::from_millis(10);
    config.max_attempts = 2;
    config.timeout = Duration::from_millis(200);
    let client = KlaviyoClient::new(config).unwrap();
    let err = client
        .list_tags()
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ApiError::Timeout {
                operation: Operation::GetTags,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_ambiguous());
}

#[tokio::test]
async fn daily_cap_fails_fast_and_is_shared_by_clones() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/segments"))
        .respond_with(json_api(201, json!({"data": {"type": "segment", "id": "S1",
            "attributes": {"name": "A", "is_active": true, "is_processing": true, "is_starred": false},
            "links": {"self": "x"}}})))
        .expect(1)
        .mount(&server)
        .await;
    let mut config = ClientConfig::new(server.uri(), Secret::new(KEY));
    // Scaled so the 100/day segment-create cap becomes 1/day.
    config.rate_limit_factor = Some(0.01);
    let client = KlaviyoClient::new(config).unwrap();
    let definition = json!({"condition_groups": []});
    client
        .create_segment("A", &definition, false)
        .await
        .unwrap();
    let started = Instant::now();
    let err = client
        .clone()
        .create_segment("B", &definition, false)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ApiError::DailyCapReached {
                operation: Operation::CreateSegment,
                cap: 1
            }
        ),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "must not wait for the limiter"
    );
    assert!(
        err.to_string().starts_with("create_segment: daily limit"),
        "{err}"
    );
}

#[tokio::test]
async fn delete_that_404s_after_an_unanswered_attempt_counts_as_done() {
    let server = MockServer::start().await;
    Mock::given(method("DELETE"))
        .and(path("/api/tags/T1"))
        .respond_with(ResponseTemplate::new(504))
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/api/tags/T1"))
        .respond_with(json_api(
            404,
            json!({"errors": [{"id": "e", "code": "not_found",
            "title": "Not found.", "detail": "Tag not found"}]}),
        ))
        .expect(2)
        .mount(&server)
        .await;
    let client = client(&server);
    client.delete_tag("T1").await.unwrap();
    // Without an earlier ambiguous attempt, a 404 is the caller's problem.
    let err = client.delete_tag("T1").await.unwrap_err();
    assert_eq!(err.status(), Some(404));
}

#[tokio::test]
async fn client_paces_requests_and_reports_the_wait() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/lists/L1"))
        .respond_with(json_api(200, json!({"data": list_resource("L1", "A")})))
        .expect(4)
        .mount(&server)
        .await;
    let mut config = ClientConfig::new(server.uri(), Secret::new(KEY));
    // GET /lists/{id} at 4% of 75/s: 3/s. Three go at once, the fourth a second after the
    // first.
    config.rate_limit_factor = Some(0.04);
    let client = KlaviyoClient::new(config).unwrap();
    let started = Instant::now();
    for _ in 0..4 {
        client.clone().get_list("L1").await.unwrap();
    }
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(
        client.metrics().limiter_wait_ms >= 900,
        "{:?}",
        client.metrics()
    );
}

#[tokio::test]
async fn ambiguous_profile_create_that_lands_late_resolves_its_409() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/profiles"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/profiles"))
        .and(query_param("filter", r#"any(email,["late@example.com"])"#))
        .respond_with(json_api(200, json!({"data": [], "links": {"self": "x"}})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/profiles"))
        .respond_with(json_api(409, json!({"errors": [{"id": "e", "code": "duplicate_profile",
            "title": "Conflict.", "detail": "exists", "meta": {"duplicate_profile_id": "01LATE"}}]})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/profiles/01LATE"))
        .respond_with(json_api(
            200,
            json!({"data": {"type": "profile", "id": "01LATE",
            "attributes": {"email": "late@example.com"}, "links": {"self": "x"}}}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let attributes = ProfileAttributes {
        email: Some(Some("late@example.com".into())),
        ..ProfileAttributes::default()
    };
    let profile = client(&server).create_profile(&attributes).await.unwrap();
    assert_eq!(profile.id, "01LATE");
}

/// Every operation's future and stream can be handed to `tokio::spawn`. The check is made by
/// the compiler; the future is built and dropped without running.
#[test]
fn operations_are_send() {
    fn send<T: Send + 'static>(_: T) {}
    let client =
        KlaviyoClient::new(ClientConfig::new("http://127.0.0.1:9", Secret::new(KEY))).unwrap();
    let attributes = ProfileAttributes::default();
    let ids: Vec<String> = Vec::new();
    let definition = json!({});
    send(async move {
        let c = &client;
        let _ = c.get_profile("x").await;
        let _ = c.find_profiles_by(ProfileIdentifier::Email, &ids).await;
        let _ = c.create_profile(&attributes).await;
        let _ = c.update_profile("x", &attributes, &ids).await;
        let _ = c.upsert_profile(&attributes).await;
        let _ = c.create_bulk_import_job(&[], &ids).await;
        let _ = c.get_bulk_import_job("x").await;
        let _ = c.get_list("x").await;
        let _ = c.create_list("x", None).await;
        let _ = c.update_list("x", None, None).await;
        let _ = c.delete_list("x").await;
        let _ = c.add_profiles_to_list("x", &ids).await;
        let _ = c.remove_profiles_from_list("x", &ids).await;
        let _ = c.get_segment("x").await;
        let _ = c.create_segment("x", &definition, false).await;
        let _ = c.update_segment("x", &Default::default()).await;
        let _ = c.delete_segment("x").await;
        let _ = c.create_tag("x", None).await;
        let _ = c.update_tag("x", "y").await;
        let _ = c.delete_tag("x").await;
        let _ = c.tag_lists("x", &ids).await;
        let _ = c.untag_lists("x", &ids).await;
        let _ = c.tag_segments("x", &ids).await;
        let _ = c.untag_segments("x", &ids).await;
        let _ = c.list_ids_for_tag("x").await;
        let _ = c.segment_ids_for_tag("x").await;
        let _ = c.create_tag_group("x", false).await;
        let _ = c.update_tag_group("x", "y").await;
        let _ = c.delete_tag_group("x").await;
        let _ = c.tag_ids_for_group("x").await;
        let _ = c.list_lists(true).try_collect::<Vec<_>>().await;
        let _ = c.list_segments(true).try_collect::<Vec<_>>().await;
        let _ = c.list_tags().try_collect::<Vec<_>>().await;
        let _ = c.list_tag_groups().try_collect::<Vec<_>>().await;
        let _ = c.list_profiles().try_collect::<Vec<_>>().await;
        let _ = c.list_member_ids("x").try_collect::<Vec<_>>().await;
        let _ = c.segment_member_ids("x").try_collect::<Vec<_>>().await;
        let _ = c.bulk_import_errors("x").try_collect::<Vec<_>>().await;
    });
}
