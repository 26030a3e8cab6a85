//! `klsync validate` against a corpus of broken projects (one human mistake each) and hostile
//! input. Every case runs the real binary; its output is snapshot-tested and must name
//! file:line:column and the field, exit 1, and never panic.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/broken")
}

/// Run `klsync validate -C <dir> --color never` from `cwd`; returns (exit code, transcript).
fn validate(cwd: &Path, dir: &str, extra: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_klsync"))
        .current_dir(cwd)
        .args(["validate", "-C", dir, "--color", "never"])
        .args(extra)
        .env_remove("RUST_LOG")
        .output()
        .expect("run klsync");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("panicked") && !stdout.contains("panicked"),
        "{dir}: {stderr}"
    );
    let code = output.status.code().expect("exited normally");
    (
        code,
        format!("exit: {code}\n--- stdout\n{stdout}--- stderr\n{stderr}"),
    )
}

#[test]
fn every_broken_project_is_rejected_with_positions() {
    let mut cases: Vec<String> = fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    cases.sort();
    assert!(cases.len() >= 24, "only {} cases", cases.len());
    for case in cases {
        let (code, transcript) = validate(&fixtures(), &case, &[]);
        assert_eq!(code, 1, "{case} should be invalid:\n{transcript}");
        if case != "missing-settings" {
            // Every problem names a file position (`file:line:col:`), not just a file.
            let has_position = transcript.lines().any(|line| {
                line.starts_with("error: ")
                    && line
                        .split(": ")
                        .nth(1)
                        .is_some_and(|loc| loc.matches(':').count() == 2)
            });
            assert!(
                has_position,
                "{case} lacks a file:line:column:\n{transcript}"
            );
        }
        insta::assert_snapshot!(format!("broken__{case}"), transcript);
    }
}

#[test]
fn secrets_are_never_echoed() {
    let (_, transcript) = validate(&fixtures(), "secret-in-settings", &[]);
    assert!(!transcript.contains("pk_live_do_not_print_me"));
    assert!(!transcript.contains("hunter2"));
}

#[test]
fn json_format_reports_the_same_problems() {
    let output = Command::new(env!("CARGO_BIN_EXE_klsync"))
        .current_dir(fixtures())
        .args(["validate", "-C", "typo-field", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(doc["valid"], false);
    let first = doc["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["field"] == "lists[0].nmae")
        .unwrap();
    assert_eq!(first["file"], "lists.yaml");
    assert_eq!(first["line"], 3);
    assert_eq!(first["field"], "lists[0].nmae");
    assert_eq!(first["hint"], "did you mean `name`?");
}

#[test]
fn every_example_is_valid() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut checked = 0;
    for entry in fs::read_dir(&examples).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.join("klsync.yaml").exists() {
            continue;
        }
        let (code, transcript) = validate(&dir, ".", &[]);
        assert_eq!(code, 0, "{}:\n{transcript}", dir.display());
        assert!(!transcript.contains("warning"), "{transcript}");
        for file in fs::read_dir(&dir).unwrap() {
            let file = file.unwrap().path();
            // Manifests only: a project may carry other files (the shop's demo-data.sql).
            if file.extension().is_none_or(|ext| ext != "yaml") {
                continue;
            }
            let text = fs::read_to_string(&file).unwrap();
            let schema = if file.ends_with("klsync.yaml") {
                "klsync-settings.schema.json"
            } else {
                "klsync.schema.json"
            };
            let modeline = format!("# yaml-language-server: $schema=../../schemas/{schema}");
            assert!(text.starts_with(&modeline), "{}", file.display());
            assert!(examples.join(format!("../schemas/{schema}")).exists());
        }
        checked += 1;
    }
    assert!(checked >= 2);
}

fn scratch(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("klsync.yaml"), "version: 1\n").unwrap();
    for (path, bytes) in files {
        fs::write(dir.path().join(path), bytes).unwrap();
    }
    dir
}

/// Run against a scratch project; the transcript with the temp path removed.
fn validate_scratch(dir: &tempfile::TempDir) -> (i32, String) {
    validate(dir.path(), ".", &[])
}

#[test]
fn binary_garbage_is_an_error_not_a_crash() {
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let dir = scratch(&[("garbage.yaml", &garbage)]);
    let (code, transcript) = validate_scratch(&dir);
    assert_eq!(code, 1);
    assert!(transcript.contains("error: garbage.yaml"), "{transcript}");
}

#[test]
fn invalid_utf8_names_the_line() {
    let dir = scratch(&[("bad.yaml", b"tags:\n  - caf\xe9\n")]);
    let (code, transcript) = validate_scratch(&dir);
    assert_eq!(code, 1);
    assert!(
        transcript.contains("bad.yaml: is not valid UTF-8 (first bad byte on line 2)"),
        "{transcript}"
    );
}

