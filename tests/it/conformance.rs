//! The conformance corpus (issue 12): recorded exchanges with Klaviyo, replayed against the
//! emulator. Every file `tests/conformance/*.jsonl` holds lines in the `--record-http` shape
//! (`src/klaviyo/record.rs`), so a recording a user attaches to a report becomes a case by being
//! copied here:
//!
//! * `spec-examples.jsonl`: one request per operation klsync uses, made from the examples of
//!   Klaviyo's spec (`gen_spec_examples.py`), with the status the spec documents for success;
//! * `official-sdk.jsonl`: the requests Klaviyo's official Python SDK sends for those
//!   operations, recorded by `tests/it/official_sdk.rs` (`KLSYNC_UPDATE_CORPUS=1`).
//!
//! Each request is sent in order to a fresh emulator, with the ids the recording's creates
//! returned replaced by the ones the emulator returns. The emulator must answer with the
//! recorded status, and its body must validate against the spec's schema for that status.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::support::openapi::{Body, match_path, validate_body};
use klsync::emulator::{self, EmulatorConfig, RateLimitMode};
use serde_json::Value;

const KEY: &str = "pk_conformance";

fn corpus_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "jsonl"))
        .collect();
    files.sort();
    files
}

/// `text` with every recorded id replaced by the emulator's.
fn translated(text: &str, ids: &BTreeMap<String, String>) -> String {
    // Longest first, so an id that contains another is replaced whole.
    let mut ordered: Vec<(&String, &String)> = ids.iter().collect();
    ordered.sort_by_key(|(recorded, _)| std::cmp::Reverse(recorded.len()));
    let mut out = text.to_owned();
    for (recorded, actual) in ordered {
        out = out.replace(recorded.as_str(), actual);
    }
    out
}

/// Replays one corpus file; the problems found, each naming its line and operation.
async fn replay(file: &Path) -> (usize, Vec<String>) {
    let handle = emulator::start(EmulatorConfig {
        rate_limits: RateLimitMode::Off,
        api_keys: vec![KEY.to_owned()],
        ..EmulatorConfig::default()
    })
    .await
    .expect("start the emulator");
    let http = reqwest::Client::new();
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    let mut problems = Vec::new();
    let text = std::fs::read_to_string(file).unwrap();
    let mut count = 0;
    for (number, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        count += 1;
        let line: Value = serde_json::from_str(line)
            .unwrap_or_else(|err| panic!("{}:{}: {err}", file.display(), number + 1));
        let at = format!(
            "{}:{} {}",
            file.file_name().unwrap().to_string_lossy(),
            number + 1,
            line["operation"].as_str().unwrap_or("?")
        );
        let request = &line["request"];
        let method = request["method"].as_str().expect("method");
        let url = request["url"].as_str().expect("url");
        let path_and_query = url
            .find("/api/")
            .map(|start| &url[start..])
            .unwrap_or_else(|| panic!("{at}: {url} is not a Klaviyo API URL"));
        let path_and_query = translated(path_and_query, &ids);
        let mut builder = http
            .request(
                method.parse().unwrap(),
                format!("{}{path_and_query}", handle.base_url),
            )
            .header("Authorization", format!("Klaviyo-API-Key {KEY}"))
            .header("accept", "application/vnd.api+json")
            .header(
                "revision",
                request["headers"]["revision"]
                    .as_str()
                    .unwrap_or("2026-07-15"),
            );
        if let Some(body) = request.get("body").filter(|b| !b.is_null()) {
            builder = builder
                .header("content-type", "application/vnd.api+json")
                .body(translated(&body.to_string(), &ids));
        }
        let response = builder.send().await.expect("the emulator answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let body: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        // Mapped whatever the status, so one wrong answer is reported once, not again by
        // every later request naming the same resource.
        if let (Some(recorded), Some(actual)) = (
            line["response"]["body"]["data"]["id"].as_str(),
            body["data"]["id"].as_str(),
        ) {
            ids.insert(recorded.to_owned(), actual.to_owned());
        }
        let expected = line["response"]["status"]
            .as_u64()
            .expect("a recorded status") as u16;
        if status != expected {
            problems.push(format!(
                "{at}: answered {status}, recorded {expected}: {body}"
            ));
            continue;
        }
        let path = path_and_query.split('?').next().unwrap_or_default();
        match match_path(path) {
            Some(template) => {
                if let Err(errors) = validate_body(method, template, Body::Response(status), &body)
                {
                    problems.push(format!("{at}: the answer does not validate: {errors:?}"));
                }
            }
            None => problems.push(format!("{at}: {path} is not in the spec")),
        }
    }
    handle.shutdown().await;
    (count, problems)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_answers_every_corpus_exchange_as_recorded() {
    let files = corpus_files();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.contains(&"spec-examples.jsonl".to_owned()),
        "{names:?}"
    );
    let mut problems = Vec::new();
    for file in &files {
        let (count, found) = replay(file).await;
        assert!(count > 0, "{} is empty", file.display());
        problems.extend(found);
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// Every operation klsync uses has a case in the spec-examples corpus.
#[test]
fn the_spec_corpus_covers_every_operation_klsync_uses() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/spec-examples.jsonl"),
    )
    .unwrap();
    let covered: std::collections::BTreeSet<String> = text
        .lines()
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap()["operation"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let missing: Vec<&str> = klsync::klaviyo::Operation::ALL
        .iter()
        .map(|op| op.operation_id())
        .filter(|id| !covered.contains(*id))
        .collect();
    assert!(missing.is_empty(), "no corpus case for {missing:?}");
}
