//! `ApiError`: everything that can go wrong talking to Klaviyo.
//!
//! No variant ever holds a request header, so the API key cannot reach an error message. URLs
//! are safe (the key travels only in the `Authorization` header), but transport errors are still
//! stripped of their URL and carry the request path instead, and the one message that names the
//! server ([`ApiError::Unreachable`]) shows its base URL redacted, so a base URL with credentials
//! in it can never leak either.
//!
//! Every message names the operation (or the server) and what was wrong, in one line: the
//! status and Klaviyo's error codes, the content type and a one-line snippet of a body that is
//! not Klaviyo's, the innermost cause of a broken connection.

use std::time::Duration;

use serde::Deserialize;

use super::operations::Operation;

/// One entry of a Klaviyo `{"errors": [...]}` body.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ApiErrorObject {
    /// Klaviyo's id for this error occurrence, when given.
    pub id: Option<String>,
    /// Machine-readable code, e.g. `invalid`, `duplicate_profile`, `not_found`.
    pub code: String,
    /// Short human-readable summary.
    pub title: String,
    /// Human-readable detail.
    pub detail: String,
    /// JSON pointer into the request body (`source.pointer`).
    pub source_pointer: Option<String>,
    /// The query parameter at fault (`source.parameter`).
    pub source_parameter: Option<String>,
    /// Extra data (`meta`), e.g. `duplicate_profile_id`.
    pub meta: serde_json::Map<String, serde_json::Value>,
}

/// Wire shape of an error body. Everything is optional so that a half-conforming body still
/// yields what it has.
#[derive(Deserialize)]
struct WireErrors {
    #[serde(default)]
    errors: Vec<WireError>,
}

#[derive(Deserialize)]
struct WireError {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    detail: Option<String>,
    #[serde(default)]
    source: Option<WireSource>,
    #[serde(default)]
    meta: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Deserialize)]
struct WireSource {
    #[serde(default)]
    pointer: Option<String>,
    #[serde(default)]
    parameter: Option<String>,
}

impl ApiErrorObject {
    /// Parse a Klaviyo error body. A body that is not the JSON:API error shape (a proxy's HTML
    /// page, an empty 502) becomes one synthetic object whose `detail` names the content type and
    /// quotes the start of the body.
    pub fn parse_body(body: &[u8], content_type: Option<&str>) -> Vec<ApiErrorObject> {
        match serde_json::from_slice::<WireErrors>(body) {
            Ok(parsed) if !parsed.errors.is_empty() => parsed
                .errors
                .into_iter()
                .map(|e| ApiErrorObject {
                    id: e.id,
                    code: e.code.unwrap_or_default(),
                    title: e.title.unwrap_or_default(),
                    detail: e.detail.unwrap_or_default(),
                    source_pointer: e.source.as_ref().and_then(|s| s.pointer.clone()),
                    source_parameter: e.source.and_then(|s| s.parameter),
                    meta: e.meta.unwrap_or_default(),
                })
                .collect(),
            _ if body.is_empty() => Vec::new(),
            _ => vec![ApiErrorObject {
                detail: format!(
                    "not a Klaviyo error body ({}): {}",
                    content_type.unwrap_or("no content type"),
                    snippet(body)
                ),
                ..ApiErrorObject::default()
            }],
        }
    }
}

/// At most this many bytes of a response body are kept in an error.
const SNIPPET_BYTES: usize = 512;

/// The start of a response body, lossily decoded, for error messages. Control characters and
/// runs of whitespace become one space: a hostile body cannot move the cursor or recolour the
/// terminal, and an HTML page stays on one line.
pub(crate) fn snippet(body: &[u8]) -> String {
    let end = body.len().min(SNIPPET_BYTES);
    let raw = String::from_utf8_lossy(&body[..end]);
    let mut text = String::with_capacity(raw.len());
    for c in raw.chars() {
        if c.is_whitespace() || c.is_control() {
            if !text.ends_with(' ') {
                text.push(' ');
            }
        } else {
            text.push(c);
        }
    }
    let mut text = text.trim().to_string();
    if body.len() > SNIPPET_BYTES {
        text.push('…');
    }
    text
}

