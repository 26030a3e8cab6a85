//! Klaviyo's `filter=` query language: `op(field,value)` terms, comma-separated or nested in
//! `and(...)`, all ANDed. Strings are quoted, datetimes bare, lists bracketed.

/// A literal in a filter term.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// A quoted string.
    Str(String),
    /// `true` / `false`.
    Bool(bool),
    /// A bare number.
    Number(f64),
    /// A bare ISO-8601 datetime (kept as written; compared after parsing).
    DateTime(String),
    /// `["a","b"]`.
    List(Vec<Literal>),
    /// `null`.
    Null,
}

impl Literal {
    /// The string inside a `Str`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Literal::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// One `op(field,value)` term.
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    /// `equals`, `any`, `contains`, ...
    pub op: String,
    /// The field, e.g. `email` or `subscriptions.email.marketing.suppression.reason`.
    pub field: String,
    /// The literal.
    pub value: Literal,
}

/// Why a filter expression could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid filter provided: {0}")]
pub struct FilterError(pub String);

/// Parses a whole `filter=` value into its ANDed terms.
pub fn parse(input: &str) -> Result<Vec<Term>, FilterError> {
    let mut parser = Parser {
        chars: input.chars().collect(),
        pos: 0,
    };
    let mut terms = Vec::new();
    parser.term_list(&mut terms)?;
    parser.skip_ws();
    if parser.pos != parser.chars.len() {
        return Err(parser.error("unexpected trailing input"));
    }
    if terms.is_empty() {
        return Err(FilterError("empty filter".into()));
    }
    Ok(terms)
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn error(&self, what: &str) -> FilterError {
        FilterError(format!("{what} at position {}", self.pos))
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, c: char) -> Result<(), FilterError> {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(&format!("expected `{c}`")))
        }
    }

    fn term_list(&mut self, out: &mut Vec<Term>) -> Result<(), FilterError> {
        loop {
            self.term(out)?;
            self.skip_ws();
            if self.peek() == Some(',') {
                self.pos += 1;
            } else {
                return Ok(());
            }
        }
    }

    fn word(&mut self) -> String {
        self.skip_ws();
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '$'))
        {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    fn term(&mut self, out: &mut Vec<Term>) -> Result<(), FilterError> {
        let op = self.word();
        if op.is_empty() {
            return Err(self.error("expected an operator"));
        }
        self.expect('(')?;
        if op == "and" {
            self.term_list(out)?;
            return self.expect(')');
        }
        let field = self.word();
        if field.is_empty() {
            return Err(self.error("expected a field name"));
        }
        self.expect(',')?;
        let value = self.literal()?;
        self.expect(')')?;
        out.push(Term { op, field, value });
        Ok(())
    }

    fn literal(&mut self) -> Result<Literal, FilterError> {
        self.skip_ws();
        match self.peek() {
            Some(q @ ('\'' | '"')) => {
                self.pos += 1;
                let mut s = String::new();
                loop {
                    match self.peek() {
                        None => return Err(self.error("unterminated string")),
                        Some('\\') => {
                            self.pos += 1;
                            if let Some(c) = self.peek() {
                                s.push(c);
                                self.pos += 1;
                            }
                        }
                        Some(c) if c == q => {
                            self.pos += 1;
                            return Ok(Literal::Str(s));
                        }
                        Some(c) => {
                            s.push(c);
                            self.pos += 1;
                        }
                    }
                }
            }
            Some('[') => {
                self.pos += 1;
                let mut items = Vec::new();
                self.skip_ws();
                if self.peek() == Some(']') {
                    self.pos += 1;
                    return Ok(Literal::List(items));
                }
                loop {
                    items.push(self.literal()?);
                    self.skip_ws();
                    match self.peek() {
                        Some(',') => self.pos += 1,
                        Some(']') => {
                            self.pos += 1;
                            return Ok(Literal::List(items));
                        }
                        _ => return Err(self.error("expected `,` or `]`")),
                    }
                }
            }
            _ => {
                let start = self.pos;
                while self.peek().is_some_and(|c| {
                    c.is_ascii_alphanumeric() || matches!(c, '-' | '+' | ':' | '.')
                }) {
                    self.pos += 1;
                }
                let bare: String = self.chars[start..self.pos].iter().collect();
                match bare.as_str() {
                    "" => Err(self.error("expected a value")),
                    "true" => Ok(Literal::Bool(true)),
                    "false" => Ok(Literal::Bool(false)),
                    "null" => Ok(Literal::Null),
                    _ if chrono::DateTime::parse_from_rfc3339(&bare).is_ok()
                        || chrono::NaiveDate::parse_from_str(&bare, "%Y-%m-%d").is_ok() =>
                    {
                        Ok(Literal::DateTime(bare))
                    }
                    _ => bare.parse::<f64>().map(Literal::Number).map_err(|_| {
                        FilterError(format!(
                            "`{bare}` is not a valid value; strings must be quoted"
                        ))
                    }),
                }
            }
        }
    }
}

/// The string values a term selects: a single string or a list of strings.
pub fn string_values(value: &Literal) -> Option<Vec<String>> {
    match value {
        Literal::Str(s) => Some(vec![s.clone()]),
        Literal::List(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned))
            .collect(),
        _ => None,
    }
}

/// Parses a datetime literal (bare, as Klaviyo wants it) into UTC.
pub fn datetime_value(value: &Literal) -> Option<chrono::DateTime<chrono::Utc>> {
    let text = match value {
        Literal::DateTime(s) | Literal::Str(s) => s,
        _ => return None,
    };
    if let Ok(dt) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(dt.with_timezone(&chrono::Utc));
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|dt| dt.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_and_list_terms() {
        let terms = parse(r#"any(email,["a@x.com",'b@x.com'])"#).unwrap();
        assert_eq!(
            terms,
            vec![Term {
                op: "any".into(),
                field: "email".into(),
                value: Literal::List(vec![
                    Literal::Str("a@x.com".into()),
                    Literal::Str("b@x.com".into())
                ]),
            }]
        );
        let terms = parse("equals(name,['Newsletter'])").unwrap();
        assert_eq!(string_values(&terms[0].value).unwrap(), vec!["Newsletter"]);
    }

    #[test]
    fn parses_conjunctions_dates_and_booleans() {
        let terms = parse(
            "and(less-than(updated,2023-04-26T00:00:00Z),greater-than(updated,2023-04-19T00:00:00Z)),equals(exclusive,true)",
        )
        .unwrap();
        assert_eq!(terms.len(), 3);
        assert_eq!(terms[0].op, "less-than");
        assert!(datetime_value(&terms[1].value).is_some());
        assert_eq!(terms[2].value, Literal::Bool(true));
    }

    #[test]
    fn rejects_unquoted_strings_and_garbage() {
        assert!(parse("equals(email,a@x.com)").is_err());
        assert!(parse("equals(email,'a'").is_err());
        assert!(parse("equals(email)").is_err());
        assert!(parse("").is_err());
        assert!(parse("equals(email,'a') x").is_err());
        let err = parse("equals(name,bob)").unwrap_err();
        assert!(err.to_string().contains("must be quoted"), "{err}");
    }

    #[test]
    fn strings_keep_escaped_quotes() {
        let terms = parse(r"contains(name,'it\'s')").unwrap();
        assert_eq!(terms[0].value, Literal::Str("it's".into()));
    }
}
