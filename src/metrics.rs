//! What a run did and cost: requests per endpoint, retries, 429s, time waiting on rate limits,
//! rows read, changes applied, duration and outcome.
//!
//! Plumbing: the composition root creates one [`Recorder`] per run and hands it to commands in
//! [`crate::Output::metrics`]; a command feeds it as it works (a Klaviyo client's
//! [`ClientMetrics`] when it is done with the client, rows as they are read, each change applied
//! or failed). When the command returns, `run` takes a [`RunMetrics`] snapshot, prints
//! [`RunMetrics::summary_text`] on stderr if the command recorded anything (and `-q` is not
//! given) and writes it to `--metrics-file`. Commands that record nothing (validate, schema, ...)
//! print no summary, so their stderr stays as it was; the metrics file is still written.
//!
//! A recorder rather than a return value keeps every command's signature as it is, and lets a
//! command that stores its own audit record (apply → `StateStore::finish_run`) take the same
//! snapshot for the `summary` column ([`Recorder::snapshot`]), so `klsync history` and the
//! metrics file agree.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ExitStatus};
use crate::klaviyo::ClientMetrics;

/// The metrics of one run, as printed at its end and written by `--metrics-file`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMetrics {
    /// The subcommand, e.g. `"apply"` or `"query run"`.
    pub command: String,
    /// When the run started.
    pub started_at: DateTime<Utc>,
    /// Wall-clock duration of the run, in milliseconds.
    pub duration_ms: u64,
    /// Klaviyo HTTP requests sent, per operation id (retries included).
    pub requests: BTreeMap<String, u64>,
    /// Requests repeated after a 429, 5xx or transport failure.
    pub retries: u64,
    /// 429 responses received.
    pub rate_limited: u64,
    /// Time spent waiting on klsync's own rate limiters, in milliseconds.
    pub limiter_wait_ms: u64,
    /// Time spent waiting before retries (`Retry-After` and backoff), in milliseconds.
    pub retry_wait_ms: u64,
    /// Rows read from a database (SQL-driven profile data, `query run`).
    pub rows_read: u64,
    /// Changes Klaviyo confirmed.
    pub changes_applied: u64,
    /// Changes that failed.
    pub changes_failed: u64,
    /// How the run ended: `success`, `changes`, `partial`, `error` or `usage`.
    pub outcome: String,
}

impl RunMetrics {
    /// All requests, every endpoint together.
    pub fn total_requests(&self) -> u64 {
        self.requests.values().sum()
    }

    /// A compact end-of-run summary for stderr: one line, plus one listing requests per endpoint
    /// when there were any. Zero counters are left out.
    pub fn summary_text(&self) -> String {
        let mut parts = vec![format!(
            "{} {} in {}",
            self.command,
            self.outcome,
            seconds(self.duration_ms)
        )];
        let total = self.total_requests();
        if total > 0 {
            let mut requests = format!("{total} request{}", plural(total));
            let mut detail = Vec::new();
            if self.retries > 0 {
                detail.push(format!("{} retried", self.retries));
            }
            if self.rate_limited > 0 {
                detail.push(format!("{} rate-limited (429)", self.rate_limited));
            }
            if !detail.is_empty() {
                requests.push_str(&format!(" ({})", detail.join(", ")));
            }
            parts.push(requests);
        }
        if self.limiter_wait_ms + self.retry_wait_ms > 0 {
            parts.push(format!(
                "waited {} on rate limits, {} before retries",
                seconds(self.limiter_wait_ms),
                seconds(self.retry_wait_ms)
            ));
        }
        if self.rows_read > 0 {
            parts.push(format!(
                "{} row{} read",
                self.rows_read,
                plural(self.rows_read)
            ));
        }
        if self.changes_applied + self.changes_failed > 0 {
            parts.push(format!(
                "{} change{} applied, {} failed",
                self.changes_applied,
                plural(self.changes_applied),
                self.changes_failed
            ));
        }
        let mut text = format!("summary: {}\n", parts.join("; "));
        if total > 0 {
            let endpoints: Vec<String> = self
                .requests
                .iter()
                .map(|(endpoint, count)| format!("{endpoint} {count}"))
                .collect();
            text.push_str(&format!("  requests: {}\n", endpoints.join(", ")));
        }
        text
    }

