//! The emulator's operational behaviour over real HTTP: bulk jobs, rate limits, faults, stats,
//! the state file.

use std::time::Duration;

use std::sync::Arc;

use klsync::emulator::clock::FakeClock;
use klsync::emulator::{self, EmulatorConfig, EmulatorHandle, RateLimitMode};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const KEY: &str = "pk_test";

async fn start_with(config: EmulatorConfig) -> EmulatorHandle {
    emulator::start(EmulatorConfig {
        api_keys: vec![KEY.into()],
        job_delay: Duration::from_millis(20),
        ..config
    })
    .await
    .expect("emulator starts")
}

fn request(
    client: &reqwest::Client,
    base: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> reqwest::RequestBuilder {
    let mut req = client
        .request(method, format!("{base}{path}"))
        .header("Authorization", format!("Klaviyo-API-Key {KEY}"))
        .header("revision", "2026-07-15");
    if let Some(body) = body {
        req = req
            .header("content-type", "application/vnd.api+json")
            .body(body.to_string());
    }
    req
}

async fn call(base: &str, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let resp = request(&reqwest::Client::new(), base, method, path, body.as_ref())
        .send()
        .await
        .expect("answered");
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        },
    )
}

fn off() -> EmulatorConfig {
    EmulatorConfig {
        rate_limits: RateLimitMode::Off,
        ..EmulatorConfig::default()
    }
}

