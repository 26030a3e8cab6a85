//! `klsync emulator`: run the local Klaviyo emulator until Ctrl-C.

use klsync_emulator::cli::{EmulatorArgs, error_chain};

use crate::error::{Error, ExitStatus};
use crate::run::Output;

/// Runs the emulator in the foreground.
pub fn run(args: EmulatorArgs, _output: &Output) -> Result<ExitStatus, Error> {
    let config = args.into_config().map_err(Error::Config)?;
    // The commands' runtime; its failure reported as the emulator's.
    let runtime = super::session::runtime().map_err(|e| Error::Emulator(e.to_string()))?;
    runtime
        .block_on(klsync_emulator::serve(config))
        .map_err(|e| Error::Emulator(error_chain(&e)))?;
    Ok(ExitStatus::Success)
}
