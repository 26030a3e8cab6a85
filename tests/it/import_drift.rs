//! `klsync import` and `klsync drift` end to end: the real binary against an emulator started
//! in the test process, with state in SQLite and in PostgreSQL.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::backend::{Backend, ok, on_both_backends};
use crate::support::project::{Finished, klsync};
use klsync::emulator::state::{State, Taggable};
use klsync::emulator::{self, EmulatorConfig, EmulatorHandle, RateLimitMode};
use klsync::klaviyo::{ClientConfig, KlaviyoClient, ProfileAttributes, ProfileIdentifier};
use klsync::settings::Secret;
use klsync::state::{RunStart, StateStore};
use serde_json::{Value, json};

struct Setup {
    emulator: EmulatorHandle,
    backend: Backend,
    out: tempfile::TempDir,
}

impl Setup {
    async fn new(backend: Backend) -> Setup {
        let emulator = emulator::start(EmulatorConfig {
            rate_limits: RateLimitMode::Off,
            ..EmulatorConfig::default()
        })
        .await
        .expect("start the emulator");
        Setup {
            emulator,
            backend,
            out: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// The project directory import writes to.
    fn dir(&self) -> PathBuf {
        self.out.path().join("project")
    }

    async fn run(&self, args: &[&str]) -> Finished {
        self.run_with_state(args, &self.backend.url()).await
    }

    async fn run_with_state(&self, args: &[&str], state_url: &str) -> Finished {
        self.run_with_env(args, &[("KLSYNC_STATE_URL", state_url)])
            .await
    }

    async fn run_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Finished {
        let mut command: Command = klsync();
        command
            .args(args)
            .env("KLAVIYO_BASE_URL", &self.emulator.base_url)
            .env("KLAVIYO_API_KEY", "pk_emulator")
            .env("KLSYNC_STATE_URL", self.backend.url())
            .envs(env.iter().copied())
            .stdin(Stdio::null());
        tokio::task::spawn_blocking(move || Finished::from(command.output().expect("run klsync")))
            .await
            .expect("join")
    }

    async fn import(&self, extra: &[&str]) -> Finished {
        let dir = self.dir().display().to_string();
        let mut args = vec!["import", "--out", dir.as_str()];
        args.extend_from_slice(extra);
        self.run(&args).await
    }

    async fn in_project(&self, args: &[&str]) -> Finished {
        let dir = self.dir().display().to_string();
        let mut all = args.to_vec();
        all.extend_from_slice(&["-C", dir.as_str()]);
        self.run(&all).await
    }

    fn seed<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        self.emulator.seed(f)
    }

    /// A client of the emulator's API: hand changes go through HTTP, as in Klaviyo.
    fn api(&self) -> KlaviyoClient {
        KlaviyoClient::new(ClientConfig::new(
            self.emulator.base_url.clone(),
            Secret::new("pk_emulator"),
        ))
        .expect("client")
    }

    async fn managed_rows(&self) -> Vec<(String, String, String, Value)> {
        let store = StateStore::connect(&self.backend.url())
            .await
            .expect("state");
        let rows = store.managed().await.expect("rows");
        store.close().await;
        rows.into_iter()
            .map(|row| (row.kind, row.key, row.klaviyo_id, row.applied))
            .collect()
    }
}

on_both_backends!(
    import_then_plan_is_empty_and_drift_finds_each_hand_change,
    import_by_kind_refuses_clashes_and_drift_covers_every_field,
    drift_after_apply_is_empty_until_a_hand_change,
    a_partial_apply_records_the_links_it_made,
    drift_data_reports_hand_edits_and_a_full_refresh_plan_restores_them,
    mirror_removal_goes_by_profile_id_and_one_it_cannot_resolve_is_kept_and_retried,
    drift_members_reads_the_lists_and_finds_removed_members_back_and_added_ones_gone,
    a_list_created_again_forgets_the_members_klsync_removed_from_the_old_one,
);

fn definition(value: i64) -> Value {
    json!({"condition_groups": [{"conditions": [{
        "type": "profile-property",
        "property": "properties['ltv']",
        "filter": {"type": "numeric", "operator": "greater-than", "value": value}
    }]}]})
}

/// Names YAML would read as something else unless quoted, and names klsync must skip.
const AWKWARD_LISTS: &[&str] = &[
    "yes",
    "Sale: 50% off",
    "#1 fans",
    "\"quoted\"",
    "*star",
    "null",
    "123",
    "Café ☕",
    " padded ",
];

/// Klaviyo ids of what the scenario changes by hand later.
struct Seeded {
    yes_list: String,
    number_list: String,
    big_spenders: String,
    anchor: String,
    vip: String,
    churned: String,
}

fn seed_account(state: &mut State) -> Seeded {
    let lifecycle = state.create_tag_group("lifecycle", true).expect("group");
    let channel = state.create_tag_group("channel", false).expect("group");
    let vip = state.create_tag("vip", Some(&lifecycle)).expect("tag");
    let churned = state.create_tag("churned", Some(&lifecycle)).expect("tag");
    let email = state.create_tag("email: yes", Some(&channel)).expect("tag");
    let sale = state.create_tag("on", None).expect("tag");
    // Klaviyo allows `/` in a tag name; klsync cannot reference it, so import skips it.
    let slashed = state.create_tag("a/b", None).expect("tag");
    let mut ids = Vec::new();
    for name in AWKWARD_LISTS {
        ids.push(state.create_list(name, Some("double_opt_in")));
    }
    // Two lists with one name: klsync could not tell them apart, so import skips both.
    state.create_list("Twin", None);
    state.create_list("Twin", None);
    state
        .tag_resources(&vip, Taggable::List, &[ids[0].clone(), ids[7].clone()])
        .expect("link");
    state
        .tag_resources(&email, Taggable::List, &[ids[0].clone()])
        .expect("link");
    state
        .tag_resources(&sale, Taggable::List, &[ids[1].clone()])
        .expect("link");
    state
        .tag_resources(&slashed, Taggable::List, &[ids[1].clone()])
        .expect("link");
    let big_spenders = state.create_segment("Big spenders", definition(500), false);
    let anchor = state.create_segment("&anchor", definition(100), true);
    // A segment of members of an imported list: import names the list by its manifest id.
    state.create_segment(
        "Members of 123",
        json!({"condition_groups": [{"conditions": [{"type": "profile-group-membership",
            "is_member": true, "group_ids": [ids[6].clone()]}]}]}),
        false,
    );
    state
        .tag_resources(&vip, Taggable::Segment, std::slice::from_ref(&big_spenders))
        .expect("link");
    state
        .tag_resources(&sale, Taggable::Segment, std::slice::from_ref(&anchor))
        .expect("link");
    Seeded {
        yes_list: ids[0].clone(),
        number_list: ids[6].clone(),
        big_spenders,
        anchor,
        vip,
        churned,
    }
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|err| panic!("{name}: {err}"))
}

