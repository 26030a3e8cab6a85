//! The SQL layer's error type.

use std::time::Duration;

/// Anything that goes wrong connecting to `DATABASE_URL`, running a query or keeping saved queries.
///
/// URLs inside these errors are always redacted (`crate::settings::redact_url`).
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The URL names a database klsync does not speak.
    #[error(
        "unsupported database URL {url}: use postgres://, postgresql://, mysql://, mariadb:// or sqlite:"
    )]
    UnsupportedUrl {
        /// The redacted URL.
        url: String,
    },
    /// The URL could not be parsed into connection options.
    #[error("invalid database URL {url}")]
    InvalidUrl {
        /// The redacted URL.
        url: String,
        #[source]
        source: sqlx::Error,
    },
    /// Connecting failed, after retrying if the failure looked transient.
    #[error("cannot connect to {url} (after {attempts} attempt(s))")]
    Connect {
        /// The redacted URL.
        url: String,
        /// How many connection attempts were made.
        attempts: u32,
        #[source]
        source: sqlx::Error,
    },
    /// The query tried to change the database; sync queries run in a read-only transaction.
    #[error(
        "sync queries are read-only: the database refused a write ({message}); nothing was changed"
    )]
    ReadOnly {
        /// The database's own message.
        message: String,
    },
    /// The query ran longer than the statement timeout and was cancelled.
    #[error("query cancelled: it ran longer than the statement timeout of {timeout:?}")]
    Timeout {
        /// The configured statement timeout.
        timeout: Duration,
    },
    /// The run was stopped (Ctrl-C, SIGTERM) while the query ran; it was cancelled on the
    /// database server too.
    #[error("query cancelled: klsync was interrupted")]
    Interrupted,
    /// The SQL text holds more than one statement.
    #[error(
        "the query holds more than one statement: a second one starts at line {line}, column {column}; a query must be exactly one statement"
    )]
    MultipleStatements {
        /// 1-based line of the second statement in the SQL text.
        line: usize,
        /// 1-based column (in characters).
        column: usize,
    },
    /// The text is not a query: klsync only reads, so a saved query must be one SELECT or WITH.
    #[error(
        "the SQL starts with `{keyword}` (line {line}, column {column}): a query must be a single SELECT or WITH statement, klsync only reads"
    )]
    NotAQuery {
        /// The first keyword, upper-cased.
        keyword: String,
        /// 1-based line of it in the SQL text.
        line: usize,
        /// 1-based column (in characters).
        column: usize,
    },
    /// The SQL's `$n` placeholders and the parameters given do not match.
    #[error(
        "{mismatch}; give one value per placeholder (`$1`..`$n`, or each `?` on MySQL), in order"
    )]
    Placeholders {
        /// What the SQL uses and what was given.
        mismatch: String,
    },
    /// The database rejected or failed the query, in its own words.
    #[error("{message}{}", database_extras(*.at, .detail.as_deref(), .hint.as_deref()))]
    Database {
        /// The database's message (PostgreSQL's, without the line of its own source file that
        /// sqlx appends).
        message: String,
        /// Where in the user's SQL, as 1-based (line, column), once [`SqlError::located`] mapped
        /// the database's position into it.
        at: Option<(usize, usize)>,
        /// PostgreSQL's 1-based character position in the statement sent, until located.
        position: Option<usize>,
        detail: Option<String>,
        hint: Option<String>,
    },
    /// The query failed outside the database's own checks (I/O, protocol).
    #[error("query failed: {error}")]
    Query { error: sqlx::Error },
    /// A parameter value cannot be bound.
    #[error("parameter ${position}: {reason}")]
    Param {
        /// 1-based position (`$1` is 1).
        position: usize,
        /// Why it cannot be bound.
        reason: String,
    },
    /// A result column has a type klsync does not convert to JSON.
    #[error(
        "column `{column}` has type {type_name}, which klsync cannot convert; cast it in the query (for example `{column}::text`)"
    )]
    UnsupportedType {
        /// The column name.
        column: String,
        /// The database's name for its type.
        type_name: String,
    },
    /// A value could not be decoded from its column type.
    #[error("column `{column}` ({type_name}): cannot decode value: {reason}")]
    Decode {
        /// The column name.
        column: String,
        /// The database's name for its type.
        type_name: String,
        /// What went wrong.
        reason: String,
    },
    /// Two result columns share a name, so a row cannot be keyed by column.
    #[error("column name `{column}` appears more than once; give each column a distinct alias")]
    DuplicateColumn {
        /// The repeated name.
        column: String,
    },
    /// A saved query name is empty or longer than the table allows.
    #[error("invalid saved query name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A saved query's stored parameters are not a JSON array of positional values.
    #[error("saved query `{name}` has unusable parameters: {reason}")]
    BadSavedParams {
        /// The saved query's name.
        name: String,
        /// Why they are unusable.
        reason: String,
    },
    /// No query of this name in the manifest's `queries:` nor in the saved_queries table.
    #[error("no query named `{name}` (neither in `queries:` nor in the saved_queries table)")]
    NotFound {
        /// The name looked up.
        name: String,
    },
    /// Reading or writing the saved_queries table failed.
    #[error("saved_queries: {action} failed")]
    SavedQueries {
        /// What klsync was doing.
        action: &'static str,
        #[source]
        source: sqlx::Error,
    },
}

