//! The composition root: parse, set up logging, build what a command needs, run it, map the result
//! to an exit status. The only place (with `commands`) that decides which concrete clients and
//! pools exist.

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, ColorChoice, Command, GlobalArgs};
use crate::commands;
use crate::error::{Error, ExitStatus};

/// Entry point of the binary: never panics on bad input, never prints a stack trace.
pub fn main_entry() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            // --help and --version are "errors" to clap but succeed for the user.
            return if err.use_stderr() {
                ExitStatus::Usage.into()
            } else {
                ExitStatus::Success.into()
            };
        }
    };
    init_tracing(&cli.global);
    match run(cli) {
        Ok(status) => status.into(),
        Err(err) => {
            eprintln!("error: {err}");
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            err.exit_status().into()
        }
    }
}

/// Run one parsed command line.
pub fn run(cli: Cli) -> Result<ExitStatus, Error> {
    let output = Output::new(&cli.global);
    match cli.command {
        Command::Validate(args) => commands::validate::run(&args, &output),
        Command::Schema(args) => commands::schema::run(&args),
        Command::Emulator(args) => commands::emulator::run(args, &output),
        Command::Query(args) => commands::query::run(args, &output),
        Command::Plan(args) => commands::plan::run(&args, &output),
        Command::Apply(args) => commands::apply::run(&args, &output),
        Command::Demo(args) => commands::demo::run(&args, &output),
        Command::Import(args) => commands::import::run(&args, &output),
        Command::Drift(args) => commands::drift::run(&args, &output),
    }
}

/// How a command should write to the terminal.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// Colour stdout.
    pub color: bool,
    /// Print only errors.
    pub quiet: bool,
}

impl Output {
    fn new(global: &GlobalArgs) -> Self {
        use std::io::IsTerminal;
        let color = match global.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                    && std::io::stdout().is_terminal()
            }
        };
        Output {
            color,
            quiet: global.quiet,
        }
    }
}

fn init_tracing(global: &GlobalArgs) {
    use tracing_subscriber::EnvFilter;
    let default = match (global.quiet, global.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}
