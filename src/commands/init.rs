//! `klsync init [DIR]`: a new project that validates and plans at once, from any directory.
//!
//! The schemas the editor modelines name are written beside the files (and committed), like
//! `klsync import` does: a modeline pointing into klsync's own repository, or into `.klsync/`
//! (ignored by git, so missing in every fresh clone), would leave a new user's editor without
//! the schema.

use std::path::{Path, PathBuf};

use crate::cli::{InitArgs, SchemaKind};
use crate::error::{Error, ExitStatus};
use crate::import::{MANIFEST_SCHEMA_FILE, SETTINGS_SCHEMA_FILE};
use crate::manifest::SETTINGS_FILE;
use crate::manifest::settings::commented_settings_file;
use crate::run::Output;

use super::session::{print_stdout, write_atomically};

/// The starter manifest `init` writes.
pub const STARTER_MANIFEST_FILE: &str = "lists.yaml";

/// What the starter manifest holds: one tag and one list, so the first `plan` has something to
/// show, and a segment to uncomment.
pub const STARTER_MANIFEST: &str = "\
# yaml-language-server: $schema=klsync.schema.json
# A starter manifest: one tag and one list. `klsync plan` shows what applying it would change.
# Manifests are any *.yaml files in this directory and below; every section is described in
# klsync's docs/manifests.md.
tags: [managed-by-klsync]

lists:
  - id: newsletter              # stable key in git: renaming the list keeps it
    name: Newsletter            # the list's name in Klaviyo
    tags: [managed-by-klsync]

# A segment: Klaviyo's own definition, checked against Klaviyo's schema as you type.
# segments:
#   - id: big-spenders
#     name: Big spenders
#     definition:
#       condition_groups:
#         - conditions:
#             - type: profile-property
#               property: properties['lifetime_value']
#               filter: {type: numeric, operator: greater-than, value: 100}
";

/// The line `init` makes sure `.gitignore` has: klsync's local state and caches.
const IGNORED: &str = ".klsync/";

/// Run `klsync init`.
pub fn run(args: &InitArgs, output: &Output) -> Result<ExitStatus, Error> {
    let dir = &args.dir;
    let files = project_files();
    let taken: Vec<String> = files
        .iter()
        .map(|(name, _)| dir.join(name))
        .filter(|path| path.exists())
        .map(|path| path.display().to_string())
        .collect();
    if !taken.is_empty() {
        return Err(Error::Config(format!(
            "{} already exists; `klsync init` writes only into a directory without a klsync project, \
             and nothing was written. Use another directory, or edit the existing files",
            taken.join(", ")
        )));
    }
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.clone(),
        source,
    })?;
    for (name, text) in &files {
        write_atomically(&dir.join(name), text)?;
    }
    let gitignore = ignore_state(dir)?;

    if !output.quiet {
        let shown = shown_dir(dir);
        let mut text = format!("Created a klsync project in {}:\n", dir.display());
        for (name, _) in &files {
            text.push_str(&format!("  {name}\n"));
        }
        text.push_str(&format!("  .gitignore ({gitignore})\n"));
        text.push_str(&format!(
            "\nNext:\n  klsync validate{shown}            # check the manifests\n  \
             export KLAVIYO_API_KEY=pk_...        # a private API key (or try the emulator: see the README)\n  \
             klsync plan{shown}                # what applying would change in Klaviyo\n"
        ));
        print_stdout(&text);
    }
    Ok(ExitStatus::Success)
}

/// ` -C DIR` for the next-step hints, or nothing when DIR is the current directory.
fn shown_dir(dir: &Path) -> String {
    if dir == Path::new(".") || dir.as_os_str().is_empty() {
        String::new()
    } else {
        format!(" -C {}", dir.display())
    }
}

/// Every file `init` writes, by name, with its text.
fn project_files() -> Vec<(&'static str, String)> {
    vec![
        (SETTINGS_FILE, commented_settings_file(SETTINGS_SCHEMA_FILE)),
        (STARTER_MANIFEST_FILE, STARTER_MANIFEST.to_owned()),
        (
            MANIFEST_SCHEMA_FILE,
            super::schema::render(SchemaKind::Manifest),
        ),
        (
            SETTINGS_SCHEMA_FILE,
            super::schema::render(SchemaKind::Settings),
        ),
    ]
}

/// Add `.klsync/` to `dir/.gitignore` unless a line already ignores it; says what it did.
fn ignore_state(dir: &Path) -> Result<&'static str, Error> {
    let path: PathBuf = dir.join(".gitignore");
    let existing = match std::fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => return Err(Error::Io { path, source }),
    };
    let already = existing.as_deref().is_some_and(|text| {
        text.lines()
            .map(str::trim)
            .any(|line| [IGNORED, ".klsync", "/.klsync", "/.klsync/"].contains(&line))
    });
    if already {
        return Ok("already ignores .klsync/");
    }
    let mut text = existing.clone().unwrap_or_default();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str("# klsync's local state (klsync init)\n");
    text.push_str(IGNORED);
    text.push('\n');
    write_atomically(&path, &text)?;
    Ok(if existing.is_some() {
        "added .klsync/"
    } else {
        "ignores .klsync/"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitignore_gets_the_state_directory_once_and_keeps_what_it_had() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".gitignore"), "target").unwrap();
        assert_eq!(ignore_state(dir.path()).unwrap(), "added .klsync/");
        assert_eq!(
            ignore_state(dir.path()).unwrap(),
            "already ignores .klsync/"
        );
        let text = std::fs::read_to_string(dir.path().join(".gitignore")).unwrap();
        assert_eq!(
            text,
            "target\n# klsync's local state (klsync init)\n.klsync/\n"
        );
    }

    #[test]
    fn the_starter_manifest_validates_and_so_does_its_commented_segment() {
        // The segment is everything from `# segments:` on, commented with a leading `# `.
        let (starter, segment) =
            STARTER_MANIFEST.split_at(STARTER_MANIFEST.find("# segments:").unwrap());
        let uncommented: String = segment
            .lines()
            .map(|line| format!("{}\n", line.strip_prefix("# ").unwrap_or(line)))
            .collect();
        for text in [
            STARTER_MANIFEST.to_owned(),
            format!("{starter}{uncommented}"),
        ] {
            let files = vec![
                (
                    PathBuf::from(SETTINGS_FILE),
                    commented_settings_file(SETTINGS_SCHEMA_FILE).into_bytes(),
                ),
                (
                    PathBuf::from(STARTER_MANIFEST_FILE),
                    text.clone().into_bytes(),
                ),
            ];
            let project = crate::manifest::load_sources(Path::new("/project"), &files);
            assert!(project.is_ok(), "{text}\n{:?}", project.err());
        }
    }
}
