//! One statement per query. SQLite runs every statement of a text handed to it one after the
//! other (sqlx steps through them), so `SELECT a FROM t; SELECT b FROM u` would return the rows
//! of both as if they were one result; PostgreSQL's prepared statements refuse a second
//! statement on the server. This scanner finds a second statement in SQLite's lexical terms, so
//! both databases refuse it, and the message can say where it starts.
//!
//! The other lexical checks of a query's text live here too: its placeholders and its first
//! keyword.

/// The 1-based line and column (in characters) where a second statement starts in `sql`, if
/// it has one: anything but whitespace, comments and empty statements after the first `;` that
/// is outside string literals, quoted identifiers and comments.
pub fn second_statement(sql: &str) -> Option<(usize, usize)> {
    let mut chars = sql.char_indices().peekable();
    let mut ended = false;
    while let Some((at, c)) = chars.next() {
        match c {
            '\'' | '"' | '`' => skip_quoted(&mut chars, c),
            '[' => skip_quoted(&mut chars, ']'),
            '-' if chars.peek().is_some_and(|(_, next)| *next == '-') => {
                for (_, c) in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek().is_some_and(|(_, next)| *next == '*') => {
                chars.next();
                let mut star = false;
                for (_, c) in chars.by_ref() {
                    if star && c == '/' {
                        break;
                    }
                    star = c == '*';
                }
            }
            ';' => ended = true,
            c if c.is_whitespace() => {}
            _ if ended => return Some(position(sql, at)),
            _ => {}
        }
    }
    None
}

/// Count SQL placeholders: the highest `$n` outside string literals, quoted identifiers,
/// dollar-quoted strings and comments.
pub fn highest_placeholder(sql: &str) -> usize {
    let chars: Vec<char> = sql.chars().collect();
    let mut highest = 0usize;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            '\'' | '"' => {
                i += 1;
                while i < chars.len() {
                    if chars[i] == c {
                        // A doubled quote is an escaped quote inside the literal.
                        if chars.get(i + 1) == Some(&c) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            '-' if next == Some('-') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if next == Some('*') => {
                i += 2;
                while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                    i += 1;
                }
                i += 2;
            }
            '$' => {
                let start = i + 1;
                let mut end = start;
                while end < chars.len() && chars[end].is_ascii_digit() {
                    end += 1;
                }
                if end > start {
                    let n: String = chars[start..end].iter().collect();
                    highest = highest.max(n.parse().unwrap_or(usize::MAX));
                    i = end;
                    continue;
                }
                // `$tag$ ... $tag$` (PostgreSQL dollar quoting): skip to the closing tag.
                while end < chars.len() && (chars[end].is_alphanumeric() || chars[end] == '_') {
                    end += 1;
                }
                if chars.get(end) == Some(&'$') {
                    let tag: String = chars[i..=end].iter().collect();
                    let rest: String = chars[end + 1..].iter().collect();
                    match rest.find(&tag) {
                        Some(close) => {
                            i = end + 1 + rest[..close].chars().count() + tag.chars().count()
                        }
                        None => i = chars.len(),
                    }
                    continue;
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    highest
}

/// Why `sql` cannot run with `given` parameters, if it cannot: each of `$1`..`$n` needs one.
///
/// This check knows no database (`klsync validate` connects to none), so it also accepts
/// MySQL's own syntax: a text without `$n` whose `?` marks (read as MySQL reads them) are as
/// many as the parameters. The database's own check is [`MySqlText::bind_order`] there.
pub fn placeholder_mismatch(sql: &str, given: usize) -> Option<String> {
    let highest = highest_placeholder(sql);
    if highest == 0 && given > 0 {
        let marks = MySqlText::parse(sql).marks.len();
        if marks == given {
            return None;
        }
        if marks > 0 {
            return Some(format!(
                "the SQL has {marks} `?` placeholder(s) but {given} parameter(s) are given"
            ));
        }
    }
    (highest != given).then(|| {
        let uses = if highest == 0 {
            "the SQL has no `$n` placeholders".to_owned()
        } else {
            format!("the SQL uses placeholders up to `${highest}`")
        };
        format!("{uses} but {given} parameter(s) are given")
    })
}

/// The statement's first keyword (upper-cased) and its 1-based line and column, after
/// whitespace, comments and opening parentheses; `None` for a text without one.
pub fn first_keyword(sql: &str) -> Option<(String, usize, usize)> {
    let mut rest = sql;
    loop {
        let trimmed = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '(');
        if let Some(comment) = trimmed.strip_prefix("--") {
            rest = comment.split_once('\n').map_or("", |(_, after)| after);
        } else if let Some(comment) = trimmed.strip_prefix("/*") {
            rest = comment.split_once("*/").map_or("", |(_, after)| after);
        } else {
            rest = trimmed;
            break;
        }
    }
    let word: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    if word.is_empty() {
        return None;
    }
    let (line, column) = position(sql, sql.len() - rest.len());
    Some((word.to_ascii_uppercase(), line, column))
}

/// A statement read as MySQL and MariaDB read it: string literals with backslash escapes,
/// `` `quoted` `` identifiers, `#` and `-- ` comments, and `/*! ... */` comments whose text the
/// server runs (so it is read as code here too). Byte offsets throughout.
#[derive(Debug, Default)]
pub struct MySqlText {
    /// `?` placeholders.
    pub marks: Vec<usize>,
    /// klsync's portable `$n` placeholders: where each is, and `n`.
    pub dollars: Vec<(std::ops::Range<usize>, usize)>,
    /// Where the text after the statement starts: its terminating `;` (only whitespace,
    /// comments and more `;` follow), else the end.
    pub end: usize,
    /// Where a second statement starts, if one does.
    pub second: Option<usize>,
    /// Where `INTO OUTFILE` / `INTO DUMPFILE` starts: a SELECT that writes a file on the
    /// database server, which a read-only transaction does not prevent.
    pub writes_file: Option<usize>,
}

/// The statement MySQL is sent for a query, with its parameters in the order of its `?`.
#[derive(Debug)]
pub struct MySqlStatement<T> {
    /// The text sent: the user's, without what follows its terminating `;`, and with `$n`
    /// placeholders turned into `?`.
    pub sql: String,
    /// The parameters, one per `?` in order.
    pub params: Vec<T>,
    /// Where text was replaced: (offset in `sql` after a `?`, offset in the user's text after
    /// its `$n`), in order.
    replaced: Vec<(usize, usize)>,
}

impl<T> MySqlStatement<T> {
    /// The byte offset in the user's text of byte offset `sent` of the statement sent.
    pub fn user_offset(&self, sent: usize) -> usize {
        match self.replaced.iter().rev().find(|(after, _)| *after <= sent) {
            Some((after, user_after)) => user_after + (sent - after),
            None => sent,
        }
    }
}

impl MySqlText {
    /// Read `sql` (see the type's docs).
    pub fn parse(sql: &str) -> MySqlText {
        let bytes = sql.as_bytes();
        let mut text = MySqlText {
            end: sql.len(),
            ..MySqlText::default()
        };
        let mut ended = false;
        // The previous word (upper-cased) and whether it was INTO, for `INTO OUTFILE`.
        let mut into_at: Option<usize> = None;
        let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            let next = bytes.get(i + 1).copied();
            let code_at = i;
            match b {
                b'\'' | b'"' | b'`' if !ended => {
                    i += 1;
                    while i < bytes.len() {
                        if bytes[i] == b'\\' && b != b'`' {
                            i += 2;
                            continue;
                        }
                        if bytes[i] == b {
                            if bytes.get(i + 1) == Some(&b) {
                                i += 2;
                                continue;
                            }
                            break;
                        }
                        i += 1;
                    }
                    i += 1;
                }
                b'#' => i = line_end(bytes, i),
                b'-' if next == Some(b'-')
                    && bytes
                        .get(i + 2)
                        .is_none_or(|c| c.is_ascii_whitespace() || c.is_ascii_control()) =>
                {
                    i = line_end(bytes, i)
                }
                b'/' if next == Some(b'*') => {
                    let rest = &bytes[i + 2..];
                    if rest.starts_with(b"!") || rest.starts_with(b"M!") {
                        // Code for the server: read on after the opener and its version.
                        i += if rest[0] == b'!' { 3 } else { 4 };
                        while i < bytes.len() && bytes[i].is_ascii_digit() {
                            i += 1;
                        }
                    } else {
                        i = sql[i + 2..]
                            .find("*/")
                            .map_or(bytes.len(), |at| i + 2 + at + 2);
                    }
                }
                b'*' if next == Some(b'/') => i += 2,
                b';' => {
                    if !ended {
                        text.end = i;
                    }
                    ended = true;
                    i += 1;
                }
                b if b.is_ascii_whitespace() => i += 1,
                _ if ended => {
                    text.second = Some(code_at);
                    break;
                }
                b'?' => {
                    text.marks.push(i);
                    i += 1;
                }
                b'$' if bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                    let mut end = i + 1;
                    while end < bytes.len() && bytes[end].is_ascii_digit() {
                        end += 1;
                    }
                    if bytes.get(end).is_some_and(|&c| is_word(c)) {
                        // `$1abc` is an identifier.
                        i = word_end(bytes, end, is_word);
                    } else {
                        let n = sql[i + 1..end].parse().unwrap_or(usize::MAX);
                        text.dollars.push((i..end, n));
                        i = end;
                    }
                    into_at = None;
                }
                b if is_word(b) => {
                    let end = word_end(bytes, i, is_word);
                    let word = &sql[i..end];
                    if let Some(into) = into_at
                        && (word.eq_ignore_ascii_case("OUTFILE")
                            || word.eq_ignore_ascii_case("DUMPFILE"))
                    {
                        text.writes_file.get_or_insert(into);
                    }
                    into_at = word.eq_ignore_ascii_case("INTO").then_some(i);
                    i = end;
                }
                _ => {
                    into_at = None;
                    i += 1;
                }
            }
        }
        text
    }

    /// The statement to send for `sql` (this text's) with `params`, checked: one parameter
    /// per `?`, or for `$n` placeholders (klsync's portable form, so a manifest's queries run
    /// on every database) exactly `$1`..`$n`, each bound where it is used.
    pub fn bind_order<T: Clone>(
        &self,
        sql: &str,
        params: Vec<T>,
    ) -> Result<MySqlStatement<T>, String> {
        let body = sql[..self.end].to_string();
        if self.dollars.is_empty() {
            if self.marks.len() != params.len() {
                return Err(format!(
                    "the SQL has {} `?` placeholder(s) but {} parameter(s) are given",
                    self.marks.len(),
                    params.len()
                ));
            }
            return Ok(MySqlStatement {
                sql: body,
                params,
                replaced: Vec::new(),
            });
        }
        if !self.marks.is_empty() {
            return Err(
                "the SQL mixes `?` and `$n` placeholders; use one kind (`?`: one parameter per mark, in order)"
                    .into(),
            );
        }
        let highest = self.dollars.iter().map(|(_, n)| *n).max().unwrap_or(0);
        if highest != params.len() || self.dollars.iter().any(|(_, n)| *n == 0) {
            return Err(format!(
                "the SQL uses placeholders up to `${highest}` but {} parameter(s) are given",
                params.len()
            ));
        }
        let mut sent = String::with_capacity(body.len());
        let mut ordered = Vec::with_capacity(self.dollars.len());
        let mut replaced = Vec::with_capacity(self.dollars.len());
        let mut copied = 0;
        for (range, n) in &self.dollars {
            sent.push_str(&body[copied..range.start]);
            sent.push('?');
            replaced.push((sent.len(), range.end));
            copied = range.end;
            ordered.push(params[n - 1].clone());
        }
        sent.push_str(&body[copied..]);
        Ok(MySqlStatement {
            sql: sent,
            params: ordered,
            replaced,
        })
    }
}

fn line_end(bytes: &[u8], from: usize) -> usize {
    bytes[from..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |at| from + at + 1)
}

fn word_end(bytes: &[u8], from: usize, is_word: impl Fn(u8) -> bool) -> usize {
    bytes[from..]
        .iter()
        .position(|&b| !is_word(b))
        .map_or(bytes.len(), |at| from + at)
}

/// The 1-based line and column (in characters) of byte offset `at` of `sql`.
pub fn line_column(sql: &str, at: usize) -> (usize, usize) {
    position(sql, at)
}

/// Skip to the closing `close`; a doubled closing quote is an escaped one.
fn skip_quoted(chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>, close: char) {
    while let Some((_, c)) = chars.next() {
        if c == close {
            if close != ']' && chars.peek().is_some_and(|(_, next)| *next == close) {
                chars.next();
                continue;
            }
            return;
        }
    }
}

/// The 1-based line and column of byte offset `at`.
fn position(sql: &str, at: usize) -> (usize, usize) {
    let before = &sql[..at];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit_once('\n')
        .map_or(before, |(_, last)| last)
        .chars()
        .count()
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_ignore_literals_and_comments() {
        assert_eq!(
            highest_placeholder("select * from t where a = $1 and b = $2"),
            2
        );
        assert_eq!(
            highest_placeholder("select '$3' as x, \"$4\" -- $5\n from t where a = $1"),
            1
        );
        assert_eq!(highest_placeholder("select 1 /* $9 */"), 0);
        assert_eq!(highest_placeholder("select $body$ $7 $body$ || $2"), 2);
        assert_eq!(highest_placeholder("select 'it''s $3' where x = $10"), 10);
    }

    #[test]
    fn first_keyword_skips_comments_and_parentheses() {
        assert_eq!(first_keyword("select 1"), Some(("SELECT".into(), 1, 1)));
        assert_eq!(
            first_keyword("-- vip\n /* x */ ((WITH a AS (select 1) select * from a"),
            Some(("WITH".into(), 2, 12))
        );
        assert_eq!(
            first_keyword("  delete from t"),
            Some(("DELETE".into(), 1, 3))
        );
        assert_eq!(first_keyword("-- nothing"), None);
    }

    #[test]
    fn placeholder_mismatch_says_what_the_sql_uses() {
        assert_eq!(placeholder_mismatch("select $1, $2", 2), None);
        assert_eq!(
            placeholder_mismatch("select $1, $2", 1).as_deref(),
            Some("the SQL uses placeholders up to `$2` but 1 parameter(s) are given")
        );
        assert_eq!(
            placeholder_mismatch("select 1", 1).as_deref(),
            Some("the SQL has no `$n` placeholders but 1 parameter(s) are given")
        );
    }

    #[test]
    fn one_statement_with_or_without_trailing_semicolons_and_comments() {
        for sql in [
            "SELECT 1",
            "SELECT 1;",
            "SELECT 1 ;  \n -- the end\n",
            "SELECT 1; /* done */ ;;",
            "SELECT ';' AS a, \"x;\" AS [b;], `c;` FROM t -- ; SELECT 2\n",
            "SELECT 'it''s; fine'",
            "SELECT 1 /* ; SELECT 2 */",
            "",
        ] {
            assert_eq!(second_statement(sql), None, "{sql:?}");
        }
    }

    #[test]
    fn mysql_placeholders_are_read_as_mysql_reads_them() {
        let text = MySqlText::parse(
            "SELECT ? AS a, '?\\' ?' AS b, `?` # ?\n, \"it\"\"s ?\" -- ?\n FROM t WHERE x = ?--?",
        );
        assert_eq!(text.marks.len(), 3, "{text:?}");
        let text = MySqlText::parse("SELECT $1, a$1, $2x, '$3' /* $4 */ /*! , $5 */ FROM t");
        let found: Vec<usize> = text.dollars.iter().map(|(_, n)| *n).collect();
        assert_eq!(found, [1, 5]);
        assert_eq!(text.second, None);
        let text = MySqlText::parse("SELECT 1; -- done\n;");
        assert_eq!((text.end, text.second), (8, None));
        assert_eq!(MySqlText::parse("SELECT 1;\nSELECT 2").second, Some(10));
        let file = MySqlText::parse("SELECT a FROM t INTO /* x */ OUTFILE '/tmp/x'");
        assert_eq!(file.writes_file, Some(16));
        assert_eq!(
            MySqlText::parse("SELECT 'INTO OUTFILE' FROM t").writes_file,
            None
        );
        assert_eq!(
            MySqlText::parse("SELECT a INTO @x FROM t").writes_file,
            None
        );
    }

    #[test]
    fn dollar_placeholders_become_marks_in_use_order() {
        let sql = "SELECT email FROM t WHERE a >= $2 AND b <= $1 OR c = $2; -- end";
        let text = MySqlText::parse(sql);
        let statement = text.bind_order(sql, vec!["one", "two"]).unwrap();
        assert_eq!(
            statement.sql,
            "SELECT email FROM t WHERE a >= ? AND b <= ? OR c = ?"
        );
        assert_eq!(statement.params, ["two", "one", "two"]);
        // "OR" in the sent text is where it is in the user's.
        let sent = statement.sql.find("OR").unwrap();
        assert_eq!(statement.user_offset(sent), sql.find("OR").unwrap());
        assert_eq!(statement.user_offset(3), 3);
        assert!(text.bind_order(sql, vec!["one"]).is_err());
        let mixed = "SELECT ? WHERE a = $1";
        assert!(
            MySqlText::parse(mixed)
                .bind_order(mixed, vec![1])
                .unwrap_err()
                .contains("mixes")
        );
        let marks = "SELECT ? WHERE a = ?";
        let err = MySqlText::parse(marks)
            .bind_order(marks, vec![1])
            .unwrap_err();
        assert_eq!(
            err,
            "the SQL has 2 `?` placeholder(s) but 1 parameter(s) are given"
        );
    }

    #[test]
    fn validate_accepts_either_placeholder_syntax() {
        assert_eq!(placeholder_mismatch("select ? where b = ?", 2), None);
        assert_eq!(
            placeholder_mismatch("select ? where b = ?", 1).as_deref(),
            Some("the SQL has 2 `?` placeholder(s) but 1 parameter(s) are given")
        );
        // PostgreSQL's jsonb `?` operator with no parameters is no placeholder.
        assert_eq!(placeholder_mismatch("select data ? 'k' from t", 0), None);
    }

    #[test]
    fn a_second_statement_is_found_where_it_starts() {
        assert_eq!(second_statement("SELECT 1; SELECT 2"), Some((1, 11)));
        assert_eq!(
            second_statement("SELECT email\nFROM a;\n  -- more\n  SELECT b FROM c"),
            Some((4, 3))
        );
        assert_eq!(second_statement("SELECT 'é';é"), Some((1, 12)));
        // An unterminated comment or literal swallows the rest, as SQLite's lexer does.
        assert_eq!(second_statement("SELECT 1; /* SELECT 2"), None);
    }
}
