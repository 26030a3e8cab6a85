//! The data-sync engine against real databases (SQLite and PostgreSQL as both the source
//! `DATABASE_URL` and the state store, MariaDB as the source) and the emulator as Klaviyo.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::support::recorder::{Interception, Recorder};
use crate::support::source::{self, TestMySql};
use klsync::emulator::{self, EmulatorConfig, EmulatorHandle, RateLimitMode};
use klsync::klaviyo::{ClientConfig, KlaviyoClient};
use klsync::manifest::types::{
    IdentifyBy, ListSpec, ManifestFile, MaxRemovals, MembershipMode, MembershipSpec, OnMissingRow,
    ProfileSyncSpec, QuerySpec,
};
use klsync::settings::Secret;
use klsync::sql::{QueryManager, QueryOptions, SqlError};
use klsync::state::testing::TestPostgres;
use klsync::state::{MemberOrigin, StateStore, SyncRowRecord};
use klsync::sync::{self, DataPlan, SyncError};
use serde_json::{Value, json};
use sqlx::Connection;

const BULK_JOBS: &str = "POST /api/profile-bulk-import-jobs";

/// A source database with the customers table, and a state store, on one backend.
struct Db {
    url: String,
    state: StateStore,
    queries: QueryManager,
    _dir: Option<tempfile::TempDir>,
    _pg: Option<TestPostgres>,
    _mysql: Option<TestMySql>,
}

impl Db {
    async fn sqlite() -> Db {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("source.db").display());
        let state_url = format!("sqlite://{}", dir.path().join("state.db").display());
        sqlx::SqliteConnection::connect(&format!("{url}?mode=rwc"))
            .await
            .unwrap()
            .close()
            .await
            .unwrap();
        Db::finish(url, &state_url, Some(dir), None, None).await
    }

    async fn postgres() -> Db {
        let pg = TestPostgres::create().await.expect("test PostgreSQL");
        let url = pg.url().to_string();
        Db::finish(url.clone(), &url, None, Some(pg), None).await
    }

    /// The source in a MariaDB database of its own, the state in SQLite; `None` when
    /// `KLSYNC_TEST_MYSQL_URL` is unset.
    async fn mysql() -> Option<Db> {
        let mysql = TestMySql::create().await?;
        let dir = tempfile::tempdir().unwrap();
        let state_url = format!("sqlite://{}", dir.path().join("state.db").display());
        let url = mysql.url().to_string();
        Some(Db::finish(url, &state_url, Some(dir), None, Some(mysql)).await)
    }

    async fn finish(
        url: String,
        state_url: &str,
        dir: Option<tempfile::TempDir>,
        pg: Option<TestPostgres>,
        mysql: Option<TestMySql>,
    ) -> Db {
        let db = Db {
            state: StateStore::connect(state_url).await.unwrap(),
            queries: QueryManager::connect(&Secret::new(url.clone()), QueryOptions::default())
                .await
                .unwrap(),
            url,
            _dir: dir,
            _pg: pg,
            _mysql: mysql,
        };
        // MySQL's TEXT holds 64 KB; the large-profile scenario needs more.
        let text = if db._mysql.is_some() {
            "LONGTEXT"
        } else {
            "TEXT"
        };
        db.exec(&format!(
            "CREATE TABLE customers (email TEXT, plan {text}, ltv BIGINT, active BOOLEAN)"
        ))
        .await;
        db
    }

    async fn exec(&self, sql: &str) {
        source::execute(&self.url, sql).await;
    }

    async fn count(&self, sql: &str) -> i64 {
        use futures::StreamExt;
        let rows: Vec<_> = self.queries.execute_query(sql, &[]).collect().await;
        let row = rows.into_iter().next().unwrap().unwrap();
        row.values().next().unwrap().as_i64().unwrap()
    }

    /// Insert customers `c{from}@shop.test` .. `c{to-1}@shop.test`, plan `basic`, ltv = n.
    async fn insert_customers(&self, from: u32, to: u32) {
        let numbers: Vec<u32> = (from..to).collect();
        for batch in numbers.chunks(1000) {
            let values: Vec<String> = batch
                .iter()
                .map(|n| format!("('c{n}@shop.test', 'basic', {n}, TRUE)"))
                .collect();
            self.exec(&format!(
                "INSERT INTO customers (email, plan, ltv, active) VALUES {}",
                values.join(", ")
            ))
            .await;
        }
    }
}

