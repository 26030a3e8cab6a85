//! `klsync schema`.

use crate::cli::SchemaArgs;
use crate::error::{Error, ExitStatus};

pub fn run(args: &SchemaArgs) -> Result<ExitStatus, Error> {
    let _ = args;
    Err(Error::Config("schema: work in progress".into()))
}
