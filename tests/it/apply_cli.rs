//! `klsync plan`, `apply` and `demo` end to end: the real binary against an emulator started in
//! the test process, with state in SQLite and in PostgreSQL (every scenario runs on both).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::backend::{Backend, ok, on_both_backends};
use crate::support::project::{Finished, TempProject, klsync, many_lists, run};
use klsync::emulator::state::{State, Taggable};
use klsync::emulator::{self, EmulatorConfig, EmulatorHandle, RateLimitMode};

/// One scenario: an emulator, a state backend and a project.
struct Setup {
    emulator: EmulatorHandle,
    backend: Backend,
    project: TempProject,
}

impl Setup {
    async fn new(backend: Backend, faults: Option<&str>, files: &[(&str, &str)]) -> Setup {
        let emulator = emulator::start(EmulatorConfig {
            rate_limits: RateLimitMode::Off,
            faults: faults.map(str::to_owned),
            ..EmulatorConfig::default()
        })
        .await
        .expect("start the emulator");
        Setup {
            emulator,
            backend,
            project: TempProject::new(files),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = klsync();
        command
            .args(args)
            .arg("-C")
            .arg(self.project.path())
            .env("KLAVIYO_BASE_URL", &self.emulator.base_url)
            .env("KLAVIYO_API_KEY", "pk_emulator")
            .env("KLSYNC_STATE_URL", self.backend.url())
            .stdin(Stdio::null());
        command
    }

    async fn run(&self, args: &[&str]) -> Finished {
        self.run_env(args, &[]).await
    }

    async fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Finished {
        let mut command = self.command(args);
        command.envs(env.iter().copied());
        tokio::task::spawn_blocking(move || Finished::from(command.output().expect("run klsync")))
            .await
            .expect("join")
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn klsync")
    }

    fn path(&self, name: &str) -> String {
        self.project.path().join(name).display().to_string()
    }

    fn seed<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        self.emulator.seed(f)
    }

    /// Names per kind, with their counts: duplicates show as counts above 1.
    fn inventory(&self) -> BTreeMap<String, usize> {
        self.seed(|state| {
            let mut names = BTreeMap::new();
            for list in state.lists.values() {
                *names.entry(format!("list {}", list.name)).or_default() += 1;
            }
            for segment in state.segments.values() {
                *names
                    .entry(format!("segment {}", segment.name))
                    .or_default() += 1;
            }
            for tag in state.tags.values() {
                let group = &state.tag_groups[&tag.group_id].name;
                *names
                    .entry(format!("tag {group}/{}", tag.name))
                    .or_default() += 1;
            }
            for group in state.tag_groups.values() {
                *names.entry(format!("group {}", group.name)).or_default() += 1;
            }
            names
        })
    }
}

async fn wait_for(child: Child) -> Finished {
    tokio::task::spawn_blocking(move || Finished::from(child.wait_with_output().expect("wait")))
        .await
        .expect("join")
}

on_both_backends!(
    apply_then_plan_is_empty,
    saved_plan_refusals,
    destroys_need_the_flag_and_prevent_destroy_forbids_them,
    unmanaged_resources_are_untouched_and_one_namesake_is_adopted,
    concurrent_applies_are_refused_naming_the_holder,
    a_killed_apply_converges_without_duplicates,
    independent_changes_continue_past_a_failure,
    a_recreate_lost_before_it_was_recorded_is_found_not_repeated,
    data_syncs_plan_apply_converge_and_guard_removals,
    an_adopted_lists_members_are_synced_to_its_id,
    rows_klaviyo_refuses_make_a_partial_apply_and_are_retried,
);

const SMALL: &str = "\
tag_groups:
  - name: lifecycle
    tags: [vip]
tags: [seasonal]
lists:
  - id: vip
    name: VIP
    tags: [lifecycle/vip, seasonal]
  - id: newsletter
    name: Newsletter
    opt_in_process: double_opt_in
segments:
  - id: big-spenders
    name: Big spenders
    tags: [lifecycle/vip]
    definition:
      condition_groups:
        - conditions:
            - type: profile-property
              property: \"properties['ltv']\"
              filter: {type: numeric, operator: greater-than, value: 500}
";

