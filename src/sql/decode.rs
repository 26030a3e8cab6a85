//! Turning result rows into JSON values, faithfully typed.
//!
//! PostgreSQL values are decoded by column type:
//!
//! | column type                                  | JSON                                          |
//! |----------------------------------------------|-----------------------------------------------|
//! | `int2`, `int4`, `int8`, `oid`                | number                                        |
//! | `float4`, `float8`                           | number; `NaN`/`Infinity`/`-Infinity` refused  |
//! | `numeric`                                    | number when exact (see [`numeric_to_json`]), else string; `NaN`/infinities refused |
//! | `text`, `varchar`, `char`, `name`, `citext`, enums | string                                  |
//! | `bool`                                       | `true` / `false`                              |
//! | `timestamptz`                                | ISO 8601 in UTC: `2024-05-01T12:30:00Z`       |
//! | `timestamp`, `date`, `time`                  | ISO 8601 without offset                       |
//! | infinite `timestamp[tz]`, `date`             | `"infinity"` / `"-infinity"`                  |
//! | `json`, `jsonb`                              | the JSON value itself                         |
//! | `uuid`                                       | hyphenated string                             |
//! | `bytea`                                      | `\x` + lowercase hex, as PostgreSQL prints it |
//! | one-dimensional arrays of the types above    | arrays                                        |
//! | domains                                      | as their base type                            |
//! | NULL                                         | `null`                                        |
//!
//! Other types are an error naming the column and suggesting a cast, rather than a guess.
//!
//! JSON has no NaN and no infinities. Spelling them as strings would change a numeric property's
//! type in Klaviyo (a segment on `ltv > 100` stops matching) and `null` would lose the value, so
//! they are an error (see [`NON_FINITE`]): the query says what it means, with `NULLIF(x, 'NaN')`
//! or a cast to text.
//!
//! SQLite values are decoded by their storage class (SQLite's types are per value): INTEGER →
//! number (or `true`/`false` when the column is declared `BOOLEAN`), REAL → number (infinities
//! refused as above; SQLite itself stores NaN as NULL), TEXT → string
//! (normalised to ISO 8601 when the column is declared `DATETIME`/`TIMESTAMP` and the text parses
//! as one), BLOB → `\x` hex, NULL → `null`. SQLite has no JSON type, so JSON kept in TEXT stays a
//! string.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, Utc};
use serde_json::{Number, Value};
use sqlx::postgres::{PgRow, PgTypeInfo, PgTypeKind, PgValueFormat};
use sqlx::sqlite::{SqliteRow, SqliteValueRef};
use sqlx::{Column, Decode, Row as _, Sqlite, TypeInfo, ValueRef};

use super::error::SqlError;

type BoxDynError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The column names of a row, checked to be distinct (a row is keyed by them).
pub(crate) fn column_names<R: sqlx::Row>(row: &R) -> Result<Vec<String>, SqlError> {
    distinct_names(row.columns().iter().map(Column::name))
}

pub(crate) fn distinct_names<'a>(
    names: impl Iterator<Item = &'a str>,
) -> Result<Vec<String>, SqlError> {
    let mut distinct: Vec<String> = Vec::new();
    for name in names {
        if distinct.iter().any(|seen| seen == name) {
            return Err(SqlError::DuplicateColumn {
                column: name.to_string(),
            });
        }
        distinct.push(name.to_string());
    }
    Ok(distinct)
}

