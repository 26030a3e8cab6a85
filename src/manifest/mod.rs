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
use std::fs;
use std::io::Read as _;
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

/// Directory names never searched for manifests.
const SKIPPED_DIRS: &[&str] = &["target", "node_modules"];

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

impl From<ProjectError> for crate::Error {
    fn from(err: ProjectError) -> Self {
        match err {
            ProjectError::Invalid(diagnostics) => crate::Error::InvalidManifests {
                count: diagnostic::count(&diagnostics, Severity::Error),
            },
            ProjectError::Io { path, source } => crate::Error::Io { path, source },
            other @ ProjectError::NotAProject { .. } => crate::Error::Config(other.to_string()),
        }
    }
}

/// Load and validate the project in `dir`: find its files, read them, and hand them to
/// [`load_sources`].
pub fn load_project(dir: &Path) -> Result<Project, ProjectError> {
    let meta = fs::metadata(dir).map_err(|source| ProjectError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(ProjectError::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::other("not a directory"),
        });
    }
    let settings_path = dir.join(SETTINGS_FILE);
    if fs::symlink_metadata(&settings_path).is_err() {
        return Err(ProjectError::NotAProject {
            dir: dir.to_path_buf(),
        });
    }
    let settings = read_limited(&settings_path);
    let (paths, walk_problems) = discover(dir);
    let files = paths
        .into_iter()
        .map(|path| {
            let content = read_limited(&dir.join(&path));
            (path, content)
        })
        .collect();
    validate(dir, settings, files, walk_problems)
}

/// Load and validate a project held in memory: `files` are (path relative to the project
/// directory, content) pairs, `klsync.yaml` among them. The same checks as [`load_project`]
/// (which reads the files and calls the same validation), minus the file system: no file
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
/// not be read), reporting every problem at once.
fn validate(
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

/// Find manifest files under `dir` (relative paths, sorted). Entries that cannot be read are
/// reported, not skipped silently.
fn discover(dir: &Path) -> (Vec<PathBuf>, Vec<Diagnostic>) {
    let mut found = Vec::new();
    let mut problems = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        let entries = match fs::read_dir(dir.join(&rel)) {
            Ok(entries) => entries,
            Err(err) => {
                problems.push(Diagnostic::file_error(
                    &rel,
                    format!("cannot read directory: {err}"),
                ));
                continue;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(err) => {
                    problems.push(Diagnostic::file_error(
                        &rel,
                        format!("cannot read directory: {err}"),
                    ));
                    continue;
                }
            };
            let name = entry.file_name();
            let name_str = name.to_string_lossy();
            if name_str.starts_with('.') {
                continue;
            }
            let child = rel.join(&name);
            let is_yaml = name_str.ends_with(".yaml") || name_str.ends_with(".yml");
            let file_type = entry.file_type();
            match file_type {
                Ok(t) if t.is_dir() => {
                    if !SKIPPED_DIRS.contains(&name_str.as_ref()) {
                        pending.push(child);
                    }
                }
                // Directories reached through symlinks are not followed (no cycles); symlinked
                // files are read like any other, and a broken link is reported when read.
                Ok(t) if t.is_symlink() => {
                    if dir.join(&child).is_dir() {
                        continue;
                    }
                    if is_yaml && !(rel.as_os_str().is_empty() && name_str == SETTINGS_FILE) {
                        found.push(child);
                    }
                }
                Ok(_) => {
                    if is_yaml && !(rel.as_os_str().is_empty() && name_str == SETTINGS_FILE) {
                        found.push(child);
                    }
                }
                Err(err) => problems.push(Diagnostic::file_error(
                    &child,
                    format!("cannot read: {err}"),
                )),
            }
        }
    }
    found.sort();
    (found, problems)
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

/// Read a file of at most [`MAX_FILE_BYTES`], checking the size before reading.
///
/// Only regular files (or links to them) are opened: reading a FIFO named `m.yaml` would wait
/// for a writer forever, and a device could be endless. The opened file is checked again, so a
/// file swapped for something else after the first check is still refused (only a swap in the
/// instant between the check and the open could make the open itself wait).
fn read_limited(path: &Path) -> Result<Vec<u8>, String> {
    let meta = fs::metadata(path).map_err(|err| format!("cannot read: {err}"))?;
    if meta.is_dir() {
        return Err("is a directory, expected a YAML file".into());
    }
    if !meta.is_file() {
        return Err(not_a_regular_file(&meta.file_type()));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_large(meta.len()));
    }
    let file = fs::File::open(path).map_err(|err| format!("cannot read: {err}"))?;
    let opened = file
        .metadata()
        .map_err(|err| format!("cannot read: {err}"))?;
    if !opened.is_file() {
        return Err(not_a_regular_file(&opened.file_type()));
    }
    let mut bytes = Vec::new();
    // `take` guards against a file that grows between the size check and the read.
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| format!("cannot read: {err}"))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err("file grew past the size limit while being read".into());
    }
    Ok(bytes)
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

