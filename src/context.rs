//! What `plan` and `apply` connect to, built from `klsync.yaml` and the environment.
//!
//! `klsync.yaml` names environment variables; the values (API key, URLs) come from the
//! environment through a lookup function, so `klsync demo` can point the very same code at its
//! in-process emulator and temporary state without touching the user's real settings. Secrets
//! are wrapped in [`Secret`] on read and URLs are only ever shown through [`redact_url`].

use std::path::Path;

use crate::error::Error;
use crate::klaviyo::{ClientConfig, KlaviyoClient};
use crate::manifest::ProjectSettings;
use crate::manifest::types::ManifestFile;
use crate::run::Output;
use crate::settings::{DEFAULT_BASE_URL, Secret, redact_url};
use crate::sql::{QueryManager, QueryOptions};
use crate::state::StateStore;

/// Reads one environment variable; `None` when unset, empty or not UTF-8.
pub type EnvLookup<'a> = &'a (dyn Fn(&str) -> Option<String> + Sync);

/// The process environment, ignoring empty values.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
}

/// The Klaviyo client configuration: the key from `klaviyo.api_key_env`, the base URL from
/// `klaviyo.base_url_env` (default [`DEFAULT_BASE_URL`]), the configured revision, timeouts and
/// retry limits. The run deadline (`klaviyo.run_timeout`) counts from when the client is built.
pub fn client_config(
    settings: &ProjectSettings,
    env: EnvLookup<'_>,
) -> Result<ClientConfig, Error> {
    let key_var = &settings.klaviyo.api_key_env;
    let api_key = env(key_var).ok_or_else(|| {
        Error::Config(format!(
            "environment variable {key_var} is not set; it must hold a Klaviyo private API key \
             (pk_...). To try klsync without an account run `klsync demo`, or start \
             `klsync emulator` and set {key_var}=pk_emulator {}=http://127.0.0.1:8787",
            settings.klaviyo.base_url_env
        ))
    })?;
    let base_url =
        env(&settings.klaviyo.base_url_env).unwrap_or_else(|| DEFAULT_BASE_URL.to_string());
    check_base_url(&settings.klaviyo.base_url_env, &base_url)?;
    let mut config = ClientConfig::new(base_url, Secret::new(api_key));
    let klaviyo = &settings.klaviyo;
    config.revision = klaviyo.revision.clone();
    config.connect_timeout = klaviyo.connect_timeout.0;
    config.timeout = klaviyo.request_timeout.0;
    config.max_attempts = klaviyo.max_attempts;
    config.backoff_base = klaviyo.retry_backoff.0;
    config.max_consecutive_failures = klaviyo.max_consecutive_failures;
    config.run_timeout = Some(klaviyo.run_timeout.0);
    Ok(config)
}

/// Refuses a base URL klsync cannot send requests to, naming the variable it came from and the
/// fix: `127.0.0.1:8787` lacks its scheme.
fn check_base_url(var: &str, base_url: &str) -> Result<(), Error> {
    let shown = redact_url(base_url);
    let examples =
        "for example https://a.klaviyo.com, or http://127.0.0.1:8787 for `klsync emulator`";
    match url::Url::parse(base_url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Ok(()),
        Err(url::ParseError::RelativeUrlWithoutBase) | Ok(_) => Err(Error::Config(format!(
            "{var}={shown} is not an http(s) URL: add http:// or https:// ({examples})"
        ))),
        Err(err) => Err(Error::Config(format!(
            "{var}={shown} is not a valid URL: {err} ({examples})"
        ))),
    }
}

/// Whether the client paces itself to Klaviyo's published rate limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pacing {
    /// Klaviyo's published limits: always, against a real account.
    Published,
    /// No client-side pacing: only for an emulator that enforces no limits either.
    Off,
}

