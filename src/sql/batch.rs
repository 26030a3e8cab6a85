//! [`RowBatch`]: consecutive result rows by column position, for consumers that read millions
//! of rows and want as little work per row as possible.
//!
//! Rows read through PostgreSQL's `COPY` stay in their binary wire form, all of a batch's
//! fields in one buffer, and a value is decoded only when asked for: a no-op plan of a million
//! rows then allocates nothing per row for values it only hashes. Either way a value comes out
//! exactly as in a [`Row`] (same decoder), and [`RowRef::write_scalar_json`] writes the JSON
//! text serde_json would write for that value.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::Value;

use super::decode::PgColumn;
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
    /// Decoded values (SQLite, and PostgreSQL rows read row by row).
    Values(Vec<Vec<Value>>),
    /// PostgreSQL `COPY` rows in binary wire form.
    Binary(BinaryRows),
}

/// Rows as `COPY (FORMAT binary)` sent them: every field's bytes in one buffer.
#[derive(Debug, Clone)]
pub(crate) struct BinaryRows {
    decoders: Arc<[PgColumn]>,
    data: Vec<u8>,
    /// Per row, per column, the field's range in `data` (`None`: NULL).
    fields: Vec<Option<(u32, u32)>>,
}

impl BinaryRows {
    pub(crate) fn new(decoders: Arc<[PgColumn]>, rows: usize) -> Self {
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

impl RowBatch {
    /// A batch of decoded values.
    pub(crate) fn from_values(columns: Arc<[String]>, rows: Vec<Vec<Value>>) -> Self {
        RowBatch {
            columns,
            rows: BatchRows::Values(rows),
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
            BatchRows::Values(rows) => rows.len(),
            BatchRows::Binary(rows) => rows.len(),
        }
    }

    /// About how many bytes the batch holds (its buffers; decoded values are estimated).
    pub fn memory(&self) -> usize {
        match &self.rows {
            BatchRows::Values(rows) => rows.iter().map(|row| 64 + row.len() * 48).sum(),
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

    /// Every row's values, decoded, in column order.
    pub fn into_values(self) -> Result<Vec<Vec<Value>>, SqlError> {
        match self.rows {
            BatchRows::Values(rows) => Ok(rows),
            BatchRows::Binary(_) => self
                .rows()
                .map(|row| {
                    (0..self.columns.len())
                        .map(|column| row.value(column).map(Cow::into_owned))
                        .collect()
                })
                .collect(),
        }
    }

    /// The rows as [`Row`]s (a row that cannot be decoded is an error in its place).
    pub fn into_rows(self) -> impl Iterator<Item = Result<Row, SqlError>> {
        let columns = self.columns.clone();
        let rows: Vec<Result<Vec<Value>, SqlError>> = match self.into_values() {
            Ok(rows) => rows.into_iter().map(Ok).collect(),
            Err(err) => vec![Err(err)],
        };
        rows.into_iter()
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
    Binary(&'a PgColumn, Option<&'a [u8]>),
}

impl<'a> RowRef<'a> {
    fn field(&self, column: usize) -> Field<'a> {
        match &self.batch.rows {
            BatchRows::Values(rows) => Field::Value(&rows[self.index][column]),
            BatchRows::Binary(rows) => {
                let width = rows.decoders.len();
                let range = rows.fields[self.index * width + column];
                let bytes = range.map(|(start, end)| &rows.data[start as usize..end as usize]);
                Field::Binary(&rows.decoders[column], bytes)
            }
        }
    }

    /// The value in `column` (0-based), typed as in a [`Row`].
    pub fn value(&self, column: usize) -> Result<Cow<'a, Value>, SqlError> {
        match self.field(column) {
            Field::Value(value) => Ok(Cow::Borrowed(value)),
            Field::Binary(decoder, bytes) => decoder.value(bytes).map(Cow::Owned),
        }
    }

    /// The value in `column` when it is text, borrowed (`None`: another type, or NULL).
    pub fn text(&self, column: usize) -> Result<Option<&'a str>, SqlError> {
        match self.field(column) {
            Field::Value(Value::String(text)) => Ok(Some(text)),
            Field::Value(_) => Ok(None),
            Field::Binary(decoder, bytes) => decoder.text(bytes),
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
        }
    }
}
