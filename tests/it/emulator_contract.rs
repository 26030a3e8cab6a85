//! Every response the emulator sends, for every operation klsync uses, validates against the
//! official spec's response schema (the vendored subset, via `support::openapi`).

use crate::support::openapi::{Body, validate_operation};
use klsync::emulator::{self, EmulatorConfig, RateLimitMode};
use klsync::klaviyo::operations::Operation;
use reqwest::Method;
use serde_json::{Value, json};

const KEY: &str = "pk_test";

/// Response checks, as the emulator contract needs them.
struct Contract;

impl Contract {
    fn load() -> Self {
        Contract
    }

    fn check(&self, op: Operation, status: u16, body: &Value) {
        let errors = self.errors(op, status, body);
        assert!(
            errors.is_empty(),
            "{op:?} {status}: {errors:#?}\nbody: {body:#}"
        );
    }

    fn errors(&self, op: Operation, status: u16, body: &Value) -> Vec<String> {
        validate_operation(op, Body::Response(status), body)
            .err()
            .unwrap_or_default()
    }
}

#[test]
fn the_checker_rejects_wrong_shapes() {
    let contract = Contract::load();
    let segment = json!({"data": {"type": "segment", "id": "abc123",
        "attributes": {"name": "S", "is_active": true, "is_processing": false},
        "links": {"self": "http://x/api/segments/abc123"}}, "links": {"self": "http://x/"}});
    assert!(
        !contract
            .errors(Operation::GetSegment, 200, &segment)
            .is_empty(),
        "is_starred is required"
    );
    let mut fixed = segment.clone();
    fixed["data"]["attributes"]["is_starred"] = json!(false);
    assert!(
        contract
            .errors(Operation::GetSegment, 200, &fixed)
            .is_empty()
    );
    fixed["data"]["attributes"]["created"] = json!("yesterday");
    assert!(
        !contract
            .errors(Operation::GetSegment, 200, &fixed)
            .is_empty(),
        "date-time format"
    );
    assert!(
        !contract
            .errors(Operation::UpdateTag, 204, &json!({}))
            .is_empty(),
        "204 has no body"
    );
    assert!(
        !contract
            .errors(Operation::GetList, 404, &json!({"errors": [{"id": "x"}]}))
            .is_empty()
    );
}

