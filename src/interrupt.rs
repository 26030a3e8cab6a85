//! Stopping an apply part way, gracefully: on Ctrl-C (SIGINT), SIGTERM, or when the apply lock
//! turns out to be lost.
//!
//! One process-wide stop state. From the moment a stop is requested:
//! - the Klaviyo client sends no new request ([`check`] runs before every attempt and every
//!   retry wait) except the follow-ups of a bulk import job already sent — its status polls and
//!   its error list — so that a job Klaviyo accepted is seen to its end;
//! - the executor starts no further change and the data phase no further job;
//! - a running sync query is cancelled, on the PostgreSQL server too;
//! - what is still in flight gets [`GRACE`] to finish ([`within_grace`]); after that it is
//!   abandoned. Its journal entry stays `started`, which is exactly what it is: sent, outcome
//!   unknown; the next apply looks it up before deciding anything.
//!
//! A second signal ends the process at once, with the same exit status: the journal protocol
//! makes every point safe to stop at, only the bookkeeping of the first stop is skipped.
//!
//! Why process-wide rather than a token handed down: a signal is process-wide, and the checks
//! sit deep in the client and the SQL layer, where a token would have to cross every signature
//! between the command and the request. Only command entry points request a stop ([`listen`],
//! the apply's lock watcher); library code never does, so in-process tests are not affected.

use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;

use tokio::sync::watch;

use crate::error::ExitStatus;
use crate::klaviyo::{ApiError, Operation};

/// How long requests in flight when a stop is requested are awaited before being abandoned.
pub const GRACE: Duration = Duration::from_secs(10);

/// Why the run is stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM (e.g. a CI job cancelled, a container stopped).
    Terminate,
    /// The apply lock was taken over or released by someone else: sending more would run beside
    /// another apply.
    LockLost,
}

impl Stop {
    /// The signal's name, for a stop caused by one.
    pub fn signal_name(self) -> Option<&'static str> {
        match self {
            Stop::Interrupt => Some("SIGINT"),
            Stop::Terminate => Some("SIGTERM"),
            Stop::LockLost => None,
        }
    }

    /// The exit status of a run stopped this way (128 + the signal number, as shells report a
    /// process killed by it).
    pub fn exit_status(self) -> ExitStatus {
        match self {
            Stop::Interrupt => ExitStatus::Interrupted,
            Stop::Terminate => ExitStatus::Terminated,
            Stop::LockLost => ExitStatus::Error,
        }
    }
}

/// A stop state: the first request wins, later ones change nothing.
#[derive(Debug)]
pub struct StopState {
    stop: watch::Sender<Option<Stop>>,
}

impl Default for StopState {
    fn default() -> Self {
        StopState {
            stop: watch::Sender::new(None),
        }
    }
}

impl StopState {
    /// Request a stop; `false` if one was requested already.
    pub fn request(&self, stop: Stop) -> bool {
        self.stop.send_if_modified(|current| {
            if current.is_some() {
                return false;
            }
            *current = Some(stop);
            true
        })
    }

    /// The stop requested, if any.
    pub fn requested(&self) -> Option<Stop> {
        *self.stop.borrow()
    }