async fn emulator(job_delay: Duration) -> (EmulatorHandle, KlaviyoClient) {
    let handle = emulator::start(EmulatorConfig {
        rate_limits: RateLimitMode::Off,
        job_delay,
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let client = client_of(&handle.base_url);
    (handle, client)
}

/// An unpaced client of the emulator (or of a proxy in front of it).
fn client_of(base_url: &str) -> KlaviyoClient {
    let mut config = ClientConfig::new(base_url.to_string(), Secret::new("pk_emulator"));
    config.rate_limit_factor = None;
    config.backoff_base = Duration::from_millis(10);
    KlaviyoClient::new(config).unwrap()
}

/// A client whose bulk import jobs go wrong through a proxy in front of the emulator:
/// `intercept` picks, by method and path, the requests it takes over.
async fn misbehaving_client(
    handle: &EmulatorHandle,
    intercept: impl Fn(&str, &str) -> Option<Interception> + Send + Sync + 'static,
) -> KlaviyoClient {
    let proxy = Recorder::intercepting(&handle.base_url, Arc::new(intercept)).await;
    client_of(&proxy.base_url)
}

/// Wait (at most 10 s) until Klaviyo has processed what it accepted.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn query(sql: &str) -> QuerySpec {
    QuerySpec {
        sql: sql.to_string(),
        params: Vec::new(),
        description: None,
    }
}

fn profile_manifest(sql: &str, on_missing_row: OnMissingRow) -> ManifestFile {
    ManifestFile {
        profiles: vec![ProfileSyncSpec {
            id: "customers".into(),
            query: "customers".into(),
            identify_by: IdentifyBy::Email,
            properties: BTreeMap::from([
                ("plan".to_string(), "plan".to_string()),
                ("ltv".to_string(), "ltv".to_string()),
            ]),
            on_missing_row,
        }],
        queries: BTreeMap::from([("customers".to_string(), query(sql))]),
        ..ManifestFile::default()
    }
}

fn member_manifest(mode: MembershipMode, max_removals: Option<MaxRemovals>) -> ManifestFile {
    ManifestFile {
        lists: vec![ListSpec {
            id: "vip".into(),
            name: "VIP".into(),
            opt_in_process: None,
            tags: Vec::new(),
            members: Some(MembershipSpec {
                query: "vips".into(),
                identify_by: IdentifyBy::Email,
                mode,
                max_removals,
            }),
            prevent_destroy: false,
        }],
        queries: BTreeMap::from([(
            "vips".to_string(),
            query("SELECT email FROM customers WHERE plan = 'vip' ORDER BY email"),
        )]),
        ..ManifestFile::default()
    }
}

async fn plan(db: &Db, manifest: &ManifestFile, lists: &BTreeMap<String, String>) -> DataPlan {
    sync::plan_data(
        manifest,
        lists,
        &db.queries,
        &db.state,
        None,
        &Default::default(),
    )
    .await
    .unwrap()
}

/// The emulator's profile with this email: its properties.
fn live_properties(handle: &EmulatorHandle, email: &str) -> Option<Value> {
    handle.seed(|s| {
        s.profiles
            .values()
            .find(|p| p.get_str("email") == Some(email))
            .map(|p| p.attributes.get("properties").cloned().unwrap_or(json!({})))
    })
}

fn list_member_emails(handle: &EmulatorHandle, list_id: &str) -> Vec<String> {
    handle.seed(|s| {
        let mut emails: Vec<String> = s.lists[list_id]
            .members
            .keys()
            .filter_map(|id| s.profiles[id].get_str("email").map(str::to_string))
            .collect();
        emails.sort();
        emails
    })
}

// ---- scenarios ------------------------------------------------------------------------------

async fn three_changes_of_ten_thousand(db: Db) {
    let (handle, client) = emulator(Duration::from_millis(20)).await;
    db.insert_customers(0, 10_000).await;
    let manifest = profile_manifest(
        "SELECT email, plan, ltv FROM customers ORDER BY email",
        OnMissingRow::Keep,
    );
    let none = BTreeMap::new();
    let first = plan(&db, &manifest, &none).await;
    assert_eq!(first.profiles[0].counts.new, 10_000);
    assert_eq!(first.requests.get("bulk_import_profiles"), Some(&1));
    let report = sync::apply_data(
        &first,
        &manifest,
        &none,
        &db.queries,
        &client,
        &db.state,
        false,
    )
    .await
    .unwrap();
    assert_eq!(report.profiles[0].recorded, 10_000);
    assert_eq!(handle.stats().count(BULK_JOBS), 1);
    assert_eq!(
        live_properties(&handle, "c42@shop.test"),
        Some(json!({"plan": "basic", "ltv": 42}))
    );

    db.exec("UPDATE customers SET plan = 'gold' WHERE email IN ('c1@shop.test', 'c2@shop.test')")
        .await;
    db.exec("UPDATE customers SET ltv = 999 WHERE email = 'c3@shop.test'")
        .await;
    let second = plan(&db, &manifest, &none).await;
    let counts = second.profiles[0].counts;
    assert_eq!(
        (counts.new, counts.changed, counts.unchanged, counts.unset),
        (0, 3, 9_997, 0)
    );
    assert_eq!(second.profiles[0].diff_sample.len(), 3);
    let ltv = second.profiles[0]
        .diff_sample
        .iter()
        .find(|row| row.identifier == "c3@shop.test")
        .unwrap();
    assert_eq!(ltv.changes.len(), 1);
    assert_eq!(
        (ltv.changes[0].before.clone(), ltv.changes[0].after.clone()),
        (Some(json!(3)), Some(json!(999)))
    );
    assert!(sync::render_text(&second).contains("3 changed"));

    let before = handle.stats();
    let report = sync::apply_data(
        &second,
        &manifest,
        &none,
        &db.queries,
        &client,
        &db.state,
        false,
    )
    .await
    .unwrap();
    let after = handle.stats();
    assert_eq!(after.count(BULK_JOBS) - before.count(BULK_JOBS), 1);
    assert_eq!(report.profiles[0].sent, 3);
    assert!(report.drift.is_empty(), "{:?}", report.drift);
    let job_id = &report.profiles[0].jobs[0];
    let job_size = handle.seed(|s| s.jobs[job_id].total_count);
    assert_eq!(job_size, 3);
    assert_eq!(
        live_properties(&handle, "c1@shop.test"),
        Some(json!({"plan": "gold", "ltv": 1}))
    );
    assert_eq!(
        live_properties(&handle, "c3@shop.test"),
        Some(json!({"plan": "basic", "ltv": 999}))
    );
    let third = plan(&db, &manifest, &none).await;
    assert!(!third.has_changes());
    assert_eq!(third.profiles[0].counts.unchanged, 10_000);
}

async fn invalid_rows_are_reported_and_not_sent(db: Db) {
    let (handle, client) = emulator(Duration::from_millis(10)).await;
    db.exec(
        "INSERT INTO customers (email, plan, ltv, active) VALUES \
         ('ok@shop.test', 'basic', 1, TRUE), ('not-an-email', 'basic', 2, TRUE), \
         (NULL, 'basic', 3, TRUE), ('twin@shop.test', 'a', 4, TRUE), \
         (' TWIN@shop.test ', 'b', 5, TRUE)",
    )
    .await;
    let manifest = profile_manifest(
        "SELECT email, plan, ltv FROM customers ORDER BY ltv",
        OnMissingRow::Keep,
    );
    let none = BTreeMap::new();
    let planned = plan(&db, &manifest, &none).await;
    let sync_plan = &planned.profiles[0];
    assert_eq!(sync_plan.counts.new, 1);
    assert_eq!(sync_plan.counts.rejected, 4);
    let reasons: Vec<&str> = sync_plan
        .rejected_sample
        .iter()
        .map(|r| r.reason.as_str())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("invalid email")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.contains("missing")), "{reasons:?}");
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("duplicate identifier twin@shop.test")),
        "{reasons:?}"
    );
    let report = sync::apply_data(
        &planned,
        &manifest,
        &none,
        &db.queries,
        &client,
        &db.state,
        false,
    )
    .await
    .unwrap();
    assert_eq!(report.profiles[0].sent, 1);
    let emails: Vec<String> = handle.seed(|s| {
        s.profiles
            .values()
            .filter_map(|p| p.get_str("email").map(str::to_string))
            .collect()
    });
    assert_eq!(emails, vec!["ok@shop.test".to_string()]);
    let sent: u64 = handle.seed(|s| s.jobs.values().map(|j| j.total_count).sum());
    assert_eq!(sent, 1);
}

/// Klaviyo refuses a row klsync considers valid. Here the refusal is injected: while the job is
/// queued, the test corrupts one profile of it (`properties` becomes a string), which Klaviyo
/// answers with an import error carrying the original payload, as it would for any row-level
/// refusal. (`tests/it/convergence.rs` has refusals of emails Klaviyo checks more strictly than
/// klsync, in every shape of import error.)
async fn rows_klaviyo_rejected_are_retried_then_recorded(db: Db) {
    let (handle, client) = emulator(Duration::from_millis(300)).await;
    db.insert_customers(0, 5).await;
    let manifest = profile_manifest(
        "SELECT email, plan, ltv FROM customers ORDER BY email",
        OnMissingRow::Keep,
    );
    let none = BTreeMap::new();
    let planned = plan(&db, &manifest, &none).await;
    let apply = sync::apply_data(
        &planned,
        &manifest,
        &none,
        &db.queries,
        &client,
        &db.state,
        false,
    );
    let (report, ()) = tokio::join!(apply, corrupt_queued_row(&handle, "c3@shop.test"));
    let report = report.unwrap();
    let sync_report = &report.profiles[0];
    assert_eq!(
        (sync_report.sent, sync_report.recorded, sync_report.failed),
        (5, 4, 1)
    );
    assert_eq!(sync_report.failed_sample[0].identifier, "c3@shop.test");
    assert!(report.has_failures());

    let retry = plan(&db, &manifest, &none).await;
    assert_eq!(
        retry.profiles[0].counts.new, 1,
        "{:?}",
        retry.profiles[0].counts
    );
    assert_eq!(retry.profiles[0].counts.unchanged, 4);
    let report = sync::apply_data(
        &retry,
        &manifest,
        &none,
        &db.queries,
        &client,
        &db.state,
        false,
    )
    .await
    .unwrap();
    assert_eq!(
        (report.profiles[0].sent, report.profiles[0].recorded),
        (1, 1)
    );
    assert_eq!(
        live_properties(&handle, "c3@shop.test"),
        Some(json!({"plan": "basic", "ltv": 3}))
    );
    assert!(!plan(&db, &manifest, &none).await.has_changes());
}