/// (address, field, drift, before, after) of every entry of a JSON drift report.
fn entries(report: &Value) -> BTreeMap<(String, String), (String, Value, Value)> {
    report["drift"]
        .as_array()
        .expect("drift array")
        .iter()
        .map(|e| {
            (
                (
                    e["address"].as_str().unwrap().to_owned(),
                    e["field"].as_str().unwrap().to_owned(),
                ),
                (
                    e["drift"].as_str().unwrap().to_owned(),
                    e["before"].clone(),
                    e["after"].clone(),
                ),
            )
        })
        .collect()
}

async fn import_then_plan_is_empty_and_drift_finds_each_hand_change(backend: Backend) {
    let setup = Setup::new(backend).await;
    let seeded = setup.seed(seed_account);
    let dir = setup.dir();

    let imported = setup.import(&[]).await;
    ok(&imported, 0);
    for skipped in ["\"Twin\"", "\"a/b\""] {
        assert!(
            imported.stderr.contains(&format!("skipped list {skipped}"))
                || imported.stderr.contains(&format!("skipped tag {skipped}")),
            "{skipped}: {}",
            imported.stderr
        );
    }
    let lists = read(&dir, "lists.yaml");
    assert!(
        lists.starts_with("# yaml-language-server: $schema=klsync.schema.json\n"),
        "{lists}"
    );
    assert!(dir.join("klsync.schema.json").exists());
    assert!(!lists.contains("Twin"), "{lists}");
    // Quoted for YAML 1.1 readers too, where a bare `yes` or `on` is a boolean.
    for line in [
        "  name: 'yes'\n",
        "  name: 'null'\n",
        "  name: '123'\n",
        "  - 'on'\n",
    ] {
        assert!(lists.contains(line), "{line:?} in {lists}");
    }
    assert!(!read(&dir, "tags.yaml").contains("a/b"));
    let segments = read(&dir, "segments.yaml");
    assert!(
        !segments.contains(&seeded.number_list) && segments.contains("- '123'\n"),
        "the list is named by its manifest id: {segments}"
    );

    ok(&setup.in_project(&["validate"]).await, 0);
    let plan = setup.in_project(&["plan", "--detailed-exitcode"]).await;
    ok(&plan, 0);
    assert!(plan.stdout.contains("No changes"), "{}", plan.stdout);

    let drift = setup.in_project(&["drift"]).await;
    ok(&drift, 0);
    assert!(drift.stdout.starts_with("No drift."), "{}", drift.stdout);

    // The skipped resources are not managed, so they show up as unmanaged (and count as drift).
    let unmanaged = setup
        .in_project(&["drift", "--include-unmanaged", "--format", "json"])
        .await;
    ok(&unmanaged, 2);
    let report: Value = serde_json::from_str(&unmanaged.stdout).expect("JSON report");
    assert_eq!(report["drift"], json!([]));
    let names: BTreeSet<(String, String)> = report["unmanaged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["kind"].as_str().unwrap().to_owned(),
                u["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String)> = [("tag", "a/b"), ("list", "Twin")]
        .into_iter()
        .map(|(k, n)| (k.to_owned(), n.to_owned()))
        .collect();
    assert_eq!(names, expected);

    // Refuses to overwrite; --force rewrites the same bytes (the output is stable).
    let before = read(&dir, "lists.yaml");
    let refused = setup.import(&[]).await;
    ok(&refused, 1);
    assert!(refused.stderr.contains("--force"), "{}", refused.stderr);
    ok(&setup.import(&["--force"]).await, 0);
    assert_eq!(read(&dir, "lists.yaml"), before);
    ok(&setup.in_project(&["plan", "--detailed-exitcode"]).await, 0);

    // Hand changes in Klaviyo: rename a list, retag a segment, delete a list, edit a definition.
    setup.seed(|state| {
        state.lists.get_mut(&seeded.yes_list).unwrap().name = "no way".into();
        state
            .tags
            .get_mut(&seeded.vip)
            .unwrap()
            .segments
            .remove(&seeded.big_spenders);
        state
            .tag_resources(
                &seeded.churned,
                Taggable::Segment,
                std::slice::from_ref(&seeded.big_spenders),
            )
            .expect("retag");
        assert!(state.delete_list(&seeded.number_list));
        state.segments.get_mut(&seeded.anchor).unwrap().definition = definition(250);
    });
    let rows_before = setup.managed_rows().await;
    let drift = setup.in_project(&["drift", "--format", "json"]).await;
    ok(&drift, 2);
    let report: Value = serde_json::from_str(&drift.stdout).expect("JSON report");
    assert_eq!(report["format_version"], 1);
    let normalized = |v: i64| klsync::plan::normalize_definition(&definition(v));
    let expected: BTreeMap<(String, String), (String, Value, Value)> = [
        ("list.yes", "name", "changed", json!("yes"), json!("no way")),
        ("list.123", "exists", "deleted", json!(true), json!(false)),
        (
            "segment.anchor",
            "definition",
            "changed",
            normalized(100),
            normalized(250),
        ),
        (
            "tag_link.lifecycle/vip->segment.big-spenders",
            "linked",
            "detached",
            json!(true),
            json!(false),
        ),
        (
            "tag_link.lifecycle/churned->segment.big-spenders",
            "linked",
            "attached",
            json!(false),
            json!(true),
        ),
    ]
    .into_iter()
    .map(|(a, f, d, b, v)| ((a.to_owned(), f.to_owned()), (d.to_owned(), b, v)))
    .collect();
    assert_eq!(entries(&report), expected, "{}", drift.stdout);

    let text = setup.in_project(&["drift"]).await;
    ok(&text, 2);
    assert!(
        text.stdout.contains("name: \"yes\" → \"no way\""),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("- list.123 \"123\""),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("-      value: 100"), "{}", text.stdout);
    assert!(text.stdout.contains("+      value: 250"), "{}", text.stdout);

    // Read-only: klsync's records are exactly as before.
    assert_eq!(setup.managed_rows().await, rows_before);
}

async fn import_by_kind_refuses_clashes_and_drift_covers_every_field(backend: Backend) {
    let setup = Setup::new(backend).await;
    let dir = setup.dir();
    let (group, vip, list, segment) = setup.seed(|state| {
        let group = state.create_tag_group("tier", true).expect("group");
        let vip = state.create_tag("gold", Some(&group)).expect("tag");
        let list = state.create_list("Members", Some("single_opt_in"));
        let segment = state.create_segment("Whales", definition(900), false);
        state
            .tag_resources(&vip, Taggable::List, std::slice::from_ref(&list))
            .expect("link");
        (group, vip, list, segment)
    });

    // Tags first, then lists and segments: each step leaves nothing to plan.
    ok(&setup.import(&["--only", "tags"]).await, 0);
    assert!(dir.join("tags.yaml").exists());
    assert!(!dir.join("lists.yaml").exists());
    ok(&setup.in_project(&["plan", "--detailed-exitcode"]).await, 0);
    ok(&setup.import(&["--only", "lists,segments"]).await, 0);
    assert!(read(&dir, "lists.yaml").contains("- tier/gold"));
    ok(&setup.in_project(&["plan", "--detailed-exitcode"]).await, 0);

    // A manifest in the directory that clashes with the import: files are written, state is not.
    std::fs::write(
        dir.join("extra.yaml"),
        "lists:\n  - id: other\n    name: Members\n",
    )
    .expect("write");
    let rows = setup.managed_rows().await;
    let refused = setup.import(&["--force"]).await;
    ok(&refused, 1);
    assert!(
        refused.stderr.contains("state was not changed"),
        "{}",
        refused.stderr
    );
    assert_eq!(setup.managed_rows().await, rows);
    std::fs::remove_file(dir.join("extra.yaml")).expect("remove");

    // Every other field drift reports: renames, opt-in, exclusive, starring, a new link.
    setup.seed(|state| {
        let g = state.tag_groups.get_mut(&group).unwrap();
        g.name = "level".into();
        g.exclusive = false;
        state.tags.get_mut(&vip).unwrap().name = "platinum".into();
        state.lists.get_mut(&list).unwrap().opt_in_process = Some("double_opt_in".into());
        state.segments.get_mut(&segment).unwrap().is_starred = true;
        state
            .tag_resources(&vip, Taggable::Segment, std::slice::from_ref(&segment))
            .expect("link");
    });
    let drift = setup.in_project(&["drift", "--format", "json"]).await;
    ok(&drift, 2);
    let report: Value = serde_json::from_str(&drift.stdout).expect("JSON report");
    let expected: BTreeMap<(String, String), (String, Value, Value)> = [
        ("tag_group.tier", "name", json!("tier"), json!("level")),
        ("tag_group.tier", "exclusive", json!(true), json!(false)),
        ("tag.tier/gold", "name", json!("gold"), json!("platinum")),
        (
            "list.members",
            "opt_in_process",
            json!("single_opt_in"),
            json!("double_opt_in"),
        ),
        ("segment.whales", "is_starred", json!(false), json!(true)),
    ]
    .into_iter()
    .map(|(a, f, b, v)| ((a.to_owned(), f.to_owned()), ("changed".to_owned(), b, v)))
    .chain([(
        (
            "tag_link.tier/gold->segment.whales".to_owned(),
            "linked".to_owned(),
        ),
        ("attached".to_owned(), json!(false), json!(true)),
    )])
    .collect();
    assert_eq!(entries(&report), expected, "{}", drift.stdout);

    // Without state there is nothing to compare with; drift says so and creates nothing.
    let missing = setup.out.path().join("nowhere/state.db");
    let url = format!("sqlite://{}", missing.display());
    let dir_arg = dir.display().to_string();
    let no_state = setup
        .run_with_state(&["drift", "-C", dir_arg.as_str()], &url)
        .await;
    ok(&no_state, 1);
    assert!(
        no_state.stderr.contains("no klsync state"),
        "{}",
        no_state.stderr
    );
    assert!(!missing.exists());
}

const APPLIED: &str = "\
tag_groups:
  - name: lifecycle
    exclusive: true
    tags: [vip]
tags: [seasonal]
lists:
  - id: vip
    name: VIP
    opt_in_process: double_opt_in
    tags: [lifecycle/vip, seasonal]
    prevent_destroy: true
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

async fn drift_after_apply_is_empty_until_a_hand_change(backend: Backend) {
    let setup = Setup::new(backend).await;
    let dir = setup.dir();
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("klsync.yaml"), "version: 1\n").expect("write");
    std::fs::write(dir.join("manifest.yaml"), APPLIED).expect("write");
    ok(&setup.in_project(&["apply", "--auto-approve"]).await, 0);
    let drift = setup.in_project(&["drift"]).await;
    ok(&drift, 0);
    assert!(drift.stdout.starts_with("No drift."), "{}", drift.stdout);

    let seasonal = setup.seed(|state| {
        let id = state
            .tags
            .values()
            .find(|t| t.name == "seasonal")
            .expect("applied")
            .id
            .clone();
        state.tags.get_mut(&id).unwrap().name = "summer".into();
        id
    });
    let drift = setup.in_project(&["drift", "--format", "json"]).await;
    ok(&drift, 2);
    let report: Value = serde_json::from_str(&drift.stdout).expect("JSON report");
    let expected: BTreeMap<(String, String), (String, Value, Value)> = [(
        ("tag.seasonal".to_owned(), "name".to_owned()),
        ("changed".to_owned(), json!("seasonal"), json!("summer")),
    )]
    .into();
    assert_eq!(entries(&report), expected, "{}", drift.stdout);
    assert_eq!(report["drift"][0]["klaviyo_id"], json!(seasonal));
    setup.seed(|state| state.tags.get_mut(&seasonal).unwrap().name = "seasonal".into());

    // The state records the links apply made.
    assert_eq!(
        applied_tags(&setup).await,
        BTreeMap::from([
            ("list.vip".to_owned(), json!(["lifecycle/vip", "seasonal"])),
            ("segment.big-spenders".to_owned(), json!(["lifecycle/vip"])),
        ])
    );

    // Manifest edits not applied yet are not drift: drift compares with what was applied.
    let edited = APPLIED
        .replace(
            "tags: [lifecycle/vip, seasonal]\n    prevent_destroy",
            "tags: [lifecycle/vip]\n    prevent_destroy",
        )
        .replace(
            "name: Big spenders\n    tags: [lifecycle/vip]",
            "name: Big spenders\n    tags: [lifecycle/vip, seasonal]",
        );
    assert_ne!(edited, APPLIED);
    std::fs::write(dir.join("manifest.yaml"), &edited).expect("write");
    let drift = setup.in_project(&["drift"]).await;
    ok(&drift, 0);
    assert!(drift.stdout.starts_with("No drift."), "{}", drift.stdout);

    // Retagged by hand: the segment loses `lifecycle/vip` and gains `seasonal` — which the
    // unapplied manifest now asks for, but klsync never applied.
    let segment = setup.seed(|state| {
        let segment = state
            .segments
            .values()
            .find(|s| s.name == "Big spenders")
            .expect("applied")
            .id
            .clone();
        for tag in state.tags.values_mut() {
            tag.segments.remove(&segment);
        }
        state
            .tags
            .get_mut(&seasonal)
            .unwrap()
            .segments
            .insert(segment.clone());
        segment
    });
    let drift = setup.in_project(&["drift", "--format", "json"]).await;
    ok(&drift, 2);
    let report: Value = serde_json::from_str(&drift.stdout).expect("JSON report");
    let expected: BTreeMap<(String, String), (String, Value, Value)> = [
        (
            (
                "tag_link.lifecycle/vip->segment.big-spenders".to_owned(),
                "linked".to_owned(),
            ),
            ("detached".to_owned(), json!(true), json!(false)),
        ),
        (
            (
                "tag_link.seasonal->segment.big-spenders".to_owned(),
                "linked".to_owned(),
            ),
            ("attached".to_owned(), json!(false), json!(true)),
        ),
    ]
    .into();
    assert_eq!(entries(&report), expected, "{}", drift.stdout);
    assert!(
        report["drift"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["klaviyo_id"] == json!(segment) && e["name"] == json!("Big spenders")),
        "{}",
        drift.stdout
    );

    // Applying the edits attaches and detaches, and records each link: no drift after.
    ok(&setup.in_project(&["apply", "--auto-approve"]).await, 0);
    assert_eq!(
        applied_tags(&setup).await,
        BTreeMap::from([
            ("list.vip".to_owned(), json!(["lifecycle/vip"])),
            (
                "segment.big-spenders".to_owned(),
                json!(["lifecycle/vip", "seasonal"])
            ),
        ])
    );
    let drift = setup.in_project(&["drift"]).await;
    ok(&drift, 0);
    assert!(drift.stdout.starts_with("No drift."), "{}", drift.stdout);

    // Records of earlier versions have no applied tags: drift compares their links with the
    // manifests, so an unapplied edit shows, until an apply that converges records them.
    let store = StateStore::connect(&setup.backend.url())
        .await
        .expect("state");
    let run = store
        .begin_run(&RunStart {
            command: "test".into(),
            actor: "test".into(),
            git_commit: None,
            manifest_digest: None,
            plan_id: None,
        })
        .await
        .expect("run");
    for mut row in store.managed().await.expect("rows") {
        if let Some(applied) = row.applied.as_object_mut()
            && applied.remove("tags").is_some()
        {
            store.upsert_managed(&row, run).await.expect("write");
        }
    }
    store.close().await;
    let unapplied = edited.replace(
        "name: Big spenders\n    tags: [lifecycle/vip, seasonal]",
        "name: Big spenders\n    tags: [lifecycle/vip]",
    );
    std::fs::write(dir.join("manifest.yaml"), &unapplied).expect("write");
    let drift = setup.in_project(&["drift", "--format", "json"]).await;
    ok(&drift, 2);
    let report: Value = serde_json::from_str(&drift.stdout).expect("JSON report");
    let expected: BTreeMap<(String, String), (String, Value, Value)> = [(
        (
            "tag_link.seasonal->segment.big-spenders".to_owned(),
            "linked".to_owned(),
        ),
        ("attached".to_owned(), json!(false), json!(true)),
    )]
    .into();
    assert_eq!(entries(&report), expected, "{}", drift.stdout);
    std::fs::write(dir.join("manifest.yaml"), &edited).expect("write");
    ok(&setup.in_project(&["apply", "--auto-approve"]).await, 0);
    assert_eq!(
        applied_tags(&setup).await,
        BTreeMap::from([
            ("list.vip".to_owned(), json!(["lifecycle/vip"])),
            (
                "segment.big-spenders".to_owned(),
                json!(["lifecycle/vip", "seasonal"])
            ),
        ])
    );
}

/// Address → applied `tags` of every managed list and segment.
async fn applied_tags(setup: &Setup) -> BTreeMap<String, Value> {
    setup
        .managed_rows()
        .await
        .into_iter()
        .filter(|(kind, ..)| kind == "list" || kind == "segment")
        .map(|(kind, key, _, applied)| (format!("{kind}.{key}"), applied["tags"].clone()))
        .collect()
}

async fn a_partial_apply_records_the_links_it_made(backend: Backend) {
    let setup = Setup::new(backend).await;
    let dir = setup.dir();
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("klsync.yaml"), "version: 1\n").expect("write");
    std::fs::write(
        dir.join("manifest.yaml"),
        "\
tag_groups:
  - name: stage
    exclusive: true
    tags: [acquisition]
tags: [promo]
lists:
  - id: newsletter
    name: Newsletter
    tags: [stage/acquisition, promo]
  - id: other
    name: Other
    tags: [promo]
",
    )
    .expect("write");
    // The newsletter already carries another tag of the exclusive group: that attach fails.
    setup.seed(|state| {
        let group = state.create_tag_group("stage", true).expect("group");
        let legacy = state.create_tag("legacy", Some(&group)).expect("tag");
        let newsletter = state.create_list("Newsletter", None);
        state
            .tag_resources(&legacy, Taggable::List, &[newsletter])
            .expect("link");
    });
    let partial = setup.in_project(&["apply", "--auto-approve"]).await;
    ok(&partial, 3);
    // Only the links that were made are recorded (the run did not converge).
    assert_eq!(
        applied_tags(&setup).await,
        BTreeMap::from([
            ("list.newsletter".to_owned(), json!(["promo"])),
            ("list.other".to_owned(), json!(["promo"])),
        ])
    );
    let drift = setup.in_project(&["drift"]).await;
    ok(&drift, 0);
    assert!(drift.stdout.starts_with("No drift."), "{}", drift.stdout);
}

