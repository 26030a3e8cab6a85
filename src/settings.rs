//! Values taken from the environment, and the rules for keeping secrets out of output.
//!
//! Secrets (the Klaviyo API key, database passwords) never appear in YAML: `klsync.yaml` names the
//! environment variables that hold them. They are wrapped in [`Secret`] as soon as they are read so
//! that `Debug`, `Display`, logs and error messages can only ever print `[redacted]`.

use std::fmt;

/// Default Klaviyo API origin. `KLAVIYO_BASE_URL` overrides it (the emulator, a proxy).
pub const DEFAULT_BASE_URL: &str = "https://a.klaviyo.com";
/// The Klaviyo API revision klsync is written against.
pub const DEFAULT_REVISION: &str = "2026-07-15";

/// A secret string whose `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must send it (an HTTP header, a DB connect).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A connection URL or connection string with anything shaped like a credential replaced by
/// `***`, safe to print. It works on the text, so a mistyped URL that no parser accepts is
/// masked as well as a well-formed one:
///
/// - userinfo: the password of `scheme://user:password@host` and, when the text is not a
///   well-formed `scheme://` URL (`postgres:/user:pw@host`, `user:pw@host`), everything before
///   the `@` from the first `:` on (or, with no `:`, from a second `@` on: `user@pw@host`);
/// - `key=value` pairs whose key names a secret (`password`, `sslpassword`, `passwd`, `pwd`,
///   `token`, `secret`, ...; percent-encoded keys included) in a query string
///   (`?password=`), a libpq conninfo string (`host=db password='a b'`) or an ODBC-style string
///   (`Pwd=...;`);
/// - a bare word with no `:`, `/` or `=` (a password pasted into the wrong variable).
///
/// A `host:port` with no `@` carries no credentials and is shown as it is.
pub fn redact_url(raw: &str) -> String {
    if !raw.contains([':', '/', '=']) {
        return "***".to_owned();
    }
    mask_userinfo(&mask_secret_pairs(raw))
}

const MASK: &str = "***";

/// Mask the userinfo before the last `@` (a password may contain `@`; a host never does).
fn mask_userinfo(text: &str) -> String {
    let Some(at) = text.rfind('@') else {
        return text.to_owned();
    };
    let (head, tail) = text.split_at(at);
    let authority = scheme_slashes_len(head);
    let userinfo = &head[authority..];
    // `user@pw@host` is most likely a mistyped `user:pw@host`.
    match userinfo.find(':').or_else(|| userinfo.find('@')) {
        Some(cut) => format!(
            "{}{}{MASK}{tail}",
            &head[..authority + cut],
            &userinfo[cut..=cut]
        ),
        None => text.to_owned(),
    }
}

/// The length of a leading `scheme://`, or 0.
fn scheme_slashes_len(text: &str) -> usize {
    let scheme_len = text
        .char_indices()
        .take_while(|&(i, c)| {
            c.is_ascii_alphabetic() || (i > 0 && (c.is_ascii_digit() || "+.-".contains(c)))
        })
        .count();
    if scheme_len > 0 && text[scheme_len..].starts_with("://") {
        scheme_len + 3
    } else {
        0
    }
}

/// Mask the value of every `key=value` pair whose key names a secret.
fn mask_secret_pairs(text: &str) -> String {
    let mut shown = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(eq) = rest.find('=') {
        let (before, after) = rest.split_at(eq);
        let after = &after[1..];
        shown.push_str(before);
        shown.push('=');
        if names_a_secret(key_before(before)) {
            let value = after.trim_start();
            shown.push_str(&after[..after.len() - value.len()]);
            shown.push_str(MASK);
            rest = &value[secret_value_len(value)..];
        } else {
            rest = after;
        }
    }
    shown.push_str(rest);
    shown
}

/// The key that ends `text` (spaces before the `=` allowed, as libpq does).
fn key_before(text: &str) -> &str {
    let text = text.trim_end();
    let start = text
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || "_-.%[]".contains(c)))
        .map_or(0, |i| i + 1);
    &text[start..]
}

