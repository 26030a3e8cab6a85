//! [`RowBatch`]: consecutive result rows by column position, for consumers that read millions
//! of rows and want as little work per row as possible.
//!
//! Rows read through PostgreSQL's `COPY`, and MySQL's rows, stay in their binary wire form, all
//! of a batch's fields in one buffer, and a value is decoded only when asked for: a no-op plan
//! of a million rows then allocates nothing per row for values it only hashes. Either way a value comes out
//! exactly as in a [`Row`] (same decoder), and [`RowRef::write_scalar_json`] writes the JSON
//! text serde_json would write for that value.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::Value;

use super::decode::PgColumn;
use super::mysql::MySqlColumn;
use super::{Row, SqlError};

/// Consecutive result rows of a query ([`super::QueryManager::execute_query_batches`]).
#[derive(Debug, Clone)]
pub struct RowBatch {
    /// The column names, in order (distinct).
    pub columns: Arc<[String]>,
    rows: BatchRows,
}

#[derive(Debug, Clone)]
enum BatchRows {
    /// Decoded values (SQLite, and PostgreSQL rows read row by row); a value that could not be
    /// decoded is a null in `rows` and its error in `undecodable`, so that it fails only where
    /// it is read, as a `COPY` row's does.
    Values {
        rows: Vec<Vec<Value>>,
        /// Sorted by row, then column.
        undecodable: Vec<Undecodable>,
    },
    /// PostgreSQL `COPY` rows, or MySQL rows, in binary wire form.
    Binary(BinaryRows),
}

/// How the fields of binary rows are decoded: per column, by its database's decoder.
#[derive(Debug, Clone)]
pub(crate) enum Decoders {
    /// `COPY (FORMAT binary)` fields.
    Pg(Arc<[PgColumn]>),
    /// Values of MySQL's binary protocol (prepared statements).
    MySql(Arc<[MySqlColumn]>),
}

impl Decoders {
    fn len(&self) -> usize {
        match self {
            Decoders::Pg(columns) => columns.len(),
            Decoders::MySql(columns) => columns.len(),
        }
    }

    fn column(&self, column: usize) -> Column<'_> {
        match self {
            Decoders::Pg(columns) => Column::Pg(&columns[column]),
            Decoders::MySql(columns) => Column::MySql(&columns[column]),
        }
    }
}

impl From<Arc<[PgColumn]>> for Decoders {
    fn from(columns: Arc<[PgColumn]>) -> Self {
        Decoders::Pg(columns)
    }
}

impl From<Arc<[MySqlColumn]>> for Decoders {
    fn from(columns: Arc<[MySqlColumn]>) -> Self {
        Decoders::MySql(columns)
    }
}

/// One column's decoder.
#[derive(Clone, Copy)]
enum Column<'a> {
    Pg(&'a PgColumn),
    MySql(&'a MySqlColumn),
}

impl Column<'_> {
    fn value(self, bytes: Option<&[u8]>) -> Result<Value, SqlError> {
        match self {
            Column::Pg(column) => column.value(bytes),
            Column::MySql(column) => column.value(bytes),
        }
    }

    fn text(self, bytes: Option<&[u8]>) -> Result<Option<&str>, SqlError> {
        match self {
            Column::Pg(column) => text_field(column, bytes),
            Column::MySql(column) => text_field(column, bytes),
        }
    }

    fn write_scalar_json(self, bytes: Option<&[u8]>, out: &mut Vec<u8>) -> Result<bool, SqlError> {
        match self {
            Column::Pg(column) => scalar_json(column, bytes, out),
            Column::MySql(column) => scalar_json(column, bytes, out),
        }
    }
}

/// What a database's decoder of binary fields (PostgreSQL's `COPY`, MySQL's binary protocol)
/// tells the batch, beyond a field's JSON value: reading text and writing plain JSON straight
/// from the bytes is then one piece of code for both.
pub(crate) trait FieldDecoder {
    /// Whether the column holds text (its fields are UTF-8).
    fn is_text(&self) -> bool;
    /// Write the JSON of a non-NULL boolean or integer field exactly as serde_json writes the
    /// field's JSON value; `false` (nothing written) for other types.
    fn write_plain_json(&self, bytes: &[u8], out: &mut Vec<u8>) -> Result<bool, SqlError>;
    /// A field of this column that cannot be decoded.
    fn undecodable(&self, reason: &dyn std::fmt::Display) -> SqlError;
}

