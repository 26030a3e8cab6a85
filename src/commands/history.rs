//! `klsync history`: the audit record — who ran what, from which commit and manifests, how it
//! ended, how many requests it used, and each change it journaled — newest run first.
//!
//! Reads the state database named by `KLSYNC_STATE_URL`, else the project's SQLite file. A
//! project that never ran an apply has no such file; history then says so rather than create
//! an empty database as a side effect of reading.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::cli::{HistoryArgs, HistoryFormat};
use crate::error::{Error, ExitStatus};
use crate::run::Output;
use crate::state::{JournalRow, RunOutcome, RunRow, STATE_URL_ENV, StateStore};

/// Run `klsync history`.
pub fn run(args: &HistoryArgs, output: &Output) -> Result<ExitStatus, Error> {
    let configured = std::env::var(STATE_URL_ENV).ok();
    let dir = &args.project.dir;
    let url = StateStore::resolve_url(configured.as_deref(), dir);
    let default_file = dir.join(".klsync/state.db");
    let runs = if url == StateStore::default_url(dir) && !default_file.exists() {
        Vec::new()
    } else {
        super::session::runtime()?.block_on(async {
            let store = StateStore::connect(&url).await?;
            let runs = store.history(args.limit).await;
            store.close().await;
            runs
        })?
    };
    let text = match args.format {
        HistoryFormat::Json => {
            let runs: Vec<Value> = runs.iter().map(run_json).collect();
            let mut text = serde_json::to_string_pretty(&runs).expect("JSON values serialize");
            text.push('\n');
            text
        }
        HistoryFormat::Text => {
            if runs.is_empty() && !output.quiet {
                eprintln!(
                    "no runs recorded yet in {}",
                    crate::settings::redact_url(&url)
                );
            }
            runs.iter().map(run_text).collect()
        }
    };
    super::write_stdout(text.as_bytes())
}

/// Requests a run used, from its summary: the metrics' per-endpoint `requests` object summed,
/// or a plain number.
fn requests_used(summary: Option<&Value>) -> Option<u64> {
    match summary?.get("requests")? {
        Value::Object(per_endpoint) => Some(per_endpoint.values().filter_map(Value::as_u64).sum()),
        other => other.as_u64(),
    }
}

/// The first 12 characters of a commit or digest (after any `sha256:` style prefix).
fn short(value: &str) -> &str {
    let value = value.rsplit(':').next().unwrap_or(value);
    value.get(..12).unwrap_or(value)
}

fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn run_text(run: &RunRow) -> String {
    let outcome = run
        .outcome
        .map(RunOutcome::as_str)
        .unwrap_or(if run.finished_at.is_some() {
            "finished"
        } else {
            "unfinished"
        });
    let duration = run
        .finished_at
        .map(|end| {
            let ms = (end - run.started_at).num_milliseconds().max(0);
            format!(" ({:.1}s)", ms as f64 / 1000.0)
        })
        .unwrap_or_default();
    let mut text = format!(
        "run {}  {}  {}  {}{}\n",
        // The first group of the UUID, like a short git hash; JSON has the whole id.
        run.run_id.to_string().split('-').next().unwrap_or_default(),
        run.command,
        outcome,
        time(run.started_at),
        duration
    );
    let mut facts = vec![format!("by {}", run.actor)];
    if let Some(commit) = &run.git_commit {
        facts.push(format!("commit {}", short(commit)));
    }
    if let Some(digest) = &run.manifest_digest {
        facts.push(format!("manifests {}", short(digest)));
    }
    if let Some(plan) = &run.plan_id {
        facts.push(format!("plan {plan}"));
    }
    if let Some(requests) = requests_used(run.summary.as_ref()) {
        facts.push(format!(
            "{requests} request{}",
            if requests == 1 { "" } else { "s" }
        ));
    }
    text.push_str(&format!("  {}\n", facts.join(", ")));
    if let Some(summary) = &run.summary {
        text.push_str(&summary_text(summary));
    }
    for entry in &run.journal {
        text.push_str(&journal_text(entry));
    }
    text
}

