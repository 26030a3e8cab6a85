//! PostgreSQL's fast path for queries without parameters: `COPY (query) TO STDOUT (FORMAT
//! binary)` inside the query's own read-only transaction.
//!
//! Why: reading a million rows through sqlx's extended protocol costs about four times what
//! `psql \copy` needs for the same rows (each row is a message decoded into a row object of its
//! own), and a no-op plan of a million-row sync is mostly that read. `COPY` streams the same
//! values in the same binary representation, so they go through the same
//! [`PgColumn`](super::decode::PgColumn) decoders and come out identical (row hashes depend on
//! it: `tests/it/sync_engine.rs` compares both paths value by value).
//!
//! When it is used: PostgreSQL, no bound parameters (`COPY` cannot take any), and a statement
//! that returns columns. The statement is first prepared on its own, which proves it is a single
//! statement and gives its column names and types; wrapping one statement in `COPY (...)` cannot
//! make two. Statements `COPY` does not accept (`SHOW`, `EXPLAIN`, a trailing comment after a
//! `;`) fail with a syntax or feature error at once, before any row, and the caller reads the
//! rows the ordinary way on a fresh connection.
//! Everything else is unchanged: same transaction (`READ ONLY`, the statement timeout), same
//! errors, same batches. Where the URL allows, the `COPY` itself runs on a connection of
//! klsync's own (`postgres_wire.rs`), in a transaction of its own set up the same way, and
//! sqlx's connection only prepares the statement.

use std::sync::Arc;
use std::sync::atomic::AtomicI32;
use std::time::Duration;

use futures::TryStreamExt;
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Column, Either, Executor, SqlSafeStr, Statement};

use super::batch::BinaryRows;
use super::decode::{self, PgColumn, WireReader};
use super::postgres_wire;
use super::{Batcher, ROW_BATCH, RowBatch, SqlError};

/// What the fast path did.
pub(super) enum Copied {
    /// Every row was read; the transaction goes on as after any query.
    Complete,
    /// The query cannot go through `COPY` (parameters, no columns); only the statement was
    /// prepared, and the transaction goes on.
    NotApplicable,
    /// The statement is valid alone but not inside `COPY (...)` (`None`), or the server refused
    /// `COPY` itself (`Some`: why). Nothing was read. The connection must be discarded (see
    /// [`Copied::Abandoned`]) and the query read the ordinary way on another.
    NotCopyable(Option<String>),
    /// The `COPY` failed or stopped before its end (an error, or the consumer went away), with
    /// this outcome. sqlx leaves a connection out of step with the server after a `COPY` that
    /// fails to start or is not read to its end, so the caller must close it rather than reuse
    /// it; closing it also rolls the transaction back on the server.
    Abandoned(Result<(), SqlError>),
}

/// The signature, flags and header-extension length that open a binary `COPY` stream.
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// What klsync puts before the user's statement to stream it.
const COPY_OPEN: &str = "COPY (\n";

/// What `copy_rows` needs to read through a connection of klsync's own (`postgres_wire.rs`),
/// when the URL allows one.
pub(super) struct OwnConnection<'a> {
    /// The connection being opened (since before the statement was prepared).
    pub(super) opening: tokio::task::JoinHandle<postgres_wire::Opened>,
    pub(super) timeout: Duration,
    /// The server process of the own connection while it reads (for a cancel).
    pub(super) backend: &'a AtomicI32,
}

