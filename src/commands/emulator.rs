//! `klsync emulator`.

use crate::cli::EmulatorArgs;
use crate::error::{Error, ExitStatus};
use crate::run::Output;

pub fn run(args: EmulatorArgs, _output: &Output) -> Result<ExitStatus, Error> {
    let _ = args;
    Err(Error::Emulator("work in progress".into()))
}
