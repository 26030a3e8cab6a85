//! MySQL and MariaDB as a source (`mysql://...` or `mariadb://...`; sqlx's `mysql` driver
//! speaks both).
//!
//! # Decisions
//!
//! * **Which server.** MySQL and MariaDB differ in how a statement timeout is set, so the
//!   server is told apart once, when klsync connects, by its version string: MariaDB's always
//!   contains `MariaDB` (`10.11.6-MariaDB-0+deb12u1`), MySQL's never does (`8.0.36`). A
//!   proxy that rewrites the version string would be taken for MySQL; then setting
//!   `max_execution_time` fails on the first query, naming the variable.
//! * **Read-only, twice.** Every connection of the query pool is made read-only for its whole
//!   session (`SET SESSION TRANSACTION READ ONLY`) and every query runs inside `START
//!   TRANSACTION READ ONLY`, always rolled back. The transaction alone is not enough: a DDL
//!   statement commits the open transaction implicitly and then runs outside it; the session
//!   setting refuses it too. A query must also start with `SELECT`, `WITH`, `VALUES` or `TABLE`
//!   and must not write a file (`SELECT ... INTO OUTFILE|DUMPFILE`, which neither setting
//!   refuses); both are checked in the text before it is sent. Saving a query (the one write
//!   klsync makes, to `saved_queries`) uses a connection of its own, closed right after.
//! * **Statement timeout.** Set for the session when a pool connection is opened, so a query
//!   costs no extra round trip: MariaDB `max_statement_time` (seconds), MySQL
//!   `max_execution_time` (milliseconds; it applies to SELECT, the only statement klsync runs
//!   there). Zero disables both. A statement over it fails with [`SqlError::Timeout`].
//! * **Interrupts.** When the run is stopped or the rows' consumer goes away, the statement is
//!   killed with `KILL QUERY <connection id>` from a connection of its own (the pool's may all
//!   be busy), and the connection it ran on is closed rather than pooled again.
//! * **Placeholders.** MySQL's are `?`, one parameter each, in order. klsync's portable `$n`
//!   (what manifests use, so a query runs unchanged on every database) is turned into `?` with
//!   each parameter bound where it is used; one text cannot mix both. They are found outside
//!   string literals (with MySQL's backslash escapes), `` `identifiers` `` and comments
//!   (`statement::MySqlText`).
//! * **Errors in the user's SQL.** MySQL gives no position, only `near '<the rest of the
//!   statement, at most 80 bytes>' at line N`; klsync finds that text in the statement it sent,
//!   from line N on, and maps it back to a line and column of the user's text.
//! * **Values** (see [`MySqlColumn`]) are converted so that the same logical value is the same
//!   JSON, and so hashes the same, as on PostgreSQL and SQLite: a sync moved from one database
//!   to another plans no change. The session time zone is forced to UTC (whatever the URL
//!   says), so `TIMESTAMP` values, stored in UTC, are read in UTC.
//! * **TLS** by URL parameter: `?ssl-mode=required` (or `verify_ca`, `verify_identity` with
//!   `ssl-ca=...`), through rustls, as sqlx parses it. The password never appears in logs or
//!   errors: the URL is only shown redacted, and sqlx's errors do not carry it.

use std::str::FromStr;
use std::time::Duration;

use futures::TryStreamExt;
use serde_json::Value;
use sqlx::mysql::{
    MySql, MySqlConnectOptions, MySqlConnection, MySqlPool, MySqlPoolOptions, MySqlRow,
    MySqlTypeInfo, MySqlValueRef,
};
use sqlx::{AssertSqlSafe, Column, Connection, Decode, Row as _, Type, TypeInfo};

use super::decode::{self, Cell};
use super::error::SqlError;
use super::params::{self, Param};
use super::statement::{self, MySqlStatement, MySqlText};
use super::{ACQUIRE_TIMEOUT, Batcher, MAX_CONNECTIONS, QueryOptions, RowSender};

type BoxDynError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The server behind a `mysql://` URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flavor {
    MariaDb,
    MySql,
}

impl Flavor {
    /// The server of a `SELECT VERSION()` answer.
    pub(super) fn of(version: &str) -> Flavor {
        if version.to_ascii_lowercase().contains("mariadb") {
            Flavor::MariaDb
        } else {
            Flavor::MySql
        }
    }