    /// Wait until a stop is requested.
    pub async fn stopped(&self) -> Stop {
        let mut receiver = self.stop.subscribe();
        loop {
            if let Some(stop) = *receiver.borrow_and_update() {
                return stop;
            }
            // The sender lives as long as `self`, which outlives this future.
            if receiver.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Run `work` to its end unless a stop is requested meanwhile; then give it `grace` more and
    /// abandon it (`None`) if it is still not done.
    pub async fn within_grace<F: Future>(&self, work: F, grace: Duration) -> Option<F::Output> {
        let mut work = std::pin::pin!(work);
        tokio::select! {
            done = &mut work => return Some(done),
            _ = self.stopped() => {}
        }
        tokio::time::timeout(grace, work).await.ok()
    }
}

static PROCESS: LazyLock<StopState> = LazyLock::new(StopState::default);

/// Request a stop of this process's run; `false` if one was requested already.
pub fn request(stop: Stop) -> bool {
    PROCESS.request(stop)
}

/// The stop requested of this process's run, if any.
pub fn requested() -> Option<Stop> {
    PROCESS.requested()
}

/// Wait until a stop of this process's run is requested.
pub async fn stopped() -> Stop {
    PROCESS.stopped().await
}

/// Run `work` to its end unless a stop is requested; then give it [`GRACE`] and abandon it
/// (`None`) if it is still not done.
pub async fn within_grace<F: Future>(work: F) -> Option<F::Output> {
    PROCESS.within_grace(work, GRACE).await
}

/// Whether a request for `op` may still be sent once a stop is requested: only the follow-ups
/// of a bulk import job already sent, so that what Klaviyo accepted is seen to its end.
fn allowed_while_stopping(op: Operation) -> bool {
    matches!(
        op,
        Operation::GetBulkImportProfilesJob | Operation::GetErrorsForBulkImportProfilesJob
    )
}

/// Fail with [`ApiError::Interrupted`] (nothing sent) if a request for `op` must not be sent
/// any more. The Klaviyo client calls this before each attempt and before each retry wait.
pub fn check(op: Operation) -> Result<(), ApiError> {
    match requested() {
        Some(_) if !allowed_while_stopping(op) => Err(ApiError::Interrupted { operation: op }),
        _ => Ok(()),
    }
}

/// Listen for SIGINT and SIGTERM for the rest of the process (call it inside the runtime): the
/// first one requests a stop and says so on stderr, a second one ends the process at once.
pub fn listen(quiet: bool) {
    // Installed here, not in the task: a signal right after this call is already ours.
    let mut signals = Signals::install();
    tokio::spawn(async move {
        loop {
            let stop = signals.next().await;
            if request(stop) {
                if !quiet {
                    eprintln!(
                        "{} received: stopping. No new change is sent; requests in flight get up to {}s to finish. Send it again to stop at once.",
                        stop.signal_name().unwrap_or("signal"),
                        GRACE.as_secs()
                    );
                }
                continue;
            }
            let first = requested().unwrap_or(stop);
            eprintln!(
                "{} received again: stopping at once. Run `klsync apply` again to resume; the journal tells it what is unfinished.",
                stop.signal_name().unwrap_or("signal")
            );
            std::process::exit(first.exit_status() as i32);
        }
    });
}

/// The signal streams, created once so that no signal falls between two waits.
struct Signals {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Signals {
                interrupt: signal(SignalKind::interrupt()).ok(),
                terminate: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// The next SIGINT or SIGTERM. A signal whose handler could not be installed keeps its
    /// default action (ending the process).
    async fn next(&mut self) -> Stop {
        #[cfg(unix)]
        {
            match (&mut self.interrupt, &mut self.terminate) {
                (Some(interrupt), Some(terminate)) => tokio::select! {
                    _ = interrupt.recv() => Stop::Interrupt,
                    _ = terminate.recv() => Stop::Terminate,
                },
                (Some(interrupt), None) => {
                    interrupt.recv().await;
                    Stop::Interrupt
                }
                (None, Some(terminate)) => {
                    terminate.recv().await;
                    Stop::Terminate
                }
                (None, None) => std::future::pending().await,
            }
        }
        #[cfg(not(unix))]
        match tokio::signal::ctrl_c().await {
            Ok(()) => Stop::Interrupt,
            Err(_) => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_stop_wins() {
        let state = StopState::default();
        assert_eq!(state.requested(), None);
        assert!(state.request(Stop::Terminate));
        assert!(!state.request(Stop::Interrupt));
        assert_eq!(state.requested(), Some(Stop::Terminate));
    }

    #[test]
    fn signals_exit_like_a_shell_reports_them() {
        assert_eq!(Stop::Interrupt.exit_status() as i32, 130);
        assert_eq!(Stop::Terminate.exit_status() as i32, 143);
        assert_eq!(Stop::LockLost.exit_status(), ExitStatus::Error);
        assert_eq!(Stop::LockLost.signal_name(), None);
    }

    #[test]
    fn only_job_follow_ups_are_sent_while_stopping() {
        assert!(allowed_while_stopping(Operation::GetBulkImportProfilesJob));
        assert!(allowed_while_stopping(
            Operation::GetErrorsForBulkImportProfilesJob
        ));
        assert!(!allowed_while_stopping(Operation::BulkImportProfiles));
        assert!(!allowed_while_stopping(Operation::CreateList));
        assert!(!allowed_while_stopping(Operation::GetLists));
    }

    #[tokio::test]
    async fn work_finishing_within_the_grace_is_awaited() {
        let state = StopState::default();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let work = async {
            // Still running when the stop comes.
            stopped.await.expect("stop sent");
            tokio::time::sleep(Duration::from_millis(20)).await;
            "done"
        };
        let stopper = async {
            state.request(Stop::Interrupt);
            stop.send(()).expect("work waits");
        };
        let (done, ()) = tokio::join!(state.within_grace(work, Duration::from_secs(60)), stopper);
        assert_eq!(done, Some("done"));
    }

    #[tokio::test]
    async fn work_outlasting_the_grace_is_abandoned() {
        let state = StopState::default();
        let started = std::time::Instant::now();
        let work = std::future::pending::<()>();
        state.request(Stop::Terminate);
        assert_eq!(
            state.within_grace(work, Duration::from_millis(50)).await,
            None
        );
        assert!(started.elapsed() >= Duration::from_millis(50));
        // Without a stop, work runs as long as it takes, whatever the grace.
        let calm = StopState::default();
        let work = tokio::time::sleep(Duration::from_millis(20));
        assert_eq!(calm.within_grace(work, Duration::ZERO).await, Some(()));
    }
}
