//! `klsync-emulator`: the emulator on its own, for tests and tools that want a Klaviyo without
//! the klsync binary. Takes the same flags as `klsync emulator`.

use std::process::ExitCode;

use clap::Parser;
use klsync_emulator::cli::{EmulatorArgs, error_chain};

/// A faithful, stateful Klaviyo emulator (the same one `klsync emulator` runs).
#[derive(Debug, Parser)]
#[command(name = "klsync-emulator", version)]
struct Cli {
    #[command(flatten)]
    args: EmulatorArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match cli.args.into_config() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let served = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|runtime| {
            runtime
                .block_on(klsync_emulator::serve(config))
                .map_err(|e| error_chain(&e))
        });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: emulator: {message}");
            ExitCode::from(1)
        }
    }
}
