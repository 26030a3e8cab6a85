//! docs/segments.md (issue 13): every example there is a manifest klsync accepts, together they
//! cover every condition kind of Klaviyo's segment definition schema, and applied to the
//! emulator they converge, including a segment that names a list the same apply creates by
//! its manifest id.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::support::scenario::Scenario;
use klsync::emulator::{EmulatorConfig, RateLimitMode};
use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The ```yaml blocks of docs/segments.md, in order.
fn examples() -> Vec<String> {
    let doc = std::fs::read_to_string(root().join("docs/segments.md")).unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```yaml") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), text) => {
                block.push_str(text);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "docs/segments.md: unclosed code block");
    blocks
}

fn project_files(blocks: &[String]) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = vec![(PathBuf::from("klsync.yaml"), b"version: 1\n".to_vec())];
    for (i, block) in blocks.iter().enumerate() {
        files.push((
            PathBuf::from(format!("example-{i}.yaml")),
            block.clone().into_bytes(),
        ));
    }
    files
}

/// The condition variants of the vendored schema (the `oneOf` of a group's conditions), each
/// compiled on its own.
fn condition_variants() -> BTreeMap<String, jsonschema::Validator> {
    let text = std::fs::read_to_string(
        root().join("schemas/vendor/klaviyo-segment-definition.schema.json"),
    )
    .unwrap();
    let schema: Value = serde_json::from_str(&text).unwrap();
    let defs = &schema["$defs"];
    defs["ConditionGroup"]["properties"]["conditions"]["items"]["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|variant| {
            let reference = variant["$ref"].as_str().unwrap();
            let name = reference.rsplit('/').next().unwrap().to_owned();
            let own = serde_json::json!({"$ref": reference, "$defs": defs});
            (name, jsonschema::validator_for(&own).unwrap())
        })
        .collect()
}

#[test]
fn every_example_validates_and_together_they_cover_every_condition_kind() {
    let blocks = examples();
    assert!(blocks.len() >= 6, "docs/segments.md has its examples");
    for (i, block) in blocks.iter().enumerate() {
        let files = project_files(std::slice::from_ref(block));
        if let Err(err) = klsync::manifest::load_sources(Path::new("/docs"), &files) {
            panic!("docs/segments.md example {i} does not validate: {err:?}\n{block}");
        }
    }
    let variants = condition_variants();
    let mut covered: BTreeMap<&str, usize> = BTreeMap::new();
    for block in &blocks {
        let manifest: Value = serde_yaml::from_str(block).unwrap();
        for segment in manifest["segments"].as_array().into_iter().flatten() {
            for group in segment["definition"]["condition_groups"]
                .as_array()
                .unwrap()
            {
                for condition in group["conditions"].as_array().unwrap() {
                    let matched: Vec<&str> = variants
                        .iter()
                        .filter(|(_, validator)| validator.is_valid(condition))
                        .map(|(name, _)| name.as_str())
                        .collect();
                    assert_eq!(
                        matched.len(),
                        1,
                        "{}: {condition} matches {matched:?}",
                        segment["id"]
                    );
                    *covered.entry(matched[0]).or_default() += 1;
                }
            }
        }
    }
    let missing: Vec<&String> = variants
        .keys()
        .filter(|name| !covered.contains_key(name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/segments.md has no example of {missing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_examples_apply_and_a_list_named_by_manifest_id_gets_its_new_id() {
    let blocks = examples();
    let named: Vec<(String, String)> = blocks
        .iter()
        .enumerate()
        .map(|(i, block)| (format!("example-{i}.yaml"), block.clone()))
        .collect();
    let files: Vec<(&str, &str)> = named
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let config = EmulatorConfig {
        rate_limits: RateLimitMode::Off,
        ..EmulatorConfig::default()
    };
    let setup = Scenario::start(config, &files).await;
    let klsync_run = |args: &[&str]| setup.run(args);

    let plan = klsync_run(&["plan"]);
    assert_eq!(plan.code, 0, "{}{}", plan.stdout, plan.stderr);
    // The list does not exist yet: the plan shows where its id will go.
    assert!(
        plan.stdout.contains("${list.newsletter}"),
        "{}",
        plan.stdout
    );

    let apply = klsync_run(&["apply", "--auto-approve"]);
    assert_eq!(apply.code, 0, "{}{}", apply.stdout, apply.stderr);

    let (newsletter, vip, members, not_vip) = setup.emulator.seed(|state| {
        let list = |name: &str| {
            state
                .lists
                .values()
                .find(|l| l.name == name)
                .map(|l| l.id.clone())
                .unwrap()
        };
        let segment = |name: &str| {
            state
                .segments
                .values()
                .find(|s| s.name == name)
                .map(|s| s.definition.clone())
                .unwrap()
        };
        (
            list("Newsletter"),
            list("VIP customers"),
            segment("Newsletter members who joined this year"),
            segment("Not in VIP"),
        )
    });
    let group_ids = |definition: &Value| {
        definition["condition_groups"][0]["conditions"][0]["group_ids"].clone()
    };
    assert_eq!(group_ids(&members), serde_json::json!([newsletter]));
    assert_eq!(group_ids(&not_vip), serde_json::json!([vip]));

    let again = klsync_run(&["plan", "--detailed-exitcode"]);
    assert_eq!(
        again.code, 0,
        "converged:\n{}{}",
        again.stdout, again.stderr
    );

    // Renaming the list keeps its id and the segment's reference: still nothing for the segment.
    let first = &named[0].1;
    setup.project.write(
        &named[0].0,
        &first.replace("name: Newsletter\n", "name: Weekly newsletter\n"),
    );
    let renamed = klsync_run(&["plan", "--format", "json"]);
    assert_eq!(renamed.code, 0, "{}", renamed.stderr);
    let plan: Value = serde_json::from_str(&renamed.stdout).unwrap();
    let addresses: Vec<&str> = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["address"].as_str().unwrap())
        .collect();
    assert_eq!(addresses, ["list.newsletter"], "{}", renamed.stdout);
}
