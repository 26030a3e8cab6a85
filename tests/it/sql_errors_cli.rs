//! Issue 13: a failing data query is reported once, naming the sync, the query, where the
//! manifests declare it (`file:line:column`), the database's own message, and the place in the
//! user's SQL — never a line of PostgreSQL's source code.

use crate::support::project::{TempProject, klsync, run};
use klsync::emulator::{self, EmulatorConfig, RateLimitMode};

const MANIFEST: &str = "\
lists:
  - id: vip
    name: VIP
    members:
      query: big
      identify_by: email
queries:
  big:
    sql: |
      SELECT email
        FROM customerz
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_query_names_its_declaration_and_the_place_in_the_sql() {
    let emulator = emulator::start(EmulatorConfig {
        rate_limits: RateLimitMode::Off,
        ..EmulatorConfig::default()
    })
    .await
    .expect("start the emulator");
    let project = TempProject::new(&[("lists.yaml", MANIFEST)]);
    // The query fails before reading anything, so no schema of its own is needed.
    let Some(database) = klsync::state::testing::test_postgres_url().await else {
        return; // KLSYNC_TEST_POSTGRES_URL=skip: the developer opted out of PostgreSQL.
    };
    let plan = run(klsync()
        .args(["plan", "-C"])
        .arg(project.path())
        .env("KLAVIYO_API_KEY", "pk_emulator")
        .env("KLAVIYO_BASE_URL", &emulator.base_url)
        .env(
            "KLSYNC_STATE_URL",
            format!("sqlite://{}/state.db", project.path().display()),
        )
        .env("DATABASE_URL", &database));
    assert_eq!(plan.code, 1, "{}", plan.stderr);
    let error: Vec<&str> = plan
        .stderr
        .lines()
        .skip_while(|line| !line.starts_with("error:"))
        .collect();
    assert_eq!(
        error,
        [
            "error: members of list `vip`: query `big` (lists.yaml:8:3) failed: relation \
             \"customerz\" does not exist (at line 2, column 8 of the query)"
        ],
        "{}",
        plan.stderr
    );
    emulator.shutdown().await;
}