/// A text field borrowed from its bytes (`None`: NULL, or not a text column).
fn text_field<'b>(
    column: &impl FieldDecoder,
    bytes: Option<&'b [u8]>,
) -> Result<Option<&'b str>, SqlError> {
    match bytes {
        Some(bytes) if column.is_text() => std::str::from_utf8(bytes)
            .map(Some)
            .map_err(|err| column.undecodable(&err)),
        _ => Ok(None),
    }
}

/// Write the JSON of a NULL, boolean, integer or text field straight from its bytes; `false`
/// (nothing written) for other types.
fn scalar_json(
    column: &impl FieldDecoder,
    bytes: Option<&[u8]>,
    out: &mut Vec<u8>,
) -> Result<bool, SqlError> {
    let Some(bytes) = bytes else {
        out.extend_from_slice(b"null");
        return Ok(true);
    };
    if column.is_text() && plain_json_text(bytes) {
        // What serde_json writes for such text, without checking UTF-8 and scanning for
        // escapes byte by byte (a plan hashes a million of them).
        out.push(b'"');
        out.extend_from_slice(bytes);
        out.push(b'"');
        return Ok(true);
    }
    match text_field(column, Some(bytes))? {
        Some(text) => {
            serde_json::to_writer(&mut *out, text).expect("strings serialize");
            Ok(true)
        }
        None => column.write_plain_json(bytes, out),
    }
}

/// Whether `bytes` are printable ASCII other than `"` and `\`: text JSON writes as it is, between
/// quotes. One scan without early exits, which the compiler vectorises.
fn plain_json_text(bytes: &[u8]) -> bool {
    bytes.iter().fold(true, |plain, &byte| {
        plain & (b' '..=b'~').contains(&byte) & (byte != b'"') & (byte != b'\\')
    })
}

/// Rows as the database sent them in binary form: every field's bytes in one buffer.
#[derive(Debug, Clone)]
pub(crate) struct BinaryRows {
    decoders: Decoders,
    data: Vec<u8>,
    /// Per row, per column, the field's range in `data` (`None`: NULL).
    fields: Vec<Option<(u32, u32)>>,
}

impl BinaryRows {
    pub(crate) fn new(decoders: impl Into<Decoders>, rows: usize) -> Self {
        let decoders = decoders.into();
        let width = decoders.len();
        BinaryRows {
            decoders,
            data: Vec::with_capacity(rows * 64),
            fields: Vec::with_capacity(rows * width),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.fields.len() / self.decoders.len().max(1)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Append one row's fields (one per column, in order).
    pub(crate) fn push<'b>(&mut self, fields: impl Iterator<Item = Option<&'b [u8]>>) {
        for field in fields {
            self.fields.push(field.map(|bytes| {
                let start = self.data.len() as u32;
                self.data.extend_from_slice(bytes);
                (start, self.data.len() as u32)
            }));
        }
    }
}

/// A value of a decoded row that could not be decoded: its place and its [`SqlError::Decode`].
#[derive(Debug, Clone)]
pub(crate) struct Undecodable {
    row: usize,
    column: usize,
    type_name: String,
    reason: String,
}

impl Undecodable {
    /// The failure of the value at `row` (in its batch) and `column`; an error other than a
    /// value's own ([`SqlError::Decode`]) is returned as it is, for the whole query.
    pub(crate) fn new(row: usize, column: usize, error: SqlError) -> Result<Self, SqlError> {
        match error {
            SqlError::Decode {
                type_name, reason, ..
            } => Ok(Undecodable {
                row,
                column,
                type_name,
                reason,
            }),
            other => Err(other),
        }
    }

