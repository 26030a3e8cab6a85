//! Issue 12: klsync converges on a Klaviyo that behaves in any way the spec allows, not only the
//! way the emulator first chose. Each scenario runs the real binary against an emulator started
//! in the test process in one of its modes (`klsync::emulator::modes`).

use std::process::{Command, Stdio};

use crate::support::backend::{Backend, ok, on_both_backends};
use crate::support::project::{Finished, TempProject, klsync};
use klsync::emulator::{
    self, EmulatorConfig, EmulatorHandle, ImportErrorShape, Modes, RateLimitMode,
};

/// One scenario: an emulator in some mode, a state backend, a project and a SQLite source.
struct Setup {
    emulator: EmulatorHandle,
    backend: Backend,
    project: TempProject,
    source: tempfile::TempDir,
}

impl Setup {
    async fn new(backend: Backend, modes: Modes, files: &[(&str, &str)]) -> Setup {
        let emulator = emulator::start(EmulatorConfig {
            rate_limits: RateLimitMode::Off,
            modes,
            ..EmulatorConfig::default()
        })
        .await
        .expect("start the emulator");
        Setup {
            emulator,
            backend,
            project: TempProject::new(files),
            source: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn source_url(&self) -> String {
        format!("sqlite://{}", self.source.path().join("shop.db").display())
    }

    async fn source(&self, sql: &str) {
        use sqlx::Connection as _;
        let mut conn = sqlx::SqliteConnection::connect(&format!("{}?mode=rwc", self.source_url()))
            .await
            .expect("sqlite");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut conn)
            .await
            .expect("sql");
        conn.close().await.expect("close");
    }

    /// Runs klsync in the project.
    async fn run(&self, args: &[&str]) -> Finished {
        self.run_in(self.project.path(), args).await
    }

    /// Runs klsync in the project directory `dir`.
    async fn run_in(&self, dir: &std::path::Path, args: &[&str]) -> Finished {
        let dir = dir.display().to_string();
        let mut all = args.to_vec();
        all.extend_from_slice(&["-C", dir.as_str()]);
        self.exec(&all).await
    }

    async fn exec(&self, args: &[&str]) -> Finished {
        let mut command: Command = klsync();
        command
            .args(args)
            .env("KLAVIYO_BASE_URL", &self.emulator.base_url)
            .env("KLAVIYO_API_KEY", "pk_emulator")
            .env("KLSYNC_STATE_URL", self.backend.url())
            .env("DATABASE_URL", self.source_url())
            .stdin(Stdio::null());
        tokio::task::spawn_blocking(move || Finished::from(command.output().expect("run klsync")))
            .await
            .expect("join")
    }
}

// ---- tolerant bulk import errors --------------------------------------------------------

const FACTS: &str = "\
profiles:
  - id: facts
    query: facts
    identify_by: email
    properties: {shop_plan: plan}
queries:
  facts:
    sql: SELECT email, plan FROM customers
";

/// The row Klaviyo refuses: klsync's own check lets it through (one `@`, a non-empty local part,
/// a dotted domain), Klaviyo's stricter one does not (a doubled dot in the local part).
const REFUSED: &str = "c5000..x@shop.test";

/// 10,000 customers in one bulk import job; one of them has an email Klaviyo refuses.
async fn ten_thousand_customers_one_refused(setup: &Setup) {
    setup
        .source(
            "CREATE TABLE customers (email TEXT, plan TEXT);
             WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 9999)
             INSERT INTO customers SELECT 'c' || i || '@shop.test', 'basic' FROM n;",
        )
        .await;
    setup
        .source(&format!(
            "UPDATE customers SET email = '{REFUSED}' WHERE email = 'c5000@shop.test'"
        ))
        .await;
}

