//! Emulator mode `--job-delay` (issue 12): a Klaviyo whose bulk import jobs stay `queued`, then
//! `processing`, for a while (the spec names both states and gives no duration). klsync polls
//! them to the end: apply converges and the next plan is empty; a data change still plans an
//! update; a hand edit in Klaviyo is still found by `plan --refresh=full` and `drift --data`.
//! CI uses 2 s per state (4 s a job); `klsync emulator --job-delay 2m` behaves the same, slower.

use std::time::{Duration, Instant};

use crate::support::scenario::Scenario;
use klsync::emulator::{EmulatorConfig, RateLimitMode};
use serde_json::json;

const PROJECT: &str = "\
lists:
  - id: vip
    name: VIP
    members:
      query: big
      identify_by: email
      mode: mirror
profiles:
  - id: facts
    query: facts
    identify_by: email
    properties:
      shop_ltv: spend
queries:
  facts:
    sql: SELECT email, spend FROM customers
  big:
    sql: SELECT email FROM customers WHERE spend > 10
";

const JOB_DELAY: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_jobs_are_followed_to_their_end_and_everything_still_converges() {
    let config = EmulatorConfig {
        rate_limits: RateLimitMode::Off,
        job_delay: JOB_DELAY,
        ..EmulatorConfig::default()
    };
    let setup = Scenario::start(config, &[("shop.yaml", PROJECT)]).await;
    setup
        .data(
            "CREATE TABLE customers (email TEXT, spend INTEGER);
             INSERT INTO customers VALUES ('a@example.com', 5), ('b@example.com', 20),
                                          ('c@example.com', 30);",
        )
        .await;

    let started = Instant::now();
    let apply = setup.run(&["apply", "--auto-approve"]);
    assert_eq!(apply.code, 0, "{}", apply.stderr);
    // Two jobs (the profiles' and the members', side by side), each queued and processing for
    // JOB_DELAY.
    assert!(
        started.elapsed() >= 2 * JOB_DELAY,
        "{:?}: the jobs did not wait",
        started.elapsed()
    );
    let stats = setup.emulator.stats();
    assert!(
        stats.count("GET /api/profile-bulk-import-jobs/{job_id}") >= 4,
        "polled while queued and processing: {:?}",
        stats.by_operation
    );
    let plan = setup.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "{}\n{}", plan.stdout, plan.stderr);

    setup
        .data("UPDATE customers SET spend = 99 WHERE email = 'a@example.com'")
        .await;
    let plan = setup.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 2, "{}\n{}", plan.stdout, plan.stderr);
    assert!(plan.stdout.contains("a@example.com"), "{}", plan.stdout);
    let apply = setup.run(&["apply", "--auto-approve"]);
    assert_eq!(apply.code, 0, "{}", apply.stderr);
    assert_eq!(setup.run(&["plan", "--detailed-exitcode"]).code, 0);

    setup.emulator.seed(|state| {
        let b = state
            .profiles
            .values_mut()
            .find(|p| p.get_str("email") == Some("b@example.com"))
            .expect("applied");
        b.attributes["properties"]["shop_ltv"] = json!(1);
    });
    let drift = setup.run(&["drift", "--data"]);
    assert_eq!(drift.code, 2, "{}\n{}", drift.stdout, drift.stderr);
    assert!(
        drift.stdout.contains("b@example.com shop_ltv: 20 → 1"),
        "{}",
        drift.stdout
    );
    // Restored through a saved plan of the full check.
    let saved = setup.scratch("plan.json");
    let saved = saved.to_str().expect("utf-8");
    let plan = setup.run(&[
        "plan",
        "--refresh=full",
        "--detailed-exitcode",
        "--out",
        saved,
    ]);
    assert_eq!(plan.code, 2, "{}\n{}", plan.stdout, plan.stderr);
    let apply = setup.run(&["apply", saved]);
    assert_eq!(apply.code, 0, "{}", apply.stderr);
    assert_eq!(setup.run(&["drift", "--data"]).code, 0);
    setup.emulator.shutdown().await;
}