    fn error(&self, columns: &[String]) -> SqlError {
        SqlError::Decode {
            column: columns[self.column].clone(),
            type_name: self.type_name.clone(),
            reason: self.reason.clone(),
        }
    }
}

impl RowBatch {
    /// A batch of decoded values, with the values that could not be decoded (sorted by row,
    /// then column).
    pub(crate) fn from_values(
        columns: Arc<[String]>,
        rows: Vec<Vec<Value>>,
        undecodable: Vec<Undecodable>,
    ) -> Self {
        RowBatch {
            columns,
            rows: BatchRows::Values { rows, undecodable },
        }
    }

    /// A batch of binary `COPY` rows.
    pub(crate) fn from_binary(columns: Arc<[String]>, rows: BinaryRows) -> Self {
        RowBatch {
            columns,
            rows: BatchRows::Binary(rows),
        }
    }

    /// Rows in the batch.
    pub fn len(&self) -> usize {
        match &self.rows {
            BatchRows::Values { rows, .. } => rows.len(),
            BatchRows::Binary(rows) => rows.len(),
        }
    }

    /// About how many bytes the batch holds (its buffers; decoded values are estimated).
    pub fn memory(&self) -> usize {
        match &self.rows {
            BatchRows::Values { rows, .. } => rows.iter().map(|row| 64 + row.len() * 48).sum(),
            BatchRows::Binary(rows) => {
                rows.data.capacity() + rows.fields.capacity() * size_of::<Option<(u32, u32)>>()
            }
        }
    }

    /// Whether the batch has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The row at `index` (0-based, `< len()`).
    pub fn row(&self, index: usize) -> RowRef<'_> {
        RowRef { batch: self, index }
    }

    /// Every row, in order.
    pub fn rows(&self) -> impl Iterator<Item = RowRef<'_>> {
        (0..self.len()).map(|index| self.row(index))
    }

    /// Every row's values, decoded, in column order (the first value that cannot be decoded
    /// is the error).
    pub fn into_values(self) -> Result<Vec<Vec<Value>>, SqlError> {
        self.into_value_rows().into_iter().collect()
    }

    /// Each row's values, or the error of its first value that cannot be decoded.
    fn into_value_rows(self) -> Vec<Result<Vec<Value>, SqlError>> {
        match self.rows {
            BatchRows::Values { rows, undecodable } if undecodable.is_empty() => {
                rows.into_iter().map(Ok).collect()
            }
            rows => {
                let batch = RowBatch {
                    columns: self.columns,
                    rows,
                };
                batch
                    .rows()
                    .map(|row| {
                        (0..batch.columns.len())
                            .map(|column| row.value(column).map(Cow::into_owned))
                            .collect()
                    })
                    .collect()
            }
        }
    }

    /// The rows as [`Row`]s (a row that cannot be decoded is an error in its place).
    pub fn into_rows(self) -> impl Iterator<Item = Result<Row, SqlError>> {
        let columns = self.columns.clone();
        self.into_value_rows()
            .into_iter()
            .map(move |values| values.map(|values| columns.iter().cloned().zip(values).collect()))
    }
}

/// One row of a [`RowBatch`].
#[derive(Clone, Copy)]
pub struct RowRef<'a> {
    batch: &'a RowBatch,
    index: usize,
}