/// One refused row of a job of 10,000 stays pending alone, whatever shape the import errors
/// take; fixing it in the source converges. Returns the emulator's request counts of the first
/// apply, by operation.
async fn one_refused_row_of_ten_thousand(
    backend: Backend,
    shape: ImportErrorShape,
) -> std::collections::BTreeMap<String, u64> {
    let modes = Modes {
        import_errors: shape,
        ..Modes::default()
    };
    let setup = Setup::new(backend, modes, &[("shop.yaml", FACTS)]).await;
    ten_thousand_customers_one_refused(&setup).await;

    let partial = setup.run(&["apply", "--auto-approve"]).await;
    ok(&partial, 3);
    let stats = setup.emulator.stats().by_operation;
    assert!(
        partial.stdout.contains("0 unset, 9999 recorded, 1 failed"),
        "{}",
        partial.stdout
    );
    assert!(
        partial.stdout.contains(&format!(
            "  ! {REFUSED}: Invalid input.: Invalid email address '{REFUSED}'"
        )),
        "Klaviyo's detail is reported: {}",
        partial.stdout
    );
    assert_eq!(
        setup.emulator.seed(|s| s.profiles.len()),
        9_999,
        "every other row was imported"
    );

    let pending = setup.run(&["plan", "--detailed-exitcode"]).await;
    ok(&pending, 2);
    assert!(
        pending
            .stdout
            .contains("profiles.facts (10000 rows): 1 new, 0 changed, 0 unset, 9999 unchanged"),
        "exactly the refused row is pending: {}",
        pending.stdout
    );

    setup
        .source(&format!(
            "UPDATE customers SET email = 'c5000@shop.test' WHERE email = '{REFUSED}'"
        ))
        .await;
    let fixed = setup.run(&["apply", "--auto-approve"]).await;
    ok(&fixed, 0);
    assert!(
        fixed
            .stdout
            .contains("profiles.facts: 1 sent in 1 job(s), 0 unset, 1 recorded, 0 failed"),
        "{}",
        fixed.stdout
    );
    ok(&setup.run(&["plan", "--detailed-exitcode"]).await, 0);
    assert_eq!(setup.emulator.seed(|s| s.profiles.len()), 10_000);
    stats
}

const BULK_JOBS: &str = "POST /api/profile-bulk-import-jobs";
const POLLS: &str = "GET /api/profile-bulk-import-jobs/{job_id}";
const ERROR_READS: &str = "GET /api/profile-bulk-import-jobs/{id}/import-errors";

/// Errors that name their row cost one job and one read of its errors.
async fn placed_refusals_cost_one_job(backend: Backend, shape: ImportErrorShape) {
    let stats = one_refused_row_of_ten_thousand(backend, shape).await;
    assert_eq!(stats.get(BULK_JOBS), Some(&1), "{stats:?}");
    assert_eq!(stats.get(ERROR_READS), Some(&1), "{stats:?}");
}

async fn nested_errors(backend: Backend) {
    placed_refusals_cost_one_job(backend, ImportErrorShape::Nested).await;
}

async fn flat_errors(backend: Backend) {
    placed_refusals_cost_one_job(backend, ImportErrorShape::Flat).await;
}

async fn pointer_errors(backend: Backend) {
    placed_refusals_cost_one_job(backend, ImportErrorShape::Pointer).await;
}

/// Errors that name nothing: the job's rows are sent again in halves until the refused row is
/// alone. With one refused row of n = 10,000 that is 2·⌈log2 n⌉ = 28 more jobs at most
/// (docs/sync.md), each polled, and one import-errors read per job that reports a failure (the
/// first and one per level: 1 + 14).
async fn opaque_errors(backend: Backend) {
    let stats = one_refused_row_of_ten_thousand(backend, ImportErrorShape::Opaque).await;
    let jobs = stats[BULK_JOBS];
    let levels = 10_000f64.log2().ceil() as u64;
    assert_eq!(levels, 14);
    assert_eq!(jobs, 1 + 2 * levels, "{stats:?}");
    assert_eq!(stats[ERROR_READS], 1 + levels, "{stats:?}");
    assert!(stats[POLLS] >= jobs, "{stats:?}");
    eprintln!(
        "opaque import errors, one refused row of 10,000: {jobs} jobs, {} polls, {} error reads",
        stats[POLLS], stats[ERROR_READS]
    );
}

