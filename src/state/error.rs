//! Errors of the state layer.

use std::path::PathBuf;

/// A failure reading or writing klsync's own state database.
///
/// URLs in these errors are always redacted with [`crate::settings::redact_url`].
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The state URL names neither `sqlite:` nor `postgres:`/`postgresql:`.
    #[error("unsupported state database URL {url} (expected sqlite://PATH or postgres://...)")]
    UnsupportedUrl {
        /// The URL, redacted.
        url: String,
    },
    /// The directory for the SQLite file could not be created.
    #[error("cannot create the state directory {}", path.display())]
    CreateDir {
        /// The directory klsync tried to create.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// Connecting to the state database failed.
    #[error("cannot open the state database {url}")]
    Connect {
        /// The URL, redacted.
        url: String,
        /// Why it failed.
        #[source]
        source: sqlx::Error,
    },
    /// Bringing the schema up to date failed.
    #[error("cannot migrate the state database {url}")]
    Migrate {
        /// The URL, redacted.
        url: String,
        /// Why it failed.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// A statement against the state database failed.
    #[error("state database: {operation} failed")]
    Query {
        /// What klsync was doing, e.g. "record the start of a run".
        operation: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// Too many writers competed for the same rows; retrying later will do.
    #[error("state database too busy to {operation}")]
    Busy {
        /// What klsync was doing.
        operation: &'static str,
    },
    /// A run or journal entry klsync was told to update does not exist.
    #[error("state database has no {what}")]
    NotFound {
        /// What was missing, e.g. "run 5f0c...".
        what: String,
    },
    /// The database holds a value klsync never writes (edited by hand, or a newer klsync).
    #[error("state database holds an unexpected value: {what}")]
    Corrupt {
        /// What was wrong.
        what: String,
    },
    /// Another apply holds the lock for this account.
    #[error("another apply is running: {holder}")]
    Locked {
        /// Who holds it: `run <id> by <actor> on <host> pid <pid> since <time> (<command>)`.
        holder: String,
    },
    /// Another apply still held the lock when the wait for it (`--lock-timeout`) ran out.
    #[error("another apply is still running after waiting {waited} for the lock: {holder}")]
    LockWaitTimedOut {
        /// Who holds it, as in [`StateError::Locked`].
        holder: String,
        /// How long klsync waited, human readable.
        waited: String,
    },
    /// The lock was lost while this run held it: another apply took it over as stale, it was
    /// released with `klsync state unlock`, or the PostgreSQL session holding it ended.
    #[error(
        "the apply lock of run {run_id} was lost while it ran (taken over by another apply, released with `klsync state unlock`, or its database session ended); it stopped before sending more"
    )]
    LockLost {
        /// The run that had held it.
        run_id: String,
    },
    /// `klsync state unlock` found no lock to release.
    #[error("the apply lock is not held; nothing to unlock")]
    NotLocked,
    /// `klsync state unlock` named a run that does not hold the lock.
    #[error("run {asked} does not hold the apply lock; it is held by {holder}")]
    UnlockOtherRun {
        /// The run id given.
        asked: String,
        /// The actual holder.
        holder: String,
    },
    /// `klsync state unlock` on PostgreSQL, where a live session holds the advisory lock: the
    /// server releases it only when that session ends.
    #[error(
        "the apply lock is held by {holder} through a live PostgreSQL session (backend pid {backend_pid}, connected from {client}); a session's advisory lock cannot be released from outside. Stop that apply (Ctrl-C lets it finish cleanly), or end its session on the server with `SELECT pg_terminate_backend({backend_pid})`"
    )]
    LiveSession {
        /// Who holds it, as in [`StateError::Locked`].
        holder: String,
        /// The server process of the holding session.
        backend_pid: i32,
        /// The client address of that session.
        client: String,
    },
    /// The saved plan was applied before; applying it again is refused.
    #[error("plan {plan_id} was already applied; run `klsync plan` again")]
    PlanAlreadyApplied {
        /// The plan's id.
        plan_id: String,
    },
}

impl StateError {
    /// Wrap a driver error with what klsync was doing.
    pub(crate) fn query(operation: &'static str) -> impl FnOnce(sqlx::Error) -> StateError {
        move |source| StateError::Query { operation, source }
    }
}