    /// Write the metrics as pretty JSON to `path` (replacing it).
    pub fn write_json(&self, path: &Path) -> Result<(), Error> {
        let mut text = serde_json::to_string_pretty(self).expect("metrics always serialize");
        text.push('\n');
        std::fs::write(path, text).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// The word for how a run ended, stored in metrics and the audit record.
pub fn outcome_name(status: ExitStatus) -> &'static str {
    match status {
        ExitStatus::Success => "success",
        ExitStatus::Error => "error",
        ExitStatus::Changes => "changes",
        ExitStatus::Partial => "partial",
        ExitStatus::Usage => "usage",
        ExitStatus::Interrupted | ExitStatus::Terminated => "interrupted",
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn seconds(ms: u64) -> String {
    format!("{:.1}s", Duration::from_millis(ms).as_secs_f64())
}

/// Collects one run's counters while commands work. Cheap to clone; clones share the counts,
/// so it can be handed to concurrent tasks.
#[derive(Debug, Clone)]
pub struct Recorder {
    inner: Arc<Mutex<Counters>>,
    started: Instant,
    started_at: DateTime<Utc>,
}

#[derive(Debug, Default)]
struct Counters {
    client: ClientMetrics,
    rows_read: u64,
    changes_applied: u64,
    changes_failed: u64,
    used: bool,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    /// A recorder for a run starting now.
    pub fn new() -> Self {
        Recorder {
            inner: Arc::default(),
            started: Instant::now(),
            started_at: Utc::now(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Counters> {
        // Counters stay meaningful after a panic elsewhere: every update is a single addition.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Add a Klaviyo client's counters. Call once per client, when done with it (the client's
    /// counters are cumulative, so adding them twice would count twice).
    pub fn add_client(&self, metrics: &ClientMetrics) {
        let mut counters = self.lock();
        counters.used = true;
        let total = &mut counters.client;
        for (operation, count) in &metrics.requests {
            *total.requests.entry(operation.clone()).or_default() += count;
        }
        total.retries += metrics.retries;
        total.rate_limited += metrics.rate_limited;
        total.limiter_wait_ms += metrics.limiter_wait_ms;
        total.retry_wait_ms += metrics.retry_wait_ms;
        total.recovered_creates += metrics.recovered_creates;
    }

    /// Count rows read from a database.
    pub fn add_rows_read(&self, rows: u64) {
        let mut counters = self.lock();
        counters.used = true;
        counters.rows_read += rows;
    }

    /// Count one change Klaviyo confirmed.
    pub fn change_applied(&self) {
        let mut counters = self.lock();
        counters.used = true;
        counters.changes_applied += 1;
    }

    /// Count one change that failed.
    pub fn change_failed(&self) {
        let mut counters = self.lock();
        counters.used = true;
        counters.changes_failed += 1;
    }

    /// Whether anything was recorded: decides whether the end-of-run summary is worth printing.
    pub fn is_used(&self) -> bool {
        self.lock().used
    }

    /// The metrics so far, for a run of `command` ending now with `outcome`
    /// (see [`outcome_name`]).
    pub fn snapshot(&self, command: &str, outcome: &str) -> RunMetrics {
        let counters = self.lock();
        let client = &counters.client;
        RunMetrics {
            command: command.to_string(),
            started_at: self.started_at,
            duration_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            requests: client.requests.clone(),
            retries: client.retries,
            rate_limited: client.rate_limited,
            limiter_wait_ms: client.limiter_wait_ms,
            retry_wait_ms: client.retry_wait_ms,
            rows_read: counters.rows_read,
            changes_applied: counters.changes_applied,
            changes_failed: counters.changes_failed,
            outcome: outcome.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(requests: &[(&str, u64)], retries: u64, rate_limited: u64) -> ClientMetrics {
        ClientMetrics {
            requests: requests
                .iter()
                .map(|(op, n)| ((*op).to_string(), *n))
                .collect(),
            retries,
            rate_limited,
            limiter_wait_ms: 1500,
            retry_wait_ms: 250,
            recovered_creates: 0,
        }
    }

    #[test]
    fn recorder_adds_clients_rows_and_changes() {
        let recorder = Recorder::new();
        assert!(!recorder.is_used());
        recorder.add_client(&client(&[("getLists", 2), ("createList", 1)], 1, 1));
        recorder
            .clone()
            .add_client(&client(&[("getLists", 3)], 0, 2));
        recorder.add_rows_read(40);
        recorder.add_rows_read(2);
        recorder.change_applied();
        recorder.change_applied();
        recorder.change_failed();
        assert!(recorder.is_used());
        let metrics = recorder.snapshot("apply", "partial");
        assert_eq!(metrics.requests["getLists"], 5);
        assert_eq!(metrics.requests["createList"], 1);
        assert_eq!(metrics.total_requests(), 6);
        assert_eq!((metrics.retries, metrics.rate_limited), (1, 3));
        assert_eq!(
            (metrics.limiter_wait_ms, metrics.retry_wait_ms),
            (3000, 500)
        );
        assert_eq!(metrics.rows_read, 42);
        assert_eq!((metrics.changes_applied, metrics.changes_failed), (2, 1));
        assert_eq!(metrics.outcome, "partial");
        assert_eq!(metrics.command, "apply");
    }

    fn sample() -> RunMetrics {
        RunMetrics {
            command: "apply".into(),
            started_at: DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
                .unwrap()
                .into(),
            duration_ms: 12_340,
            requests: [("createList".to_string(), 2), ("getLists".to_string(), 1)]
                .into_iter()
                .collect(),
            retries: 1,
            rate_limited: 1,
            limiter_wait_ms: 2000,
            retry_wait_ms: 1000,
            rows_read: 0,
            changes_applied: 2,
            changes_failed: 0,
            outcome: "success".into(),
        }
    }

    #[test]
    fn summary_lists_what_happened_and_skips_zeros() {
        assert_eq!(
            sample().summary_text(),
            "summary: apply success in 12.3s; 3 requests (1 retried, 1 rate-limited (429)); \
             waited 2.0s on rate limits, 1.0s before retries; 2 changes applied, 0 failed\n  \
             requests: createList 2, getLists 1\n"
        );
        let quiet_run = RunMetrics {
            command: "query run".into(),
            duration_ms: 40,
            requests: BTreeMap::new(),
            retries: 0,
            rate_limited: 0,
            limiter_wait_ms: 0,
            retry_wait_ms: 0,
            rows_read: 1,
            changes_applied: 0,
            outcome: "success".into(),
            ..sample()
        };
        assert_eq!(
            quiet_run.summary_text(),
            "summary: query run success in 0.0s; 1 row read\n"
        );
    }

    #[test]
    fn json_round_trips_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.json");
        sample().write_json(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let back: RunMetrics = serde_json::from_str(&text).unwrap();
        assert_eq!(back, sample());
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["requests"]["createList"], 2);
        assert_eq!(value["started_at"], "2026-01-02T03:04:05Z");
        let missing_dir = dir.path().join("no/such/dir/m.json");
        assert!(matches!(
            sample().write_json(&missing_dir),
            Err(Error::Io { .. })
        ));
    }

    #[test]
    fn outcomes_have_stable_names() {
        assert_eq!(outcome_name(ExitStatus::Success), "success");
        assert_eq!(outcome_name(ExitStatus::Changes), "changes");
        assert_eq!(outcome_name(ExitStatus::Partial), "partial");
        assert_eq!(outcome_name(ExitStatus::Error), "error");
        assert_eq!(outcome_name(ExitStatus::Usage), "usage");
    }
}
