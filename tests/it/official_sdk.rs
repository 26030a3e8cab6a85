//! The official SDK check of the emulator (issue 12): `tests/sdk/official_sdk_check.py` calls
//! every Klaviyo operation klsync uses through Klaviyo's official Python SDK (`klaviyo-api`,
//! pinned in `tests/sdk/requirements.txt`), against the emulator over real HTTP. The SDK sends
//! its own request shapes (`update_segment` sends `is_starred: null` and `is_active: null`) and
//! parses every response into its generated models.
//!
//! Needs Python 3 with the SDK: `pip install -r tests/sdk/requirements.txt` (CI's `.ci/run`
//! installs it).

use std::process::Command;

use crate::support::openapi::match_path;
use crate::support::recorder::{Exchange, Recorder};
use klsync::emulator::{self, EmulatorConfig, RateLimitMode};
use klsync::klaviyo::Operation;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_klsync_uses_succeeds_through_the_official_sdk() {
    let probe = Command::new("python3")
        .args(["-c", "import klaviyo_api"])
        .output()
        .expect("python3 is needed for the official SDK check");
    assert!(
        probe.status.success(),
        "the official Klaviyo SDK is not installed: run `pip install -r tests/sdk/requirements.txt`\n{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let handle = emulator::start(EmulatorConfig {
        rate_limits: RateLimitMode::Off,
        api_keys: vec!["pk_official_sdk".to_owned()],
        ..EmulatorConfig::default()
    })
    .await
    .expect("start the emulator");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/sdk/official_sdk_check.py"
    );
    // Through a recording proxy: with KLSYNC_UPDATE_CORPUS=1 the SDK's own request shapes are
    // written to the conformance corpus (tests/it/conformance.rs replays them without Python).
    let recorder = Recorder::start(&handle.base_url).await;
    let base_url = recorder.base_url.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args([script, &base_url, "pk_official_sdk"])
            .output()
            .expect("run the SDK check")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Every operation of the client's typed API was called, and each succeeded.
    let summary: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("the summary");
    let source = include_str!("../../src/klaviyo/resources.rs");
    let mut checked = 0;
    for (index, _) in source.match_indices("Operation::") {
        let variant: String = source[index + "Operation::".len()..]
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect();
        let op = klsync::klaviyo::Operation::ALL
            .iter()
            .find(|op| format!("{op:?}") == variant)
            .unwrap_or_else(|| panic!("{variant} is not an operation"));
        assert_eq!(
            summary[op.operation_id()],
            "ok",
            "{} through the SDK: {summary}",
            op.operation_id()
        );
        checked += 1;
    }
    assert!(checked >= 38, "{checked}");
    if std::env::var_os("KLSYNC_UPDATE_CORPUS").is_some_and(|v| v == "1") {
        write_corpus(&recorder.exchanges());
    }
    handle.shutdown().await;
}

/// The SDK's exchanges as `--record-http` lines, in `tests/conformance/official-sdk.jsonl`.
fn write_corpus(exchanges: &[Exchange]) {
    let mut text = String::new();
    for exchange in exchanges {
        let template = match_path(&exchange.path).expect("a spec path");
        let operation = Operation::ALL
            .iter()
            .find(|op| op.method() == exchange.method && op.path_template() == template)
            .map_or("unknown", |op| op.operation_id());
        let query = exchange
            .query
            .as_deref()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        let mut request = serde_json::json!({
            "method": exchange.method,
            "url": format!("https://a.klaviyo.com{}{query}", exchange.path),
            "headers": {"revision": "2026-07-15"},
        });
        if !exchange.request_body.is_null() {
            request["body"] = exchange.request_body.clone();
        }
        // Only the id of what was created: the replay maps it to the emulator's.
        let mut response = serde_json::json!({"status": exchange.status});
        if let Some(id) = exchange.response_body["data"]["id"].as_str()
            && matches!(exchange.status, 201 | 202)
        {
            response["body"] = serde_json::json!({"data": {"id": id}});
        }
        let line =
            serde_json::json!({"operation": operation, "request": request, "response": response});
        text.push_str(&line.to_string());
        text.push('\n');
    }
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/conformance/official-sdk.jsonl"
    );
    std::fs::write(path, text).expect("write the corpus");
}
