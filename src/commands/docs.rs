//! `klsync completions` and `klsync man`: shell completions and man pages, generated from the
//! same clap definitions as the parser, so they cannot drift from the real command line.

use std::io::{self, Write};

use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs, ManArgs};
use crate::error::{Error, ExitStatus};
use crate::run::Output;

/// Print the completion script for `args.shell` on stdout.
pub fn completions(args: &CompletionsArgs) -> Result<ExitStatus, Error> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "klsync", &mut script);
    write_stdout(&script)
}

/// Print `klsync.1` on stdout, or write every page (`klsync.1`, `klsync-query-run.1`, ...)
/// into `--out`.
pub fn man(args: &ManArgs, output: &Output) -> Result<ExitStatus, Error> {
    let Some(dir) = &args.out else {
        let mut page = Vec::new();
        clap_mangen::Man::new(Cli::command())
            .render(&mut page)
            .map_err(stdout_error)?;
        return write_stdout(&page);
    };
    let io_error = |source| Error::Io {
        path: dir.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io_error)?;
    clap_mangen::generate_to(Cli::command(), dir).map_err(io_error)?;
    if !output.quiet {
        eprintln!("wrote man pages to {}", dir.display());
    }
    Ok(ExitStatus::Success)
}

fn write_stdout(bytes: &[u8]) -> Result<ExitStatus, Error> {
    let mut stdout = io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(ExitStatus::Success),
        // `klsync man | head` is fine.
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Ok(ExitStatus::Success),
        Err(err) => Err(stdout_error(err)),
    }
}

fn stdout_error(source: io::Error) -> Error {
    Error::Io {
        path: "<stdout>".into(),
        source,
    }
}