/// A failed Klaviyo call.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Klaviyo answered with an error status (4xx other than 429, or a 5xx after retries).
    #[error(
        "{} failed with HTTP {status}: {}{}",
        .operation.operation_id(),
        summary(errors),
        scope_hint(*.status, *.operation)
    )]
    Klaviyo {
        /// HTTP status.
        status: u16,
        /// The parsed `errors` array.
        errors: Vec<ApiErrorObject>,
        /// The operation that failed.
        operation: Operation,
    },
    /// The request could not be sent, or the connection broke before the whole response came.
    #[error("{} {path}: {reason}", .operation.operation_id())]
    Transport {
        /// The operation that failed.
        operation: Operation,
        /// The request path (no host, no query).
        path: String,
        /// What went wrong, e.g. `could not connect: Connection refused (os error 111)`; built
        /// from the underlying error stripped of its URL.
        reason: String,
    },
    /// No connection, or no complete response, within the configured timeout.
    #[error(
        "{} {path}: {} {}",
        .operation.operation_id(),
        if *.connecting { "could not connect within" } else { "no complete response within" },
        crate::duration::format_exact(*.limit)
    )]
    Timeout {
        /// The operation that failed.
        operation: Operation,
        /// The request path (no host, no query).
        path: String,
        /// The timeout that expired.
        limit: Duration,
        /// Whether it was the connect timeout (nothing was sent).
        connecting: bool,
    },
    /// The response body did not have the expected shape.
    #[error(
        "{}: could not decode HTTP {status} response ({}): {message}; body starts: {body_snippet}",
        .operation.operation_id(),
        .content_type.as_deref().unwrap_or("no content type")
    )]
    Decode {
        /// The operation whose response was bad.
        operation: Operation,
        /// HTTP status of the response.
        status: u16,
        /// The response's `Content-Type`, if any.
        content_type: Option<String>,
        /// What serde said.
        message: String,
        /// The start of the body (never headers).
        body_snippet: String,
    },
    /// The response body is larger than klsync reads; reading stopped at the limit.
    #[error(
        "{} {path}: the HTTP {status} response is larger than {} MiB, the most klsync reads of one response; it was not read",
        .operation.operation_id(),
        .limit / (1024 * 1024)
    )]
    ResponseTooLarge {
        /// The operation whose response was too large.
        operation: Operation,
        /// The request path (no host, no query).
        path: String,
        /// HTTP status of the response.
        status: u16,
        /// The limit, in bytes.
        limit: usize,
    },
    /// A collection's `links.next` chain does not end.
    #[error("{} {path}: pagination stopped: {detail}", .operation.operation_id())]
    BadPagination {
        /// The paginated operation.
        operation: Operation,
        /// The path of the collection's first page.
        path: String,
        /// What was wrong, e.g. a page whose `links.next` leads back to an earlier page.
        detail: String,
    },
    /// The circuit breaker is open: the server stopped answering, so nothing more is sent to it
    /// for the rest of the run.
    #[error(
        "stopped sending requests to Klaviyo at {base_url}: {failures} requests in a row got no answer (the last: {last}). Check that this URL is right and reachable from here (network, proxy, firewall) and that Klaviyo is up, then run the command again"
    )]
    Unreachable {
        /// The base URL, redacted.
        base_url: String,
        /// Consecutive attempts without an answer.
        failures: u32,
        /// The last of them, as an error message.
        last: String,
    },
    /// A request that is not safe to repeat was sent and never answered, and then the run had
    /// to stop (`cause`): it may have taken effect.
    #[error(
        "{} was sent but never answered, so it may have taken effect (the next plan finds what it made by name): {cause}",
        .operation.operation_id()
    )]
    OutcomeUnknown {
        /// The operation sent.
        operation: Operation,
        /// Why nothing more was tried.
        cause: Box<ApiError>,
    },
    /// The run's deadline passed; no request starts after it.
    #[error(
        "{}the run reached its time limit of {} (klaviyo.run_timeout in klsync.yaml); nothing more is sent. Run the command again to continue",
        .operation.map(|op| format!("{} not sent: ", op.operation_id())).unwrap_or_default(),
        crate::duration::format_exact(*.limit)
    )]
    DeadlineExceeded {
        /// The operation that was not sent, if one was about to be.
        operation: Option<Operation>,
        /// The configured run timeout.
        limit: Duration,
    },
    /// The request exceeds a documented Klaviyo size limit; nothing was sent.
    #[error("{}: request too large: {detail}", .operation.operation_id())]
    TooLarge {
        /// The operation refused.
        operation: Operation,
        /// Which limit, e.g. `10001 profiles, limit 10000`.
        detail: String,
    },
    /// The operation's daily cap is used up; retrying today is pointless.
    #[error("{}: daily limit of {cap} requests reached; try again tomorrow", .operation.operation_id())]
    DailyCapReached {
        /// The capped operation.
        operation: Operation,
        /// The cap.
        cap: u32,
    },
    /// Klaviyo kept answering 429, or asked to wait longer than the client is willing to.
    #[error("{}: rate limited after {attempts} attempt(s){}", .operation.operation_id(), retry_after.map(|d| format!(", server asked to wait {}s", d.as_secs())).unwrap_or_default())]
    RateLimitExhausted {
        /// The operation that was rate limited.
        operation: Operation,
        /// The last `Retry-After`, if any.
        retry_after: Option<Duration>,
        /// How many attempts were made.
        attempts: u32,
    },
    /// The client configuration is unusable (bad base URL, bad header value).
    #[error("invalid Klaviyo client configuration: {0}")]
    Config(String),
    /// The run is stopping (Ctrl-C, SIGTERM, lock lost; see [`crate::interrupt`]); the request
    /// was not sent.
    #[error("interrupted: {} not sent", .operation.operation_id())]
    Interrupted {
        /// The operation not sent.
        operation: Operation,
    },
}

