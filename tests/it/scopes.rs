//! API scopes (issue 12): the emulator answers 403 `permission_denied` for a key without a scope
//! an operation needs (`--api-key KEY:scope,scope`); `plan` lists the scopes an apply needs,
//! and a 403 names the operation and its scopes, once.

use crate::support::scenario::Scenario;
use klsync::emulator::{self, EmulatorConfig, RateLimitMode};

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

async fn scenario() -> Scenario {
    let config = EmulatorConfig {
        rate_limits: RateLimitMode::Off,
        api_keys: vec![
            FULL.to_owned(),
            format!("{READ_ONLY}:lists:read,segments:read,tags:read"),
        ],
        ..EmulatorConfig::default()
    };
    Scenario::start(config, &[("shop.yaml", PROJECT)]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_without_a_write_scope_plans_names_the_scopes_and_fails_naming_the_missing_one() {
    let setup = scenario().await;

    let plan = setup.run_as(READ_ONLY, &["plan"]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    assert!(
        plan.stdout.contains(
            "API key scopes needed: lists:read, lists:write, segments:read, segments:write, \
             tags:read, tags:write"
        ),
        "{}",
        plan.stdout
    );
    let markdown = setup.run_as(READ_ONLY, &["plan", "--format", "markdown"]);
    assert!(
        markdown
            .stdout
            .contains("API key scopes needed: lists:read"),
        "{}",
        markdown.stdout
    );
    let json = setup.run_as(READ_ONLY, &["plan", "--format", "json"]);
    let json: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON plan");
    assert_eq!(json["scopes"][1], "lists:write", "{json}");

    let apply = setup.run_as(READ_ONLY, &["apply", "--auto-approve"]);
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
    setup.emulator.seed(|state| {
        assert!(state.lists.is_empty() && state.segments.is_empty());
    });

    // The same project with a key that has every scope converges.
    let apply = setup.run_as(FULL, &["apply", "--auto-approve"]);
    assert_eq!(apply.code, 0, "{}", apply.stderr);
    let plan = setup.run_as(FULL, &["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "{}", plan.stdout);
    // A read-only key can still plan an empty change set.
    let plan = setup.run_as(READ_ONLY, &["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
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
