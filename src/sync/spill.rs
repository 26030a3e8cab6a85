//! The rows a `profiles:` apply sends, kept in a temporary file instead of memory (issue 16):
//! a first load of 10 million rows held about 190 bytes a row in memory, 1.9 GB, while it
//! planned and sent. Now a row costs memory only while its job is built, and the apply's
//! memory is bounded by the change-detection table.
//!
//! The file is written once, in query order, while the rows are classified, and read forward
//! from a job's first row when that job is built and twice more (property removals, records).
//! It is an unnamed temporary file (`tempfile::tempfile`): the operating system removes it
//! when klsync exits, however it exits. Encoding: fixed-width integers little-endian, strings
//! as a `u32` length and UTF-8 bytes; only klsync reads it, within one run.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};

use super::diff::RowHash;

/// One row to send or record at apply. Property maps are kept as JSON text.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Upsert {
    pub(super) key: u64,
    pub(super) identifier: String,
    pub(super) row_hash: RowHash,
    /// Properties to bulk import (a JSON object), if any.
    pub(super) set: Option<String>,
    /// Serialised size of the profile in the job body.
    pub(super) size: usize,
    pub(super) unset: Vec<String>,
    /// What to record once accepted (a JSON object).
    pub(super) applied: String,
}

/// Where a row starts in the file.
pub(super) type Offset = u64;

/// The rows of one sync, appended while classifying, read back at apply.
#[derive(Default)]
pub(super) struct UpsertLog {
    writer: Option<BufWriter<File>>,
    file: Option<File>,
    written: Offset,
}

const NONE: u32 = u32::MAX;

fn put_str(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u32).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

impl UpsertLog {
    /// Appends `row`; returns where it starts.
    pub(super) fn push(&mut self, row: &Upsert) -> io::Result<Offset> {
        if self.writer.is_none() {
            self.writer = Some(BufWriter::with_capacity(1 << 20, tempfile::tempfile()?));
        }
        let mut record = Vec::with_capacity(64 + row.identifier.len() + row.applied.len());
        record.extend_from_slice(&row.key.to_le_bytes());
        record.extend_from_slice(&row.row_hash);
        record.extend_from_slice(&(row.size as u64).to_le_bytes());
        put_str(&mut record, &row.identifier);
        match &row.set {
            Some(set) => put_str(&mut record, set),
            None => record.extend_from_slice(&NONE.to_le_bytes()),
        }
        put_str(&mut record, &row.applied);
        record.extend_from_slice(&(row.unset.len() as u32).to_le_bytes());
        for key in &row.unset {
            put_str(&mut record, key);
        }
        let writer = self.writer.as_mut().expect("opened above");
        writer.write_all(&record)?;
        let at = self.written;
        self.written += record.len() as u64;
        Ok(at)
    }

    /// Ends writing: the rows can be read from here on.
    pub(super) fn finish(&mut self) -> io::Result<()> {
        if let Some(writer) = self.writer.take() {
            self.file = Some(
                writer
                    .into_inner()
                    .map_err(io::IntoInnerError::into_error)?,
            );
        }
        Ok(())
    }

    /// The rows from offset `from` to the end, in order (none when nothing was written).
    pub(super) fn read_from(&self, from: Offset) -> io::Result<Rows> {
        let reader = match &self.file {
            Some(file) => {
                let mut file = file.try_clone()?;
                file.seek(SeekFrom::Start(from))?;
                Some(BufReader::with_capacity(1 << 20, file))
            }
            None => None,
        };
        Ok(Rows {
            reader,
            at: from,
            end: self.written,
        })
    }
}

/// Rows read forward from the file, each with its offset.
pub(super) struct Rows {
    reader: Option<BufReader<File>>,
    at: Offset,
    end: Offset,
}

impl Rows {
    fn u32(&mut self) -> io::Result<u32> {
        let mut bytes = [0; 4];
        self.bytes(&mut bytes)?;
        Ok(u32::from_le_bytes(bytes))
    }

    fn u64(&mut self) -> io::Result<u64> {
        let mut bytes = [0; 8];
        self.bytes(&mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    fn bytes(&mut self, out: &mut [u8]) -> io::Result<()> {
        self.reader
            .as_mut()
            .expect("only read before the end")
            .read_exact(out)?;
        self.at += out.len() as u64;
        Ok(())
    }

    fn string_of(&mut self, len: u32) -> io::Result<String> {
        let mut bytes = vec![0; len as usize];
        self.bytes(&mut bytes)?;
        String::from_utf8(bytes).map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))
    }

    fn string(&mut self) -> io::Result<String> {
        let len = self.u32()?;
        self.string_of(len)
    }

    fn row(&mut self) -> io::Result<Upsert> {
        let key = self.u64()?;
        let mut row_hash = RowHash::default();
        self.bytes(&mut row_hash)?;
        let size = self.u64()? as usize;
        let identifier = self.string()?;
        let set = match self.u32()? {
            NONE => None,
            len => Some(self.string_of(len)?),
        };
        let applied = self.string()?;
        let unset = (0..self.u32()?)
            .map(|_| self.string())
            .collect::<io::Result<_>>()?;
        Ok(Upsert {
            key,
            identifier,
            row_hash,
            set,
            size,
            unset,
            applied,
        })
    }
}

impl Iterator for Rows {
    type Item = io::Result<(Offset, Upsert)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.end || self.reader.is_none() {
            return None;
        }
        let at = self.at;
        Some(self.row().map(|row| (at, row)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(n: u64, set: bool, unset: &[&str]) -> Upsert {
        Upsert {
            key: n,
            identifier: format!("p{n}@example.com"),
            row_hash: [n as u8; 16],
            set: set.then(|| format!(r#"{{"n":{n},"name":"Zoë"}}"#)),
            size: 40 + n as usize,
            unset: unset.iter().map(|k| (*k).to_owned()).collect(),
            applied: format!(r#"{{"n":{n}}}"#),
        }
    }

    #[test]
    fn rows_read_back_as_written_from_any_row() {
        let rows = [
            row(1, true, &[]),
            row(2, false, &["a", "b"]),
            row(3, true, &["c"]),
        ];
        let mut log = UpsertLog::default();
        let offsets: Vec<Offset> = rows.iter().map(|r| log.push(r).unwrap()).collect();
        log.finish().unwrap();
        let all: Vec<(Offset, Upsert)> = log.read_from(0).unwrap().map(Result::unwrap).collect();
        assert_eq!(all.iter().map(|(at, _)| *at).collect::<Vec<_>>(), offsets);
        assert_eq!(all.into_iter().map(|(_, r)| r).collect::<Vec<_>>(), rows);
        let tail: Vec<Upsert> = log
            .read_from(offsets[2])
            .unwrap()
            .map(|r| r.unwrap().1)
            .collect();
        assert_eq!(tail, [rows[2].clone()]);
    }

    #[test]
    fn an_empty_log_reads_nothing() {
        let mut log = UpsertLog::default();
        log.finish().unwrap();
        assert_eq!(log.read_from(0).unwrap().count(), 0);
    }
}