    /// The statement that bounds each statement of the session by `timeout` (zero: none).
    /// The value is klsync's own number, not user input, so it is written into the text (a
    /// system variable cannot be set through a placeholder in MySQL's text protocol).
    fn timeout_statement(self, timeout: Duration) -> String {
        match self {
            Flavor::MariaDb => format!(
                "SET SESSION max_statement_time = {}.{:06}",
                timeout.as_secs(),
                timeout.subsec_micros()
            ),
            Flavor::MySql => format!("SET SESSION max_execution_time = {}", timeout.as_millis()),
        }
    }
}

/// A MySQL or MariaDB source: read-only pooled connections.
#[derive(Debug, Clone)]
pub(super) struct MySqlSource {
    pool: MySqlPool,
    flavor: Flavor,
}

/// Connect to `raw` (shown as `shown`), checking the server is reachable and telling MySQL
/// from MariaDB.
pub(super) async fn connect(
    raw: &str,
    shown: &str,
    options: &QueryOptions,
) -> Result<MySqlSource, SqlError> {
    let connect = MySqlConnectOptions::from_str(raw)
        .map_err(|source| SqlError::InvalidUrl {
            url: shown.to_string(),
            source,
        })?
        // TIMESTAMP values are read in the session's time zone: UTC, so they mean what
        // PostgreSQL's timestamptz means.
        .timezone(Some("+00:00".to_string()));
    let mut probe = super::probe(shown, options.connect_retries, &connect).await?;
    let version: String = sqlx::query_scalar("SELECT VERSION()")
        .fetch_one(&mut probe)
        .await
        .map_err(|source| SqlError::Connect {
            url: shown.to_string(),
            attempts: 1,
            source,
        })?;
    let _ = probe.close().await;
    let flavor = Flavor::of(&version);
    tracing::debug!(url = shown, version, ?flavor, "connected to the SQL source");
    let timeout = flavor.timeout_statement(options.statement_timeout);
    let pool = MySqlPoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .after_connect(move |connection, _| {
            let timeout = timeout.clone();
            Box::pin(async move {
                sqlx::raw_sql("SET SESSION TRANSACTION READ ONLY")
                    .execute(&mut *connection)
                    .await?;
                sqlx::raw_sql(AssertSqlSafe(timeout))
                    .execute(&mut *connection)
                    .await?;
                Ok(())
            })
        })
        .connect_lazy_with(connect);
    Ok(MySqlSource { pool, flavor })
}

impl MySqlSource {
    /// The read-only pool (queries, reading saved queries).
    pub(super) fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    /// A connection of its own, not read-only, for saving a query; the caller closes it.
    pub(super) async fn writable(&self) -> Result<MySqlConnection, sqlx::Error> {
        MySqlConnection::connect_with(&self.pool.connect_options()).await
    }

    pub(super) async fn close(&self) {
        self.pool.close().await;
    }

    /// Check `sql` as [`super::QueryManager::check_query`] does: the statement klsync would
    /// send, prepared (parsed and analysed by the server) in a read-only transaction and
    /// rolled back.
    pub(super) async fn check(
        &self,
        sql: &str,
        params: Vec<Param>,
        timeout: Duration,
    ) -> Result<(), SqlError> {
        let statement = statement_of(sql, params)?;
        let failed = |source| SqlError::from_query(source, timeout);
        let mut connection = self.pool.acquire().await.map_err(failed)?;
        let mut transaction = connection
            .begin_with("START TRANSACTION READ ONLY")
            .await
            .map_err(failed)?;
        let prepared = sqlx::Executor::prepare(
            &mut *transaction,
            sqlx::SqlSafeStr::into_sql_str(AssertSqlSafe(statement.sql.clone())),
        )
        .await;
        let rolled_back = transaction.rollback().await;
        prepared.map_err(|err| locate(failed(err), &statement, sql))?;
        rolled_back.map_err(failed)?;
        Ok(())
    }