const DATA_SYNCS: &str = "\
lists:
  - id: vip
    name: VIP
    members:
      query: vips
      identify_by: email
      mode: mirror
profiles:
  - id: customers
    query: customers
    identify_by: email
    properties:
      shop_plan: plan
      shop_ltv: ltv
queries:
  vips:
    sql: SELECT email FROM customers WHERE plan = 'vip'
  customers:
    sql: SELECT email, plan, ltv FROM customers
";

/// Data changed by hand in Klaviyo: `drift --data` reports it (its cost first), `plan
/// --refresh=full` plans restoring it, the saved plan's apply restores it, and both checks are
/// clean after.
async fn drift_data_reports_hand_edits_and_a_full_refresh_plan_restores_them(backend: Backend) {
    use sqlx::Connection as _;
    let setup = Setup::new(backend).await;
    let dir = setup.dir();
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("klsync.yaml"), "version: 1\n").expect("write");
    std::fs::write(dir.join("data.yaml"), DATA_SYNCS).expect("write");
    let source = format!("sqlite://{}", setup.out.path().join("shop.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&format!("{source}?mode=rwc"))
        .await
        .expect("source");
    sqlx::raw_sql(
        "CREATE TABLE customers (email TEXT, plan TEXT, ltv INTEGER);
         INSERT INTO customers VALUES ('a@example.com', 'vip', 500),
           ('b@example.com', 'vip', 300), ('c@example.com', 'free', 20);",
    )
    .execute(&mut conn)
    .await
    .expect("seed the source");
    conn.close().await.expect("close");
    let project = dir.display().to_string();
    let with_data = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["-C", project.as_str()]);
        let source = source.clone();
        let all: Vec<String> = all.iter().map(|arg| arg.to_string()).collect();
        let setup = &setup;
        async move {
            let all: Vec<&str> = all.iter().map(String::as_str).collect();
            setup
                .run_with_env(&all, &[("DATABASE_URL", source.as_str())])
                .await
        }
    };
    ok(&with_data(&["apply", "--auto-approve"]).await, 0);
    // drift reads klsync's records and Klaviyo: no database needed.
    let drift = setup.in_project(&["drift", "--data"]).await;
    ok(&drift, 0);
    assert!(
        drift.stdout.starts_with(
            "No drift. Klaviyo matches what klsync last applied (data syncs included: 3 profile(s) and 2 list member(s) read back)."
        ),
        "{}",
        drift.stdout
    );

    setup.seed(|state| {
        let id_of = |state: &State, email: &str| {
            state
                .profiles
                .values()
                .find(|p| p.get_str("email") == Some(email))
                .expect("applied")
                .id
                .clone()
        };
        let (a, b) = (id_of(state, "a@example.com"), id_of(state, "b@example.com"));
        state.profiles.get_mut(&a).unwrap().attributes["properties"]["shop_plan"] =
            json!("edited by hand");
        let vip = state.lists.values_mut().find(|l| l.name == "VIP").unwrap();
        vip.members.remove(&b);
    });
    let cost = "Checking the data syncs against Klaviyo: 2 request(s) (get_profiles 1, get_profiles_for_list 1)";
    let drift = setup.in_project(&["drift", "--data"]).await;
    ok(&drift, 2);
    assert!(drift.stderr.starts_with(cost), "{}", drift.stderr);
    for expected in [
        "~ profiles.customers: 1 of 3 recorded profile(s) changed in Klaviyo",
        "    a@example.com shop_plan: \"vip\" → \"edited by hand\"",
        "- lists.vip.members: 1 of 2 recorded member(s) no longer on the list",
        "    b@example.com",
        "\nDrift: data syncs: 1 of 3 profile(s) changed, 1 of 2 list member(s) missing.",
    ] {
        assert!(
            drift.stdout.contains(expected),
            "{expected:?} in\n{}",
            drift.stdout
        );
    }
    let drift = setup
        .in_project(&["drift", "--data", "--format", "json"])
        .await;
    ok(&drift, 2);
    let report: Value = serde_json::from_str(&drift.stdout).expect("JSON report");
    assert_eq!(
        report["data"]["profiles"][0]["drift"],
        json!([{"identifier": "a@example.com", "property": "shop_plan",
                "applied": "vip", "live": "edited by hand"}])
    );
    assert_eq!(
        report["data"]["memberships"][0]["missing"],
        json!(["b@example.com"])
    );

    // The plain plan cannot see it; the full one plans restoring it.
    ok(&with_data(&["plan", "--detailed-exitcode"]).await, 0);
    let saved = setup.out.path().join("restore.json").display().to_string();
    let plan = with_data(&[
        "plan",
        "--refresh=full",
        "--detailed-exitcode",
        "--out",
        &saved,
    ])
    .await;
    ok(&plan, 2);
    assert!(plan.stderr.starts_with(cost), "{}", plan.stderr);
    for expected in [
        "full check: 3 recorded profile(s) read back, 1 changed in Klaviyo",
        "drift a@example.com shop_plan: applied \"vip\" but Klaviyo has \"edited by hand\"",
        "full check: 2 recorded member(s) looked up, 1 no longer on the list",
        "+ b@example.com",
    ] {
        assert!(
            plan.stdout.contains(expected),
            "{expected:?} in\n{}",
            plan.stdout
        );
    }
    ok(&with_data(&["apply", &saved]).await, 0);
    setup.seed(|state| {
        let a = state
            .profiles
            .values()
            .find(|p| p.get_str("email") == Some("a@example.com"))
            .unwrap();
        assert_eq!(a.attributes["properties"]["shop_plan"], json!("vip"));
        let b = state
            .profiles
            .values()
            .find(|p| p.get_str("email") == Some("b@example.com"))
            .unwrap()
            .id
            .clone();
        let vip = state.lists.values().find(|l| l.name == "VIP").unwrap();
        assert!(vip.members.contains_key(&b));
    });
    ok(&setup.in_project(&["drift", "--data"]).await, 0);
    ok(
        &with_data(&["plan", "--refresh=full", "--detailed-exitcode"]).await,
        0,
    );
}

