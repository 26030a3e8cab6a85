//! Temporary klsync projects and a runner for the real `klsync` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A project directory in a temp dir, removed on drop.
pub struct TempProject {
    dir: tempfile::TempDir,
}

impl TempProject {
    /// A project with a default `klsync.yaml` and the given manifest files (name, YAML text).
    pub fn new(files: &[(&str, &str)]) -> TempProject {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("klsync.yaml"), "version: 1\n").expect("write klsync.yaml");
        let project = TempProject { dir };
        for (name, text) in files {
            project.write(name, text);
        }
        project
    }

    /// A copy of a directory from the repository (e.g. `examples/shop`).
    pub fn copy_of(relative: &str) -> TempProject {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
        copy_dir(&source, dir.path());
        TempProject { dir }
    }

    /// The project directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes (or replaces) a file in the project.
    pub fn write(&self, name: &str, text: &str) {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, text).expect("write manifest");
    }

    /// Removes a file from the project.
    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.dir.path().join(name)).expect("remove manifest");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read example dir") {
        let entry = entry.expect("entry");
        let target: PathBuf = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// Builds a `klsync` command with a clean environment: no colour, no inherited Klaviyo or
/// database settings.
pub fn klsync() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_klsync"));
    for var in [
        "KLAVIYO_API_KEY",
        "KLAVIYO_BASE_URL",
        "DATABASE_URL",
        "KLSYNC_STATE_URL",
        "RUST_LOG",
    ] {
        command.env_remove(var);
    }
    command.env("NO_COLOR", "1");
    command
}

/// Output of a finished command, as text.
pub struct Finished {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Finished {
    fn from(output: Output) -> Self {
        Finished {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// Runs a command to completion.
pub fn run(command: &mut Command) -> Finished {
    command.output().expect("run klsync").into()
}

/// A tag, `count` lists carrying it and a segment: enough writes, one after the other, for an
/// apply to take a while against a slow emulator.
pub fn many_lists(count: usize) -> String {
    let mut text = String::from("tags: [auto]\nlists:\n");
    for i in 0..count {
        text.push_str(&format!(
            "  - id: l{i}\n    name: List {i}\n    tags: [auto]\n"
        ));
    }
    text.push_str(
        "segments:\n  - id: s1\n    name: Segment one\n    definition:\n      condition_groups:\n        - conditions:\n            - {type: profile-property, property: email, filter: {type: existence, operator: is-set}}\n",
    );
    text
}

/// A project of `lists` lists, `segments` segments and `tags` tags, with `links` tag links
/// spread over them (tag `i % tags` on list `i / 2` or segment `i / 2`, alternately), and
/// `extra` appended (queries, data syncs). Resources: `lists + segments + tags + links`.
pub fn resource_mix(
    lists: usize,
    segments: usize,
    tags: usize,
    links: usize,
    extra: &str,
) -> String {
    let mut tag_of: Vec<Vec<String>> = vec![Vec::new(); lists + segments];
    for i in 0..links {
        let target = if i % 2 == 0 { i / 2 } else { lists + i / 2 };
        tag_of[target.min(lists + segments - 1)].push(format!("t{}", i % tags.max(1)));
    }
    let tags_of = |at: usize| format!("[{}]", tag_of[at].join(", "));
    let mut text = String::from("tags: [");
    text.push_str(
        &(0..tags)
            .map(|i| format!("t{i}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    text.push_str("]\nlists:\n");
    for i in 0..lists {
        text.push_str(&format!(
            "  - id: l{i}\n    name: List {i}\n    tags: {}\n",
            tags_of(i)
        ));
    }
    text.push_str("segments:\n");
    for i in 0..segments {
        text.push_str(&format!(
            "  - id: s{i}\n    name: Segment {i}\n    tags: {}\n    definition:\n      condition_groups:\n        - conditions:\n            - {{type: profile-property, property: email, filter: {{type: string, operator: contains, value: '{i}@'}}}}\n",
            tags_of(lists + i)
        ));
    }
    text.push_str(extra);
    text
}
