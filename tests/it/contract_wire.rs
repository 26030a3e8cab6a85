//! The end-to-end contract: the real client talks to the emulator through a recording proxy, and
//! both sides of every exchange are checked against Klaviyo's OpenAPI spec (the vendored subset).
//! Requests are checked with closed object schemas (misspelt keys fail), responses as published,
//! each against the schema of the status it came with (error bodies included).
//!
//! Every typed operation of the client is exercised, so a body shape drifting on either side
//! fails here even when the other side would tolerate it.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::openapi::{Body, validate_operation};
use crate::support::recorder::Recorder;
use futures::TryStreamExt;
use klsync::emulator::{self, EmulatorConfig, RateLimitMode};
use klsync::klaviyo::operations::operation_for;
use klsync::klaviyo::{
    ApiError, ClientConfig, JobStatus, KlaviyoClient, Operation, OptInProcess, ProfileAttributes,
    ProfileIdentifier, SegmentUpdate,
};
use klsync::settings::Secret;
use serde_json::{Map, json};

const KEY: &str = "pk_wire_contract";

/// The operations the client's typed API uses, read from its source, so a new operation added
/// there without being exercised here fails the test.
fn operations_the_client_uses() -> BTreeSet<Operation> {
    let source = include_str!("../../src/klaviyo/resources.rs");
    let mut used = BTreeSet::new();
    for (index, _) in source.match_indices("Operation::") {
        let name: String = source[index + "Operation::".len()..]
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect();
        let op = Operation::ALL
            .iter()
            .copied()
            .find(|op| format!("{op:?}") == name)
            .unwrap_or_else(|| panic!("resources.rs names unknown Operation::{name}"));
        used.insert(op);
    }
    used
}

fn status_of(error: &ApiError) -> Option<u16> {
    match error {
        ApiError::Klaviyo { status, .. } => Some(*status),
        _ => None,
    }
}

fn attributes(email: &str) -> ProfileAttributes {
    ProfileAttributes {
        email: Some(Some(email.into())),
        ..ProfileAttributes::default()
    }
}

