//! Pacing at Klaviyo's real limits (issue 13): `cargo bench --bench apply_pace`.
//!
//! For projects of 10, 50 and 100 resources (lists, segments, tags and tag links) with a data
//! sync (a `profiles:` sync of `KLSYNC_BENCH_PROFILES` rows, default 1,000, and the members of
//! one list, `KLSYNC_BENCH_MEMBERS`, default 200), against a fresh in-process emulator at the
//! published limits (`--rate-limits real`, jobs done after 2 × 50 ms): runs the real `klsync
//! plan --format json` (its estimate) then `klsync apply --auto-approve`, timed from spawn to
//! exit, and sets them beside the least time the limits allow, computed here from the mix alone
//! (see [`minimum`]), not with klsync's simulator. Data and state are SQLite files in a temporary
//! directory.
//!
//! Each project is applied `KLSYNC_BENCH_RUNS` times (default 3), each time on a fresh emulator
//! and state; the table shows the median run. Prints one Markdown table; exits non-zero when
//! the median apply fails, meets a 429, or is more than 25 % off its estimate or 10 % above the
//! minimum.

#[allow(dead_code, unreachable_pub)]
#[path = "../tests/it/support/project.rs"]
mod project;

use std::process::Stdio;
use std::time::{Duration, Instant};

use klsync::emulator::{self, EmulatorConfig, RateLimitMode};
use klsync::klaviyo::Operation;
use sqlx::Connection;

/// Emulator: a job stays `queued`, then `processing`, this long each.
const JOB_DELAY: Duration = Duration::from_millis(50);

/// One project: its mix of resources.
#[derive(Debug, Clone, Copy)]
struct Mix {
    lists: usize,
    segments: usize,
    tags: usize,
    links: usize,
}

impl Mix {
    fn resources(self) -> usize {
        self.lists + self.segments + self.tags + self.links
    }

    /// Link requests per bucket: one per (tag, target kind), as `resource_mix` spreads them.
    fn link_requests(self) -> (u64, u64) {
        let mut lists = std::collections::BTreeSet::new();
        let mut segments = std::collections::BTreeSet::new();
        for i in 0..self.links {
            let tag = i % self.tags.max(1);
            if i % 2 == 0 {
                lists.insert(tag);
            } else {
                segments.insert(tag);
            }
        }
        (lists.len() as u64, segments.len() as u64)
    }
}

/// The least time `n` requests of `operation` take in Klaviyo's fixed windows, when the first
/// goes at the start of a window: bursts of the per-second limit each second until the minute's
/// allowance is used, then the next minute. The time is from the first request to the last.
fn fixed_window_seconds(operation: Operation, n: u64) -> f64 {
    if n == 0 {
        return 0.0;
    }
    let limit = operation.rate_limit();
    let burst = u64::from(limit.burst_per_second);
    let per_minute = u64::from(limit.steady_per_minute).min(burst * 60);
    let full_minutes = (n - 1) / per_minute;
    let last_minute = n - full_minutes * per_minute;
    (full_minutes * 60 + last_minute.div_ceil(burst) - 1) as f64
}

/// The least time the limits allow for `mix` and its data sync, whatever the client: tags,
/// lists and segments need nothing of each other, so they go side by side; a tag link needs its
/// tag and targets, so the links follow them (tag_lists and tag_segments side by side); the
/// data syncs need none of it but their list, created at once (lists go 10 a second), so they
/// run beside it all, and each job cannot be read back before the emulator has processed it
/// (2 × [`JOB_DELAY`]; the jobs of different syncs side by side). Each bucket's requests take
/// their time in fixed windows ([`fixed_window_seconds`]).
fn minimum(mix: Mix, jobs: u32) -> f64 {
    let (tag_lists, tag_segments) = mix.link_requests();
    let resources = fixed_window_seconds(Operation::CreateTag, mix.tags as u64)
        .max(fixed_window_seconds(
            Operation::CreateList,
            mix.lists as u64,
        ))
        .max(fixed_window_seconds(
            Operation::CreateSegment,
            mix.segments as u64,
        ));
    let links = fixed_window_seconds(Operation::TagLists, tag_lists)
        .max(fixed_window_seconds(Operation::TagSegments, tag_segments));
    let data = if jobs > 0 {
        (2 * JOB_DELAY).as_secs_f64()
    } else {
        0.0
    };
    (resources + links).max(data)
}

