//! Bad input, never a panic: the three places where klsync reads bytes someone else wrote are
//! fuzzed with proptest.
//!
//! - the manifest loader ([`manifest::load_sources`], the in-memory half of `load_project`);
//! - the saved-plan loader ([`parse_saved_plan`] and what `apply` does with a plan before it
//!   sends anything: the checks, the summaries and the renderings);
//! - the JSON:API response decoder ([`klaviyo::decode`], and error bodies).
//!
//! Each fuzzer mixes arbitrary bytes, arbitrary text and structure-aware mutations of valid
//! inputs (the example and fixture projects; a plan with every kind of change and a data part;
//! one valid body per decoded resource). The property: no panic (proptest reports a panic as a
//! failure, with the input shrunk), and the result is a value or an error whose message is not
//! empty.
//!
//! Deterministic: a fixed seed per fuzzer and no failure persistence, so CI runs the same cases
//! every time. `KLSYNC_FUZZ_CASES=N` sets the cases per fuzzer (default [`DEFAULT_CASES`], a few
//! seconds each in debug); the full run (see docs/RELIABILITY.md) is
//! `KLSYNC_FUZZ_CASES=1000000 cargo test --profile fuzz --test it fuzz:: -- --nocapture`, where
//! the `fuzz` profile is the release profile with overflow checks and debug assertions kept.
//!
//! A panic found here is fixed in `src` and kept as a named regression case at the end.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use klsync::apply::saved::{
    check_age, check_destroys, check_digest, parse_saved_plan, remainder_mismatches,
    stale_addresses,
};
use klsync::klaviyo::decode::{self, Reply};
use klsync::klaviyo::types::{
    Identifier, MemberId, ProfileData, Resource, WireImportErrorAttributes, WireJobAttributes,
    WireListAttributes, WireSegmentAttributes, WireTagAttributes, WireTagGroupAttributes,
};
use klsync::klaviyo::{
    ApiErrorObject, BulkImportJob, ImportError, List, Operation, Profile, Segment, Tag, TagGroup,
};
use klsync::manifest::{self, ProjectError, Severity};
use klsync::render;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use serde_json::{Value, json};

/// Cases per fuzzer when `KLSYNC_FUZZ_CASES` is not set: the three together stay well under a
/// minute in a debug build on a 2-core CI runner.
const DEFAULT_CASES: u32 = 3000;

fn cases() -> u32 {
    match std::env::var("KLSYNC_FUZZ_CASES") {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("KLSYNC_FUZZ_CASES={text:?} is not a case count")),
        Err(_) => DEFAULT_CASES,
    }
}

/// Run `strategy` through `check` for [`cases`] cases with a fixed seed; print what was run.
fn fuzz<S: Strategy>(
    name: &str,
    seed: u8,
    strategy: S,
    check: impl Fn(S::Value) -> Result<bool, TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let cases = cases();
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2000,
        // Rejections are not used; a local one would only hide cases.
        max_global_rejects: 0,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]),
    );
    let values = Cell::new(0u64);
    let errors = Cell::new(0u64);
    let started = Instant::now();
    let result = runner.run(&strategy, |input| {
        if check(input)? {
            values.set(values.get() + 1);
        } else {
            errors.set(errors.get() + 1);
        }
        Ok(())
    });
    let elapsed = started.elapsed();
    eprintln!(
        "fuzz {name}: {cases} cases in {:.1} s ({} values, {} errors), seed {seed}",
        elapsed.as_secs_f64(),
        values.get(),
        errors.get()
    );
    if let Err(failure) = result {
        panic!("fuzz {name}: {failure}");
    }
}

/// The property's second half: an error must say something.
fn non_empty(what: &str, message: &str) -> Result<(), TestCaseError> {
    prop_assert!(
        !message.trim().is_empty(),
        "{what}: an error with an empty message"
    );
    Ok(())
}

/// Bytes, shown as (lossy) text when a case fails.
#[derive(Clone)]
struct Bytes(Vec<u8>);

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

// ---- shared mutation strategies ------------------------------------------------------------

