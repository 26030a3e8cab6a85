//! `--record-http FILE` (issue 12): plan, apply, drift and import against the emulator, with
//! 429s injected so retries are recorded too. Each recording has one line per attempt (as many
//! as the metrics count), never the API key, and every exchange in it validates against
//! Klaviyo's spec exactly as the conformance suites check the emulator: a recording a user
//! attaches to a report is a conformance case as it is.

use std::path::Path;

use crate::support::openapi::{Body, validate_operation};
use crate::support::project::{Finished, TempProject, klsync, run};
use klsync::emulator::{self, EmulatorConfig, RateLimitMode};
use klsync::klaviyo::Operation;
use serde_json::Value;

const KEY: &str = "pk_recorded_canary_7f3a";

const PROJECT: &str = "\
tag_groups:
  - name: team
    tags: [growth]
lists:
  - id: vip
    name: VIP
    tags: [team/growth]
    members:
      query: big
      identify_by: email
      mode: mirror
segments:
  - id: engaged
    name: Engaged
    definition:
      condition_groups:
        - conditions:
            - type: profile-property
              property: properties['ltv']
              filter: {type: numeric, operator: greater-than, value: 100}
profiles:
  - id: facts
    query: facts
    identify_by: email
    properties:
      ltv: spend
queries:
  facts:
    sql: SELECT email, spend FROM customers
  big:
    sql: SELECT email FROM customers WHERE spend > 10
";

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}")))
        .collect()
}

/// Every exchange of a recording validates against the spec, on both sides.
fn assert_conforms(recording: &[Value]) {
    let mut violations = Vec::new();
    for line in recording {
        let name = line["operation"].as_str().expect("operation");
        let op = Operation::ALL
            .iter()
            .copied()
            .find(|op| op.operation_id() == name)
            .unwrap_or_else(|| panic!("unknown operation {name}"));
        assert_eq!(line["request"]["method"], op.method(), "{line}");
        if op.method() == "POST" || op.method() == "PATCH" {
            if let Err(errors) = validate_operation(op, Body::Request, &line["request"]["body"]) {
                violations.push(format!("{name} request: {errors:?}"));
            }
        }
        let response = &line["response"];
        let status = response["status"].as_u64().expect("a response") as u16;
        if let Err(errors) = validate_operation(op, Body::Response(status), &response["body"]) {
            violations.push(format!("{name} response {status}: {errors:?}"));
        }
    }
    assert!(violations.is_empty(), "{violations:#?}");
}

fn metrics_requests(path: &Path) -> u64 {
    let metrics: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    metrics["requests"]
        .as_object()
        .map_or(0, |all| all.values().filter_map(Value::as_u64).sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_exchange_is_recorded_redacted_and_conforms_to_the_spec() {
    let emulator = emulator::start(EmulatorConfig {
        rate_limits: RateLimitMode::Off,
        api_keys: vec![KEY.to_owned()],
        faults: Some("429=0.2".to_owned()),
        seed: 5,
        ..EmulatorConfig::default()
    })
    .await
    .expect("start the emulator");
    let project = TempProject::new(&[("shop.yaml", PROJECT)]);
    let files = tempfile::tempdir().expect("tempdir");
    let data_url = format!(
        "sqlite://{}?mode=rwc",
        files.path().join("shop.db").display()
    );
    let pool = sqlx::SqlitePool::connect(&data_url).await.expect("data");
    sqlx::raw_sql(
        "CREATE TABLE customers (email TEXT, spend INTEGER);
         INSERT INTO customers VALUES ('a@example.com', 5), ('b@example.com', 20),
                                      ('c@example.com', 300);",
    )
    .execute(&pool)
    .await
    .expect("seed");
    pool.close().await;
    let state_url = format!("sqlite://{}", files.path().join("state.db").display());
    let klsync_run = |args: &[&str], name: &str| -> (Finished, Vec<Value>, u64) {
        let recording = files.path().join(format!("{name}.jsonl"));
        let metrics = files.path().join(format!("{name}.metrics.json"));
        let finished = run(klsync()
            .args(args)
            .arg("--record-http")
            .arg(&recording)
            .arg("--metrics-file")
            .arg(&metrics)
            .env("KLAVIYO_API_KEY", KEY)
            .env("KLAVIYO_BASE_URL", &emulator.base_url)
            .env("KLSYNC_STATE_URL", &state_url)
            .env("DATABASE_URL", &data_url));
        let text = std::fs::read_to_string(&recording).expect("the recording");
        assert!(!text.contains(KEY), "{name}: the key was recorded");
        (finished, lines(&recording), metrics_requests(&metrics))
    };
    let dir = project.path().to_str().expect("utf-8");
    let imported = files.path().join("imported");
    let runs: [(&[&str], &str); 4] = [
        (&["plan", "-C", dir], "plan"),
        (&["apply", "-C", dir, "--auto-approve"], "apply"),
        (&["drift", "-C", dir], "drift"),
        (
            &["import", "--out", imported.to_str().expect("utf-8")],
            "import",
        ),
    ];
    let mut retried = 0;
    let mut operations = std::collections::BTreeSet::new();
    for (args, name) in runs {
        let (finished, recording, requests) = klsync_run(args, name);
        assert_eq!(finished.code, 0, "{name}: {}", finished.stderr);
        assert!(!recording.is_empty(), "{name}: nothing recorded");
        assert_eq!(
            recording.len() as u64,
            requests,
            "{name}: one line per request the metrics count"
        );
        for line in &recording {
            assert_eq!(
                line["request"]["headers"]["authorization"], "Klaviyo-API-Key [redacted]",
                "{line}"
            );
            assert!(
                line["request"]["url"]
                    .as_str()
                    .is_some_and(|url| url.starts_with(&emulator.base_url)),
                "{line}"
            );
            operations.insert(line["operation"].as_str().unwrap_or_default().to_owned());
            if line["response"]["status"] == 429 {
                retried += 1;
                assert!(
                    line["response"]["headers"]["retry-after"].is_string(),
                    "{line}"
                );
            }
        }
        assert_conforms(&recording);
    }
    assert!(retried > 0, "the faults produced no 429 to record");
    for op in [
        "create_list",
        "create_segment",
        "bulk_import_profiles",
        "get_bulk_import_profiles_job",
    ] {
        assert!(operations.contains(op), "{op} not recorded: {operations:?}");
    }
    emulator.shutdown().await;
}

#[test]
fn an_unwritable_recording_is_refused_before_anything_runs() {
    let project = TempProject::new(&[("shop.yaml", "lists: []\n")]);
    let finished = run(klsync()
        .args(["plan", "-C"])
        .arg(project.path())
        .args(["--record-http", "/nonexistent/dir/http.jsonl"])
        .env("KLAVIYO_API_KEY", KEY));
    assert_eq!(finished.code, 1, "{}", finished.stderr);
    assert!(
        finished
            .stderr
            .contains("--record-http /nonexistent/dir/http.jsonl: cannot create the file"),
        "{}",
        finished.stderr
    );
}
