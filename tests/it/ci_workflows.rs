//! Checks the example GitHub Actions workflows in `examples/ci/` against the klsync CLI contract
//! and the setup guide, docs/ci.md, without GitHub: YAML structure, secrets, every `klsync`
//! command line, shell syntax, and that the guide's copy commands produce a working layout.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value;

const PLAN: &str = "klsync-plan.yml";
const APPLY: &str = "klsync-apply.yml";
const SCRIPT: &str = "klsync-pr-comment.py";
/// The secrets klsync reads; the workflows must take them from the secret store only.
const SECRETS: [&str; 3] = ["KLAVIYO_API_KEY", "KLSYNC_STATE_URL", "DATABASE_URL"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn example(name: &str) -> PathBuf {
    root().join("examples/ci").join(name)
}

fn load(name: &str) -> Value {
    let text = std::fs::read_to_string(example(name)).expect("read workflow");
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{name} is not valid YAML: {e}"))
}

fn get<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, key| &v[*key])
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    get(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path:?} is not a string: {:?}", get(v, path)))
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_sequence()
        .map(|s| s.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Every step of every job, with its job name.
fn steps(wf: &Value) -> Vec<(String, &Value)> {
    let jobs = wf["jobs"].as_mapping().expect("jobs");
    jobs.iter()
        .flat_map(|(name, job)| {
            let name = name.as_str().unwrap().to_string();
            job["steps"]
                .as_sequence()
                .into_iter()
                .flatten()
                .map(move |s| (name.clone(), s))
        })
        .collect()
}

fn run_scripts(wf: &Value) -> Vec<&str> {
    steps(wf)
        .into_iter()
        .filter_map(|(_, s)| s["run"].as_str())
        .collect()
}

fn step_named<'a>(wf: &'a Value, name: &str) -> &'a Value {
    steps(wf)
        .into_iter()
        .map(|(_, s)| s)
        .find(|s| s["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no step named {name:?}"))
}

/// Splits one shell line into words (quotes removed) and operator tokens such as `;` or `>`.
fn shell_words(line: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '#') if !in_word => break,
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push((std::mem::take(&mut word), false));
                    in_word = false;
                }
            }
            (None, ';' | '|' | '&' | '(' | ')' | '<' | '>') => {
                if in_word {
                    out.push((std::mem::take(&mut word), false));
                    in_word = false;
                }
                let mut op = c.to_string();
                while let Some(&n) = chars.peek() {
                    if matches!(n, '|' | '&' | '<' | '>') {
                        op.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push((op, true));
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push((word, false));
    }
    out
}

/// The argument lists of every `klsync` command in a script (the words after `klsync`).
fn klsync_invocations(script: &str) -> Vec<Vec<String>> {
    let joined = script.replace("\\\n", " ");
    let mut found = Vec::new();
    for line in joined.lines() {
        let words = shell_words(line);
        let mut command_start = true;
        for (i, (word, is_op)) in words.iter().enumerate() {
            if *is_op {
                command_start = true;
                continue;
            }
            if command_start && word == "klsync" {
                let args = words[i + 1..]
                    .iter()
                    .take_while(|(_, op)| !op)
                    .map(|(w, _)| w.clone())
                    .collect();
                found.push(args);
            }
            command_start = matches!(
                word.as_str(),
                "if" | "then" | "else" | "elif" | "do" | "!" | "time"
            );
        }
    }
    found
}

/// Checks one `klsync` command line against the CLI contract; returns the subcommand.
fn check_contract(args: &[String]) -> Result<String, String> {
    let (sub, rest) = args.split_first().ok_or("klsync without a subcommand")?;
    let (valued, switches, max_positional): (&[&str], &[&str], usize) = match sub.as_str() {
        "validate" => (&["-C"], &[], 0),
        "plan" => (&["-C", "--out", "--format"], &["--detailed-exitcode"], 0),
        "apply" => (&["-C"], &["--auto-approve", "--allow-destroy"], 1),
        other => return Err(format!("subcommand {other:?} is not in the contract")),
    };
    let mut positional = 0;
    let mut it = rest.iter();
    while let Some(arg) = it.next() {
        if valued.contains(&arg.as_str()) {
            let value = it.next().ok_or(format!("{arg} needs a value"))?;
            if arg == "--format" && !["json", "text", "markdown"].contains(&value.as_str()) {
                return Err(format!("--format {value} is not json, text or markdown"));
            }
        } else if switches.contains(&arg.as_str()) {
        } else if arg.starts_with('-') {
            return Err(format!("klsync {sub}: flag {arg} is not in the contract"));
        } else {
            positional += 1;
        }
    }
    if positional > max_positional {
        return Err(format!("klsync {sub}: too many arguments {rest:?}"));
    }
    Ok(sub.clone())
}

fn has(args: &[String], flag: &str) -> bool {
    args.iter().any(|a| a == flag)
}

fn value_of<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let i = args.iter().position(|a| a == flag)?;
    args.get(i + 1).map(String::as_str)
}