fn too_large(len: u64) -> String {
    format!(
        "file is {len} bytes, larger than the {} MB limit for manifests",
        MAX_FILE_BYTES / (1024 * 1024)
    )
}

/// Why a file that is neither a regular file nor a directory is not read.
fn not_a_regular_file(file_type: &fs::FileType) -> String {
    #[cfg(unix)]
    let what = {
        use std::os::unix::fs::FileTypeExt as _;
        if file_type.is_fifo() {
            "a named pipe (FIFO)"
        } else if file_type.is_socket() {
            "a socket"
        } else if file_type.is_char_device() || file_type.is_block_device() {
            "a device"
        } else {
            "a special file"
        }
    };
    #[cfg(not(unix))]
    let what = {
        let _ = file_type;
        "a special file"
    };
    format!(
        "is {what}, not a regular file; klsync reads manifests only from regular files, so it was not opened"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = dir.path().join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
        dir
    }

    #[test]
    fn loads_merges_and_digests_deterministically() {
        let dir = project(&[
            ("klsync.yaml", "version: 1\n"),
            (
                "b.yaml",
                "tags: [vip]\nlists:\n  - {id: b, name: B, tags: [vip]}\n",
            ),
            ("sub/a.yml", "lists:\n  - {id: a, name: A}\n"),
            (".hidden/x.yaml", "nonsense: true\n"),
            ("target/x.yaml", "nonsense: true\n"),
        ]);
        let project = load_project(dir.path()).unwrap();
        let paths: Vec<_> = project.files.iter().map(|f| f.path.clone()).collect();
        assert_eq!(
            paths,
            vec![PathBuf::from("b.yaml"), PathBuf::from("sub/a.yml")]
        );
        let ids: Vec<_> = project.merged().lists.into_iter().map(|l| l.id).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(project.digest(), load_project(dir.path()).unwrap().digest());
        fs::write(
            dir.path().join("sub/a.yml"),
            "lists:\n  - {id: a, name: A2}\n",
        )
        .unwrap();
        assert_ne!(project.digest(), load_project(dir.path()).unwrap().digest());
    }

    #[test]
    fn missing_settings_names_the_dir() {
        let dir = project(&[("a.yaml", "tags: [x]\n")]);
        let err = load_project(dir.path()).unwrap_err();
        assert!(matches!(err, ProjectError::NotAProject { .. }));
        assert!(err.to_string().contains(&dir.path().display().to_string()));
    }

    #[test]
    fn secrets_in_settings_are_refused_without_echoing_them() {
        let dir = project(&[(
            "klsync.yaml",
            "version: 1\nklaviyo:\n  api_key: pk_live_123\n",
        )]);
        let ProjectError::Invalid(diags) = load_project(dir.path()).unwrap_err() else {
            panic!("expected diagnostics")
        };
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!((diags[0].line, diags[0].column), (3, 3));
        assert!(!format!("{diags:?}").contains("pk_live_123"));
    }
}