/// A Klaviyo client for `config`, paced as `pacing` says, recording its exchanges where the
/// run's `--record-http` says.
pub fn client(
    mut config: ClientConfig,
    pacing: Pacing,
    output: &Output,
) -> Result<KlaviyoClient, Error> {
    if pacing == Pacing::Off {
        config.rate_limit_factor = None;
    }
    config.record_http = output.record_http.clone();
    let shown = redact_url(&config.base_url);
    KlaviyoClient::new(config)
        .map_err(|err| Error::Config(format!("Klaviyo base URL {shown}: {err}")))
}

/// The state database URL: the value of `state.url_env`, else the SQLite file under `dir`.
pub fn state_url(settings: &ProjectSettings, dir: &Path, env: EnvLookup<'_>) -> String {
    StateStore::resolve_url(env(&settings.state.url_env).as_deref(), dir)
}

/// Open (and migrate) the state database.
pub async fn connect_state(url: &str) -> Result<StateStore, Error> {
    Ok(StateStore::connect(url).await?)
}

/// The manifest sections whose data comes from SQL, e.g. `profiles: ltv` and
/// `members: of lists vip, win-back`; empty when there are none.
pub fn data_sections(manifest: &ManifestFile) -> Vec<String> {
    let mut sections = Vec::new();
    if !manifest.profiles.is_empty() {
        let ids: Vec<&str> = manifest.profiles.iter().map(|p| p.id.as_str()).collect();
        sections.push(format!("profiles: {}", ids.join(", ")));
    }
    let lists: Vec<&str> = manifest
        .lists
        .iter()
        .filter(|list| list.members.is_some())
        .map(|list| list.id.as_str())
        .collect();
    if !lists.is_empty() {
        sections.push(format!("members: of lists {}", lists.join(", ")));
    }
    sections
}

/// The database the data syncs read and how: [`data_source`] checks the settings, and
/// [`DataSource::connect`] opens it, so a missing variable is reported before anything opens.
pub struct DataSource {
    url: Secret,
    options: QueryOptions,
}

/// The database the data syncs read, from `database.url_env` with
/// `database.statement_timeout_seconds`; `None` when the manifests declare no data sync (the
/// variable is then not needed).
pub fn data_source(
    settings: &ProjectSettings,
    manifest: &ManifestFile,
    env: EnvLookup<'_>,
) -> Result<Option<DataSource>, Error> {
    let sections = data_sections(manifest);
    if sections.is_empty() {
        return Ok(None);
    }
    let var = &settings.database.url_env;
    let url = env(var).ok_or_else(|| {
        Error::Config(format!(
            "environment variable {var} is not set; it must hold the URL of the database the \
             data queries read (postgres://..., mysql://... or sqlite:...), needed by {} \
             (database.url_env in klsync.yaml names the variable)",
            sections.join(" and ")
        ))
    })?;
    let options = QueryOptions {
        statement_timeout: std::time::Duration::from_secs(
            settings.database.statement_timeout_seconds,
        ),
        copy: settings.database.copy == crate::manifest::settings::CopyMode::Auto,
        ..QueryOptions::default()
    };
    Ok(Some(DataSource {
        url: Secret::new(url),
        options,
    }))
}

