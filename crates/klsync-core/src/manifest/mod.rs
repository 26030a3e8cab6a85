//! The manifest language: load YAML files, validate them, report every problem at once.
//!
//! A project is a directory holding `klsync.yaml` (settings only) and any number of `*.yaml` /
//! `*.yml` manifest files in and below it (hidden directories, `target` and `node_modules` are
//! skipped; files are read in sorted path order so results never depend on the file system).
//!
//! Loading runs in three stages, and every stage reports all it finds instead of stopping:
//!
//! 1. [`yaml`]: parse each file keeping spans; syntax errors carry line:column. The result is a
//!    `serde_json::Value` plus an index from JSON pointer to position.
//! 2. [`schema`]: validate each value against the JSON Schema generated from [`ManifestFile`]
//!    (with Klaviyo's segment definition schema embedded): unknown fields, wrong types, bad enum
//!    values. Each error's instance path is mapped back to file:line:column.
//! 3. [`checks`]: deserialize the valid files and run cross-file semantic checks (duplicates,
//!    tag references, exclusive groups, Klaviyo limits, SQL parameter counts, ...).
//!
//! Nothing here writes anywhere; bad input of any kind becomes a [`Diagnostic`], never a panic.

pub mod checks;
pub mod diagnostic;
pub mod schema;
pub mod settings;
pub mod types;
pub mod yaml;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest as _, Sha256};

pub use diagnostic::{Diagnostic, Related, Severity};
pub use schema::{manifest_schema, settings_schema};
pub use settings::ProjectSettings;
pub use types::*;

/// The settings file every project directory must hold.
pub const SETTINGS_FILE: &str = "klsync.yaml";

/// Files larger than this are refused unread: manifests are small, and a stray data dump must
/// not be loaded into memory.
pub const MAX_FILE_BYTES: u64 = 5 * 1024 * 1024;

/// One manifest file of a project.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestSource {
    /// Path relative to the project directory.
    pub path: PathBuf,
    /// Its parsed, validated content.
    pub manifest: ManifestFile,
}

/// A loaded, valid project.
#[derive(Debug, Clone, PartialEq)]
pub struct Project {
    /// The project directory as given.
    pub root: PathBuf,
    /// `klsync.yaml`.
    pub settings: ProjectSettings,
    /// Every manifest file, in sorted path order.
    pub files: Vec<ManifestSource>,
    /// Warnings found while validating (the project is usable regardless).
    pub warnings: Vec<Diagnostic>,
    /// Where each query of `queries:` is declared, `file:line:column`, for errors about it.
    pub query_locations: BTreeMap<String, String>,
}

impl Project {
    /// Where the query `name` is declared in the manifests (`queries.yaml:12:3`); `None` for
    /// a saved query or an unknown name.
    pub fn query_location(&self, name: &str) -> Option<String> {
        self.query_locations.get(name).cloned()
    }

    /// All files' sections concatenated into one manifest, each section sorted (lists,
    /// segments and profile syncs by id, tag groups by name, tags by name).
    pub fn merged(&self) -> ManifestFile {
        let mut merged = ManifestFile::default();
        for source in &self.files {
            let m = source.manifest.clone();
            merged.tag_groups.extend(m.tag_groups);
            merged.tags.extend(m.tags);
            merged.lists.extend(m.lists);
            merged.segments.extend(m.segments);
            merged.profiles.extend(m.profiles);
            merged.queries.extend(m.queries);
        }
        merged.tag_groups.sort_by(|a, b| a.name.cmp(&b.name));
        merged.tags.sort();
        merged.lists.sort_by(|a, b| a.id.cmp(&b.id));
        merged.segments.sort_by(|a, b| a.id.cmp(&b.id));
        merged.profiles.sort_by(|a, b| a.id.cmp(&b.id));
        merged
    }

    /// SHA-256 (hex) of the project's meaning: the settings and every file's relative path and
    /// parsed content, in path order. Saved plans carry it so `apply` can refuse a plan made
    /// from other manifests. It is computed from parsed content rather than raw bytes so that
    /// editing a comment or re-indenting does not invalidate a reviewed plan, while any change
    /// that could alter the plan does.
    pub fn digest(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(b"klsync-project-v1\0");
        hasher.update(serde_json::to_vec(&self.settings).unwrap_or_default());
        let mut files: Vec<&ManifestSource> = self.files.iter().collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        for source in files {
            hasher.update(b"\0");
            hasher.update(source.path.to_string_lossy().replace('\\', "/").as_bytes());
            hasher.update(b"\0");
            hasher.update(serde_json::to_vec(&source.manifest).unwrap_or_default());
        }
        hex::encode(hasher.finalize())
    }
}