/// Corrupt the row of `email` in a bulk import job while the job waits in the emulator's
/// queue, so that Klaviyo refuses that one profile.
async fn corrupt_queued_row(handle: &EmulatorHandle, email: &str) {
    for _ in 0..2_000 {
        let done = handle.seed(|s| {
            for job in s.jobs.values_mut() {
                for row in &mut job.pending {
                    if row["attributes"]["email"] == email {
                        row["attributes"]["properties"] = json!("corrupted");
                        return true;
                    }
                }
            }
            false
        });
        if done {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("the bulk import job never appeared");
}

/// A member Klaviyo refuses is forgotten (not left recorded as sent), and added again by the
/// next apply; those it accepted are recorded as added.
async fn a_member_klaviyo_refused_is_not_kept_and_is_added_again(db: Db) {
    let (handle, client) = emulator(Duration::from_millis(300)).await;
    let list_id = handle.seed(|s| s.create_list("VIP", None));
    db.insert_customers(0, 5).await;
    db.exec("UPDATE customers SET plan = 'vip'").await;
    let manifest = member_manifest(MembershipMode::Mirror, None);
    let lists = BTreeMap::from([("vip".to_string(), list_id.clone())]);
    let planned = plan(&db, &manifest, &lists).await;
    let apply = sync::apply_data(
        &planned,
        &manifest,
        &lists,
        &db.queries,
        &client,
        &db.state,
        false,
    );
    let (report, ()) = tokio::join!(apply, corrupt_queued_row(&handle, "c3@shop.test"));
    let report = report.unwrap();
    let membership = &report.memberships[0];
    assert_eq!((membership.added, membership.failed), (4, 1), "{report:?}");
    assert_eq!(membership.failed_sample[0].identifier, "c3@shop.test");
    let recorded = db.state.sync_members("vip").await.unwrap();
    assert_eq!(recorded.len(), 4);
    assert!(
        recorded
            .iter()
            .all(|m| m.origin == MemberOrigin::Added && m.identifier != "c3@shop.test")
    );

    let retry = plan(&db, &manifest, &lists).await;
    let counts = retry.memberships[0].counts;
    assert_eq!(
        (counts.add, counts.unconfirmed, counts.unchanged),
        (1, 0, 4)
    );
    let report = sync::apply_data(
        &retry,
        &manifest,
        &lists,
        &db.queries,
        &client,
        &db.state,
        false,
    )
    .await
    .unwrap();
    assert_eq!(report.memberships[0].added, 1);
    assert_eq!(list_member_emails(&handle, &list_id).len(), 5);
    assert!(!plan(&db, &manifest, &lists).await.has_changes());
}

async fn mirror_never_removes_members_klsync_did_not_add(db: Db) {
    let (handle, client) = emulator(Duration::from_millis(10)).await;
    let list_id = handle.seed(|s| {
        let list = s.create_list("VIP", None);
        let outsider = s.create_profile(
            json!({"email": "outsider@shop.test"})
                .as_object()
                .unwrap()
                .clone(),
        );
        s.add_members(&list, &[outsider]);
        list
    });
    db.exec(
        "INSERT INTO customers (email, plan, ltv, active) VALUES ('a@shop.test', 'vip', 1, TRUE), \
         ('b@shop.test', 'vip', 2, TRUE), ('c@shop.test', 'vip', 3, TRUE), \
         ('outsider@shop.test', 'basic', 4, TRUE)",
    )
    .await;
    let manifest = member_manifest(MembershipMode::Mirror, None);
    let lists = BTreeMap::from([("vip".to_string(), list_id.clone())]);
    let planned = plan(&db, &manifest, &lists).await;
    assert_eq!(planned.memberships[0].counts.add, 3);
    assert_eq!(
        planned.memberships[0].requests.get("bulk_import_profiles"),
        Some(&1)
    );
    sync::apply_data(
        &planned,
        &manifest,
        &lists,
        &db.queries,
        &client,
        &db.state,
        false,
    )
    .await
    .unwrap();
    assert_eq!(
        list_member_emails(&handle, &list_id),
        [
            "a@shop.test",
            "b@shop.test",
            "c@shop.test",
            "outsider@shop.test"
        ]
    );

    db.exec("UPDATE customers SET plan = 'basic' WHERE email = 'b@shop.test'")
        .await;
    let planned = plan(&db, &manifest, &lists).await;
    let counts = planned.memberships[0].counts;
    assert_eq!((counts.add, counts.remove, counts.unchanged), (0, 1, 2));
    assert_eq!(planned.memberships[0].remove_sample, ["b@shop.test"]);
    let before = handle.stats();
    let report = sync::apply_data(
        &planned,
        &manifest,
        &lists,
        &db.queries,
        &client,
        &db.state,
        false,
    )
    .await
    .unwrap();
    assert_eq!(report.memberships[0].removed, 1);
    let after = handle.stats();
    assert_eq!(after.count(BULK_JOBS), before.count(BULK_JOBS));
    assert_eq!(
        after.count("DELETE /api/lists/{id}/relationships/profiles")
            - before.count("DELETE /api/lists/{id}/relationships/profiles"),
        1
    );
    // The outsider is not in the query either, yet stays: klsync never added it.
    assert_eq!(
        list_member_emails(&handle, &list_id),
        ["a@shop.test", "c@shop.test", "outsider@shop.test"]
    );
}

async fn mirror_keeps_members_that_were_on_the_list_before_klsync_added_them(db: Db) {
    let (handle, client) = emulator(Duration::from_millis(10)).await;
    let list_id = handle.seed(|s| {
        let list = s.create_list("VIP", None);
        let early = s.create_profile(
            json!({"email": "early@shop.test"})
                .as_object()
                .unwrap()
                .clone(),
        );
        s.add_members(&list, &[early]);
        list
    });
    db.exec(
        "INSERT INTO customers (email, plan, ltv, active) VALUES ('a@shop.test', 'vip', 1, TRUE), \
         ('b@shop.test', 'vip', 2, TRUE), ('Early@Shop.test', 'vip', 3, TRUE)",
    )
    .await;
    let manifest = member_manifest(MembershipMode::Mirror, None);
    let lists = BTreeMap::from([("vip".to_string(), list_id.clone())]);
    let planned = plan(&db, &manifest, &lists).await;
    assert_eq!(planned.memberships[0].counts.add, 3);
    // The plan counts the read of the list's members that apply makes before adding.
    assert_eq!(
        planned.memberships[0].requests.get("get_profiles_for_list"),
        Some(&1)
    );
    let before = handle.stats();
    let report = sync::apply_data(
        &planned,
        &manifest,
        &lists,
        &db.queries,
        &client,
        &db.state,
        false,
    )
    .await
    .unwrap();
    let after = handle.stats();
    assert_eq!(
        after.count("GET /api/lists/{id}/profiles") - before.count("GET /api/lists/{id}/profiles"),
        1
    );
    assert_eq!(
        (
            report.memberships[0].added,
            report.memberships[0].already_members
        ),
        (2, 1)
    );
    assert_eq!(
        list_member_emails(&handle, &list_id),
        ["a@shop.test", "b@shop.test", "early@shop.test"]
    );
    // The early member is known now: not planned as an add again.
    let again = plan(&db, &manifest, &lists).await;
    assert!(!again.has_changes());
    assert_eq!(again.memberships[0].counts.unchanged, 3);

    // Both leave the query: only the one klsync added is removed.
    db.exec(
        "UPDATE customers SET plan = 'basic' WHERE email IN ('b@shop.test', 'Early@Shop.test')",
    )
    .await;
    let planned = plan(&db, &manifest, &lists).await;
    let counts = planned.memberships[0].counts;
    assert_eq!((counts.add, counts.remove, counts.unchanged), (0, 1, 1));
    assert_eq!(planned.memberships[0].remove_sample, ["b@shop.test"]);
    assert_eq!(
        planned.memberships[0].requests.get("get_profiles_for_list"),
        None
    );
    let report = sync::apply_data(
        &planned,
        &manifest,
        &lists,
        &db.queries,
        &client,
        &db.state,
        false,
    )
    .await
    .unwrap();
    assert_eq!(report.memberships[0].removed, 1);
    assert_eq!(
        list_member_emails(&handle, &list_id),
        ["a@shop.test", "early@shop.test"]
    );
    assert!(!plan(&db, &manifest, &lists).await.has_changes());

    // Back in the query after someone removed it from the list: now klsync adds it, and owns it.
    handle.seed(|s| {
        let early = s
            .profiles
            .iter()
            .find(|(_, p)| p.get_str("email") == Some("early@shop.test"))
            .map(|(id, _)| id.clone())
            .unwrap();
        s.lists.get_mut(&list_id).unwrap().members.remove(&early);
    });
    db.exec("UPDATE customers SET plan = 'vip' WHERE email = 'Early@Shop.test'")
        .await;
    let planned = plan(&db, &manifest, &lists).await;
    let report = sync::apply_data(
        &planned,
        &manifest,
        &lists,
        &db.queries,
        &client,
        &db.state,
        false,
    )
    .await
    .unwrap();
    assert_eq!(
        (
            report.memberships[0].added,
            report.memberships[0].already_members
        ),
        (1, 0)
    );
    db.exec("UPDATE customers SET plan = 'basic' WHERE email = 'Early@Shop.test'")
        .await;
    let planned = plan(&db, &manifest, &lists).await;
    assert_eq!(planned.memberships[0].remove_sample, ["early@shop.test"]);
}

/// The plan reads rows as bare values in batches; they must be the rows `execute_query` gives,
/// and hash exactly as the map of those rows does.
async fn value_batches_are_the_rows_and_hash_alike(db: Db) {
    use futures::StreamExt;
    db.insert_customers(0, 2_500).await;
    db.exec(
        "INSERT INTO customers (email, plan, ltv, active) VALUES ('n@shop.test', NULL, NULL, NULL)",
    )
    .await;
    let sql = "SELECT email, plan, ltv, active FROM customers ORDER BY email";
    let rows: Vec<_> = db
        .queries
        .execute_query(sql, &[])
        .map(Result::unwrap)
        .collect()
        .await;
    let batches: Vec<_> = db
        .queries
        .execute_query_batches(sql, &[])
        .map(Result::unwrap)
        .collect()
        .await;
    assert!(batches.len() > 1, "2,500 rows come in several batches");
    let columns = batches[0].columns.clone();
    assert_eq!(&*columns, ["email", "plan", "ltv", "active"]);
    // The plan hashes rows straight from the batch (PostgreSQL: COPY's binary fields), without
    // building values: the same hash as the row's properties.
    let mut hasher = sync::diff::RowHasher::new(["active", "ltv", "plan"].into_iter());
    let row_hashes: Vec<_> = batches
        .iter()
        .flat_map(|batch| batch.rows().collect::<Vec<_>>())
        .map(|row| hasher.hash_row(&row, [3, 2, 1].into_iter()).unwrap())
        .collect();
    let values: Vec<Vec<Value>> = batches
        .into_iter()
        .flat_map(|b| b.into_values().unwrap())
        .collect();
    assert_eq!(row_hashes.len(), rows.len());
    for (row, hash) in rows.iter().zip(&row_hashes) {
        let mut properties = row.clone();
        properties.remove("email");
        assert_eq!(
            sync::diff::row_hash(sync::diff::HashScheme::CURRENT, &properties),
            *hash
        );
    }
    assert_eq!(values.len(), rows.len());
    for (row, values) in rows.iter().zip(&values) {
        assert_eq!(row.values().cloned().collect::<Vec<_>>(), *values);
        let mut properties = row.clone();
        properties.remove("email");
        // Sorted by property name, as the plan hashes them: active, ltv, plan.
        let sorted = [
            ("active", &values[3]),
            ("ltv", &values[2]),
            ("plan", &values[1]),
        ];
        let scheme = sync::diff::HashScheme::CURRENT;
        assert_eq!(
            sync::diff::row_hash(scheme, &properties),
            sync::diff::row_hash_sorted(scheme, sorted.into_iter())
        );
    }
}

async fn max_removals_refuses_without_force(db: Db) {
    let (handle, client) = emulator(Duration::from_millis(10)).await;
    let list_id = handle.seed(|s| s.create_list("VIP", None));
    db.exec(
        "INSERT INTO customers (email, plan, ltv, active) VALUES ('a@shop.test', 'vip', 1, TRUE), \
         ('b@shop.test', 'vip', 2, TRUE), ('c@shop.test', 'vip', 3, TRUE), \
         ('d@shop.test', 'vip', 4, TRUE)",
    )
    .await;
    // 25% of the 4 members klsync added: one removal allowed.
    let manifest = member_manifest(
        MembershipMode::Mirror,
        Some(MaxRemovals::Percent("25%".into())),
    );
    let lists = BTreeMap::from([("vip".to_string(), list_id.clone())]);
    let planned = plan(&db, &manifest, &lists).await;
    sync::apply_data(
        &planned,
        &manifest,
        &lists,
        &db.queries,
        &client,
        &db.state,
        false,
    )
    .await
    .unwrap();
    db.exec("UPDATE customers SET plan = 'basic' WHERE email IN ('a@shop.test', 'b@shop.test')")
        .await;
    let planned = plan(&db, &manifest, &lists).await;
    let membership = &planned.memberships[0];
    assert_eq!(
        (membership.counts.remove, membership.max_removals),
        (2, Some(1))
    );
    assert!(membership.exceeds_max_removals && planned.exceeds_max_removals());
    assert!(sync::render_text(&planned).contains("exceed max_removals"));

    let before = handle.stats();
    let refused = sync::apply_data(
        &planned,
        &manifest,
        &lists,
        &db.queries,
        &client,
        &db.state,
        false,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            refused,
            SyncError::MaxRemovalsExceeded {
                removals: 2,
                limit: 1,
                ..
            }
        ),
        "{refused}"
    );
    assert_eq!(handle.stats().total, before.total, "nothing may be sent");
    assert_eq!(list_member_emails(&handle, &list_id).len(), 4);

    let report = sync::apply_data(
        &planned,
        &manifest,
        &lists,
        &db.queries,
        &client,
        &db.state,
        true,
    )
    .await
    .unwrap();
    assert_eq!(report.memberships[0].removed, 2);
    assert_eq!(
        list_member_emails(&handle, &list_id),
        ["c@shop.test", "d@shop.test"]
    );
}

async fn a_write_from_a_sync_query_fails_and_changes_nothing(db: Db) {
    let (handle, client) = emulator(Duration::from_millis(10)).await;
    db.insert_customers(0, 3).await;
    let manifest = profile_manifest(
        "UPDATE customers SET plan = 'hacked' RETURNING email, plan, ltv",
        OnMissingRow::Keep,
    );
    let none = BTreeMap::new();
    let error = sync::plan_data(
        &manifest,
        &none,
        &db.queries,
        &db.state,
        None,
        &Default::default(),
    )
    .await
    .unwrap_err();
    match &error {
        SyncError::Query { source, .. } => {
            assert!(matches!(**source, SqlError::ReadOnly { .. }), "{source}");
        }
        other => panic!("expected a read-only refusal, got {other}"),
    }
    assert!(error.to_string().contains("read-only"), "{error}");
    let empty_plan = DataPlan {
        profiles: Vec::new(),
        memberships: Vec::new(),
        requests: BTreeMap::new(),
        estimated_seconds: 0,
        targeted: false,
    };
    let error = sync::apply_data(
        &empty_plan,
        &manifest,
        &none,
        &db.queries,
        &client,
        &db.state,
        false,
    )
    .await
    .unwrap_err();
    assert!(matches!(error, SyncError::Query { .. }), "{error}");
    assert_eq!(
        db.count("SELECT COUNT(*) AS n FROM customers WHERE plan = 'hacked'")
            .await,
        0
    );
    assert_eq!(handle.stats().total, 0);
}

async fn missing_rows_and_nulls_are_unset_when_configured(db: Db) {
    let (handle, client) = emulator(Duration::from_millis(10)).await;
    db.insert_customers(0, 3).await;
    let manifest = profile_manifest(
        "SELECT email, plan, ltv FROM customers WHERE active ORDER BY email",
        OnMissingRow::Unset,
    );
    let none = BTreeMap::new();
    let planned = plan(&db, &manifest, &none).await;
    sync::apply_data(
        &planned,
        &manifest,
        &none,
        &db.queries,
        &client,
        &db.state,
        false,
    )
    .await
    .unwrap();
    db.exec("UPDATE customers SET active = FALSE WHERE email = 'c0@shop.test'")
        .await;
    db.exec("UPDATE customers SET ltv = NULL WHERE email = 'c1@shop.test'")
        .await;
    let planned = plan(&db, &manifest, &none).await;
    let counts = planned.profiles[0].counts;
    assert_eq!(
        (counts.changed, counts.unset, counts.unchanged),
        (0, 2, 1),
        "{counts:?}"
    );
    assert_eq!(planned.requests.get("create_or_update_profile"), Some(&2));
    let before = handle.stats();
    sync::apply_data(
        &planned,
        &manifest,
        &none,
        &db.queries,
        &client,
        &db.state,
        false,
    )
    .await
    .unwrap();
    let after = handle.stats();
    assert_eq!(after.count(BULK_JOBS), before.count(BULK_JOBS));
    assert_eq!(live_properties(&handle, "c0@shop.test"), Some(json!({})));
    assert_eq!(
        live_properties(&handle, "c1@shop.test"),
        Some(json!({"plan": "basic"}))
    );
    assert!(!plan(&db, &manifest, &none).await.has_changes());
}

async fn refresh_reports_live_drift_of_sampled_profiles(db: Db) {
    let (handle, client) = emulator(Duration::from_millis(10)).await;
    db.insert_customers(0, 2).await;
    let manifest = profile_manifest(
        "SELECT email, plan, ltv FROM customers ORDER BY email",
        OnMissingRow::Keep,
    );
    let none = BTreeMap::new();
    let planned = plan(&db, &manifest, &none).await;
    sync::apply_data(
        &planned,
        &manifest,
        &none,
        &db.queries,
        &client,
        &db.state,
        false,
    )
    .await
    .unwrap();
    handle.seed(|s| {
        let profile = s
            .profiles
            .values_mut()
            .find(|p| p.get_str("email") == Some("c0@shop.test"))
            .unwrap();
        profile.attributes["properties"]["plan"] = json!("edited in Klaviyo");
    });
    db.exec("UPDATE customers SET ltv = 7 WHERE email = 'c0@shop.test'")
        .await;
    let mut planned = plan(&db, &manifest, &none).await;
    assert_eq!(planned.refresh_requests(), 1);
    let before = handle.stats().total;
    sync::refresh_data(&mut planned, &db.state, &client)
        .await
        .unwrap();
    assert_eq!(handle.stats().total - before, planned.refresh_requests());
    let drift = &planned.profiles[0].drift;
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert_eq!(
        (drift[0].identifier.as_str(), drift[0].property.as_str()),
        ("c0@shop.test", "plan")
    );
    assert_eq!(drift[0].applied, Some(json!("basic")));
    assert_eq!(drift[0].live, Some(json!("edited in Klaviyo")));
    assert!(sync::render_text(&planned).contains("drift c0@shop.test plan"));
}

async fn large_profiles_are_chunked_by_bytes_and_oversized_ones_rejected(db: Db) {
    let (handle, client) = emulator(Duration::from_millis(10)).await;
    let big = "x".repeat(60_000);
    for n in 0..100 {
        db.exec(&format!(
            "INSERT INTO customers (email, plan, ltv, active) VALUES ('c{n}@shop.test', '{big}', {n}, TRUE)"
        ))
        .await;
    }
    let huge = "y".repeat(120_000);
    db.exec(&format!(
        "INSERT INTO customers (email, plan, ltv, active) VALUES ('huge@shop.test', '{huge}', 0, TRUE)"
    ))
    .await;
    let manifest = profile_manifest(
        "SELECT email, plan, ltv FROM customers ORDER BY email",
        OnMissingRow::Keep,
    );
    let none = BTreeMap::new();
    let planned = plan(&db, &manifest, &none).await;
    let counts = planned.profiles[0].counts;
    assert_eq!((counts.new, counts.rejected), (100, 1));
    assert!(
        planned.profiles[0].rejected_sample[0]
            .reason
            .contains("100000")
    );
    // 100 profiles of ~60 KB are ~6 MB: two jobs under the 5 MB cap.
    assert_eq!(planned.requests.get("bulk_import_profiles"), Some(&2));
    let report = sync::apply_data(
        &planned,
        &manifest,
        &none,
        &db.queries,
        &client,
        &db.state,
        false,
    )
    .await
    .unwrap();
    assert_eq!(handle.stats().count(BULK_JOBS), 2);
    assert_eq!(
        (report.profiles[0].sent, report.profiles[0].recorded),
        (100, 100)
    );
    assert!(live_properties(&handle, "huge@shop.test").is_none());
}

async fn external_ids_and_phone_numbers_are_normalised_end_to_end(db: Db) {
    let (handle, client) = emulator(Duration::from_millis(10)).await;
    let list_id = handle.seed(|s| s.create_list("SMS", None));
    db.insert_customers(1, 4).await;
    let mut manifest = profile_manifest(
        "SELECT ltv AS external_id, plan, ltv FROM customers ORDER BY ltv",
        OnMissingRow::Keep,
    );
    manifest.profiles[0].identify_by = IdentifyBy::ExternalId;
    let mut members = member_manifest(MembershipMode::AddOnly, None);
    members.lists[0].members.as_mut().unwrap().identify_by = IdentifyBy::PhoneNumber;
    members.queries.insert(
        "vips".into(),
        query("SELECT '+1 (500) 555-000' || ltv AS phone_number FROM customers ORDER BY ltv"),
    );
    manifest.lists = members.lists;
    manifest.queries.extend(members.queries);
    let lists = BTreeMap::from([("vip".to_string(), list_id.clone())]);
    let planned = plan(&db, &manifest, &lists).await;
    assert_eq!(planned.profiles[0].counts.new, 3);
    assert_eq!(planned.memberships[0].add_sample[0], "+15005550001");
    sync::apply_data(
        &planned,
        &manifest,
        &lists,
        &db.queries,
        &client,
        &db.state,
        false,
    )
    .await
    .unwrap();
    let (by_external_id, phones) = handle.seed(|s| {
        let external = s
            .profiles
            .values()
            .find(|p| p.get_str("external_id") == Some("2"))
            .map(|p| p.attributes["properties"].clone());
        let mut phones: Vec<String> = s.lists[&list_id]
            .members
            .keys()
            .filter_map(|id| s.profiles[id].get_str("phone_number").map(str::to_string))
            .collect();
        phones.sort();
        (external, phones)
    });
    assert_eq!(by_external_id, Some(json!({"plan": "basic", "ltv": 2})));
    assert_eq!(phones, ["+15005550001", "+15005550002", "+15005550003"]);
    assert!(!plan(&db, &manifest, &lists).await.has_changes());
}

async fn switching_to_unset_removes_nulls_kept_before(db: Db) {
    let (handle, client) = emulator(Duration::from_millis(10)).await;
    db.insert_customers(0, 2).await;
    let sql = "SELECT email, plan, ltv FROM customers ORDER BY email";
    let keep = profile_manifest(sql, OnMissingRow::Keep);
    let none = BTreeMap::new();
    let planned = plan(&db, &keep, &none).await;
    sync::apply_data(
        &planned,
        &keep,
        &none,
        &db.queries,
        &client,
        &db.state,
        false,
    )
    .await
    .unwrap();
    db.exec("UPDATE customers SET ltv = NULL WHERE email = 'c1@shop.test'")
        .await;
    // Under `keep` a null keeps the value: nothing to send.
    let planned = plan(&db, &keep, &none).await;
    assert!(!planned.has_changes(), "{:?}", planned.profiles[0].counts);
    let before = handle.stats().total;
    sync::apply_data(
        &planned,
        &keep,
        &none,
        &db.queries,
        &client,
        &db.state,
        false,
    )
    .await
    .unwrap();
    assert_eq!(handle.stats().total, before);
    assert_eq!(
        live_properties(&handle, "c1@shop.test"),
        Some(json!({"plan": "basic", "ltv": 1}))
    );
    // Switching to `unset` compares every row again and removes the kept value.
    let unset = profile_manifest(sql, OnMissingRow::Unset);
    let planned = plan(&db, &unset, &none).await;
    let counts = planned.profiles[0].counts;
    assert_eq!((counts.unset, counts.unchanged), (1, 1), "{counts:?}");
    sync::apply_data(
        &planned,
        &unset,
        &none,
        &db.queries,
        &client,
        &db.state,
        false,
    )
    .await
    .unwrap();
    assert_eq!(
        live_properties(&handle, "c1@shop.test"),
        Some(json!({"plan": "basic"}))
    );
    assert!(!plan(&db, &unset, &none).await.has_changes());
}

/// A sync an older klsync recorded (SHA-256 row hashes) plans no change after the upgrade, with
/// or without its digest; `--resync` sends and records every row again under XXH3, and the
/// sync plans no change under it.
async fn a_sync_recorded_under_sha256_keeps_it_until_resynced(db: Db) {
    use sync::diff::{HashScheme, hash_text, row_hash};
    let (handle, client) = emulator(Duration::from_millis(10)).await;
    db.insert_customers(0, 20).await;
    let sql = "SELECT email, plan, ltv FROM customers ORDER BY email";
    let manifest = profile_manifest(sql, OnMissingRow::Keep);
    let none = BTreeMap::new();
    let apply = |planned: DataPlan| {
        let (manifest, none, db, client) = (&manifest, &none, &db, &client);
        async move {
            sync::apply_data(
                &planned,
                manifest,
                none,
                &db.queries,
                client,
                &db.state,
                false,
            )
            .await
            .unwrap()
        }
    };
    apply(plan(&db, &manifest, &none).await).await;
    let schemes = || async {
        let mut schemes = BTreeSet::new();
        db.state
            .visit_sync_row_hashes("customers", |_, scheme, _| {
                schemes.insert(scheme);
            })
            .await
            .unwrap();
        schemes
    };
    assert_eq!(schemes().await, BTreeSet::from([HashScheme::Xxh3]));

    // The rows as an older klsync recorded them: the same properties, hashed with SHA-256.
    let records: Vec<SyncRowRecord> = (0..20)
        .map(|n| {
            let properties = json!({"plan": "basic", "ltv": n});
            let hash = row_hash(HashScheme::Sha256, properties.as_object().unwrap());
            SyncRowRecord {
                identifier: format!("c{n}@shop.test"),
                row_hash: hash_text(HashScheme::Sha256, &hash),
                applied: properties,
            }
        })
        .collect();
    db.state
        .record_sync_rows("customers", &records)
        .await
        .unwrap();
    assert_eq!(schemes().await, BTreeSet::from([HashScheme::Sha256]));
    let before = handle.stats().total;
    for digest in [false, true] {
        if digest {
            db.state.refresh_sync_digest("customers").await.unwrap();
        }
        let planned = plan(&db, &manifest, &none).await;
        assert!(
            !planned.has_changes(),
            "digest {digest}: {:?}",
            planned.profiles[0].counts
        );
        assert_eq!(planned.profiles[0].counts.unchanged, 20);
    }
    assert_eq!(handle.stats().total, before, "planning sent nothing");

    let resync = BTreeSet::from(["profiles.customers".to_string()]);
    let planned = sync::plan_data(&manifest, &none, &db.queries, &db.state, None, &resync)
        .await
        .unwrap();
    assert_eq!(planned.profiles[0].counts.changed, 20);
    apply(planned).await;
    assert_eq!(schemes().await, BTreeSet::from([HashScheme::Xxh3]));
    let planned = plan(&db, &manifest, &none).await;
    assert!(!planned.has_changes(), "{:?}", planned.profiles[0].counts);
    assert_eq!(planned.profiles[0].counts.unchanged, 20);
}

/// 30 mirror members sent by an apply that never learned the job's outcome (`job`: the job,
/// when Klaviyo's answer to its creation arrived); then an apply that does learn: the members
/// are klsync's, and leave the list with the query.
async fn members_sent_without_a_known_outcome_stay_klsyncs(
    db: &Db,
    handle: &EmulatorHandle,
    client: &KlaviyoClient,
    list_id: &str,
    job: Option<String>,
) {
    let recorded = db.state.sync_members("vip").await.unwrap();
    assert_eq!(recorded.len(), 30);
    for member in &recorded {
        assert!(
            matches!(&member.origin, MemberOrigin::Sent { job_id, .. } if *job_id == job),
            "{member:?}"
        );
    }
    let manifest = member_manifest(MembershipMode::Mirror, None);
    let lists = BTreeMap::from([("vip".to_string(), list_id.to_string())]);
    // Klaviyo processes the job it accepted, whatever became of the apply.
    until("the job's members are on the list", || {
        list_member_emails(handle, list_id).len() == 30
    })
    .await;
    let planned = plan(db, &manifest, &lists).await;
    let counts = planned.memberships[0].counts;
    assert_eq!((counts.add, counts.unconfirmed), (30, 30));
    assert!(sync::render_text(&planned).contains("30 of the adds were sent by an earlier apply"));
    let before = handle.stats();
    let report = sync::apply_data(
        &planned,
        &manifest,
        &lists,
        &db.queries,
        client,
        &db.state,
        false,
    )
    .await
    .unwrap();
    let membership = &report.memberships[0];
    assert_eq!(
        (
            membership.confirmed,
            membership.already_members,
            membership.added
        ),
        (30, 0, 0),
        "{report:?}"
    );
    assert_eq!(handle.stats().count(BULK_JOBS), before.count(BULK_JOBS));
    assert!(sync::render_report(&report).contains("30 member(s) sent by an earlier apply found"));
    let recorded = db.state.sync_members("vip").await.unwrap();
    assert!(recorded.iter().all(|m| m.origin == MemberOrigin::Added));
    assert!(!plan(db, &manifest, &lists).await.has_changes());

    // 10 leave the query: mirror mode removes them, since klsync added them.
    db.exec("UPDATE customers SET plan = 'basic' WHERE ltv < 10")
        .await;
    let planned = plan(db, &manifest, &lists).await;
    assert_eq!(planned.memberships[0].counts.remove, 10);
    let report = sync::apply_data(
        &planned,
        &manifest,
        &lists,
        &db.queries,
        client,
        &db.state,
        false,
    )
    .await
    .unwrap();
    assert_eq!(report.memberships[0].removed, 10);
    let expected: Vec<String> = {
        let mut emails: Vec<String> = (10..30).map(|n| format!("c{n}@shop.test")).collect();
        emails.sort();
        emails
    };
    assert_eq!(list_member_emails(handle, list_id), expected);
    assert!(!plan(db, &manifest, &lists).await.has_changes());
}

async fn vip_list_of_thirty(db: &Db, handle: &EmulatorHandle) -> String {
    db.insert_customers(0, 30).await;
    db.exec("UPDATE customers SET plan = 'vip'").await;
    handle.seed(|s| s.create_list("VIP", None))
}

/// The apply dies right after Klaviyo accepted its membership job (the proxy forwards the job,
/// then never answers, and the test drops the apply there, as a SIGKILL would).
async fn members_of_a_job_accepted_before_the_apply_died_are_klsyncs(db: Db) {
    let (handle, client) = emulator(Duration::from_millis(10)).await;
    let list_id = vip_list_of_thirty(&db, &handle).await;
    let manifest = member_manifest(MembershipMode::Mirror, None);
    let lists = BTreeMap::from([("vip".to_string(), list_id.clone())]);
    let planned = plan(&db, &manifest, &lists).await;
    let accepted = Arc::new(tokio::sync::Notify::new());
    let dying = {
        let accepted = accepted.clone();
        misbehaving_client(&handle, move |method, path| {
            (method == "POST" && path == "/api/profile-bulk-import-jobs")
                .then(|| Interception::ForwardThenHang(accepted.clone()))
        })
        .await
    };
    tokio::select! {
        _ = sync::apply_data(&planned, &manifest, &lists, &db.queries, &dying, &db.state, false) => {
            panic!("the apply was to wait for Klaviyo's answer forever")
        }
        // Dropping the apply here is the crash.
        () = accepted.notified() => {}
    }
    members_sent_without_a_known_outcome_stay_klsyncs(&db, &handle, &client, &list_id, None).await;
}

/// Klaviyo accepts the membership job, then answers every poll of it with 429 until the
/// client gives up: the apply ends without knowing what the job did.
async fn members_of_a_job_whose_polls_gave_up_are_klsyncs(db: Db) {
    let (handle, client) = emulator(Duration::from_millis(10)).await;
    let list_id = vip_list_of_thirty(&db, &handle).await;
    let manifest = member_manifest(MembershipMode::Mirror, None);
    let lists = BTreeMap::from([("vip".to_string(), list_id.clone())]);
    let planned = plan(&db, &manifest, &lists).await;
    let rate_limited = misbehaving_client(&handle, |method, path| {
        let poll = method == "GET"
            && path.starts_with("/api/profile-bulk-import-jobs/")
            && path.matches('/').count() == 3;
        poll.then(|| {
            Interception::Respond(
                429,
                vec![("retry-after", "0".to_string())],
                r#"{"errors":[{"status":429,"code":"throttled","title":"Request was throttled.","detail":"Request was throttled."}]}"#.to_string(),
            )
        })
    })
    .await;
    let report = sync::apply_data(
        &planned,
        &manifest,
        &lists,
        &db.queries,
        &rate_limited,
        &db.state,
        false,
    )
    .await
    .unwrap();
    let membership = &report.memberships[0];
    assert_eq!((membership.added, membership.failed), (0, 30), "{report:?}");
    assert_eq!(
        membership.jobs.len(),
        1,
        "the job Klaviyo accepted is reported"
    );
    let reason = &membership.failed_sample[0].reason;
    assert!(
        reason.contains("rate limited") && reason.contains("the next apply checks the list"),
        "{reason}"
    );
    let job = membership.jobs.first().cloned();
    members_sent_without_a_known_outcome_stay_klsyncs(&db, &handle, &client, &list_id, job).await;
}

/// Hand edits in Klaviyo: a property changed, one removed, two members taken off the list (one
/// of which also left the query). The full check finds them at the cost it stated, the plan
/// made with it restores them, and the next check is clean.
async fn the_full_check_finds_hand_edits_and_the_plan_restores_them(db: Db) {
    let (handle, client) = emulator(Duration::from_millis(10)).await;
    let list_id = handle.seed(|s| s.create_list("VIP", None));
    db.insert_customers(0, 5).await;
    db.exec("UPDATE customers SET plan = 'vip' WHERE ltv < 3")
        .await;
    let mut manifest = profile_manifest(
        "SELECT email, plan, ltv FROM customers ORDER BY email",
        OnMissingRow::Keep,
    );
    let members = member_manifest(MembershipMode::Mirror, None);
    manifest.lists = members.lists;
    manifest.queries.extend(members.queries);
    let lists = BTreeMap::from([("vip".to_string(), list_id.clone())]);
    let planned = plan(&db, &manifest, &lists).await;
    sync::apply_data(
        &planned,
        &manifest,
        &lists,
        &db.queries,
        &client,
        &db.state,
        false,
    )
    .await
    .unwrap();

    // Clean, at the stated cost: one profile lookup per 100 rows, one member lookup per 100.
    let cost = sync::check_cost(&manifest, &lists, &db.state, sync::CheckScope::FULL)
        .await
        .unwrap();
    let stated: u64 = cost.requests.values().sum();
    assert_eq!(stated, 2, "{cost:?}");
    let before = handle.stats().total;
    let check = sync::check_data(
        &manifest,
        &lists,
        &db.state,
        &client,
        sync::CheckScope::FULL,
    )
    .await
    .unwrap();
    assert_eq!(handle.stats().total - before, stated);
    assert!(!check.has_drift(), "{check:?}");
    assert_eq!(
        (check.profiles[0].checked, check.memberships[0].checked),
        (5, 3)
    );

    handle.seed(|s| {
        let id_of = |s: &emulator::state::State, email: &str| {
            s.profiles
                .values()
                .find(|p| p.get_str("email") == Some(email))
                .unwrap()
                .id
                .clone()
        };
        let (c0, c1, c2) = (
            id_of(s, "c0@shop.test"),
            id_of(s, "c1@shop.test"),
            id_of(s, "c2@shop.test"),
        );
        let properties = &mut s.profiles.get_mut(&c0).unwrap().attributes["properties"];
        properties["plan"] = json!("edited in Klaviyo");
        let properties = &mut s.profiles.get_mut(&c1).unwrap().attributes["properties"];
        properties.as_object_mut().unwrap().remove("ltv");
        let list = s.lists.get_mut(&list_id).unwrap();
        list.members.remove(&c1);
        list.members.remove(&c2);
    });
    // c1 also leaves the list's query: gone from the list already, it is not removed again.
    db.exec("UPDATE customers SET plan = 'basic' WHERE email = 'c1@shop.test'")
        .await;
    // The plan without the full check sees none of it.
    let blind = plan(&db, &manifest, &lists).await;
    assert_eq!(
        (
            blind.profiles[0].counts.changed,
            blind.memberships[0].counts.add
        ),
        (1, 0),
        "only the row changed in the database"
    );

    let check = sync::check_data(
        &manifest,
        &lists,
        &db.state,
        &client,
        sync::CheckScope::FULL,
    )
    .await
    .unwrap();
    let drift: Vec<(&str, &str, Option<Value>)> = check.profiles[0]
        .drift
        .iter()
        .map(|d| (d.identifier.as_str(), d.property.as_str(), d.live.clone()))
        .collect();
    assert_eq!(
        drift,
        [
            ("c0@shop.test", "plan", Some(json!("edited in Klaviyo"))),
            ("c1@shop.test", "ltv", None),
        ]
    );
    assert_eq!(
        check.memberships[0].missing,
        ["c1@shop.test", "c2@shop.test"]
    );
    let rendered = sync::render_check(&check);
    assert!(
        rendered.contains("~ profiles.customers: 2 of 5 recorded profile(s) changed in Klaviyo"),
        "{rendered}"
    );
    assert!(
        rendered.contains("- lists.vip.members: 2 of 3 recorded member(s) no longer on the list"),
        "{rendered}"
    );

    let restoring = sync::plan_data(
        &manifest,
        &lists,
        &db.queries,
        &db.state,
        Some(&check),
        &Default::default(),
    )
    .await
    .unwrap();
    let profiles = &restoring.profiles[0];
    assert_eq!(profiles.counts.changed, 2, "{profiles:?}");
    let c0 = profiles
        .diff_sample
        .iter()
        .find(|row| row.identifier == "c0@shop.test")
        .unwrap();
    assert_eq!(
        (&c0.changes[0].before, &c0.changes[0].after),
        (&Some(json!("edited in Klaviyo")), &Some(json!("vip")))
    );
    let counts = restoring.memberships[0].counts;
    assert_eq!((counts.add, counts.remove, counts.unchanged), (1, 0, 1));
    assert_eq!(restoring.memberships[0].add_sample, ["c2@shop.test"]);
    let text = sync::render_text(&restoring);
    assert!(
        text.contains("full check: 5 recorded profile(s) read back, 2 changed in Klaviyo"),
        "{text}"
    );
    assert!(
        text.contains("full check: 3 recorded member(s) looked up, 2 no longer on the list"),
        "{text}"
    );

    // Applied through a saved plan: the plan carries what to restore.
    let saved: DataPlan =
        serde_json::from_str(&serde_json::to_string(&restoring).unwrap()).unwrap();
    let report = sync::apply_data(
        &saved,
        &manifest,
        &lists,
        &db.queries,
        &client,
        &db.state,
        false,
    )
    .await
    .unwrap();
    assert!(report.drift.is_empty(), "{:?}", report.drift);
    assert_eq!(
        (report.profiles[0].sent, report.memberships[0].added),
        (2, 1)
    );
    assert_eq!(
        live_properties(&handle, "c0@shop.test"),
        Some(json!({"plan": "vip", "ltv": 0}))
    );
    assert_eq!(
        live_properties(&handle, "c1@shop.test"),
        Some(json!({"plan": "basic", "ltv": 1}))
    );
    assert_eq!(
        list_member_emails(&handle, &list_id),
        ["c0@shop.test", "c2@shop.test"]
    );
    let check = sync::check_data(
        &manifest,
        &lists,
        &db.state,
        &client,
        sync::CheckScope::FULL,
    )
    .await
    .unwrap();
    assert!(!check.has_drift(), "{check:?}");
    assert_eq!(check.memberships[0].checked, 2, "c1 is forgotten");
    assert!(!plan(&db, &manifest, &lists).await.has_changes());
}

/// The same rows in PostgreSQL, MariaDB and SQLite hash alike, so a sync moved from one
/// database to another plans no change: applied from PostgreSQL, planned from MariaDB and from
/// SQLite with the same state, nothing is new or changed. Each database's types for the same
/// logical values: integers, exact decimals, floats (also a 4-byte one), booleans, dates,
/// instants (timestamptz / TIMESTAMP / DATETIME text with offset), local date-times, text, NULL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_moved_between_databases_plans_no_change() {
    let Some(mysql) = TestMySql::create().await else {
        return;
    };
    let pg = TestPostgres::create().await.expect("test PostgreSQL");
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("source.db").display());
    let rows = |instant: &str| {
        format!(
            "INSERT INTO facts VALUES
             ('a@shop.test', 42, 12.50, 0.1, 0.1, TRUE, '2024-05-01', '2024-05-01 10:30:00{instant}',
              '2024-05-01 10:30:00.250', 'é ünïcode \"quoted\"'),
             ('b@shop.test', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
             ('c@shop.test', -9007199254740993, 0.05, -2.5, 1.5, FALSE, '1999-12-31',
              '1999-12-31 23:59:59{instant}', '1999-12-31 23:59:59', '')"
        )
    };
    let sources = [
        (
            pg.url().to_string(),
            "CREATE TABLE facts (email text, n bigint, price numeric(10, 2), ratio float8, \
             small float4, vip boolean, born date, seen timestamptz, local timestamp, note text)",
            rows("+00"),
        ),
        (
            mysql.url().to_string(),
            "CREATE TABLE facts (email VARCHAR(100), n BIGINT, price DECIMAL(10, 2), \
             ratio DOUBLE, small FLOAT, vip BOOLEAN, born DATE, seen TIMESTAMP(3) NULL, \
             local DATETIME(3), note TEXT)",
            // The session's time zone is UTC (sqlx's default, and klsync forces it).
            rows(""),
        ),
        (
            sqlite.clone(),
            "CREATE TABLE facts (email TEXT, n INTEGER, price REAL, ratio REAL, small REAL, \
             vip BOOLEAN, born TEXT, seen DATETIME, local DATETIME, note TEXT)",
            rows("+00:00"),
        ),
    ];
    let columns = [
        "n", "price", "ratio", "small", "vip", "born", "seen", "local", "note",
    ];
    let manifest = ManifestFile {
        profiles: vec![ProfileSyncSpec {
            id: "facts".into(),
            query: "facts".into(),
            identify_by: IdentifyBy::Email,
            properties: columns
                .iter()
                .map(|c| (c.to_string(), c.to_string()))
                .collect(),
            on_missing_row: OnMissingRow::Keep,
        }],
        queries: BTreeMap::from([(
            "facts".to_string(),
            query("SELECT * FROM facts ORDER BY email"),
        )]),
        ..ManifestFile::default()
    };
    let state = StateStore::connect(&format!(
        "sqlite://{}",
        dir.path().join("state.db").display()
    ))
    .await
    .unwrap();
    let (handle, client) = emulator(Duration::from_millis(10)).await;
    let none = BTreeMap::new();
    let mut hashes = Vec::new();
    for (at, (url, create, insert)) in sources.iter().enumerate() {
        source::execute(url, &format!("{create}; {insert}")).await;
        let queries = QueryManager::connect(&Secret::new(url.clone()), QueryOptions::default())
            .await
            .unwrap();
        use futures::TryStreamExt;
        let rows: Vec<_> = queries
            .execute_query("SELECT * FROM facts ORDER BY email", &[])
            .try_collect()
            .await
            .unwrap();
        let row_hashes: Vec<_> = rows
            .iter()
            .map(|row| {
                let mut properties = row.clone();
                properties.remove("email");
                let hash = sync::diff::row_hash(sync::diff::HashScheme::CURRENT, &properties);
                (properties.clone(), hash)
            })
            .collect();
        hashes.push((url.clone(), row_hashes));
        let planned = sync::plan_data(
            &manifest,
            &none,
            &queries,
            &state,
            None,
            &Default::default(),
        )
        .await
        .unwrap();
        let counts = planned.profiles[0].counts;
        if at == 0 {
            // The row of NULLs has nothing to send under `keep`.
            assert_eq!((counts.new, counts.unchanged), (2, 1), "{counts:?}");
            sync::apply_data(&planned, &manifest, &none, &queries, &client, &state, false)
                .await
                .unwrap();
        } else {
            assert!(
                !planned.has_changes(),
                "moved to {}: {counts:?}\n{}",
                klsync::settings::redact_url(url),
                sync::render_text(&planned)
            );
            assert_eq!(counts.unchanged, 3, "{counts:?}");
        }
        queries.close().await;
    }
    let (first_url, first) = &hashes[0];
    for (url, other) in &hashes[1..] {
        assert_eq!(other, first, "{url} vs {first_url}");
    }
    assert_eq!(
        live_properties(&handle, "a@shop.test"),
        Some(json!({
            "n": 42, "price": 12.5, "ratio": 0.1, "small": 0.1, "vip": true,
            "born": "2024-05-01", "seen": "2024-05-01T10:30:00Z",
            "local": "2024-05-01T10:30:00.250", "note": "é ünïcode \"quoted\"",
        }))
    );
}