/// How the values of one PostgreSQL result column become JSON: resolved once per column from
/// its type, then applied to each value's binary wire form. Rows read through sqlx and rows
/// read through `COPY ... (FORMAT binary)` carry values in the same binary representation, and
/// both go through [`PgColumn::value`], so the two paths cannot disagree on a value (row hashes
/// depend on it).
#[derive(Debug, Clone)]
pub(crate) struct PgColumn {
    name: String,
    type_name: String,
    kind: PgKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PgKind {
    Scalar(Scalar),
    /// A one-dimensional array of a known scalar type.
    Array(Scalar),
    /// A type klsync does not convert: an error for any non-null value.
    Unsupported,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scalar {
    Bool,
    Int2,
    Int4,
    Int8,
    Oid,
    Float4,
    Float8,
    Numeric,
    Text,
    TimestampTz,
    Timestamp,
    Date,
    Time,
    Json,
    Jsonb,
    Uuid,
    Bytea,
}

impl PgColumn {
    /// The decoder of a column called `name` of type `type_info`.
    pub(crate) fn new(name: &str, type_info: &PgTypeInfo) -> PgColumn {
        let kind = match scalar_of(type_info) {
            Some(scalar) => PgKind::Scalar(scalar),
            None => match type_info.kind() {
                PgTypeKind::Array(element) => {
                    scalar_of(element).map_or(PgKind::Unsupported, PgKind::Array)
                }
                _ => PgKind::Unsupported,
            },
        };
        PgColumn {
            name: name.to_string(),
            type_name: type_info.name().to_string(),
            kind,
        }
    }

    /// The column's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The JSON form of one value in binary wire format (`None`: SQL NULL).
    pub(crate) fn value(&self, bytes: Option<&[u8]>) -> Result<Value, SqlError> {
        let Some(bytes) = bytes else {
            return Ok(Value::Null);
        };
        let decoded = match self.kind {
            PgKind::Scalar(scalar) => scalar_value(scalar, bytes),
            PgKind::Array(element) => array_value(element, bytes),
            PgKind::Unsupported => {
                return Err(SqlError::UnsupportedType {
                    column: self.name.clone(),
                    type_name: self.type_name.clone(),
                });
            }
        };
        decoded.map_err(|err| decode_error(&self.name, &self.type_name, err))
    }
}

impl super::batch::FieldDecoder for PgColumn {
    fn is_text(&self) -> bool {
        self.kind == PgKind::Scalar(Scalar::Text)
    }

    fn write_plain_json(&self, bytes: &[u8], out: &mut Vec<u8>) -> Result<bool, SqlError> {
        let failed = |err: BoxDynError| decode_error(&self.name, &self.type_name, err);
        let PgKind::Scalar(scalar) = self.kind else {
            return Ok(false);
        };
        let written = match scalar {
            Scalar::Int2 => serde_json::to_writer(
                &mut *out,
                &i16::from_be_bytes(exact(bytes).map_err(failed)?),
            ),
            Scalar::Int4 => serde_json::to_writer(
                &mut *out,
                &i32::from_be_bytes(exact(bytes).map_err(failed)?),
            ),
            Scalar::Int8 => serde_json::to_writer(
                &mut *out,
                &i64::from_be_bytes(exact(bytes).map_err(failed)?),
            ),
            Scalar::Oid => serde_json::to_writer(
                &mut *out,
                &u32::from_be_bytes(exact(bytes).map_err(failed)?),
            ),
            Scalar::Bool => {
                serde_json::to_writer(&mut *out, &(exact::<1>(bytes).map_err(failed)?[0] != 0))
            }
            _ => return Ok(false),
        };
        written.expect("scalars serialize");
        Ok(true)
    }

    fn undecodable(&self, reason: &dyn std::fmt::Display) -> SqlError {
        decode_error(&self.name, &self.type_name, reason)
    }
}

/// The decoders of a result's columns, checked to have distinct names.
pub(crate) fn pg_columns<'a>(
    columns: impl Iterator<Item = (&'a str, &'a PgTypeInfo)>,
) -> Result<Vec<PgColumn>, SqlError> {
    let columns: Vec<PgColumn> = columns
        .map(|(name, type_info)| PgColumn::new(name, type_info))
        .collect();
    distinct_names(columns.iter().map(PgColumn::name))?;
    Ok(columns)
}

/// One decoded value, or why this value could not be decoded ([`SqlError::Decode`]): a NaN, a
/// JSON document nested too deep. Such a failure belongs to its row (a sync refuses that row
/// and carries the others), unlike a column of a type klsync does not convert, which fails the
/// whole query.
pub(crate) type Cell = Result<Value, SqlError>;

/// The values of one PostgreSQL row, in column order (see the table above). `columns` are the
/// row's own, from [`pg_columns`].
pub(crate) fn pg_values(row: &PgRow, columns: &[PgColumn]) -> Result<Vec<Cell>, SqlError> {
    let mut out = Vec::with_capacity(columns.len());
    for (index, column) in columns.iter().enumerate() {
        let raw = row
            .try_get_raw(index)
            .map_err(|err| decode_error(&column.name, &column.type_name, err))?;
        if raw.format() != PgValueFormat::Binary {
            // sqlx asks for every result column in binary; text would be misread below.
            return Err(decode_error(
                &column.name,
                &column.type_name,
                "value sent as text",
            ));
        }
        let bytes = if raw.is_null() {
            None
        } else {
            Some(
                raw.as_bytes()
                    .map_err(|err| decode_error(&column.name, &column.type_name, err))?,
            )
        };
        match column.value(bytes) {
            Err(unsupported @ SqlError::UnsupportedType { .. }) => return Err(unsupported),
            cell => out.push(cell),
        }
    }
    Ok(out)
}

/// The values of one SQLite row, in column order (by storage class, see above).
pub(crate) fn sqlite_values(row: &SqliteRow) -> Vec<Cell> {
    let mut out = Vec::with_capacity(row.len());
    for (index, column) in row.columns().iter().enumerate() {
        let name = column.name();
        let declared = column.type_info().name();
        out.push(
            row.try_get_raw(index)
                .map_err(BoxDynError::from)
                .and_then(|raw| sqlite_value(raw, declared))
                .map_err(|err| decode_error(name, declared, err)),
        );
    }
    out
}

pub(crate) fn decode_error(column: &str, type_name: &str, err: impl std::fmt::Display) -> SqlError {
    SqlError::Decode {
        column: column.to_string(),
        type_name: type_name.to_string(),
        reason: err.to_string(),
    }
}

/// The scalar a type is converted as: by name for built-in types, enums as their label text,
/// domains as their base type (a domain's values travel in its base type's representation).
fn scalar_of(type_info: &PgTypeInfo) -> Option<Scalar> {
    Some(match type_info.name() {
        "BOOL" => Scalar::Bool,
        "INT2" => Scalar::Int2,
        "INT4" => Scalar::Int4,
        "INT8" => Scalar::Int8,
        "OID" => Scalar::Oid,
        "FLOAT4" => Scalar::Float4,
        "FLOAT8" => Scalar::Float8,
        "NUMERIC" => Scalar::Numeric,
        "TEXT" | "VARCHAR" | "CHAR" | "NAME" | "UNKNOWN" | "citext" | "CITEXT" => Scalar::Text,
        "TIMESTAMPTZ" => Scalar::TimestampTz,
        "TIMESTAMP" => Scalar::Timestamp,
        "DATE" => Scalar::Date,
        "TIME" => Scalar::Time,
        "JSON" => Scalar::Json,
        "JSONB" => Scalar::Jsonb,
        "UUID" => Scalar::Uuid,
        "BYTEA" => Scalar::Bytea,
        _ => match type_info.kind() {
            // Enum labels travel as their text.
            PgTypeKind::Enum(_) => Scalar::Text,
            PgTypeKind::Domain(base) => return scalar_of(base),
            _ => return None,
        },
    })
}

/// A cursor over PostgreSQL's binary wire format (big-endian integers, length-prefixed fields).
pub(crate) struct WireReader<'a> {
    bytes: &'a [u8],
}

