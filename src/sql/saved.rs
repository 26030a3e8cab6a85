//! The `saved_queries` table: reusable SQL stored beside the data it reads.
//!
//! The table is created only when a query is saved (from the migration file's own text, which is
//! idempotent); reading a database without it finds no saved queries. Timestamps are written in
//! UTC by klsync and read back as stored (the column type has no time zone).

use chrono::NaiveDateTime;
use serde_json::Value;
use sqlx::postgres::PgPool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqlitePool};
use sqlx::types::Json;
use sqlx::{Connection, Row as _};

use super::error::SqlError;

const PG_MIGRATION: &str = include_str!("../../migrations/saved_queries/postgres.sql");
const SQLITE_MIGRATION: &str = include_str!("../../migrations/saved_queries/sqlite.sql");
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

// now() is the transaction start: one instant for both columns, and a later one on each save.
const PG_UPSERT: &str = "\
INSERT INTO saved_queries (name, description, query_text, parameters, created_at, updated_at)
VALUES ($1, $2, $3, $4, now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC')
ON CONFLICT (name) DO UPDATE SET
    description = COALESCE(EXCLUDED.description, saved_queries.description),
    query_text = EXCLUDED.query_text,
    parameters = EXCLUDED.parameters,
    updated_at = EXCLUDED.updated_at
RETURNING name, description, query_text, parameters, created_at, updated_at";

pub(crate) async fn save_pg(
    pool: &PgPool,
    name: &str,
    sql: &str,
    description: Option<&str>,
    params: &[Value],
) -> Result<SavedQuery, SqlError> {
    let failed = |action| move |source| SqlError::SavedQueries { action, source };
    let mut transaction = pool.begin().await.map_err(failed("saving"))?;
    sqlx::raw_sql(PG_MIGRATION)
        .execute(&mut *transaction)
        .await
        .map_err(failed("creating the table"))?;
    let row = sqlx::query(PG_UPSERT)
        .bind(name)
        .bind(description)
        .bind(sql)
        .bind(stored_params(params).map(Json))
        .fetch_one(&mut *transaction)
        .await
        .map_err(failed("saving"))?;
    let saved = pg_saved(&row)?;
    transaction.commit().await.map_err(failed("saving"))?;
    Ok(saved)
}

/// Deletes the saved query `name`; whether there was one (a missing table holds none).
pub(crate) async fn delete_pg(pool: &PgPool, name: &str) -> Result<bool, SqlError> {
    let failed = |source| SqlError::SavedQueries {
        action: "deleting",
        source,
    };
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('saved_queries') IS NOT NULL")
        .fetch_one(pool)
        .await
        .map_err(failed)?;
    if !exists {
        return Ok(false);
    }
    let deleted = sqlx::query("DELETE FROM saved_queries WHERE name = $1")
        .bind(name)
        .execute(pool)
        .await
        .map_err(failed)?;
    Ok(deleted.rows_affected() > 0)
}

pub(crate) async fn load_pg(
    pool: &PgPool,
    name: Option<&str>,
) -> Result<Vec<SavedQuery>, SqlError> {
    let failed = |source| SqlError::SavedQueries {
        action: "reading",
        source,
    };
    // to_regclass follows search_path, like the unqualified name in the queries below.
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('saved_queries') IS NOT NULL")
        .fetch_one(pool)
        .await
        .map_err(failed)?;
    if !exists {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(
        "SELECT name, description, query_text, parameters, created_at, updated_at
         FROM saved_queries WHERE $1::text IS NULL OR name = $1 ORDER BY name",
    )
    .bind(name)
    .fetch_all(pool)
    .await
    .map_err(failed)?;
    rows.iter().map(pg_saved).collect()
}

fn pg_saved(row: &sqlx::postgres::PgRow) -> Result<SavedQuery, SqlError> {
    let failed = |source| SqlError::SavedQueries {
        action: "reading",
        source,
    };
    let name: String = row.try_get("name").map_err(failed)?;
    let params: Option<Json<Value>> = row.try_get("parameters").map_err(failed)?;
    Ok(SavedQuery {
        params: loaded_params(&name, params.map(|json| json.0))?,
        description: row.try_get("description").map_err(failed)?,
        sql: row.try_get("query_text").map_err(failed)?,
        created_at: row.try_get("created_at").map_err(failed)?,
        updated_at: row.try_get("updated_at").map_err(failed)?,
        name,
    })
}

const SQLITE_UPSERT: &str = "\
INSERT INTO saved_queries (name, description, query_text, parameters, created_at, updated_at)
VALUES (?1, ?2, ?3, ?4, strftime('%Y-%m-%d %H:%M:%f', 'now'), strftime('%Y-%m-%d %H:%M:%f', 'now'))
ON CONFLICT (name) DO UPDATE SET
    description = COALESCE(excluded.description, saved_queries.description),
    query_text = excluded.query_text,
    parameters = excluded.parameters,
    updated_at = excluded.updated_at
RETURNING name, description, query_text, parameters, created_at, updated_at";

/// Saving needs the one writable SQLite connection klsync ever opens on a user's database;
/// it is opened for this save and closed right after.
pub(crate) async fn save_sqlite(
    writable: &SqliteConnectOptions,
    name: &str,
    sql: &str,
    description: Option<&str>,
    params: &[Value],
) -> Result<SavedQuery, SqlError> {
    let failed = |action| move |source| SqlError::SavedQueries { action, source };
    let mut connection = SqliteConnection::connect_with(writable)
        .await
        .map_err(failed("opening the database for writing"))?;
    let saved = async {
        let mut transaction = connection.begin().await.map_err(failed("saving"))?;
        sqlx::raw_sql(SQLITE_MIGRATION)
            .execute(&mut *transaction)
            .await
            .map_err(failed("creating the table"))?;
        let stored = stored_params(params).map(|value| value.to_string());
        let row = sqlx::query(SQLITE_UPSERT)
            .bind(name)
            .bind(description)
            .bind(sql)
            .bind(stored)
            .fetch_one(&mut *transaction)
            .await
            .map_err(failed("saving"))?;
        let saved = sqlite_saved(&row)?;
        transaction.commit().await.map_err(failed("saving"))?;
        Ok(saved)
    }
    .await;
    let closed = connection.close().await.map_err(failed("closing"));
    let saved = saved?;
    closed?;
    Ok(saved)
}

/// Deletes the saved query `name` on the one writable SQLite connection klsync opens (as
/// [`save_sqlite`] does); whether there was one.
pub(crate) async fn delete_sqlite(
    writable: &SqliteConnectOptions,
    name: &str,
) -> Result<bool, SqlError> {
    let failed = |action| move |source| SqlError::SavedQueries { action, source };
    let mut connection = SqliteConnection::connect_with(writable)
        .await
        .map_err(failed("opening the database for writing"))?;
    let deleted = async {
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'saved_queries')",
        )
        .fetch_one(&mut connection)
        .await
        .map_err(failed("deleting"))?;
        if !exists {
            return Ok(false);
        }
        let deleted = sqlx::query("DELETE FROM saved_queries WHERE name = ?1")
            .bind(name)
            .execute(&mut connection)
            .await
            .map_err(failed("deleting"))?;
        Ok(deleted.rows_affected() > 0)
    }
    .await;
    let closed = connection.close().await.map_err(failed("closing"));
    let deleted = deleted?;
    closed?;
    Ok(deleted)
}

