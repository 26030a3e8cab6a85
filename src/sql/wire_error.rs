//! How a fast reader's own connection fails (`mysql/wire.rs`, `postgres_wire.rs`): the same
//! three ways for every database, the server's error in the database's own terms.

use std::io;

use super::SqlError;

/// A failure of the protocol itself (I/O, an unexpected message) or the server's error `E`.
pub(super) enum WireError<E> {
    Io(io::Error),
    Server(E),
    Protocol(String),
}

impl<E> From<io::Error> for WireError<E> {
    fn from(err: io::Error) -> Self {
        WireError::Io(err)
    }
}

impl<E: std::fmt::Display> std::fmt::Display for WireError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Io(err) => write!(f, "{err}"),
            WireError::Server(error) => write!(f, "{error}"),
            WireError::Protocol(what) => write!(f, "protocol: {what}"),
        }
    }
}

impl<E> WireError<E> {
    /// The error of a query that failed after its rows started; `server` says what the
    /// server's own error is.
    pub(super) fn into_sql(self, server: impl FnOnce(E) -> SqlError) -> SqlError {
        match self {
            WireError::Io(err) => SqlError::Query {
                error: sqlx::Error::Io(err),
            },
            WireError::Server(error) => server(error),
            WireError::Protocol(what) => SqlError::Query {
                error: sqlx::Error::Protocol(what),
            },
        }
    }
}

/// A protocol failure, described.
pub(super) fn protocol<E>(what: impl Into<String>) -> WireError<E> {
    WireError::Protocol(what.into())
}
