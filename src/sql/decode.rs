//! Turning result rows into JSON values, faithfully typed.
//!
//! PostgreSQL values are decoded by column type:
//!
//! | column type                                  | JSON                                          |
//! |----------------------------------------------|-----------------------------------------------|
//! | `int2`, `int4`, `int8`, `oid`                | number                                        |
//! | `float4`, `float8`                           | number; `NaN`/`Infinity`/`-Infinity` strings   |
//! | `numeric`                                    | number when exact (see [`numeric_to_json`]), else string |
//! | `text`, `varchar`, `char`, `name`, `citext`, enums | string                                  |
//! | `bool`                                       | `true` / `false`                              |
//! | `timestamptz`                                | ISO 8601 in UTC: `2024-05-01T12:30:00Z`       |
//! | `timestamp`, `date`, `time`                  | ISO 8601 without offset                       |
//! | `json`, `jsonb`                              | the JSON value itself                         |
//! | `uuid`                                       | hyphenated string                             |
//! | `bytea`                                      | `\x` + lowercase hex, as PostgreSQL prints it |
//! | arrays of ints, floats, bools, text          | arrays                                        |
//! | domains                                      | as their base type                            |
//! | NULL                                         | `null`                                        |
//!
//! Other types are an error naming the column and suggesting a cast, rather than a guess.
//!
//! SQLite values are decoded by their storage class (SQLite's types are per value): INTEGER →
//! number (or `true`/`false` when the column is declared `BOOLEAN`), REAL → number, TEXT → string
//! (normalised to ISO 8601 when the column is declared `DATETIME`/`TIMESTAMP` and the text parses
//! as one), BLOB → `\x` hex, NULL → `null`. SQLite has no JSON type, so JSON kept in TEXT stays a
//! string.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, Utc};
use serde_json::{Number, Value};
use sqlx::postgres::{PgRow, PgTypeInfo, PgTypeKind, PgValueRef};
use sqlx::sqlite::{SqliteRow, SqliteValueRef};
use sqlx::{Column, Decode, Postgres, Row as _, Sqlite, TypeInfo, ValueRef};

use super::error::SqlError;

type BoxDynError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The column names of a row, checked to be distinct (a row is keyed by them).
pub(crate) fn column_names<R: sqlx::Row>(row: &R) -> Result<Vec<String>, SqlError> {
    let mut names: Vec<String> = Vec::with_capacity(row.len());
    for column in row.columns() {
        let name = column.name();
        if names.iter().any(|seen| seen == name) {
            return Err(SqlError::DuplicateColumn {
                column: name.to_string(),
            });
        }
        names.push(name.to_string());
    }
    Ok(names)
}

/// The values of one PostgreSQL row, in column order (see the table above).
pub(crate) fn pg_values(row: &PgRow) -> Result<Vec<Value>, SqlError> {
    let mut out = Vec::with_capacity(row.len());
    for (index, column) in row.columns().iter().enumerate() {
        let name = column.name();
        let type_info = column.type_info();
        let raw = row
            .try_get_raw(index)
            .map_err(|err| decode_error(name, type_info.name(), err))?;
        out.push(pg_value(raw, type_info, name)?);
    }
    Ok(out)
}

/// The values of one SQLite row, in column order (by storage class, see above).
pub(crate) fn sqlite_values(row: &SqliteRow) -> Result<Vec<Value>, SqlError> {
    let mut out = Vec::with_capacity(row.len());
    for (index, column) in row.columns().iter().enumerate() {
        let name = column.name();
        let declared = column.type_info().name();
        let raw = row
            .try_get_raw(index)
            .map_err(|err| decode_error(name, declared, err))?;
        out.push(sqlite_value(raw, declared).map_err(|err| decode_error(name, declared, err))?);
    }
    Ok(out)
}

fn decode_error(column: &str, type_name: &str, err: impl std::fmt::Display) -> SqlError {
    SqlError::Decode {
        column: column.to_string(),
        type_name: type_name.to_string(),
        reason: err.to_string(),
    }
}

fn pg_value(raw: PgValueRef<'_>, type_info: &PgTypeInfo, column: &str) -> Result<Value, SqlError> {
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let type_name = type_info.name();
    let decoded = pg_known(raw.clone(), type_info);
    match decoded {
        Ok(Some(value)) => Ok(value),
        Ok(None) => match type_info.kind() {
            // A domain is sent in its base type's representation.
            PgTypeKind::Domain(base) => pg_value(raw, base, column),
            _ => Err(SqlError::UnsupportedType {
                column: column.to_string(),
                type_name: type_name.to_string(),
            }),
        },
        Err(err) => Err(decode_error(column, type_name, err)),
    }
}