#[tokio::test]
async fn bulk_import_job_lifecycle_errors_and_null_not_clearing() {
    let handle = start_with(off()).await;
    let base = handle.base_url.clone();
    let (list, existing) = handle.seed(|s| {
        let list = s.create_list("Imported", None);
        let mut attrs = serde_json::Map::new();
        attrs.insert("email".into(), json!("keep@example.com"));
        attrs.insert("first_name".into(), json!("Keep"));
        (list, s.create_profile(attrs))
    });
    let row = |attrs: Value| json!({"type": "profile", "attributes": attrs});
    let body = json!({"data": {"type": "profile-bulk-import-job",
        "attributes": {"profiles": {"data": [
            row(json!({"email": "keep@example.com", "first_name": null, "last_name": "Kept"})),
            row(json!({"email": "new@example.com"})),
            row(json!({"email": "not-an-email"})),
            row(json!({"email": "p@example.com", "phone_number": "555-1234"})),
        ]}},
        "relationships": {"lists": {"data": [{"type": "list", "id": list}]}}}});
    let (status, created) = call(
        &base,
        Method::POST,
        "/api/profile-bulk-import-jobs",
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    assert_eq!(created["data"]["attributes"]["status"], "queued");
    assert_eq!(created["data"]["attributes"]["total_count"], 4);
    let job = created["data"]["id"].as_str().unwrap().to_owned();

    let mut seen = vec!["queued".to_owned()];
    for _ in 0..100 {
        let (_, body) = call(
            &base,
            Method::GET,
            &format!("/api/profile-bulk-import-jobs/{job}"),
            None,
        )
        .await;
        let status = body["data"]["attributes"]["status"]
            .as_str()
            .unwrap()
            .to_owned();
        if seen.last() != Some(&status) {
            seen.push(status.clone());
        }
        if status == "complete" {
            assert_eq!(body["data"]["attributes"]["completed_count"], 2);
            assert_eq!(body["data"]["attributes"]["failed_count"], 2);
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        seen.last().map(String::as_str),
        Some("complete"),
        "{seen:?}"
    );

    let (_, errors) = call(
        &base,
        Method::GET,
        &format!("/api/profile-bulk-import-jobs/{job}/import-errors"),
        None,
    )
    .await;
    let errors = errors["data"].as_array().unwrap();
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0]["type"], "import-error");
    assert_eq!(
        errors[0]["attributes"]["source"]["pointer"],
        "/data/attributes/email"
    );
    assert_eq!(
        errors[1]["attributes"]["source"]["pointer"],
        "/data/attributes/phone_number"
    );
    assert_eq!(
        errors[0]["attributes"]["original_payload"]["attributes"]["email"],
        "not-an-email"
    );

    let (_, profile) = call(
        &base,
        Method::GET,
        &format!("/api/profiles/{existing}"),
        None,
    )
    .await;
    assert_eq!(
        profile["data"]["attributes"]["first_name"], "Keep",
        "null does not clear in bulk import"
    );
    assert_eq!(profile["data"]["attributes"]["last_name"], "Kept");

    let (_, members) = call(
        &base,
        Method::GET,
        &format!("/api/lists/{list}/relationships/profiles"),
        None,
    )
    .await;
    assert_eq!(members["data"].as_array().unwrap().len(), 2);
    let (_, job_profiles) = call(
        &base,
        Method::GET,
        &format!("/api/profile-bulk-import-jobs/{job}/relationships/profiles"),
        None,
    )
    .await;
    assert_eq!(job_profiles["data"][0]["id"], existing.as_str());
    let (_, jobs) = call(
        &base,
        Method::GET,
        "/api/profile-bulk-import-jobs?filter=equals(status,%22complete%22)",
        None,
    )
    .await;
    assert_eq!(jobs["data"].as_array().unwrap().len(), 1);
    let (_, lists) = call(
        &base,
        Method::GET,
        &format!("/api/profile-bulk-import-jobs/{job}/lists"),
        None,
    )
    .await;
    assert_eq!(lists["data"][0]["id"], list.as_str());

    let too_many: Vec<Value> = (0..10_001)
        .map(|i| row(json!({"email": format!("u{i}@example.com")})))
        .collect();
    let (status, _) = call(&base, Method::POST, "/api/profile-bulk-import-jobs",
        Some(json!({"data": {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": too_many}}}}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let huge = "x".repeat(5 * 1024 * 1024 + 10);
    let (status, _) = call(&base, Method::POST, "/api/profile-bulk-import-jobs",
        Some(json!({"data": {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": [row(json!({"email": "a@b.co", "first_name": huge}))]}}}}))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    handle.shutdown().await;
}

fn fake_clock_config(clock: &FakeClock) -> EmulatorConfig {
    EmulatorConfig {
        clock: Arc::new(clock.clone()),
        ..EmulatorConfig::default()
    }
}

#[tokio::test]
async fn real_rate_limits_refuse_the_fourth_tag_create_in_a_second() {
    // Half a second into a minute, so neither window rolls over during the test.
    let clock = FakeClock::new(1_800_000_000_500);
    let handle = start_with(fake_clock_config(&clock)).await;
    let base = handle.base_url.clone();
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    let mut last = None;
    for i in 0..4 {
        let body = json!({"data": {"type": "tag", "attributes": {"name": format!("t{i}")}}});
        let resp = request(&client, &base, Method::POST, "/api/tags", Some(&body))
            .send()
            .await
            .unwrap();
        statuses.push(resp.status());
        last = Some(resp);
    }
    assert_eq!(
        statuses,
        [
            StatusCode::CREATED,
            StatusCode::CREATED,
            StatusCode::CREATED,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    let limited = last.unwrap();
    assert_eq!(limited.headers()["retry-after"], "1");
    assert!(limited.headers().get("ratelimit-limit").is_none());
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["errors"][0]["status"], 429);
    clock.advance(1_000);
    let body = json!({"data": {"type": "tag", "attributes": {"name": "after a second"}}});
    let resp = request(&client, &base, Method::POST, "/api/tags", Some(&body))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.headers()["ratelimit-limit"], "60");
    assert_eq!(resp.headers()["ratelimit-remaining"], "56");
    assert_eq!(resp.headers()["ratelimit-reset"], "59");

    // profile_count joins the 1/s bucket on top of the get_list bucket.
    let list = handle.seed(|s| s.create_list("Counted", None));
    let path = format!("/api/lists/{list}?additional-fields[list]=profile_count");
    let first = request(&client, &base, Method::GET, &path, None)
        .send()
        .await
        .unwrap()
        .status();
    let second = request(&client, &base, Method::GET, &path, None)
        .send()
        .await
        .unwrap()
        .status();
    let plain = request(
        &client,
        &base,
        Method::GET,
        &format!("/api/lists/{list}"),
        None,
    )
    .send()
    .await
    .unwrap()
    .status();
    assert_eq!(
        (first, second, plain),
        (
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::OK
        )
    );
    handle.shutdown().await;
}

#[tokio::test]
async fn list_creation_stops_at_the_daily_cap_with_a_long_retry_after() {
    // The start of a UTC day, so the daily window is a whole day long.
    let clock = FakeClock::new(1_800_057_600_000);
    let handle = start_with(fake_clock_config(&clock)).await;
    let client = reqwest::Client::new();
    let create = |i: usize| {
        let body = json!({"data": {"type": "list", "attributes": {"name": format!("L{i}")}}});
        request(
            &client,
            &handle.base_url,
            Method::POST,
            "/api/lists",
            Some(&body),
        )
        .send()
    };
    for minute in 0..2 {
        for second in 0..15 {
            for i in 0..5 {
                let status = create(minute * 100 + second * 10 + i)
                    .await
                    .unwrap()
                    .status();
                assert_eq!(
                    status,
                    StatusCode::CREATED,
                    "minute {minute} second {second}"
                );
            }
            clock.advance(1_000);
        }
        clock.advance(45_000);
    }
    let refused = create(999).await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after > 80_000, "retry after {retry_after} s");
    assert_eq!(handle.seed(|s| s.lists.len()), 150);
    handle.shutdown().await;
}

async fn fault_trace(seed: u64) -> (Vec<String>, usize) {
    let handle = start_with(EmulatorConfig {
        faults: Some("429=0.2,500=0.2,reset=0.2".into()),
        seed,
        ..off()
    })
    .await;
    let client = reqwest::Client::new();
    let mut trace = Vec::new();
    for i in 0..40 {
        let body = json!({"data": {"type": "list", "attributes": {"name": format!("L{i}")}}});
        let outcome = match request(
            &client,
            &handle.base_url,
            Method::POST,
            "/api/lists",
            Some(&body),
        )
        .send()
        .await
        {
            Ok(resp) => resp.status().as_u16().to_string(),
            Err(_) => "reset".to_owned(),
        };
        trace.push(outcome);
    }
    let lists = handle.seed(|s| s.lists.len());
    let stats = handle.stats();
    assert_eq!(stats.count("POST /api/lists"), 40);
    handle.shutdown().await;
    (trace, lists)
}

#[tokio::test]
async fn faults_are_reproducible_with_a_seed_and_resets_drop_the_connection() {
    let (a, lists_a) = fault_trace(7).await;
    let (b, lists_b) = fault_trace(7).await;
    assert_eq!(a, b);
    assert_eq!(lists_a, lists_b);
    let (c, _) = fault_trace(8).await;
    assert_ne!(a, c);
    for outcome in ["201", "429", "500", "reset"] {
        assert!(
            a.iter().any(|o| o == outcome),
            "{outcome} missing from {a:?}"
        );
    }
    let created = a.iter().filter(|o| *o == "201").count();
    // Some failed writes were applied after the write: more lists exist than 201s were seen.
    assert!(
        lists_a > created,
        "{lists_a} lists, {created} created responses"
    );
}

#[tokio::test]
async fn stats_count_by_operation_and_status_and_reset() {
    let handle = start_with(off()).await;
    let base = handle.base_url.clone();
    call(&base, Method::GET, "/api/lists", None).await;
    call(&base, Method::GET, "/api/lists/", None).await;
    call(&base, Method::GET, "/api/lists/abc123", None).await;
    let unauthorized = reqwest::Client::new()
        .get(format!("{base}/api/tags"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), StatusCode::UNAUTHORIZED);

    let stats: Value = reqwest::get(format!("{base}/__emulator/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["total"], 4);
    assert_eq!(stats["by_operation"]["GET /api/lists"], 2);
    assert_eq!(stats["by_operation"]["GET /api/lists/{id}"], 1);
    assert_eq!(stats["by_status"]["200"], 2);
    assert_eq!(stats["by_status"]["404"], 1);
    assert_eq!(stats["by_status"]["401"], 1);
    assert_eq!(stats["by_operation_status"]["GET /api/tags"]["401"], 1);
    assert_eq!(handle.stats().total, 4, "admin calls are not counted");

    handle.seed(|s| s.create_list("Kept?", None));
    let client = reqwest::Client::new();
    client
        .post(format!("{base}/__emulator/reset"))
        .send()
        .await
        .unwrap();
    assert_eq!(handle.stats().total, 0);
    assert_eq!(handle.seed(|s| s.lists.len()), 1);
    client
        .post(format!("{base}/__emulator/reset?state=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(handle.seed(|s| s.lists.len()), 0);
    assert_eq!(
        handle.seed(|s| s.tag_groups.len()),
        1,
        "the default tag group survives a reset"
    );
    handle.shutdown().await;
}

#[tokio::test]
async fn state_file_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let config = || EmulatorConfig {
        state_file: Some(path.clone()),
        ..off()
    };
    let handle = start_with(config()).await;
    let (status, body) = call(
        &handle.base_url,
        Method::POST,
        "/api/lists",
        Some(json!({"data": {"type": "list", "attributes": {"name": "Persisted"}}})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = body["data"]["id"].as_str().unwrap().to_owned();
    handle.shutdown().await;
    assert!(path.exists());

    let handle = start_with(config()).await;
    let (status, body) = call(
        &handle.base_url,
        Method::GET,
        &format!("/api/lists/{id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["attributes"]["name"], "Persisted");
    let (status, body) = call(
        &handle.base_url,
        Method::POST,
        "/api/lists",
        Some(json!({"data": {"type": "list", "attributes": {"name": "Second"}}})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_ne!(
        body["data"]["id"],
        id.as_str(),
        "a re-seeded generator never reuses an id"
    );
    handle.shutdown().await;
}

#[tokio::test]
async fn bad_fault_specs_fail_to_start() {
    let err = emulator::start(EmulatorConfig {
        faults: Some("bogus=1".into()),
        ..off()
    })
    .await
    .unwrap_err();
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(chain.contains("unknown fault `bogus`"), "{chain}");
}

#[tokio::test]
async fn a_full_ten_thousand_profile_job_completes() {
    let handle = start_with(off()).await;
    let base = handle.base_url.clone();
    let list = handle.seed(|s| s.create_list("Big", None));
    let rows: Vec<Value> = (0..10_000)
        .map(|i| json!({"type": "profile", "attributes": {"email": format!("user{i}@example.com"), "properties": {"n": i}}}))
        .collect();
    let body = json!({"data": {"type": "profile-bulk-import-job",
        "attributes": {"profiles": {"data": rows}},
        "relationships": {"lists": {"data": [{"type": "list", "id": list}]}}}});
    let (status, created) = call(
        &base,
        Method::POST,
        "/api/profile-bulk-import-jobs",
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let job = created["data"]["id"].as_str().unwrap().to_owned();
    let mut complete = false;
    for _ in 0..600 {
        if handle.seed(|s| s.jobs[&job].status == "complete") {
            complete = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(complete, "job did not finish in 30 s");
    let (members, profiles) = handle.seed(|s| (s.lists[&list].members.len(), s.profiles.len()));
    assert_eq!((members, profiles), (10_000, 10_000));
    handle.shutdown().await;
}

#[tokio::test]
async fn latency_fault_delays_every_request() {
    let handle = start_with(EmulatorConfig {
        faults: Some("latency=150ms".into()),
        ..off()
    })
    .await;
    let started = std::time::Instant::now();
    let (status, _) = call(&handle.base_url, Method::GET, "/api/lists", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(150));
    handle.shutdown().await;
}