async fn apply_then_plan_is_empty(backend: Backend) {
    let setup = Setup::new(backend, None, &[("manifest.yaml", SMALL)]).await;
    let markdown = setup
        .run(&["plan", "--format", "markdown", "--detailed-exitcode"])
        .await;
    ok(&markdown, 2);
    assert!(markdown.stdout.contains("list.vip"), "{}", markdown.stdout);

    let refused = setup.run(&["apply"]).await;
    ok(&refused, 1);
    assert!(
        refused.stderr.contains("--auto-approve"),
        "{}",
        refused.stderr
    );
    assert!(
        setup.seed(|s| s.lists.is_empty()),
        "nothing is sent without approval"
    );

    let metrics_file = setup.path("metrics.json");
    let applied = setup
        .run(&["apply", "--auto-approve", "--metrics-file", &metrics_file])
        .await;
    ok(&applied, 0);
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&metrics_file).unwrap()).unwrap();
    assert_eq!(metrics["command"], "apply", "{metrics:#}");
    assert_eq!(metrics["outcome"], "success", "{metrics:#}");
    assert_eq!(metrics["changes_applied"], 9, "{metrics:#}");
    assert_eq!(metrics["changes_failed"], 0, "{metrics:#}");
    assert_eq!(metrics["requests"]["create_list"], 2, "{metrics:#}");
    assert!(
        metrics["requests"]["get_lists"].as_u64().unwrap() >= 1,
        "{metrics:#}"
    );
    assert!(metrics["duration_ms"].is_u64(), "{metrics:#}");

    // The audit record: the run, who ran it, the manifests' digest, and every change.
    let history = setup.run(&["history", "--format", "json"]).await;
    ok(&history, 0);
    let runs: serde_json::Value = serde_json::from_str(&history.stdout).unwrap();
    let run = &runs[0];
    assert_eq!(run["command"], "apply", "{run:#}");
    assert_eq!(run["outcome"], "success", "{run:#}");
    assert!(
        run["actor"].as_str().is_some_and(|a| !a.is_empty()),
        "{run:#}"
    );
    assert_eq!(
        run["manifest_digest"].as_str().map(str::len),
        Some(64),
        "{run:#}"
    );
    assert!(run["requests"].as_u64().unwrap() >= 9, "{run:#}");
    let changes = run["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 9, "{run:#}");
    assert!(
        changes
            .iter()
            .all(|c| c["outcome"] == "succeeded" && c["klaviyo_id"].is_string()),
        "{run:#}"
    );
    assert!(
        changes
            .iter()
            .any(|c| c["address"] == "list.vip" && c["action"] == "create")
    );
    assert!(
        applied
            .stdout
            .contains("Apply complete: 9 changed, 0 failed."),
        "{}",
        applied.stdout
    );
    assert!(
        applied.stderr.contains("✓ create list.vip ("),
        "{}",
        applied.stderr
    );

    let again = setup.run(&["plan", "--detailed-exitcode"]).await;
    ok(&again, 0);
    assert!(again.stdout.contains("No changes"), "{}", again.stdout);
    let json = setup.run(&["plan", "--format", "json"]).await;
    ok(&json, 0);
    let parsed: klsync::plan::Plan = serde_json::from_str(&json.stdout).expect("a JSON plan");
    assert!(parsed.changes.is_empty());
    let inventory = setup.inventory();
    assert_eq!(inventory["list VIP"], 1);
    assert_eq!(inventory["segment Big spenders"], 1);
    let vip_tags = setup.seed(|s| {
        let vip = s
            .lists
            .values()
            .find(|l| l.name == "VIP")
            .unwrap()
            .id
            .clone();
        s.tags_of(Taggable::List, &vip).len()
    });
    assert_eq!(vip_tags, 2);
}

async fn saved_plan_refusals(backend: Backend) {
    let setup = Setup::new(backend, None, &[("manifest.yaml", SMALL)]).await;
    let plan = setup.path("plan.json");

    // Made from other manifests.
    ok(&setup.run(&["plan", "--out", &plan]).await, 0);
    setup
        .project
        .write("more.yaml", "lists:\n  - id: extra\n    name: Extra\n");
    let refused = setup.run(&["apply", &plan]).await;
    ok(&refused, 1);
    assert!(
        refused.stderr.contains("other manifests"),
        "{}",
        refused.stderr
    );
    setup.project.remove("more.yaml");

    // Too old.
    let refused = setup.run(&["apply", &plan, "--max-age", "0s"]).await;
    ok(&refused, 1);
    assert!(refused.stderr.contains("too old"), "{}", refused.stderr);

    // A format this klsync does not know.
    let text = std::fs::read_to_string(&plan).unwrap();
    let written = format!("\"format_version\": {}", klsync::plan::FORMAT_VERSION);
    assert!(text.contains(&written), "{text}");
    let future = setup.path("future.json");
    std::fs::write(&future, text.replace(&written, "\"format_version\": 99")).unwrap();
    let refused = setup.run(&["apply", &future]).await;
    ok(&refused, 1);
    assert!(
        refused.stderr.contains("format version 99"),
        "{}",
        refused.stderr
    );

    // A format an older klsync wrote (changes without payloads): refused, saying what to do.
    let old = setup.path("old.json");
    std::fs::write(&old, text.replace(&written, "\"format_version\": 1")).unwrap();
    let refused = setup.run(&["apply", &old]).await;
    ok(&refused, 1);
    for needle in [
        "format version 1, written by an older klsync".to_owned(),
        format!("this klsync ({})", env!("CARGO_PKG_VERSION")),
        "Run `klsync plan --out` again".to_owned(),
    ] {
        assert!(
            refused.stderr.contains(&needle),
            "{needle}: {}",
            refused.stderr
        );
    }

    // Klaviyo changed since the plan: a list named like the manifest's appeared.
    setup.seed(|s| s.create_list("Newsletter", None));
    let refused = setup.run(&["apply", &plan]).await;
    ok(&refused, 1);
    assert!(
        refused
            .stderr
            .contains("changed in Klaviyo since the plan was made: list.newsletter"),
        "{}",
        refused.stderr
    );
    assert_eq!(setup.inventory()["list Newsletter"], 1, "nothing was sent");

    // A fresh plan applies once, and only once.
    ok(&setup.run(&["plan", "--out", &plan]).await, 0);
    ok(&setup.run(&["apply", &plan]).await, 0);
    let refused = setup.run(&["apply", &plan]).await;
    ok(&refused, 1);
    assert!(
        refused.stderr.contains("already applied"),
        "{}",
        refused.stderr
    );
    ok(&setup.run(&["plan", "--detailed-exitcode"]).await, 0);
}

async fn destroys_need_the_flag_and_prevent_destroy_forbids_them(backend: Backend) {
    let lists = "\
lists:
  - id: keep
    name: Keep
    prevent_destroy: true
  - id: old
    name: Old
";
    let setup = Setup::new(backend, None, &[("lists.yaml", lists)]).await;
    ok(&setup.run(&["apply", "--auto-approve"]).await, 0);

    setup.project.write(
        "lists.yaml",
        "lists:\n  - id: keep\n    name: Keep\n    prevent_destroy: true\n",
    );
    let refused = setup.run(&["apply", "--auto-approve"]).await;
    ok(&refused, 1);
    assert!(
        refused.stderr.contains("--allow-destroy"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("list.old (Old)"),
        "{}",
        refused.stderr
    );
    assert_eq!(setup.inventory().get("list Old"), Some(&1));

    ok(
        &setup
            .run(&["apply", "--auto-approve", "--allow-destroy"])
            .await,
        0,
    );
    assert_eq!(setup.inventory().get("list Old"), None);

    // A managed list deleted in Klaviyo and dropped from the manifests is simply forgotten.
    setup.project.write(
        "lists.yaml",
        "lists:\n  - id: keep\n    name: Keep\n    prevent_destroy: true\n  - id: gone\n    name: Gone\n",
    );
    ok(&setup.run(&["apply", "--auto-approve"]).await, 0);
    setup.seed(|s| {
        let gone = s
            .lists
            .values()
            .find(|l| l.name == "Gone")
            .unwrap()
            .id
            .clone();
        s.delete_list(&gone)
    });
    setup.project.write(
        "lists.yaml",
        "lists:\n  - id: keep\n    name: Keep\n    prevent_destroy: true\n",
    );
    let forgot = setup.run(&["apply", "--auto-approve"]).await;
    ok(&forgot, 0);
    assert!(
        forgot.stderr.contains("forgot list.gone"),
        "{}",
        forgot.stderr
    );
    let plan = setup.run(&["plan", "--detailed-exitcode"]).await;
    ok(&plan, 0);
    assert!(!plan.stdout.contains("no longer exists"), "{}", plan.stdout);

    setup.project.write("lists.yaml", "lists: []\n");
    let refused = setup
        .run(&["apply", "--auto-approve", "--allow-destroy"])
        .await;
    ok(&refused, 1);
    assert!(refused.stderr.contains("forbidden"), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("list.keep (Keep)"),
        "{}",
        refused.stderr
    );
    assert_eq!(setup.inventory().get("list Keep"), Some(&1));
}

/// Everything about the unmanaged resources a test seeds, for before/after comparison.
fn unmanaged_snapshot(state: &State, names: &[&str]) -> String {
    let lists: Vec<_> = state
        .lists
        .values()
        .filter(|l| names.contains(&l.name.as_str()))
        .map(|l| {
            (
                l.id.clone(),
                l.name.clone(),
                l.opt_in_process.clone(),
                state.tags_of(Taggable::List, &l.id),
            )
        })
        .collect();
    let segments: Vec<_> = state
        .segments
        .values()
        .filter(|s| names.contains(&s.name.as_str()))
        .map(|s| {
            (
                s.id.clone(),
                s.name.clone(),
                s.definition.clone(),
                state.tags_of(Taggable::Segment, &s.id),
            )
        })
        .collect();
    let tags: Vec<_> = state
        .tags
        .values()
        .filter(|t| names.contains(&t.name.as_str()))
        .map(|t| (t.id.clone(), t.name.clone(), t.group_id.clone()))
        .collect();
    format!("{lists:?}\n{segments:?}\n{tags:?}")
}

async fn unmanaged_resources_are_untouched_and_one_namesake_is_adopted(backend: Backend) {
    let setup = Setup::new(backend, None, &[("manifest.yaml", SMALL)]).await;
    let unmanaged = ["Legacy list", "Legacy segment", "legacy-tag"];
    let adopted_id = setup.seed(|s| {
        let legacy = s.create_list("Legacy list", Some("single_opt_in"));
        let segment = s.create_segment(
            "Legacy segment",
            serde_json::json!({"condition_groups": [{"conditions": [
                {"type": "profile-property", "property": "email",
                 "filter": {"type": "existence", "operator": "is-set"}}]}]}),
            false,
        );
        let tag = s.create_tag("legacy-tag", None).unwrap();
        s.tag_resources(&tag, Taggable::List, std::slice::from_ref(&legacy))
            .unwrap();
        s.tag_resources(&tag, Taggable::Segment, &[segment])
            .unwrap();
        // The manifest's newsletter already exists, once: it is adopted, with our tag on it.
        let newsletter = s.create_list("Newsletter", None);
        s.tag_resources(&tag, Taggable::List, std::slice::from_ref(&newsletter))
            .unwrap();
        newsletter
    });
    let before = setup.seed(|s| unmanaged_snapshot(s, &unmanaged));

    let applied = setup.run(&["apply", "--auto-approve"]).await;
    ok(&applied, 0);
    assert!(
        applied.stdout.contains("= adopt list.newsletter"),
        "{}",
        applied.stdout
    );
    assert_eq!(setup.seed(|s| unmanaged_snapshot(s, &unmanaged)), before);
    let inventory = setup.inventory();
    assert_eq!(inventory["list Newsletter"], 1);
    let newsletter = setup.seed(|s| s.lists[&adopted_id].opt_in_process.clone());
    assert_eq!(
        newsletter.as_deref(),
        Some("double_opt_in"),
        "adopted and updated"
    );
    ok(&setup.run(&["plan", "--detailed-exitcode"]).await, 0);

    // Two namesakes: klsync cannot tell which one to adopt, and says which ids.
    setup
        .project
        .write("more.yaml", "lists:\n  - id: twins\n    name: Twins\n");
    let (a, b) = setup.seed(|s| (s.create_list("Twins", None), s.create_list("Twins", None)));
    let refused = setup.run(&["plan"]).await;
    ok(&refused, 1);
    assert!(
        refused.stderr.contains(&a) && refused.stderr.contains(&b),
        "{}",
        refused.stderr
    );
    ok(&setup.run(&["apply", "--auto-approve"]).await, 1);
    assert_eq!(setup.inventory()["list Twins"], 2);
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn concurrent_applies_are_refused_naming_the_holder(backend: Backend) {
    let manifest = many_lists(6);
    let setup = Setup::new(backend, Some("latency=150ms"), &[("m.yaml", &manifest)]).await;
    let first = setup.spawn(&["apply", "--auto-approve"]);
    let pid = first.id();
    wait_until("the first apply to write", || {
        setup.seed(|s| !s.tags.is_empty())
    })
    .await;
    let second = setup.run(&["apply", "--auto-approve"]).await;
    ok(&second, 1);
    assert!(
        second.stderr.contains("another apply is running"),
        "{}",
        second.stderr
    );
    assert!(
        second.stderr.contains(&format!("pid {pid}")),
        "{}",
        second.stderr
    );
    ok(&wait_for(first).await, 0);
    ok(&setup.run(&["plan", "--detailed-exitcode"]).await, 0);
}

async fn a_killed_apply_converges_without_duplicates(backend: Backend) {
    // Killed at a fixed point (src/crashpoint.rs): the third list was created but its answer
    // never arrived, so its journal entry stays open, as a SIGKILL mid-request leaves it.
    const LISTS: usize = 8;
    let manifest = many_lists(LISTS);
    let setup = Setup::new(backend, None, &[("m.yaml", &manifest)]).await;
    let killed = setup
        .run_env(
            &["apply", "--auto-approve"],
            &[("KLSYNC_CRASH_AT", "reply:create_list:3")],
        )
        .await;
    assert!(
        killed.code == -1 && killed.stderr.contains("crash point"),
        "killed mid-way: {}",
        killed.stderr
    );
    assert_eq!(
        setup.seed(|s| s.lists.len()),
        3,
        "killed after the third list"
    );

    let rerun = setup.run(&["apply", "--auto-approve"]).await;
    ok(&rerun, 0);
    assert!(rerun.stderr.contains("interrupted"), "{}", rerun.stderr);
    let inventory = setup.inventory();
    for i in 0..LISTS {
        assert_eq!(inventory[&format!("list List {i}")], 1, "{inventory:?}");
    }
    assert_eq!(inventory["segment Segment one"], 1, "{inventory:?}");
    let auto: usize = setup.seed(|s| s.tags.values().filter(|t| t.name == "auto").count());
    assert_eq!(auto, 1, "{inventory:?}");
    ok(&setup.run(&["plan", "--detailed-exitcode"]).await, 0);
    // The journal of the killed run was closed: another apply has nothing to report.
    let quiet = setup.run(&["apply", "--auto-approve"]).await;
    ok(&quiet, 0);
    assert!(!quiet.stderr.contains("interrupted"), "{}", quiet.stderr);
}

async fn independent_changes_continue_past_a_failure(backend: Backend) {
    let manifest = "\
tag_groups:
  - name: stage
    exclusive: true
    tags: [acquisition]
lists:
  - id: newsletter
    name: Newsletter
    tags: [stage/acquisition]
  - id: other
    name: Other
";
    let setup = Setup::new(backend, None, &[("m.yaml", manifest)]).await;
    // Behind klsync's back, the newsletter already carries another tag of the exclusive group.
    let (legacy, newsletter) = setup.seed(|s| {
        let group = s.create_tag_group("stage", true).unwrap();
        let legacy = s.create_tag("legacy", Some(&group)).unwrap();
        let newsletter = s.create_list("Newsletter", None);
        s.tag_resources(&legacy, Taggable::List, std::slice::from_ref(&newsletter))
            .unwrap();
        (legacy, newsletter)
    });
    // The reviewed plan is applied; the link to the newsletter fails, the rest goes through.
    let plan = setup.path("plan.json");
    ok(&setup.run(&["plan", "--out", &plan]).await, 0);
    let partial = setup.run(&["apply", &plan]).await;
    ok(&partial, 3);
    assert!(
        partial
            .stderr
            .contains("attach tag_link.stage/acquisition->list.newsletter")
            && partial.stderr.contains("exclusive"),
        "{}",
        partial.stderr
    );
    assert!(
        partial.stderr.contains("run `klsync apply` again"),
        "{}",
        partial.stderr
    );
    assert_eq!(
        setup.inventory().get("list Other"),
        Some(&1),
        "independent change made"
    );
    // The partial run is in the audit record with the failed change and its reason.
    let history = setup.run(&["history", "--format", "json"]).await;
    ok(&history, 0);
    let runs: serde_json::Value = serde_json::from_str(&history.stdout).unwrap();
    let run = &runs[0];
    assert_eq!(run["outcome"], "partial", "{run:#}");
    let changes = run["changes"].as_array().unwrap();
    let failed: Vec<_> = changes
        .iter()
        .filter(|c| c["outcome"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{run:#}");
    assert_eq!(
        failed[0]["address"], "tag_link.stage/acquisition->list.newsletter",
        "{run:#}"
    );
    assert!(
        failed[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("exclusive")),
        "{run:#}"
    );
    assert!(
        changes
            .iter()
            .any(|c| c["address"] == "list.other" && c["outcome"] == "succeeded"),
        "{run:#}"
    );

    // Once the cause is fixed, the same reviewed plan finishes what is left of it, once.
    setup.seed(|s| s.tags.get_mut(&legacy).unwrap().lists.remove(&newsletter));
    let resumed = setup.run(&["apply", &plan]).await;
    ok(&resumed, 0);
    assert!(
        resumed.stderr.contains("Resuming saved plan") && resumed.stdout.contains("1 changed"),
        "{}\n{}",
        resumed.stdout,
        resumed.stderr
    );
    let again = setup.run(&["apply", &plan]).await;
    ok(&again, 1);
    assert!(again.stderr.contains("already applied"), "{}", again.stderr);
    ok(&setup.run(&["plan", "--detailed-exitcode"]).await, 0);
}

async fn a_recreate_lost_before_it_was_recorded_is_found_not_repeated(backend: Backend) {
    let setup = Setup::new(
        backend,
        None,
        &[("m.yaml", "lists:\n  - id: vip\n    name: VIP\n")],
    )
    .await;
    ok(&setup.run(&["apply", "--auto-approve"]).await, 0);
    // Someone deletes the managed list; an apply starts re-creating it, the create lands in
    // Klaviyo, and the process dies before recording the new id.
    setup.seed(|s| {
        let old = s
            .lists
            .values()
            .find(|l| l.name == "VIP")
            .unwrap()
            .id
            .clone();
        s.delete_list(&old);
        s.create_list("VIP", None);
    });
    let store = klsync::state::StateStore::connect(&setup.backend.url())
        .await
        .expect("state");
    let run = store
        .begin_run(&klsync::state::RunStart {
            command: "apply".into(),
            actor: "test".into(),
            git_commit: None,
            manifest_digest: None,
            plan_id: None,
        })
        .await
        .expect("run");
    store
        .journal_started(run, "list.vip", "create", &serde_json::json!({}))
        .await
        .expect("journal");
    store.close().await;

    let rerun = setup.run(&["apply", "--auto-approve"]).await;
    ok(&rerun, 0);
    assert!(rerun.stderr.contains("interrupted"), "{}", rerun.stderr);
    assert_eq!(setup.inventory()["list VIP"], 1, "found, not created again");
    ok(&setup.run(&["plan", "--detailed-exitcode"]).await, 0);
}

/// The data syncs' source: a SQLite file beside a SQLite state, the state's own schema on
/// PostgreSQL (a TestPostgres URL pins its search_path).
struct Source {
    url: String,
}

impl Source {
    fn of(backend: &Backend) -> Source {
        match backend {
            Backend::Sqlite(dir) => Source {
                url: format!("sqlite://{}", dir.path().join("shop.db").display()),
            },
            Backend::Postgres(pg) => Source {
                url: pg.url().to_owned(),
            },
        }
    }

    async fn execute(&self, sql: &str) {
        crate::support::source::execute(&self.url, sql).await;
    }
}

const DATA: &str = "\
lists:
  - id: vip
    name: VIP
    members:
      query: big_spenders
      identify_by: email
      mode: mirror
      max_removals: 1
profiles:
  - id: facts
    query: facts
    identify_by: email
    properties:
      shop_plan: plan
      shop_ltv: ltv
queries:
  big_spenders:
    sql: SELECT email FROM customers WHERE ltv >= $1
    params: [100]
  facts:
    sql: SELECT email, plan, ltv FROM customers
";

/// Email -> (properties, whether a member of the list named `list`), as the emulator has them.
fn profiles_and_members(setup: &Setup, list: &str) -> BTreeMap<String, (serde_json::Value, bool)> {
    setup.seed(|state| {
        let members = state
            .lists
            .values()
            .find(|l| l.name == list)
            .map(|l| l.members.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default();
        state
            .profiles
            .values()
            .map(|p| {
                let properties = p.attributes.get("properties").cloned().unwrap_or_default();
                (
                    p.get_str("email").unwrap_or_default().to_owned(),
                    (properties, members.contains(&p.id)),
                )
            })
            .collect()
    })
}

/// The members sync of a list the apply adopts runs beside the configuration changes: it waits
/// for the adoption to record the list's id (there is none in klsync's state before).
async fn an_adopted_lists_members_are_synced_to_its_id(backend: Backend) {
    let source = Source::of(&backend);
    source
        .execute(
            "CREATE TABLE customers (email TEXT, plan TEXT, ltv INTEGER);
             INSERT INTO customers VALUES
               ('a@example.com', 'gold', 500), ('b@example.com', 'silver', 300);",
        )
        .await;
    let setup = Setup::new(backend, None, &[("shop.yaml", DATA)]).await;
    setup.seed(|s| s.create_list("VIP", None));
    let db = [("DATABASE_URL", source.url.as_str())];

    let applied = setup.run_env(&["apply", "--auto-approve"], &db).await;
    ok(&applied, 0);
    for needle in [
        "= adopt list.vip",
        "lists.vip.members: +2 added, -0 removed, 0 failed",
    ] {
        assert!(
            applied.stdout.contains(needle),
            "{needle}:\n{}",
            applied.stdout
        );
    }
    let emulated = profiles_and_members(&setup, "VIP");
    assert!(emulated["a@example.com"].1 && emulated["b@example.com"].1);
    ok(
        &setup.run_env(&["plan", "--detailed-exitcode"], &db).await,
        0,
    );
}

async fn data_syncs_plan_apply_converge_and_guard_removals(backend: Backend) {
    let source = Source::of(&backend);
    source
        .execute(
            "CREATE TABLE customers (email TEXT, plan TEXT, ltv INTEGER);
             INSERT INTO customers VALUES
               ('a@example.com', 'gold', 500), ('B@Example.com', 'silver', 300),
               ('c@example.com', 'silver', 200), ('d@example.com', 'free', 50),
               ('not-an-email', 'free', 150);",
        )
        .await;
    let setup = Setup::new(backend, None, &[("shop.yaml", DATA)]).await;
    let db = [("DATABASE_URL", source.url.as_str())];

    // Without the database the plan names the variable and what needs it.
    let missing = setup.run(&["plan"]).await;
    ok(&missing, 1);
    for needle in ["DATABASE_URL", "profiles: facts", "members: of lists vip"] {
        assert!(missing.stderr.contains(needle), "{}", missing.stderr);
    }

    let plan = setup.run_env(&["plan", "--detailed-exitcode"], &db).await;
    ok(&plan, 2);
    for needle in [
        "+ create list.vip",
        "profiles.facts (5 rows): 4 new, 0 changed, 0 unset, 0 unchanged, 1 rejected",
        "lists.vip.members (4 rows): +3 add, -0 remove, 0 unchanged, 1 rejected",
        "4 profile(s) to set properties on, 3 list member(s) to add",
    ] {
        assert!(plan.stdout.contains(needle), "{needle}:\n{}", plan.stdout);
    }
    let saved = setup.path("plan.json");
    ok(&setup.run_env(&["plan", "--out", &saved], &db).await, 0);
    let parsed: klsync::plan::Plan =
        serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).expect("a saved plan");
    assert_eq!(parsed.format_version, klsync::plan::DATA_FORMAT_VERSION);
    let data = parsed.data.expect("a data part");
    assert_eq!(
        data.memberships[0].list_id, None,
        "the list is created by this plan"
    );

    let applied = setup.run_env(&["apply", &saved], &db).await;
    ok(&applied, 0);
    assert!(
        applied
            .stdout
            .contains("lists.vip.members: +3 added, -0 removed, 0 failed"),
        "{}",
        applied.stdout
    );
    let emulated = profiles_and_members(&setup, "VIP");
    assert_eq!(
        emulated["b@example.com"],
        (
            serde_json::json!({"shop_plan": "silver", "shop_ltv": 300}),
            true
        )
    );
    assert_eq!(
        emulated["d@example.com"],
        (
            serde_json::json!({"shop_plan": "free", "shop_ltv": 50}),
            false
        )
    );
    assert_eq!(emulated.values().filter(|(_, member)| *member).count(), 3);
    assert!(!emulated.contains_key("not-an-email"));
    let again = setup.run_env(&["plan", "--detailed-exitcode"], &db).await;
    ok(&again, 0);
    assert!(again.stdout.contains("No changes"), "{}", again.stdout);

    // Two of the three leave the query: over max_removals (1). The refusal comes before
    // anything is sent, the new list included.
    source
        .execute("UPDATE customers SET ltv = 10 WHERE email IN ('B@Example.com', 'c@example.com')")
        .await;
    setup
        .project
        .write("more.yaml", "lists:\n  - id: extra\n    name: Extra\n");
    setup.seed(|s| {
        let profile = s
            .profiles
            .values_mut()
            .find(|p| p.get_str("email") == Some("b@example.com"))
            .expect("b");
        profile.attributes["properties"]["shop_plan"] = serde_json::json!("edited in Klaviyo");
    });
    let flagged = setup
        .run_env(&["plan", "--detailed-exitcode", "--refresh"], &db)
        .await;
    ok(&flagged, 2);
    assert!(
        flagged
            .stderr
            .contains("reading the sampled profiles from Klaviyo (1 request(s))"),
        "{}",
        flagged.stderr
    );
    assert!(
        flagged.stdout.contains(
            "drift b@example.com shop_plan: applied \"silver\" but Klaviyo has \"edited in Klaviyo\""
        ),
        "{}",
        flagged.stdout
    );
    assert!(
        flagged
            .stdout
            .contains("2 removals exceed max_removals (1): apply refuses without --force"),
        "{}",
        flagged.stdout
    );
    let refused = setup.run_env(&["apply", "--auto-approve"], &db).await;
    ok(&refused, 1);
    assert!(
        refused
            .stderr
            .contains("lists.vip.members: 2 removal(s), max_removals 1"),
        "{}",
        refused.stderr
    );
    // Nothing was sent: no new list, b still a member with its hand-edited value.
    assert!(!setup.inventory().contains_key("list Extra"));
    assert_eq!(
        profiles_and_members(&setup, "VIP")["b@example.com"],
        (
            serde_json::json!({"shop_plan": "edited in Klaviyo", "shop_ltv": 300}),
            true
        )
    );

    let forced = setup
        .run_env(&["apply", "--auto-approve", "--force"], &db)
        .await;
    ok(&forced, 0);
    let emulated = profiles_and_members(&setup, "VIP");
    assert_eq!(setup.inventory()["list Extra"], 1);
    assert_eq!(
        emulated["b@example.com"],
        (
            serde_json::json!({"shop_plan": "silver", "shop_ltv": 10}),
            false
        )
    );
    assert!(emulated["a@example.com"].1);
    assert_eq!(emulated.values().filter(|(_, member)| *member).count(), 1);
    ok(
        &setup.run_env(&["plan", "--detailed-exitcode"], &db).await,
        0,
    );

    // A saved plan fixes the manifests, not the rows: apply reads the data again, sends what
    // it finds and reports the difference.
    source
        .execute("INSERT INTO customers VALUES ('e@example.com', 'gold', 700)")
        .await;
    let later = setup.path("later.json");
    ok(&setup.run_env(&["plan", "--out", &later], &db).await, 0);
    source
        .execute("INSERT INTO customers VALUES ('f@example.com', 'gold', 800)")
        .await;
    let applied = setup.run_env(&["apply", &later], &db).await;
    ok(&applied, 0);
    assert!(
        applied
            .stdout
            .contains("data changed since the plan: lists.vip.members: planned"),
        "{}",
        applied.stdout
    );
    let emulated = profiles_and_members(&setup, "VIP");
    assert!(emulated["e@example.com"].1 && emulated["f@example.com"].1);
    ok(
        &setup.run_env(&["plan", "--detailed-exitcode"], &db).await,
        0,
    );

    // The list deleted in Klaviyo is created again, with its members.
    setup.seed(|s| {
        let vip = s
            .lists
            .values()
            .find(|l| l.name == "VIP")
            .unwrap()
            .id
            .clone();
        assert!(s.delete_list(&vip));
    });
    let recreate = setup.run_env(&["plan", "--detailed-exitcode"], &db).await;
    ok(&recreate, 2);
    assert!(
        recreate
            .stdout
            .contains("list.vip is created again: the 3 member(s) klsync recorded"),
        "{}",
        recreate.stdout
    );
    ok(&setup.run_env(&["apply", "--auto-approve"], &db).await, 0);
    let emulated = profiles_and_members(&setup, "VIP");
    assert_eq!(emulated.values().filter(|(_, member)| *member).count(), 3);
    ok(
        &setup.run_env(&["plan", "--detailed-exitcode"], &db).await,
        0,
    );
}

async fn rows_klaviyo_refuses_make_a_partial_apply_and_are_retried(backend: Backend) {
    let source = Source::of(&backend);
    source
        .execute(
            "CREATE TABLE customers (email TEXT, plan TEXT, ltv INTEGER);
             INSERT INTO customers VALUES ('a@example.com', 'gold', 500),
               ('b@example.com', 'free', 20), ('c@example.com', 'free', 30);",
        )
        .await;
    let manifest = "\
profiles:
  - id: facts
    query: facts
    identify_by: email
    properties: {shop_plan: plan}
queries:
  facts:
    sql: SELECT email, plan FROM customers
";
    // Jobs stay queued long enough for the test to spoil one row before Klaviyo reads it.
    let setup = Setup {
        emulator: slow_jobs_emulator().await,
        backend,
        project: TempProject::new(&[("shop.yaml", manifest)]),
    };
    let db = [("DATABASE_URL", source.url.as_str())];
    let child = setup
        .command(&["apply", "--auto-approve"])
        .env("DATABASE_URL", &source.url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn klsync");
    wait_until("the bulk import job", || {
        setup.seed(|s| {
            s.jobs.values_mut().any(|job| {
                job.pending
                    .iter_mut()
                    .find(|row| row["attributes"]["email"] == "c@example.com")
                    .map(|row| row["attributes"]["properties"] = serde_json::json!("spoiled"))
                    .is_some()
            })
        })
    })
    .await;
    let partial = wait_for(child).await;
    ok(&partial, 3);
    assert!(
        partial
            .stdout
            .contains("profiles.facts: 3 sent in 1 job(s), 0 unset, 2 recorded, 1 failed"),
        "{}",
        partial.stdout
    );
    assert!(
        partial.stdout.contains("  ! c@example.com: "),
        "{}",
        partial.stdout
    );
    assert!(
        partial.stderr.contains("some data rows failed"),
        "{}",
        partial.stderr
    );
    let history = setup.run(&["history", "--format", "json"]).await;
    ok(&history, 0);
    assert!(history.stdout.contains("\"partial\""), "{}", history.stdout);

    let retry = setup.run_env(&["plan", "--detailed-exitcode"], &db).await;
    ok(&retry, 2);
    assert!(
        retry
            .stdout
            .contains("profiles.facts (3 rows): 1 new, 0 changed, 0 unset, 2 unchanged"),
        "{}",
        retry.stdout
    );
    ok(&setup.run_env(&["apply", "--auto-approve"], &db).await, 0);
    ok(
        &setup.run_env(&["plan", "--detailed-exitcode"], &db).await,
        0,
    );
}

async fn slow_jobs_emulator() -> EmulatorHandle {
    emulator::start(EmulatorConfig {
        rate_limits: RateLimitMode::Off,
        job_delay: Duration::from_millis(300),
        ..EmulatorConfig::default()
    })
    .await
    .expect("start the emulator")
}

/// The shop example's queries are portable: they plan on PostgreSQL too (the demo runs them on
/// SQLite), with `customer_stats` in PostgreSQL's dialect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shop_queries_run_on_postgres() {
    let backend = Backend::postgres().await;
    let source = Source::of(&backend);
    source
        .execute(&format!(
            "CREATE TABLE customers (
                 customer_id text PRIMARY KEY, email text, country text,
                 lifetime_value numeric(12, 2), order_count integer,
                 first_order_at timestamptz, last_order_at timestamptz, marketing_status text);
             INSERT INTO customers VALUES
               ('C-1', 'vip@example.com', 'DE', 2500.00, 9, now() - interval '400 days',
                now() - interval '10 days', 'subscribed'),
               ('C-2', 'gone@example.com', 'AT', 80.50, 1, now() - interval '300 days',
                now() - interval '300 days', 'subscribed'),
               ('C-3', 'never@example.com', 'FR', 40.00, 1, now() - interval '500 days',
                now() - interval '500 days', 'do-not-contact');
             {}",
            include_str!("../../examples/shop/customer_stats.postgres.sql")
        ))
        .await;
    let url = source.url.clone();
    the_shop_plans(backend, &url).await;
}

/// ... and on MariaDB, with `customer_stats` in MySQL's dialect and the same queries (their
/// `$n` placeholders are sent as `?`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shop_queries_run_on_mariadb() {
    let Some(db) = crate::support::source::TestMySql::create().await else {
        return;
    };
    crate::support::source::execute(
        db.url(),
        &format!(
            "CREATE TABLE customers (
                 customer_id VARCHAR(20) PRIMARY KEY, email VARCHAR(100), country CHAR(2),
                 lifetime_value DECIMAL(12, 2), order_count INT,
                 first_order_at TIMESTAMP NULL, last_order_at TIMESTAMP NULL,
                 marketing_status VARCHAR(20));
             INSERT INTO customers VALUES
               ('C-1', 'vip@example.com', 'DE', 2500.00, 9, NOW() - INTERVAL 400 DAY,
                NOW() - INTERVAL 10 DAY, 'subscribed'),
               ('C-2', 'gone@example.com', 'AT', 80.50, 1, NOW() - INTERVAL 300 DAY,
                NOW() - INTERVAL 300 DAY, 'subscribed'),
               ('C-3', 'never@example.com', 'FR', 40.00, 1, NOW() - INTERVAL 500 DAY,
                NOW() - INTERVAL 500 DAY, 'do-not-contact');
             {}",
            include_str!("../../examples/shop/customer_stats.mysql.sql")
        ),
    )
    .await;
    the_shop_plans(Backend::sqlite(), db.url()).await;
}

/// `klsync plan` of the shop example with its data at `url` (three customers: a VIP, a lapsed
/// one and one who must not be contacted).
async fn the_shop_plans(backend: Backend, url: &str) {
    let setup = Setup {
        emulator: slow_jobs_emulator().await,
        backend,
        project: TempProject::copy_of("examples/shop"),
    };
    let finished = setup
        .run_env(
            &["plan", "--detailed-exitcode"],
            &[("SHOP_DATABASE_URL", url)],
        )
        .await;
    ok(&finished, 2);
    for needle in [
        "profiles.ltv (3 rows): 3 new",
        "lists.vip.members (1 rows): +1 add",
        "lists.win-back.members (1 rows): +1 add",
        "+ C-2",
    ] {
        assert!(
            finished.stdout.contains(needle),
            "{needle}:\n{}",
            finished.stdout
        );
    }
}

/// A PostgreSQL source that refuses `COPY (query) TO STDOUT` still plans correctly: klsync reads
/// it row by row and says so once at `-v`. The refusal is the real server's: the view calls a
/// function that raises `feature_not_supported` (SQLSTATE 0A000, what engines without COPY TO
/// answer) when the statement running is a `COPY`, once while PostgreSQL plans the COPY (the
/// function is immutable, so it is folded then, before the COPY starts) and once as the first
/// row is produced (volatile: after the COPY started, before its first byte). With
/// `database.copy: off`, klsync never tries: a view that fails differently under `COPY` (a
/// division by zero, no refusal) then plans as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_source_that_refuses_copy_plans_row_by_row() {
    let backend = Backend::postgres().await;
    let source = Source::of(&backend);
    let guard = |name: &str, volatility: &str, code: &str| {
        format!(
            "CREATE FUNCTION {name}() RETURNS boolean LANGUAGE plpgsql {volatility} AS $$
             BEGIN
               IF current_query() ILIKE 'COPY%' THEN
                 RAISE EXCEPTION 'COPY TO is not supported here' USING ERRCODE = '{code}';
               END IF;
               RETURN true;
             END $$;"
        )
    };
    source
        .execute(&format!(
            "CREATE TABLE people (email text, plan text);
             INSERT INTO people VALUES ('a@shop.test', 'gold'), ('b@shop.test', 'basic'),
                                       ('c@shop.test', 'gold');
             {}{}{}
             CREATE VIEW at_planning AS SELECT * FROM people WHERE refuse_when_planned();
             CREATE VIEW at_first_row AS SELECT * FROM people WHERE refuse_when_run();
             CREATE VIEW breaks_copy AS SELECT * FROM people WHERE fail_in_copy();",
            guard("refuse_when_planned", "IMMUTABLE", "0A000"),
            guard("refuse_when_run", "VOLATILE", "0A000"),
            guard("fail_in_copy", "VOLATILE", "22012"),
        ))
        .await;
    let manifest = |view: &str| {
        format!(
            "profiles:\n  - id: people\n    query: people\n    identify_by: email\n    \
             properties: {{plan: plan}}\n\
             lists:\n  - id: gold\n    name: Gold\n    members:\n      query: gold\n      \
             identify_by: email\n\
             queries:\n  people:\n    sql: SELECT email, plan FROM {view}\n  \
             gold:\n    sql: SELECT email FROM {view} WHERE plan = 'gold'\n"
        )
    };
    let db = [("DATABASE_URL", source.url.as_str())];
    for view in ["at_planning", "at_first_row"] {
        let setup = Setup::new(Backend::sqlite(), None, &[("m.yaml", &manifest(view))]).await;
        let finished = setup
            .run_env(&["plan", "-v", "--detailed-exitcode"], &db)
            .await;
        ok(&finished, 2);
        for needle in [
            "profiles.people (3 rows): 3 new",
            "lists.gold.members (2 rows): +2 add",
        ] {
            assert!(
                finished.stdout.contains(needle),
                "{needle}:\n{}",
                finished.stdout
            );
        }
        assert_eq!(
            finished.stderr.matches("the database refused COPY").count(),
            1,
            "{view}: said once for the two queries:\n{}",
            finished.stderr
        );
        assert!(
            finished.stderr.contains("COPY TO is not supported here"),
            "{}",
            finished.stderr
        );
    }

    // A failure under COPY that is no refusal is the query's error...
    let setup = Setup::new(
        Backend::sqlite(),
        None,
        &[("m.yaml", &manifest("breaks_copy"))],
    )
    .await;
    let finished = setup.run_env(&["plan"], &db).await;
    ok(&finished, 1);
    assert!(
        finished.stderr.contains("COPY TO is not supported here"),
        "{}",
        finished.stderr
    );
    // ... and with `database.copy: off` klsync never runs a COPY.
    setup
        .project
        .write("klsync.yaml", "version: 1\ndatabase:\n  copy: off\n");
    let finished = setup
        .run_env(&["plan", "-v", "--detailed-exitcode"], &db)
        .await;
    ok(&finished, 2);
    assert!(
        finished.stdout.contains("profiles.people (3 rows): 3 new"),
        "{}",
        finished.stdout
    );
    assert!(
        !finished.stderr.contains("refused COPY"),
        "{}",
        finished.stderr
    );
}

#[test]
fn plan_without_an_api_key_names_the_variable() {
    let project = TempProject::new(&[("m.yaml", "lists:\n  - id: vip\n    name: VIP\n")]);
    let finished = crate::support::project::run(klsync().arg("plan").arg("-C").arg(project.path()));
    ok(&finished, 1);
    assert!(
        finished.stderr.contains("KLAVIYO_API_KEY"),
        "{}",
        finished.stderr
    );
    assert!(
        finished.stderr.contains("klsync demo"),
        "{}",
        finished.stderr
    );
}

#[test]
fn demo_runs_anywhere_and_ends_with_nothing_to_do() {
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let finished = Finished::from(
        klsync()
            .arg("demo")
            .current_dir(elsewhere.path())
            // A real account configured in the environment must never be used by the demo.
            .env("KLAVIYO_API_KEY", "pk_live_must_not_be_used")
            .env("KLAVIYO_BASE_URL", "http://127.0.0.1:9")
            .env("KLSYNC_STATE_URL", "postgres://nowhere.invalid/x")
            .env("SHOP_DATABASE_URL", "postgres://nowhere.invalid/shop")
            .output()
            .expect("run demo"),
    );
    ok(&finished, 0);
    assert!(
        finished.stdout.contains("No changes"),
        "{}",
        finished.stdout
    );
    // The sample database feeds profiles and both mirrored lists; two emails are rejected.
    let synced = finished
        .stdout
        .split("== 4.")
        .next()
        .expect("steps")
        .to_owned();
    for needle in [
        "profiles.ltv (200 rows): 198 new, 0 changed, 0 unset, 0 unchanged, 2 rejected",
        "invalid email address",
        "profiles.ltv: 198 sent in 1 job(s), 0 unset, 198 recorded, 0 failed",
        "lists.win-back.members: +",
    ] {
        assert!(synced.contains(needle), "{needle}:\n{}", finished.stdout);
    }
    let last = finished.stdout.split("== 4.").nth(1).expect("step 4");
    assert!(
        last.contains("profiles.ltv (200 rows): 0 new, 0 changed, 0 unset, 198 unchanged"),
        "{last}"
    );
    assert!(
        finished.stdout.contains("export KLAVIYO_API_KEY"),
        "{}",
        finished.stdout
    );
    assert!(!Path::new(&elsewhere.path().join(".klsync")).exists());
    // A first look (issue 13): about a screen, new profiles marked `+`, no `null` fields, no
    // progress drawn over nothing, and closing words about what still exists.
    let lines = finished.stdout.lines().count() + finished.stderr.lines().count();
    assert!(
        lines <= 70,
        "{lines} lines:\n{}{}",
        finished.stdout,
        finished.stderr
    );
    assert!(
        finished.stdout.contains("  + ben.001@example.com (new"),
        "{}",
        finished.stdout
    );
    assert!(!finished.stdout.contains("null"), "{}", finished.stdout);
    assert!(!finished.stdout.contains("0/0"), "{}", finished.stdout);
    let closing = finished
        .stdout
        .split("Nothing is left to do")
        .nth(1)
        .expect("closing words");
    assert!(
        !closing.contains("klsync-demo-"),
        "names a removed directory: {closing}"
    );
    assert!(closing.contains("--keep DIR"), "{closing}");
}

/// `demo --keep DIR` keeps the project, its state, the sample database and the emulator's
/// account, and the closing words' commands work on them: a plan against the kept account
/// finds nothing to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_demo_can_be_planned_again_as_its_closing_words_say() {
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let kept = elsewhere.path().join("shop");
    let finished = run(klsync()
        .arg("demo")
        .arg("--keep")
        .arg(&kept)
        .current_dir(elsewhere.path()));
    ok(&finished, 0);
    for file in [
        "klsync.yaml",
        ".klsync/state.db",
        "shop.db",
        "emulator-state.json",
    ] {
        assert!(kept.join(file).exists(), "{file} kept");
    }
    let closing = finished
        .stdout
        .split("Nothing is left to do")
        .nth(1)
        .expect("closing words");
    assert!(
        closing.contains(&format!("klsync plan -C {}", kept.display())),
        "{closing}"
    );

    let emulator = emulator::start(EmulatorConfig {
        rate_limits: RateLimitMode::Off,
        state_file: Some(kept.join("emulator-state.json")),
        ..EmulatorConfig::default()
    })
    .await
    .expect("start the emulator on the kept account");
    let again = run(klsync()
        .args(["plan", "--detailed-exitcode", "-C"])
        .arg(&kept)
        .env("KLAVIYO_API_KEY", "pk_emulator")
        .env("KLAVIYO_BASE_URL", &emulator.base_url)
        .env(
            "SHOP_DATABASE_URL",
            format!("sqlite://{}/shop.db", kept.display()),
        ));
    ok(&again, 0);

    let refused = run(klsync().arg("demo").arg("--keep").arg(&kept));
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("is not empty"),
        "{}",
        refused.stderr
    );
}