/// Text that breaks parsers: controls, bidi overrides, YAML syntax, numbers out of range.
const NASTY: &[&str] = &[
    "\0",
    "\u{1}",
    "\u{1b}[31m",
    "\u{7f}",
    "\u{85}",
    "\u{202E}",
    "\u{2066}",
    "\u{200B}",
    "\u{FEFF}",
    "\u{2028}",
    "\u{FFFE}",
    "\u{10FFFF}",
    "\t",
    "\r",
    "\r\n",
    "\\",
    "\\u0000",
    "\\ud800",
    "1e400",
    "-1e400",
    "1e-400",
    "-0",
    "99999999999999999999999999999",
    "18446744073709551616",
    "18446744073709551615",
    "-9223372036854775809",
    "4294967296",
    "0x7fffffffffffffffffff",
    "0o7777777777777777777777777",
    ".nan",
    ".inf",
    "-.inf",
    "NaN",
    "Infinity",
    "null",
    "~",
    "yes",
    "true",
    "&a",
    "*a",
    "&a [1, 2]",
    "<<: *a",
    "!!binary aGVsbG8=",
    "!!int x",
    "!!float",
    "!custom x",
    "!<tag:yaml.org,2002:str> x",
    "? x",
    "---",
    "...",
    "%YAML 1.2",
    "%TAG ! tag:x,2000:",
    "|",
    ">-",
    "'",
    "\"",
    "{",
    "}",
    "[",
    "]",
    ",",
    ": ",
    "- ",
    "#",
    "@",
    "`",
    "$1",
    "%",
    "{{ x }}",
    "\"unterminated",
    "${HOME}",
];

fn nasty_token() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(NASTY).prop_map(str::to_owned),
        2 => "[a-z_]{1,12}",
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<f64>().prop_map(|n| format!("{n:e}")),
        1 => any::<String>(),
        1 => (1usize..400).prop_map(|n| "[".repeat(n)),
        1 => (1usize..200).prop_map(|n| "{a: ".repeat(n)),
        1 => (1usize..200).prop_map(|n| "- ".repeat(n)),
        1 => (1000usize..70_000).prop_map(|n| "x".repeat(n)),
    ]
}

/// One edit of a text, by line or by byte; positions wrap around the text's length.
#[derive(Debug, Clone)]
enum TextEdit {
    DeleteLine(usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    InsertLine(usize, String),
    /// Replace what follows the line's first `:` (a mapping value).
    ReplaceValue(usize, String),
    Indent(usize, u8),
    Dedent(usize),
    /// Insert at a character boundary.
    Splice(usize, String),
    Truncate(usize),
}

fn text_edit() -> impl Strategy<Value = TextEdit> {
    let at = any::<usize>();
    prop_oneof![
        1 => at.prop_map(TextEdit::DeleteLine),
        1 => at.prop_map(TextEdit::DuplicateLine),
        1 => (at, at).prop_map(|(a, b)| TextEdit::SwapLines(a, b)),
        1 => (at, nasty_token()).prop_map(|(a, t)| TextEdit::InsertLine(a, t)),
        3 => (at, nasty_token()).prop_map(|(a, t)| TextEdit::ReplaceValue(a, t)),
        1 => (at, 1u8..9).prop_map(|(a, n)| TextEdit::Indent(a, n)),
        1 => at.prop_map(TextEdit::Dedent),
        3 => (at, nasty_token()).prop_map(|(a, t)| TextEdit::Splice(a, t)),
        1 => at.prop_map(TextEdit::Truncate),
    ]
}

fn apply_text_edits(text: &str, edits: &[TextEdit]) -> String {
    let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
    let mut tail: Option<String> = None;
    for edit in edits {
        if lines.is_empty() {
            lines.push(String::new());
        }
        let n = lines.len();
        match edit {
            TextEdit::DeleteLine(i) => {
                lines.remove(i % n);
            }
            TextEdit::DuplicateLine(i) => {
                let line = lines[i % n].clone();
                lines.insert(i % n, line);
            }
            TextEdit::SwapLines(a, b) => lines.swap(a % n, b % n),
            TextEdit::InsertLine(i, token) => lines.insert(i % (n + 1), token.clone()),
            TextEdit::ReplaceValue(i, token) => {
                let line = &mut lines[i % n];
                if let Some(colon) = line.find(':') {
                    line.truncate(colon + 1);
                    line.push(' ');
                    line.push_str(token);
                } else {
                    line.push_str(token);
                }
            }
            TextEdit::Indent(i, by) => {
                let line = &mut lines[i % n];
                line.insert_str(0, &" ".repeat(usize::from(*by)));
            }
            TextEdit::Dedent(i) => {
                let line = &mut lines[i % n];
                *line = line.trim_start().to_owned();
            }
            TextEdit::Splice(at, token) => {
                let mut joined = lines.join("\n");
                let cut = char_boundary(&joined, at % (joined.len() + 1));
                joined.insert_str(cut, token);
                lines = joined.split('\n').map(str::to_owned).collect();
            }
            TextEdit::Truncate(at) => {
                let joined = lines.join("\n");
                let cut = char_boundary(&joined, at % (joined.len() + 1));
                tail = Some(joined[..cut].to_owned());
                break;
            }
        }
    }
    tail.unwrap_or_else(|| lines.join("\n"))
}

fn char_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// One edit of a JSON document; `at` picks a node (in document order, wrapping).
#[derive(Debug, Clone)]
enum JsonEdit {
    Remove(usize),
    Retype(usize, Value),
    /// Repeat an array's item (duplicated changes), or an array wrapped around a scalar.
    Duplicate(usize),
    /// Wrap a node in `depth` arrays.
    Nest(usize, usize),
    /// Give a number node (only numbers are picked) another number, often an extreme one: the
    /// document keeps its shape, so the value reaches the code after parsing.
    Renumber(usize, Value),
}

fn json_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        Just(Value::from(u64::MAX)),
        Just(Value::from(i64::MIN)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        Just(json!(1.0e308)),
        nasty_token().prop_map(Value::String),
        Just(json!("2099-01-01T00:00:00Z")),
        Just(json!("-262143-01-01T00:00:00Z")),
        Just(json!("+262142-12-31T23:59:59Z")),
        Just(json!([])),
        Just(json!({})),
        Just(json!([null, {}, ""])),
    ]
}