/// A project with one list whose `members:` come from `SELECT email FROM customers WHERE plan =
/// 'vip'` in a SQLite source, and the means to change the source and run klsync with it.
struct MemberProject<'a> {
    setup: &'a Setup,
    source: String,
}

impl MemberProject<'_> {
    async fn new<'a>(setup: &'a Setup, mode: &str, vips: &[&str]) -> MemberProject<'a> {
        use sqlx::Connection as _;
        let dir = setup.dir();
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("klsync.yaml"), "version: 1\n").expect("write");
        let project = MemberProject {
            setup,
            source: format!("sqlite://{}", setup.out.path().join("shop.db").display()),
        };
        project.mode(mode);
        let mut conn = sqlx::SqliteConnection::connect(&format!("{}?mode=rwc", project.source))
            .await
            .expect("source");
        sqlx::raw_sql("CREATE TABLE customers (email TEXT, plan TEXT)")
            .execute(&mut conn)
            .await
            .expect("create the source");
        conn.close().await.expect("close");
        for email in vips {
            project
                .sql(&format!("INSERT INTO customers VALUES ('{email}', 'vip')"))
                .await;
        }
        project
    }

    fn mode(&self, mode: &str) {
        let manifest = format!(
            "lists:\n  - id: vip\n    name: VIP\n    members:\n      query: vips\n      \
             identify_by: email\n      mode: {mode}\nqueries:\n  vips:\n    \
             sql: SELECT email FROM customers WHERE plan = 'vip'\n"
        );
        std::fs::write(self.setup.dir().join("data.yaml"), manifest).expect("write");
    }

    async fn sql(&self, statement: &str) {
        use sqlx::Connection as _;
        let mut conn = sqlx::SqliteConnection::connect(&self.source)
            .await
            .expect("source");
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned()))
            .execute(&mut conn)
            .await
            .expect("change the source");
        conn.close().await.expect("close");
    }

    async fn run(&self, args: &[&str]) -> Finished {
        let dir = self.setup.dir().display().to_string();
        let mut all = args.to_vec();
        all.extend_from_slice(&["-C", dir.as_str()]);
        self.setup
            .run_with_env(&all, &[("DATABASE_URL", self.source.as_str())])
            .await
    }

    /// The profile id of `email`, asked through the API.
    async fn profile_id(&self, email: &str) -> String {
        let found = self
            .setup
            .api()
            .find_profiles_by(ProfileIdentifier::Email, &[email.to_owned()])
            .await
            .expect("lookup");
        found.first().expect("a profile").id.clone()
    }

    async fn list_id(&self) -> String {
        let list = self
            .setup
            .api()
            .find_list_by_name("VIP")
            .await
            .expect("lists");
        list.expect("the list exists").id
    }

    /// The profile ids on the list, read through the API.
    async fn member_ids(&self) -> BTreeSet<String> {
        use futures::TryStreamExt as _;
        let list_id = self.list_id().await;
        self.setup
            .api()
            .list_member_ids(&list_id)
            .try_collect()
            .await
            .expect("members")
    }

    /// Change a profile's email through the API (`PATCH /api/profiles/{id}`), as in Klaviyo's UI.
    async fn change_email(&self, profile_id: &str, email: &str) {
        let attributes = ProfileAttributes {
            email: Some(Some(email.to_owned())),
            ..ProfileAttributes::default()
        };
        self.setup
            .api()
            .update_profile(profile_id, &attributes, &[])
            .await
            .expect("update the profile");
    }
}

