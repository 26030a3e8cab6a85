//! `--target ADDRESS` on plan and apply (issue 13): only the named resources and data syncs,
//! with what they depend on; a saved targeted plan applies as reviewed; an unknown address is
//! refused.

use crate::support::project::Finished;
use crate::support::scenario::Scenario;
use klsync::emulator::{EmulatorConfig, RateLimitMode};
use serde_json::Value;

const PROJECT: &str = "\
tag_groups:
  - name: team
    tags: [growth]
lists:
  - id: vip
    name: VIP
    tags: [team/growth]
    members: {query: big_spenders, identify_by: email}
  - id: other
    name: Other
segments:
  - id: vip-members
    name: VIP members
    definition:
      condition_groups:
        - conditions:
            - {type: profile-group-membership, is_member: true, group_ids: [vip]}
profiles:
  - id: spend
    query: everyone
    identify_by: email
    properties: {total_spend: spend}
queries:
  big_spenders:
    sql: SELECT email FROM customers WHERE spend > 10
  everyone:
    sql: SELECT email, spend FROM customers
";

struct Setup {
    scenario: Scenario,
}

impl Setup {
    async fn new() -> Setup {
        let config = EmulatorConfig {
            rate_limits: RateLimitMode::Off,
            ..EmulatorConfig::default()
        };
        let scenario = Scenario::start(config, &[("shop.yaml", PROJECT)]).await;
        scenario
            .data(
                "CREATE TABLE customers (email TEXT NOT NULL, spend INTEGER NOT NULL);
                 INSERT INTO customers VALUES ('a@example.com', 5), ('b@example.com', 20);",
            )
            .await;
        Setup { scenario }
    }

    fn klsync(&self, args: &[&str]) -> Finished {
        self.scenario.run(args)
    }

    fn plan_json(&self, extra: &[&str]) -> Value {
        let mut args = vec!["plan", "--format", "json"];
        args.extend_from_slice(extra);
        let plan = self.klsync(&args);
        assert_eq!(plan.code, 0, "{}", plan.stderr);
        serde_json::from_str(&plan.stdout).unwrap()
    }

    fn names(&self) -> (Vec<String>, Vec<String>, usize) {
        self.scenario.emulator.seed(|state| {
            let mut lists: Vec<String> = state.lists.values().map(|l| l.name.clone()).collect();
            lists.sort();
            let mut segments: Vec<String> =
                state.segments.values().map(|s| s.name.clone()).collect();
            segments.sort();
            (lists, segments, state.profiles.len())
        })
    }
}