/// Run `sql` through `COPY` on `connection` (inside the caller's transaction), or on a
/// connection of klsync's own (`own`) when it applies, handing the rows to `batch` until it
/// says the consumer is gone. `Err` for failures before the `COPY` started (preparing the
/// statement), after which the connection is in step, and for a failure of the own connection's
/// `COPY` (which leaves `connection` in step too).
pub(super) async fn copy_rows(
    connection: &mut PgConnection,
    sql: &str,
    failed: impl Fn(sqlx::Error) -> SqlError,
    batch: &mut Batcher<'_>,
    own: Option<OwnConnection<'_>>,
) -> Result<Copied, SqlError> {
    let statement = connection
        .prepare(AssertSqlSafe(sql.to_string()).into_sql_str())
        .await
        .map_err(|err| failed(err).located(sql, 0, sql))?;
    let has_parameters = match statement.parameters() {
        Some(Either::Left(types)) => !types.is_empty(),
        Some(Either::Right(count)) => count > 0,
        None => false,
    };
    if has_parameters || statement.columns().is_empty() {
        return Ok(Copied::NotApplicable);
    }
    let columns = decode::pg_columns(
        statement
            .columns()
            .iter()
            .map(|column| (column.name(), column.type_info())),
    )?;
    let body = statement_body(sql);
    let copy = format!("{COPY_OPEN}{body}\n) TO STDOUT (FORMAT binary)");
    // A position the database gives in the COPY statement, mapped back into the user's SQL.
    let located = |err: SqlError| err.located(&copy, COPY_OPEN.chars().count(), body);
    let mut sink = CopySink::new(columns, batch);
    if let Some(own) = own {
        let opened = own
            .opening
            .await
            .unwrap_or_else(|err| Err(format!("opening the connection: {err}")));
        match postgres_wire::copy(opened, &copy, own.timeout, own.backend, &mut sink, batch).await {
            postgres_wire::Copied::Complete => {
                tracing::debug!("COPY read on klsync's own connection");
                return Ok(Copied::Complete);
            }
            postgres_wire::Copied::Failed(err) => return Err(located(err)),
            postgres_wire::Copied::Declined(why) => {
                tracing::debug!(why, "COPY read through sqlx, not klsync's own connection");
            }
        }
    }
    let failed_in_copy = |err| located(failed(err));
    let mut stream = match connection.copy_out_raw(&copy).await {
        Ok(stream) => stream,
        Err(err) => {
            return Ok(match refusal(&err) {
                Some(refused) => Copied::NotCopyable(refused),
                None => Copied::Abandoned(Err(failed_in_copy(err))),
            });
        }
    };
    // Whether a byte of the stream arrived: a refusal can only come before one.
    let mut started = false;
    let read = async {
        loop {
            let chunk = match stream.try_next().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                // Some servers start the COPY, then refuse it before its first byte.
                Err(err) if !started => {
                    return match refusal(&err) {
                        Some(refused) => Err(Refused(refused)),
                        None => Err(Failed(failed_in_copy(err))),
                    };
                }
                Err(err) => return Err(Failed(failed_in_copy(err))),
            };
            started = true;
            if !sink
                .take(&chunk, batch)
                .await
                .map_err(|reason| Failed(protocol(reason)))?
            {
                return Ok(false);
            }
        }
        sink.ended().map_err(Failed)?;
        Ok(true)
    }
    .await;
    let read = match read {
        Err(Refused(refused)) => return Ok(Copied::NotCopyable(refused)),
        Err(Failed(err)) => Err(err),
        Ok(complete) => Ok(complete),
    };
    // The last rows, also those before an error (they arrive first).
    let read = match read {
        Ok(false) => Ok(false),
        read => {
            let sent = sink.flush(batch).await;
            read.map(|complete| complete && sent)
        }
    };
    Ok(match read {
        Ok(true) => Copied::Complete,
        Ok(false) => Copied::Abandoned(Ok(())),
        Err(err) => Copied::Abandoned(Err(err)),
    })
}

/// The rows of a binary `COPY` stream, however its bytes arrive, in batches of [`ROW_BATCH`].
pub(super) struct CopySink {
    reader: CopyReader,
    decoders: Arc<[PgColumn]>,
    names: Arc<[String]>,
    rows: BinaryRows,
}

impl CopySink {
    /// A sink for rows of `columns`, which `batch` is told about.
    fn new(columns: Vec<PgColumn>, batch: &mut Batcher<'_>) -> Self {
        batch.set_columns(columns.iter().map(|c| c.name().to_string()).collect());
        let names = batch.columns().expect("set above");
        let decoders: Arc<[PgColumn]> = columns.into();
        CopySink {
            reader: CopyReader::new(decoders.len()),
            rows: BinaryRows::new(Arc::clone(&decoders), ROW_BATCH),
            decoders,
            names,
        }
    }