/// A list deleted in Klaviyo and created again by apply starts with no records: a member klsync
/// removed from the old list and later added to the new one by hand is nobody's business of
/// klsync's, not "back on the list".
async fn a_list_created_again_forgets_the_members_klsync_removed_from_the_old_one(
    backend: Backend,
) {
    let setup = Setup::new(backend).await;
    let project = MemberProject::new(
        &setup,
        "mirror",
        &["a@example.com", "b@example.com", "c@example.com"],
    )
    .await;
    ok(&project.run(&["apply", "--auto-approve"]).await, 0);
    project
        .sql("DELETE FROM customers WHERE email = 'c@example.com'")
        .await;
    ok(&project.run(&["apply", "--auto-approve"]).await, 0);
    let c = project.profile_id("c@example.com").await;

    let old_list = project.list_id().await;
    setup.seed(|state| assert!(state.delete_list(&old_list)));
    ok(&project.run(&["apply", "--auto-approve"]).await, 0);
    let new_list = project.list_id().await;
    assert_ne!(new_list, old_list);
    setup
        .api()
        .add_profiles_to_list(&new_list, std::slice::from_ref(&c))
        .await
        .expect("add by hand");

    let drift = project.run(&["drift", "--members"]).await;
    ok(&drift, 0);
    assert!(
        !drift.stdout.contains("on the list again"),
        "{}",
        drift.stdout
    );
}

