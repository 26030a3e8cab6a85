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

/// A connection URL with any password replaced by `***`, safe to print.
///
/// `postgres://app:hunter2@db/prod?sslmode=require` becomes
/// `postgres://app:***@db/prod?sslmode=require`. Query parameters named like passwords are
/// masked too, because libpq accepts `?password=` as well.
pub fn redact_url(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw) else {
        // Not a URL we understand: show only the scheme, never the rest.
        return match raw.split_once(':') {
            Some((scheme, _)) => format!("{scheme}:***"),
            None => "***".to_string(),
        };
    };
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    let masked: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let sensitive = k.to_ascii_lowercase().contains("password")
                || k.eq_ignore_ascii_case("sslpassword");
            (
                k.into_owned(),
                if sensitive {
                    "***".into()
                } else {
                    v.into_owned()
                },
            )
        })
        .collect();
    if !masked.is_empty() {
        url.query_pairs_mut().clear().extend_pairs(masked);
    }
    url.to_string()
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
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("x1"), "{shown}");
        assert!(shown.contains("sslmode=require"), "{shown}");
        assert_eq!(redact_url("sqlite://state.db"), "sqlite://state.db");
        assert_eq!(redact_url("not a url with secret"), "***");
    }
}
