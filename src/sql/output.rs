//! Printing query rows as they stream in: an aligned table, a JSON array, or CSV.
//!
//! Pure apart from the `io::Write` it is given. Memory stays bounded for every format: JSON and
//! CSV write each row as it comes; the table sizes its columns from the first
//! [`TABLE_SAMPLE_ROWS`] rows, then prints later rows at those widths, truncating longer cells.

use std::io::{self, Write};

use serde_json::Value;

use super::Row;

/// Rows the table format looks at to choose its column widths.
pub const TABLE_SAMPLE_ROWS: usize = 100;
/// The widest a table cell is printed, in characters; longer values end in `…`.
pub const TABLE_MAX_CELL: usize = 40;

/// An output format for rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowFormat {
    /// Aligned columns for people; `NULL` for null, long cells truncated.
    Table,
    /// One JSON array, each row an object in column order.
    Json,
    /// RFC 4180 CSV with a header line; null is an empty field, JSON values are compact JSON.
    Csv,
}

/// Writes rows in one [`RowFormat`] as they arrive.
#[derive(Debug)]
pub struct RowWriter<W: Write> {
    format: RowFormat,
    out: W,
    rows: usize,
    columns: Vec<String>,
    /// Table only: rows held back until the widths are known, and the widths once they are.
    pending: Vec<Vec<String>>,
    widths: Option<Vec<usize>>,
}

impl<W: Write> RowWriter<W> {
    /// A writer that has written nothing yet.
    pub fn new(format: RowFormat, out: W) -> Self {
        RowWriter {
            format,
            out,
            rows: 0,
            columns: Vec::new(),
            pending: Vec::new(),
            widths: None,
        }
    }