/// Past `klsync::sync::ISOLATE_AT_MOST` failures the errors do not place, a job's rows are not
/// sent again in halves: they are all reported failed, saying why, and none is recorded.
async fn too_many_unplaced_refusals_are_not_isolated(backend: Backend) {
    let modes = Modes {
        import_errors: ImportErrorShape::Opaque,
        ..Modes::default()
    };
    let setup = Setup::new(backend, modes, &[("shop.yaml", FACTS)]).await;
    let bad = klsync::sync::ISOLATE_AT_MOST + 1;
    setup
        .source(&format!(
            "CREATE TABLE customers (email TEXT, plan TEXT);
             WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 99)
             INSERT INTO customers SELECT 'c' || i || '@shop.test', 'basic' FROM n;
             UPDATE customers SET email = 'c' || substr(email, 2, instr(email, '@') - 2) || '..x@shop.test'
               WHERE CAST(substr(email, 2, instr(email, '@') - 2) AS INTEGER) < {bad};"
        ))
        .await;
    let partial = setup.run(&["apply", "--auto-approve"]).await;
    ok(&partial, 3);
    assert!(
        partial
            .stdout
            .contains("profiles.facts: 100 sent in 1 job(s), 0 unset, 0 recorded, 100 failed"),
        "{}",
        partial.stdout
    );
    assert!(
        partial.stdout.contains(&format!(
            "Klaviyo refused {bad} of these 100 rows without saying which"
        )),
        "{}",
        partial.stdout
    );
    assert_eq!(setup.emulator.stats().count(BULK_JOBS), 1);
    let pending = setup.run(&["plan", "--detailed-exitcode"]).await;
    ok(&pending, 2);
    assert!(
        pending.stdout.contains("(100 rows): 100 new"),
        "{}",
        pending.stdout
    );
}

/// A list's adds go through the same jobs: a member Klaviyo refuses without saying which is
/// isolated, forgotten (not left recorded as sent), and only it is added again.
async fn a_refused_member_is_isolated_and_only_it_stays_pending(backend: Backend) {
    let manifest = "\
lists:
  - id: vip
    name: VIP
    members:
      query: vips
      identify_by: email
      mode: mirror
queries:
  vips:
    sql: SELECT email FROM customers
";
    let modes = Modes {
        import_errors: ImportErrorShape::Opaque,
        ..Modes::default()
    };
    let setup = Setup::new(backend, modes, &[("vip.yaml", manifest)]).await;
    setup
        .source(&format!(
            "CREATE TABLE customers (email TEXT);
             WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 29)
             INSERT INTO customers SELECT 'c' || i || '@shop.test' FROM n;
             UPDATE customers SET email = '{REFUSED}' WHERE email = 'c7@shop.test';"
        ))
        .await;
    let partial = setup.run(&["apply", "--auto-approve"]).await;
    ok(&partial, 3);
    assert!(
        partial
            .stdout
            .contains("lists.vip.members: +29 added, -0 removed, 1 failed"),
        "{}",
        partial.stdout
    );
    let members = setup.emulator.seed(|s| {
        s.lists
            .values()
            .find(|l| l.name == "VIP")
            .map_or(0, |l| l.members.len())
    });
    assert_eq!(members, 29);
    let pending = setup.run(&["plan", "--detailed-exitcode"]).await;
    ok(&pending, 2);
    assert!(
        pending
            .stdout
            .contains("lists.vip.members (30 rows): +1 add, -0 remove, 29 unchanged"),
        "{}",
        pending.stdout
    );
    setup
        .source(&format!(
            "UPDATE customers SET email = 'c7@shop.test' WHERE email = '{REFUSED}'"
        ))
        .await;
    ok(&setup.run(&["apply", "--auto-approve"]).await, 0);
    ok(&setup.run(&["plan", "--detailed-exitcode"]).await, 0);
}

on_both_backends!(
    nested_errors,
    flat_errors,
    a_refused_member_is_isolated_and_only_it_stays_pending
);