impl DataSource {
    /// Connect to the database.
    pub async fn connect(self) -> Result<QueryManager, Error> {
        Ok(QueryManager::connect(&self.url, self.options).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ProjectSettings {
        serde_json::from_str(r#"{"version": 1}"#).expect("settings")
    }

    #[test]
    fn a_missing_key_names_the_variable_and_the_way_out() {
        let env = |_: &str| None;
        let err = client_config(&settings(), &env).expect_err("no key");
        let message = err.to_string();
        assert!(message.contains("KLAVIYO_API_KEY"), "{message}");
        assert!(message.contains("klsync demo"), "{message}");
    }

    #[test]
    fn base_url_defaults_to_klaviyo_and_follows_the_named_variable() {
        let env = |name: &str| (name == "KLAVIYO_API_KEY").then(|| "pk_x".to_string());
        let config = client_config(&settings(), &env).expect("config");
        assert_eq!(config.base_url, DEFAULT_BASE_URL);
        assert_eq!(config.api_key.expose(), "pk_x");
        let env = |name: &str| match name {
            "KLAVIYO_API_KEY" => Some("pk_x".to_string()),
            "KLAVIYO_BASE_URL" => Some("http://127.0.0.1:9".to_string()),
            _ => None,
        };
        assert_eq!(
            client_config(&settings(), &env).expect("config").base_url,
            "http://127.0.0.1:9"
        );
    }

    #[test]
    fn a_base_url_without_a_scheme_is_named_with_its_variable_and_the_fix() {
        for (url, expected) in [
            (
                "127.0.0.1:18787",
                "KLAVIYO_BASE_URL=127.0.0.1:18787 is not an http(s) URL: add http:// or https://",
            ),
            // Shown masked: a value with no `:`, `/` or `=` may be a key set in the wrong variable.
            (
                "a.klaviyo.com",
                "KLAVIYO_BASE_URL=*** is not an http(s) URL: add http:// or https://",
            ),
            (
                "ftp://a.klaviyo.com",
                "KLAVIYO_BASE_URL=ftp://a.klaviyo.com is not an http(s) URL",
            ),
            (
                "http://[::1",
                "KLAVIYO_BASE_URL=http://[::1 is not a valid URL",
            ),
        ] {
            let env = |name: &str| match name {
                "KLAVIYO_API_KEY" => Some("pk_x".to_string()),
                "KLAVIYO_BASE_URL" => Some(url.to_string()),
                _ => None,
            };
            let err = client_config(&settings(), &env).expect_err(url).to_string();
            assert!(err.starts_with(expected), "{url}: {err}");
        }
    }

    #[test]
    fn timeouts_and_limits_come_from_the_klaviyo_settings() {
        let env = |name: &str| (name == "KLAVIYO_API_KEY").then(|| "pk_x".to_string());
        let settings: ProjectSettings = serde_json::from_value(serde_json::json!({
            "version": 1,
            "klaviyo": {"connect_timeout": "2s", "request_timeout": "750ms", "max_attempts": 2,
                "retry_backoff": "10ms", "max_consecutive_failures": 7, "run_timeout": "1h"}
        }))
        .expect("settings");
        let config = client_config(&settings, &env).expect("config");
        assert_eq!(config.connect_timeout, std::time::Duration::from_secs(2));
        assert_eq!(config.timeout, std::time::Duration::from_millis(750));
        assert_eq!(config.max_attempts, 2);
        assert_eq!(config.backoff_base, std::time::Duration::from_millis(10));
        assert_eq!(config.max_consecutive_failures, 7);
        assert_eq!(
            config.run_timeout,
            Some(std::time::Duration::from_secs(3600))
        );
    }

    #[test]
    fn the_database_is_needed_only_by_data_syncs_and_named_when_missing() {
        let env = |_: &str| None;
        let manifest: ManifestFile = serde_json::from_value(serde_json::json!({
            "lists": [
                {"id": "vip", "name": "VIP", "members": {"query": "q", "identify_by": "email"}},
                {"id": "plain", "name": "Plain"}
            ]
        }))
        .expect("manifest");
        let none = data_source(&settings(), &ManifestFile::default(), &env);
        assert!(none.expect("no data syncs, no database").is_none());
        let Err(err) = data_source(&settings(), &manifest, &env) else {
            panic!("no DATABASE_URL, yet a data source");
        };
        let message = err.to_string();
        assert!(message.contains("DATABASE_URL"), "{message}");
        assert!(message.contains("members: of lists vip"), "{message}");
        assert!(!message.contains("plain"), "{message}");
    }

    #[test]
    fn state_url_defaults_to_the_project_sqlite_file() {
        let env = |_: &str| None;
        let url = state_url(&settings(), Path::new("/p"), &env);
        assert_eq!(url, "sqlite:///p/.klsync/state.db");
        let env = |_: &str| Some("postgres://db/x".to_string());
        assert_eq!(
            state_url(&settings(), Path::new("/p"), &env),
            "postgres://db/x"
        );
    }
}
