//! The emulator's command line: one definition for `klsync emulator` and the `klsync-emulator`
//! binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::{EmulatorConfig, ImportErrorShape, Modes, RateLimitMode};

/// The emulator's command line, shared by `klsync emulator` and the `klsync-emulator` binary.
#[derive(Debug, Args)]
pub struct EmulatorArgs {
    /// Address to listen on (port 0 picks a free port and prints it).
    #[arg(long, default_value = "127.0.0.1:8787")]
    pub listen: SocketAddr,
    /// `real` enforces Klaviyo's published limits, `off` none, a number scales them (2 = twice as many).
    #[arg(long, default_value = "real", value_name = "real|off|FACTOR")]
    pub rate_limits: String,
    /// Injected faults, e.g. `429=0.1,500=0.05,reset=0.01,latency=50ms`.
    #[arg(long, value_name = "SPEC")]
    pub faults: Option<String>,
    /// Seed for fault injection and generated ids (same seed, same run).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Load state from this JSON file at start and save it there on shutdown.
    #[arg(long, value_name = "PATH")]
    pub state_file: Option<PathBuf>,
    /// API key the emulator accepts (repeatable). Defaults to KLAVIYO_API_KEY, else `pk_emulator`.
    /// `KEY:lists:read,lists:write` accepts the key with only those scopes (403 for the rest).
    #[arg(long = "api-key", value_name = "KEY[:SCOPES]")]
    pub api_keys: Vec<String>,
    /// How long a bulk import job stays `queued`, and then `processing`, before it completes
    /// (`2m` behaves like a busy Klaviyo; the spec gives no duration).
    #[arg(long, value_name = "DURATION", default_value = "50ms", value_parser = klsync_core::duration::parse_duration)]
    pub job_delay: Duration,
    /// How a bulk import job's import errors name the refused profile: `nested` (the profile as
    /// sent), `flat` (its attributes), `pointer` (only `source.pointer`, at its index in the job)
    /// or `opaque` (nothing names it).
    #[arg(
        long,
        default_value = "nested",
        value_name = "nested|flat|pointer|opaque"
    )]
    pub import_errors_shape: String,
    /// Store segment definitions in a canonical form (integers as floats, a default field added
    /// to each filter), as a Klaviyo that rewrites what it was sent would.
    #[arg(long)]
    pub canonicalize_segments: bool,
}

impl EmulatorArgs {
    /// The configuration these arguments ask for; an unknown mode is an error naming the flag's
    /// accepted values.
    pub fn into_config(self) -> Result<EmulatorConfig, String> {
        let rate_limits = RateLimitMode::parse(&self.rate_limits).map_err(|e| e.to_string())?;
        let modes = Modes {
            import_errors: ImportErrorShape::parse(&self.import_errors_shape)?,
            canonical_segments: self.canonicalize_segments,
        };
        let mut api_keys = self.api_keys;
        if api_keys.is_empty() {
            api_keys.push(
                std::env::var("KLAVIYO_API_KEY")
                    .ok()
                    .filter(|k| !k.is_empty())
                    .unwrap_or_else(|| "pk_emulator".to_owned()),
            );
        }
        Ok(EmulatorConfig {
            listen: self.listen,
            rate_limits,
            faults: self.faults,
            seed: self.seed,
            state_file: self.state_file,
            api_keys,
            job_delay: self.job_delay,
            modes,
            ..EmulatorConfig::default()
        })
    }
}

/// An error and its causes on one line: `outer: inner: innermost`.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
