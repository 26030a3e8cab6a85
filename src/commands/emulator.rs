//! `klsync emulator`: run the local Klaviyo emulator until Ctrl-C.

use crate::cli::EmulatorArgs;
use crate::emulator::{self, EmulatorConfig, ImportErrorShape, Modes, RateLimitMode};
use crate::error::{Error, ExitStatus};
use crate::run::Output;

/// Runs the emulator in the foreground.
pub fn run(args: EmulatorArgs, _output: &Output) -> Result<ExitStatus, Error> {
    let rate_limits =
        RateLimitMode::parse(&args.rate_limits).map_err(|e| Error::Config(e.to_string()))?;
    let modes = Modes {
        import_errors: ImportErrorShape::parse(&args.import_errors_shape).map_err(Error::Config)?,
        canonical_segments: args.canonicalize_segments,
    };
    let mut api_keys = args.api_keys;
    if api_keys.is_empty() {
        api_keys.push(
            std::env::var("KLAVIYO_API_KEY")
                .ok()
                .filter(|k| !k.is_empty())
                .unwrap_or_else(|| "pk_emulator".to_owned()),
        );
    }
    let config = EmulatorConfig {
        listen: args.listen,
        rate_limits,
        faults: args.faults,
        seed: args.seed,
        state_file: args.state_file,
        api_keys,
        job_delay: args.job_delay,
        modes,
        ..EmulatorConfig::default()
    };
    // The commands' runtime; its failure reported as the emulator's.
    let runtime = super::session::runtime().map_err(|e| Error::Emulator(e.to_string()))?;
    runtime
        .block_on(emulator::serve(config))
        .map_err(|e| Error::Emulator(error_chain(&e)))?;
    Ok(ExitStatus::Success)
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
