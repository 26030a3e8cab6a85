//! `klsync.yaml`: project settings. Only names of environment variables live here, never secret
//! values: the file is committed to git.

use std::borrow::Cow;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use self::client_defaults as defaults;
use crate::duration::{format_exact, parse_duration};

/// The Klaviyo client's defaults, used where `klaviyo:` leaves a setting out.
pub mod client_defaults {
    use std::time::Duration;

    /// Default time to establish a connection (TCP and TLS).
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default time for one whole exchange, connect to last body byte. Klaviyo answers in well under
    /// a second normally and a few seconds at worst; 20 s also covers a 5 MB bulk import upload at
    /// 2 Mbit/s. Three of them in a row (the default breaker) fit in a minute.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
    /// Default attempts per request, first included.
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
    /// Default first backoff step.
    pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(500);
    /// Default number of attempts in a row without an answer after which the client stops sending.
    pub const DEFAULT_MAX_CONSECUTIVE_FAILURES: u32 = 3;
    /// Default run deadline: the default job limit of GitHub Actions, so a run stuck on a slow
    /// server stops on its own, cleanly, rather than being killed by CI; long enough for a sync of
    /// millions of rows at Klaviyo's rate limits.
    pub const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
}

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

/// Klaviyo connection settings. The timeouts and limits are explained in docs/operations.md
/// ("Timeouts and limits").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct KlaviyoSettings {
    /// Environment variable holding the private API key.
    pub api_key_env: String,
    /// Environment variable that overrides the API base URL (e.g. the emulator's).
    pub base_url_env: String,
    /// Klaviyo API revision sent in the `revision` header.
    pub revision: String,
    /// Time to establish a connection to Klaviyo (TCP and TLS).
    pub connect_timeout: DurationSetting,
    /// Time for one whole request, from connecting to the last byte of the answer. Raise it on
    /// a slow link: it must cover uploading a bulk import of up to 5 MB.
    pub request_timeout: DurationSetting,
    /// Attempts per request, the first included. A request is retried after a 429, and after a
    /// 5xx, a timeout or a dropped connection when it is safe to repeat.
    #[schemars(range(min = 1, max = 20))]
    pub max_attempts: u32,
    /// Wait before the first retry; it doubles with each further attempt (with jitter, at most
    /// 30 s). A 429 waits as long as Klaviyo's `Retry-After` says instead.
    pub retry_backoff: DurationSetting,
    /// Requests in a row (retries included; over all requests, or of one kind) that get no
    /// answer at all (a timeout, no connection) after which klsync stops sending to Klaviyo for
    /// the rest of the run and says which server failed.
    #[schemars(range(min = 1))]
    pub max_consecutive_failures: u32,
    /// No request to Klaviyo starts later than this after the command started; the command
    /// stops and says to run it again (apply resumes where it stopped).
    pub run_timeout: DurationSetting,
}

impl Default for KlaviyoSettings {
    fn default() -> Self {
        Self {
            api_key_env: "KLAVIYO_API_KEY".into(),
            base_url_env: "KLAVIYO_BASE_URL".into(),
            revision: "2026-07-15".into(),
            connect_timeout: DurationSetting(defaults::DEFAULT_CONNECT_TIMEOUT),
            request_timeout: DurationSetting(defaults::DEFAULT_REQUEST_TIMEOUT),
            max_attempts: defaults::DEFAULT_MAX_ATTEMPTS,
            retry_backoff: DurationSetting(defaults::DEFAULT_RETRY_BACKOFF),
            max_consecutive_failures: defaults::DEFAULT_MAX_CONSECUTIVE_FAILURES,
            run_timeout: DurationSetting(defaults::DEFAULT_RUN_TIMEOUT),
        }
    }
}

/// What a duration setting must look like: the syntax of [`parse_duration`], above zero.
pub(crate) const DURATION_PATTERN: &str = "^[0-9]*[1-9][0-9]*(ms|s|m|h|d)?$";

/// A duration in `klsync.yaml`, written as on the command line: `500ms`, `20s`, `10m`, `6h`,
/// `1d` (a bare number is seconds); never zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationSetting(pub Duration);

impl Serialize for DurationSetting {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_exact(self.0))
    }
}

impl<'de> Deserialize<'de> for DurationSetting {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match parse_duration(&text) {
            Ok(Duration::ZERO) => Err(serde::de::Error::custom(format!(
                "{text:?}: a duration here must be above zero"
            ))),
            Ok(duration) => Ok(DurationSetting(duration)),
            Err(reason) => Err(serde::de::Error::custom(reason)),
        }
    }
}

impl JsonSchema for DurationSetting {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
        })
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
    /// PostgreSQL: read queries without parameters through `COPY ... TO STDOUT` (`auto`, falling
    /// back to row-by-row reads when the server refuses it), or never (`off`: for engines and
    /// poolers that do not speak COPY).
    pub copy: CopyMode,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url_env: "DATABASE_URL".into(),
            statement_timeout_seconds: 60,
            copy: CopyMode::Auto,
        }
    }
}