/// Why a project could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    /// The files were read and are invalid; every problem found (errors and warnings).
    #[error("{} problem(s) found in the manifests", diagnostic::count(.0, Severity::Error))]
    Invalid(Vec<Diagnostic>),
    /// The directory has no `klsync.yaml`.
    #[error("{}: not a klsync project (no {SETTINGS_FILE}); run `klsync init` there to start one, or pass -C <dir>", .dir.display())]
    NotAProject {
        /// The directory given.
        dir: PathBuf,
    },
    /// The project directory itself could not be read.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Load and validate a project held in memory: `files` are (path relative to the project
/// directory, content) pairs, `klsync.yaml` among them. The same checks as [`load_project`]
/// (the `klsync` package's loader, which reads the files and calls [`validate`]), minus the file system: no file
/// is read, so tools and tests can check any content, however hostile, cheaply.
pub fn load_sources(root: &Path, files: &[(PathBuf, Vec<u8>)]) -> Result<Project, ProjectError> {
    let settings_path = Path::new(SETTINGS_FILE);
    let Some((_, settings)) = files.iter().find(|(path, _)| path == settings_path) else {
        return Err(ProjectError::NotAProject {
            dir: root.to_path_buf(),
        });
    };
    let mut manifests: Vec<(PathBuf, Result<Vec<u8>, String>)> = files
        .iter()
        .filter(|(path, _)| path != settings_path)
        .map(|(path, content)| (path.clone(), Ok(content.clone())))
        .collect();
    manifests.sort_by(|a, b| a.0.cmp(&b.0));
    validate(root, Ok(settings.clone()), manifests, Vec::new())
}

/// Parse and check the settings and every manifest file (contents as read, or why they could
/// not be read), reporting every problem at once. `walk_problems`: what finding the files
/// reported (unreadable directories), listed with the rest.
pub fn validate(
    root: &Path,
    settings: Result<Vec<u8>, String>,
    files: Vec<(PathBuf, Result<Vec<u8>, String>)>,
    walk_problems: Vec<Diagnostic>,
) -> Result<Project, ProjectError> {
    let mut diagnostics = Vec::new();
    let settings = load_settings(settings, &mut diagnostics);

    diagnostics.extend(walk_problems);
    let mut parsed: Vec<(PathBuf, ManifestFile, yaml::SpanIndex)> = Vec::new();
    // Files with schema errors, reduced to what the schema accepts: checked, never loaded.
    let mut checked_only: Vec<(PathBuf, ManifestFile, yaml::SpanIndex)> = Vec::new();
    for (path, content) in files {
        if let Some((value, index)) = read_yaml(&path, content, &mut diagnostics) {
            if value.is_null() {
                diagnostics.push(Diagnostic {
                    severity: Severity::Warning,
                    ..Diagnostic::file_error(&path, "file is empty (no manifest content)")
                });
                parsed.push((path, ManifestFile::default(), index));
                continue;
            }
            let problems = schema::check(&schema::MANIFEST, &value, &index, &path);
            if !problems.is_empty() {
                diagnostics.extend(problems);
                // The project is invalid already; what the schema accepts of this file still
                // goes through the cross-file checks, so one run reports every problem.
                if let Some((rest, removed)) = schema::prune_invalid(&schema::MANIFEST, &value)
                    && let Ok(manifest) = serde_json::from_value::<ManifestFile>(rest)
                {
                    checked_only.push((path, manifest, index.without_items(&removed)));
                }
                continue;
            }
            diagnostics.extend(checks::invisible_characters(&path, &value, &index));
            match serde_json::from_value::<ManifestFile>(value) {
                Ok(manifest) => parsed.push((path, manifest, index)),
                Err(err) => diagnostics.push(Diagnostic::file_error(&path, err.to_string())),
            }
        }
    }

    let mut all: Vec<&(PathBuf, ManifestFile, yaml::SpanIndex)> =
        parsed.iter().chain(&checked_only).collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let checked: Vec<checks::Checked<'_>> = all
        .into_iter()
        .map(|(path, manifest, index)| checks::Checked {
            path,
            manifest,
            index,
        })
        .collect();
    diagnostics.extend(checks::run(&checked));
    diagnostic::sort(&mut diagnostics);

    match settings {
        Some(settings) if diagnostic::count(&diagnostics, Severity::Error) == 0 => Ok(Project {
            root: root.to_path_buf(),
            settings,
            query_locations: query_locations(&parsed),
            files: parsed
                .into_iter()
                .map(|(path, manifest, _)| ManifestSource { path, manifest })
                .collect(),
            warnings: diagnostics,
        }),
        _ => Err(ProjectError::Invalid(diagnostics)),
    }
}