fn json_edit() -> impl Strategy<Value = JsonEdit> {
    let at = any::<usize>();
    prop_oneof![
        2 => at.prop_map(JsonEdit::Remove),
        4 => (at, json_scalar()).prop_map(|(a, v)| JsonEdit::Retype(a, v)),
        2 => at.prop_map(JsonEdit::Duplicate),
        1 => (at, 1usize..300).prop_map(|(a, d)| JsonEdit::Nest(a, d)),
        3 => (at, prop_oneof![
            Just(Value::from(u64::MAX)),
            Just(Value::from(u64::MAX / 2 + 1)),
            Just(Value::from(u32::MAX)),
            Just(Value::from(0)),
            Just(Value::from(-1)),
            Just(Value::from(i64::MIN)),
            Just(json!(1.5)),
            Just(json!(1.0e300)),
            any::<u64>().prop_map(Value::from),
        ]).prop_map(|(a, v)| JsonEdit::Renumber(a, v)),
    ]
}

/// JSON pointers of every node below the root, in document order.
fn pointers(value: &Value, at: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let pointer = format!("{at}/{}", key.replace('~', "~0").replace('/', "~1"));
                out.push(pointer.clone());
                pointers(child, &pointer, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let pointer = format!("{at}/{i}");
                out.push(pointer.clone());
                pointers(child, &pointer, out);
            }
        }
        _ => {}
    }
}