impl<'a> WireReader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        WireReader { bytes }
    }

    /// Bytes not read yet.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.bytes
    }

    pub(crate) fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < count {
            return None;
        }
        let (taken, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Some(taken)
    }

    pub(crate) fn i16(&mut self) -> Option<i16> {
        self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn i32(&mut self) -> Option<i32> {
        self.take(4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A length-prefixed field: `Some(None)` for NULL (length -1), `None` when truncated.
    pub(crate) fn field(&mut self) -> Option<Option<&'a [u8]>> {
        let length = self.i32()?;
        if length < 0 {
            return Some(None);
        }
        self.take(usize::try_from(length).ok()?).map(Some)
    }
}

fn exact<const N: usize>(bytes: &[u8]) -> Result<[u8; N], BoxDynError> {
    bytes
        .try_into()
        .map_err(|_| format!("expected {N} bytes, got {}", bytes.len()).into())
}

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 00:00:00 UTC).
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

fn pg_timestamp(micros: i64) -> Result<Option<NaiveDateTime>, BoxDynError> {
    // i64::MIN / i64::MAX are -infinity / infinity.
    if micros == i64::MIN || micros == i64::MAX {
        return Ok(None);
    }
    micros
        .checked_add(PG_EPOCH_UNIX_MICROS)
        .and_then(DateTime::from_timestamp_micros)
        .map(|at| Some(at.naive_utc()))
        .ok_or_else(|| "timestamp out of range".into())
}

fn infinity(positive: bool) -> Value {
    Value::String(if positive { "infinity" } else { "-infinity" }.into())
}