fn invocations(wf: &Value) -> Vec<Vec<String>> {
    run_scripts(wf)
        .into_iter()
        .flat_map(klsync_invocations)
        .collect()
}

#[test]
fn the_shell_word_splitter_finds_commands_and_ignores_text() {
    let script = "set +e\nklsync plan -C \"$KLSYNC_DIR\" --out plan.json > plan.md 2>&1\n\
                  echo \"run klsync apply later\" # klsync apply\n\
                  if true; then klsync apply -C k \\\n  p.json --auto-approve; fi\n\
                  cargo install klsync --locked";
    let found = klsync_invocations(script);
    assert_eq!(
        found,
        [
            vec!["plan", "-C", "$KLSYNC_DIR", "--out", "plan.json"],
            vec!["apply", "-C", "k", "p.json", "--auto-approve"],
        ]
    );
    assert!(check_contract(&found[0]).is_ok());
    assert!(check_contract(&["plan".into(), "--yes".into()]).is_err());
    assert!(check_contract(&["apply".into(), "a.json".into(), "b.json".into()]).is_err());
    assert!(check_contract(&["plan".into(), "--format".into(), "html".into()]).is_err());
    assert!(check_contract(&["destroy".into()]).is_err());
}

#[test]
fn every_klsync_command_uses_only_the_cli_contract() {
    for (name, expected) in [(PLAN, ["plan", "validate"]), (APPLY, ["apply", "apply"])] {
        let wf = load(name);
        let mut subs: Vec<String> = invocations(&wf)
            .iter()
            .map(|args| check_contract(args).unwrap_or_else(|e| panic!("{name}: {e}")))
            .collect();
        subs.sort();
        subs.dedup();
        let mut expected: Vec<&str> = expected.to_vec();
        expected.dedup();
        assert_eq!(subs, expected, "{name} runs these klsync subcommands");
        for args in invocations(&wf) {
            assert_eq!(
                value_of(&args, "-C"),
                Some("$KLSYNC_DIR"),
                "{name}: every command works on KLSYNC_DIR: {args:?}"
            );
        }
    }
}

#[test]
fn the_plan_workflow_plans_pull_requests_touching_the_manifests() {
    let wf = load(PLAN);
    let paths = strings(get(&wf, &["on", "pull_request", "paths"]));
    assert!(paths.contains(&"klaviyo/**"), "{paths:?}");
    assert_eq!(str_at(&wf, &["env", "KLSYNC_DIR"]), "klaviyo");

    let permissions = wf["permissions"].as_mapping().expect("permissions");
    assert_eq!(permissions.len(), 2, "minimal permissions: {permissions:?}");
    assert_eq!(str_at(&wf, &["permissions", "contents"]), "read");
    assert_eq!(str_at(&wf, &["permissions", "pull-requests"]), "write");

    let group = str_at(&wf, &["concurrency", "group"]);
    assert!(
        group.contains("github.event.pull_request.number"),
        "{group}"
    );
    assert_eq!(wf["concurrency"]["cancel-in-progress"], Value::Bool(true));

    let plans: Vec<Vec<String>> = invocations(&wf)
        .into_iter()
        .filter(|a| a[0] == "plan")
        .collect();
    assert_eq!(plans.len(), 1);
    let plan = &plans[0];
    assert_eq!(value_of(plan, "--out"), Some("plan.json"));
    assert_eq!(value_of(plan, "--format"), Some("markdown"));
    assert!(has(plan, "--detailed-exitcode"));
    let plan_script = str_at(step_named(&wf, "Validate and plan"), &["run"]);
    assert!(
        plan_script.contains("0 | 2)"),
        "exit 2 (changes) is success for --detailed-exitcode"
    );
}