fn apply_json_edits(mut value: Value, edits: &[JsonEdit]) -> Value {
    for edit in edits {
        let mut all = Vec::new();
        pointers(&value, "", &mut all);
        if let JsonEdit::Renumber(..) = edit {
            all.retain(|pointer| value.pointer(pointer).is_some_and(Value::is_number));
        }
        if all.is_empty() {
            continue;
        }
        let (JsonEdit::Remove(at)
        | JsonEdit::Retype(at, _)
        | JsonEdit::Duplicate(at)
        | JsonEdit::Nest(at, _)
        | JsonEdit::Renumber(at, _)) = edit;
        let pointer = &all[at % all.len()];
        let (parent, last) = pointer.rsplit_once('/').expect("pointers start with /");
        let last = last.replace("~1", "/").replace("~0", "~");
        match edit {
            JsonEdit::Remove(_) => match value.pointer_mut(parent) {
                Some(Value::Object(map)) => {
                    map.shift_remove(&last);
                }
                Some(Value::Array(items)) => {
                    if let Ok(i) = last.parse::<usize>() {
                        items.remove(i);
                    }
                }
                _ => {}
            },
            JsonEdit::Retype(_, new) | JsonEdit::Renumber(_, new) => {
                if let Some(node) = value.pointer_mut(pointer) {
                    *node = new.clone();
                }
            }
            JsonEdit::Duplicate(_) => {
                if let Some(Value::Array(items)) = value.pointer_mut(parent)
                    && let Ok(i) = last.parse::<usize>()
                {
                    let item = items[i].clone();
                    items.insert(i, item);
                } else if let Some(node) = value.pointer_mut(pointer) {
                    *node = Value::Array(vec![node.clone(), node.clone()]);
                }
            }
            JsonEdit::Nest(_, depth) => {
                if let Some(node) = value.pointer_mut(pointer) {
                    let mut nested = node.take();
                    for _ in 0..*depth {
                        nested = Value::Array(vec![nested]);
                    }
                    *node = nested;
                }
            }
        }
    }
    value
}

/// A JSON input: a seed edited as a tree, then as text (truncation at every length class,
/// splices of raw tokens such as `1e400`).
fn mutated_json(seeds: Vec<Value>) -> impl Strategy<Value = Vec<u8>> {
    let seed = prop::sample::select(seeds);
    (
        seed,
        prop::collection::vec(json_edit(), 0..5),
        any::<bool>(),
        prop::collection::vec(text_edit(), 0..3),
    )
        .prop_map(|(seed, edits, pretty, text_edits)| {
            let value = apply_json_edits(seed, &edits);
            let text = if pretty {
                serde_json::to_string_pretty(&value)
            } else {
                serde_json::to_string(&value)
            }
            .expect("a Value serializes");
            apply_text_edits(&text, &text_edits).into_bytes()
        })
}

/// Arbitrary bytes, arbitrary text, or a mutated seed.
fn json_input(seeds: Vec<Value>) -> impl Strategy<Value = Bytes> {
    let any_input = prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..512),
        1 => any::<String>().prop_map(String::into_bytes),
        1 => prop::collection::vec(prop::sample::select(&["{", "}", "[", "]", ",", ":", "\"data\"",
            "\"links\"", "\"next\"", "null", "1e999", "-", "\"", "\\u0000", "\"id\"", "0"][..]), 0..60)
            .prop_map(|tokens| tokens.concat().into_bytes()),
        8 => mutated_json(seeds),
    ];
    any_input.prop_map(Bytes)
}

// ---- 1. the manifest loader ----------------------------------------------------------------

type Files = Vec<(PathBuf, Bytes)>;

/// Every file of `dir` below it, as `load_project` would find them (hidden and `target`
/// directories included: the loader must cope with whatever it is given).
fn read_tree(root: &Path, dir: &Path, out: &mut Files) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("fixture dir")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            read_tree(root, &path, out);
        } else if path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml")
        {
            let rel = path.strip_prefix(root).expect("below root").to_path_buf();
            out.push((rel, Bytes(std::fs::read(&path).expect("fixture file"))));
        }
    }
}

/// The valid example projects (first, the shop and the minimal one) and every broken fixture:
/// the mutation seeds.
fn seed_projects() -> Vec<Files> {
    let base = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs = vec![base.join("examples/shop"), base.join("examples/minimal")];
    let mut broken: Vec<_> = std::fs::read_dir(base.join("tests/fixtures/broken"))
        .expect("broken fixtures")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    broken.sort();
    dirs.extend(broken);
    dirs.iter()
        .map(|dir| {
            let mut files = Vec::new();
            read_tree(dir, dir, &mut files);
            files
        })
        .filter(|files| !files.is_empty())
        .collect()
}

const SETTINGS: &[u8] = b"version: 1\n";