    /// The next bytes of the stream; a full batch goes to `batch`. `Ok(false)` once the
    /// consumer is gone; `Err` for a stream that is not binary `COPY`.
    pub(super) async fn take(
        &mut self,
        chunk: &[u8],
        batch: &mut Batcher<'_>,
    ) -> Result<bool, String> {
        let rows = &mut self.rows;
        self.reader.read(chunk, |fields| rows.push(fields.iter()))?;
        // PostgreSQL sends a row per message, so batches stay about ROW_BATCH rows.
        if self.rows.len() >= ROW_BATCH {
            let full = std::mem::replace(
                &mut self.rows,
                BinaryRows::new(Arc::clone(&self.decoders), ROW_BATCH),
            );
            return Ok(batch
                .send(RowBatch::from_binary(self.names.clone(), full))
                .await);
        }
        Ok(true)
    }

    /// `Ok` when the stream's trailer was read: the stream is whole.
    pub(super) fn ended(&self) -> Result<(), SqlError> {
        if self.reader.finished() {
            Ok(())
        } else {
            Err(protocol("the COPY stream ended without its trailer".into()))
        }
    }

    /// Send the rows not sent yet; `false` if the consumer is gone.
    pub(super) async fn flush(&mut self, batch: &mut Batcher<'_>) -> bool {
        if self.rows.is_empty() {
            return true;
        }
        let rows = std::mem::replace(
            &mut self.rows,
            BinaryRows::new(Arc::clone(&self.decoders), 0),
        );
        batch
            .send(RowBatch::from_binary(self.names.clone(), rows))
            .await
    }
}

/// The statement without trailing whitespace and semicolons (`COPY (...;)` is a syntax error).
fn statement_body(sql: &str) -> &str {
    sql.trim_end_matches(|c: char| c.is_whitespace() || c == ';')
}

/// How a `COPY` that produced nothing failed.
enum CopyFailure {
    /// Read the query another way (see [`refusal`]).
    Refused(Option<String>),
    /// Report this.
    Failed(SqlError),
}
use CopyFailure::{Failed, Refused};

/// Whether a failure of `COPY` before its first byte means "read it another way": `Some(None)`
/// for a syntax error (the statement is valid alone, as preparing it proved, but not inside
/// `COPY (...)`: `SHOW`, `EXPLAIN`), `Some(Some(reason))` when the server or something between
/// refuses `COPY` itself: "feature not supported" (engines such as CockroachDB's older versions),
/// a protocol violation, or a connection dropped at the `COPY` (poolers that do not speak it).
/// Anything else (a division by zero, a timeout) is the query's own error.
fn refusal(err: &sqlx::Error) -> Option<Option<String>> {
    match err {
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("42601") => Some(None),
            Some("0A000" | "08P01") => Some(Some(db.message().to_string())),
            _ => None,
        },
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) => Some(Some(err.to_string())),
        _ => None,
    }
}

fn protocol(reason: String) -> SqlError {
    SqlError::Decode {
        column: "(COPY stream)".into(),
        type_name: "binary COPY".into(),
        reason,
    }
}

/// Splits a binary `COPY` stream into rows, however its bytes are cut into messages.
///
/// Format: an 11-byte signature, a 32-bit flags word and a 32-bit header-extension length (plus
/// that many bytes); then per row a 16-bit field count and per field a 32-bit length (-1: NULL)
/// and the value's binary form; then a 16-bit -1.
pub(crate) struct CopyReader {
    /// The start of an item (header or row) cut across chunks, waiting for the rest.
    pending: Vec<u8>,
    columns: usize,
    header_read: bool,
    finished: bool,
    fields: Vec<Option<std::ops::Range<usize>>>,
}

impl CopyReader {
    pub(crate) fn new(columns: usize) -> Self {
        CopyReader {
            pending: Vec::new(),
            columns,
            header_read: false,
            finished: false,
            fields: Vec::with_capacity(columns),
        }
    }