#[test]
fn oversized_file_is_refused_without_reading_it() {
    let dir = scratch(&[]);
    let file = fs::File::create(dir.path().join("huge.yaml")).unwrap();
    // Sparse: 50 MB of size without 50 MB of disk.
    file.set_len(50 * 1024 * 1024).unwrap();
    let (code, transcript) = validate_scratch(&dir);
    assert_eq!(code, 1);
    assert!(
        transcript.contains("huge.yaml: file is 52428800 bytes, larger than the 5 MB limit"),
        "{transcript}"
    );
}

#[test]
fn empty_file_is_valid_with_a_warning() {
    let dir = scratch(&[
        ("empty.yaml", b""),
        ("lists.yaml", b"lists:\n  - {id: a, name: A}\n"),
    ]);
    let (code, transcript) = validate_scratch(&dir);
    assert_eq!(code, 0, "{transcript}");
    assert!(
        transcript.contains("warning: empty.yaml: file is empty"),
        "{transcript}"
    );
}

#[test]
fn unreadable_entries_are_reported() {
    let dir = scratch(&[]);
    std::os::unix::fs::symlink(
        dir.path().join("nowhere.yaml"),
        dir.path().join("broken.yaml"),
    )
    .unwrap();
    // A directory that merely looks like a manifest is searched, not read as a file.
    fs::create_dir(dir.path().join("x.yaml")).unwrap();
    fs::write(dir.path().join("x.yaml/inner.yaml"), "tags: [a]\n").unwrap();
    let (code, transcript) = validate_scratch(&dir);
    assert_eq!(code, 1);
    assert!(
        transcript.contains("error: broken.yaml: cannot read: No such file"),
        "{transcript}"
    );
    assert!(!transcript.contains("x.yaml:"), "{transcript}");
}

#[test]
fn deeply_nested_yaml_is_refused() {
    let deep = format!("tags: {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
    let dir = scratch(&[("deep.yaml", deep.as_bytes())]);
    let (code, transcript) = validate_scratch(&dir);
    assert_eq!(code, 1);
    assert!(transcript.contains("error: deep.yaml:1:"), "{transcript}");
    assert!(
        transcript.contains("nesting is far too deep"),
        "{transcript}"
    );
}

#[test]
fn missing_directory_and_bad_input_change_nothing() {
    let dir = scratch(&[("lists.yaml", b"lists: [")]);
    let before: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let (code, _) = validate_scratch(&dir);
    assert_eq!(code, 1);
    let after: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(before, after);
    let (code, transcript) = validate(dir.path(), "does-not-exist", &[]);
    assert_eq!(code, 1);
    assert!(transcript.contains("does-not-exist"), "{transcript}");
}

/// Run `klsync validate` in `dir`, failing (not hanging) if it has not finished within a
/// minute: a loader that opens a FIFO waits for a writer forever.
fn validate_with_deadline(dir: &Path) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_klsync"))
        .current_dir(dir)
        .args(["validate", "--color", "never"])
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run klsync");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().expect("kill");
            panic!("klsync validate hung");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("output");
    let code = output.status.code().expect("exited normally");
    (code, String::from_utf8_lossy(&output.stderr).into_owned())
}

/// Issue 11, finding 8: a FIFO named `m.yaml` made `validate` wait forever.
#[test]
fn a_fifo_is_refused_without_being_opened() {
    let dir = scratch(&[("lists.yaml", b"lists:\n  - {id: a, name: A}\n")]);
    let made = Command::new("mkfifo")
        .arg(dir.path().join("m.yaml"))
        .arg(dir.path().join("target"))
        .status()
        .expect("mkfifo");
    assert!(made.success());
    std::os::unix::fs::symlink("target", dir.path().join("link.yaml")).unwrap();
    let (code, stderr) = validate_with_deadline(dir.path());
    assert_eq!(code, 1, "{stderr}");
    for file in ["m.yaml", "link.yaml"] {
        assert!(
            stderr.contains(&format!(
                "error: {file}: is a named pipe (FIFO), not a regular file"
            )),
            "{stderr}"
        );
    }
}

/// Issue 11, finding 8: bidirectional controls and zero-width characters are warned about where
/// they are, and shown as escapes rather than raw.
#[test]
fn invisible_characters_are_warnings_shown_as_escapes() {
    let dir = scratch(&[(
        "lists.yaml",
        "lists:\n  - id: vip\n    name: \"VIP \u{202E}tsil\"\nqueries:\n  q:\n    sql: \"SELECT 1 \u{200B}\"\n"
            .as_bytes(),
    )]);
    let (code, transcript) = validate_scratch(&dir);
    assert_eq!(code, 0, "{transcript}");
    assert!(
        transcript.contains(
            "warning: lists.yaml:3:5: lists[0].name: contains U+202E (a bidirectional control)"
        ),
        "{transcript}"
    );
    assert!(
        transcript.contains("warning: lists.yaml:6:5: queries.q.sql: contains U+200B"),
        "{transcript}"
    );
    assert!(
        transcript.contains(r"plans show it as `\u{202e}`"),
        "{transcript}"
    );
    assert!(!transcript.contains('\u{202E}'), "{transcript}");
}
