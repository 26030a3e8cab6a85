//! Runs the shell steps of the example workflows the way a GitHub runner does
//! (`bash --noprofile --norc -eo pipefail`), with the step's `env:` resolved and fake `klsync`
//! and `gh` commands on PATH, and checks what the step leaves behind: exit status, the PR
//! comment file, step outputs and which plan gets applied.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value as Json, json};
use serde_yaml::Value;

const API_KEY: &str = "pk_fakeKeyThatMustStayOutOfComments";
const STATE_URL: &str = "postgres://klsync:hunter2@db.example.com/klsync?sslmode=require";
const HEAD_SHA: &str = "1111111111111111111111111111111111111111";
const MERGE_SHA: &str = "2222222222222222222222222222222222222222";
const REPO: &str = "acme/marketing";

/// Records its arguments (and whether DATABASE_URL is set) and plays klsync per FAKE_* env.
const FAKE_KLSYNC: &str = r###"#!/usr/bin/env python3
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps({"klsync": args, "database_url": "DATABASE_URL" in os.environ,
                          "api_key": os.environ.get("KLAVIYO_API_KEY", "")}) + "\n")
sub = args[0]
code = int(os.environ.get("FAKE_%s_EXIT" % sub.upper(), "0"))
if sub == "validate" and code:
    print("klaviyo/lists.yaml:3:5: unknown field `nmae`, expected `name`")
if sub == "plan":
    if code in (0, 2):
        with open(args[args.index("--out") + 1], "w") as f:
            f.write('{"plan": true}')
        print("## klsync plan\n\n" + ("No changes." if code == 0 else "+ list `Newsletter`"))
    else:
        print("error: Klaviyo rejected key " + os.environ.get("KLAVIYO_API_KEY", ""), file=sys.stderr)
if sub == "apply" and code:
    print("error: the plan is stale: manifests changed since it was made", file=sys.stderr)
sys.exit(code)
"###;

/// Records how the install step calls cargo; builds nothing.
const FAKE_CARGO: &str = r###"#!/usr/bin/env python3
import json, os, sys
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps({"cargo": sys.argv[1:]}) + "\n")
"###;

/// Answers `gh api PATH [--jq EXPR]` from a fixture file and fakes `gh run download`.
const FAKE_GH: &str = r###"#!/usr/bin/env python3
import json, os, subprocess, sys
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps({"gh": args, "token": bool(os.environ.get("GH_TOKEN"))}) + "\n")
fixtures = json.load(open(os.environ["FAKE_GH_FIXTURES"]))
if args[0] == "api":
    path = args[1]
    if path not in fixtures:
        print("gh: Not Found (HTTP 404)", file=sys.stderr)
        sys.exit(1)
    expr = args[args.index("--jq") + 1] if "--jq" in args else "."
    sys.exit(subprocess.run(["jq", "-r", expr], input=json.dumps(fixtures[path]), text=True).returncode)
if args[:2] == ["run", "download"]:
    key = "download %s %s" % (args[2], args[args.index("--name") + 1])
    if key not in fixtures:
        print("no artifact matches", file=sys.stderr)
        sys.exit(1)
    out = args[args.index("--dir") + 1]
    os.makedirs(out, exist_ok=True)
    for name, text in fixtures[key].items():
        with open(os.path.join(out, name), "w") as f:
            f.write(text)
    sys.exit(0)
print("fake gh: unexpected " + repr(args), file=sys.stderr)
sys.exit(2)
"###;