pub(crate) async fn load_sqlite(
    pool: &SqlitePool,
    name: Option<&str>,
) -> Result<Vec<SavedQuery>, SqlError> {
    let failed = |source| SqlError::SavedQueries {
        action: "reading",
        source,
    };
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'saved_queries')",
    )
    .fetch_one(pool)
    .await
    .map_err(failed)?;
    if !exists {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(
        "SELECT name, description, query_text, parameters, created_at, updated_at
         FROM saved_queries WHERE ?1 IS NULL OR name = ?1 ORDER BY name",
    )
    .bind(name)
    .fetch_all(pool)
    .await
    .map_err(failed)?;
    rows.iter().map(sqlite_saved).collect()
}

fn sqlite_saved(row: &sqlx::sqlite::SqliteRow) -> Result<SavedQuery, SqlError> {
    let failed = |source| SqlError::SavedQueries {
        action: "reading",
        source,
    };
    let name: String = row.try_get("name").map_err(failed)?;
    let stored: Option<String> = row.try_get("parameters").map_err(failed)?;
    let params = match stored {
        None => None,
        Some(text) => {
            Some(
                serde_json::from_str(&text).map_err(|err| SqlError::BadSavedParams {
                    name: name.clone(),
                    reason: format!("not JSON: {err}"),
                })?,
            )
        }
    };
    Ok(SavedQuery {
        params: loaded_params(&name, params)?,
        description: row.try_get("description").map_err(failed)?,
        sql: row.try_get("query_text").map_err(failed)?,
        created_at: row.try_get("created_at").map_err(failed)?,
        updated_at: row.try_get("updated_at").map_err(failed)?,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