    /// Run `sql` with `params`, streaming its rows to `sender` (see the module's decisions).
    pub(super) async fn run(
        &self,
        sql: String,
        params: Vec<Param>,
        timeout: Duration,
        sender: &RowSender,
    ) -> Result<(), SqlError> {
        let statement = statement_of(&sql, params)?;
        let failed = |source| SqlError::from_query(source, timeout);
        let mut connection = self.pool.acquire().await.map_err(failed)?;
        let id: u64 = sqlx::query_scalar("SELECT CONNECTION_ID()")
            .fetch_one(&mut *connection)
            .await
            .map_err(failed)?;
        let (outcome, stopped) = {
            let read = read(&mut connection, &statement, &sql, timeout, sender);
            let mut read = std::pin::pin!(read);
            let stopped = tokio::select! {
                done = &mut read => return done,
                _ = crate::interrupt::stopped() => true,
                () = sender.closed() => false,
            };
            self.kill(id).await;
            (read.await, stopped)
        };
        // The statement was killed part way: start the next query on a fresh connection.
        connection.close_on_drop();
        match outcome {
            Err(_) if stopped => Err(SqlError::Interrupted),
            outcome => outcome,
        }
    }

    /// Stop the statement running on connection `id`, from a connection of its own.
    async fn kill(&self, id: u64) {
        let killed = async {
            let mut connection = self.writable().await?;
            // `id` is the server's number for the connection, not user input.
            let killed = sqlx::raw_sql(AssertSqlSafe(format!("KILL QUERY {id}")))
                .execute(&mut connection)
                .await;
            let _ = connection.close().await;
            killed
        }
        .await;
        if let Err(err) = killed {
            tracing::warn!(connection = id, flavor = ?self.flavor, error = %err, "could not stop the query on the server");
        }
    }
}

/// The statement klsync sends for the user's `sql`: checked to be one read-only query, with
/// its placeholders in MySQL's form.
fn statement_of(sql: &str, params: Vec<Param>) -> Result<MySqlStatement<Param>, SqlError> {
    let text = MySqlText::parse(sql);
    if let Some(second) = text.second {
        let (line, column) = statement::line_column(sql, second);
        return Err(SqlError::MultipleStatements { line, column });
    }
    match statement::first_keyword(sql) {
        Some((keyword, ..))
            if matches!(keyword.as_str(), "SELECT" | "WITH" | "VALUES" | "TABLE") => {}
        Some((keyword, line, column)) => {
            return Err(SqlError::ReadOnly {
                message: format!(
                    "`{keyword}` at line {line}, column {column}: a sync query must be one SELECT or WITH statement"
                ),
            });
        }
        None => {
            return Err(SqlError::NotAQuery {
                keyword: String::new(),
                line: 1,
                column: 1,
            });
        }
    }
    if let Some(at) = text.writes_file {
        let (line, column) = statement::line_column(sql, at);
        return Err(SqlError::ReadOnly {
            message: format!(
                "`INTO OUTFILE`/`INTO DUMPFILE` at line {line}, column {column} writes a file on the database server"
            ),
        });
    }
    text.bind_order(sql, params)
        .map_err(|mismatch| SqlError::Placeholders { mismatch })
}

/// Read the statement in a read-only transaction on `connection`, rolled back at the end.
async fn read(
    connection: &mut MySqlConnection,
    statement: &MySqlStatement<Param>,
    user_sql: &str,
    timeout: Duration,
    sender: &RowSender,
) -> Result<(), SqlError> {
    let failed = |source| SqlError::from_query(source, timeout);
    let mut transaction = connection
        .begin_with("START TRANSACTION READ ONLY")
        .await
        .map_err(failed)?;
    let mut batch = Batcher::new(sender);
    let streamed = async {
        let query = params::bind(
            sqlx::query(AssertSqlSafe(statement.sql.clone())),
            statement.params.clone(),
        );
        let mut rows = query.fetch(&mut *transaction);
        let mut columns: Option<Vec<MySqlColumn>> = None;
        while let Some(row) = rows
            .try_next()
            .await
            .map_err(|err| locate(failed(err), statement, user_sql))?
        {
            let columns = match &mut columns {
                Some(columns) => columns,
                None => {
                    let found = mysql_columns(&row)?;
                    batch.set_columns(found.iter().map(|c| c.name.clone()).collect());
                    columns.insert(found)
                }
            };
            if !batch.push(values(&row, columns)?).await? {
                break;
            }
        }
        Ok(())
    }
    .await;
    batch.flush().await;
    // A sync query never commits, whatever happened above.
    let rolled_back = transaction.rollback().await.map_err(failed);
    streamed.and(rolled_back)
}

