//! [`Source`]: what one database must provide for klsync to read it.
//!
//! Everything that differs between databases is behind this one trait, one module per database
//! (`postgres.rs`, `mysql/`, `sqlite.rs`); [`super::QueryManager`] holds an
//! `Arc<dyn Source>` and knows no database. Adding a database is one module that implements
//! [`Source`] (and `saved::Dialect` for its `saved_queries` statements) plus one arm in
//! [`super::QueryManager::connect`], which picks the module by the URL's scheme. What every
//! source shares is beside the trait, in `mod.rs` and its helpers: the checks of a query's text
//! that need no database, [`super::Batcher`] (rows in batches through a bounded channel), the
//! JSON value conventions of `decode.rs` (so the same logical value hashes alike on every
//! database), bound parameters (`params.rs`) and the error type.

use futures::future::BoxFuture;

use super::params::Param;
use super::saved::{SavedOp, SavedOutcome};
use super::{RowSender, SqlError};

/// What a [`Source`] method answers, in time.
pub(super) type Answer<'a, T> = BoxFuture<'a, Result<T, SqlError>>;

/// One connected database: its read-only queries and its `saved_queries` table.
///
/// A source is connected by its module's `connect`, which checks the server is reachable (so
/// a wrong URL fails before any work starts) and holds the run's [`super::QueryOptions`].
pub(super) trait Source: std::fmt::Debug + Send + Sync {
    /// Run `sql` read-only with `params` bound (placeholders already checked to match), sending
    /// its rows through `rows` (use [`super::Batcher`]); rows before an error are sent before it
    /// is returned. It must stop the statement on the server, and return promptly, when the run
    /// is stopped ([`crate::interrupt`]: then [`SqlError::Interrupted`]) or `rows` is closed, and
    /// bound it by the statement timeout ([`SqlError::Timeout`]). Nothing it runs may write.
    fn read<'a>(&'a self, sql: String, params: Vec<Param>, rows: &'a RowSender) -> Answer<'a, ()>;

    /// Check `sql` with `params` without running it: its text by the database's own rules (one
    /// statement, placeholders) and the server's parse and analysis, changing nothing. The
    /// caller has already checked that it starts with `SELECT` or `WITH`.
    fn check<'a>(&'a self, sql: &'a str, params: Vec<Param>)
    -> BoxFuture<'a, Result<(), SqlError>>;

    /// Do `op` on the `saved_queries` table: reads on a read-only connection; saving and
    /// deleting (the only writes klsync makes to a user's database) on one that may write,
    /// through `saved::run` with the database's `saved::Dialect`.
    fn saved_queries<'a>(
        &'a self,
        op: SavedOp<'a>,
    ) -> BoxFuture<'a, Result<SavedOutcome, SqlError>>;

    /// Close every connection.
    fn close(&self) -> BoxFuture<'_, ()>;
}
