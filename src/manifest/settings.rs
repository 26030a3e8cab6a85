//! `klsync.yaml`: project settings. Only names of environment variables live here, never secret
//! values: the file is committed to git.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The project settings file `klsync.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectSettings {
    /// Settings format version; must be `1`.
    #[schemars(range(min = 1, max = 1))]
    pub version: u32,
    /// How to reach Klaviyo.
    #[serde(default)]
    pub klaviyo: KlaviyoSettings,
    /// The database the SQL queries run against.
    #[serde(default)]
    pub database: DatabaseSettings,
    /// Where klsync keeps its state (id mappings, journal, audit).
    #[serde(default)]
    pub state: StateSettings,
    /// Saved-plan policy.
    #[serde(default)]
    pub plan: PlanSettings,
}

/// Klaviyo connection settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct KlaviyoSettings {
    /// Environment variable holding the private API key.
    pub api_key_env: String,
    /// Environment variable that overrides the API base URL (e.g. the emulator's).
    pub base_url_env: String,
    /// Klaviyo API revision sent in the `revision` header.
    pub revision: String,
}

impl Default for KlaviyoSettings {
    fn default() -> Self {
        Self {
            api_key_env: "KLAVIYO_API_KEY".into(),
            base_url_env: "KLAVIYO_BASE_URL".into(),
            revision: "2026-07-15".into(),
        }
    }
}

/// Database settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// Environment variable holding the database URL.
    pub url_env: String,
    /// Per-statement timeout for manifest queries.
    #[schemars(range(min = 1))]
    pub statement_timeout_seconds: u64,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url_env: "DATABASE_URL".into(),
            statement_timeout_seconds: 60,
        }
    }
}

/// State store settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct StateSettings {
    /// Environment variable holding the state database URL.
    pub url_env: String,
}

impl Default for StateSettings {
    fn default() -> Self {
        Self {
            url_env: "KLSYNC_STATE_URL".into(),
        }
    }
}

/// Saved-plan settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PlanSettings {
    /// A saved plan older than this is refused by `apply`.
    #[schemars(range(min = 1))]
    pub max_age_hours: u64,
}

impl Default for PlanSettings {
    fn default() -> Self {
        Self { max_age_hours: 24 }
    }
}

/// Keys that would hold a secret value. `klsync.yaml` is committed, so these are refused with a
/// hint to name an environment variable instead.
pub(crate) fn looks_like_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    if key.ends_with("_env") {
        return false;
    }
    const EXACT: &[&str] = &[
        "api_key",
        "apikey",
        "key",
        "password",
        "passwd",
        "token",
        "secret",
        "url",
        "base_url",
        "database_url",
        "state_url",
        "dsn",
    ];
    EXACT.contains(&key.as_str())
        || ["_key", "_token", "_password", "_secret", "_url"]
            .iter()
            .any(|suffix| key.ends_with(suffix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_omitted_sections() {
        let settings: ProjectSettings = serde_json::from_str(r#"{"version": 1}"#).unwrap();
        assert_eq!(settings.klaviyo.api_key_env, "KLAVIYO_API_KEY");
        assert_eq!(settings.database.statement_timeout_seconds, 60);
        assert_eq!(settings.state.url_env, "KLSYNC_STATE_URL");
        assert_eq!(settings.plan.max_age_hours, 24);
    }

    #[test]
    fn secret_keys_are_recognised() {
        for key in [
            "api_key",
            "API_KEY",
            "password",
            "database_url",
            "private_token",
        ] {
            assert!(looks_like_secret_key(key), "{key}");
        }
        for key in ["api_key_env", "url_env", "revision", "max_age_hours"] {
            assert!(!looks_like_secret_key(key), "{key}");
        }
    }
}