/// The JSON form of a value of a type klsync knows, `None` for any other type.
fn pg_known(raw: PgValueRef<'_>, type_info: &PgTypeInfo) -> Result<Option<Value>, BoxDynError> {
    Ok(Some(match type_info.name() {
        "BOOL" => Value::Bool(dec::<bool>(raw)?),
        "INT2" => Value::from(dec::<i16>(raw)?),
        "INT4" => Value::from(dec::<i32>(raw)?),
        "INT8" => Value::from(dec::<i64>(raw)?),
        "OID" => Value::from(dec::<sqlx::postgres::types::Oid>(raw)?.0),
        "FLOAT4" => float4_to_json(dec::<f32>(raw)?),
        "FLOAT8" => float_to_json(dec::<f64>(raw)?),
        "NUMERIC" => numeric_to_json(&pg_numeric_to_string(raw.as_bytes()?)?),
        "TEXT" | "VARCHAR" | "CHAR" | "NAME" | "UNKNOWN" | "citext" | "CITEXT" => {
            Value::String(dec::<String>(raw)?)
        }
        "TIMESTAMPTZ" => Value::String(timestamptz_iso(dec::<DateTime<Utc>>(raw)?)),
        "TIMESTAMP" => Value::String(timestamp_iso(dec::<NaiveDateTime>(raw)?)),
        "DATE" => Value::String(date_iso(dec::<NaiveDate>(raw)?)),
        "TIME" => Value::String(time_iso(dec::<NaiveTime>(raw)?)),
        "JSON" | "JSONB" => dec::<sqlx::types::Json<Value>>(raw)?.0,
        "UUID" => Value::String(uuid::Uuid::from_slice(raw.as_bytes()?)?.to_string()),
        "BYTEA" => Value::String(bytes_hex(raw.as_bytes()?)),
        "BOOL[]" => array(dec::<Vec<Option<bool>>>(raw)?, Value::Bool),
        "INT2[]" => array(dec::<Vec<Option<i16>>>(raw)?, Value::from),
        "INT4[]" => array(dec::<Vec<Option<i32>>>(raw)?, Value::from),
        "INT8[]" => array(dec::<Vec<Option<i64>>>(raw)?, Value::from),
        "FLOAT4[]" => array(dec::<Vec<Option<f32>>>(raw)?, float4_to_json),
        "FLOAT8[]" => array(dec::<Vec<Option<f64>>>(raw)?, float_to_json),
        "TEXT[]" | "VARCHAR[]" | "CHAR[]" | "NAME[]" => {
            array(dec::<Vec<Option<String>>>(raw)?, Value::String)
        }
        _ => match type_info.kind() {
            // Enum labels travel as their text in both wire formats.
            PgTypeKind::Enum(_) => Value::String(raw.as_str()?.to_string()),
            _ => return Ok(None),
        },
    }))
}

fn dec<'r, T: Decode<'r, Postgres>>(raw: PgValueRef<'r>) -> Result<T, BoxDynError> {
    T::decode(raw)
}

fn array<T>(items: Vec<Option<T>>, convert: impl Fn(T) -> Value) -> Value {
    Value::Array(
        items
            .into_iter()
            .map(|item| item.map_or(Value::Null, &convert))
            .collect(),
    )
}

fn sqlite_value(raw: SqliteValueRef<'_>, declared: &str) -> Result<Value, BoxDynError> {
    if raw.is_null() {
        return Ok(Value::Null);
    }
    // The value's own storage class, not the declared type: SQLite lets any column hold any.
    let storage = raw.type_info().name().to_string();
    Ok(match storage.as_str() {
        "INTEGER" => {
            let int = <i64 as Decode<Sqlite>>::decode(raw)?;
            if declared == "BOOLEAN" && (int == 0 || int == 1) {
                Value::Bool(int == 1)
            } else {
                Value::from(int)
            }
        }
        "REAL" => float_to_json(<f64 as Decode<Sqlite>>::decode(raw)?),
        "BLOB" => Value::String(bytes_hex(&<Vec<u8> as Decode<Sqlite>>::decode(raw)?)),
        _ => {
            let text = <String as Decode<Sqlite>>::decode(raw)?;
            if declared == "DATETIME" {
                Value::String(sqlite_datetime_iso(&text).unwrap_or(text))
            } else {
                Value::String(text)
            }
        }
    })
}

