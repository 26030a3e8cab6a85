//! `klsync validate`: load the project and print every problem found.
//!
//! Exit status: 0 when the project is valid (warnings allowed), 1 when it has errors or cannot
//! be loaded. Diagnostics go to stderr as text, or to stdout as one JSON document with
//! `--format json` (so CI can parse stdout while humans read stderr).

use super::session::print_stdout;

use crate::cli::{DiagnosticFormat, ValidateArgs};
use crate::error::{Error, ExitStatus};
use crate::manifest::diagnostic::{self, Diagnostic, Severity};
use crate::manifest::{self, ProjectError};
use crate::run::Output;

/// Run `klsync validate`.
pub fn run(args: &ValidateArgs, output: &Output) -> Result<ExitStatus, Error> {
    let result = manifest::load_project(&args.project.dir);
    let diagnostics: Vec<Diagnostic> = match &result {
        Ok(project) => project.warnings.clone(),
        Err(ProjectError::Invalid(diagnostics)) => diagnostics.clone(),
        Err(_) => Vec::new(),
    };
    let errors = diagnostic::count(&diagnostics, Severity::Error);
    let warnings = diagnostic::count(&diagnostics, Severity::Warning);
    match args.format {
        DiagnosticFormat::Json => {
            let text = match &result {
                Err(err @ (ProjectError::NotAProject { .. } | ProjectError::Io { .. })) => {
                    // A project that cannot be opened is still reported as JSON for CI.
                    let whole = Diagnostic::file_error(&args.project.dir, err.to_string());
                    diagnostic::render_json(&[whole])
                }
                _ => diagnostic::render_json(&diagnostics),
            };
            print_stdout(&text);
        }
        DiagnosticFormat::Text => {
            let shown: Vec<Diagnostic> = if output.quiet {
                diagnostics
                    .iter()
                    .filter(|d| d.severity == Severity::Error)
                    .cloned()
                    .collect()
            } else {
                diagnostics.clone()
            };
            eprint!("{}", diagnostic::render_text(&shown, output.color));
        }
    }
    match result {
        Ok(project) => {
            if args.format == DiagnosticFormat::Text && !output.quiet {
                let merged = project.merged();
                let groups = merged.tag_groups.len();
                let tags = merged.tags.len()
                    + merged
                        .tag_groups
                        .iter()
                        .map(|g| g.tags.len())
                        .sum::<usize>();
                print_stdout(&format!(
                    "ok: {} file(s) valid: {} list(s), {} segment(s), {} tag(s) in {} group(s), {} profile sync(s), {} query(ies){}\n",
                    project.files.len(),
                    merged.lists.len(),
                    merged.segments.len(),
                    tags,
                    groups,
                    merged.profiles.len(),
                    merged.queries.len(),
                    if warnings > 0 {
                        format!(", {warnings} warning(s)")
                    } else {
                        String::new()
                    }
                ));
            }
            Ok(ExitStatus::Success)
        }
        Err(ProjectError::Invalid(_)) => Err(Error::InvalidManifests { count: errors }),
        Err(other) => Err(other.into()),
    }
}