fn scalar_value(scalar: Scalar, bytes: &[u8]) -> Result<Value, BoxDynError> {
    Ok(match scalar {
        Scalar::Bool => Value::Bool(exact::<1>(bytes)?[0] != 0),
        Scalar::Int2 => Value::from(i16::from_be_bytes(exact(bytes)?)),
        Scalar::Int4 => Value::from(i32::from_be_bytes(exact(bytes)?)),
        Scalar::Int8 => Value::from(i64::from_be_bytes(exact(bytes)?)),
        Scalar::Oid => Value::from(u32::from_be_bytes(exact(bytes)?)),
        Scalar::Float4 => float4_to_json(f32::from_be_bytes(exact(bytes)?))?,
        Scalar::Float8 => float_to_json(f64::from_be_bytes(exact(bytes)?))?,
        Scalar::Numeric => numeric_to_json(&pg_numeric_to_string(bytes)?)?,
        Scalar::Text => Value::String(std::str::from_utf8(bytes)?.to_owned()),
        Scalar::TimestampTz | Scalar::Timestamp => {
            let micros = i64::from_be_bytes(exact(bytes)?);
            match pg_timestamp(micros)? {
                None => infinity(micros > 0),
                Some(at) if scalar == Scalar::TimestampTz => {
                    Value::String(timestamptz_iso(at.and_utc()))
                }
                Some(at) => Value::String(timestamp_iso(at)),
            }
        }
        Scalar::Date => {
            let days = i32::from_be_bytes(exact(bytes)?);
            if days == i32::MIN || days == i32::MAX {
                infinity(days > 0)
            } else {
                let epoch = NaiveDate::from_ymd_opt(2000, 1, 1).expect("a valid date");
                let date = epoch
                    .checked_add_signed(chrono::TimeDelta::days(i64::from(days)))
                    .ok_or("date out of range")?;
                Value::String(date_iso(date))
            }
        }
        Scalar::Time => {
            let micros = i64::from_be_bytes(exact(bytes)?);
            let seconds = u32::try_from(micros.div_euclid(1_000_000))?;
            let nanos = u32::try_from(micros.rem_euclid(1_000_000) * 1_000)?;
            let time = NaiveTime::from_num_seconds_from_midnight_opt(seconds, nanos)
                .ok_or("time out of range")?;
            Value::String(time_iso(time))
        }
        Scalar::Json => serde_json::from_slice(bytes)?,
        Scalar::Jsonb => match bytes.split_first() {
            Some((1, text)) => serde_json::from_slice(text)?,
            _ => return Err("unknown jsonb format version".into()),
        },
        Scalar::Uuid => Value::String(uuid::Uuid::from_slice(bytes)?.to_string()),
        Scalar::Bytea => Value::String(bytes_hex(bytes)),
    })
}