/// What a run's summary holds beyond its requests, as JSON shows it: why it was refused or
/// failed, the signal that stopped it, and the data it sent per sync.
fn summary_text(summary: &Value) -> String {
    let mut text = String::new();
    if let Some(error) = summary.get("error").and_then(Value::as_str) {
        text.push_str(&format!("  reason: {error}\n"));
    }
    if let Some(signal) = summary.get("signal").and_then(Value::as_str) {
        text.push_str(&format!("  stopped by {signal}\n"));
    }
    let counts = |item: &Value, names: &[&str]| -> String {
        let said: Vec<String> = names
            .iter()
            .filter_map(|name| {
                let count = item.get(*name)?.as_u64().filter(|count| *count > 0)?;
                Some(format!("{count} {}", name.replace('_', " ")))
            })
            .collect();
        if said.is_empty() {
            "nothing to send".to_owned()
        } else {
            said.join(", ")
        }
    };
    let data = summary.get("data");
    for profile in data
        .and_then(|d| d.get("profiles"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let id = profile.get("id").and_then(Value::as_str).unwrap_or("?");
        let said = counts(profile, &["sent", "unset", "failed"]);
        text.push_str(&format!("  data profiles.{id}: {said}\n"));
    }
    for list in data
        .and_then(|d| d.get("memberships"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = list.get("list").and_then(Value::as_str).unwrap_or("?");
        let said = counts(list, &["added", "already_members", "removed", "failed"]);
        text.push_str(&format!("  data lists.{key}.members: {said}\n"));
    }
    text
}

fn journal_text(entry: &JournalRow) -> String {
    let mut line = format!(
        "  #{} {} {} -> {}",
        entry.seq, entry.action, entry.address, entry.phase
    );
    if let Some(id) = &entry.klaviyo_id {
        line.push_str(&format!(" ({id})"));
    }
    if let Some(error) = &entry.error {
        line.push_str(&format!(": {error}"));
    }
    line.push('\n');
    line
}

fn run_json(run: &RunRow) -> Value {
    json!({
        "run_id": run.run_id.to_string(),
        "command": run.command,
        "started_at": run.started_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "finished_at": run.finished_at.map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true)),
        "actor": run.actor,
        "git_commit": run.git_commit,
        "manifest_digest": run.manifest_digest,
        "plan_id": run.plan_id,
        "outcome": run.outcome.map(RunOutcome::as_str),
        "requests": requests_used(run.summary.as_ref()),
        "summary": run.summary,
        "changes": run.journal.iter().map(journal_json).collect::<Vec<_>>(),
    })
}