#[test]
fn the_plan_workflow_uploads_the_reviewed_plan_named_after_the_head_sha() {
    let wf = load(PLAN);
    let upload = steps(&wf)
        .into_iter()
        .map(|(_, s)| s)
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("actions/upload-artifact@"))
        })
        .expect("an upload-artifact step");
    let name = str_at(upload, &["with", "name"]);
    assert!(
        name.starts_with("klsync-plan-${{ github.event.pull_request.head.sha"),
        "{name}"
    );
    let paths = str_at(upload, &["with", "path"]);
    assert!(paths.lines().any(|l| l.trim() == "plan.json"), "{paths}");
    assert_eq!(str_at(upload, &["if"]), "steps.plan.outcome == 'success'");
}

#[test]
fn the_plan_workflow_comments_with_the_script_and_skips_forks() {
    let wf = load(PLAN);
    let comment = step_named(&wf, "Comment the plan on the pull request");
    let run = str_at(comment, &["run"]);
    assert!(
        run.contains(&format!("python3 .github/scripts/{SCRIPT} comment.md")),
        "{run}"
    );
    assert_eq!(
        str_at(comment, &["env", "GITHUB_TOKEN"]),
        "${{ github.token }}"
    );
    assert_eq!(
        str_at(comment, &["env", "PR_NUMBER"]),
        "${{ github.event.pull_request.number }}"
    );
    let condition = str_at(comment, &["if"]);
    assert!(
        condition.contains("!cancelled()"),
        "comment after failures too"
    );
    assert!(
        !condition.contains("hashFiles"),
        "even when nothing was planned"
    );

    let plan_if = str_at(&wf, &["jobs", "plan", "if"]);
    assert!(
        plan_if.contains("github.event.pull_request.head.repo.full_name == github.repository"),
        "{plan_if}"
    );
    let notice_if = str_at(&wf, &["jobs", "fork-notice", "if"]);
    assert!(
        notice_if.contains("github.event.pull_request.head.repo.full_name != github.repository")
    );
    let notice = run_scripts(&wf).join("\n");
    assert!(notice.contains("::notice"), "forks get a notice");
}

#[test]
fn the_apply_workflow_applies_the_saved_plan_on_push_to_main() {
    let wf = load(APPLY);
    assert_eq!(strings(get(&wf, &["on", "push", "branches"])), ["main"]);
    assert!(strings(get(&wf, &["on", "push", "paths"])).contains(&"klaviyo/**"));
    assert_eq!(str_at(&wf, &["concurrency", "group"]), "klsync-apply");
    assert_eq!(wf["concurrency"]["cancel-in-progress"], Value::Bool(false));
    assert_eq!(str_at(&wf, &["env", "KLSYNC_DIR"]), "klaviyo");

    let applies = invocations(&wf);
    assert_eq!(applies.len(), 2);
    for args in &applies {
        assert!(has(args, "--auto-approve"), "{args:?}");
        let positional: Vec<&String> = args[1..]
            .iter()
            .filter(|a| !a.starts_with('-') && a.as_str() != "$KLSYNC_DIR")
            .collect();
        assert_eq!(
            positional,
            ["reviewed-plan/plan.json"],
            "applies a saved plan file"
        );
    }
    assert_eq!(
        applies.iter().filter(|a| has(a, "--allow-destroy")).count(),
        1,
        "--allow-destroy only on the labelled branch"
    );

    let find = str_at(step_named(&wf, "Find the reviewed plan"), &["run"]);
    assert!(find.contains("commits/$GITHUB_SHA/pulls"));
    assert!(find.contains("merge_commit_sha"));
    assert!(find.contains("actions/artifacts?name=$name"));
    assert!(find.contains("name=\"klsync-plan-$plan_sha\""));
    assert!(find.contains("gh run download"));
    assert!(find.contains("KLSYNC_DESTROY_LABEL"));
    assert_eq!(
        str_at(&wf, &["env", "KLSYNC_DESTROY_LABEL"]),
        "klsync:allow-destroy"
    );
    let permissions = wf["permissions"].as_mapping().expect("permissions");
    for (key, value) in permissions {
        assert_eq!(value.as_str(), Some("read"), "{key:?} must be read-only");
    }
}

