//! Loading a project from disk: find its manifest files, read them (bounded, regular files
//! only) and hand them to the pure validation in [`klsync_core::manifest`], which this module
//! re-exports whole so that `klsync::manifest` stays the one path to the manifest language.

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};

pub use klsync_core::manifest::*;

/// Directories never searched for manifests (build output and dependencies).
const SKIPPED_DIRS: &[&str] = &["target", "node_modules"];

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