on_both_backends!(saved_plans_are_applied_only_as_made);

/// Issue 11, finding 2: a saved plan is applied exactly as `klsync plan --out` wrote it. Edited,
/// cut short, dated in the future, made for another project or against another state: each is
/// refused with its reason, and nothing is sent.
async fn saved_plans_are_applied_only_as_made(backend: Backend) {
    let setup = Setup::new(backend, None, &[("manifest.yaml", SMALL)]).await;
    let before = setup.inventory();
    let plan = setup.path("plan.json");
    let saved = setup.run(&["plan", "--out", &plan]).await;
    ok(&saved, 0);
    assert!(saved.stderr.contains("Saved plan "), "{}", saved.stderr);
    let text = std::fs::read_to_string(&plan).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let edited = |name: &str, edit: &dyn Fn(&mut serde_json::Value)| {
        let mut value = json.clone();
        edit(&mut value);
        let path = setup.path(name);
        std::fs::write(&path, serde_json::to_string_pretty(&value).unwrap()).unwrap();
        path
    };
    let refused = async |file: &str, reason: &str| {
        let finished = setup.run(&["apply", file, "--auto-approve"]).await;
        ok(&finished, 1);
        assert!(
            finished.stderr.contains(reason),
            "{reason}:\n{}",
            finished.stderr
        );
    };

    // Every create twice: before issue 11 this applied, and Klaviyo held two of each.
    let doubled = edited("doubled.json", &|plan| {
        let changes = plan["changes"].as_array_mut().unwrap();
        let creates: Vec<_> = changes
            .iter()
            .filter(|c| c["action"] == "create")
            .cloned()
            .collect();
        changes.extend(creates);
    });
    refused(
        &doubled,
        "more than once, so it was edited by hand: list.newsletter",
    )
    .await;
    // An edit the checks of the content would not notice: one change fewer.
    let dropped = edited("dropped.json", &|plan| {
        plan["changes"].as_array_mut().unwrap().pop();
    });
    refused(
        &dropped,
        "was not made by `klsync plan --out` against this state, or was edited",
    )
    .await;
    // The very plan, only reformatted: not the reviewed file either.
    let reformatted = edited("reformatted.json", &|_| {});
    refused(&reformatted, "was not made by `klsync plan --out`").await;
    let future = edited("future.json", &|plan| {
        plan["meta"]["created_at"] = "2099-01-01T00:00:00Z".into();
    });
    refused(&future, "the plan is dated in the future").await;
    let cut = setup.path("cut.json");
    std::fs::write(&cut, &text[..text.len() * 2 / 3]).unwrap();
    refused(&cut, "cut short").await;

    // Another project's plan.
    let other = TempProject::new(&[("m.yaml", "lists:\n  - id: other\n    name: Other\n")]);
    let other_plan = setup.path("other-project.json");
    let mut command = klsync();
    command
        .args(["plan", "--out", &other_plan, "-C"])
        .arg(other.path())
        .env("KLAVIYO_BASE_URL", &setup.emulator.base_url)
        .env("KLAVIYO_API_KEY", "pk_emulator")
        .env("KLSYNC_STATE_URL", setup.backend.url());
    ok(&crate::support::project::run(&mut command), 0);
    refused(&other_plan, "made from other manifests than this project's").await;

    // This project's plan, made against another state.
    let elsewhere = tempfile::tempdir().unwrap();
    let elsewhere_url = format!("sqlite://{}", elsewhere.path().join("s.db").display());
    let other_state = setup.path("other-state.json");
    let planned = setup
        .run_env(
            &["plan", "--out", &other_state],
            &[("KLSYNC_STATE_URL", &elsewhere_url)],
        )
        .await;
    ok(&planned, 0);
    refused(
        &other_state,
        "was not made by `klsync plan --out` against this state",
    )
    .await;

    assert_eq!(setup.inventory(), before, "nothing was sent");
    ok(&setup.run(&["apply", &plan]).await, 0);
    let inventory = setup.inventory();
    assert!(inventory.values().all(|&count| count == 1), "{inventory:?}");
    ok(&setup.run(&["plan", "--detailed-exitcode"]).await, 0);
}