#[tokio::test]
async fn every_exchange_of_every_client_operation_matches_the_spec() {
    let handle = emulator::start(EmulatorConfig {
        rate_limits: RateLimitMode::Off,
        api_keys: vec![KEY.into()],
        job_delay: Duration::from_millis(1),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let recorder = Recorder::start(&handle.base_url).await;
    let mut config = ClientConfig::new(recorder.base_url.clone(), Secret::new(KEY));
    config.rate_limit_factor = None;
    let client = KlaviyoClient::new(config).unwrap();

    // ---- profiles ----
    let mut properties = Map::new();
    properties.insert("plan".into(), json!("gold"));
    properties.insert("old".into(), json!(1));
    let mut location = Map::new();
    location.insert("city".into(), json!("Oslo"));
    let ada = client
        .create_profile(&ProfileAttributes {
            first_name: Some(Some("Ada".into())),
            phone_number: Some(Some("+15005550006".into())),
            external_id: Some(Some("crm-1".into())),
            location: Some(location),
            properties: Some(properties),
            ..attributes("ada@example.com")
        })
        .await
        .unwrap();
    let updated = client
        .update_profile(
            &ada.id,
            &ProfileAttributes {
                first_name: Some(None),
                title: Some(Some("CTO".into())),
                ..ProfileAttributes::default()
            },
            &["old".into()],
        )
        .await
        .unwrap();
    assert_eq!(updated.attributes.first_name, None);
    assert_eq!(updated.attributes.title.as_deref(), Some("CTO"));
    assert!(!updated.attributes.properties.contains_key("old"));
    assert_eq!(updated.attributes.properties["plan"], json!("gold"));
    let bob = client
        .upsert_profile(&attributes("bob@example.com"))
        .await
        .unwrap();
    assert!(bob.created);
    let bob_again = client
        .upsert_profile(&ProfileAttributes {
            last_name: Some(Some("Builder".into())),
            ..attributes("bob@example.com")
        })
        .await
        .unwrap();
    assert!(!bob_again.created);
    assert_eq!(bob_again.profile.id, bob.profile.id);
    assert_eq!(client.get_profile(&ada.id).await.unwrap().id, ada.id);
    let found = client
        .find_profiles_by(
            ProfileIdentifier::Email,
            &[
                "ada@example.com".into(),
                "bob@example.com".into(),
                "nobody@example.com".into(),
            ],
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 2);
    let all: Vec<_> = client.list_profiles().try_collect().await.unwrap();
    assert_eq!(all.len(), 2);

    // Error paths: 404, 409 duplicate_profile, 400 on an invalid value.
    let missing = client.get_profile("01NOSUCHPROFILE").await.unwrap_err();
    assert_eq!(status_of(&missing), Some(404), "{missing}");
    let duplicate = client
        .create_profile(&attributes("ada@example.com"))
        .await
        .unwrap_err();
    assert_eq!(duplicate.duplicate_profile_id(), Some(ada.id.as_str()));
    let invalid = client
        .create_profile(&attributes("not-an-email"))
        .await
        .unwrap_err();
    assert_eq!(status_of(&invalid), Some(400), "{invalid}");

    // ---- lists ----
    let list = client
        .create_list("Newsletter", Some(OptInProcess::SingleOptIn))
        .await
        .unwrap();
    let list = client
        .update_list(&list.id, Some("Weekly"), Some(OptInProcess::DoubleOptIn))
        .await
        .unwrap();
    assert_eq!(list.name, "Weekly");
    assert_eq!(client.get_list(&list.id).await.unwrap().name, "Weekly");
    assert_eq!(
        client
            .find_list_by_name("Weekly")
            .await
            .unwrap()
            .map(|l| l.id),
        Some(list.id.clone())
    );
    let members = vec![ada.id.clone(), bob.profile.id.clone()];
    client
        .add_profiles_to_list(&list.id, &members)
        .await
        .unwrap();
    let unknown_member = client
        .add_profiles_to_list(&list.id, &["01NOSUCHPROFILE".into()])
        .await
        .unwrap_err();
    assert_eq!(status_of(&unknown_member), Some(400), "{unknown_member}");
    let mut ids: Vec<String> = client
        .list_member_ids(&list.id)
        .try_collect()
        .await
        .unwrap();
    ids.sort();
    let mut expected = members.clone();
    expected.sort();
    assert_eq!(ids, expected);
    let profiles: Vec<klsync::klaviyo::Profile> = client
        .list_member_profiles(&list.id)
        .try_collect()
        .await
        .unwrap();
    let mut profile_ids: Vec<String> = profiles.into_iter().map(|p| p.id).collect();
    profile_ids.sort();
    assert_eq!(profile_ids, expected);
    client
        .remove_profiles_from_list(&list.id, std::slice::from_ref(&bob.profile.id))
        .await
        .unwrap();
    let ids: Vec<String> = client
        .list_member_ids(&list.id)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(ids, vec![ada.id.clone()]);

    // ---- bulk import into the list ----
    let job = client
        .create_bulk_import_job(
            &[attributes("carol@example.com"), attributes("broken-email")],
            std::slice::from_ref(&list.id),
        )
        .await
        .unwrap();
    let mut status = job.status;
    for _ in 0..200 {
        if status == JobStatus::Complete {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        status = client.get_bulk_import_job(&job.id).await.unwrap().status;
    }
    assert_eq!(status, JobStatus::Complete);
    let errors: Vec<_> = client
        .bulk_import_errors(&job.id)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let imported: Vec<_> = client
        .bulk_import_job_profiles(&job.id)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        imported
            .iter()
            .map(|p| p.attributes.email.as_deref())
            .collect::<Vec<_>>(),
        [Some("carol@example.com")],
        "the job's accepted profile, with its identifiers"
    );
    let ids: Vec<String> = client
        .list_member_ids(&list.id)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(ids.len(), 2, "carol joined the list through the job");

    // ---- segments ----
    let definition = json!({"condition_groups": [{"conditions": [{
        "type": "profile-group-membership", "is_member": true, "group_ids": [list.id]}]}]});
    let segment = client
        .create_segment("Weekly readers", &definition, false)
        .await
        .unwrap();
    assert_eq!(
        client.get_segment(&segment.id).await.unwrap().name,
        "Weekly readers"
    );
    assert_eq!(
        client
            .find_segment_by_name("Weekly readers")
            .await
            .unwrap()
            .map(|s| s.id),
        Some(segment.id.clone())
    );
    let segment_members: Vec<String> = client
        .segment_member_ids(&segment.id)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(segment_members.len(), 2);
    let deactivated = client
        .update_segment(
            &segment.id,
            &SegmentUpdate {
                name: Some("Weekly readers (old)".into()),
                is_starred: Some(true),
                is_active: Some(false),
                ..SegmentUpdate::default()
            },
        )
        .await
        .unwrap();
    assert!(!deactivated.is_active && deactivated.is_starred);

    // ---- tag groups and tags ----
    let group = client.create_tag_group("Team", true).await.unwrap();
    client.update_tag_group(&group.id, "Teams").await.unwrap();
    assert_eq!(
        client
            .find_tag_group_by_name("Teams")
            .await
            .unwrap()
            .map(|g| g.id),
        Some(group.id.clone())
    );
    let groups: Vec<_> = client.list_tag_groups().try_collect().await.unwrap();
    assert_eq!(groups.len(), 2, "the default group and ours: {groups:?}");
    let tag = client.create_tag("growth", Some(&group.id)).await.unwrap();
    let loose = client.create_tag("loose", None).await.unwrap();
    client.update_tag(&tag.id, "growth-team").await.unwrap();
    assert_eq!(
        client
            .find_tag("growth-team", Some(&group.id))
            .await
            .unwrap()
            .map(|t| t.id),
        Some(tag.id.clone())
    );
    assert_eq!(
        client.find_tag("loose", None).await.unwrap().map(|t| t.id),
        Some(loose.id.clone())
    );
    let tags: Vec<_> = client.list_tags().try_collect().await.unwrap();
    assert_eq!(tags.len(), 2);
    assert_eq!(
        client.tag_ids_for_group(&group.id).await.unwrap(),
        vec![tag.id.clone()]
    );
    client
        .tag_lists(&tag.id, std::slice::from_ref(&list.id))
        .await
        .unwrap();
    client
        .tag_segments(&tag.id, std::slice::from_ref(&segment.id))
        .await
        .unwrap();
    assert_eq!(
        client.list_ids_for_tag(&tag.id).await.unwrap(),
        vec![list.id.clone()]
    );
    assert_eq!(
        client.segment_ids_for_tag(&tag.id).await.unwrap(),
        vec![segment.id.clone()]
    );
    let tagged: Vec<_> = client.list_lists(true).try_collect().await.unwrap();
    assert_eq!(tagged[0].tag_ids, vec![tag.id.clone()]);
    let tagged: Vec<_> = client.list_segments(true).try_collect().await.unwrap();
    assert_eq!(tagged[0].tag_ids, vec![tag.id.clone()]);
    client
        .untag_lists(&tag.id, std::slice::from_ref(&list.id))
        .await
        .unwrap();
    client
        .untag_segments(&tag.id, std::slice::from_ref(&segment.id))
        .await
        .unwrap();
    assert!(client.list_ids_for_tag(&tag.id).await.unwrap().is_empty());
    assert!(
        client
            .segment_ids_for_tag(&tag.id)
            .await
            .unwrap()
            .is_empty()
    );

    // ---- deletes ----
    client.delete_tag(&loose.id).await.unwrap();
    client.delete_tag_group(&group.id).await.unwrap();
    client.delete_segment(&segment.id).await.unwrap();
    client.delete_list(&list.id).await.unwrap();
    let gone = client.get_list(&list.id).await.unwrap_err();
    assert_eq!(status_of(&gone), Some(404), "{gone}");

    // ---- the wire, checked ----
    let exchanges = recorder.exchanges();
    // A floor on the recording, so a broken proxy cannot make the checks below vacuous.
    let with_bodies = exchanges
        .iter()
        .filter(|e| !e.request_body.is_null())
        .count();
    assert!(
        exchanges.len() >= 50 && with_bodies >= 20,
        "{} exchanges",
        exchanges.len()
    );
    let mut seen = BTreeSet::new();
    let mut statuses = BTreeSet::new();
    let mut violations = Vec::new();
    for exchange in &exchanges {
        let op = operation_for(&exchange.method, &exchange.path).unwrap_or_else(|| {
            panic!(
                "{} {} is not an operation klsync knows",
                exchange.method, exchange.path
            )
        });
        seen.insert(op);
        statuses.insert(exchange.status);
        if !exchange.request_body.is_null() {
            assert_eq!(
                exchange.request_content_type.as_deref(),
                Some("application/vnd.api+json"),
                "{op:?}"
            );
        }
        let checks = [
            (Body::Request, &exchange.request_body),
            (Body::Response(exchange.status), &exchange.response_body),
        ];
        for (body, instance) in checks {
            if let Err(errors) = validate_operation(op, body, instance) {
                violations.push(format!(
                    "{op:?} {} {} {body:?}: {errors:#?}\n{instance:#}",
                    exchange.method, exchange.path
                ));
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n\n"));
    let missing: Vec<_> = operations_the_client_uses()
        .into_iter()
        .filter(|op| !seen.contains(op))
        .collect();
    assert!(
        missing.is_empty(),
        "client operations never on the wire: {missing:?}"
    );
    for status in [200, 201, 202, 204, 400, 404, 409] {
        assert!(
            statuses.contains(&status),
            "no {status} on the wire: {statuses:?}"
        );
    }
    handle.shutdown().await;
}

#[test]
fn the_client_operation_scan_finds_the_typed_api() {
    // Guards the coverage assertion above against a scan that finds nothing.
    let used = operations_the_client_uses();
    assert!(used.contains(&Operation::CreateList));
    assert!(used.contains(&Operation::GetErrorsForBulkImportProfilesJob));
    assert!(used.len() >= 30, "{used:?}");
}

#[test]
fn a_misspelt_request_key_on_the_wire_is_caught() {
    // The same checks must fail on a body the emulator accepts but the spec does not describe.
    let body = json!({"data": {"type": "list", "attributes": {"name": "x", "opt_in": "single"}}});
    assert!(validate_operation(Operation::CreateList, Body::Request, &body).is_err());
    let response = json!({"data": {"type": "list", "id": "x"}});
    assert!(validate_operation(Operation::CreateList, Body::Response(201), &response).is_err());
}