fn journal_json(entry: &JournalRow) -> Value {
    json!({
        "seq": entry.seq,
        "address": entry.address,
        "action": entry.action,
        "outcome": entry.phase.as_str(),
        "klaviyo_id": entry.klaviyo_id,
        "error": entry.error,
        "started_at": entry.started_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "finished_at": entry.finished_at.map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true)),
        "detail": entry.detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{JournalId, Phase, RunId};

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().into()
    }

    fn sample() -> RunRow {
        let run_id: RunId = "3f2a1b4c-0000-4000-8000-000000000001".parse().unwrap();
        RunRow {
            run_id,
            command: "apply".into(),
            started_at: at("2026-01-02T03:04:05Z"),
            finished_at: Some(at("2026-01-02T03:04:08.500Z")),
            actor: "alice (github-actions)".into(),
            git_commit: Some("0123456789abcdef0123".into()),
            manifest_digest: Some("sha256:feedfacecafebeef00".into()),
            plan_id: None,
            outcome: Some(RunOutcome::Partial),
            summary: Some(json!({"requests": {"createList": 2, "getLists": 1}})),
            journal: vec![
                JournalRow {
                    id: JournalId(1),
                    run_id,
                    seq: 1,
                    address: "list.newsletter".into(),
                    action: "create".into(),
                    phase: Phase::Succeeded,
                    klaviyo_id: Some("XyZ123".into()),
                    detail: json!({}),
                    error: None,
                    started_at: at("2026-01-02T03:04:06Z"),
                    finished_at: Some(at("2026-01-02T03:04:07Z")),
                },
                JournalRow {
                    id: JournalId(2),
                    run_id,
                    seq: 2,
                    address: "segment.vip".into(),
                    action: "update".into(),
                    phase: Phase::Failed,
                    klaviyo_id: None,
                    detail: json!({}),
                    error: Some("400 invalid filter".into()),
                    started_at: at("2026-01-02T03:04:07Z"),
                    finished_at: Some(at("2026-01-02T03:04:08Z")),
                },
            ],
        }
    }

    #[test]
    fn text_shows_the_run_its_provenance_and_each_change() {
        assert_eq!(
            run_text(&sample()),
            "run 3f2a1b4c  apply  partial  2026-01-02 03:04:05 UTC (3.5s)\n\
             \x20 by alice (github-actions), commit 0123456789ab, manifests feedfacecafe, 3 requests\n\
             \x20 #1 create list.newsletter -> succeeded (XyZ123)\n\
             \x20 #2 update segment.vip -> failed: 400 invalid filter\n"
        );
        let unfinished = RunRow {
            finished_at: None,
            outcome: None,
            git_commit: None,
            manifest_digest: None,
            summary: None,
            journal: Vec::new(),
            ..sample()
        };
        assert_eq!(
            run_text(&unfinished),
            "run 3f2a1b4c  apply  unfinished  2026-01-02 03:04:05 UTC\n  by alice (github-actions)\n"
        );
    }

    #[test]
    fn text_shows_the_data_sent_and_why_a_run_was_refused() {
        let summary = json!({
            "requests": {"bulk_import_profiles": 2},
            "data": {
                "profiles": [{"id": "facts", "sent": 3000, "unset": 0, "recorded": 2999,
                              "failed": 1, "failed_sample": [], "jobs": []}],
                "memberships": [{"list": "vip", "added": 20, "already_members": 2, "confirmed": 0,
                                 "removed": 0, "failed": 0, "failed_sample": [], "jobs": []}],
                "drift": []
            }
        });
        assert_eq!(
            summary_text(&summary),
            "  data profiles.facts: 3000 sent, 1 failed\n\
             \x20 data lists.vip.members: 20 added, 2 already members\n"
        );
        let refused = json!({"error": "lists.vip.members: 2 removal(s), max_removals 1"});
        assert_eq!(
            summary_text(&refused),
            "  reason: lists.vip.members: 2 removal(s), max_removals 1\n"
        );
        assert_eq!(
            summary_text(&json!({"signal": "SIGINT", "changed": 3})),
            "  stopped by SIGINT\n"
        );
    }

    #[test]
    fn requests_come_from_the_summary_in_either_shape() {
        assert_eq!(
            requests_used(Some(&json!({"requests": {"a": 2, "b": 5}}))),
            Some(7)
        );
        assert_eq!(requests_used(Some(&json!({"requests": 4}))), Some(4));
        assert_eq!(requests_used(Some(&json!({"rows": 4}))), None);
        assert_eq!(requests_used(None), None);
    }

    #[test]
    fn json_carries_every_field() {
        let value = run_json(&sample());
        assert_eq!(value["requests"], 3);
        assert_eq!(value["outcome"], "partial");
        assert_eq!(value["changes"][1]["outcome"], "failed");
        assert_eq!(value["changes"][1]["error"], "400 invalid filter");
        assert_eq!(value["changes"][0]["klaviyo_id"], "XyZ123");
        assert_eq!(value["started_at"], "2026-01-02T03:04:05.000Z");
        assert_eq!(value["git_commit"], "0123456789abcdef0123");
    }
}