// ---- one test per scenario and backend ------------------------------------------------------

/// Each scenario on SQLite, on PostgreSQL and on MariaDB (skipped, saying so, when
/// `KLSYNC_TEST_MYSQL_URL` is unset).
macro_rules! on_every_backend {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Db::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Db::postgres().await).await;
                }
            )*
        }
        mod mariadb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    if let Some(db) = super::Db::mysql().await {
                        super::$scenario(db).await;
                    }
                }
            )*
        }
    };
}

on_every_backend!(
    three_changes_of_ten_thousand,
    invalid_rows_are_reported_and_not_sent,
    rows_klaviyo_rejected_are_retried_then_recorded,
    mirror_never_removes_members_klsync_did_not_add,
    mirror_keeps_members_that_were_on_the_list_before_klsync_added_them,
    value_batches_are_the_rows_and_hash_alike,
    max_removals_refuses_without_force,
    a_write_from_a_sync_query_fails_and_changes_nothing,
    missing_rows_and_nulls_are_unset_when_configured,
    refresh_reports_live_drift_of_sampled_profiles,
    large_profiles_are_chunked_by_bytes_and_oversized_ones_rejected,
    external_ids_and_phone_numbers_are_normalised_end_to_end,
    switching_to_unset_removes_nulls_kept_before,
    a_sync_recorded_under_sha256_keeps_it_until_resynced,
    members_of_a_job_accepted_before_the_apply_died_are_klsyncs,
    members_of_a_job_whose_polls_gave_up_are_klsyncs,
    a_member_klaviyo_refused_is_not_kept_and_is_added_again,
    the_full_check_finds_hand_edits_and_the_plan_restores_them,
);