/// A binary array: dimensions, a null flag, the element type, per dimension its length and
/// lower bound, then length-prefixed elements. Only one dimension is converted.
fn array_value(element: Scalar, bytes: &[u8]) -> Result<Value, BoxDynError> {
    let truncated = || -> BoxDynError { "truncated array".into() };
    let mut reader = WireReader::new(bytes);
    let dimensions = reader.i32().ok_or_else(truncated)?;
    let _has_nulls = reader.i32().ok_or_else(truncated)?;
    let _element_type = reader.i32().ok_or_else(truncated)?;
    if dimensions == 0 {
        return Ok(Value::Array(Vec::new()));
    }
    if dimensions != 1 {
        return Err(format!(
            "{dimensions}-dimensional arrays are not converted; select to_json(...) of it instead"
        )
        .into());
    }
    let length = reader.i32().ok_or_else(truncated)?;
    let _lower_bound = reader.i32().ok_or_else(truncated)?;
    let length = usize::try_from(length)?;
    let mut items = Vec::with_capacity(length.min(reader.rest().len() / 4));
    for _ in 0..length {
        items.push(match reader.field().ok_or_else(truncated)? {
            None => Value::Null,
            Some(item) => scalar_value(element, item)?,
        });
    }
    Ok(Value::Array(items))
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
        "REAL" => float_to_json(<f64 as Decode<Sqlite>>::decode(raw)?)?,
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

pub(crate) fn timestamptz_iso(value: DateTime<Utc>) -> String {
    value.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

pub(crate) fn timestamp_iso(value: NaiveDateTime) -> String {
    value.format("%Y-%m-%dT%H:%M:%S%.f").to_string()
}

pub(crate) fn date_iso(value: NaiveDate) -> String {
    value.format("%Y-%m-%d").to_string()
}

pub(crate) fn time_iso(value: NaiveTime) -> String {
    value.format("%H:%M:%S%.f").to_string()
}

/// `\x` followed by lowercase hex: PostgreSQL's own `bytea_output = hex` form, so the value
/// reads the same as in psql and cannot be mistaken for text.
pub(crate) fn bytes_hex(bytes: &[u8]) -> String {
    format!("\\x{}", hex::encode(bytes))
}

/// What to do about a NaN or an infinity, after "the value is NaN" (see the module docs).
pub(crate) const NON_FINITE: &str = "JSON has no such number, so Klaviyo cannot hold it as one; \
    map it in the query: `NULLIF(col, 'NaN')` (a null leaves the property as it is), \
    `CASE ... END` to a finite number, or `col::text` to send the text";

fn non_finite(spelling: &str) -> BoxDynError {
    format!("the value is {spelling}: {NON_FINITE}").into()
}

/// A float as a JSON number; NaN and the infinities are refused (see [`NON_FINITE`]).
pub(crate) fn float_to_json(value: f64) -> Result<Value, BoxDynError> {
    match Number::from_f64(value) {
        Some(number) => Ok(Value::Number(number)),
        None if value.is_nan() => Err(non_finite("NaN")),
        None if value > 0.0 => Err(non_finite("Infinity")),
        None => Err(non_finite("-Infinity")),
    }
}

/// Widen through the shortest decimal form, so `0.1::float4` becomes `0.1`, not
/// `0.10000000149011612`.
pub(crate) fn float4_to_json(value: f32) -> Result<Value, BoxDynError> {
    match value.to_string().parse::<f64>() {
        Ok(widened) => float_to_json(widened),
        Err(_) => float_to_json(f64::from(value)),
    }
}

/// A NUMERIC's exact decimal text as JSON: an integer when it fits `i64`, a float when the
/// float's shortest form has exactly the same digits (trailing fraction zeros aside), otherwise
/// the decimal text as a string, so no precision is ever lost silently. `NaN` and the
/// infinities are refused (see [`NON_FINITE`]).
pub(crate) fn numeric_to_json(text: &str) -> Result<Value, BoxDynError> {
    if matches!(text, "NaN" | "Infinity" | "-Infinity") {
        return Err(non_finite(text));
    }
    let normalized = normalize_decimal(text);
    if !normalized.contains('.') {
        if let Ok(int) = normalized.parse::<i64>() {
            return Ok(Value::from(int));
        }
    }
    if let Ok(float) = normalized.parse::<f64>() {
        if float.is_finite() && normalize_decimal(&float.to_string()) == normalized {
            if let Some(number) = Number::from_f64(float) {
                return Ok(Value::Number(number));
            }
        }
    }
    Ok(Value::String(text.to_string()))
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
        let numeric_to_json = |text: &str| super::numeric_to_json(text).unwrap();
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
    }

    /// NaN and the infinities have no JSON number: refused, naming the value and the fixes,
    /// never sent as a string or as null.
    #[test]
    fn non_finite_numbers_are_refused_with_what_to_do() {
        for (result, spelling) in [
            (float_to_json(f64::NAN), "NaN"),
            (float_to_json(f64::INFINITY), "Infinity"),
            (float_to_json(f64::NEG_INFINITY), "-Infinity"),
            (float4_to_json(f32::NAN), "NaN"),
            (numeric_to_json("NaN"), "NaN"),
            (numeric_to_json("Infinity"), "Infinity"),
            (numeric_to_json("-Infinity"), "-Infinity"),
        ] {
            let message = result.unwrap_err().to_string();
            assert!(
                message.starts_with(&format!("the value is {spelling}: ")),
                "{message}"
            );
            assert!(message.contains("NULLIF(col, 'NaN')"), "{message}");
        }
        // Text that spells them is text.
        let text = scalar_value(Scalar::Text, b"NaN").unwrap();
        assert_eq!(text, json!("NaN"));
    }

    #[test]
    fn floats_keep_their_shortest_form() {
        assert_eq!(float4_to_json(0.1).unwrap(), json!(0.1));
        assert_eq!(float_to_json(-0.0).unwrap(), json!(-0.0));
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