fn contains_all(finished: &Finished, expected: &[&str]) {
    for line in expected {
        assert!(
            finished.stdout.contains(line),
            "{line:?} in\n{}\nstderr:\n{}",
            finished.stdout,
            finished.stderr
        );
    }
}

/// Mirror mode removes a member by the profile id it recorded when it added it, even after its
/// email was changed in Klaviyo; one whose profile was deleted is on no list and is forgotten. A
/// member recorded without a profile id (added while the list
/// was `add_only`) whose email was changed cannot be found: it is not forgotten as if removed
/// but kept with the reason, reported by apply (exit 3), plan and `drift --members`, and tried
/// again by every apply until it resolves; then nothing is left to plan.
async fn mirror_removal_goes_by_profile_id_and_one_it_cannot_resolve_is_kept_and_retried(
    backend: Backend,
) {
    let setup = Setup::new(backend).await;
    let project = MemberProject::new(&setup, "add_only", &["a@example.com", "c@example.com"]).await;
    ok(&project.run(&["apply", "--auto-approve"]).await, 0);
    project.mode("mirror");
    project
        .sql("INSERT INTO customers VALUES ('d@example.com', 'vip'), ('e@example.com', 'vip')")
        .await;
    ok(&project.run(&["apply", "--auto-approve"]).await, 0);
    let store = StateStore::connect(&setup.backend.url())
        .await
        .expect("state");
    let recorded: BTreeMap<String, Option<String>> = store
        .sync_members("vip")
        .await
        .expect("members")
        .into_iter()
        .map(|m| (m.identifier, m.profile_id))
        .collect();
    store.close().await;
    let (c, d) = (
        project.profile_id("c@example.com").await,
        project.profile_id("d@example.com").await,
    );
    assert_eq!(
        recorded["d@example.com"],
        Some(d.clone()),
        "a mirror add records the id"
    );
    assert_eq!(recorded["c@example.com"], None, "add_only records no id");

    // Two emails changed in Klaviyo, one profile deleted there (as its Data Privacy API does:
    // the emulator has no endpoint for it), the three rows gone from the query.
    project.change_email(&c, "c-new@example.com").await;
    project.change_email(&d, "d-new@example.com").await;
    let e = project.profile_id("e@example.com").await;
    setup.seed(|state| {
        state.profiles.remove(&e);
        for list in state.lists.values_mut() {
            list.members.remove(&e);
        }
    });
    project
        .sql("DELETE FROM customers WHERE email IN ('c@example.com', 'd@example.com', 'e@example.com')")
        .await;
    let plan = project.run(&["plan", "--detailed-exitcode"]).await;
    ok(&plan, 2);
    contains_all(&plan, &["lists.vip.members (1 rows): +0 add, -3 remove"]);
    let reason = "? c@example.com: no profile id recorded and no profile in Klaviyo has this email";
    let apply = project.run(&["apply", "--auto-approve"]).await;
    ok(&apply, 3);
    contains_all(
        &apply,
        &[
            "lists.vip.members: +0 added, -2 removed, 0 failed",
            "1 removal(s) could not be resolved: kept in klsync's record, tried again by the next apply",
            reason,
        ],
    );
    assert!(
        apply.stderr.contains("removals could not be resolved"),
        "{}",
        apply.stderr
    );
    let members = project.member_ids().await;
    assert!(!members.contains(&d), "removed by its recorded id");
    assert!(
        members.contains(&c),
        "still on the list, under its new email"
    );

    // Kept, shown by the plan as planned again, retried by the next apply.
    let plan = project.run(&["plan", "--detailed-exitcode"]).await;
    ok(&plan, 2);
    contains_all(
        &plan,
        &[
            "-1 remove",
            "1 of the removals could not be resolved last time: planned again",
            reason,
        ],
    );
    let drift = project.run(&["drift", "--members"]).await;
    ok(&drift, 2);
    contains_all(
        &drift,
        &[
            "? lists.vip.members: 1 removal(s) klsync could not make",
            "    c@example.com: no profile id recorded",
        ],
    );
    let again = project.run(&["apply", "--auto-approve"]).await;
    ok(&again, 3);
    contains_all(&again, &["-0 removed", reason]);

    // Resolvable again (the email restored): the next apply removes it, and nothing is left.
    project.change_email(&c, "c@example.com").await;
    let resolved = project.run(&["apply", "--auto-approve"]).await;
    ok(&resolved, 0);
    contains_all(
        &resolved,
        &["lists.vip.members: +0 added, -1 removed, 0 failed"],
    );
    assert!(!project.member_ids().await.contains(&c));
    ok(&project.run(&["plan", "--detailed-exitcode"]).await, 0);
    ok(&project.run(&["drift", "--members"]).await, 0);
}

