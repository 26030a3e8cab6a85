//! Profile identifiers from query rows: checked and normalised before anything is sent, so a row
//! Klaviyo would refuse is reported by the plan instead of failing inside a bulk job.
//!
//! Normalisation (the normalised value is what is hashed, deduplicated, stored and sent):
//! - `email`: surrounding whitespace trimmed, then lowercased as a whole. Klaviyo matches email
//!   addresses case-insensitively, so `Ann@X.com` and `ann@x.com` are one profile and must be
//!   one row. Syntax: one `@`, a non-empty local part, a domain with a dot that neither starts
//!   nor ends with one, no whitespace, at most 254 characters (Klaviyo's own rule plus RFC 5321's
//!   length limit).
//! - `phone_number`: surrounding whitespace trimmed and the usual separators (space, `-`, `.`,
//!   `(`, `)`) removed; the result must be E.164: `+`, a non-zero digit, 1 to 14 more digits.
//!   A national number without `+` is refused rather than guessed at.
//! - `external_id`: a string is taken as is (it is opaque) but must not be blank; an integer
//!   column becomes its decimal text, since ids are often numeric in the source database.

use serde_json::Value;

use crate::manifest::types::IdentifyBy;

/// Longest email address accepted (RFC 5321 path limit).
const MAX_EMAIL_LEN: usize = 254;

/// Why a row's identifier cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentifierProblem {
    /// The identifier column is NULL or empty.
    Missing,
    /// The identifier is not a string (or, for external_id, an integer).
    WrongType(&'static str),
    /// The email address is not syntactically valid.
    InvalidEmail,
    /// The phone number is not E.164.
    InvalidPhone,
}

impl std::fmt::Display for IdentifierProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdentifierProblem::Missing => f.write_str("identifier is missing (NULL or empty)"),
            IdentifierProblem::WrongType(found) => {
                write!(f, "identifier must be text, found {found}")
            }
            IdentifierProblem::InvalidEmail => f.write_str("invalid email address"),
            IdentifierProblem::InvalidPhone => {
                f.write_str("phone number is not E.164 (e.g. +15005550006)")
            }
        }
    }
}

/// The JSON type name of `value`, for messages.
pub fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The normalised identifier of `value`, or why it is unusable.
pub fn normalize(kind: IdentifyBy, value: &Value) -> Result<String, IdentifierProblem> {
    let text = match (kind, value) {
        (_, Value::Null) => return Err(IdentifierProblem::Missing),
        (_, Value::String(text)) => text.as_str(),
        (IdentifyBy::ExternalId, Value::Number(number)) if number.is_i64() || number.is_u64() => {
            return Ok(number.to_string());
        }
        (_, other) => return Err(IdentifierProblem::WrongType(json_type(other))),
    };
    normalize_text(kind, text)
}

/// [`normalize`] of a text value.
pub fn normalize_text(kind: IdentifyBy, text: &str) -> Result<String, IdentifierProblem> {
    let mut out = String::new();
    normalize_text_into(kind, text, &mut out)?;
    Ok(out)
}

/// [`normalize_text`] into `out` (cleared first; its content after an error is unspecified):
/// a million-row plan reuses one buffer.
pub fn normalize_text_into(
    kind: IdentifyBy,
    text: &str,
    out: &mut String,
) -> Result<(), IdentifierProblem> {
    out.clear();
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(IdentifierProblem::Missing);
    }
    match kind {
        IdentifyBy::Email => normalize_email(trimmed, out),
        IdentifyBy::PhoneNumber => normalize_phone(text, out),
        IdentifyBy::ExternalId => {
            out.push_str(text);
            Ok(())
        }
    }
}