impl SqlError {
    /// Classify a failure of a user query: read-only violations and timeouts get their own
    /// variants so the message says what happened, everything else keeps the database's error.
    /// A MySQL or MariaDB server's error `number` with its `message` (from sqlx, or from
    /// klsync's own reader of the protocol).
    pub(crate) fn from_mysql(number: u16, message: String, timeout: Duration) -> Self {
        match number {
            // ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION
            1792 => SqlError::ReadOnly { message },
            // MariaDB's ER_STATEMENT_TIMEOUT (max_statement_time), MySQL's ER_QUERY_TIMEOUT
            // (max_execution_time): the only limits klsync sets.
            1969 | 3024 => SqlError::Timeout { timeout },
            _ => SqlError::Database {
                message,
                at: None,
                position: None,
                detail: None,
                hint: None,
            },
        }
    }

    pub(crate) fn from_query(source: sqlx::Error, timeout: Duration) -> Self {
        if let sqlx::Error::Database(db) = &source {
            let message = || db.message().to_string();
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                return SqlError::from_postgres(
                    pg.code(),
                    message(),
                    match pg.position() {
                        Some(sqlx::postgres::PgErrorPosition::Original(position)) => Some(position),
                        _ => None,
                    },
                    pg.detail().map(str::to_owned),
                    pg.hint().map(str::to_owned),
                    timeout,
                );
            } else if let Some(my) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
                return SqlError::from_mysql(my.number(), message(), timeout);
            } else if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // SQLite extended result codes keep the primary code in the low byte.
                let primary = db
                    .code()
                    .and_then(|code| code.parse::<i32>().ok())
                    .map(|code| code & 0xff);
                match primary {
                    Some(SQLITE_READONLY) => return SqlError::ReadOnly { message: message() },
                    Some(SQLITE_INTERRUPT) => return SqlError::Timeout { timeout },
                    _ => {}
                }
            }
        }
        match &source {
            sqlx::Error::Database(db) => SqlError::Database {
                message: db.message().to_string(),
                at: None,
                position: None,
                detail: None,
                hint: None,
            },
            _ => SqlError::Query { error: source },
        }
    }

    /// A PostgreSQL error by its fields (SQLSTATE `code`; `position`: 1-based, in characters
    /// of the statement sent), from sqlx or from klsync's own `COPY` reader alike.
    pub(crate) fn from_postgres(
        code: &str,
        message: String,
        position: Option<usize>,
        detail: Option<String>,
        hint: Option<String>,
        timeout: Duration,
    ) -> Self {
        match code {
            // read_only_sql_transaction
            "25006" => SqlError::ReadOnly { message },
            // query_canceled: statement_timeout is the only canceller klsync sets.
            "57014" => SqlError::Timeout { timeout },
            _ => SqlError::Database {
                message,
                at: None,
                position,
                detail,
                hint,
            },
        }
    }

    /// Maps a database position into the user's SQL: `sent` is the statement the database ran,
    /// in which the user's SQL starts at character `start` (`COPY (` wraps it). A position
    /// outside it (in klsync's wrapper) is dropped rather than shown somewhere it is not.
    pub(crate) fn located(self, sent: &str, start: usize, user_sql: &str) -> SqlError {
        let SqlError::Database {
            message,
            position: Some(position),
            detail,
            hint,
            ..
        } = self
        else {
            return self;
        };
        let index = position.checked_sub(1).and_then(|i| i.checked_sub(start));
        // One past the end is the end of the input ("syntax error at end of input").
        let inside = index.filter(|i| *i <= user_sql.chars().count() && sent.chars().count() >= *i);
        let at = inside.map(|index| {
            let before: String = user_sql.chars().take(index).collect();
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            (line, column)
        });
        SqlError::Database {
            message,
            at,
            position: None,
            detail,
            hint,
        }
    }
}

/// ` (at line L, column C of the query); DETAIL; hint: HINT`, for what is known.
fn database_extras(at: Option<(usize, usize)>, detail: Option<&str>, hint: Option<&str>) -> String {
    let mut text = String::new();
    if let Some((line, column)) = at {
        text.push_str(&format!(" (at line {line}, column {column} of the query)"));
    }
    if let Some(detail) = detail {
        text.push_str(&format!("; {detail}"));
    }
    if let Some(hint) = hint {
        text.push_str(&format!("; hint: {hint}"));
    }
    text
}

/// SQLite's primary result code for a write on a read-only connection (also `query_only`).
const SQLITE_READONLY: i32 = 8;
/// SQLite's primary result code for an operation stopped by the progress handler.
const SQLITE_INTERRUPT: i32 = 9;
