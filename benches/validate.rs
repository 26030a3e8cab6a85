//! `load_project` on a large generated project: 1,000 resources across 100 files.
//!
//! Run with `cargo bench --bench validate`. Prints min / median / max over several iterations.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use klsync::manifest::load_project;

const FILES: usize = 100;
const ITERATIONS: usize = 10;

/// Per file: 4 lists, 4 segments, 1 profile sync and 1 query = 10 resources.
fn write_project(dir: &Path) {
    std::fs::write(dir.join("klsync.yaml"), "version: 1\n").unwrap();
    let mut tags = String::from("tags: [seasonal]\ntag_groups:\n");
    for g in 0..10 {
        let _ = writeln!(
            tags,
            "  - name: group-{g}\n    exclusive: {}\n    tags: [{}]",
            g % 2 == 0,
            (0..20)
                .map(|t| format!("t{t}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    std::fs::write(dir.join("tags.yaml"), tags).unwrap();
    for f in 0..FILES {
        let mut text = String::from("lists:\n");
        for l in 0..4 {
            let _ = writeln!(
                text,
                "  - id: list-{f}-{l}\n    name: List {f} {l}\n    tags: [seasonal, group-{}/t{l}]\n    members:\n      query: q-{f}\n      identify_by: email\n      mode: mirror\n      max_removals: 5%",
                f % 10
            );
        }
        text.push_str("segments:\n");
        for s in 0..4 {
            let _ = writeln!(
                text,
                "  - id: seg-{f}-{s}\n    name: Segment {f} {s}\n    tags: [group-{}/t{s}]\n    definition:\n      condition_groups:\n        - conditions:\n            - type: profile-property\n              property: \"properties['p{f}']\"\n              filter: {{type: numeric, operator: greater-than, value: {s}}}\n            - type: profile-marketing-consent\n              consent: {{channel: email, can_receive_marketing: true, consent_status: {{subscription: any}}}}",
                f % 10
            );
        }
        let _ = writeln!(
            text,
            "profiles:\n  - id: sync-{f}\n    query: q-{f}\n    identify_by: email\n    properties: {{p{f}: value}}\nqueries:\n  q-{f}:\n    sql: select email, value from t where shard = $1\n    params: [{f}]"
        );
        let sub = dir.join(format!("part-{}", f % 10));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join(format!("file-{f:03}.yaml")), text).unwrap();
    }
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_project(dir.path());
    // Warm-up: compiles the JSON Schemas once, as any real run does on first use.
    let project = load_project(dir.path()).expect("generated project is valid");
    let merged = project.merged();
    let resources =
        merged.lists.len() + merged.segments.len() + merged.profiles.len() + merged.queries.len();
    let mut times: Vec<Duration> = (0..ITERATIONS)
        .map(|_| {
            let start = Instant::now();
            let project = load_project(dir.path()).expect("valid");
            std::hint::black_box(project.digest());
            start.elapsed()
        })
        .collect();
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "load_project + digest: {resources} resources in {} files",
        project.files.len()
    );
    println!("| iterations | min ms | median ms | max ms |");
    println!("|-----------:|-------:|----------:|-------:|");
    println!(
        "| {ITERATIONS} | {:.1} | {:.1} | {:.1} |",
        ms(times[0]),
        ms(times[ITERATIONS / 2]),
        ms(times[ITERATIONS - 1])
    );
}
