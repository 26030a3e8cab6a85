//! The `saved_queries` table: reusable SQL stored beside the data it reads.
//!
//! The table is created only when a query is saved (from the migration file's own text, which is
//! idempotent); reading a database without it finds no saved queries. Timestamps are written in
//! UTC by klsync and read back as stored (the column type has no time zone).

use chrono::NaiveDateTime;
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{
    AssertSqlSafe, ColumnIndex, Connection, Database, Decode, Encode, Executor, IntoArguments,
    Row as _, Type,
};

use super::error::SqlError;

/// `name VARCHAR(100)` in the table.
const MAX_NAME_CHARS: usize = 100;

/// A row of `saved_queries`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SavedQuery {
    /// Unique name, at most 100 characters.
    pub name: String,
    /// What the query selects, for humans.
    pub description: Option<String>,
    /// The SQL text (`query_text`), parameters as `$1`, `$2`, ...
    pub sql: String,
    /// Values bound to `$1`, `$2`, ... (`parameters`, a JSON array; empty when NULL).
    pub params: Vec<Value>,
    /// When the name was first saved.
    pub created_at: Option<NaiveDateTime>,
    /// When it was last saved.
    pub updated_at: Option<NaiveDateTime>,
}

pub(crate) fn validate_name(name: &str) -> Result<(), SqlError> {
    let invalid = |reason: &str| {
        Err(SqlError::InvalidName {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.trim().is_empty() {
        return invalid("it is empty");
    }
    if name.trim() != name {
        return invalid("it starts or ends with whitespace");
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return invalid("it is longer than 100 characters");
    }
    Ok(())
}

/// The stored form of positional parameters: a JSON array, or NULL when there are none.
fn stored_params(params: &[Value]) -> Option<Value> {
    (!params.is_empty()).then(|| Value::Array(params.to_vec()))
}

fn loaded_params(name: &str, stored: Option<Value>) -> Result<Vec<Value>, SqlError> {
    match stored {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(values)) => Ok(values),
        Some(other) => Err(SqlError::BadSavedParams {
            name: name.to_string(),
            reason: format!(
                "expected a JSON array of values for $1, $2, ..., found {}",
                json_kind(&other)
            ),
        }),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// What differs between databases for `saved_queries`: the statements, and how the `parameters`
/// column (`jsonb`, JSON text, `JSON`) is written and read. Each database's module implements
/// it beside its [`super::source::Source`]; everything else is one generic path.
pub(super) trait Dialect: Database {
    /// The table's migration (idempotent).
    const MIGRATION: &'static str;
    /// Whether the table exists (one boolean).
    const TABLE_EXISTS: &'static str;
    /// Parameter `n` (1-based): `$1`, `?1`, or MySQL's bare `?` (bound once per use).
    fn param(n: usize) -> String;
    /// The first parameter where its type must be known to compare it with NULL.
    const FIRST_AS_TEXT: &'static str;
    /// The time now, in UTC, as the timestamp columns hold it.
    const NOW: &'static str;
    /// Whether [`Dialect::upsert_sql`] returns the stored row; else it is selected after.
    const UPSERT_RETURNS: bool = true;
    /// Insert a query, or update the one of that name (keeping its description when none is
    /// given); the parameters are the name, description, SQL and stored parameters.
    fn upsert_sql() -> String {
        let [name, description, query_text, parameters] = [1, 2, 3, 4].map(Self::param);
        let now = Self::NOW;
        format!(
            "INSERT INTO saved_queries (name, description, query_text, parameters, created_at, updated_at)
VALUES ({name}, {description}, {query_text}, {parameters}, {now}, {now})
ON CONFLICT (name) DO UPDATE SET
    description = COALESCE(excluded.description, saved_queries.description),
    query_text = excluded.query_text,
    parameters = excluded.parameters,
    updated_at = excluded.updated_at
RETURNING {COLUMNS}"
        )
    }
    /// Every query, or the one named by the one parameter when it is not NULL.
    fn select_sql() -> String {
        format!(
            "SELECT {COLUMNS} FROM saved_queries WHERE {} IS NULL OR name = {} ORDER BY name",
            Self::FIRST_AS_TEXT,
            Self::param(1)
        )
    }
}

/// Delete the query named by the parameter.
fn delete_sql<DB: Dialect>() -> String {
    format!("DELETE FROM saved_queries WHERE name = {}", DB::param(1))
}

/// The columns of a [`SavedQuery`], as [`saved_query`] reads them.
pub(super) const COLUMNS: &str =
    "name, description, query_text, parameters, created_at, updated_at";

pub(super) fn reading(source: sqlx::Error) -> SqlError {
    SqlError::SavedQueries {
        action: "reading",
        source,
    }
}

/// What [`super::source::Source::saved_queries`] is asked to do with `saved_queries`.
pub(crate) enum SavedOp<'a> {
    /// Every saved query by name, or only the one called `name`; none when the table is
    /// missing (reading never creates it).
    Load { name: Option<&'a str> },
    /// Insert the query, or update the one of that name.
    Save {
        name: &'a str,
        sql: &'a str,
        description: Option<&'a str>,
        params: &'a [Value],
    },
    /// Delete the query of that name.
    Delete { name: &'a str },
}

impl SavedOp<'_> {
    /// Whether it writes (then it needs a connection that may).
    pub(super) fn writes(&self) -> bool {
        !matches!(self, SavedOp::Load { .. })
    }

    /// What it does, for its errors.
    pub(super) fn action(&self) -> &'static str {
        match self {
            SavedOp::Load { .. } => "reading",
            SavedOp::Save { .. } => "saving",
            SavedOp::Delete { .. } => "deleting",
        }
    }
}

/// What a [`SavedOp`] gave.
pub(crate) enum SavedOutcome {
    /// The queries read.
    Loaded(Vec<SavedQuery>),
    /// The stored row.
    Saved(SavedQuery),
    /// Whether there was a query to delete.
    Deleted(bool),
}

/// Do `op` on `connection` (which must be writable when [`SavedOp::writes`]).
pub(super) async fn run<DB: Dialect>(
    connection: &mut DB::Connection,
    op: SavedOp<'_>,
) -> Result<SavedOutcome, SqlError>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'e> &'e str: Encode<'e, DB> + Type<DB>,
    for<'e> Option<&'e str>: Encode<'e, DB> + Type<DB>,
    bool: for<'r> Decode<'r, DB> + Type<DB>,
    String: for<'r> Decode<'r, DB> + Type<DB>,
    Option<String>: for<'r> Decode<'r, DB> + Type<DB>,
    Option<NaiveDateTime>: for<'r> Decode<'r, DB> + Type<DB>,
    Option<Json<Value>>: for<'r> Decode<'r, DB> + for<'e> Encode<'e, DB> + Type<DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
{
    let failed = |action| move |source| SqlError::SavedQueries { action, source };
    match op {
        SavedOp::Load { name } => {
            let exists: bool = sqlx::query_scalar(DB::TABLE_EXISTS)
                .fetch_one(&mut *connection)
                .await
                .map_err(reading)?;
            if !exists {
                return Ok(SavedOutcome::Loaded(Vec::new()));
            }
            let rows = sqlx::query(AssertSqlSafe(DB::select_sql()))
                .bind(name)
                .fetch_all(&mut *connection)
                .await
                .map_err(reading)?;
            let loaded = rows
                .iter()
                .map(saved_query::<DB>)
                .collect::<Result<_, _>>()?;
            Ok(SavedOutcome::Loaded(loaded))
        }
        // In one transaction: the table created if missing, then the query inserted or updated.
        SavedOp::Save {
            name,
            sql,
            description,
            params,
        } => {
            let mut transaction = connection.begin().await.map_err(failed("saving"))?;
            sqlx::raw_sql(DB::MIGRATION)
                .execute(&mut *transaction)
                .await
                .map_err(failed("creating the table"))?;
            let query = sqlx::query(AssertSqlSafe(DB::upsert_sql()))
                .bind(name)
                .bind(description)
                .bind(sql);
            let query = query.bind(stored_params(params).map(Json));
            let row = if DB::UPSERT_RETURNS {
                query.fetch_one(&mut *transaction).await
            } else {
                query
                    .execute(&mut *transaction)
                    .await
                    .map_err(failed("saving"))?;
                sqlx::query(AssertSqlSafe(DB::select_sql()))
                    .bind(Some(name))
                    .fetch_one(&mut *transaction)
                    .await
            }
            .map_err(failed("saving"))?;
            let saved = saved_query::<DB>(&row)?;
            transaction.commit().await.map_err(failed("saving"))?;
            Ok(SavedOutcome::Saved(saved))
        }
        // A missing table holds none; whether there was one is looked up first, so no
        // database's own count of affected rows is needed.
        SavedOp::Delete { name } => {
            let exists: bool = sqlx::query_scalar(DB::TABLE_EXISTS)
                .fetch_one(&mut *connection)
                .await
                .map_err(failed("deleting"))?;
            if !exists {
                return Ok(SavedOutcome::Deleted(false));
            }
            let found = sqlx::query(AssertSqlSafe(DB::select_sql()))
                .bind(Some(name))
                .fetch_optional(&mut *connection)
                .await
                .map_err(failed("deleting"))?;
            if found.is_some() {
                sqlx::query(AssertSqlSafe(delete_sql::<DB>()))
                    .bind(name)
                    .execute(&mut *connection)
                    .await
                    .map_err(failed("deleting"))?;
            }
            Ok(SavedOutcome::Deleted(found.is_some()))
        }
    }
}

/// The `parameters` column of `row` (of query `name`): `jsonb` on PostgreSQL, `JSON` on MySQL
/// (`LONGTEXT` on MariaDB), JSON text on SQLite; sqlx reads each as JSON.
fn stored_json<DB: Database>(row: &DB::Row, name: &str) -> Result<Option<Value>, SqlError>
where
    Option<Json<Value>>: for<'r> Decode<'r, DB> + Type<DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
{
    match row.try_get::<Option<Json<Value>>, _>("parameters") {
        Ok(params) => Ok(params.map(|json| json.0)),
        Err(sqlx::Error::ColumnDecode { source, .. }) => Err(SqlError::BadSavedParams {
            name: name.to_owned(),
            reason: format!("not JSON: {source}"),
        }),
        Err(err) => Err(reading(err)),
    }
}

/// A row of `saved_queries`: its [`COLUMNS`].
fn saved_query<DB: Dialect>(row: &DB::Row) -> Result<SavedQuery, SqlError>
where
    String: for<'r> Decode<'r, DB> + Type<DB>,
    Option<String>: for<'r> Decode<'r, DB> + Type<DB>,
    Option<NaiveDateTime>: for<'r> Decode<'r, DB> + Type<DB>,
    Option<Json<Value>>: for<'r> Decode<'r, DB> + for<'e> Encode<'e, DB> + Type<DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
{
    let name: String = row.try_get("name").map_err(reading)?;
    Ok(SavedQuery {
        params: loaded_params(&name, stored_json(row, &name)?)?,
        description: row.try_get("description").map_err(reading)?,
        sql: row.try_get("query_text").map_err(reading)?,
        created_at: row.try_get("created_at").map_err(reading)?,
        updated_at: row.try_get("updated_at").map_err(reading)?,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sqlx::{Postgres, Sqlite};

    #[test]
    fn each_database_has_its_placeholders_and_clock() {
        assert_eq!(
            Postgres::upsert_sql().lines().nth(1),
            Some("VALUES ($1, $2, $3, $4, now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC')")
        );
        assert_eq!(
            Sqlite::upsert_sql().lines().nth(1),
            Some(
                "VALUES (?1, ?2, ?3, ?4, strftime('%Y-%m-%d %H:%M:%f', 'now'), strftime('%Y-%m-%d %H:%M:%f', 'now'))"
            )
        );
        assert!(
            Postgres::select_sql()
                .ends_with("FROM saved_queries WHERE $1::text IS NULL OR name = $1 ORDER BY name")
        );
        assert!(
            Sqlite::select_sql()
                .ends_with("FROM saved_queries WHERE ?1 IS NULL OR name = ?1 ORDER BY name")
        );
        assert_eq!(
            delete_sql::<Sqlite>(),
            "DELETE FROM saved_queries WHERE name = ?1"
        );
    }

    #[test]
    fn names_must_fit_the_column_and_be_trimmed() {
        assert!(validate_name("vip_customers").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name(" vip").is_err());
        assert!(validate_name(&"é".repeat(100)).is_ok());
        assert!(validate_name(&"é".repeat(101)).is_err());
    }

    #[test]
    fn parameters_round_trip_as_a_json_array_or_null() {
        assert_eq!(stored_params(&[]), None);
        assert_eq!(
            stored_params(&[json!(1), json!("a")]),
            Some(json!([1, "a"]))
        );
        assert_eq!(loaded_params("q", None).unwrap(), Vec::<Value>::new());
        assert_eq!(
            loaded_params("q", Some(json!([true]))).unwrap(),
            vec![json!(true)]
        );
        let err = loaded_params("q", Some(json!({"since": "2024-01-01"}))).unwrap_err();
        assert!(err.to_string().contains("an object"), "{err}");
    }
}