/// `database.copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CopyMode {
    /// Use COPY where it applies; fall back when the server refuses it.
    Auto,
    /// Never use COPY.
    Off,
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

/// The `klsync.yaml` that `klsync init` and `klsync import` write: `version: 1` and every other
/// setting commented out at its default, with its description. Made from the same definitions as
/// the settings schema, so a new setting shows up here without anyone remembering to add it.
pub fn commented_settings_file(schema_file: &str) -> String {
    let schema = serde_json::to_value(super::settings_schema()).unwrap_or_default();
    let defaults = serde_json::to_value(ProjectSettings {
        version: 1,
        klaviyo: KlaviyoSettings::default(),
        database: DatabaseSettings::default(),
        state: StateSettings::default(),
        plan: PlanSettings::default(),
    })
    .unwrap_or_default();
    let mut text = format!(
        "# yaml-language-server: $schema={schema_file}\n\
         # klsync project settings. Only names of environment variables live here: this file is\n\
         # committed, secrets are not. Every setting but `version` is optional; uncomment one to\n\
         # change it. {schema_file} is `klsync schema settings`; regenerate it after upgrading.\n\
         version: 1\n"
    );
    let definitions = &schema["$defs"];
    let sections = defaults.as_object().into_iter().flatten();
    for (section, values) in sections.filter(|(name, _)| *name != "version") {
        let Some(values) = values.as_object() else {
            continue;
        };
        let reference = schema["properties"][section]["$ref"]
            .as_str()
            .and_then(|r| r.rsplit('/').next())
            .unwrap_or_default();
        let properties = &definitions[reference]["properties"];
        text.push_str(&format!("\n# {section}:\n"));
        for (key, value) in values {
            if let Some(description) = properties[key]["description"].as_str() {
                for line in description.lines() {
                    text.push_str(format!("#   # {line}").trim_end());
                    text.push('\n');
                }
            }
            let value = serde_yaml::to_string(value).unwrap_or_default();
            text.push_str(&format!("#   {key}: {}\n", value.trim_end()));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commented_settings_file_holds_every_setting_at_its_default() {
        let text = commented_settings_file("klsync-settings.schema.json");
        assert!(text.starts_with("# yaml-language-server: $schema=klsync-settings.schema.json\n"));
        let as_is: ProjectSettings = serde_yaml::from_str(&text).unwrap();
        // Uncommenting every setting (not its description) must give a valid file of defaults.
        let uncommented: String = text
            .lines()
            .filter_map(|line| match line.strip_prefix('#') {
                None => Some(line.to_owned()),
                Some(rest) => match rest.strip_prefix("   ") {
                    Some(setting) if !setting.starts_with('#') => Some(format!("  {setting}")),
                    Some(_) => None,
                    None => {
                        let section = rest.trim();
                        (section.ends_with(':') && !section.contains(' '))
                            .then(|| section.to_owned())
                    }
                },
            })
            .map(|line| line + "\n")
            .collect();
        let all: ProjectSettings =
            serde_yaml::from_str(&uncommented).unwrap_or_else(|err| panic!("{err}\n{uncommented}"));
        assert_eq!(all, as_is);
        for key in [
            "api_key_env",
            "run_timeout",
            "url_env",
            "statement_timeout_seconds",
            "max_age_hours",
        ] {
            assert!(
                uncommented.contains(&format!("  {key}: ")),
                "{key} missing:\n{text}"
            );
        }
    }

    #[test]
    fn defaults_fill_omitted_sections() {
        let settings: ProjectSettings = serde_json::from_str(r#"{"version": 1}"#).unwrap();
        assert_eq!(settings.klaviyo.api_key_env, "KLAVIYO_API_KEY");
        assert_eq!(settings.database.statement_timeout_seconds, 60);
        assert_eq!(settings.state.url_env, "KLSYNC_STATE_URL");
        assert_eq!(settings.plan.max_age_hours, 24);
        assert_eq!(
            settings.klaviyo.request_timeout,
            DurationSetting(defaults::DEFAULT_REQUEST_TIMEOUT)
        );
    }

    #[test]
    fn durations_are_written_as_on_the_command_line() {
        let settings: ProjectSettings = serde_json::from_str(
            r#"{"version": 1, "klaviyo": {"request_timeout": "750ms", "run_timeout": "2h"}}"#,
        )
        .unwrap();
        assert_eq!(
            settings.klaviyo.request_timeout,
            DurationSetting(Duration::from_millis(750))
        );
        assert_eq!(
            settings.klaviyo.run_timeout,
            DurationSetting(Duration::from_secs(7200))
        );
        let round_trip = serde_json::to_value(&settings.klaviyo).unwrap();
        assert_eq!(round_trip["request_timeout"], "750ms");
        assert_eq!(round_trip["connect_timeout"], "10s");
        for bad in ["0s", "soon", "-1s", "1.5s"] {
            let err = serde_json::from_str::<DurationSetting>(&format!("{bad:?}")).unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
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