/// Every env map in a workflow: workflow level, job level and step level.
fn env_maps(wf: &Value) -> Vec<&serde_yaml::Mapping> {
    let mut maps: Vec<&serde_yaml::Mapping> = wf["env"].as_mapping().into_iter().collect();
    for (_, job) in wf["jobs"].as_mapping().expect("jobs") {
        maps.extend(job["env"].as_mapping());
    }
    maps.extend(
        steps(wf)
            .into_iter()
            .filter_map(|(_, s)| s["env"].as_mapping()),
    );
    maps
}

#[test]
fn secrets_come_only_from_the_secret_store() {
    for name in [PLAN, APPLY] {
        let wf = load(name);
        let mut seen = BTreeSet::new();
        for map in env_maps(&wf) {
            for (key, value) in map {
                let key = key.as_str().unwrap();
                if SECRETS.contains(&key) {
                    assert_eq!(
                        value.as_str(),
                        Some(format!("${{{{ secrets.{key} }}}}").as_str()),
                        "{name}: {key} must come from secrets"
                    );
                    seen.insert(key);
                }
                assert_ne!(
                    key, "KLAVIYO_BASE_URL",
                    "{name}: the real API is the default"
                );
            }
        }
        assert_eq!(
            seen.into_iter().collect::<Vec<_>>(),
            ["DATABASE_URL", "KLAVIYO_API_KEY", "KLSYNC_STATE_URL"],
            "{name} passes every klsync secret"
        );
        let text = std::fs::read_to_string(example(name)).unwrap();
        assert!(!text.contains("pk_"), "{name}: no literal Klaviyo key");
        for scheme in ["postgres://", "postgresql://", "sqlite:", "mysql://"] {
            assert!(!text.contains(scheme), "{name}: no literal database URL");
        }
    }
}

#[test]
fn both_workflows_install_the_pinned_version_and_cache_it() {
    for name in [PLAN, APPLY] {
        let wf = load(name);
        assert_eq!(
            str_at(&wf, &["env", "KLSYNC_VERSION"]),
            env!("CARGO_PKG_VERSION"),
            "{name} pins the version this repository builds"
        );
        let cache = steps(&wf)
            .into_iter()
            .map(|(_, s)| s)
            .find(|s| {
                s["uses"]
                    .as_str()
                    .is_some_and(|u| u.starts_with("actions/cache@"))
            })
            .unwrap_or_else(|| panic!("{name}: no cache step"));
        assert_eq!(str_at(cache, &["with", "path"]), "~/.cargo/bin/klsync");
        assert!(str_at(cache, &["with", "key"]).contains("${{ env.KLSYNC_VERSION }}"));
        let id = str_at(cache, &["id"]);
        let install = steps(&wf)
            .into_iter()
            .map(|(_, s)| s)
            .find(|s| {
                s["run"]
                    .as_str()
                    .is_some_and(|r| r.contains("cargo install"))
            })
            .unwrap_or_else(|| panic!("{name}: no install step"));
        // klsync is not on crates.io: the step builds the tag of this version from a git source.
        assert!(
            str_at(install, &["run"]).trim().ends_with(
                "cargo install --locked --git \"$KLSYNC_SOURCE\" --tag \"v$KLSYNC_VERSION\" klsync"
            ),
            "{name}: {}",
            str_at(install, &["run"])
        );
        assert_eq!(
            str_at(&wf, &["env", "KLSYNC_SOURCE"]),
            "${{ vars.KLSYNC_SOURCE }}"
        );
        assert_eq!(
            str_at(install, &["if"]),
            format!("steps.{id}.outputs.cache-hit != 'true'")
        );
    }
}

