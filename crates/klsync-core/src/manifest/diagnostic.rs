//! Problems found in a project, and how they are printed.
//!
//! Text format, one problem per block, stable so CI logs and snapshots can rely on it:
//!
//! ```text
//! error: lists.yaml:5:7: lists[0].nmae: unknown field `nmae`
//!   hint: did you mean `name`?
//!   related: other.yaml:3:5
//! ```

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

use crate::render::sanitize;

/// How bad a problem is. Errors make the project invalid; warnings do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The project cannot be used.
    Error,
    /// Worth a look, but the project is usable.
    Warning,
}

/// A place in a file, 1-based.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Related {
    /// File, relative to the project directory.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

/// One problem, pointing at the file, line and column it is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// File, relative to the project directory.
    pub file: PathBuf,
    /// 1-based line (0 when the problem is about the file as a whole).
    pub line: usize,
    /// 1-based column (0 when the problem is about the file as a whole).
    pub column: usize,
    /// Path of the field, such as `lists[0].name` (empty for the whole file).
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The other place involved, e.g. the first declaration of a duplicate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub related: Option<Related>,
}

impl Diagnostic {
    /// An error about a whole file.
    pub fn file_error(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            file: file.into(),
            line: 0,
            column: 0,
            field: String::new(),
            message: message.into(),
            hint: None,
            related: None,
        }
    }

    /// Attach a hint.
    #[must_use]
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// `file:line:column`, or just `file` for whole-file problems.
    pub fn location(&self) -> String {
        location(&self.file, self.line, self.column)
    }

    /// Sort key: file, position, then message, so output order never depends on check order.
    fn sort_key(&self) -> (&PathBuf, usize, usize, &str, &str) {
        (
            &self.file,
            self.line,
            self.column,
            &self.field,
            &self.message,
        )
    }
}

fn location(file: &std::path::Path, line: usize, column: usize) -> String {
    let file = file.display().to_string().replace('\\', "/");
    if line == 0 {
        file
    } else {
        format!("{file}:{line}:{column}")
    }
}

/// Sort diagnostics into their stable print order and drop exact duplicates.
pub fn sort(diagnostics: &mut Vec<Diagnostic>) {
    diagnostics.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    diagnostics.dedup();
}

/// Render diagnostics as text; `color` adds ANSI colours to the severity and hint labels.
pub fn render_text(diagnostics: &[Diagnostic], color: bool) -> String {
    let paint = |code: &str, text: &str| {
        if color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    };
    let mut out = String::new();
    for d in diagnostics {
        let label = match d.severity {
            Severity::Error => paint("1;31", "error"),
            Severity::Warning => paint("1;33", "warning"),
        };
        // Messages quote names and values from the manifests: no terminal escapes, and invisible
        // characters shown, as in plans.
        let field = if d.field.is_empty() {
            String::new()
        } else {
            format!(" {}:", sanitize(&d.field))
        };
        let message = sanitize(&d.message);
        let _ = writeln!(out, "{label}: {}:{field} {message}", d.location());
        if let Some(hint) = &d.hint {
            let _ = writeln!(out, "  {}: {}", paint("36", "hint"), sanitize(hint));
        }
        if let Some(r) = &d.related {
            let _ = writeln!(out, "  related: {}", location(&r.file, r.line, r.column));
        }
    }
    out
}

/// Render diagnostics as a JSON document `{"valid": bool, "errors": n, "warnings": n,
/// "diagnostics": [...]}` with a trailing newline.
pub fn render_json(diagnostics: &[Diagnostic]) -> String {
    let errors = count(diagnostics, Severity::Error);
    let doc = serde_json::json!({
        "valid": errors == 0,
        "errors": errors,
        "warnings": count(diagnostics, Severity::Warning),
        "diagnostics": diagnostics,
    });
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.push('\n');
    text
}

/// How many diagnostics have this severity.
pub fn count(diagnostics: &[Diagnostic], severity: Severity) -> usize {
    diagnostics
        .iter()
        .filter(|d| d.severity == severity)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            file: "lists.yaml".into(),
            line: 5,
            column: 7,
            field: "lists[0].nmae".into(),
            message: "unknown field `nmae`".into(),
            hint: Some("did you mean `name`?".into()),
            related: Some(Related {
                file: "b.yaml".into(),
                line: 1,
                column: 2,
            }),
        }
    }

    #[test]
    fn text_format_is_compact_and_stable() {
        assert_eq!(
            render_text(&[sample()], false),
            "error: lists.yaml:5:7: lists[0].nmae: unknown field `nmae`\n  hint: did you mean `name`?\n  related: b.yaml:1:2\n"
        );
        assert!(render_text(&[sample()], true).contains("\x1b[1;31merror"));
        let whole = Diagnostic::file_error("a.yaml", "too big");
        assert_eq!(render_text(&[whole], false), "error: a.yaml: too big\n");
    }

    #[test]
    fn json_format_counts() {
        let json: serde_json::Value = serde_json::from_str(&render_json(&[sample()])).unwrap();
        assert_eq!(json["valid"], false);
        assert_eq!(json["errors"], 1);
        assert_eq!(json["diagnostics"][0]["line"], 5);
    }
}