mod sqlite_only {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pointer_errors_name_their_row_by_index() {
        super::pointer_errors(Backend::sqlite()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn opaque_errors_are_isolated_by_halves() {
        super::opaque_errors(Backend::sqlite()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn too_many_unplaced_refusals_are_not_isolated() {
        super::too_many_unplaced_refusals_are_not_isolated(Backend::sqlite()).await;
    }
}

// ---- three-way comparison of segment definitions ------------------------------------------

const SEGMENT: &str = "\
lists:
  - id: vip
    name: VIP
segments:
  - id: big-spenders
    name: Big spenders
    definition:
      condition_groups:
        - conditions:
            - type: profile-property
              property: \"properties['ltv']\"
              filter: {type: numeric, operator: greater-than, value: 500}
";

/// The live definition of the one segment, and its id.
fn live_segment(setup: &Setup) -> (String, serde_json::Value) {
    setup.emulator.seed(|s| {
        let segment = s.segments.values().next().expect("a segment");
        (segment.id.clone(), segment.definition.clone())
    })
}

/// The filter's `value` as the account holds it.
fn live_value(setup: &Setup) -> serde_json::Value {
    live_segment(setup).1["condition_groups"][0]["conditions"][0]["filter"]["value"].clone()
}

/// Changes the segment's definition through Klaviyo's API, as someone in Klaviyo's UI would.
async fn edit_by_hand(setup: &Setup, value: u64) {
    use klsync::klaviyo::SegmentUpdate;
    let client = client_of(setup);
    // The definition as read, edited: in Klaviyo's own form when it canonicalises.
    let (id, mut definition) = live_segment(setup);
    definition["condition_groups"][0]["conditions"][0]["filter"]["value"] = value.into();
    let update = SegmentUpdate {
        definition: Some(definition),
        ..SegmentUpdate::default()
    };
    client.update_segment(&id, &update).await.expect("edit");
}

/// Apply, then nothing to do; a manifest change is planned and applied; an edit in Klaviyo is
/// drift, planned and restored; a record from before the pair was kept converges after one
/// write. `canonical`: the emulator reads definitions back canonicalised.
async fn segment_definitions_converge(backend: Backend, canonical: bool) {
    let modes = Modes {
        canonical_segments: canonical,
        ..Modes::default()
    };
    let setup = Setup::new(backend, modes, &[("manifest.yaml", SEGMENT)]).await;
    ok(&setup.run(&["apply", "--auto-approve"]).await, 0);
    assert_eq!(
        live_value(&setup).is_f64(),
        canonical,
        "{:?}",
        live_segment(&setup)
    );
    ok(&setup.run(&["plan", "--detailed-exitcode"]).await, 0);
    ok(&setup.run(&["drift"]).await, 0);

    // A manifest change still plans an update, and converges.
    setup.project.write(
        "manifest.yaml",
        &SEGMENT.replace("value: 500", "value: 600"),
    );
    let changed = setup.run(&["plan", "--detailed-exitcode"]).await;
    ok(&changed, 2);
    assert!(
        changed.stdout.contains("~ update segment.big-spenders")
            && changed.stdout.contains("+      value: 600"),
        "{}",
        changed.stdout
    );
    ok(&setup.run(&["drift"]).await, 0);
    ok(&setup.run(&["apply", "--auto-approve"]).await, 0);
    assert_eq!(live_value(&setup).as_f64(), Some(600.0));
    ok(&setup.run(&["plan", "--detailed-exitcode"]).await, 0);

    // An edit in Klaviyo is drift, and the plan restores it.
    edit_by_hand(&setup, 50).await;
    let drift = setup.run(&["drift"]).await;
    ok(&drift, 2);
    assert!(
        drift.stdout.contains("segment.big-spenders"),
        "{}",
        drift.stdout
    );
    assert!(drift.stdout.contains("definition"), "{}", drift.stdout);
    let restore = setup.run(&["plan", "--detailed-exitcode"]).await;
    ok(&restore, 2);
    assert!(restore.stdout.contains("definition"), "{}", restore.stdout);
    ok(&setup.run(&["apply", "--auto-approve"]).await, 0);
    assert_eq!(live_value(&setup).as_f64(), Some(600.0));
    ok(&setup.run(&["plan", "--detailed-exitcode"]).await, 0);
    ok(&setup.run(&["drift"]).await, 0);

    // A record written before klsync kept Klaviyo's answer compares directly: a rewriting
    // Klaviyo costs one more write, which records the pair; then it converges.
    forget_returned(&setup).await;
    let direct = setup.run(&["plan", "--detailed-exitcode"]).await;
    ok(&direct, if canonical { 2 } else { 0 });
    if canonical {
        ok(&setup.run(&["apply", "--auto-approve"]).await, 0);
    }
    ok(&setup.run(&["plan", "--detailed-exitcode"]).await, 0);
    let writes = setup.emulator.stats().count("PATCH /api/segments/{id}");
    assert_eq!(
        writes,
        3 + u64::from(canonical),
        "the manifest change, the edit by hand, the restore, and for a rewriting Klaviyo one \
         write for the old record: never one after a converged apply"
    );
}

/// Empties the `returned` column, as a state written before migration 0008 has it.
async fn forget_returned(setup: &Setup) {
    use sqlx::Connection as _;
    let sql = "UPDATE managed_resources SET returned = NULL";
    match &setup.backend {
        Backend::Sqlite(_) => {
            let mut conn = sqlx::SqliteConnection::connect(&setup.backend.url())
                .await
                .expect("state");
            sqlx::raw_sql(sql).execute(&mut conn).await.expect("sql");
            conn.close().await.expect("close");
        }
        Backend::Postgres(_) => {
            let mut conn = sqlx::PgConnection::connect(&setup.backend.url())
                .await
                .expect("state");
            sqlx::raw_sql(sql).execute(&mut conn).await.expect("sql");
            conn.close().await.expect("close");
        }
    }
}

async fn segments_read_back_as_sent(backend: Backend) {
    segment_definitions_converge(backend, false).await;
}

async fn segments_read_back_canonicalised(backend: Backend) {
    segment_definitions_converge(backend, true).await;
}

/// `klsync import` records the same pair as a write: the manifest it writes (Klaviyo's
/// canonical form, as read) and Klaviyo's values. The imported project plans nothing, an edit of
/// its manifest is planned, and an edit in Klaviyo is drift.
async fn an_imported_canonical_segment_converges(backend: Backend) {
    let modes = Modes {
        canonical_segments: true,
        ..Modes::default()
    };
    let setup = Setup::new(backend, modes, &[]).await;
    // Created through the API, so stored canonicalised, then imported into a new project.
    create_by_hand(&setup).await;
    let out = setup.project.path().join("imported");
    let dir = out.display().to_string();
    ok(&setup.exec(&["import", "--out", &dir]).await, 0);
    ok(
        &setup.run_in(&out, &["plan", "--detailed-exitcode"]).await,
        0,
    );
    ok(&setup.run_in(&out, &["drift"]).await, 0);
    let segments = std::fs::read_to_string(out.join("segments.yaml")).expect("segments.yaml");
    assert!(segments.contains("value: 500.0"), "{segments}");
    std::fs::write(
        out.join("segments.yaml"),
        segments.replace("value: 500.0", "value: 600"),
    )
    .expect("edit");
    ok(
        &setup.run_in(&out, &["plan", "--detailed-exitcode"]).await,
        2,
    );
    ok(&setup.run_in(&out, &["apply", "--auto-approve"]).await, 0);
    ok(
        &setup.run_in(&out, &["plan", "--detailed-exitcode"]).await,
        0,
    );
    edit_by_hand(&setup, 50).await;
    ok(&setup.run_in(&out, &["drift"]).await, 2);
    ok(
        &setup.run_in(&out, &["plan", "--detailed-exitcode"]).await,
        2,
    );
}

/// Adopting a segment Klaviyo holds in its own form records the pair too: the adoption writes
/// the manifest's definition once (the direct comparison, with nothing recorded yet, sees
/// Klaviyo's form as different), and from then on the project is in step.
async fn an_adopted_canonical_segment_converges(backend: Backend) {
    let modes = Modes {
        canonical_segments: true,
        ..Modes::default()
    };
    let setup = Setup::new(backend, modes, &[("manifest.yaml", SEGMENT)]).await;
    create_by_hand(&setup).await;
    let adopt = setup.run(&["plan", "--detailed-exitcode"]).await;
    ok(&adopt, 2);
    assert!(
        adopt.stdout.contains("= adopt segment.big-spenders"),
        "{}",
        adopt.stdout
    );
    ok(&setup.run(&["apply", "--auto-approve"]).await, 0);
    ok(&setup.run(&["plan", "--detailed-exitcode"]).await, 0);
    ok(&setup.run(&["drift"]).await, 0);
    edit_by_hand(&setup, 50).await;
    ok(&setup.run(&["drift"]).await, 2);
}

/// Creates the segment of [`SEGMENT`] through Klaviyo's API.
async fn create_by_hand(setup: &Setup) {
    let definition: serde_json::Value = serde_json::json!({"condition_groups": [{"conditions": [{
        "type": "profile-property",
        "property": "properties['ltv']",
        "filter": {"type": "numeric", "operator": "greater-than", "value": 500}
    }]}]});
    client_of(setup)
        .create_segment("Big spenders", &definition, false)
        .await
        .expect("create");
}

fn client_of(setup: &Setup) -> klsync::klaviyo::KlaviyoClient {
    let mut config = klsync::klaviyo::ClientConfig::new(
        setup.emulator.base_url.clone(),
        klsync::settings::Secret::new("pk_emulator"),
    );
    config.rate_limit_factor = None;
    klsync::klaviyo::KlaviyoClient::new(config).expect("client")
}

on_both_backends!(
    segments_read_back_as_sent,
    segments_read_back_canonicalised,
    an_imported_canonical_segment_converges,
    an_adopted_canonical_segment_converges
);