fn names_a_secret(key: &str) -> bool {
    // Decoded as libpq decodes a query string's keys: `%70assword` is `password`.
    let decoded = url::form_urlencoded::parse(key.as_bytes())
        .next()
        .map(|(key, _)| key.to_ascii_lowercase())
        .unwrap_or_default();
    [
        "password", "passwd", "secret", "token", "apikey", "api_key", "api-key",
    ]
    .iter()
    .any(|word| decoded.contains(word))
        || matches!(decoded.as_str(), "pwd" | "pass")
}

/// Bytes of the value at the start of `value`: a quoted value to its closing quote (libpq
/// escapes with `\`), else up to whitespace, `&` or `;`.
fn secret_value_len(value: &str) -> usize {
    let mut chars = value.char_indices();
    match chars.next() {
        Some((_, quote @ ('\'' | '"'))) => {
            let mut escaped = false;
            for (i, c) in chars {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    c if c == quote => return i + c.len_utf8(),
                    _ => {}
                }
            }
            value.len()
        }
        _ => value
            .find(|c: char| c.is_whitespace() || c == '&' || c == ';')
            .unwrap_or(value.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_formats_its_value() {
        let key = Secret::new("pk_live_abcdef");
        assert!(!format!("{key:?}").contains("abcdef"));
        assert!(!format!("{key}").contains("abcdef"));
        assert_eq!(key.expose(), "pk_live_abcdef");
    }

    #[test]
    fn redact_url_masks_password_in_userinfo_and_query() {
        let shown = redact_url("postgres://app:hunter2@db:5432/prod?sslmode=require&password=x1");
        assert_eq!(
            shown,
            "postgres://app:***@db:5432/prod?sslmode=require&password=***"
        );
        assert_eq!(redact_url("sqlite://state.db"), "sqlite://state.db");
        assert_eq!(redact_url("hunter2"), "***");
    }

    /// Finding 4 of issue 11: mistyped URLs that no parser accepts were printed whole.
    #[test]
    fn credentials_are_masked_whether_or_not_the_url_parses() {
        let cases = [
            ("postgres:/user:PW@host/db", "postgres:***@host/db"),
            ("user:PW@host/db", "user:***@host/db"),
            ("postgres:user:PW@host/db", "postgres:***@host/db"),
            (
                "postgres:///user:PW@host/db",
                "postgres:///user:***@host/db",
            ),
            (
                "postgres://user:p@ss:PW@host/db",
                "postgres://user:***@host/db",
            ),
            (
                "postgres://u:PW@host:notaport/db",
                "postgres://u:***@host:notaport/db",
            ),
            (
                "postgres://u@host/db?sslpassword=PW",
                "postgres://u@host/db?sslpassword=***",
            ),
            (
                "postgres://u@host/db?%70assword=PW&x=1",
                "postgres://u@host/db?%70assword=***&x=1",
            ),
            (
                "host=db user=u password=PW dbname=x",
                "host=db user=u password=*** dbname=x",
            ),
            (
                "host=db password = 'P W' port=1",
                "host=db password = *** port=1",
            ),
            (
                r"host=db password='P\' W' port=1",
                "host=db password=*** port=1",
            ),
            ("host=db:5432 password=P@W", "host=db:5432 password=***"),
            ("Server=db;Uid=u;Pwd=PW;", "Server=db;Uid=u;Pwd=***;"),
            (
                "https://a.klaviyo.com/?api_key=PW",
                "https://a.klaviyo.com/?api_key=***",
            ),
        ];
        for (raw, expected) in cases {
            let shown = redact_url(raw);
            assert_eq!(shown, expected, "{raw}");
            assert!(!shown.contains("PW"), "{raw} -> {shown}");
        }
    }

    #[test]
    fn text_without_credentials_is_shown_as_it_is() {
        for raw in [
            "127.0.0.1:18787",
            "http://127.0.0.1:18787",
            "postgres://klsync@db/state?sslmode=require",
            "postgresql:///db?host=/var/run/postgresql",
            "sqlite:state.db",
            "https://a.klaviyo.com",
        ] {
            assert_eq!(redact_url(raw), raw);
        }
    }
}
