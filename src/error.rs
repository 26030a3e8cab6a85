//! The top-level error: every layer's error converts into it, and it alone decides exit codes.

use std::process::ExitCode;

/// Process exit statuses, documented in the README. Fixed numbers: CI scripts depend on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Success (for `plan --detailed-exitcode` and `drift`: nothing to change).
    Success = 0,
    /// An error: invalid manifests, unreachable API, refused plan, ...
    Error = 1,
    /// Success, and there are changes (or drift) to act on.
    Changes = 2,
    /// Apply finished, but some changes failed; running it again resumes.
    Partial = 3,
    /// Stopped by SIGINT (Ctrl-C) before it finished; running it again resumes. 128 + 2, as a
    /// shell reports a process killed by that signal.
    Interrupted = 130,
    /// Stopped by SIGTERM before it finished; running it again resumes. 128 + 15.
    Terminated = 143,
    /// The command line itself was wrong (unknown flag, missing argument).
    Usage = 64,
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> Self {
        ExitCode::from(status as u8)
    }
}

/// Any failure klsync reports to the user.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The manifests were loaded and found invalid; the diagnostics were already printed.
    #[error("{count} problem(s) found in the manifests")]
    InvalidManifests { count: usize },
    /// A problem reading or writing a file klsync was told to use.
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A value from the command line or the environment is unusable.
    #[error("{0}")]
    Config(String),
    /// klsync's state database failed, or refused (another apply holds the lock, a saved plan
    /// was already applied).
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// The emulator failed to start or serve.
    #[error("emulator: {0}")]
    Emulator(String),
    /// Running a query or keeping saved queries failed.
    #[error(transparent)]
    Sql(#[from] crate::sql::SqlError),
    /// No plan could be made (an ambiguous adoption, an impossible change).
    #[error(transparent)]
    Plan(#[from] crate::plan::PlanError),
    /// A Klaviyo request failed outside of an apply's changes (reading the account). Not a
    /// `source`: the message already holds it, and a cause is printed once.
    #[error("Klaviyo: {0}")]
    Klaviyo(crate::klaviyo::ApiError),
    /// `apply` refused to run; nothing was changed.
    #[error(transparent)]
    Apply(#[from] crate::apply::ApplyError),
    /// `import` could not map what it wrote back onto Klaviyo (a bug; the state is unchanged).
    #[error(transparent)]
    Import(#[from] crate::import::ImportError),
    /// A profile or membership data sync failed or was refused (boxed: it is large).
    #[error(transparent)]
    Sync(Box<crate::sync::SyncError>),
}

impl From<crate::klaviyo::ApiError> for Error {
    fn from(error: crate::klaviyo::ApiError) -> Self {
        Error::Klaviyo(error)
    }
}

impl From<crate::sync::SyncError> for Error {
    fn from(error: crate::sync::SyncError) -> Self {
        Error::Sync(Box::new(error))
    }
}

impl Error {
    /// The exit status this error maps to.
    pub fn exit_status(&self) -> ExitStatus {
        ExitStatus::Error
    }

    /// Whether this is only the consequence of a stop the run was asked for (see
    /// [`crate::interrupt`]): a request not sent or a query cancelled because of it.
    pub fn is_interruption(&self) -> bool {
        use crate::sql::SqlError;
        use crate::sync::SyncError;
        let api = |error: &crate::klaviyo::ApiError| {
            matches!(error, crate::klaviyo::ApiError::Interrupted { .. })
        };
        match self {
            Error::Klaviyo(error) => api(error),
            Error::Sql(error) => matches!(error, SqlError::Interrupted),
            Error::Sync(error) => match &**error {
                SyncError::Api(error) => api(error),
                SyncError::Query { source, .. } => matches!(**source, SqlError::Interrupted),
                _ => false,
            },
            _ => false,
        }
    }
}
