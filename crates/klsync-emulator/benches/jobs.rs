//! The emulator's bulk import throughput with a large account (issue 16):
//! `cargo bench -p klsync-emulator --bench jobs`.
//!
//! Seeds `KLSYNC_BENCH_STORED` profiles (default 1,000,000; each an email and two properties)
//! straight into an in-process emulator (rate limits off, jobs started at once), then posts
//! `KLSYNC_BENCH_JOBS` bulk import jobs of 10,000 profiles over HTTP (default 20; half of each
//! job updates stored profiles, half creates new ones), four in flight as klsync sends them, and
//! polls each until it completes. Prints one Markdown row: the emulator's own speed, which must
//! stay above Klaviyo's 150 jobs a minute for a benchmark's time to be klsync's and the pacing's.

use std::time::{Duration, Instant};

use klsync_emulator::{EmulatorConfig, RateLimitMode};
use serde_json::{Map, Value, json};

const PER_JOB: u64 = 10_000;
const IN_FLIGHT: usize = 4;

fn env_count(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// This process's peak resident set, in MiB (Linux `VmHWM`).
fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib / 1024)
}

fn profile(n: u64) -> Map<String, Value> {
    let mut attributes = Map::new();
    attributes.insert("email".into(), format!("p{n}@example.com").into());
    attributes.insert(
        "properties".into(),
        json!({"shop_plan": if n % 3 == 0 { "gold" } else { "silver" }, "shop_ltv": n % 1_000}),
    );
    attributes
}

fn job_body(job: u64, stored: u64) -> Value {
    let rows: Vec<Value> = (0..PER_JOB)
        .map(|i| {
            // Even rows update a stored profile, odd rows create one past the stored range.
            let n = if i % 2 == 0 {
                (job * PER_JOB + i) % stored.max(1)
            } else {
                stored + job * PER_JOB + i
            };
            json!({"type": "profile", "attributes": profile(n)})
        })
        .collect();
    json!({"data": {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": rows}}}})
}

fn main() {
    let stored = env_count("KLSYNC_BENCH_STORED", 1_000_000);
    let jobs = env_count("KLSYNC_BENCH_JOBS", 20);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let emulator = klsync_emulator::start(EmulatorConfig {
            rate_limits: RateLimitMode::Off,
            job_delay: Duration::ZERO,
            ..EmulatorConfig::default()
        })
        .await
        .expect("emulator");
        let seeding = Instant::now();
        emulator.seed(|state| {
            for n in 0..stored {
                state.create_profile(profile(n));
            }
        });
        let seeded_in = seeding.elapsed();
        let rss_seeded = peak_rss_mib();

        let http = reqwest::Client::new();
        let base = emulator.base_url.clone();
        let request = |method: reqwest::Method, path: String| {
            http.request(method, format!("{base}{path}"))
                .header("Authorization", "Klaviyo-API-Key pk_emulator")
                .header("revision", "2026-07-15")
                .header("accept", "application/vnd.api+json")
        };
        let started = Instant::now();
        let mut pending = Vec::new();
        let mut next = 0;
        let mut done = 0;
        while done < jobs {
            while pending.len() < IN_FLIGHT && next < jobs {
                let body = serde_json::to_vec(&job_body(next, stored)).expect("json");
                let reply = request(reqwest::Method::POST, "/api/profile-bulk-import-jobs".into())
                    .header("content-type", "application/vnd.api+json")
                    .body(body)
                    .send()
                    .await
                    .expect("post");
                assert_eq!(reply.status().as_u16(), 202, "{}", reply.text().await.unwrap_or_default());
                let created: Value = reply.json().await.expect("job");
                pending.push(created["data"]["id"].as_str().expect("id").to_owned());
                next += 1;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            let mut still = Vec::new();
            for id in pending {
                let reply = request(reqwest::Method::GET, format!("/api/profile-bulk-import-jobs/{id}"))
                    .send()
                    .await
                    .expect("poll");
                let job: Value = reply.json().await.expect("job");
                if job["data"]["attributes"]["status"] == "complete" {
                    assert_eq!(job["data"]["attributes"]["failed_count"], 0);
                    done += 1;
                } else {
                    still.push(id);
                }
            }
            pending = still;
        }
        let took = started.elapsed();
        let per_minute = jobs as f64 * 60.0 / took.as_secs_f64();
        let total = emulator.seed(|state| state.profiles.len());
        assert_eq!(total as u64, stored + jobs * PER_JOB / 2, "every new row created once");
        println!("| stored profiles | seeded in | RSS after seeding | jobs × 10,000 | wall | jobs/min | peak RSS |");
        println!("|---:|---:|---:|---:|---:|---:|---:|");
        println!(
            "| {stored} | {:.1} s | {rss_seeded} MiB | {jobs} | {:.1} s | {per_minute:.0} | {} MiB |",
            seeded_in.as_secs_f64(),
            took.as_secs_f64(),
            peak_rss_mib()
        );
        emulator.shutdown().await;
    });
}
