//! The composition root: parse, set up logging, build what a command needs, run it, map the result
//! to an exit status. The only place (with `commands`) that decides which concrete clients and
//! pools exist.

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, ColorChoice, Command, GlobalArgs, QueryCommand, StateCommand};
use crate::commands;
use crate::error::{Error, ExitStatus};
use crate::klaviyo::HttpRecorder;
use crate::logging::{self, LogOptions, Verbosity};
use crate::metrics::{self, Recorder};
use crate::progress::Progress;

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
    let log_options = LogOptions::new(
        cli.global.log_format,
        cli.global.log_file.clone(),
        Verbosity {
            quiet: cli.global.quiet,
            verbose: cli.global.verbose,
        },
    );
    let _log_guard = match logging::init(&log_options) {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!("error: --log-file: {err}");
            return err.exit_status().into();
        }
    };
    match run(cli) {
        Ok(status) => status.into(),
        Err(err) => {
            eprint!("{}", error_report(&err));
            err.exit_status().into()
        }
    }
}

/// `error: ...` and its causes, each printed once: a cause whose text the lines above already
/// hold (wrappers often repeat their source in their own message) is left out.
fn error_report(err: &dyn std::error::Error) -> String {
    let mut report = format!("error: {err}\n");
    let mut said = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !said.contains(&text) {
            report.push_str(&format!("  caused by: {text}\n"));
            said.push('\n');
            said.push_str(&text);
        }
        source = cause.source();
    }
    report
}

/// Run one parsed command line.
pub fn run(cli: Cli) -> Result<ExitStatus, Error> {
    let output = Output::new(&cli.global)?;
    let name = command_name(&cli.command);
    tracing::info!(
        command = name,
        version = env!("CARGO_PKG_VERSION"),
        "run started"
    );
    let result = match cli.command {
        Command::Init(args) => commands::init::run(&args, &output),
        Command::Validate(args) => commands::validate::run(&args, &output),
        Command::Schema(args) => commands::schema::run(&args),
        #[cfg(feature = "emulator")]
        Command::Emulator(args) => commands::emulator::run(args, &output),
        Command::Query(args) => commands::query::run(args, &output),
        Command::Plan(args) => commands::plan::run(&args, &output),
        Command::Apply(args) => commands::apply::run(&args, &output),
        #[cfg(feature = "emulator")]
        Command::Demo(args) => commands::demo::run(&args, &output, cli.global.verbose > 0),
        Command::Import(args) => commands::import::run(&args, &output),
        Command::Drift(args) => commands::drift::run(&args, &output),
        Command::History(args) => commands::history::run(&args, &output),
        Command::State(args) => commands::state::run(&args, &output),
        Command::Completions(args) => commands::docs::completions(&args),
        Command::Man(args) => commands::docs::man(&args, &output),
    };
    finish_metrics(name, &cli.global, &output, result)
}

/// The command as a user would name it, for metrics.
fn command_name(command: &Command) -> &'static str {
    match command {
        Command::Init(_) => "init",
        Command::Validate(_) => "validate",
        Command::Schema(_) => "schema",
        #[cfg(feature = "emulator")]
        Command::Emulator(_) => "emulator",
        Command::Query(args) => match args.command {
            QueryCommand::Save(_) => "query save",
            QueryCommand::List => "query list",
            QueryCommand::Show(_) => "query show",
            QueryCommand::Run(_) => "query run",
            QueryCommand::Delete(_) => "query delete",
        },
        Command::Plan(_) => "plan",
        Command::Apply(_) => "apply",
        #[cfg(feature = "emulator")]
        Command::Demo(_) => "demo",
        Command::Import(_) => "import",
        Command::Drift(_) => "drift",
        Command::History(_) => "history",
        Command::State(args) => match args.command {
            StateCommand::Unlock(_) => "state unlock",
        },
        Command::Completions(_) => "completions",
        Command::Man(_) => "man",
    }
}

/// End of every run: print the summary of a command that recorded metrics (unless -q) and
/// write `--metrics-file`. A failure to write the file fails a run that succeeded; after a
/// failed run the original error is the one worth reporting.
fn finish_metrics(
    command: &str,
    global: &GlobalArgs,
    output: &Output,
    result: Result<ExitStatus, Error>,
) -> Result<ExitStatus, Error> {
    let status = match &result {
        Ok(status) => *status,
        Err(err) => err.exit_status(),
    };
    let snapshot = output
        .metrics
        .snapshot(command, metrics::outcome_name(status));
    tracing::info!(
        command,
        outcome = snapshot.outcome,
        duration_ms = snapshot.duration_ms,
        requests = snapshot.total_requests(),
        rows_read = snapshot.rows_read,
        "run finished"
    );
    if output.metrics.is_used() && !output.quiet {
        eprint!("{}", snapshot.summary_text());
    }
    if let Some(path) = &global.metrics_file {
        match (snapshot.write_json(path), &result) {
            (Err(err), Ok(_)) => return Err(err),
            (Err(err), Err(_)) => tracing::warn!("--metrics-file not written: {err}"),
            (Ok(()), _) => {}
        }
    }
    result
}

/// How a command should write to the terminal, and where it records the run's metrics.
#[derive(Debug, Clone)]
pub struct Output {
    /// Colour stdout.
    pub color: bool,
    /// Print only errors.
    pub quiet: bool,
    /// This run's counters (requests, rows, changes): see [`crate::metrics`].
    pub metrics: Recorder,
    /// `--record-http`: where the Klaviyo clients of this run record their exchanges.
    pub record_http: Option<HttpRecorder>,
}

impl Output {
    fn new(global: &GlobalArgs) -> Result<Self, Error> {
        use std::io::IsTerminal;
        let color = match global.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                    && std::io::stdout().is_terminal()
            }
        };
        let record_http = match &global.record_http {
            Some(path) => Some(HttpRecorder::create(path).map_err(|err| {
                Error::Config(format!(
                    "--record-http {}: cannot create the file: {err}",
                    path.display()
                ))
            })?),
            None => None,
        };
        Ok(Output {
            color,
            quiet: global.quiet,
            metrics: Recorder::new(),
            record_http,
        })
    }

    /// Progress bars on stderr: on when stderr is a terminal and not `-q`.
    pub fn progress(&self) -> Progress {
        Progress::for_stderr(self.quiet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Chain {
        text: &'static str,
        #[source]
        next: Option<Box<Chain>>,
    }

    fn chain(texts: &[&'static str]) -> Chain {
        let mut next = None;
        for text in texts.iter().rev() {
            next = Some(Box::new(Chain { text, next }));
        }
        *next.expect("one at least")
    }

    #[test]
    fn a_cause_already_said_is_not_repeated() {
        let err = chain(&[
            "query `big` failed: syntax error",
            "syntax error",
            "connection reset",
            "connection reset",
        ]);
        assert_eq!(
            error_report(&err),
            "error: query `big` failed: syntax error\n  caused by: connection reset\n"
        );
    }
}