/// Put MySQL's `near '...' at line N` of a syntax error at its line and column in the user's
/// SQL (see the module's decisions); any other error is returned as it is.
fn locate(error: SqlError, statement: &MySqlStatement<Param>, user_sql: &str) -> SqlError {
    let SqlError::Database {
        message,
        at: None,
        detail,
        hint,
        ..
    } = &error
    else {
        return error;
    };
    let Some(sent) = near_offset(message, &statement.sql) else {
        return error;
    };
    let user = statement.user_offset(sent).min(user_sql.len());
    let user = (0..=user)
        .rev()
        .find(|at| user_sql.is_char_boundary(*at))
        .unwrap_or(0);
    SqlError::Database {
        message: message.clone(),
        at: Some(statement::line_column(user_sql, user)),
        position: None,
        detail: detail.clone(),
        hint: hint.clone(),
    }
}

/// The byte offset in `sent` that a MySQL `... near '<text>' at line N` message points at.
fn near_offset(message: &str, sent: &str) -> Option<usize> {
    let start = message.find(" near '")? + " near '".len();
    let (snippet, line) = message[start..].rsplit_once("' at line ")?;
    let line: usize = line.trim().parse().ok()?;
    // A character cut by the server's 80-byte limit arrives as a replacement character.
    let snippet = snippet.split('\u{FFFD}').next().unwrap_or_default();
    let line_start = if line <= 1 {
        0
    } else {
        sent.match_indices('\n').nth(line - 2)?.0 + 1
    };
    if snippet.is_empty() {
        return Some(sent.len());
    }
    // Short of the limit, the text is all the rest of the statement.
    if snippet.len() < 80 && sent.ends_with(snippet) && sent.len() - snippet.len() >= line_start {
        return Some(sent.len() - snippet.len());
    }
    sent[line_start..].find(snippet).map(|at| line_start + at)
}

/// How the values of one result column become JSON, resolved once per column from its type:
///
/// | MySQL / MariaDB                                   | JSON (as PostgreSQL's ...)               |
/// |---------------------------------------------------|------------------------------------------|
/// | `TINYINT(1)` = `BOOL`/`BOOLEAN`                   | `true`/`false` for 0/1 (`bool`); other values numbers |
/// | `TINYINT` .. `BIGINT`, `YEAR`, `BIT(n)`, unsigned | number (`int2`..`int8`)                  |
/// | `DECIMAL`                                         | number when exact, else its text (`numeric`) |
/// | `FLOAT`                                           | number, shortest form (`float4`)         |
/// | `DOUBLE`                                          | number (`float8`)                        |
/// | `CHAR`, `VARCHAR`, `TEXT`s, `ENUM`, `SET`         | string (`text`)                          |
/// | `BINARY`, `VARBINARY`, `BLOB`s                    | `\x` + hex (`bytea`)                     |
/// | `DATE`                                            | `2024-05-01` (`date`)                    |
/// | `DATETIME`                                        | ISO 8601 without offset (`timestamp`)    |
/// | `TIMESTAMP`                                       | ISO 8601 in UTC, `Z` (`timestamptz`)     |
/// | `TIME` within a day                               | `10:30:00` (`time`); beyond: row refused |
/// | `JSON` (MySQL)                                    | the JSON itself (`jsonb`)                |
/// | `JSON` (MariaDB: an alias of `LONGTEXT`)          | string, as SQLite's JSON in TEXT         |
/// | zero dates (`0000-00-00`)                         | `null`: the driver reads no value (as MySQL's connectors' `convertToNull`) |
/// | NULL                                              | `null`                                   |
/// | `GEOMETRY` and others                             | the sync stops: cast it                  |
///
/// A comparison (`a > b`) is an integer in MySQL, so it is a number, where PostgreSQL has a
/// `bool`: a column of type `BOOLEAN` is what reads as one.
#[derive(Debug, Clone)]
pub(crate) struct MySqlColumn {
    name: String,
    type_name: String,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `TINYINT(1)`; whether it is unsigned.
    Bool(bool),
    Int,
    Unsigned,
    Float,
    Double,
    Decimal,
    Text,
    Bytes,
    Date,
    DateTime,
    Timestamp,
    Time,
    Json,
    Null,
    Unsupported,
}