#[test]
fn run_scripts_are_valid_bash_without_expression_injection() {
    for name in [PLAN, APPLY] {
        let wf = load(name);
        assert_eq!(str_at(&wf, &["defaults", "run", "shell"]), "bash");
        for script in run_scripts(&wf) {
            // `${{ }}` in a script is pasted in before bash runs: values go through env instead.
            assert!(
                !script.contains("${{"),
                "{name}: expression in script:\n{script}"
            );
            let out = Command::new("bash")
                .args(["-n", "-c", script])
                .output()
                .expect("bash");
            assert!(
                out.status.success(),
                "{name}: bash -n failed: {}\n{script}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn the_comment_script_compiles() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("python3")
        .args([
            "-c",
            "import py_compile, sys; py_compile.compile(sys.argv[1], cfile=sys.argv[2], doraise=True)",
        ])
        .arg(example(SCRIPT))
        .arg(dir.path().join("script.pyc"))
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The shell block the guide marks as the copy step.
fn docs_copy_block(docs: &str) -> &str {
    let after = docs
        .split_once("<!-- ci-setup:copy -->")
        .expect("docs/ci.md marks the CI copy step")
        .1;
    let block = after
        .trim_start()
        .strip_prefix("```sh\n")
        .expect("a sh block follows the marker");
    block.split_once("```").expect("closed block").0
}

#[test]
fn following_the_guide_installs_the_examples_unchanged() {
    let docs = std::fs::read_to_string(root().join("docs/ci.md")).unwrap();
    let repo = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(repo.path())
            .output()
            .expect("git");
        assert!(out.status.success(), "git {args:?}: {out:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    std::fs::create_dir(repo.path().join("klaviyo")).unwrap();
    std::fs::write(repo.path().join("klaviyo/klsync.yaml"), "{}\n").unwrap();

    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", docs_copy_block(&docs)])
        .current_dir(repo.path())
        .env("KLSYNC_SRC", root())
        .env("GIT_AUTHOR_NAME", "New User")
        .env("GIT_AUTHOR_EMAIL", "new@example.com")
        .env("GIT_COMMITTER_NAME", "New User")
        .env("GIT_COMMITTER_EMAIL", "new@example.com")
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "the guide's copy step failed: {out:?}"
    );

    let installed = |path: &str, name: &str| {
        let got = std::fs::read(repo.path().join(path))
            .unwrap_or_else(|_| panic!("{path} missing after the guide"));
        assert_eq!(got, std::fs::read(example(name)).unwrap(), "{path} changed");
    };
    let plan_path = ".github/workflows/klsync-plan.yml";
    installed(plan_path, PLAN);
    installed(".github/workflows/klsync-apply.yml", APPLY);

    // The paths the workflows rely on are where the guide put the files.
    let plan = load(PLAN);
    let comment_run = str_at(
        step_named(&plan, "Comment the plan on the pull request"),
        &["run"],
    );
    let words: Vec<&str> = comment_run.split_whitespace().collect();
    let python = words.iter().position(|w| *w == "python3").expect("python3");
    let script_path = words[python + 1];
    installed(script_path, SCRIPT);
    let plan_paths = strings(get(&plan, &["on", "pull_request", "paths"]));
    assert!(plan_paths.contains(&plan_path) && plan_paths.contains(&script_path));
    let apply = load(APPLY);
    assert_eq!(str_at(&apply, &["env", "KLSYNC_PLAN_WORKFLOW"]), plan_path);

    // The guide names every secret the workflows read, and the directory they work on.
    for secret in SECRETS {
        assert!(
            docs.contains(&format!("`{secret}`")),
            "guide omits {secret}"
        );
        assert!(
            docs.contains(&format!("gh secret set {secret}")),
            "{secret}"
        );
    }
    assert!(docs.contains("`klaviyo/`"));
    assert!(docs.contains("`klsync:allow-destroy`"));
    assert!(docs.contains("<!-- klsync-plan -->"));
}