    /// Write one row. The first row's columns are the header.
    pub fn write_row(&mut self, row: &Row) -> io::Result<()> {
        if self.rows == 0 {
            self.columns = row.keys().cloned().collect();
        }
        self.rows += 1;
        match self.format {
            RowFormat::Json => {
                let separator = if self.rows == 1 { "[\n" } else { ",\n" };
                self.out.write_all(separator.as_bytes())?;
                serde_json::to_writer(&mut self.out, row)?;
            }
            RowFormat::Csv => {
                if self.rows == 1 {
                    let header: Vec<String> = self.columns.clone();
                    write_csv_line(&mut self.out, header.iter().map(String::as_str))?;
                }
                let cells: Vec<String> = row.values().map(csv_cell).collect();
                write_csv_line(&mut self.out, cells.iter().map(String::as_str))?;
            }
            RowFormat::Table => {
                let cells: Vec<String> = row.values().map(table_cell).collect();
                match &self.widths {
                    Some(widths) => write_table_line(&mut self.out, widths, &cells)?,
                    None => {
                        self.pending.push(cells);
                        if self.pending.len() >= TABLE_SAMPLE_ROWS {
                            self.flush_table()?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// How many rows were written.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Finish the output (close the JSON array, print held-back table rows) and return the
    /// writer.
    pub fn finish(mut self) -> io::Result<W> {
        match self.format {
            RowFormat::Json if self.rows == 0 => self.out.write_all(b"[]\n")?,
            RowFormat::Json => self.out.write_all(b"\n]\n")?,
            RowFormat::Table if self.widths.is_none() && self.rows > 0 => self.flush_table()?,
            RowFormat::Table | RowFormat::Csv => {}
        }
        self.out.flush()?;
        Ok(self.out)
    }

    fn flush_table(&mut self) -> io::Result<()> {
        let header: Vec<String> = self.columns.iter().map(|c| truncate(c)).collect();
        let widths: Vec<usize> = header
            .iter()
            .enumerate()
            .map(|(i, name)| {
                self.pending
                    .iter()
                    .filter_map(|cells| cells.get(i))
                    .map(|cell| cell.chars().count())
                    .chain([name.chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        write_table_line(&mut self.out, &widths, &header)?;
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        write_table_line(&mut self.out, &widths, &rule)?;
        for cells in std::mem::take(&mut self.pending) {
            write_table_line(&mut self.out, &widths, &cells)?;
        }
        self.widths = Some(widths);
        Ok(())
    }
}

fn write_table_line(out: &mut impl Write, widths: &[usize], cells: &[String]) -> io::Result<()> {
    let mut line = String::new();
    for (i, width) in widths.iter().enumerate() {
        let cell = cells.get(i).map_or("", String::as_str);
        let cell = truncate_to(cell, *width);
        if i > 0 {
            line.push_str("  ");
        }
        line.push_str(&cell);
        if i + 1 < widths.len() {
            line.push_str(&" ".repeat(width.saturating_sub(cell.chars().count())));
        }
    }
    writeln!(out, "{}", line.trim_end())
}

/// A value as one table cell: one line, at most [`TABLE_MAX_CELL`] characters.
fn table_cell(value: &Value) -> String {
    let text = match value {
        Value::Null => "NULL".to_string(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    // Control characters (newlines, tabs) would break the alignment.
    let single_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    truncate(&single_line)
}

fn truncate(text: &str) -> String {
    truncate_to(text, TABLE_MAX_CELL)
}

fn truncate_to(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn csv_cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// One RFC 4180 record: fields with a comma, quote, CR or LF are quoted, quotes doubled, and
/// the record ends with CRLF.
fn write_csv_line<'a>(
    out: &mut impl Write,
    fields: impl Iterator<Item = &'a str>,
) -> io::Result<()> {
    let mut line = String::new();
    for (i, field) in fields.enumerate() {
        if i > 0 {
            line.push(',');
        }
        if field.contains([',', '"', '\r', '\n']) {
            line.push('"');
            line.push_str(&field.replace('"', "\"\""));
            line.push('"');
        } else {
            line.push_str(field);
        }
    }
    line.push_str("\r\n");
    out.write_all(line.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(value: Value) -> Row {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("test rows are objects"),
        }
    }

    fn render(format: RowFormat, rows: &[Value]) -> String {
        let mut writer = RowWriter::new(format, Vec::new());
        for r in rows {
            writer.write_row(&row(r.clone())).unwrap();
        }
        String::from_utf8(writer.finish().unwrap()).unwrap()
    }

    #[test]
    fn json_is_one_array_of_objects_in_column_order() {
        let out = render(
            RowFormat::Json,
            &[
                json!({"b": 1, "a": {"x": [1]}}),
                json!({"b": null, "a": "t"}),
            ],
        );
        assert_eq!(
            out,
            "[\n{\"b\":1,\"a\":{\"x\":[1]}},\n{\"b\":null,\"a\":\"t\"}\n]\n"
        );
        let parsed: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed[1]["a"], json!("t"));
        assert_eq!(render(RowFormat::Json, &[]), "[]\n");
    }

    #[test]
    fn csv_quotes_per_rfc_4180() {
        let out = render(
            RowFormat::Csv,
            &[
                json!({"id": 1, "note": "a,b", "q": "say \"hi\"", "nl": "x\ny", "n": null, "j": {"k": 1}}),
            ],
        );
        assert_eq!(
            out,
            "id,note,q,nl,n,j\r\n1,\"a,b\",\"say \"\"hi\"\"\",\"x\ny\",,\"{\"\"k\"\":1}\"\r\n"
        );
        assert_eq!(render(RowFormat::Csv, &[]), "");
    }

    #[test]
    fn table_aligns_columns_and_truncates_long_cells() {
        let long = "x".repeat(60);
        let out = render(
            RowFormat::Table,
            &[
                json!({"id": 1, "email": "a@example.com", "extra": null}),
                json!({"id": 22, "email": long, "extra": "multi\nline"}),
            ],
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            format!("id  email{}  extra", " ".repeat(TABLE_MAX_CELL - 5))
        );
        assert!(lines[1].starts_with("--  ----"), "{out}");
        assert_eq!(
            lines[2],
            format!("1   a@example.com{}  NULL", " ".repeat(TABLE_MAX_CELL - 13))
        );
        assert_eq!(
            lines[3],
            format!("22  {}…  multi line", "x".repeat(TABLE_MAX_CELL - 1))
        );
        assert_eq!(lines.len(), 4);
    }

    #[test]
    fn table_rows_after_the_sample_keep_the_sampled_widths() {
        let mut rows: Vec<Value> = (0..TABLE_SAMPLE_ROWS)
            .map(|i| json!({"name": i % 10}))
            .collect();
        rows.push(json!({"name": "wider than the header"}));
        let out = render(RowFormat::Table, &rows);
        assert_eq!(out.lines().last(), Some("wid…"));
    }
}
