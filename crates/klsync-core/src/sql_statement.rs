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
pub fn placeholder_mismatch(sql: &str, given: usize) -> Option<String> {
    let highest = highest_placeholder(sql);
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