fn addresses(plan: &Value) -> Vec<&str> {
    plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["address"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_brings_what_it_needs_and_nothing_else() {
    let setup = Setup::new().await;

    // The segment names the list by manifest id and the list is new: it comes along, without
    // its tag link or its members (neither is needed by the segment).
    let plan = setup.plan_json(&["--target", "segment.vip-members"]);
    assert_eq!(addresses(&plan), ["list.vip", "segment.vip-members"]);
    assert_eq!(plan["targets"], serde_json::json!(["segment.vip-members"]));
    assert!(
        plan["data"]["profiles"].as_array().unwrap().is_empty(),
        "{plan}"
    );
    assert!(
        plan["data"]["memberships"].as_array().unwrap().is_empty(),
        "{plan}"
    );
    assert!(
        plan["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().starts_with("targeted plan")),
        "{plan}"
    );

    // A list brings its tag link (and the tag and group the link needs) and its members.
    let plan = setup.plan_json(&["--target", "list.vip"]);
    assert_eq!(
        addresses(&plan),
        [
            "tag_group.team",
            "tag.team/growth",
            "list.vip",
            "tag_link.team/growth->list.vip"
        ],
        "{plan}"
    );
    assert_eq!(plan["data"]["memberships"][0]["list"], "vip");

    let applied = setup.klsync(&["apply", "--auto-approve", "--target", "segment.vip-members"]);
    assert_eq!(applied.code, 0, "{}{}", applied.stdout, applied.stderr);
    assert_eq!(
        setup.names(),
        (vec!["VIP".to_owned()], vec!["VIP members".to_owned()], 0)
    );

    // A saved targeted plan applies exactly that: the profile sync, nothing else.
    let out = setup.scenario.project.path().join("profiles.plan.json");
    let saved = setup.klsync(&[
        "plan",
        "--target",
        "profiles.spend",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(saved.code, 0, "{}", saved.stderr);
    let applied = setup.klsync(&["apply", out.to_str().unwrap(), "--auto-approve"]);
    assert_eq!(applied.code, 0, "{}{}", applied.stdout, applied.stderr);
    assert_eq!(
        setup.names(),
        (vec!["VIP".to_owned()], vec!["VIP members".to_owned()], 2)
    );

    // The rest is still planned by a whole plan.
    let rest = setup.plan_json(&[]);
    assert_eq!(
        addresses(&rest),
        [
            "tag_group.team",
            "tag.team/growth",
            "list.other",
            "tag_link.team/growth->list.vip"
        ],
        "{rest}"
    );

    let unknown = setup.klsync(&["plan", "--target", "list.nope"]);
    assert_eq!(unknown.code, 1, "{}", unknown.stderr);
    assert!(
        unknown
            .stderr
            .contains("--target list.nope: the project has no such resource or data sync"),
        "{}",
        unknown.stderr
    );
    let both = setup.klsync(&["apply", out.to_str().unwrap(), "--target", "list.vip"]);
    assert_eq!(both.code, 64, "{}", both.stderr);
}

/// `--resync SYNC_ID` (issue 13): after an account is wiped, the recorded state says nothing
/// changed; a resync sends every row again, and afterwards the plan is empty again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_sends_every_row_again_after_the_account_was_wiped() {
    let setup = Setup::new().await;
    let applied = setup.klsync(&["apply", "--auto-approve"]);
    assert_eq!(applied.code, 0, "{}{}", applied.stdout, applied.stderr);
    let members = |setup: &Setup| {
        setup.scenario.emulator.seed(|state| {
            state
                .lists
                .values()
                .find(|l| l.name == "VIP")
                .map_or(0, |l| l.members.len())
        })
    };
    assert_eq!(members(&setup), 1);

    // Klaviyo loses the profiles' properties and the list's members; klsync cannot know.
    setup.scenario.emulator.seed(|state| {
        for profile in state.profiles.values_mut() {
            profile.attributes.remove("properties");
        }
        for list in state.lists.values_mut() {
            list.members.clear();
        }
    });
    let unaware = setup.klsync(&["plan", "--detailed-exitcode"]);
    assert_eq!(unaware.code, 0, "{}{}", unaware.stdout, unaware.stderr);

    let plan = setup.plan_json(&["--resync", "spend", "--resync", "list.vip.members"]);
    assert_eq!(plan["data"]["profiles"][0]["resync"], true, "{plan}");
    assert_eq!(
        plan["data"]["profiles"][0]["counts"]["changed"], 2,
        "{plan}"
    );
    assert_eq!(plan["data"]["memberships"][0]["counts"]["add"], 1, "{plan}");

    let resent = setup.klsync(&[
        "apply",
        "--auto-approve",
        "--resync",
        "spend",
        "--resync",
        "vip",
    ]);
    assert_eq!(resent.code, 0, "{}{}", resent.stdout, resent.stderr);
    let spends: Vec<Value> = setup.scenario.emulator.seed(|state| {
        state
            .profiles
            .values()
            .map(|p| {
                p.attributes["properties"]
                    .get("total_spend")
                    .cloned()
                    .unwrap_or(Value::Null)
            })
            .collect()
    });
    assert_eq!(spends.len(), 2);
    assert!(spends.iter().all(|spend| spend.is_number()), "{spends:?}");
    assert_eq!(members(&setup), 1);

    let again = setup.klsync(&["plan", "--detailed-exitcode"]);
    assert_eq!(again.code, 0, "{}{}", again.stdout, again.stderr);

    let unknown = setup.klsync(&["plan", "--resync", "nope"]);
    assert_eq!(unknown.code, 1);
    assert!(
        unknown.stderr.contains("--resync nope: the project has no such data sync; its data syncs are: profiles.spend, list.vip.members"),
        "{}",
        unknown.stderr
    );
}