fn project_input() -> impl Strategy<Value = Files> {
    let seeds = seed_projects();
    assert!(
        seeds.len() > 30,
        "the examples and fixtures are the seeds: {}",
        seeds.len()
    );
    let alone = |bytes: Vec<u8>| {
        vec![
            (PathBuf::from("klsync.yaml"), Bytes(SETTINGS.to_vec())),
            (PathBuf::from("m.yaml"), Bytes(bytes)),
        ]
    };
    // The valid examples are drawn as often as all broken fixtures together: a mutation of a
    // valid project often stays valid enough to reach the cross-file checks.
    let valid = seeds[..2].to_vec();
    let seed = prop_oneof![prop::sample::select(valid), prop::sample::select(seeds),];
    let mutated = (
        seed,
        any::<usize>(),
        prop::collection::vec(text_edit(), 1..4),
        any::<usize>(),
        prop::collection::vec(text_edit(), 0..2),
    )
        .prop_map(|(mut files, first, edits, second, more)| {
            for (which, edits) in [(first, edits), (second, more)] {
                let n = files.len();
                let (_, bytes) = &mut files[which % n];
                let text = String::from_utf8_lossy(&bytes.0).into_owned();
                bytes.0 = apply_text_edits(&text, &edits).into_bytes();
            }
            files
        });
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..1024).prop_map(alone),
        1 => any::<String>().prop_map(move |s| alone(s.into_bytes())),
        1 => prop::collection::vec(nasty_token(), 0..40)
            .prop_map(move |tokens| alone(tokens.join(" ").into_bytes())),
        1 => prop::collection::vec(any::<u8>(), 0..256).prop_map(|bytes| vec![
            (PathBuf::from("klsync.yaml"), Bytes(bytes)),
        ]),
        8 => mutated,
    ]
}

/// The manifest property: a project, or diagnostics with at least one error, each saying
/// something and naming a file.
fn check_project(files: Files) -> Result<bool, TestCaseError> {
    let files: Vec<(PathBuf, Vec<u8>)> = files.into_iter().map(|(p, b)| (p, b.0)).collect();
    match manifest::load_sources(Path::new("fuzz"), &files) {
        Ok(project) => {
            let _ = project.digest();
            let _ = project.merged();
            Ok(true)
        }
        Err(ProjectError::Invalid(diagnostics)) => {
            prop_assert!(
                diagnostics.iter().any(|d| d.severity == Severity::Error),
                "refused without an error: {diagnostics:?}"
            );
            for diagnostic in &diagnostics {
                non_empty("diagnostic", &diagnostic.message)?;
                prop_assert!(
                    !diagnostic.file.as_os_str().is_empty() || diagnostic.line > 0,
                    "a diagnostic naming no place: {diagnostic:?}"
                );
            }
            non_empty(
                "project error",
                &ProjectError::Invalid(diagnostics).to_string(),
            )?;
            Ok(false)
        }
        Err(other) => {
            non_empty("project error", &other.to_string())?;
            Ok(false)
        }
    }
}

#[test]
fn fuzz_manifest_loader() {
    fuzz("manifest loader", 1, project_input(), check_project);
}

// ---- 2. the saved-plan loader --------------------------------------------------------------

/// A plan with every kind of configuration change (the render snapshot), and the same plan
/// with a data part holding a profile sync and a mirrored list.
fn seed_plans() -> Vec<Value> {
    let snapshot = include_str!("snapshots/it__plan_render__json.snap");
    let body = snapshot
        .splitn(3, "---\n")
        .nth(2)
        .expect("insta snapshot body");
    let every_kind: Value = serde_json::from_str(body).expect("snapshot is a plan");
    let mut with_data = every_kind.clone();
    with_data["format_version"] = json!(klsync::plan::DATA_FORMAT_VERSION);
    with_data["data"] = json!({
        "profiles": [{
            "id": "shop", "query": "customers", "identify_by": "email",
            "on_missing_row": "unset", "rows": 3,
            "counts": {"new": 1, "changed": 1, "unset": 1, "unchanged": 0, "rejected": 1,
                       "missing_kept": 0},
            "rejected_sample": [{"row": 3, "identifier": "\"not-an-email\"",
                                 "reason": "not an email address"}],
            "diff_sample": [{"identifier": "a@example.com", "action": "changed",
                             "changes": [{"property": "plan", "before": "free",
                                          "after": "vip"}]}],
            "requests": {"spawn_bulk_profile_import_job": 1, "create_or_update_profile": 1},
            "estimated_seconds": 2,
            "drift": [{"identifier": "b@example.com", "property": "plan",
                       "applied": "vip", "live": "edited"}],
            "check": {"id": "shop", "checked": 2, "drift": []}
        }],
        "memberships": [{
            "list": "vip", "list_id": "L1", "query": "vips", "identify_by": "email",
            "mode": "mirror", "rows": 2,
            "counts": {"add": 1, "remove": 1, "unchanged": 1, "rejected": 0,
                       "duplicates": 0, "unconfirmed": 1},
            "add_sample": ["a@example.com"], "remove_sample": ["c@example.com"],
            "rejected_sample": [], "max_removals": 10, "exceeds_max_removals": false,
            "requests": {"add_profiles_to_list": 1}, "estimated_seconds": 1
        }],
        "requests": {"spawn_bulk_profile_import_job": 1, "add_profiles_to_list": 1},
        "estimated_seconds": 3
    });
    vec![every_kind, with_data]
}