#[tokio::test]
async fn every_response_matches_the_spec() {
    let contract = Contract::load();
    let handle = emulator::start(EmulatorConfig {
        rate_limits: RateLimitMode::Off,
        api_keys: vec![KEY.into()],
        job_delay: std::time::Duration::from_millis(1),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let base = handle.base_url.clone();
    let client = reqwest::Client::new();
    let call = |op: Operation, path: String, body: Option<Value>| {
        let client = client.clone();
        let base = base.clone();
        async move {
            let method = Method::from_bytes(op.method().as_bytes()).unwrap();
            let mut req = client
                .request(method, format!("{base}{path}"))
                .header("Authorization", format!("Klaviyo-API-Key {KEY}"))
                .header("revision", "2026-07-15");
            if let Some(body) = body {
                req = req
                    .header("content-type", "application/vnd.api+json")
                    .body(body.to_string());
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            let body = if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap()
            };
            (op, status, body)
        }
    };
    use Operation as O;
    let mut seen = Vec::new();
    let mut record = |(op, status, body): (Operation, u16, Value)| {
        contract.check(op, status, &body);
        seen.push(op);
        body
    };

    let list = record(
        call(
            O::CreateList,
            "/api/lists".into(),
            Some(json!({"data": {"type": "list", "attributes": {"name": "L"}}})),
        )
        .await,
    );
    let list = list["data"]["id"].as_str().unwrap().to_owned();
    let profile = record(call(O::CreateProfile, "/api/profiles".into(), Some(json!({"data": {"type": "profile", "attributes": {"email": "a@example.com", "location": {"city": "Oslo"}, "properties": {"x": 1}}}}))).await);
    let profile = profile["data"]["id"].as_str().unwrap().to_owned();
    record(
        call(
            O::CreateProfile,
            "/api/profiles".into(),
            Some(json!({"data": {"type": "profile", "attributes": {"email": "a@example.com"}}})),
        )
        .await,
    );
    record(call(O::UpdateProfile, format!("/api/profiles/{profile}"), Some(json!({"data": {"type": "profile", "id": profile, "attributes": {"first_name": "A"}}}))).await);
    record(
        call(
            O::CreateOrUpdateProfile,
            "/api/profile-import".into(),
            Some(json!({"data": {"type": "profile", "attributes": {"email": "b@example.com"}}})),
        )
        .await,
    );
    record(call(O::CreateOrUpdateProfile, "/api/profile-import".into(), Some(json!({"data": {"type": "profile", "attributes": {"email": "b@example.com", "title": "T"}}}))).await);
    record(call(O::GetProfiles, "/api/profiles?page[size]=1".into(), None).await);
    record(
        call(
            O::AddProfilesToList,
            format!("/api/lists/{list}/relationships/profiles"),
            Some(json!({"data": [{"type": "profile", "id": profile}]})),
        )
        .await,
    );
    record(
        call(
            O::GetProfile,
            format!("/api/profiles/{profile}?include=lists,segments"),
            None,
        )
        .await,
    );
    record(call(O::GetProfile, "/api/profiles/NOPE".into(), None).await);
    record(
        call(
            O::GetListsForProfile,
            format!("/api/profiles/{profile}/lists"),
            None,
        )
        .await,
    );
    record(
        call(
            O::GetListIdsForProfile,
            format!("/api/profiles/{profile}/relationships/lists"),
            None,
        )
        .await,
    );
    let definition = json!({"condition_groups": [{"conditions": [{"type": "profile-group-membership", "is_member": true, "group_ids": [list]}]}]});
    let segment = record(call(O::CreateSegment, "/api/segments".into(), Some(json!({"data": {"type": "segment", "attributes": {"name": "S", "definition": definition}}}))).await);
    let segment = segment["data"]["id"].as_str().unwrap().to_owned();
    record(
        call(
            O::GetSegmentsForProfile,
            format!("/api/profiles/{profile}/segments"),
            None,
        )
        .await,
    );
    record(
        call(
            O::GetSegmentIdsForProfile,
            format!("/api/profiles/{profile}/relationships/segments"),
            None,
        )
        .await,
    );
    let group = record(call(O::CreateTagGroup, "/api/tag-groups".into(), Some(json!({"data": {"type": "tag-group", "attributes": {"name": "G", "exclusive": true}}}))).await);
    let group = group["data"]["id"].as_str().unwrap().to_owned();
    let tag = record(call(O::CreateTag, "/api/tags".into(), Some(json!({"data": {"type": "tag", "attributes": {"name": "T"}, "relationships": {"tag-group": {"data": {"type": "tag-group", "id": group}}}}}))).await);
    let tag = tag["data"]["id"].as_str().unwrap().to_owned();
    record(
        call(
            O::TagLists,
            format!("/api/tags/{tag}/relationships/lists"),
            Some(json!({"data": [{"type": "list", "id": list}]})),
        )
        .await,
    );
    record(
        call(
            O::TagSegments,
            format!("/api/tags/{tag}/relationships/segments"),
            Some(json!({"data": [{"type": "segment", "id": segment}]})),
        )
        .await,
    );
    record(call(O::GetLists, "/api/lists?include=tags".into(), None).await);
    record(
        call(
            O::GetList,
            format!("/api/lists/{list}?additional-fields[list]=profile_count&include=tags"),
            None,
        )
        .await,
    );
    record(
        call(
            O::UpdateList,
            format!("/api/lists/{list}"),
            Some(json!({"data": {"type": "list", "id": list, "attributes": {"name": "L2"}}})),
        )
        .await,
    );
    record(call(O::GetTagsForList, format!("/api/lists/{list}/tags"), None).await);
    record(
        call(
            O::GetTagIdsForList,
            format!("/api/lists/{list}/relationships/tags"),
            None,
        )
        .await,
    );
    record(
        call(
            O::GetProfilesForList,
            format!("/api/lists/{list}/profiles"),
            None,
        )
        .await,
    );
    record(
        call(
            O::GetProfileIdsForList,
            format!("/api/lists/{list}/relationships/profiles"),
            None,
        )
        .await,
    );
    record(call(O::GetSegments, "/api/segments?include=tags".into(), None).await);
    record(
        call(
            O::GetSegment,
            format!("/api/segments/{segment}?additional-fields[segment]=profile_count"),
            None,
        )
        .await,
    );
    record(call(O::UpdateSegment, format!("/api/segments/{segment}"), Some(json!({"data": {"type": "segment", "id": segment, "attributes": {"is_starred": true}}}))).await);
    record(
        call(
            O::GetTagsForSegment,
            format!("/api/segments/{segment}/tags"),
            None,
        )
        .await,
    );
    record(
        call(
            O::GetTagIdsForSegment,
            format!("/api/segments/{segment}/relationships/tags"),
            None,
        )
        .await,
    );
    record(
        call(
            O::GetProfilesForSegment,
            format!("/api/segments/{segment}/profiles"),
            None,
        )
        .await,
    );
    record(
        call(
            O::GetProfileIdsForSegment,
            format!("/api/segments/{segment}/relationships/profiles"),
            None,
        )
        .await,
    );
    record(call(O::GetTags, "/api/tags?include=tag-group".into(), None).await);
    record(
        call(
            O::GetTag,
            format!("/api/tags/{tag}?include=tag-group"),
            None,
        )
        .await,
    );
    record(
        call(
            O::UpdateTag,
            format!("/api/tags/{tag}"),
            Some(json!({"data": {"type": "tag", "id": tag, "attributes": {"name": "T2"}}})),
        )
        .await,
    );
    record(
        call(
            O::GetListIdsForTag,
            format!("/api/tags/{tag}/relationships/lists"),
            None,
        )
        .await,
    );
    record(
        call(
            O::GetSegmentIdsForTag,
            format!("/api/tags/{tag}/relationships/segments"),
            None,
        )
        .await,
    );
    record(
        call(
            O::GetTagGroupForTag,
            format!("/api/tags/{tag}/tag-group"),
            None,
        )
        .await,
    );
    record(
        call(
            O::GetTagGroupIdForTag,
            format!("/api/tags/{tag}/relationships/tag-group"),
            None,
        )
        .await,
    );
    record(call(O::GetTagGroups, "/api/tag-groups".into(), None).await);
    record(call(O::GetTagGroup, format!("/api/tag-groups/{group}"), None).await);
    record(
        call(
            O::UpdateTagGroup,
            format!("/api/tag-groups/{group}"),
            Some(json!({"data": {"type": "tag-group", "id": group, "attributes": {"name": "G2"}}})),
        )
        .await,
    );
    record(
        call(
            O::GetTagsForTagGroup,
            format!("/api/tag-groups/{group}/tags"),
            None,
        )
        .await,
    );
    record(
        call(
            O::GetTagIdsForTagGroup,
            format!("/api/tag-groups/{group}/relationships/tags"),
            None,
        )
        .await,
    );

    let job = record(call(O::BulkImportProfiles, "/api/profile-bulk-import-jobs".into(), Some(json!({"data": {"type": "profile-bulk-import-job",
        "attributes": {"profiles": {"data": [{"type": "profile", "attributes": {"email": "c@example.com"}}, {"type": "profile", "attributes": {"email": "bad"}}]}},
        "relationships": {"lists": {"data": [{"type": "list", "id": list}]}}}}))).await);
    let job = job["data"]["id"].as_str().unwrap().to_owned();
    for _ in 0..200 {
        let done = handle.seed(|s| s.jobs[&job].status == "complete");
        if done {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    record(
        call(
            O::GetBulkImportProfilesJob,
            format!("/api/profile-bulk-import-jobs/{job}?include=lists"),
            None,
        )
        .await,
    );
    record(
        call(
            O::GetBulkImportProfilesJobs,
            "/api/profile-bulk-import-jobs".into(),
            None,
        )
        .await,
    );
    record(
        call(
            O::GetProfilesForBulkImportProfilesJob,
            format!("/api/profile-bulk-import-jobs/{job}/profiles"),
            None,
        )
        .await,
    );
    record(
        call(
            O::GetProfileIdsForBulkImportProfilesJob,
            format!("/api/profile-bulk-import-jobs/{job}/relationships/profiles"),
            None,
        )
        .await,
    );
    record(
        call(
            O::GetListForBulkImportProfilesJob,
            format!("/api/profile-bulk-import-jobs/{job}/lists"),
            None,
        )
        .await,
    );
    record(
        call(
            O::GetListIdsForBulkImportProfilesJob,
            format!("/api/profile-bulk-import-jobs/{job}/relationships/lists"),
            None,
        )
        .await,
    );
    let errors = record(
        call(
            O::GetErrorsForBulkImportProfilesJob,
            format!("/api/profile-bulk-import-jobs/{job}/import-errors"),
            None,
        )
        .await,
    );
    assert_eq!(errors["data"].as_array().unwrap().len(), 1);

    record(
        call(
            O::RemoveTagFromLists,
            format!("/api/tags/{tag}/relationships/lists"),
            Some(json!({"data": [{"type": "list", "id": list}]})),
        )
        .await,
    );
    record(
        call(
            O::RemoveTagFromSegments,
            format!("/api/tags/{tag}/relationships/segments"),
            Some(json!({"data": [{"type": "segment", "id": segment}]})),
        )
        .await,
    );
    record(
        call(
            O::RemoveProfilesFromList,
            format!("/api/lists/{list}/relationships/profiles"),
            Some(json!({"data": [{"type": "profile", "id": profile}]})),
        )
        .await,
    );
    record(call(O::DeleteTag, format!("/api/tags/{tag}"), None).await);
    record(call(O::DeleteTagGroup, format!("/api/tag-groups/{group}"), None).await);
    record(call(O::DeleteSegment, format!("/api/segments/{segment}"), None).await);
    record(call(O::DeleteList, format!("/api/lists/{list}"), None).await);

    let missing: Vec<_> = Operation::ALL
        .iter()
        .filter(|op| !seen.contains(op))
        .collect();
    assert!(missing.is_empty(), "operations not exercised: {missing:?}");
    handle.shutdown().await;
}
