//! Whether the client may send another request: the one place that says no. The client asks at
//! the start of every attempt (and before every wait for a retry); callers that run many
//! requests ask [`KlaviyoClient::halted`](super::KlaviyoClient::halted) before each unit of work.
//!
//! It says no when
//! - the run's deadline (`klaviyo.run_timeout`) has passed: no request starts after it, and no
//!   retry waits past it. Requests already in flight finish, each bounded by its own timeout.
//! - the circuit breaker is open: `max_consecutive_failures` attempts in a row got no answer at
//!   all (a timeout, or no connection), counted over all requests and per operation. Per
//!   operation too, because a server that answers reads but never writes would otherwise keep
//!   resetting the count with the lookups that follow each unanswered create. From then on the
//!   server is treated as down for the rest of the run: every request fails at once with one
//!   message naming the server. A 429, 4xx or 5xx is an answer and resets the count (the server
//!   is up; the retry rules handle those), and so is a body cut short: only silence counts. The
//!   breaker never closes within a run: runs are short, and stopping is safe (apply resumes).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::error::ApiError;
use super::operations::Operation;

/// The deadline and the circuit breaker of one client (shared by its clones).
pub(crate) struct Gate {
    /// The base URL, redacted, for the breaker's message.
    base_url: String,
    /// When the run must stop sending, and the configured limit (for the message).
    deadline: Option<(Instant, Duration)>,
    /// Attempts without an answer that open the breaker.
    max_failures: u32,
    breaker: Mutex<Breaker>,
}

#[derive(Default)]
struct Breaker {
    /// Consecutive attempts without an answer, over all operations.
    overall: u32,
    /// The same, per operation.
    per_operation: HashMap<Operation, u32>,
    /// Set once the breaker opened: how many failures in a row, and the last of them.
    open: Option<(u32, String)>,
}

impl Gate {
    /// A gate for a client of `base_url` (already redacted) created now.
    pub(crate) fn new(base_url: String, run_timeout: Option<Duration>, max_failures: u32) -> Gate {
        let now = Instant::now();
        Gate {
            base_url,
            deadline: run_timeout.map(|limit| (now.checked_add(limit).unwrap_or(now), limit)),
            max_failures: max_failures.max(1),
            breaker: Mutex::new(Breaker::default()),
        }
    }

    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The breaker's error, if it is open.
    pub(crate) fn tripped(&self) -> Option<ApiError> {
        let breaker = self.breaker();
        let (failures, last) = breaker.open.as_ref()?;
        Some(ApiError::Unreachable {
            base_url: self.base_url.clone(),
            failures: *failures,
            last: last.clone(),
        })
    }

    /// May a request for `operation` start after waiting `wait`? The error says why not.
    pub(crate) fn admit_after(
        &self,
        operation: Option<Operation>,
        wait: Duration,
    ) -> Result<(), ApiError> {
        if let Some(stop) = self.tripped() {
            return Err(stop);
        }
        if let Some((deadline, limit)) = self.deadline
            && Instant::now()
                .checked_add(wait)
                .is_none_or(|start| start >= deadline)
        {
            return Err(ApiError::DeadlineExceeded { operation, limit });
        }
        Ok(())
    }

    /// May a request for `operation` start now?
    pub(crate) fn admit(&self, operation: Operation) -> Result<(), ApiError> {
        self.admit_after(Some(operation), Duration::ZERO)
    }

    /// An attempt of `operation` got an answer (any status, any body).
    pub(crate) fn answered(&self, operation: Operation) {
        let mut breaker = self.breaker();
        breaker.overall = 0;
        breaker.per_operation.remove(&operation);
    }

    /// An attempt of `operation` got no answer; `error` says how. Opens the breaker once
    /// `max_consecutive_failures` such attempts came in a row.
    pub(crate) fn unanswered(&self, operation: Operation, error: &ApiError) {
        let mut breaker = self.breaker();
        breaker.overall += 1;
        let per_operation = {
            let count = breaker.per_operation.entry(operation).or_default();
            *count += 1;
            *count
        };
        let failures = breaker.overall.max(per_operation);
        if failures >= self.max_failures && breaker.open.is_none() {
            // Info, not a warning: the error that follows says it all to the user.
            tracing::info!(
                base_url = %self.base_url,
                failures,
                last = %error,
                "Klaviyo is not answering; no more requests are sent this run"
            );
            breaker.open = Some((failures, error.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout(operation: Operation) -> ApiError {
        ApiError::Timeout {
            operation,
            path: "/api/x".into(),
            limit: Duration::from_secs(20),
            connecting: false,
        }
    }

    #[test]
    fn the_breaker_opens_after_consecutive_silence_and_stays_open() {
        let gate = Gate::new("http://server".into(), None, 3);
        gate.unanswered(Operation::GetLists, &timeout(Operation::GetLists));
        gate.unanswered(Operation::GetLists, &timeout(Operation::GetLists));
        assert!(gate.admit(Operation::GetLists).is_ok());
        gate.unanswered(Operation::GetTags, &timeout(Operation::GetTags));
        let err = gate.admit(Operation::CreateList).unwrap_err();
        assert!(err.stops_the_run());
        let message = err.to_string();
        assert!(
            message.starts_with("stopped sending requests to Klaviyo at http://server: 3 requests in a row got no answer (the last: get_tags /api/x: no complete response within 20s)"),
            "{message}"
        );
        gate.answered(Operation::GetLists);
        assert!(gate.admit(Operation::GetLists).is_err(), "it never closes");
    }

    #[test]
    fn any_answer_resets_the_overall_count_but_only_its_own_operation_count() {
        let gate = Gate::new("http://server".into(), None, 3);
        for _ in 0..2 {
            gate.unanswered(Operation::CreateList, &timeout(Operation::CreateList));
            // The lookup after each unanswered create is answered.
            gate.answered(Operation::GetLists);
        }
        assert!(gate.admit(Operation::CreateList).is_ok());
        gate.unanswered(Operation::CreateList, &timeout(Operation::CreateList));
        assert!(
            gate.admit(Operation::GetLists).is_err(),
            "three unanswered creates in a row open it, answered reads between them or not"
        );

        let gate = Gate::new("http://server".into(), None, 3);
        for op in [Operation::GetLists, Operation::GetTags] {
            gate.unanswered(op, &timeout(op));
            gate.unanswered(op, &timeout(op));
            gate.answered(op);
        }
        assert!(gate.admit(Operation::GetLists).is_ok());
    }

    #[test]
    fn nothing_starts_at_or_after_the_deadline() {
        let gate = Gate::new("http://server".into(), Some(Duration::ZERO), 3);
        let err = gate.admit(Operation::GetLists).unwrap_err();
        assert!(matches!(
            err,
            ApiError::DeadlineExceeded {
                operation: Some(Operation::GetLists),
                ..
            }
        ));
        let gate = Gate::new("http://server".into(), Some(Duration::from_secs(3600)), 3);
        assert!(gate.admit(Operation::GetLists).is_ok());
        assert!(
            gate.admit_after(Some(Operation::GetLists), Duration::from_secs(3601))
                .is_err(),
            "a retry wait that would end past the deadline is not started"
        );
        let gate = Gate::new("http://server".into(), None, 3);
        assert!(gate.admit_after(None, Duration::MAX).is_ok());
    }
}
