//! The emulator over real HTTP: strictness, resources, pagination, tag rules, profiles.

use klsync::emulator::{self, EmulatorConfig, EmulatorHandle, RateLimitMode};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const KEY: &str = "pk_test";

async fn start() -> EmulatorHandle {
    emulator::start(EmulatorConfig {
        rate_limits: RateLimitMode::Off,
        api_keys: vec![KEY.into()],
        seed: 42,
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator starts")
}

struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    fn new(handle: &EmulatorHandle) -> Self {
        Api {
            base: handle.base_url.clone(),
            client: reqwest::Client::new(),
        }
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .header("Authorization", format!("Klaviyo-API-Key {KEY}"))
            .header("revision", "2026-07-15")
            .header("accept", "application/vnd.api+json")
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.request(method, path);
        if let Some(body) = body {
            req = req
                .header("content-type", "application/vnd.api+json")
                .body(body.to_string());
        }
        let resp = req.send().await.expect("request is answered");
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).expect("body is JSON")
        };
        (status, value)
    }

    async fn create_list(&self, name: &str) -> String {
        let (status, body) = self
            .send(
                Method::POST,
                "/api/lists",
                Some(json!({"data": {"type": "list", "attributes": {"name": name}}})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["data"]["id"].as_str().unwrap().to_owned()
    }

    async fn create_profile(&self, email: &str) -> String {
        let (status, body) = self
            .send(
                Method::POST,
                "/api/profiles",
                Some(json!({"data": {"type": "profile", "attributes": {"email": email}}})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["data"]["id"].as_str().unwrap().to_owned()
    }

    async fn create_tag(&self, name: &str, group: Option<&str>) -> (StatusCode, Value) {
        let mut data = json!({"type": "tag", "attributes": {"name": name}});
        if let Some(group) = group {
            data["relationships"] =
                json!({"tag-group": {"data": {"type": "tag-group", "id": group}}});
        }
        self.send(Method::POST, "/api/tags", Some(json!({ "data": data })))
            .await
    }
}

fn pointer(body: &Value) -> &str {
    body["errors"][0]["source"]["pointer"]
        .as_str()
        .unwrap_or("")
}

#[tokio::test]
async fn auth_revision_media_type_and_method_are_enforced() {
    let handle = start().await;
    let api = Api::new(&handle);
    let url = format!("{}/api/lists", api.base);

    let resp = api
        .client
        .get(&url)
        .header("revision", "2026-07-15")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = api
        .client
        .get(&url)
        .header("Authorization", "Klaviyo-API-Key wrong")
        .header("revision", "2026-07-15")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    let resp = api
        .client
        .get(&url)
        .header("Authorization", format!("Klaviyo-API-Key {KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "invalid");
    assert_eq!(body["errors"][0]["status"], 400);
    assert_eq!(body["errors"][0]["title"], "Invalid input.");

    for (revision, ok) in [
        ("2026-07-15", true),
        ("2025-01-15.pre", true),
        ("2026-13-01", false),
        ("latest", false),
    ] {
        let resp = api
            .client
            .get(&url)
            .header("Authorization", format!("Klaviyo-API-Key {KEY}"))
            .header("revision", revision)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().is_success(), ok, "revision {revision}");
    }

    let resp = api
        .request(Method::POST, "/api/lists")
        .header("content-type", "text/plain")
        .body(json!({"data": {"type": "list", "attributes": {"name": "x"}}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let resp = api
        .request(Method::POST, "/api/lists")
        .header("content-type", "application/json")
        .body(json!({"data": {"type": "list", "attributes": {"name": "x"}}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.headers()["content-type"], "application/vnd.api+json");

    let (status, _) = api.send(Method::PUT, "/api/lists", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _) = api.send(Method::GET, "/api/nothing-here", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api.send(Method::GET, "/api/lists/", None).await;
    assert_eq!(status, StatusCode::OK, "one trailing slash is accepted");
    let (status, body) = api.send(Method::GET, "/api/lists/NOPE00", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["errors"][0]["status"], 404);
    handle.shutdown().await;
}

#[tokio::test]
async fn invalid_bodies_point_at_the_problem() {
    let handle = start().await;
    let api = Api::new(&handle);
    let (status, body) = api
        .send(
            Method::POST,
            "/api/lists",
            Some(json!({"data": {"type": "segment", "attributes": {"name": "x"}}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(pointer(&body), "/data/type");
    let (status, body) = api
        .send(
            Method::POST,
            "/api/lists",
            Some(json!({"data": {"type": "list", "attributes": {}}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(pointer(&body), "/data/attributes/name");
    let id = api.create_list("Original").await;
    let (status, body) = api
        .send(
            Method::PATCH,
            &format!("/api/lists/{id}"),
            Some(json!({"data": {"type": "list", "id": "other", "attributes": {"name": "y"}}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(pointer(&body), "/data/id");
    let resp = api
        .request(Method::POST, "/api/lists")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    handle.shutdown().await;
}

#[tokio::test]
async fn list_lifecycle_and_shapes() {
    let handle = start().await;
    let api = Api::new(&handle);
    let id = api.create_list("Newsletter").await;
    assert_eq!(id.len(), 6);
    let (status, body) = api
        .send(
            Method::GET,
            &format!("/api/lists/{id}?additional-fields[list]=profile_count"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["attributes"]["name"], "Newsletter");
    assert_eq!(body["data"]["attributes"]["profile_count"], 0);
    assert!(
        body["links"]["self"]
            .as_str()
            .unwrap()
            .starts_with(&api.base)
    );
    let created = body["data"]["attributes"]["created"].as_str().unwrap();
    assert!(
        created.ends_with("+00:00") && created.len() == 25,
        "{created}"
    );

    let (status, body) = api
        .send(
            Method::PATCH,
            &format!("/api/lists/{id}"),
            Some(json!({"data": {"type": "list", "id": id, "attributes": {"name": "Weekly", "opt_in_process": "double_opt_in"}}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["data"]["attributes"]["opt_in_process"],
        "double_opt_in"
    );

    let (_, body) = api
        .send(
            Method::GET,
            "/api/lists?filter=equals(name,[%22Weekly%22])",
            None,
        )
        .await;
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
    let (status, body) = api
        .send(Method::GET, "/api/lists?filter=equals(name,Weekly)", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"][0]["source"]["parameter"], "filter");

    let (status, _) = api
        .send(Method::DELETE, &format!("/api/lists/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api
        .send(Method::GET, &format!("/api/lists/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    handle.shutdown().await;
}

#[tokio::test]
async fn pagination_follows_next_links_across_pages() {
    let handle = start().await;
    handle.seed(|s| {
        for i in 0..23 {
            s.create_list(&format!("List {i:02}"), None);
        }
    });
    let api = Api::new(&handle);
    let mut url = format!("{}/api/lists", api.base);
    let mut names = Vec::new();
    let mut pages = 0;
    loop {
        let resp = api
            .client
            .get(&url)
            .header("Authorization", format!("Klaviyo-API-Key {KEY}"))
            .header("revision", "2026-07-15")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body: Value = resp.json().await.unwrap();
        pages += 1;
        for item in body["data"].as_array().unwrap() {
            names.push(item["attributes"]["name"].as_str().unwrap().to_owned());
        }
        match body["links"]["next"].as_str() {
            Some(next) => url = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..23).map(|i| format!("List {i:02}")).collect();
    assert_eq!(names, expected);
    let (status, _) = api
        .send(Method::GET, "/api/lists?page[size]=11", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = api
        .send(Method::GET, "/api/lists?page[cursor]=garbage", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    handle.shutdown().await;
}

#[tokio::test]
async fn list_membership_add_remove_and_limits() {
    let handle = start().await;
    let api = Api::new(&handle);
    let list = api.create_list("Members").await;
    let a = api.create_profile("a@example.com").await;
    let b = api.create_profile("b@example.com").await;
    let path = format!("/api/lists/{list}/relationships/profiles");
    let (status, _) = api
        .send(
            Method::POST,
            &path,
            Some(json!({"data": [{"type": "profile", "id": a}, {"type": "profile", "id": b}]})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, body) = api.send(Method::GET, &path, None).await;
    assert_eq!(
        body["data"],
        json!([{"type": "profile", "id": a}, {"type": "profile", "id": b}])
    );
    let (_, body) = api
        .send(Method::GET, &format!("/api/lists/{list}/profiles"), None)
        .await;
    assert!(body["data"][0]["attributes"]["joined_group_at"].is_string());

    let (status, _) = api
        .send(
            Method::DELETE,
            &path,
            Some(json!({"data": [{"type": "profile", "id": a}]})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, body) = api.send(Method::GET, &path, None).await;
    assert_eq!(body["data"], json!([{"type": "profile", "id": b}]));

    let (status, body) = api
        .send(
            Method::POST,
            &path,
            Some(json!({"data": [{"type": "profile", "id": "01UNKNOWN0000000000000000X"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(pointer(&body), "/data/0/id");
    let too_many: Vec<Value> = (0..1001)
        .map(|_| json!({"type": "profile", "id": a}))
        .collect();
    let (status, _) = api
        .send(Method::POST, &path, Some(json!({ "data": too_many })))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    handle.shutdown().await;
}

#[tokio::test]
async fn tags_default_group_exclusivity_and_limits() {
    let handle = start().await;
    let api = Api::new(&handle);
    let (status, body) = api.create_tag("Plain", None).await;
    assert_eq!(status, StatusCode::CREATED);
    let default_group = body["data"]["relationships"]["tag-group"]["data"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, group) = api
        .send(
            Method::GET,
            &format!("/api/tag-groups/{default_group}"),
            None,
        )
        .await;
    assert_eq!(group["data"]["attributes"]["default"], true);
    let (status, _) = api
        .send(
            Method::DELETE,
            &format!("/api/tag-groups/{default_group}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, body) = api
        .send(Method::POST, "/api/tag-groups", Some(json!({"data": {"type": "tag-group", "attributes": {"name": "Region", "exclusive": true}}})))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["data"]["attributes"]["exclusive"], true);
    assert_eq!(body["data"]["attributes"]["default"], false);
    let region = body["data"]["id"].as_str().unwrap().to_owned();
    let (_, eu) = api.create_tag("EU", Some(&region)).await;
    let (_, us) = api.create_tag("US", Some(&region)).await;
    let eu = eu["data"]["id"].as_str().unwrap().to_owned();
    let us = us["data"]["id"].as_str().unwrap().to_owned();
    let list = api.create_list("Tagged").await;
    let link = json!({"data": [{"type": "list", "id": list}]});
    let (status, _) = api
        .send(
            Method::POST,
            &format!("/api/tags/{eu}/relationships/lists"),
            Some(link.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api
        .send(
            Method::POST,
            &format!("/api/tags/{us}/relationships/lists"),
            Some(link.clone()),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "exclusive group allows one tag per list"
    );
    let (_, body) = api
        .send(
            Method::GET,
            &format!("/api/lists/{list}/relationships/tags"),
            None,
        )
        .await;
    assert_eq!(body["data"], json!([{"type": "tag", "id": eu}]));
    let (_, body) = api.send(Method::GET, "/api/lists?include=tags", None).await;
    assert_eq!(body["included"][0]["id"], eu.as_str());
    assert_eq!(
        body["data"][0]["relationships"]["tags"]["data"][0]["id"],
        eu.as_str()
    );

    let (status, body) = api
        .send(
            Method::PATCH,
            &format!("/api/tags/{eu}"),
            Some(json!({"data": {"type": "tag", "id": eu, "attributes": {"name": "Europe"}}})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(body.is_null());

    let (status, _) = api
        .send(Method::DELETE, &format!("/api/tags/{eu}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, body) = api
        .send(Method::GET, &format!("/api/lists/{list}/tags"), None)
        .await;
    assert_eq!(body["data"], json!([]));

    // 100 tags per resource, 500 per account.
    let ids = handle.seed(|s| {
        (0..100)
            .map(|i| {
                let tag = s.create_tag(&format!("t{i}"), None).unwrap();
                s.tag_resources(
                    &tag,
                    klsync::emulator::state::Taggable::List,
                    std::slice::from_ref(&list),
                )
                .unwrap();
                tag
            })
            .collect::<Vec<_>>()
    });
    assert_eq!(ids.len(), 100);
    let (_, extra) = api.create_tag("one too many", None).await;
    let extra = extra["data"]["id"].as_str().unwrap().to_owned();
    let (status, body) = api
        .send(
            Method::POST,
            &format!("/api/tags/{extra}/relationships/lists"),
            Some(link),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    handle.seed(|s| {
        while s.tags.len() < 500 {
            let n = s.tags.len();
            s.create_tag(&format!("fill{n}"), None).unwrap();
        }
    });
    let (status, _) = api.create_tag("501st", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    handle.shutdown().await;
}

#[tokio::test]
async fn tag_group_limit_is_fifty() {
    let handle = start().await;
    let api = Api::new(&handle);
    handle.seed(|s| {
        for i in 0..49 {
            s.create_tag_group(&format!("g{i}"), false).unwrap();
        }
    });
    let (status, _) = api
        .send(
            Method::POST,
            "/api/tag-groups",
            Some(json!({"data": {"type": "tag-group", "attributes": {"name": "51st"}}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, body) = api
        .send(
            Method::GET,
            "/api/tag-groups?filter=equals(default,true)",
            None,
        )
        .await;
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
    handle.shutdown().await;
}

#[tokio::test]
async fn profiles_duplicates_patch_semantics_and_import() {
    let handle = start().await;
    let api = Api::new(&handle);
    let (status, body) = api
        .send(Method::POST, "/api/profiles", Some(json!({"data": {"type": "profile", "attributes": {"email": "a@example.com", "first_name": "Ann", "properties": {"k1": 1, "k2": 2}}}})))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = body["data"]["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 26);

    let (status, body) = api
        .send(
            Method::POST,
            "/api/profiles",
            Some(json!({"data": {"type": "profile", "attributes": {"email": "a@example.com"}}})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["errors"][0]["code"], "duplicate_profile");
    assert_eq!(
        body["errors"][0]["meta"]["duplicate_profile_id"],
        id.as_str()
    );

    let (status, _) = api
        .send(
            Method::POST,
            "/api/profiles",
            Some(json!({"data": {"type": "profile", "attributes": {"first_name": "NoId"}}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, body) = api
        .send(
            Method::PATCH,
            &format!("/api/profiles/{id}"),
            Some(json!({"data": {"type": "profile", "id": id, "attributes": {"first_name": null, "properties": {"k2": 3}},
                "meta": {"patch_properties": {"unset": "k1"}}}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["data"]["attributes"]["first_name"].is_null());
    assert_eq!(body["data"]["attributes"]["properties"], json!({"k2": 3}));

    let (status, body) = api
        .send(
            Method::PATCH,
            &format!("/api/profiles/{id}"),
            Some(json!({"data": {"type": "profile", "id": id, "attributes": {}, "meta": {"patch_properties": {"unset": {"k": 1}}}}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // `meta` is beside `attributes` in this body: the pointer says where the value is.
    assert_eq!(pointer(&body), "/data/meta/patch_properties/unset");

    let other = api.create_profile("b@example.com").await;
    let (status, body) = api
        .send(
            Method::PATCH,
            &format!("/api/profiles/{other}"),
            Some(json!({"data": {"type": "profile", "id": other, "attributes": {"email": "a@example.com"}}})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        body["errors"][0]["meta"]["duplicate_profile_id"],
        id.as_str()
    );

    let import = |email: &str, name: &str| json!({"data": {"type": "profile", "attributes": {"email": email, "last_name": name}}});
    let (status, body) = api
        .send(
            Method::POST,
            "/api/profile-import",
            Some(import("a@example.com", "Smith")),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["id"], id.as_str());
    let (status, _) = api
        .send(
            Method::POST,
            "/api/profile-import",
            Some(import("c@example.com", "New")),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let (_, body) = api
        .send(Method::GET, "/api/profiles?filter=any(email,[%22a@example.com%22,%22c@example.com%22])&fields[profile]=email", None)
        .await;
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["attributes"].as_object().unwrap().len(), 1);
    handle.shutdown().await;
}

#[tokio::test]
async fn segments_validate_and_compute_membership() {
    let handle = start().await;
    let api = Api::new(&handle);
    let list = api.create_list("Source").await;
    let p = api.create_profile("vip@example.com").await;
    api.send(
        Method::POST,
        &format!("/api/lists/{list}/relationships/profiles"),
        Some(json!({"data": [{"type": "profile", "id": p}]})),
    )
    .await;
    let (status, body) = api
        .send(Method::POST, "/api/segments", Some(json!({"data": {"type": "segment", "attributes": {"name": "Bad", "definition": {"condition_groups": [{"conditions": [{"type": "nope"}]}]}}}})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        pointer(&body),
        "/data/attributes/definition/condition_groups/0/conditions/0/type"
    );
    let definition = json!({"condition_groups": [{"conditions": [{"type": "profile-group-membership", "is_member": true, "group_ids": [list]}]}]});
    let (status, body) = api
        .send(Method::POST, "/api/segments", Some(json!({"data": {"type": "segment", "attributes": {"name": "In source", "definition": definition}}})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let attrs = &body["data"]["attributes"];
    assert_eq!(
        (
            attrs["is_active"].clone(),
            attrs["is_processing"].clone(),
            attrs["is_starred"].clone()
        ),
        (json!(true), json!(false), json!(false))
    );
    let seg = body["data"]["id"].as_str().unwrap().to_owned();
    let (_, body) = api
        .send(
            Method::GET,
            &format!("/api/segments/{seg}/relationships/profiles"),
            None,
        )
        .await;
    assert_eq!(body["data"], json!([{"type": "profile", "id": p}]));
    let (status, _) = api
        .send(Method::PATCH, &format!("/api/segments/{seg}"), Some(json!({"data": {"type": "segment", "id": seg, "attributes": {"is_active": false, "name": "x"}}})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = api
        .send(
            Method::PATCH,
            &format!("/api/segments/{seg}"),
            Some(
                json!({"data": {"type": "segment", "id": seg, "attributes": {"is_active": false}}}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["attributes"]["is_active"], false);
    let (status, _) = api
        .send(Method::DELETE, &format!("/api/segments/{seg}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    handle.shutdown().await;
}

/// Issue 12: the emulator validates requests against the spec itself, so what the spec allows is
/// accepted (the official Python SDK's `update_segment` sends `is_starred: null`) and what it
/// does not is refused with Klaviyo's error shape, pointing at the place.
#[tokio::test]
async fn requests_are_checked_against_the_spec() {
    let handle = start().await;
    let api = Api::new(&handle);
    let definition = json!({"condition_groups": [{"conditions": [{
        "type": "profile-property", "property": "properties['ltv']",
        "filter": {"type": "numeric", "operator": "greater-than", "value": 100}}]}]});
    let (status, body) = api
        .send(
            Method::POST,
            "/api/segments",
            Some(json!({"data": {"type": "segment", "attributes": {"name": "Big", "definition": definition}}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["data"]["id"].as_str().expect("id").to_owned();
    let (status, body) = api
        .send(
            Method::PATCH,
            &format!("/api/segments/{id}"),
            Some(json!({"data": {"type": "segment", "id": id,
                                 "attributes": {"name": "Bigger", "is_starred": null}}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["attributes"]["name"], "Bigger");

    let (status, body) = api
        .send(
            Method::PATCH,
            &format!("/api/segments/{id}"),
            Some(json!({"data": {"type": "segment", "id": id,
                                 "attributes": {"name": "X", "colour": "red"}}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errors"][0]["code"], "invalid");
    assert!(
        body["errors"][0]["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("colour"),
        "{body}"
    );

    let (status, body) = api.send(Method::GET, "/api/lists?pagesize=5", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errors"][0]["source"]["parameter"], "pagesize");
    let (status, body) = api
        .send(Method::GET, "/api/lists?page%5Bsize%5D=11", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errors"][0]["source"]["parameter"], "page[size]");
    handle.shutdown().await;
}