fn fuzz_now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-28T01:00:00Z")
        .expect("fixed clock")
        .with_timezone(&Utc)
}

/// The saved-plan property: what `apply PLANFILE` does before the lock and before any request
/// (parse, check digest, age, destroys; summarise and render the plan) gives a value or an
/// error that says something.
fn check_plan(Bytes(bytes): Bytes) -> Result<bool, TestCaseError> {
    let plan = match parse_saved_plan("fuzz.json", &bytes) {
        Ok(plan) => plan,
        Err(err) => {
            non_empty("saved plan", &err.to_string())?;
            return Ok(false);
        }
    };
    for checked in [
        check_digest(&plan, "sha256:0123abcd"),
        check_age(&plan, fuzz_now(), Duration::from_secs(86_400)),
        check_destroys(&plan, false),
        check_destroys(&plan, true),
    ] {
        if let Err(err) = checked {
            non_empty("saved plan check", &err.to_string())?;
        }
    }
    let _ = stale_addresses(&plan.changes, &plan.changes);
    let _ = remainder_mismatches(&plan.changes, &plan.changes);
    let _ = (plan.summary(), plan.is_empty(), plan.total_requests());
    if let Some(data) = &plan.data {
        let _ = (
            data.has_changes(),
            data.exceeds_max_removals(),
            data.refresh_requests(),
        );
    }
    let _ = render::text(&plan, false);
    let _ = render::text(&plan, true);
    let _ = render::markdown(&plan);
    let _ = render::json(&plan);
    Ok(true)
}

#[test]
fn fuzz_saved_plan_loader() {
    let seeds = seed_plans();
    for seed in &seeds {
        let bytes = serde_json::to_vec(seed).expect("seed");
        assert!(
            parse_saved_plan("seed.json", &bytes).is_ok(),
            "seeds are valid plans"
        );
    }
    fuzz("saved-plan loader", 2, json_input(seeds), check_plan);
}

// ---- 3. the JSON:API response decoder ------------------------------------------------------

