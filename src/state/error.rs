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
    /// The lock was taken over (it looked stale to another apply) while this apply still ran.
    #[error("the apply lock of run {run_id} was lost (taken over as stale)")]
    LockLost {
        /// The run that had held it.
        run_id: String,
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
