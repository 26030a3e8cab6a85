//! Deterministic crash points, for the crash suite (`tests/it/reliability.rs`, docs/RELIABILITY.md).
//!
//! `KLSYNC_CRASH_AT=EVENT[:OPERATION]:N` makes the process abort at the `N`-th occurrence of an
//! event: no destructor runs, nothing is flushed or closed, so for klsync's state and for Klaviyo
//! it is the same as a `SIGKILL` at that instant, but reproducible to the request. Events:
//!
//! - `send`: just before an HTTP request leaves this machine (Klaviyo never sees it);
//! - `reply`: just after a whole response arrived (Klaviyo acted; klsync never learns the answer);
//! - `state`: just after a write to klsync's state database committed.
//!
//! `OPERATION` narrows `send` and `reply` to one Klaviyo operation (`reply:bulk_import_profiles:2`
//! is the answer to the second bulk import job). Retries count as requests of their own.
//!
//! The variable is read once; when it is unset (always, outside the test suites) every check is
//! one atomic load. A value that does not parse stops the process at the first check with a
//! message, so a suite can never pass because its crash point was silently ignored.
//!
//! Only test builds have crash points: with the `test-support` feature off (a build of the
//! product: `cargo build`, `cargo install`) every check returns at once and the variable is never
//! read. `cargo test` turns the feature on for everything it builds, the `klsync` binary the
//! suites run included (see docs/development.md).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable that arms a crash point.
pub const CRASH_AT_ENV: &str = "KLSYNC_CRASH_AT";

/// What a crash point waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Send,
    Reply,
    State,
}

/// A parsed `KLSYNC_CRASH_AT`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CrashPoint {
    event: Event,
    /// Only requests of this `operationId` count (`send` and `reply` only).
    operation: Option<String>,
    /// The occurrence that aborts, 1-based.
    nth: u64,
}

impl CrashPoint {
    fn parse(spec: &str) -> Result<CrashPoint, String> {
        let parts: Vec<&str> = spec.trim().split(':').collect();
        let (event, operation, nth) = match parts.as_slice() {
            [event, nth] => (*event, None, *nth),
            [event, operation, nth] => (*event, Some((*operation).to_owned()), *nth),
            _ => return Err("expected EVENT[:OPERATION]:N".to_owned()),
        };
        let event = match event {
            "send" => Event::Send,
            "reply" => Event::Reply,
            "state" => Event::State,
            other => return Err(format!("unknown event `{other}` (send, reply, state)")),
        };
        if event == Event::State && operation.is_some() {
            return Err("`state` takes no operation".to_owned());
        }
        let nth = nth
            .parse::<u64>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| format!("`{nth}` is not a count of 1 or more"))?;
        Ok(CrashPoint {
            event,
            operation,
            nth,
        })
    }

    fn matches(&self, event: Event, operation: Option<&str>) -> bool {
        self.event == event
            && self
                .operation
                .as_deref()
                .is_none_or(|wanted| Some(wanted) == operation)
    }
}

fn armed() -> Option<&'static CrashPoint> {
    if !cfg!(any(test, feature = "test-support")) {
        return None;
    }
    static POINT: OnceLock<Option<CrashPoint>> = OnceLock::new();
    POINT
        .get_or_init(|| {
            let spec = std::env::var(CRASH_AT_ENV).ok()?;
            match CrashPoint::parse(&spec) {
                Ok(point) => Some(point),
                Err(reason) => {
                    eprintln!("{CRASH_AT_ENV}={spec}: {reason}");
                    std::process::abort();
                }
            }
        })
        .as_ref()
}

fn reached(event: Event, operation: Option<&str>) {
    static SEEN: AtomicU64 = AtomicU64::new(0);
    let Some(point) = armed() else {
        return;
    };
    if point.matches(event, operation) && SEEN.fetch_add(1, Ordering::SeqCst) + 1 == point.nth {
        eprintln!("klsync: crash point {CRASH_AT_ENV} reached; aborting");
        std::process::abort();
    }
}

/// An HTTP request of `operation` is about to be sent.
pub fn before_send(operation: &str) {
    reached(Event::Send, Some(operation));
}

/// A whole response to a request of `operation` arrived.
pub fn after_reply(operation: &str) {
    reached(Event::Reply, Some(operation));
}

/// A write to klsync's state database committed.
pub fn after_state_write() {
    reached(Event::State, None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_with_and_without_an_operation() {
        assert_eq!(
            CrashPoint::parse("reply:bulk_import_profiles:2"),
            Ok(CrashPoint {
                event: Event::Reply,
                operation: Some("bulk_import_profiles".into()),
                nth: 2
            })
        );
        let state = CrashPoint::parse("state:40").expect("state");
        assert!(state.matches(Event::State, None));
        assert!(!state.matches(Event::Send, Some("create_list")));
        let any_send = CrashPoint::parse("send:3").expect("send");
        assert!(any_send.matches(Event::Send, Some("create_list")));
        assert!(!any_send.matches(Event::Reply, Some("create_list")));
        let one_op = CrashPoint::parse("send:create_list:1").expect("send op");
        assert!(!one_op.matches(Event::Send, Some("create_tag")));
    }

    #[test]
    fn bad_specs_are_refused_with_a_reason() {
        for bad in [
            "",
            "reply",
            "reply:0",
            "boom:1",
            "state:x:1",
            "send:a:b:c",
            "send:-1",
        ] {
            assert!(CrashPoint::parse(bad).is_err(), "{bad}");
        }
    }
}