fn env_count(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let profiles = env_count("KLSYNC_BENCH_PROFILES", 1_000);
    let members = env_count("KLSYNC_BENCH_MEMBERS", 200);
    let mixes = [
        Mix {
            lists: 3,
            segments: 4,
            tags: 1,
            links: 2,
        },
        Mix {
            lists: 20,
            segments: 15,
            tags: 5,
            links: 10,
        },
        Mix {
            lists: 40,
            segments: 30,
            tags: 10,
            links: 20,
        },
    ];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // `KLSYNC_BENCH_ONLY=10,100`: only the projects of these sizes.
    let only: Vec<usize> = std::env::var("KLSYNC_BENCH_ONLY")
        .unwrap_or_default()
        .split(',')
        .filter_map(|size| size.trim().parse().ok())
        .collect();
    // `KLSYNC_BENCH_RUNS`: applies per project, each on a fresh emulator and state; the row
    // shown is the median run (by measured time).
    let runs = env_count("KLSYNC_BENCH_RUNS", 3).max(1);
    let mut ok = true;
    let mut rows = Vec::new();
    for mix in mixes
        .into_iter()
        .filter(|mix| only.is_empty() || only.contains(&mix.resources()))
    {
        let mut measured: Vec<Row> = (0..runs)
            .map(|_| runtime.block_on(run(mix, profiles, members)))
            .collect();
        measured.sort_by(|a, b| a.measured.total_cmp(&b.measured));
        let row = measured.swap_remove(measured.len() / 2);
        ok &= row.ok;
        rows.push(row);
    }
    println!(
        "\n| resources (lists, segments, tags, links) | requests | estimate | measured | minimum | measured / estimate | measured / minimum | 429s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for row in &rows {
        println!("{}", row.line);
    }
    println!(
        "\ndata sync in each: {profiles} profiles (one bulk job), {members} members of list l0 (lookups, one bulk job)"
    );
    if !ok {
        std::process::exit(1);
    }
}

struct Row {
    line: String,
    measured: f64,
    ok: bool,
}

async fn run(mix: Mix, profiles: u64, members: u64) -> Row {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_url = format!("sqlite://{}", dir.path().join("data.db").display());
    let state_url = format!("sqlite://{}", dir.path().join("state.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&format!("{data_url}?mode=rwc"))
        .await
        .expect("create the data");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE customers (email TEXT, plan TEXT);
         WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < {profiles})
         INSERT INTO customers SELECT 'c' || n || '@shop.test', 'plan' || (n % 3) FROM seq;
         CREATE TABLE vips (email TEXT);
         WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < {members})
         INSERT INTO vips SELECT 'c' || n || '@shop.test' FROM seq;"
    )))
    .execute(&mut conn)
    .await
    .expect("seed the data");
    conn.close().await.expect("close");

    let data = "\
profiles:
  - id: customers
    query: customers
    identify_by: email
    properties:
      shop_plan: plan
queries:
  customers:
    sql: SELECT email, plan FROM customers
  vips:
    sql: SELECT email FROM vips
";
    let mut manifest = project::resource_mix(mix.lists, mix.segments, mix.tags, mix.links, data);
    // The first list's members come from `vips`.
    manifest = manifest.replacen(
        "  - id: l0\n    name: List 0\n",
        "  - id: l0\n    name: List 0\n    members:\n      query: vips\n      identify_by: email\n      mode: mirror\n",
        1,
    );
    let project = project::TempProject::new(&[("project.yaml", &manifest)]);

    let emulator = emulator::start(EmulatorConfig {
        rate_limits: RateLimitMode::Real,
        job_delay: JOB_DELAY,
        ..EmulatorConfig::default()
    })
    .await
    .expect("start the emulator");
    let command = |args: &[&str]| {
        let mut command = project::klsync();
        command
            .args(args)
            .arg("-C")
            .arg(project.path())
            .env("KLAVIYO_BASE_URL", &emulator.base_url)
            .env("KLAVIYO_API_KEY", "pk_emulator")
            .env("KLSYNC_STATE_URL", &state_url)
            .env("DATABASE_URL", &data_url)
            .stdin(Stdio::null());
        command
    };

    let mut plan = command(&["plan", "--format", "json"]);
    let planned = tokio::task::spawn_blocking(move || project::run(&mut plan))
        .await
        .expect("join");
    assert_eq!(planned.code, 0, "plan failed: {}", planned.stderr);
    let plan: serde_json::Value = serde_json::from_str(&planned.stdout).expect("plan JSON");
    let estimate = plan["cost"]["estimated_seconds"]
        .as_u64()
        .expect("estimate");
    let data_requests: u64 = plan["data"]["requests"]
        .as_object()
        .map(|requests| requests.values().filter_map(|v| v.as_u64()).sum())
        .unwrap_or(0);
    let requests = plan["cost"]["total_requests"].as_u64().unwrap_or(0) + data_requests;

    let before = emulator.stats();
    let mut apply = command(&["apply", "--auto-approve", "--quiet"]);
    let started = Instant::now();
    let applied = tokio::task::spawn_blocking(move || project::run(&mut apply))
        .await
        .expect("join");
    let measured = started.elapsed().as_secs_f64();
    let after = emulator.stats();
    let limited = after.by_status.get("429").copied().unwrap_or(0)
        - before.by_status.get("429").copied().unwrap_or(0);
    let jobs = u32::from(profiles > 0) + u32::from(members > 0);
    let minimum = minimum(mix, jobs);
    let to_estimate = measured / estimate.max(1) as f64;
    let to_minimum = measured / minimum;
    let ok = applied.code == 0
        && limited == 0
        && (to_estimate - 1.0).abs() <= 0.25
        && to_minimum <= 1.10;
    if applied.code != 0 {
        eprintln!("apply failed ({}): {}", applied.code, applied.stderr);
    }
    let line = format!(
        "| {} ({}, {}, {}, {}) | {requests} | {estimate} s | {measured:.1} s | {minimum:.1} s | {to_estimate:.2} | {to_minimum:.2} | {limited} |{}",
        mix.resources(),
        mix.lists,
        mix.segments,
        mix.tags,
        mix.links,
        if ok { "" } else { " MISSED" }
    );
    eprintln!("{line}");
    Row { line, measured, ok }
}
