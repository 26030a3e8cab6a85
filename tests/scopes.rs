//! API scopes (issue 12): the emulator answers 403 `permission_denied` for a key without a scope
//! an operation needs (`--api-key KEY:scope,scope`); `plan` lists the scopes an apply needs,
//! and a 403 names the operation and its scopes, once.

mod support;

use klsync::emulator::{self, EmulatorConfig, EmulatorHandle, RateLimitMode};
use support::project::{Finished, TempProject, klsync, run};

const FULL: &str = "pk_full_access";
const READ_ONLY: &str = "pk_read_only";

const PROJECT: &str = "\
tag_groups:
  - name: team
    tags: [growth]
lists:
  - id: vip
    name: VIP
    tags: [team/growth]
segments:
  - id: engaged
    name: Engaged
    definition:
      condition_groups:
        - conditions:
            - type: profile-property
              property: properties['ltv']
              filter: {type: numeric, operator: greater-than, value: 100}
";

async fn emulator() -> EmulatorHandle {
    emulator::start(EmulatorConfig {
        rate_limits: RateLimitMode::Off,
        api_keys: vec![
            FULL.to_owned(),
            format!("{READ_ONLY}:lists:read,segments:read,tags:read"),
        ],
        ..EmulatorConfig::default()
    })
    .await
    .expect("start the emulator")
}

fn klsync_with(
    emulator: &EmulatorHandle,
    project: &TempProject,
    key: &str,
    args: &[&str],
) -> Finished {
    run(klsync()
        .args(args)
        .arg("-C")
        .arg(project.path())
        .env("KLAVIYO_API_KEY", key)
        .env("KLAVIYO_BASE_URL", &emulator.base_url)
        .env(
            "KLSYNC_STATE_URL",
            format!("sqlite://{}/state.db", project.path().display()),
        ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_without_a_write_scope_plans_names_the_scopes_and_fails_naming_the_missing_one() {
    let emulator = emulator().await;
    let project = TempProject::new(&[("shop.yaml", PROJECT)]);

    let plan = klsync_with(&emulator, &project, READ_ONLY, &["plan"]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    assert!(
        plan.stdout.contains(
            "API key scopes needed: lists:read, lists:write, segments:read, segments:write, \
             tags:read, tags:write"
        ),
        "{}",
        plan.stdout
    );
    let markdown = klsync_with(
        &emulator,
        &project,
        READ_ONLY,
        &["plan", "--format", "markdown"],
    );
    assert!(
        markdown
            .stdout
            .contains("API key scopes needed: lists:read"),
        "{}",
        markdown.stdout
    );
    let json = klsync_with(
        &emulator,
        &project,
        READ_ONLY,
        &["plan", "--format", "json"],
    );
    let json: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON plan");
    assert_eq!(json["scopes"][1], "lists:write", "{json}");

    let apply = klsync_with(&emulator, &project, READ_ONLY, &["apply", "--auto-approve"]);
    assert_ne!(apply.code, 0, "{}", apply.stderr);
    let hint = "create_tag_group needs an API key with the scope(s) tags:read, tags:write";
    assert!(
        apply
            .stderr
            .contains("create_tag_group failed with HTTP 403: permission_denied"),
        "{}",
        apply.stderr
    );
    let recap = apply
        .stderr
        .split_once("Apply failed:")
        .map_or("", |(_, recap)| recap);
    assert_eq!(recap.matches(hint).count(), 1, "{}", apply.stderr);
    assert!(
        recap.contains("create_list needs an API key with the scope(s) lists:write"),
        "{}",
        apply.stderr
    );
    emulator.seed(|state| {
        assert!(state.lists.is_empty() && state.segments.is_empty());
    });

    // The same project with a key that has every scope converges.
    let apply = klsync_with(&emulator, &project, FULL, &["apply", "--auto-approve"]);
    assert_eq!(apply.code, 0, "{}", apply.stderr);
    let plan = klsync_with(&emulator, &project, FULL, &["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "{}", plan.stdout);
    // A read-only key can still plan an empty change set.
    let plan = klsync_with(
        &emulator,
        &project,
        READ_ONLY,
        &["plan", "--detailed-exitcode"],
    );
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    emulator.shutdown().await;
}

#[tokio::test]
async fn an_unknown_scope_is_refused_when_the_emulator_starts() {
    let err = emulator::start(EmulatorConfig {
        api_keys: vec!["pk_x:lists:raed".to_owned()],
        ..EmulatorConfig::default()
    })
    .await
    .expect_err("a misspelt scope");
    assert!(
        err.to_string().contains("unknown scope \"lists:raed\""),
        "{err}"
    );
}