/// `trimmed`: the address with surrounding whitespace trimmed.
fn normalize_email(trimmed: &str, email: &mut String) -> Result<(), IdentifierProblem> {
    // The same result for ASCII, without Unicode case tables: most addresses are ASCII.
    if trimmed.is_ascii() {
        email.push_str(trimmed);
        email.make_ascii_lowercase();
    } else {
        email.push_str(&trimmed.to_lowercase());
    }
    if email.len() <= MAX_EMAIL_LEN && email_syntax_ok(email.as_bytes()) {
        Ok(())
    } else {
        Err(IdentifierProblem::InvalidEmail)
    }
}

/// The syntax rules of the module documentation. Bytes of non-ASCII characters are all >= 0x80,
/// so they can be neither separators nor ASCII whitespace; the few non-ASCII whitespace and
/// control characters are checked on non-ASCII addresses only.
///
/// Written as whole-slice scans without early exits (a plan checks a million addresses): the
/// compiler turns them into a few vector instructions, where a loop branching on every byte
/// was most of the time spent normalising an address.
fn email_syntax_ok(email: &[u8]) -> bool {
    // ASCII whitespace and control characters.
    let controls = email.iter().fold(false, |found, &byte| {
        found | (byte <= b' ') | (byte == 0x7f)
    });
    if controls {
        return false;
    }
    let at = email.iter().position(|&byte| byte == b'@');
    let Some(at) = at else { return false };
    let (local, domain) = (&email[..at], &email[at + 1..]);
    if local.is_empty()
        || domain.contains(&b'@')
        || domain.first() == Some(&b'.')
        || domain.last() == Some(&b'.')
        || !domain.contains(&b'.')
        || domain.windows(2).any(|pair| pair == b"..")
    {
        return false;
    }
    email.is_ascii()
        || !std::str::from_utf8(email)
            .unwrap_or_default()
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
}