/// One valid body per kind of document klsync decodes (shaped as the spec's response schemas
/// and the emulator's answers), plus an error body.
fn seed_bodies() -> Vec<Value> {
    let next =
        "https://a.klaviyo.com/api/lists?page%5Bcursor%5D=bmV4dDo6aWQ6OjQ1&page%5Bsize%5D=10";
    vec![
        json!({"data": [{"type": "list", "id": "Y6nRLr", "attributes": {"name": "VIP",
            "created": "2026-01-01T00:00:00+00:00", "updated": "2026-01-02T00:00:00+00:00",
            "opt_in_process": "double_opt_in"},
            "relationships": {"tags": {"data": [{"type": "tag", "id": "t-1"}]}}}],
            "links": {"self": "https://a.klaviyo.com/api/lists", "next": next, "prev": null}}),
        json!({"data": [{"type": "segment", "id": "S1", "attributes": {"name": "Engaged",
            "definition": {"condition_groups": [{"conditions": [{"type": "profile-property",
                "property": "properties['plan']", "filter": {"type": "string",
                "operator": "equals", "value": "vip"}}]}]},
            "is_active": true, "is_processing": false, "is_starred": false,
            "created": "2026-01-01T00:00:00+00:00", "updated": null},
            "relationships": {"tags": {"data": []}}}], "links": {"next": null}}),
        json!({"data": [{"type": "tag", "id": "t-1", "attributes": {"name": "email"},
            "relationships": {"tag-group": {"data": {"type": "tag-group", "id": "tg-1"}}}}],
            "links": {}}),
        json!({"data": [{"type": "tag-group", "id": "tg-1", "attributes": {"name": "channel",
            "exclusive": true, "default": false}}]}),
        json!({"data": [{"type": "profile", "id": "01J0000000000000000000000A", "attributes": {
            "email": "a@example.com", "phone_number": "+15005550006", "external_id": "42",
            "first_name": "Ada", "last_name": null, "location": {"city": "Paris"},
            "properties": {"plan": "vip", "ltv": 12.5, "tags": ["a", "b"]},
            "created": "2026-01-01T00:00:00+00:00", "joined_group_at": "2026-01-01T00:00:00+00:00"}}],
            "links": {"next": "/api/lists/L1/profiles?page%5Bcursor%5D=x"}}),
        json!({"data": [{"type": "profile", "id": "P1"}, {"type": "profile", "id": "P2"}],
            "links": {"next": null}}),
        json!({"data": {"type": "profile", "id": "01J0000000000000000000000A", "attributes": {
            "email": "a@example.com", "properties": null}}}),
        json!({"data": {"type": "profile-bulk-import-job", "id": "job-1", "attributes": {
            "status": "processing", "created_at": "2026-01-01T00:00:00+00:00",
            "total_count": 10000, "completed_count": 5000, "failed_count": 2,
            "completed_at": null, "expires_at": "2026-01-08T00:00:00+00:00"},
            "relationships": {"lists": {"data": [{"type": "list", "id": "L1"}]}}}}),
        json!({"data": [{"type": "import-error", "id": "e-1", "attributes": {
            "code": "invalid", "title": "Invalid email", "detail": "not an email",
            "source": {"pointer": "/data/attributes/email"},
            "original_payload": {"email": "nope", "properties": {"plan": "vip"}}}}],
            "links": {"next": null}}),
        json!({"errors": [{"id": "e", "status": 400, "code": "invalid", "title": "Invalid input.",
            "detail": "bad filter", "source": {"pointer": "/data", "parameter": "filter"},
            "meta": {"duplicate_profile_id": "P1"}}]}),
    ]
}

fn reply(body: Vec<u8>, status: u16, content_type: Option<&str>) -> Reply {
    Reply {
        status,
        content_type: content_type.map(str::to_owned),
        body,
    }
}

/// Decode `reply` as every document klsync reads; true if any gave a value.
fn decode_all(reply: &Reply) -> Result<bool, TestCaseError> {
    fn seen<T>(
        any: &mut bool,
        result: Result<T, klsync::klaviyo::ApiError>,
    ) -> Result<(), TestCaseError> {
        match result {
            Ok(_) => *any = true,
            Err(err) => non_empty("decode", &err.to_string())?,
        }
        Ok(())
    }
    let mut any = false;
    seen(
        &mut any,
        decode::page::<Resource<WireListAttributes>, List>(reply, Operation::GetLists),
    )?;
    seen(
        &mut any,
        decode::page::<Resource<WireSegmentAttributes>, Segment>(reply, Operation::GetSegments),
    )?;
    seen(
        &mut any,
        decode::page::<Resource<WireTagAttributes>, Tag>(reply, Operation::GetTags),
    )?;
    seen(
        &mut any,
        decode::page::<Resource<WireTagGroupAttributes>, TagGroup>(reply, Operation::GetTagGroups),
    )?;
    seen(
        &mut any,
        decode::page::<Resource<ProfileData>, Profile>(reply, Operation::GetProfiles),
    )?;
    seen(
        &mut any,
        decode::page::<Identifier, MemberId>(reply, Operation::GetProfileIdsForList),
    )?;
    seen(
        &mut any,
        decode::page::<Resource<WireImportErrorAttributes>, ImportError>(
            reply,
            Operation::GetErrorsForBulkImportProfilesJob,
        ),
    )?;
    seen(
        &mut any,
        decode::single::<ProfileData, Profile>(reply, Operation::GetProfile),
    )?;
    seen(
        &mut any,
        decode::single::<WireJobAttributes, BulkImportJob>(
            reply,
            Operation::GetBulkImportProfilesJob,
        ),
    )?;
    seen(
        &mut any,
        decode::single::<WireListAttributes, List>(reply, Operation::GetList),
    )?;
    // The same bytes as a 4xx/5xx answer: the error klsync reports must say something.
    let error = klsync::klaviyo::ApiError::Klaviyo {
        status: reply.status + 300,
        errors: ApiErrorObject::parse_body(&reply.body, reply.content_type.as_deref()),
        operation: Operation::CreateList,
    };
    non_empty("error body", &error.to_string())?;
    let _ = (
        error.duplicate_profile_id(),
        error.is_ambiguous(),
        error.stops_the_run(),
    );
    Ok(any)
}