fn kind_of(type_info: &MySqlTypeInfo) -> Kind {
    let unsigned = <u64 as Type<MySql>>::compatible(type_info);
    match type_info.name() {
        "BOOLEAN" => Kind::Bool(unsigned),
        "BIT" => Kind::Unsigned,
        "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "YEAR" => Kind::Int,
        name if name.ends_with("UNSIGNED") => Kind::Unsigned,
        "FLOAT" => Kind::Float,
        "DOUBLE" => Kind::Double,
        "DECIMAL" => Kind::Decimal,
        "DATE" => Kind::Date,
        "DATETIME" => Kind::DateTime,
        "TIMESTAMP" => Kind::Timestamp,
        "TIME" => Kind::Time,
        "JSON" => Kind::Json,
        "NULL" => Kind::Null,
        "CHAR" | "VARCHAR" | "TEXT" | "TINYTEXT" | "MEDIUMTEXT" | "LONGTEXT" | "ENUM" | "SET"
        | "BINARY" | "VARBINARY" | "BLOB" | "TINYBLOB" | "MEDIUMBLOB" | "LONGBLOB" => {
            // The type name follows the column's BINARY flag, which a text column with a
            // binary collation (`utf8mb4_bin`) has too; the collation itself says which.
            if <str as Type<MySql>>::compatible(type_info) {
                Kind::Text
            } else {
                Kind::Bytes
            }
        }
        _ if unsigned => Kind::Unsigned,
        _ => Kind::Unsupported,
    }
}

impl MySqlColumn {
    fn new(name: &str, type_info: &MySqlTypeInfo) -> MySqlColumn {
        MySqlColumn {
            name: name.to_string(),
            type_name: type_info.name().to_string(),
            kind: kind_of(type_info),
        }
    }

    /// The JSON form of one value.
    fn value(&self, raw: MySqlValueRef<'_>) -> Cell {
        use sqlx::ValueRef as _;
        if raw.is_null() {
            return Ok(Value::Null);
        }
        if self.kind == Kind::Unsupported {
            return Err(SqlError::UnsupportedType {
                column: self.name.clone(),
                type_name: self.type_name.clone(),
            });
        }
        kind_value(self.kind, raw)
            .map_err(|err| decode::decode_error(&self.name, &self.type_name, err))
    }
}

fn kind_value(kind: Kind, raw: MySqlValueRef<'_>) -> Result<Value, BoxDynError> {
    Ok(match kind {
        // TINYINT(1) holds -128..127 (0..255 unsigned): values other than 0 and 1 stay numbers.
        Kind::Bool(unsigned) => {
            let int = if unsigned {
                i64::try_from(<u64 as Decode<MySql>>::decode(raw)?)?
            } else {
                <i64 as Decode<MySql>>::decode(raw)?
            };
            match int {
                0 | 1 => Value::Bool(int == 1),
                other => Value::from(other),
            }
        }
        Kind::Int => Value::from(<i64 as Decode<MySql>>::decode(raw)?),
        Kind::Unsigned => Value::from(<u64 as Decode<MySql>>::decode(raw)?),
        Kind::Float => decode::float4_to_json(<f32 as Decode<MySql>>::decode(raw)?)?,
        Kind::Double => decode::float_to_json(<f64 as Decode<MySql>>::decode(raw)?)?,
        Kind::Decimal => decode::numeric_to_json(<&str as Decode<MySql>>::decode(raw)?)?,
        Kind::Text => Value::String(<&str as Decode<MySql>>::decode(raw)?.to_owned()),
        Kind::Bytes => Value::String(decode::bytes_hex(<&[u8] as Decode<MySql>>::decode(raw)?)),
        Kind::Date => Value::String(decode::date_iso(
            <chrono::NaiveDate as Decode<MySql>>::decode(raw)?,
        )),
        Kind::DateTime => {
            Value::String(decode::timestamp_iso(<chrono::NaiveDateTime as Decode<
                MySql,
            >>::decode(raw)?))
        }
        Kind::Timestamp => Value::String(decode::timestamptz_iso(
            <chrono::NaiveDateTime as Decode<MySql>>::decode(raw)?.and_utc(),
        )),
        Kind::Time => {
            let time = <chrono::NaiveTime as Decode<MySql>>::decode(raw).map_err(|err| {
                format!("{err}: not a time of day; cast it to text (`CAST(col AS CHAR)`)")
            })?;
            Value::String(decode::time_iso(time))
        }
        Kind::Json => serde_json::from_str(<&str as Decode<MySql>>::decode(raw)?)?,
        Kind::Null => Value::Null,
        Kind::Unsupported => unreachable!("refused before decoding"),
    })
}