/// `drift --members` reads each list whole (its cost printed first): a member removed by hand
/// is reported as gone, one klsync removed and added back by hand as on the list again; a clean
/// state reports nothing.
async fn drift_members_reads_the_lists_and_finds_removed_members_back_and_added_ones_gone(
    backend: Backend,
) {
    let setup = Setup::new(backend).await;
    let project = MemberProject::new(
        &setup,
        "mirror",
        &["a@example.com", "b@example.com", "c@example.com"],
    )
    .await;
    ok(&project.run(&["apply", "--auto-approve"]).await, 0);
    let cost = "Checking the data syncs against Klaviyo: at least 1 request(s) (get_profiles_for_list 1), at least ";
    let clean = project.run(&["drift", "--members"]).await;
    ok(&clean, 0);
    assert!(clean.stderr.starts_with(cost), "{}", clean.stderr);
    assert!(
        clean
            .stderr
            .contains("lists.vip.members is read whole (--members)"),
        "{}",
        clean.stderr
    );
    assert!(
        clean.stdout.starts_with(
            "No drift. Klaviyo matches what klsync last applied (data syncs included: 0 profile(s) and 3 list member(s) read back)."
        ),
        "{}",
        clean.stdout
    );

    // klsync removes c; then, by hand through the API, a is removed and c added back.
    project
        .sql("DELETE FROM customers WHERE email = 'c@example.com'")
        .await;
    ok(&project.run(&["apply", "--auto-approve"]).await, 0);
    let (a, c) = (
        project.profile_id("a@example.com").await,
        project.profile_id("c@example.com").await,
    );
    let list_id = project.list_id().await;
    let api = setup.api();
    api.remove_profiles_from_list(&list_id, std::slice::from_ref(&a))
        .await
        .expect("remove by hand");
    api.add_profiles_to_list(&list_id, std::slice::from_ref(&c))
        .await
        .expect("add back by hand");

    let drift = project.run(&["drift", "--members"]).await;
    ok(&drift, 2);
    contains_all(
        &drift,
        &[
            "- lists.vip.members: 1 of 2 recorded member(s) no longer on the list\n    a@example.com\n",
            "+ lists.vip.members: 1 member(s) klsync removed are on the list again\n    c@example.com\n",
            "\nDrift: data syncs: 1 of 2 list member(s) missing, 1 removed member(s) on the list again.",
        ],
    );
    let json = project
        .run(&["drift", "--members", "--format", "json"])
        .await;
    ok(&json, 2);
    let report: Value = serde_json::from_str(&json.stdout).expect("JSON report");
    assert_eq!(report["data"]["profiles"], json!([]));
    let list = &report["data"]["memberships"][0];
    assert_eq!(list["missing"], json!(["a@example.com"]));
    assert_eq!(list["back_on_list"], json!(["c@example.com"]));
    // The lookup check (`--data`) sees the missing member only.
    let data = project.run(&["drift", "--data"]).await;
    ok(&data, 2);
    assert!(
        !data.stdout.contains("on the list again"),
        "{}",
        data.stdout
    );
}
