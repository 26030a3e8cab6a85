//! `klsync validate`.

use crate::cli::ValidateArgs;
use crate::error::{Error, ExitStatus};
use crate::run::Output;

pub fn run(args: &ValidateArgs, _output: &Output) -> Result<ExitStatus, Error> {
    let _ = args;
    Err(Error::Config("validate: work in progress".into()))
}
