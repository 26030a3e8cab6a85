//! Binding JSON parameter values to `$1`, `$2`, ... by their JSON type.
//!
//! Values are always bound, never spliced into the SQL text. Each JSON type has one SQL type:
//!
//! | JSON                  | PostgreSQL          | SQLite           |
//! |-----------------------|---------------------|------------------|
//! | string                | `text`              | TEXT             |
//! | integer               | `int8`              | INTEGER          |
//! | other number          | `float8`            | REAL             |
//! | `true` / `false`      | `bool`              | INTEGER 1 / 0    |
//! | object / array        | `jsonb`             | TEXT (the JSON)  |
//! | `null`                | NULL `text`         | NULL             |
//!
//! PostgreSQL checks bound types strictly, so compare a string parameter with a date or a
//! numeric column by casting it in the SQL: `WHERE signed_up >= $1::date`.

use serde_json::Value;
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::sqlite::SqliteArguments;
use sqlx::types::Json;
use sqlx::{Postgres, Sqlite};

use super::error::SqlError;

/// A parameter reduced to the one Rust type it binds as.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Param {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Json(Value),
    Null,
}

impl Param {
    /// Classify one JSON value; `position` is 1-based, for the error message.
    pub(crate) fn from_json(value: &Value, position: usize) -> Result<Self, SqlError> {
        Ok(match value {
            Value::Null => Param::Null,
            Value::Bool(flag) => Param::Bool(*flag),
            Value::String(text) => Param::Text(text.clone()),
            Value::Number(number) => {
                if let Some(int) = number.as_i64() {
                    Param::Int(int)
                } else if number.is_u64() {
                    return Err(SqlError::Param {
                        position,
                        reason: format!("{number} does not fit a signed 64-bit integer"),
                    });
                } else {
                    // Neither i64 nor u64, so serde_json holds it as an f64.
                    Param::Float(number.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::Array(_) | Value::Object(_) => Param::Json(value.clone()),
        })
    }
}

/// Classify every parameter before any is bound, so a bad one fails before the query runs.
pub(crate) fn classify(values: &[Value]) -> Result<Vec<Param>, SqlError> {
    values
        .iter()
        .enumerate()
        .map(|(index, value)| Param::from_json(value, index + 1))
        .collect()
}

pub(crate) fn bind_pg<'q>(
    mut query: Query<'q, Postgres, PgArguments>,
    params: Vec<Param>,
) -> Query<'q, Postgres, PgArguments> {
    for param in params {
        query = match param {
            Param::Text(text) => query.bind(text),
            Param::Int(int) => query.bind(int),
            Param::Float(float) => query.bind(float),
            Param::Bool(flag) => query.bind(flag),
            Param::Json(value) => query.bind(Json(value)),
            Param::Null => query.bind(Option::<String>::None),
        };
    }
    query
}

pub(crate) fn bind_sqlite<'q>(
    mut query: Query<'q, Sqlite, SqliteArguments>,
    params: Vec<Param>,
) -> Query<'q, Sqlite, SqliteArguments> {
    for param in params {
        query = match param {
            Param::Text(text) => query.bind(text),
            Param::Int(int) => query.bind(int),
            Param::Float(float) => query.bind(float),
            Param::Bool(flag) => query.bind(flag),
            Param::Json(value) => query.bind(Json(value)),
            Param::Null => query.bind(Option::<String>::None),
        };
    }
    query
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_values_map_to_one_bind_type_each() {
        let params = classify(&[
            json!("x"),
            json!(7),
            json!(-7),
            json!(1.5),
            json!(true),
            json!({"a": 1}),
            json!([1]),
            json!(null),
        ])
        .unwrap();
        assert_eq!(
            params,
            vec![
                Param::Text("x".into()),
                Param::Int(7),
                Param::Int(-7),
                Param::Float(1.5),
                Param::Bool(true),
                Param::Json(json!({"a": 1})),
                Param::Json(json!([1])),
                Param::Null,
            ]
        );
    }

    #[test]
    fn integers_beyond_i64_are_refused_with_their_position() {
        let err = classify(&[json!(1), json!(u64::MAX)]).unwrap_err();
        assert!(matches!(err, SqlError::Param { position: 2, .. }), "{err}");
    }
}