/// `file:line:column` of each query's key under `queries:`.
fn query_locations(
    parsed: &[(PathBuf, ManifestFile, yaml::SpanIndex)],
) -> BTreeMap<String, String> {
    let mut locations = BTreeMap::new();
    for (path, manifest, index) in parsed {
        for name in manifest.queries.keys() {
            let span = index.nearest(&format!("/queries/{}", yaml::escape_segment(name)));
            let pos = span.key.unwrap_or(span.value);
            locations.insert(
                name.clone(),
                format!("{}:{}:{}", path.display(), pos.line, pos.column),
            );
        }
    }
    locations
}

/// Read, parse and check `klsync.yaml`; `None` when it has errors (already pushed).
fn load_settings(
    content: Result<Vec<u8>, String>,
    out: &mut Vec<Diagnostic>,
) -> Option<ProjectSettings> {
    let rel = PathBuf::from(SETTINGS_FILE);
    let (mut value, index) = read_yaml(&rel, content, out)?;
    if value.is_null() {
        out.push(
            Diagnostic::file_error(&rel, "klsync.yaml is empty")
                .with_hint("start it with `version: 1`"),
        );
        return None;
    }
    let before = out.len();
    strip_secrets(&mut value, "", &index, &rel, out);
    out.extend(schema::check(&schema::SETTINGS, &value, &index, &rel));
    if out.len() > before {
        return None;
    }
    match serde_json::from_value(value) {
        Ok(settings) => Some(settings),
        Err(err) => {
            out.push(Diagnostic::file_error(&rel, err.to_string()));
            None
        }
    }
}

/// Report (and remove, so the schema does not also call them unknown) keys that would hold a
/// secret. The value itself is never echoed.
fn strip_secrets(
    value: &mut Value,
    pointer: &str,
    index: &yaml::SpanIndex,
    file: &Path,
    out: &mut Vec<Diagnostic>,
) {
    let Value::Object(map) = value else { return };
    let keys: Vec<String> = map.keys().cloned().collect();
    for key in keys {
        let child = format!("{pointer}/{}", yaml::escape_segment(&key));
        if settings::looks_like_secret_key(&key) {
            let span = index.nearest(&child);
            let pos = span.key.unwrap_or(span.value);
            out.push(Diagnostic {
                severity: Severity::Error,
                file: file.to_path_buf(),
                line: pos.line,
                column: pos.column,
                field: span.field,
                message: format!("`{key}` looks like a secret; klsync.yaml is committed and must not hold secrets"),
                hint: Some(
                    "put the value in an environment variable and name the variable instead, e.g. `api_key_env: KLAVIYO_API_KEY` or `url_env: DATABASE_URL`".into(),
                ),
                related: None,
            });
            map.remove(&key);
        } else if let Some(inner) = map.get_mut(&key) {
            strip_secrets(inner, &child, index, file, out);
        }
    }
}

/// Parse one file's content (or report why it could not be read), reporting any problem;
/// `None` if it could not be parsed.
fn read_yaml(
    rel: &Path,
    content: Result<Vec<u8>, String>,
    out: &mut Vec<Diagnostic>,
) -> Option<(Value, yaml::SpanIndex)> {
    let text = match content.and_then(decode_text) {
        Ok(text) => text,
        Err(message) => {
            out.push(Diagnostic::file_error(rel, message));
            return None;
        }
    };
    match yaml::parse(&text) {
        Ok((value, index)) => {
            if !(value.is_object() || value.is_null()) {
                out.push(Diagnostic {
                    line: 1,
                    column: 1,
                    ..Diagnostic::file_error(
                        rel,
                        format!(
                            "expected a mapping of sections at the top level, found {}",
                            describe(&value)
                        ),
                    )
                    .with_hint(
                        "a manifest looks like `lists:`, `segments:`, `tags:` ... at column 1",
                    )
                });
                return None;
            }
            Some((value, index))
        }
        Err(err) => {
            out.push(Diagnostic {
                severity: Severity::Error,
                file: rel.to_path_buf(),
                line: err.pos.line,
                column: err.pos.column,
                field: err.field,
                message: err.message,
                hint: err.hint,
                related: err.related.map(|p| Related {
                    file: rel.to_path_buf(),
                    line: p.line,
                    column: p.column,
                }),
            });
            None
        }
    }
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Array(_) => "a list",
        Value::String(_) => "a string",
        Value::Number(_) => "a number",
        Value::Bool(_) => "a boolean",
        _ => "something else",
    }
}

/// A file's content as text: at most [`MAX_FILE_BYTES`] of UTF-8.
fn decode_text(bytes: Vec<u8>) -> Result<String, String> {
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|err| {
        let valid = &err.as_bytes()[..err.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
        format!("is not valid UTF-8 (first bad byte on line {line}); manifests must be UTF-8 text")
    })
}

/// Why a file over [`MAX_FILE_BYTES`] is not read.
pub fn too_large(len: u64) -> String {
    format!(
        "file is {len} bytes, larger than the {} MB limit for manifests",
        MAX_FILE_BYTES / (1024 * 1024)
    )
}
