//! `--record-http FILE`: every exchange with Klaviyo written as one JSON line, so that a user
//! who meets a difference on the real Klaviyo can attach the file to a report, and each line can
//! become a conformance case of the emulator (`tests/it/record_http.rs` checks recordings against
//! the spec the same way).
//!
//! One line per attempt (a retried request is several lines), written when the attempt ends,
//! in the order attempts end:
//!
//! ```json
//! {"time":"2026-12-03T14:00:00.123Z","operation":"create_list","attempt":1,"duration_ms":41,
//!  "request":{"method":"POST","url":"https://a.klaviyo.com/api/lists",
//!             "headers":{"authorization":"Klaviyo-API-Key [redacted]","revision":"2026-07-15",...},
//!             "body":{"data":{"type":"list","attributes":{"name":"VIP"}}}},
//!  "response":{"status":201,"headers":{"content-type":"application/vnd.api+json"},"body":{...}}}
//! ```
//!
//! An attempt that got no answer has `"error"` in place of `"response"`. Bodies that are JSON
//! are written as JSON, others as text. Redaction: the `Authorization` header is never
//! written, only its scheme; credentials in the URL are masked; and, as a last guard, the API
//! key is replaced by `[redacted]` wherever else it might appear in a line. Only the response
//! headers klsync reads are kept (`content-type`, `retry-after`, the `ratelimit-*` ones).
//!
//! The file is written line by line (one `write` per line), so it is complete up to the last
//! finished attempt even if the process is killed. A failure to write it is reported once, as
//! a warning, and recording stops; the command itself goes on.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value, json};

use crate::settings;

/// Where exchanges are recorded. Cheap to clone; clones write to the same file.
#[derive(Clone)]
pub struct HttpRecorder {
    inner: Arc<Mutex<Sink>>,
}

struct Sink {
    path: PathBuf,
    /// `None` once a write failed: recording stopped.
    file: Option<File>,
}

impl std::fmt::Debug for HttpRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sink = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f.debug_struct("HttpRecorder")
            .field("path", &sink.path)
            .finish_non_exhaustive()
    }
}

/// One attempt, as the client saw it.
pub(crate) struct Exchange<'a> {
    pub operation: &'a str,
    pub attempt: u32,
    pub duration_ms: u64,
    pub method: &'a str,
    /// The full URL, query included.
    pub url: &'a str,
    /// The request headers klsync sent, `Authorization` already reduced to its scheme.
    pub request_headers: Vec<(&'a str, String)>,
    pub request_body: Option<&'a [u8]>,
    pub outcome: Outcome<'a>,
}

/// How an attempt ended.
pub(crate) enum Outcome<'a> {
    Response {
        status: u16,
        headers: Vec<(String, String)>,
        body: &'a [u8],
    },
    /// No whole answer: the error as klsync reports it.
    Failed(String),
}

impl HttpRecorder {
    /// Creates (or truncates) `path`.
    pub fn create(path: &Path) -> std::io::Result<HttpRecorder> {
        let file = File::create(path)?;
        Ok(HttpRecorder {
            inner: Arc::new(Mutex::new(Sink {
                path: path.to_owned(),
                file: Some(file),
            })),
        })
    }

    /// Appends one exchange; `secrets` are replaced by `[redacted]` wherever they appear.
    pub(crate) fn record(&self, exchange: &Exchange<'_>, secrets: &[&str]) {
        let mut line = exchange.to_json().to_string();
        for secret in secrets.iter().filter(|s| !s.is_empty()) {
            if line.contains(secret) {
                line = line.replace(secret, "[redacted]");
            }
        }
        line.push('\n');
        let mut sink = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Some(file) = sink.file.as_mut() else {
            return;
        };
        if let Err(err) = file.write_all(line.as_bytes()) {
            let path = sink.path.display().to_string();
            sink.file = None;
            tracing::warn!("--record-http {path}: recording stopped: {err}");
        }
    }
}

impl Exchange<'_> {
    fn to_json(&self) -> Value {
        let headers: Map<String, Value> = self
            .request_headers
            .iter()
            .map(|(name, value)| ((*name).to_owned(), Value::String(value.clone())))
            .collect();
        let mut line = json!({
            "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "operation": self.operation,
            "attempt": self.attempt,
            "duration_ms": self.duration_ms,
            "request": {
                "method": self.method,
                "url": settings::redact_url(self.url),
                "headers": headers,
                "body": self.request_body.map_or(Value::Null, body_value),
            },
        });
        match &self.outcome {
            Outcome::Response {
                status,
                headers,
                body,
            } => {
                let headers: Map<String, Value> = headers
                    .iter()
                    .map(|(name, value)| (name.clone(), Value::String(value.clone())))
                    .collect();
                line["response"] = json!({
                    "status": status,
                    "headers": headers,
                    "body": if body.is_empty() { Value::Null } else { body_value(body) },
                });
            }
            Outcome::Failed(error) => line["error"] = Value::String(error.clone()),
        }
        line
    }
}

/// A body as JSON when it is JSON, else as (lossy) text.
fn body_value(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

/// Whether klsync reads this response header, so that a recording keeps it.
pub(crate) fn kept_response_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name == "content-type" || name == "retry-after" || name.starts_with("ratelimit")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange<'a>(body: &'a [u8], outcome: Outcome<'a>) -> Exchange<'a> {
        Exchange {
            operation: "create_list",
            attempt: 2,
            duration_ms: 7,
            method: "POST",
            url: "https://user:hunter2@a.klaviyo.com/api/lists?x=pk_secret",
            request_headers: vec![
                ("authorization", "Klaviyo-API-Key [redacted]".to_owned()),
                ("revision", "2024-10-15".to_owned()),
            ],
            request_body: Some(body),
            outcome,
        }
    }

    fn lines(path: &Path) -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn exchanges_are_json_lines_with_secrets_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("http.jsonl");
        let recorder = HttpRecorder::create(&path).unwrap();
        let sent = br#"{"data":{"type":"list","attributes":{"name":"pk_secret list"}}}"#;
        recorder.record(
            &exchange(
                sent,
                Outcome::Response {
                    status: 502,
                    headers: vec![("content-type".into(), "text/html".into())],
                    body: b"<html>bad gateway</html>",
                },
            ),
            &["pk_secret"],
        );
        recorder.record(
            &exchange(b"not json", Outcome::Failed("timed out".into())),
            &["pk_secret"],
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains("pk_secret") && !text.contains("hunter2"),
            "{text}"
        );
        let lines = lines(&path);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["operation"], "create_list");
        assert_eq!(lines[0]["attempt"], 2);
        assert_eq!(
            lines[0]["request"]["body"]["data"]["attributes"]["name"],
            "[redacted] list"
        );
        assert_eq!(lines[0]["response"]["status"], 502);
        assert_eq!(lines[0]["response"]["body"], "<html>bad gateway</html>");
        assert_eq!(lines[1]["request"]["body"], "not json");
        assert_eq!(lines[1]["error"], "timed out");
        assert!(lines[1].get("response").is_none());
    }

    #[test]
    fn only_the_headers_klsync_reads_are_kept() {
        for kept in ["Content-Type", "retry-after", "RateLimit-Remaining"] {
            assert!(kept_response_header(kept), "{kept}");
        }
        for dropped in ["set-cookie", "server", "cf-ray"] {
            assert!(!kept_response_header(dropped), "{dropped}");
        }
    }
}
