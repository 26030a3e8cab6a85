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
use sqlx::query::Query;
use sqlx::types::Json;
use sqlx::{Database, Encode, Type};

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

/// Bind `params` to `query` in order, each as its one SQL type: one path for PostgreSQL and
/// SQLite, which differ only in how sqlx encodes each type.
pub(crate) fn bind<'q, DB>(
    mut query: Query<'q, DB, DB::Arguments>,
    params: Vec<Param>,
) -> Query<'q, DB, DB::Arguments>
where
    DB: Database,
    String: for<'e> Encode<'e, DB> + Type<DB>,
    i64: for<'e> Encode<'e, DB> + Type<DB>,
    f64: for<'e> Encode<'e, DB> + Type<DB>,
    bool: for<'e> Encode<'e, DB> + Type<DB>,
    Json<Value>: for<'e> Encode<'e, DB> + Type<DB>,
    Option<String>: for<'e> Encode<'e, DB> + Type<DB>,
{
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

    #[tokio::test]
    async fn bind_gives_each_param_its_sql_type() {
        use sqlx::Connection as _;
        let mut connection = sqlx::SqliteConnection::connect("sqlite::memory:")
            .await
            .unwrap();
        let params = classify(&[
            json!("x"),
            json!(7),
            json!(1.5),
            json!(true),
            json!({"a": 1}),
            json!(null),
        ])
        .unwrap();
        let query = bind(
            sqlx::query(
                "SELECT typeof($1) || ' ' || typeof($2) || ' ' || typeof($3) || ' ' || \
                 typeof($4) || ' ' || typeof($5) || ' ' || typeof($6), $4, $5",
            ),
            params,
        );
        let row = query.fetch_one(&mut connection).await.unwrap();
        use sqlx::Row as _;
        assert_eq!(
            row.get::<String, _>(0),
            "text integer real integer text null"
        );
        assert_eq!(row.get::<i64, _>(1), 1);
        assert_eq!(row.get::<String, _>(2), r#"{"a":1}"#);
    }

    #[test]
    fn integers_beyond_i64_are_refused_with_their_position() {
        let err = classify(&[json!(1), json!(u64::MAX)]).unwrap_err();
        assert!(matches!(err, SqlError::Param { position: 2, .. }), "{err}");
    }
}