#[test]
fn fuzz_response_decoder() {
    let seeds = seed_bodies();
    let decoded = seeds
        .iter()
        .filter(|seed| {
            decode_all(&reply(serde_json::to_vec(seed).expect("seed"), 200, None)).unwrap()
        })
        .count();
    assert_eq!(
        decoded,
        seeds.len() - 1,
        "every seed but the error body decodes as something"
    );
    let input = (
        json_input(seeds),
        prop::sample::select(&[200u16, 201, 202, 204][..]),
        prop::sample::select(&[Some("application/vnd.api+json"), Some("text/html"), None][..]),
    );
    fuzz(
        "response decoder",
        3,
        input,
        |(body, status, content_type)| decode_all(&reply(body.0, status, content_type)),
    );
}

// ---- regression cases ----------------------------------------------------------------------

/// YAML's "billion laughs": nine levels of aliases, each repeating the one before nine times.
/// Aliases are refused at the first one, so nothing is ever expanded.
#[test]
fn regression_billion_laughs_is_refused_at_once() {
    let mut text = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for (i, name) in ["b", "c", "d", "e", "f", "g", "h", "i"].iter().enumerate() {
        let prev = ["a", "b", "c", "d", "e", "f", "g", "h"][i];
        let refs = vec![format!("*{prev}"); 9].join(",");
        text.push_str(&format!("{name}: &{name} [{refs}]\n"));
    }
    let started = Instant::now();
    let files = vec![
        (PathBuf::from("klsync.yaml"), SETTINGS.to_vec()),
        (PathBuf::from("bomb.yaml"), text.into_bytes()),
    ];
    let Err(ProjectError::Invalid(diagnostics)) = manifest::load_sources(Path::new("p"), &files)
    else {
        panic!("the bomb must be refused");
    };
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(
        diagnostics
            .iter()
            .any(|d| d.message.contains("aliases") && d.line == 2),
        "{diagnostics:?}"
    );
}

/// Found by the saved-plan fuzzer: a plan whose counts were edited to huge numbers made
/// `Plan::total_requests` (and the data summaries and renderings) overflow: a panic in a debug
/// build, a wrong total in a release one. The totals now saturate.
#[test]
fn regression_saved_plan_with_huge_counts() {
    let mut plan = seed_plans().pop().expect("the data plan");
    plan["cost"]["total_requests"] = json!(u64::MAX);
    for path in [
        "/data/requests/spawn_bulk_profile_import_job",
        "/data/requests/add_profiles_to_list",
        "/data/profiles/0/counts/new",
        "/data/profiles/0/counts/changed",
        "/data/profiles/0/counts/unset",
        "/data/profiles/0/requests/create_or_update_profile",
        "/data/profiles/0/check/checked",
        "/data/memberships/0/counts/add",
        "/data/memberships/0/counts/remove",
        "/data/memberships/0/counts/unchanged",
    ] {
        *plan.pointer_mut(path).expect(path) = json!(u64::MAX);
    }
    let mut duplicated = plan["data"]["memberships"][0].clone();
    duplicated["list"] = json!("other");
    plan["data"]["memberships"]
        .as_array_mut()
        .expect("memberships")
        .push(duplicated);
    let bytes = serde_json::to_vec(&plan).expect("plan");
    let parsed = parse_saved_plan("huge.json", &bytes).expect("still a well-formed plan");
    assert_eq!(parsed.total_requests(), u64::MAX);
    assert!(check_plan(Bytes(bytes)).expect("no property failure"));
}