fn load(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/ci")
        .join(name);
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

struct Step {
    script: String,
    env: Vec<(String, String)>,
}

/// A step's script and its env (workflow, job, then step level), with `${{ }}` resolved from
/// `expressions`; an expression the test did not give is a test bug and panics.
fn step(workflow: &str, job: &str, name: &str, expressions: &HashMap<&str, String>) -> Step {
    let wf = load(workflow);
    let job = &wf["jobs"][job];
    let step = job["steps"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|s| s["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("{workflow}: no step {name:?}"));
    let mut env = Vec::new();
    for level in [&wf["env"], &job["env"], &step["env"]] {
        for (k, v) in level.as_mapping().into_iter().flatten() {
            let value = v.as_str().unwrap();
            let value = if value.contains("${{") {
                resolve(value, expressions)
            } else {
                value.to_string()
            };
            env.push((k.as_str().unwrap().to_string(), value));
        }
    }
    Step {
        script: step["run"].as_str().unwrap().to_string(),
        env,
    }
}

fn resolve(value: &str, expressions: &HashMap<&str, String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").unwrap() + start;
        let expr = rest[start + 3..end].trim();
        let resolved = expressions
            .get(expr)
            .unwrap_or_else(|| panic!("test gives no value for ${{{{ {expr} }}}}"));
        out.push_str(resolved);
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}

struct Runner {
    dir: tempfile::TempDir,
    expressions: HashMap<&'static str, String>,
    vars: Vec<(String, String)>,
}

struct Ran {
    output: Output,
    outputs: String,
    summary: String,
    log: Vec<Json>,
}

impl Ran {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    fn all(&self) -> String {
        format!(
            "{:?}\nstdout:\n{}\nstderr:\n{}",
            self.output.status,
            self.stdout(),
            String::from_utf8_lossy(&self.output.stderr)
        )
    }

    fn klsync_calls(&self) -> Vec<&Json> {
        self.log
            .iter()
            .filter(|l| l.get("klsync").is_some())
            .collect()
    }
}

impl Runner {
    fn new() -> Runner {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        for (name, text) in [
            ("klsync", FAKE_KLSYNC),
            ("gh", FAKE_GH),
            ("cargo", FAKE_CARGO),
        ] {
            let path = bin.join(name);
            std::fs::write(&path, text).unwrap();
            Command::new("chmod").arg("+x").arg(&path).status().unwrap();
        }
        std::fs::create_dir(dir.path().join("work")).unwrap();
        let expressions = HashMap::from([
            ("secrets.KLAVIYO_API_KEY", API_KEY.to_string()),
            ("secrets.KLSYNC_STATE_URL", STATE_URL.to_string()),
            ("secrets.DATABASE_URL", String::new()),
            ("github.token", "ghs_actionsToken".to_string()),
            (
                "github.event.pull_request.head.sha || github.sha",
                HEAD_SHA.to_string(),
            ),
            ("github.server_url", "https://github.com".to_string()),
            ("github.repository", REPO.to_string()),
            ("github.run_id", "4242".to_string()),
            ("github.event.pull_request.number", "7".to_string()),
            ("vars.KLSYNC_SOURCE", String::new()),
            ("inputs.plan_sha", String::new()),
            ("inputs.allow_destroy", String::new()),
        ]);
        Runner {
            dir,
            expressions,
            vars: vec![
                ("GITHUB_REPOSITORY".into(), REPO.into()),
                ("GITHUB_SHA".into(), MERGE_SHA.into()),
                ("GITHUB_EVENT_NAME".into(), "push".into()),
                ("GITHUB_ACTOR".into(), "octocat".into()),
                ("KLSYNC_PR_LOOKUP_DELAY".into(), "0".into()),
            ],
        }
    }

    fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    fn set(&mut self, expression: &'static str, value: &str) -> &mut Self {
        self.expressions.insert(expression, value.to_string());
        self
    }

    fn var(&mut self, name: &str, value: &str) -> &mut Self {
        self.vars.push((name.into(), value.into()));
        self
    }

    fn fixtures(&mut self, fixtures: Json) -> &mut Self {
        let path = self.dir.path().join("fixtures.json");
        std::fs::write(&path, fixtures.to_string()).unwrap();
        self.vars
            .push(("FAKE_GH_FIXTURES".into(), path.display().to_string()));
        self
    }

    fn run(&self, workflow: &str, job: &str, name: &str) -> Ran {
        let step = step(workflow, job, name, &self.expressions);
        let files = ["outputs", "summary", "log"].map(|f| self.dir.path().join(f));
        for f in &files {
            std::fs::write(f, "").unwrap();
        }
        let path = format!(
            "{}:{}",
            self.dir.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new("bash");
        cmd.args([
            "--noprofile",
            "--norc",
            "-eo",
            "pipefail",
            "-c",
            &step.script,
        ])
        .current_dir(self.work())
        .env("PATH", path)
        .env("GITHUB_OUTPUT", &files[0])
        .env("GITHUB_STEP_SUMMARY", &files[1])
        .env("FAKE_LOG", &files[2])
        .envs(self.vars.iter().map(|(k, v)| (k, v)))
        .envs(step.env.iter().map(|(k, v)| (k, v)));
        let output = cmd.output().expect("bash");
        let read = |f: &PathBuf| std::fs::read_to_string(f).unwrap();
        Ran {
            output,
            outputs: read(&files[0]),
            summary: read(&files[1]),
            log: read(&files[2])
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect(),
        }
    }
}

fn comment(runner: &Runner) -> String {
    std::fs::read_to_string(runner.work().join("comment.md")).expect("comment.md written")
}

#[test]
fn a_plan_with_changes_is_commented_and_saved() {
    let mut runner = Runner::new();
    runner.var("FAKE_PLAN_EXIT", "2");
    let ran = runner.run("klsync-plan.yml", "plan", "Validate and plan");
    assert!(ran.output.status.success(), "{}", ran.all());

    let calls = ran.klsync_calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["klsync"], json!(["validate", "-C", "klaviyo"]));
    assert_eq!(
        calls[1]["klsync"],
        json!([
            "plan",
            "-C",
            "klaviyo",
            "--out",
            "plan.json",
            "--format",
            "markdown",
            "--detailed-exitcode"
        ])
    );
    assert_eq!(calls[1]["database_url"], json!(false), "empty secret unset");
    assert_eq!(calls[1]["api_key"], json!(API_KEY));

    let body = comment(&runner);
    assert!(
        body.starts_with("## klsync plan\n\n+ list `Newsletter`\n"),
        "{body}"
    );
    assert!(body.contains(&format!("klsync-plan-{HEAD_SHA}")), "{body}");
    assert!(body.contains("https://github.com/acme/marketing/actions/runs/4242"));
    assert!(runner.work().join("plan.json").exists());
    assert!(ran.outputs.contains("changes=true"), "{}", ran.outputs);
    assert!(ran.summary.contains("+ list `Newsletter`"));
    assert!(
        ran.summary.contains(HEAD_SHA),
        "the summary names the planned commit"
    );
}

/// Stands in for `python3 .github/scripts/klsync-pr-comment.py FILE`: logs the file's text.
const FAKE_PYTHON: &str = r###"#!/bin/sh
printf '{"python3": "%s", "body_file": "%s"}\n' "$1" "$2" >> "$FAKE_LOG"
cp "$2" "$FAKE_LOG.comment"
"###;

#[test]
fn the_comment_step_reports_a_job_that_failed_before_planning() {
    let runner = Runner::new();
    let python = runner.dir.path().join("bin/python3");
    std::fs::write(&python, FAKE_PYTHON).unwrap();
    Command::new("chmod")
        .arg("+x")
        .arg(&python)
        .status()
        .unwrap();

    let ran = runner.run(
        "klsync-plan.yml",
        "plan",
        "Comment the plan on the pull request",
    );
    assert!(ran.output.status.success(), "{}", ran.all());
    assert_eq!(
        ran.log,
        [json!({ "python3": ".github/scripts/klsync-pr-comment.py", "body_file": "comment.md" })]
    );
    let body = std::fs::read_to_string(runner.dir.path().join("log.comment")).unwrap();
    assert!(body.contains("klsync plan did not run"), "{body}");
    assert!(body.contains(&format!("`{HEAD_SHA}`")), "{body}");
    assert!(body.contains("actions/runs/4242"), "{body}");

    // With a comment from the plan step, that comment is posted as it is.
    std::fs::write(runner.work().join("comment.md"), "## the plan\n").unwrap();
    let ran = runner.run(
        "klsync-plan.yml",
        "plan",
        "Comment the plan on the pull request",
    );
    assert!(ran.output.status.success(), "{}", ran.all());
    let body = std::fs::read_to_string(runner.dir.path().join("log.comment")).unwrap();
    assert_eq!(body, "## the plan\n");
}

#[test]
fn a_plan_without_changes_succeeds() {
    let mut runner = Runner::new();
    runner.set("secrets.DATABASE_URL", "postgres://ro@warehouse/db");
    let ran = runner.run("klsync-plan.yml", "plan", "Validate and plan");
    assert!(ran.output.status.success(), "{}", ran.all());
    assert!(ran.outputs.contains("changes=false"));
    assert!(comment(&runner).contains("No changes."));
    assert_eq!(ran.klsync_calls()[1]["database_url"], json!(true));
}

#[test]
fn invalid_manifests_fail_and_the_comment_lists_the_problems() {
    let mut runner = Runner::new();
    runner.var("FAKE_VALIDATE_EXIT", "1");
    let ran = runner.run("klsync-plan.yml", "plan", "Validate and plan");
    assert_eq!(ran.output.status.code(), Some(1), "{}", ran.all());
    assert_eq!(
        ran.klsync_calls().len(),
        1,
        "no plan after a failed validate"
    );
    let body = comment(&runner);
    assert!(body.contains("klsync validate failed"));
    assert!(
        body.contains("klaviyo/lists.yaml:3:5: unknown field"),
        "{body}"
    );
    assert!(!runner.work().join("plan.json").exists());
}

#[test]
fn a_failed_plan_replaces_the_comment_without_klsync_error_text() {
    let mut runner = Runner::new();
    runner.var("FAKE_PLAN_EXIT", "1");
    let ran = runner.run("klsync-plan.yml", "plan", "Validate and plan");
    assert_eq!(ran.output.status.code(), Some(1), "{}", ran.all());
    let body = comment(&runner);
    assert!(body.contains("klsync plan failed"), "{body}");
    assert!(body.contains("actions/runs/4242"));
    assert!(
        !body.contains(API_KEY) && !body.contains("rejected key"),
        "{body}"
    );
}

#[test]
fn missing_secrets_stop_the_plan_with_a_named_error() {
    let mut runner = Runner::new();
    runner.set("secrets.KLSYNC_STATE_URL", "");
    let ran = runner.run("klsync-plan.yml", "plan", "Check secrets");
    assert_eq!(ran.output.status.code(), Some(1));
    let out = ran.stdout();
    assert!(
        out.contains("::error title=Missing secret KLSYNC_STATE_URL::"),
        "{out}"
    );
    assert!(out.contains("lost"), "explains why SQLite is not enough");
    assert!(!out.contains("KLAVIYO_API_KEY::"), "the key is set");
}

fn pull(number: u64, merge_sha: &str, labels: &[&str]) -> Json {
    json!({
        "number": number,
        "merged_at": "2026-11-28T01:00:00Z",
        "merge_commit_sha": merge_sha,
        "head": { "sha": HEAD_SHA },
        "labels": labels.iter().map(|l| json!({ "name": l })).collect::<Vec<_>>(),
    })
}

fn artifact(run_id: u64, created: &str, expired: bool, head_repo: u64) -> Json {
    json!({
        "name": format!("klsync-plan-{HEAD_SHA}"),
        "expired": expired,
        "created_at": created,
        "workflow_run": { "id": run_id, "repository_id": 1, "head_repository_id": head_repo, "head_sha": HEAD_SHA },
    })
}

fn pulls_path() -> String {
    format!("repos/{REPO}/commits/{MERGE_SHA}/pulls")
}

fn artifacts_path() -> String {
    format!("repos/{REPO}/actions/artifacts?name=klsync-plan-{HEAD_SHA}&per_page=100")
}

fn download_key(run: u64) -> String {
    format!("download {run} klsync-plan-{HEAD_SHA}")
}

fn plan_files() -> Json {
    json!({ "plan.json": "{\"reviewed\": true}", "plan.md": "## reviewed plan" })
}

#[test]
fn apply_takes_the_newest_trusted_plan_of_the_merged_pull_request() {
    let mut runner = Runner::new();
    runner.fixtures(json!({
        pulls_path(): [
            // An unmerged PR that also contains the commit must not be picked.
            { "number": 3, "merged_at": null, "merge_commit_sha": "x", "head": { "sha": "y" }, "labels": [] },
            pull(9, MERGE_SHA, &["klsync:allow-destroy"]),
        ],
        artifacts_path(): { "artifacts": [
            artifact(50, "2026-11-28T00:50:00Z", true, 1),
            artifact(10, "2026-11-27T10:00:00Z", false, 1),
            artifact(30, "2026-11-28T00:30:00Z", false, 1),
            artifact(40, "2026-11-28T00:40:00Z", false, 99),
        ]},
        format!("repos/{REPO}/actions/runs/30"): { "path": ".github/workflows/klsync-plan.yml" },
        download_key(30): plan_files(),
    }));
    let ran = runner.run("klsync-apply.yml", "apply", "Find the reviewed plan");
    assert!(ran.output.status.success(), "{}", ran.all());
    assert!(ran.stdout().contains("pull request #9"), "{}", ran.all());
    assert!(
        ran.outputs.contains("allow-destroy=true"),
        "{}",
        ran.outputs
    );
    let plan = std::fs::read_to_string(runner.work().join("reviewed-plan/plan.json")).unwrap();
    assert_eq!(plan, "{\"reviewed\": true}");
    assert!(ran.summary.contains("## reviewed plan"));
    assert!(
        ran.log.iter().all(|l| l["token"] == json!(true)),
        "gh gets GH_TOKEN"
    );
}

#[test]
fn apply_without_the_label_does_not_allow_destroy() {
    let mut runner = Runner::new();
    runner.fixtures(json!({
        pulls_path(): [pull(9, MERGE_SHA, &["docs"])],
        artifacts_path(): { "artifacts": [artifact(30, "2026-11-28T00:30:00Z", false, 1)] },
        format!("repos/{REPO}/actions/runs/30"): { "path": ".github/workflows/klsync-plan.yml@refs/pull/9/merge" },
        download_key(30): plan_files(),
    }));
    let ran = runner.run("klsync-apply.yml", "apply", "Find the reviewed plan");
    assert!(ran.output.status.success(), "{}", ran.all());
    assert!(ran.outputs.contains("allow-destroy=false"));
}

#[test]
fn a_direct_push_has_no_reviewed_plan_and_fails() {
    let mut runner = Runner::new();
    runner.fixtures(json!({ pulls_path(): [] }));
    let ran = runner.run("klsync-apply.yml", "apply", "Find the reviewed plan");
    assert_eq!(ran.output.status.code(), Some(1), "{}", ran.all());
    let out = ran.stdout();
    assert!(
        out.contains("::error title=No reviewed klsync plan::"),
        "{out}"
    );
    assert!(
        out.contains("direct push") && out.contains("klsync plan"),
        "{out}"
    );
    assert!(!runner.work().join("reviewed-plan").exists());
    let lookups = ran
        .log
        .iter()
        .filter(|l| l["gh"][1].as_str() == Some(&pulls_path()));
    assert_eq!(lookups.count(), 3, "the pull request lookup is retried");
}

#[test]
fn a_missing_or_untrusted_artifact_fails() {
    let mut runner = Runner::new();
    runner.fixtures(json!({
        pulls_path(): [pull(9, MERGE_SHA, &[])],
        artifacts_path(): { "artifacts": [artifact(40, "2026-11-28T00:40:00Z", false, 99)] },
    }));
    let ran = runner.run("klsync-apply.yml", "apply", "Find the reviewed plan");
    assert_eq!(ran.output.status.code(), Some(1), "{}", ran.all());
    assert!(ran.stdout().contains("no plan artifact"), "{}", ran.all());

    runner.fixtures(json!({
        pulls_path(): [pull(9, MERGE_SHA, &[])],
        artifacts_path(): { "artifacts": [artifact(30, "2026-11-28T00:30:00Z", false, 1)] },
        format!("repos/{REPO}/actions/runs/30"): { "path": ".github/workflows/other.yml" },
        download_key(30): plan_files(),
    }));
    let ran = runner.run("klsync-apply.yml", "apply", "Find the reviewed plan");
    assert_eq!(ran.output.status.code(), Some(1), "{}", ran.all());
    assert!(ran.stdout().contains("refusing it"), "{}", ran.all());
    assert!(!runner.work().join("reviewed-plan").exists());
}

#[test]
fn a_manual_apply_takes_the_given_sha_and_checks_it() {
    let mut runner = Runner::new();
    runner
        .var("GITHUB_EVENT_NAME", "workflow_dispatch")
        .set("inputs.plan_sha", "main; rm -rf /")
        .fixtures(json!({}));
    let ran = runner.run("klsync-apply.yml", "apply", "Find the reviewed plan");
    assert_eq!(ran.output.status.code(), Some(1), "{}", ran.all());
    assert!(ran.stdout().contains("40-character"), "{}", ran.all());

    runner
        .set("inputs.plan_sha", HEAD_SHA)
        .set("inputs.allow_destroy", "true");
    runner.fixtures(json!({
        artifacts_path(): { "artifacts": [artifact(30, "2026-11-28T00:30:00Z", false, 1)] },
        format!("repos/{REPO}/actions/runs/30"): { "path": ".github/workflows/klsync-plan.yml" },
        download_key(30): plan_files(),
    }));
    let ran = runner.run("klsync-apply.yml", "apply", "Find the reviewed plan");
    assert!(ran.output.status.success(), "{}", ran.all());
    assert!(ran.outputs.contains("allow-destroy=true"));
    assert!(
        !ran.log
            .iter()
            .any(|l| l["gh"][1].as_str() == Some(&pulls_path())),
        "a manual run does not look for a pull request"
    );
}

fn apply_step(allow_destroy: &str, exit: &str) -> (Runner, Ran) {
    let mut runner = Runner::new();
    runner
        .set("steps.find.outputs.allow-destroy", allow_destroy)
        .var("FAKE_APPLY_EXIT", exit);
    let ran = runner.run("klsync-apply.yml", "apply", "Apply the reviewed plan");
    (runner, ran)
}

#[test]
fn apply_passes_allow_destroy_only_when_allowed() {
    let (_, ran) = apply_step("false", "0");
    assert!(ran.output.status.success(), "{}", ran.all());
    assert_eq!(
        ran.klsync_calls()[0]["klsync"],
        json!([
            "apply",
            "-C",
            "klaviyo",
            "reviewed-plan/plan.json",
            "--auto-approve"
        ])
    );
    let (_, ran) = apply_step("true", "0");
    assert_eq!(
        ran.klsync_calls()[0]["klsync"],
        json!([
            "apply",
            "-C",
            "klaviyo",
            "reviewed-plan/plan.json",
            "--auto-approve",
            "--allow-destroy"
        ])
    );
    assert!(ran.summary.contains("applied"));
}

#[test]
fn a_refused_or_partial_apply_fails_with_what_to_do() {
    let (_, ran) = apply_step("false", "1");
    assert_eq!(ran.output.status.code(), Some(1));
    let out = ran.stdout();
    assert!(
        out.contains("::error title=klsync apply refused or failed::"),
        "{out}"
    );
    assert!(out.contains("plan_sha"), "{out}");

    let (_, ran) = apply_step("false", "3");
    assert_eq!(ran.output.status.code(), Some(3));
    assert!(ran.stdout().contains("Re-run failed jobs"), "{}", ran.all());
}

#[test]
fn install_builds_the_pinned_tag_from_the_configured_source() {
    for (workflow, job) in [("klsync-plan.yml", "plan"), ("klsync-apply.yml", "apply")] {
        let step = format!("Install klsync {}", "${{ env.KLSYNC_VERSION }}");
        let mut runner = Runner::new();
        runner.set(
            "vars.KLSYNC_SOURCE",
            "https://git.example.com/acme/klsync.git",
        );
        let ran = runner.run(workflow, job, &step);
        assert!(ran.output.status.success(), "{workflow}: {}", ran.all());
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(
            ran.log,
            [json!({"cargo": ["install", "--locked", "--git",
                "https://git.example.com/acme/klsync.git", "--tag", format!("v{version}"), "klsync"]})],
            "{workflow}"
        );
    }
}

#[test]
fn install_without_a_source_fails_saying_which_variable_to_set() {
    for (workflow, job) in [("klsync-plan.yml", "plan"), ("klsync-apply.yml", "apply")] {
        let step = format!("Install klsync {}", "${{ env.KLSYNC_VERSION }}");
        let ran = Runner::new().run(workflow, job, &step);
        assert_eq!(
            ran.output.status.code(),
            Some(1),
            "{workflow}: {}",
            ran.all()
        );
        assert!(
            ran.stdout()
                .contains("::error title=Missing variable KLSYNC_SOURCE::"),
            "{workflow}: {}",
            ran.all()
        );
        assert!(
            ran.log.is_empty(),
            "{workflow}: cargo must not run: {:?}",
            ran.log
        );
    }
}