fn normalize_phone(text: &str, compact: &mut String) -> Result<(), IdentifierProblem> {
    compact.extend(
        text.trim()
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')')),
    );
    let valid = compact.strip_prefix('+').is_some_and(|digits| {
        (2..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0')
    });
    if valid {
        Ok(())
    } else {
        Err(IdentifierProblem::InvalidPhone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The syntax check as a plain loop over the bytes, as it was first written.
    fn email_syntax_ok_by_loop(email: &[u8]) -> bool {
        let mut at = None;
        for (index, &byte) in email.iter().enumerate() {
            match byte {
                0..=b' ' | 0x7f => return false,
                b'@' if at.is_some() => return false,
                b'@' => at = Some(index),
                _ => {}
            }
        }
        let Some(at) = at else { return false };
        let (local, domain) = (&email[..at], &email[at + 1..]);
        !(local.is_empty()
            || domain.first() == Some(&b'.')
            || domain.last() == Some(&b'.')
            || !domain.contains(&b'.')
            || domain.windows(2).any(|pair| pair == b".."))
            && (email.is_ascii()
                || !std::str::from_utf8(email)
                    .unwrap_or_default()
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control()))
    }

    #[test]
    fn the_scanning_syntax_check_agrees_with_the_byte_loop() {
        // Every string of up to 6 of these pieces: separators, each kind of refused byte, a
        // non-ASCII letter and a non-ASCII space, so each rule meets each position.
        let pieces = [
            "a", "@", ".", " ", "\t", "\u{7f}", "\u{1}", "é", "\u{a0}", "Z",
        ];
        let mut strings = vec![String::new()];
        let mut checked = 0;
        for _ in 0..6 {
            let mut longer = Vec::new();
            for string in &strings {
                for piece in pieces {
                    let candidate = format!("{string}{piece}");
                    let bytes = candidate.as_bytes();
                    assert_eq!(
                        email_syntax_ok(bytes),
                        email_syntax_ok_by_loop(bytes),
                        "{candidate:?}"
                    );
                    checked += 1;
                    longer.push(candidate);
                }
            }
            strings = longer;
        }
        assert_eq!(checked, (1..=6).map(|n| 10usize.pow(n)).sum::<usize>());
    }

    #[test]
    fn the_scanning_syntax_check_agrees_with_the_byte_loop_at_every_offset() {
        // Addresses up to 40 bytes long, each rule's byte put at every position, and dots in
        // pairs, next to each other or one apart: longer addresses than the test above builds.
        let mut checked = 0;
        for local in 1..=17 {
            for domain in 2..=22 {
                let base = [vec![b'a'; local], vec![b'@'], vec![b'b'; domain]].concat();
                for at in 0..base.len() {
                    for byte in [b'.', b'@', b' ', 0x7f, 0xc3] {
                        let mut one = base.clone();
                        one[at] = byte;
                        let mut candidates = vec![one.clone()];
                        for gap in [1, 2] {
                            if let Some(next) = one.get_mut(at + gap) {
                                *next = b'.';
                                candidates.push(one.clone());
                                one[at + gap] = base[at + gap];
                            }
                        }
                        for candidate in candidates {
                            assert_eq!(
                                email_syntax_ok(&candidate),
                                email_syntax_ok_by_loop(&candidate),
                                "{:?}",
                                String::from_utf8_lossy(&candidate)
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert!(checked > 100_000, "{checked}");
    }

    #[test]
    fn emails_are_trimmed_lowercased_and_checked() {
        assert_eq!(
            normalize(IdentifyBy::Email, &json!("  Ann.B+x@Example.CO.uk ")).unwrap(),
            "ann.b+x@example.co.uk"
        );
        for bad in [
            "ann",
            "@x.com",
            "a@b",
            "a@.x.com",
            "a@x.com.",
            "a b@x.com",
            "a@b@x.com",
            "a@x..com",
        ] {
            assert_eq!(
                normalize(IdentifyBy::Email, &json!(bad)),
                Err(IdentifierProblem::InvalidEmail),
                "{bad}"
            );
        }
        for bad in [
            "a\u{a0}b@x.com",
            "a@x\u{2003}.com",
            "a\u{85}@x.com",
            "\u{7f}a@x.com",
            "a\tb@x.com",
            "ann@",
            "ann@x",
            ".",
            "@",
            "",
        ] {
            assert!(!email_syntax_ok(bad.as_bytes()), "{bad:?}");
        }
        for good in ["é@x.fr", "ann@x.co", "a.b@c.d.e", "a..b@x.com", "x@y.z"] {
            assert!(email_syntax_ok(good.as_bytes()), "{good:?}");
        }
        let long = format!("{}@x.com", "a".repeat(250));
        assert_eq!(
            normalize(IdentifyBy::Email, &json!(long)),
            Err(IdentifierProblem::InvalidEmail)
        );
    }

    #[test]
    fn phones_lose_separators_and_must_be_e164() {
        assert_eq!(
            normalize(IdentifyBy::PhoneNumber, &json!("+1 (500) 555-0006")).unwrap(),
            "+15005550006"
        );
        for bad in [
            "15005550006",
            "+0123",
            "+1",
            "+1234567890123456",
            "+1 500 CALL",
        ] {
            assert_eq!(
                normalize(IdentifyBy::PhoneNumber, &json!(bad)),
                Err(IdentifierProblem::InvalidPhone),
                "{bad}"
            );
        }
    }

    #[test]
    fn external_ids_accept_text_and_integers_only() {
        assert_eq!(
            normalize(IdentifyBy::ExternalId, &json!(" c-1")).unwrap(),
            " c-1"
        );
        assert_eq!(normalize(IdentifyBy::ExternalId, &json!(42)).unwrap(), "42");
        assert_eq!(
            normalize(IdentifyBy::ExternalId, &json!(4.5)),
            Err(IdentifierProblem::WrongType("a number"))
        );
        assert_eq!(
            normalize(IdentifyBy::Email, &json!(null)),
            Err(IdentifierProblem::Missing)
        );
        assert_eq!(
            normalize(IdentifyBy::ExternalId, &json!("  ")),
            Err(IdentifierProblem::Missing)
        );
        assert_eq!(
            normalize(IdentifyBy::Email, &json!(7)),
            Err(IdentifierProblem::WrongType("a number"))
        );
    }
}