/// For a 401: where the key came from. For a 403: the scopes the operation needs, from the
/// spec, since Klaviyo's answer need not name them.
fn scope_hint(status: u16, operation: Operation) -> String {
    if status == 401 {
        return " (Klaviyo refused the API key: check that the variable holding it, \
                KLAVIYO_API_KEY unless klsync.yaml's klaviyo.api_key_env names another, holds a \
                private key, pk_..., of this account)"
            .to_owned();
    }
    if status != 403 {
        return String::new();
    }
    format!(
        " ({} needs an API key with the scope(s) {}: add the missing one(s) to the key in \
         Klaviyo, Settings > API keys, or use a key that has them; `klsync plan` lists every \
         scope an apply needs)",
        operation.operation_id(),
        operation.scopes().join(", ")
    )
}

fn summary(errors: &[ApiErrorObject]) -> String {
    if errors.is_empty() {
        return "no error details".to_string();
    }
    errors
        .iter()
        .map(|e| {
            let mut text = if e.code.is_empty() {
                e.detail.clone()
            } else {
                format!("{}: {}", e.code, e.detail)
            };
            if let Some(pointer) = &e.source_pointer {
                text.push_str(&format!(" (at {pointer})"));
            }
            if let Some(parameter) = &e.source_parameter {
                text.push_str(&format!(" (parameter {parameter})"));
            }
            text
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl ApiError {
    /// The id of the existing profile when Klaviyo refused a create or update with 409
    /// `duplicate_profile`.
    pub fn duplicate_profile_id(&self) -> Option<&str> {
        let ApiError::Klaviyo {
            status: 409,
            errors,
            ..
        } = self
        else {
            return None;
        };
        errors
            .iter()
            .filter(|e| e.code == "duplicate_profile")
            .find_map(|e| e.meta.get("duplicate_profile_id")?.as_str())
    }

    /// The HTTP status, for errors that got a response.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Klaviyo { status, .. } | ApiError::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the request may have taken effect even though it failed: the server may have
    /// acted before a 5xx, a timeout, a dropped connection or an answer too large to read. A
    /// create that failed this way must be checked before it is repeated.
    pub fn is_ambiguous(&self) -> bool {
        match self {
            ApiError::Klaviyo { status, .. } => *status >= 500,
            ApiError::Timeout { connecting, .. } => !connecting,
            ApiError::Transport { .. } | ApiError::ResponseTooLarge { .. } => true,
            _ => false,
        }
    }

    /// Whether this error stops the whole run rather than one request: the server stopped
    /// answering or the run's deadline passed. Callers stop sending instead of trying the next
    /// change, so the cause is reported once.
    pub fn stops_the_run(&self) -> bool {
        matches!(
            self,
            ApiError::Unreachable { .. }
                | ApiError::DeadlineExceeded { .. }
                | ApiError::OutcomeUnknown { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_klaviyo_error_body_including_meta() {
        let body =
            br#"{"errors":[{"id":"e1","status":409,"code":"duplicate_profile","title":"Conflict.",
            "detail":"A profile already exists with one of these identifiers.",
            "source":{"pointer":"/data/attributes"},"links":{},
            "meta":{"duplicate_profile_id":"01ABC"}}]}"#;
        let errors = ApiErrorObject::parse_body(body, Some("application/vnd.api+json"));
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].code, "duplicate_profile");
        assert_eq!(
            errors[0].source_pointer.as_deref(),
            Some("/data/attributes")
        );
        let err = ApiError::Klaviyo {
            status: 409,
            errors,
            operation: Operation::CreateProfile,
        };
        assert_eq!(err.duplicate_profile_id(), Some("01ABC"));
        assert!(!err.is_ambiguous());
        assert!(err.to_string().contains("duplicate_profile"), "{err}");
    }

    #[test]
    fn refused_keys_and_missing_scopes_say_where_to_look() {
        let error = |status| ApiError::Klaviyo {
            status,
            errors: Vec::new(),
            operation: Operation::CreateSegment,
        };
        let refused = error(401).to_string();
        assert!(
            refused.contains("Klaviyo refused the API key") && refused.contains("KLAVIYO_API_KEY"),
            "{refused}"
        );
        let denied = error(403).to_string();
        assert!(
            denied.contains("create_segment needs an API key with the scope(s) segments:write"),
            "{denied}"
        );
        assert!(!error(404).to_string().contains('('), "{}", error(404));
    }

    #[test]
    fn non_json_body_becomes_a_snippet_naming_the_content_type() {
        let body = "<html>".repeat(200);
        let errors = ApiErrorObject::parse_body(body.as_bytes(), Some("text/html"));
        assert_eq!(errors.len(), 1);
        let prefix = "not a Klaviyo error body (text/html): ";
        assert!(
            errors[0].detail.starts_with(&format!("{prefix}<html>")),
            "{}",
            errors[0].detail
        );
        assert!(errors[0].detail.len() <= prefix.len() + SNIPPET_BYTES + '…'.len_utf8());
        assert!(ApiErrorObject::parse_body(b"", None).is_empty());
        let err = ApiError::Klaviyo {
            status: 502,
            errors,
            operation: Operation::GetLists,
        };
        assert!(
            err.to_string().starts_with(
                "get_lists failed with HTTP 502: not a Klaviyo error body (text/html): <html>"
            ),
            "{err}"
        );
    }

    #[test]
    fn snippets_are_one_line_without_control_characters() {
        let body = b"<html>\r\n  <title>502\x1b[31m Bad\tGateway</title>\n</html>";
        assert_eq!(
            snippet(body),
            "<html> <title>502 [31m Bad Gateway</title> </html>"
        );
    }

    #[test]
    fn only_answers_that_may_have_acted_are_ambiguous() {
        let timeout = |connecting| ApiError::Timeout {
            operation: Operation::CreateList,
            path: "/api/lists".into(),
            limit: Duration::from_secs(20),
            connecting,
        };
        assert!(timeout(false).is_ambiguous());
        assert!(
            !timeout(true).is_ambiguous(),
            "a connect timeout sent nothing"
        );
        assert_eq!(
            timeout(true).to_string(),
            "create_list /api/lists: could not connect within 20s"
        );
        let too_large = ApiError::ResponseTooLarge {
            operation: Operation::CreateList,
            path: "/api/lists".into(),
            status: 201,
            limit: 32 * 1024 * 1024,
        };
        assert!(too_large.is_ambiguous());
        assert!(
            too_large.to_string().contains("larger than 32 MiB"),
            "{too_large}"
        );
        let deadline = ApiError::DeadlineExceeded {
            operation: Some(Operation::GetLists),
            limit: Duration::from_secs(6 * 3600),
        };
        assert!(deadline.stops_the_run() && !deadline.is_ambiguous());
        assert!(
            deadline
                .to_string()
                .starts_with("get_lists not sent: the run reached its time limit of 6h"),
            "{deadline}"
        );
    }

    #[test]
    fn only_409_duplicate_profile_has_a_duplicate_id() {
        let mut meta = serde_json::Map::new();
        meta.insert("duplicate_profile_id".into(), "01X".into());
        let errors = vec![ApiErrorObject {
            code: "duplicate_profile".into(),
            meta,
            ..ApiErrorObject::default()
        }];
        let err = ApiError::Klaviyo {
            status: 400,
            errors,
            operation: Operation::CreateProfile,
        };
        assert_eq!(err.duplicate_profile_id(), None);
    }
}