on_both_backends!(prevent_destroy_outlives_the_manifest_entry);

/// Issue 11, guardrails: `prevent_destroy` is read from what was last applied, so deleting the
/// resource (or its whole tag group) from the manifests does not lift it, through a fresh plan
/// or a saved one, with `--allow-destroy` or not; the note says how to lift it, and doing so works.
async fn prevent_destroy_outlives_the_manifest_entry(backend: Backend) {
    const PROTECTED: &str = "\
tag_groups:
  - name: lifecycle
    prevent_destroy: true
    tags: [vip]
lists:
  - id: keep
    name: Keep
    prevent_destroy: true
";
    let setup = Setup::new(backend, None, &[("m.yaml", PROTECTED)]).await;
    ok(&setup.run(&["apply", "--auto-approve"]).await, 0);
    let applied = setup.inventory();

    setup.project.write("m.yaml", "lists: []\n");
    let planned = setup.run(&["plan", "--detailed-exitcode"]).await;
    ok(&planned, 2);
    for needle in [
        "- destroy list.keep \"Keep\"",
        "- destroy tag.lifecycle/vip \"vip\"",
        "- destroy tag_group.lifecycle \"lifecycle\"",
        "also now that it is gone from the manifests; to delete it, declare it again with `prevent_destroy: false`",
        "3 changes are prevented",
    ] {
        assert!(
            planned.stdout.contains(needle),
            "{needle}:\n{}",
            planned.stdout
        );
    }
    let refused = setup
        .run(&["apply", "--auto-approve", "--allow-destroy"])
        .await;
    ok(&refused, 1);
    for needle in [
        "forbidden changes, even with --allow-destroy",
        "list.keep (Keep)",
        "tag.lifecycle/vip (vip)",
        "tag_group.lifecycle (lifecycle)",
    ] {
        assert!(
            refused.stderr.contains(needle),
            "{needle}:\n{}",
            refused.stderr
        );
    }
    let plan = setup.path("plan.json");
    ok(&setup.run(&["plan", "--out", &plan]).await, 0);
    let refused = setup.run(&["apply", &plan, "--allow-destroy"]).await;
    ok(&refused, 1);
    assert!(refused.stderr.contains("forbidden"), "{}", refused.stderr);
    assert_eq!(setup.inventory(), applied, "nothing was deleted");

    // As the note says: apply the flag off first, then remove.
    setup.project.write(
        "m.yaml",
        &PROTECTED.replace("prevent_destroy: true", "prevent_destroy: false"),
    );
    let released = setup.run(&["apply", "--auto-approve"]).await;
    ok(&released, 0);
    assert_eq!(setup.inventory(), applied, "releasing sends nothing");
    setup.project.write("m.yaml", "lists: []\n");
    ok(
        &setup
            .run(&["apply", "--auto-approve", "--allow-destroy"])
            .await,
        0,
    );
    let inventory = setup.inventory();
    for gone in ["list Keep", "group lifecycle", "tag lifecycle/vip"] {
        assert!(!inventory.contains_key(gone), "{gone}: {inventory:?}");
    }
    ok(&setup.run(&["plan", "--detailed-exitcode"]).await, 0);
}
