//! One statement per query. SQLite runs every statement of a text handed to it one after the
//! other (sqlx steps through them), so `SELECT a FROM t; SELECT b FROM u` would return the rows
//! of both as if they were one result; PostgreSQL's prepared statements refuse a second
//! statement on the server. This scanner finds a second statement in SQLite's lexical terms, so
//! both databases refuse it, and the message can say where it starts.

/// The 1-based line and column (in characters) where a second statement starts in `sql`, if
/// it has one: anything but whitespace, comments and empty statements after the first `;` that
/// is outside string literals, quoted identifiers and comments.
pub(super) fn second_statement(sql: &str) -> Option<(usize, usize)> {
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