/// The decoders of a row's columns, checked to have distinct names.
fn mysql_columns(row: &MySqlRow) -> Result<Vec<MySqlColumn>, SqlError> {
    let columns: Vec<MySqlColumn> = row
        .columns()
        .iter()
        .map(|column| MySqlColumn::new(column.name(), column.type_info()))
        .collect();
    decode::distinct_names(columns.iter().map(|c| c.name.as_str()))?;
    Ok(columns)
}

/// The values of one row, in column order; a column klsync does not convert fails the query.
fn values(row: &MySqlRow, columns: &[MySqlColumn]) -> Result<Vec<Cell>, SqlError> {
    let mut out = Vec::with_capacity(columns.len());
    for (index, column) in columns.iter().enumerate() {
        let raw = row
            .try_get_raw(index)
            .map_err(|err| decode::decode_error(&column.name, &column.type_name, err))?;
        match column.value(raw) {
            Err(unsupported @ SqlError::UnsupportedType { .. }) => return Err(unsupported),
            cell => out.push(cell),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_is_told_by_its_version() {
        assert_eq!(Flavor::of("10.11.6-MariaDB-0+deb12u1"), Flavor::MariaDb);
        assert_eq!(Flavor::of("5.5.5-10.6.12-MariaDB-log"), Flavor::MariaDb);
        assert_eq!(Flavor::of("8.0.36"), Flavor::MySql);
        assert_eq!(
            Flavor::MariaDb.timeout_statement(Duration::from_millis(1500)),
            "SET SESSION max_statement_time = 1.500000"
        );
        assert_eq!(
            Flavor::MySql.timeout_statement(Duration::from_secs(60)),
            "SET SESSION max_execution_time = 60000"
        );
    }

    #[test]
    fn near_text_is_found_from_its_line() {
        let sent = "SELECT email\nFORM customers\nWHERE a = ?";
        let message = "You have an error in your SQL syntax; check the manual that corresponds \
                       to your MariaDB server version for the right syntax to use near \
                       'FORM customers\nWHERE a = ?' at line 2";
        assert_eq!(near_offset(message, sent), sent.find("FORM"));
        let end = "... to use near '' at line 3";
        assert_eq!(near_offset(end, sent), Some(sent.len()));
        // Cut at 80 bytes: found from its line on, not as the statement's end.
        let long = format!("SELECT 1 x\nFROM t WHERE {} AND", "a = 1 AND ".repeat(10));
        let cut = &long[long.find("FROM").unwrap()..][..80];
        let message = format!("... near '{cut}' at line 2");
        assert_eq!(near_offset(&message, &long), long.find("FROM"));
        assert_eq!(near_offset("Unknown column 'x'", sent), None);
    }

    #[test]
    fn only_one_reading_query_is_sent() {
        let refused = |sql: &str| statement_of(sql, Vec::new()).unwrap_err().to_string();
        assert!(refused("CREATE TABLE t (a INT)").contains("read-only"));
        assert!(refused("SELECT 1; DROP TABLE t").contains("line 1, column 11"));
        assert!(refused("SELECT a FROM t INTO OUTFILE '/tmp/x'").contains("writes a file"));
        let sent = statement_of("SELECT a FROM t WHERE a = $1;\n", vec![Param::Int(1)]).unwrap();
        assert_eq!(sent.sql, "SELECT a FROM t WHERE a = ?");
    }
}