    /// Read `chunk`, the next bytes of the stream, calling `row` for every row it completes.
    /// PostgreSQL sends one row per message, so rows are read straight from the chunk (a
    /// million-row plan copies nothing here); only an item cut across chunks is kept, until its
    /// end arrives.
    pub(crate) fn read(
        &mut self,
        chunk: &[u8],
        mut row: impl FnMut(RowFields<'_>),
    ) -> Result<(), String> {
        if self.pending.is_empty() {
            let used = self.parse(chunk, &mut row)?;
            self.pending.extend_from_slice(&chunk[used..]);
        } else {
            let mut pending = std::mem::take(&mut self.pending);
            pending.extend_from_slice(chunk);
            let used = self.parse(&pending, &mut row)?;
            pending.drain(..used);
            self.pending = pending;
        }
        if self.finished && !self.pending.is_empty() {
            return Err("data after the COPY trailer".into());
        }
        Ok(())
    }

    /// Whether the trailer was read.
    pub(crate) fn finished(&self) -> bool {
        self.finished
    }

    /// Read every complete item at the start of `data`; the bytes used.
    fn parse(&mut self, data: &[u8], row: &mut impl FnMut(RowFields<'_>)) -> Result<usize, String> {
        let mut used = 0;
        while !self.finished {
            let rest = &data[used..];
            match self.next_item(rest)? {
                None => break,
                Some((length, is_row)) => {
                    if is_row {
                        row(RowFields {
                            row: rest,
                            fields: &self.fields,
                        });
                    }
                    used += length;
                }
            }
        }
        Ok(used)
    }

    /// The length of the complete item at the start of `data` and whether it is a row (its
    /// fields are then in `self.fields`, relative to `data`); `None` when `data` does not hold
    /// a whole item.
    fn next_item(&mut self, data: &[u8]) -> Result<Option<(usize, bool)>, String> {
        let mut reader = WireReader::new(data);
        let used = |reader: &WireReader<'_>| data.len() - reader.rest().len();
        if !self.header_read {
            let Some(signature) = reader.take(SIGNATURE.len()) else {
                return Ok(None);
            };
            if signature != SIGNATURE {
                return Err("not a binary COPY stream".into());
            }
            let (Some(_flags), Some(extension)) = (reader.i32(), reader.i32()) else {
                return Ok(None);
            };
            let extension = usize::try_from(extension).map_err(|_| "bad COPY header")?;
            if reader.take(extension).is_none() {
                return Ok(None);
            }
            self.header_read = true;
            return Ok(Some((used(&reader), false)));
        }
        let Some(count) = reader.i16() else {
            return Ok(None);
        };
        if count == -1 {
            self.finished = true;
            return Ok(Some((2, false)));
        }
        if usize::try_from(count).ok() != Some(self.columns) {
            return Err(format!(
                "COPY row has {count} fields, the statement {}",
                self.columns
            ));
        }
        self.fields.clear();
        for _ in 0..self.columns {
            let offset = used(&reader) + 4;
            match reader.field() {
                None => return Ok(None),
                Some(None) => self.fields.push(None),
                Some(Some(value)) => self.fields.push(Some(offset..offset + value.len())),
            }
        }
        Ok(Some((used(&reader), true)))
    }
}

/// One row's fields, borrowed from the chunk read (or the reader's pending bytes).
pub(crate) struct RowFields<'a> {
    row: &'a [u8],
    fields: &'a [Option<std::ops::Range<usize>>],
}

impl<'a> RowFields<'a> {
    /// Each field's bytes in column order (`None`: NULL).
    pub(crate) fn iter(&self) -> impl Iterator<Item = Option<&'a [u8]>> + use<'a> {
        let row = self.row;
        self.fields
            .iter()
            .map(move |field| field.clone().map(|range| &row[range]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(rows: &[Vec<Option<&[u8]>>]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend(0i32.to_be_bytes());
        out.extend(0i32.to_be_bytes());
        for row in rows {
            out.extend((row.len() as i16).to_be_bytes());
            for field in row {
                match field {
                    None => out.extend((-1i32).to_be_bytes()),
                    Some(bytes) => {
                        out.extend((bytes.len() as i32).to_be_bytes());
                        out.extend(*bytes);
                    }
                }
            }
        }
        out.extend((-1i16).to_be_bytes());
        out
    }

    fn read_all(bytes: &[u8], cut: usize) -> (Vec<Vec<Option<Vec<u8>>>>, bool) {
        let mut reader = CopyReader::new(2);
        let mut rows = Vec::new();
        for chunk in bytes.chunks(cut) {
            reader
                .read(chunk, |fields| {
                    rows.push(fields.iter().map(|f| f.map(<[u8]>::to_vec)).collect())
                })
                .unwrap();
        }
        (rows, reader.finished())
    }

    /// `bytes` cut as PostgreSQL sends them: the header with the first row, then a message per
    /// row, then the trailer alone.
    fn messages(bytes: &[u8], rows: &[Vec<Option<&[u8]>>]) -> Vec<Vec<u8>> {
        let row_bytes = |row: &Vec<Option<&[u8]>>| {
            2 + row
                .iter()
                .map(|f| 4 + f.map_or(0, <[u8]>::len))
                .sum::<usize>()
        };
        let mut cuts = vec![SIGNATURE.len() + 8 + row_bytes(&rows[0])];
        for row in &rows[1..] {
            cuts.push(cuts.last().unwrap() + row_bytes(row));
        }
        let mut start = 0;
        let mut out = Vec::new();
        for cut in cuts.into_iter().chain([bytes.len()]) {
            out.push(bytes[start..cut].to_vec());
            start = cut;
        }
        out
    }

    #[test]
    fn rows_come_out_whole_however_the_stream_is_cut() {
        let rows: Vec<Vec<Option<&[u8]>>> = vec![
            vec![Some(b"a@x.test"), Some(&[0, 0, 0, 7])],
            vec![None, Some(b"")],
            vec![Some(b"b@x.test"), None],
        ];
        let bytes = stream(&rows);
        let expected: Vec<Vec<Option<Vec<u8>>>> = rows
            .iter()
            .map(|r| r.iter().map(|f| f.map(<[u8]>::to_vec)).collect())
            .collect();
        for cut in [1, 2, 3, 5, 7, 19, bytes.len()] {
            let (read, finished) = read_all(&bytes, cut);
            assert_eq!(read, expected, "cut into {cut}-byte chunks");
            assert!(finished);
        }
        let mut reader = CopyReader::new(2);
        let mut read: Vec<Vec<Option<Vec<u8>>>> = Vec::new();
        let messages = messages(&bytes, &rows);
        assert_eq!(messages.len(), rows.len() + 1);
        for message in &messages {
            reader
                .read(message, |fields| {
                    read.push(fields.iter().map(|f| f.map(<[u8]>::to_vec)).collect())
                })
                .unwrap();
            assert!(reader.pending.is_empty(), "whole rows are not kept");
        }
        assert_eq!(read, expected, "a message per row");
        assert!(reader.finished());
        assert!(
            reader.read(b"\0", |_| {}).is_err(),
            "nothing comes after the trailer"
        );
    }

    #[test]
    fn a_stream_without_trailer_is_not_finished() {
        let bytes = stream(&[vec![Some(b"x"), None]]);
        let (read, finished) = read_all(&bytes[..bytes.len() - 2], 4);
        assert_eq!(read.len(), 1);
        assert!(!finished);
    }

    #[test]
    fn wrong_field_counts_and_signatures_are_errors() {
        let mut reader = CopyReader::new(3);
        assert!(
            reader
                .read(&stream(&[vec![Some(b"x"), None]]), |_| {})
                .is_err()
        );
        let mut reader = CopyReader::new(1);
        assert!(
            reader
                .read(b"PGCOPY\nXXXXXXXXXXXXXXXXXXXX", |_| {})
                .is_err()
        );
    }

    #[test]
    fn trailing_semicolons_are_dropped() {
        assert_eq!(statement_body("SELECT 1;\n  ;; \n"), "SELECT 1");
        assert_eq!(statement_body("SELECT ';'"), "SELECT ';'");
    }
}