/// SQLite's own datetime text (`2024-05-01 12:30:00`, optionally with fraction and offset) as
/// ISO 8601; `None` when the text is not a datetime SQLite would write.
fn sqlite_datetime_iso(text: &str) -> Option<String> {
    if let Ok(with_offset) = DateTime::parse_from_rfc3339(&text.replacen(' ', "T", 1)) {
        return Some(timestamptz_iso(with_offset.with_timezone(&Utc)));
    }
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f"))
        .ok()
        .map(timestamp_iso)
}

fn timestamptz_iso(value: DateTime<Utc>) -> String {
    value.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn timestamp_iso(value: NaiveDateTime) -> String {
    value.format("%Y-%m-%dT%H:%M:%S%.f").to_string()
}

fn date_iso(value: NaiveDate) -> String {
    value.format("%Y-%m-%d").to_string()
}

fn time_iso(value: NaiveTime) -> String {
    value.format("%H:%M:%S%.f").to_string()
}

/// `\x` followed by lowercase hex: PostgreSQL's own `bytea_output = hex` form, so the value
/// reads the same as in psql and cannot be mistaken for text.
fn bytes_hex(bytes: &[u8]) -> String {
    format!("\\x{}", hex::encode(bytes))
}

/// JSON has no NaN or infinities; PostgreSQL's spellings keep them visible instead of null.
fn float_to_json(value: f64) -> Value {
    match Number::from_f64(value) {
        Some(number) => Value::Number(number),
        None if value.is_nan() => Value::String("NaN".into()),
        None if value > 0.0 => Value::String("Infinity".into()),
        None => Value::String("-Infinity".into()),
    }
}

/// Widen through the shortest decimal form, so `0.1::float4` becomes `0.1`, not
/// `0.10000000149011612`.
fn float4_to_json(value: f32) -> Value {
    match value.to_string().parse::<f64>() {
        Ok(widened) => float_to_json(widened),
        Err(_) => float_to_json(f64::from(value)),
    }
}

/// A NUMERIC's exact decimal text as JSON: an integer when it fits `i64`, a float when the
/// float's shortest form has exactly the same digits (trailing fraction zeros aside), otherwise
/// the decimal text as a string, so no precision is ever lost silently. `NaN` and the
/// infinities stay strings.
pub(crate) fn numeric_to_json(text: &str) -> Value {
    let normalized = normalize_decimal(text);
    if !normalized.contains('.') {
        if let Ok(int) = normalized.parse::<i64>() {
            return Value::from(int);
        }
    }
    if let Ok(float) = normalized.parse::<f64>() {
        if float.is_finite() && normalize_decimal(&float.to_string()) == normalized {
            if let Some(number) = Number::from_f64(float) {
                return Value::Number(number);
            }
        }
    }
    Value::String(text.to_string())
}

/// Strip trailing fraction zeros (and a bare `.`), and turn `-0` into `0`.
fn normalize_decimal(text: &str) -> String {
    let mut out = text.to_string();
    if out.contains('.') {
        let kept = out.trim_end_matches('0').trim_end_matches('.').len();
        out.truncate(kept);
    }
    if out == "-0" {
        out = "0".into();
    }
    out
}

/// Render PostgreSQL's binary NUMERIC (base-10000 digits, weight, sign, display scale) as exact
/// decimal text, the way PostgreSQL prints it. sqlx only decodes NUMERIC through the optional
/// `rust_decimal`/`bigdecimal` features; this avoids a dependency for thirty lines.
pub(crate) fn pg_numeric_to_string(buf: &[u8]) -> Result<String, BoxDynError> {
    const SIGN_POS: u16 = 0x0000;
    const SIGN_NEG: u16 = 0x4000;
    const SIGN_NAN: u16 = 0xC000;
    const SIGN_PINF: u16 = 0xD000;
    const SIGN_NINF: u16 = 0xF000;
    let word = |at: usize| -> Result<u16, BoxDynError> {
        buf.get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "truncated NUMERIC".into())
    };
    let ndigits = usize::from(word(0)?);
    let weight = i32::from(word(2)? as i16);
    let sign = word(4)?;
    let dscale = usize::from(word(6)?);
    match sign {
        SIGN_NAN => return Ok("NaN".into()),
        SIGN_PINF => return Ok("Infinity".into()),
        SIGN_NINF => return Ok("-Infinity".into()),
        SIGN_POS | SIGN_NEG => {}
        other => return Err(format!("invalid NUMERIC sign {other:#06x}").into()),
    }
    let digits = (0..ndigits)
        .map(|i| {
            let digit = word(8 + 2 * i)?;
            if digit >= 10_000 {
                return Err(format!("invalid NUMERIC digit {digit}").into());
            }
            Ok(digit)
        })
        .collect::<Result<Vec<u16>, BoxDynError>>()?;
    // Digit group `i` (0-based) has place value 10000^(weight - i).
    let group = |i: i32| -> u16 {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i).copied())
            .unwrap_or(0)
    };
    let mut out = String::new();
    if sign == SIGN_NEG && digits.iter().any(|&d| d != 0) {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        out.push_str(&group(0).to_string());
        for i in 1..=weight {
            out.push_str(&format!("{:04}", group(i)));
        }
    }
    if dscale > 0 {
        let mut fraction = String::new();
        let mut i = weight + 1;
        while fraction.len() < dscale {
            fraction.push_str(&format!("{:04}", group(i)));
            i += 1;
        }
        fraction.truncate(dscale);
        out.push('.');
        out.push_str(&fraction);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn numeric_bytes(weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut buf = Vec::new();
        buf.extend((digits.len() as u16).to_be_bytes());
        buf.extend(weight.to_be_bytes());
        buf.extend(sign.to_be_bytes());
        buf.extend(dscale.to_be_bytes());
        for d in digits {
            buf.extend(d.to_be_bytes());
        }
        buf
    }

    #[test]
    fn numeric_binary_renders_like_postgres() {
        // 12345.6789 = [1, 2345, 6789] with weight 1.
        let text = pg_numeric_to_string(&numeric_bytes(1, 0, 4, &[1, 2345, 6789])).unwrap();
        assert_eq!(text, "12345.6789");
        // -0.0042 = [42] with weight -1 (0.0042 = 42 * 10000^-1), scale 4.
        let text = pg_numeric_to_string(&numeric_bytes(-1, 0x4000, 4, &[42])).unwrap();
        assert_eq!(text, "-0.0042");
        // 10000000000 = [100, 0, 0] with weight 2, trailing zero groups omitted on the wire.
        let text = pg_numeric_to_string(&numeric_bytes(2, 0, 0, &[100])).unwrap();
        assert_eq!(text, "10000000000");
        // 1.50 with display scale 2 keeps its trailing zero.
        let text = pg_numeric_to_string(&numeric_bytes(0, 0, 2, &[1, 5000])).unwrap();
        assert_eq!(text, "1.50");
        // Zero has no digits at all.
        assert_eq!(
            pg_numeric_to_string(&numeric_bytes(0, 0, 0, &[])).unwrap(),
            "0"
        );
        assert_eq!(
            pg_numeric_to_string(&numeric_bytes(0, 0xC000, 0, &[])).unwrap(),
            "NaN"
        );
        assert!(pg_numeric_to_string(&[0, 1]).is_err());
        assert!(pg_numeric_to_string(&numeric_bytes(0, 0, 0, &[10_000])).is_err());
    }

    #[test]
    fn numeric_becomes_a_number_only_when_exact() {
        assert_eq!(numeric_to_json("42"), json!(42));
        assert_eq!(numeric_to_json("42.000"), json!(42));
        assert_eq!(numeric_to_json("12.50"), json!(12.5));
        assert_eq!(numeric_to_json("-0.1"), json!(-0.1));
        // Too many digits for f64 or i64: the exact text survives as a string.
        assert_eq!(
            numeric_to_json("12345678901234567890.123"),
            json!("12345678901234567890.123")
        );
        assert_eq!(
            numeric_to_json("99999999999999999999"),
            json!("99999999999999999999")
        );
        assert_eq!(
            numeric_to_json("0.1000000000000000055511"),
            json!("0.1000000000000000055511")
        );
        assert_eq!(numeric_to_json("NaN"), json!("NaN"));
    }

    #[test]
    fn floats_keep_their_shortest_form_and_name_non_finite_values() {
        assert_eq!(float4_to_json(0.1), json!(0.1));
        assert_eq!(float_to_json(f64::NAN), json!("NaN"));
        assert_eq!(float_to_json(f64::NEG_INFINITY), json!("-Infinity"));
        assert_eq!(bytes_hex(&[0xde, 0xad, 0x01]), "\\xdead01");
    }

    #[test]
    fn sqlite_datetime_text_becomes_iso_8601() {
        assert_eq!(
            sqlite_datetime_iso("2024-05-01 12:30:00").as_deref(),
            Some("2024-05-01T12:30:00")
        );
        assert_eq!(
            sqlite_datetime_iso("2024-05-01 12:30:00.250").as_deref(),
            Some("2024-05-01T12:30:00.250")
        );
        assert_eq!(
            sqlite_datetime_iso("2024-05-01 12:30:00+02:00").as_deref(),
            Some("2024-05-01T10:30:00Z")
        );
        assert_eq!(sqlite_datetime_iso("next tuesday"), None);
    }
}