/// Where a value of a row is.
enum Field<'a> {
    Value(&'a Value),
    Binary(Column<'a>, Option<&'a [u8]>),
    Undecodable(&'a Undecodable),
}

impl<'a> RowRef<'a> {
    fn field(&self, column: usize) -> Field<'a> {
        match &self.batch.rows {
            BatchRows::Values { rows, undecodable } => {
                let at = (self.index, column);
                match undecodable.binary_search_by(|u| (u.row, u.column).cmp(&at)) {
                    Ok(found) => Field::Undecodable(&undecodable[found]),
                    Err(_) => Field::Value(&rows[self.index][column]),
                }
            }
            BatchRows::Binary(rows) => {
                let width = rows.decoders.len();
                let range = rows.fields[self.index * width + column];
                let bytes = range.map(|(start, end)| &rows.data[start as usize..end as usize]);
                Field::Binary(rows.decoders.column(column), bytes)
            }
        }
    }

    /// The value in `column` (0-based), typed as in a [`Row`].
    pub fn value(&self, column: usize) -> Result<Cow<'a, Value>, SqlError> {
        match self.field(column) {
            Field::Value(value) => Ok(Cow::Borrowed(value)),
            Field::Binary(decoder, bytes) => decoder.value(bytes).map(Cow::Owned),
            Field::Undecodable(failure) => Err(failure.error(&self.batch.columns)),
        }
    }

    /// The value in `column` when it is text, borrowed (`None`: another type, or NULL).
    pub fn text(&self, column: usize) -> Result<Option<&'a str>, SqlError> {
        match self.field(column) {
            Field::Value(Value::String(text)) => Ok(Some(text)),
            Field::Value(_) => Ok(None),
            Field::Binary(decoder, bytes) => decoder.text(bytes),
            Field::Undecodable(failure) => Err(failure.error(&self.batch.columns)),
        }
    }

    /// Write the JSON text of the value in `column` to `out` if it is a scalar whose text can
    /// be written without building a [`Value`] (NULL, booleans, integers, text; anything but
    /// arrays and objects for decoded rows). `false` (and nothing written) otherwise. The text
    /// is exactly serde_json's for [`RowRef::value`].
    pub fn write_scalar_json(&self, column: usize, out: &mut Vec<u8>) -> Result<bool, SqlError> {
        match self.field(column) {
            Field::Value(Value::Array(_) | Value::Object(_)) => Ok(false),
            Field::Value(scalar) => {
                serde_json::to_writer(out, scalar).expect("scalars serialize");
                Ok(true)
            }
            Field::Binary(decoder, bytes) => decoder.write_scalar_json(bytes, out),
            Field::Undecodable(failure) => Err(failure.error(&self.batch.columns)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_written_as_serde_json_writes_it() {
        // Every byte alone and between plain letters: the fast path must agree with
        // serde_json wherever it is taken, and be taken for printable ASCII but quotes and
        // backslashes.
        for byte in 0..=u8::MAX {
            let bytes = [b'a', byte, b'z'];
            let plain = plain_json_text(&bytes);
            assert_eq!(
                plain,
                (0x20..0x7f).contains(&byte) && byte != b'"' && byte != b'\\',
                "byte {byte:#x}"
            );
            if plain {
                let text = std::str::from_utf8(&bytes).expect("ASCII");
                assert_eq!(
                    format!("\"{text}\""),
                    serde_json::to_string(text).expect("strings serialize")
                );
            }
        }
        assert!(plain_json_text(b""));
    }
    use serde_json::json;

    /// A value that could not be decoded fails where it is read, and only its row.
    #[test]
    fn an_undecodable_value_fails_only_its_row() {
        let columns: Arc<[String]> = vec!["email".to_owned(), "score".to_owned()].into();
        let nan = SqlError::Decode {
            column: "score".into(),
            type_name: "REAL".into(),
            reason: "the value is NaN".into(),
        };
        let batch = RowBatch::from_values(
            columns,
            vec![
                vec![json!("a@x.test"), json!(1.5)],
                vec![json!("b@x.test"), Value::Null],
                vec![json!("c@x.test"), json!(2)],
            ],
            vec![Undecodable::new(1, 1, nan).unwrap()],
        );
        assert_eq!(batch.row(1).value(0).unwrap().as_ref(), &json!("b@x.test"));
        let err = batch.row(1).value(1).unwrap_err().to_string();
        assert_eq!(
            err,
            "column `score` (REAL): cannot decode value: the value is NaN"
        );
        assert!(batch.row(1).write_scalar_json(1, &mut Vec::new()).is_err());
        assert_eq!(batch.row(2).value(1).unwrap().as_ref(), &json!(2));
        let rows: Vec<bool> = batch.clone().into_rows().map(|row| row.is_ok()).collect();
        assert_eq!(rows, [true, false, true]);
        assert!(batch.into_values().is_err());
        // Any other error is the whole query's.
        assert!(Undecodable::new(0, 0, SqlError::Interrupted).is_err());
    }
}
