//! The state store against both databases: an SQLite file in a temp dir, and a fresh schema in
//! the PostgreSQL named by `KLSYNC_TEST_POSTGRES_URL` (see `klsync::state::testing`).

use std::time::{Duration, Instant};

use chrono::Utc;
use klsync::state::testing::TestPostgres;
use klsync::state::{
    JournalId, LockHolder, LockOptions, ManagedRow, MemberOrigin, Phase, RemovedMember, RunId,
    RunOutcome, RunStart, StateBackend, StateError, StateStore, StoredKeys, SyncMemberRecord,
    SyncRowRecord, hostname, identifier_key, short_row_hash,
};
use klsync::sync::diff::{HashScheme, hash_text};
use serde_json::json;

/// A store plus whatever keeps its database alive.
struct Fixture {
    url: String,
    store: StateStore,
    // Field order matters: the store's pool closes before the schema or directory goes.
    _postgres: Option<TestPostgres>,
    _dir: Option<tempfile::TempDir>,
}

impl Fixture {
    async fn sqlite() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let url = StateStore::default_url(dir.path());
        let store = StateStore::connect(&url).await.unwrap();
        Fixture {
            url,
            store,
            _postgres: None,
            _dir: Some(dir),
        }
    }

    async fn postgres() -> Option<Fixture> {
        let pg = TestPostgres::create().await?;
        let url = pg.url().to_string();
        let store = StateStore::connect(&url).await.unwrap();
        Some(Fixture {
            url,
            store,
            _postgres: Some(pg),
            _dir: None,
        })
    }

    /// A second, independent store on the same database (another klsync process).
    async fn reopen(&self) -> StateStore {
        StateStore::connect(&self.url).await.unwrap()
    }
}

/// Run `async fn $name(&Fixture)` once per database.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let fixture = super::Fixture::sqlite().await;
                assert_eq!(fixture.store.backend(), super::StateBackend::Sqlite);
                super::$name(&fixture).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(fixture) = super::Fixture::postgres().await else { return };
                assert_eq!(fixture.store.backend(), super::StateBackend::Postgres);
                super::$name(&fixture).await;
            }
        }
    )*};
}

on_both!(
    migrations_run_twice_are_no_ops,
    managed_resources_upsert_list_and_remove,
    runs_are_recorded_with_their_journal_newest_first,
    journal_tracks_each_change_and_finds_unfinished_ones,
    concurrent_journal_starts_get_distinct_sequence_numbers,
    journal_updates_of_unknown_entries_are_errors,
    applied_plans_are_refused_a_second_time,
    second_apply_lock_is_refused_naming_the_holder,
    released_lock_can_be_taken_again,
    racing_applies_get_the_lock_exactly_once,
    a_held_lock_is_waited_for_until_released,
    a_lock_wait_gives_up_naming_the_holder,
    unlock_refuses_another_run_and_an_empty_lock,
    sync_row_digest_is_read_while_exact_and_dropped_by_every_write,
    sync_rows_keep_the_hash_scheme_most_of_them_were_recorded_with,
    pending_removals_are_kept_with_their_reason_and_removals_remembered,
    forgetting_the_members_of_a_list_forgets_its_removals_and_sends,
);

fn start(command: &str) -> RunStart {
    RunStart {
        command: command.into(),
        actor: "ann (GitHub Actions)".into(),
        git_commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
        manifest_digest: Some("sha256:abc".into()),
        plan_id: None,
    }
}

fn list(key: &str, id: &str, name: &str) -> ManagedRow {
    ManagedRow {
        kind: "list".into(),
        key: key.into(),
        klaviyo_id: id.into(),
        applied: json!({ "name": name }),
        returned: None,
    }
}

async fn migrations_run_twice_are_no_ops(f: &Fixture) {
    let run = f.store.begin_run(&start("apply")).await.unwrap();
    f.store
        .upsert_managed(&list("vip", "Xa1", "VIP"), run)
        .await
        .unwrap();
    // The tables have no IF NOT EXISTS: re-running the migration would fail here.
    let again = f.reopen().await;
    assert_eq!(
        again.managed().await.unwrap(),
        vec![list("vip", "Xa1", "VIP")]
    );
    again.close().await;
}

async fn managed_resources_upsert_list_and_remove(f: &Fixture) {
    let s = &f.store;
    let run = s.begin_run(&start("apply")).await.unwrap();
    assert!(s.managed().await.unwrap().is_empty());

    s.upsert_managed(&list("vip", "Xa1", "VIP"), run)
        .await
        .unwrap();
    s.upsert_managed(&list("all", "Yb2", "All"), run)
        .await
        .unwrap();
    let tag = ManagedRow {
        kind: "tag".into(),
        key: "all".into(),
        klaviyo_id: "t-1".into(),
        applied: json!({ "name": "all", "nested": [1, {"a": null}] }),
        // Klaviyo's own form of what was sent, kept beside it.
        returned: Some(json!({ "name": "all", "n": 500.0 })),
    };
    s.upsert_managed(&tag, run).await.unwrap();
    assert_eq!(
        s.managed().await.unwrap(),
        vec![
            list("all", "Yb2", "All"),
            list("vip", "Xa1", "VIP"),
            tag.clone()
        ],
        "ordered by kind, then key; JSON round-trips"
    );

    let later = s.begin_run(&start("apply")).await.unwrap();
    s.upsert_managed(&list("vip", "Zc3", "VIPs"), later)
        .await
        .unwrap();
    assert_eq!(
        s.managed().await.unwrap(),
        vec![
            list("all", "Yb2", "All"),
            list("vip", "Zc3", "VIPs"),
            tag.clone()
        ]
    );

    assert!(s.remove_managed("list", "vip").await.unwrap());
    assert!(!s.remove_managed("list", "vip").await.unwrap());
    assert!(!s.remove_managed("segment", "all").await.unwrap());
    assert_eq!(
        s.managed().await.unwrap(),
        vec![list("all", "Yb2", "All"), tag]
    );
}

async fn runs_are_recorded_with_their_journal_newest_first(f: &Fixture) {
    let s = &f.store;
    let first = s.begin_run(&start("apply")).await.unwrap();
    let j1 = s
        .journal_started(first, "list.vip", "create", &json!({"name": "VIP"}))
        .await
        .unwrap();
    s.journal_succeeded(j1, Some("Xa1"), &json!({"requests": 1}))
        .await
        .unwrap();
    s.finish_run(
        first,
        RunOutcome::Success,
        &json!({"created": 1, "requests": 1}),
    )
    .await
    .unwrap();

    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = s
        .begin_run(&RunStart {
            plan_id: Some("plan-7".into()),
            git_commit: None,
            ..start("sync")
        })
        .await
        .unwrap();

    let history = s.history(10).await.unwrap();
    assert_eq!(history.len(), 2);
    let (newest, oldest) = (&history[0], &history[1]);

    assert_eq!(newest.run_id, second);
    assert_eq!(newest.command, "sync");
    assert_eq!(newest.plan_id.as_deref(), Some("plan-7"));
    assert_eq!(newest.git_commit, None);
    assert_eq!(newest.outcome, None, "still running");
    assert_eq!(newest.finished_at, None);
    assert!(newest.journal.is_empty());

    assert_eq!(oldest.run_id, first);
    assert_eq!(oldest.actor, "ann (GitHub Actions)");
    assert_eq!(oldest.manifest_digest.as_deref(), Some("sha256:abc"));
    assert_eq!(oldest.outcome, Some(RunOutcome::Success));
    assert_eq!(oldest.summary, Some(json!({"created": 1, "requests": 1})));
    assert!(oldest.finished_at.unwrap() >= oldest.started_at);
    assert!(newest.started_at >= oldest.started_at);
    assert_eq!(oldest.journal.len(), 1);
    let entry = &oldest.journal[0];
    assert_eq!((entry.id, entry.run_id, entry.seq), (j1, first, 1));
    assert_eq!(entry.phase, Phase::Succeeded);
    assert_eq!(entry.klaviyo_id.as_deref(), Some("Xa1"));

    let limited = s.history(1).await.unwrap();
    assert_eq!(limited.len(), 1);
    assert_eq!(limited[0].run_id, second);

    let unknown = s
        .finish_run(RunId::new(), RunOutcome::Failed, &json!({}))
        .await
        .unwrap_err();
    assert!(matches!(unknown, StateError::NotFound { .. }), "{unknown}");
}

async fn journal_tracks_each_change_and_finds_unfinished_ones(f: &Fixture) {
    let s = &f.store;
    let killed = s.begin_run(&start("apply")).await.unwrap();
    let create = s
        .journal_started(killed, "list.vip", "create", &json!({"name": "VIP"}))
        .await
        .unwrap();
    let update = s
        .journal_started(killed, "segment.big", "update", &json!({"name": "Big"}))
        .await
        .unwrap();
    let delete = s
        .journal_started(killed, "tag.old", "delete", &json!({}))
        .await
        .unwrap();

    s.journal_succeeded(update, Some("Sg1"), &json!({"status": 200}))
        .await
        .unwrap();
    s.journal_failed(delete, "404 Not Found: tag gone")
        .await
        .unwrap();

    // The process "dies" here: the create is neither succeeded nor failed. The next process
    // opens the store afresh.
    let restarted = f.reopen().await;
    let unfinished = restarted.unfinished_journal().await.unwrap();
    assert_eq!(unfinished.len(), 1);
    let pending = &unfinished[0];
    assert_eq!(pending.id, create);
    assert_eq!(pending.run_id, killed);
    assert_eq!(pending.seq, 1);
    assert_eq!(
        (pending.address.as_str(), pending.action.as_str()),
        ("list.vip", "create")
    );
    assert_eq!(pending.phase, Phase::Started);
    assert_eq!(pending.detail, json!({"name": "VIP"}));
    assert_eq!(
        (pending.klaviyo_id.as_deref(), pending.finished_at),
        (None, None)
    );

    // The next run looks the list up, finds it, and closes the entry.
    s.journal_succeeded(create, Some("Xa1"), &json!({"recovered": true}))
        .await
        .unwrap();
    assert!(s.unfinished_journal().await.unwrap().is_empty());

    let run = &s.history(1).await.unwrap()[0];
    let by_seq: Vec<_> = run
        .journal
        .iter()
        .map(|e| (e.seq, e.phase, e.klaviyo_id.as_deref(), e.error.as_deref()))
        .collect();
    assert_eq!(
        by_seq,
        vec![
            (1, Phase::Succeeded, Some("Xa1"), None),
            (2, Phase::Succeeded, Some("Sg1"), None),
            (3, Phase::Failed, None, Some("404 Not Found: tag gone")),
        ]
    );
    assert_eq!(
        run.journal[0].detail,
        json!({"name": "VIP", "recovered": true}),
        "the outcome's detail is merged over what was sent"
    );
    assert!(run.journal.iter().all(|e| e.finished_at.is_some()));

    // A second run numbers its changes from 1 again.
    let next = s.begin_run(&start("apply")).await.unwrap();
    let first_of_next = s
        .journal_started(next, "list.vip", "update", &json!({}))
        .await
        .unwrap();
    let run = &s.history(1).await.unwrap()[0];
    assert_eq!((run.journal[0].id, run.journal[0].seq), (first_of_next, 1));
}

async fn concurrent_journal_starts_get_distinct_sequence_numbers(f: &Fixture) {
    let run = f.store.begin_run(&start("apply")).await.unwrap();
    let starts = (0..12).map(|i| {
        let store = f.store.clone();
        tokio::spawn(async move {
            store
                .journal_started(run, &format!("list.l{i}"), "create", &json!({ "i": i }))
                .await
                .unwrap()
        })
    });
    let ids = futures::future::join_all(starts).await;
    assert_eq!(ids.len(), 12);
    let history = f.store.history(1).await.unwrap();
    let mut seqs: Vec<i64> = history[0].journal.iter().map(|e| e.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=12).collect::<Vec<i64>>());
}

async fn journal_updates_of_unknown_entries_are_errors(f: &Fixture) {
    let s = &f.store;
    let missing = JournalId(987_654);
    assert!(matches!(
        s.journal_succeeded(missing, None, &json!({})).await,
        Err(StateError::NotFound { .. })
    ));
    assert!(matches!(
        s.journal_failed(missing, "x").await,
        Err(StateError::NotFound { .. })
    ));
    // The journal belongs to a recorded run.
    assert!(matches!(
        s.journal_started(RunId::new(), "list.vip", "create", &json!({}))
            .await,
        Err(StateError::Query { .. })
    ));
}

async fn applied_plans_are_refused_a_second_time(f: &Fixture) {
    let s = &f.store;
    let run = s
        .begin_run(&RunStart {
            plan_id: Some("plan-1".into()),
            ..start("apply")
        })
        .await
        .unwrap();
    assert!(!s.is_plan_applied("plan-1").await.unwrap());
    s.mark_plan_applied("plan-1", run).await.unwrap();
    assert!(s.is_plan_applied("plan-1").await.unwrap());
    assert!(!s.is_plan_applied("plan-2").await.unwrap());

    let again = s.begin_run(&start("apply")).await.unwrap();
    match s.mark_plan_applied("plan-1", again).await {
        Err(StateError::PlanAlreadyApplied { plan_id }) => assert_eq!(plan_id, "plan-1"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn holder(run_id: RunId, actor: &str) -> LockHolder {
    LockHolder::current(run_id, actor, "apply")
}

async fn second_apply_lock_is_refused_naming_the_holder(f: &Fixture) {
    let first = RunId::new();
    let mut lock = f
        .store
        .acquire_apply_lock(&holder(first, "ann"))
        .await
        .unwrap();
    assert_eq!(lock.run_id(), first);
    lock.heartbeat().await.unwrap();

    // Another process, with its own connections.
    let other = f.reopen().await;
    let refused = other
        .acquire_apply_lock(&holder(RunId::new(), "bob"))
        .await
        .unwrap_err();
    let StateError::Locked { holder } = &refused else {
        panic!("expected Locked, got {refused:?}");
    };
    let expected = format!(
        "run {first} by ann on {} pid {} since ",
        hostname(),
        std::process::id()
    );
    assert!(holder.starts_with(&expected), "{holder}");
    assert!(holder.ends_with(" (apply)"), "{holder}");
    assert!(refused.to_string().contains(&first.to_string()));

    lock.release().await.unwrap();
    other.close().await;
}

async fn released_lock_can_be_taken_again(f: &Fixture) {
    let lock = f
        .store
        .acquire_apply_lock(&holder(RunId::new(), "ann"))
        .await
        .unwrap();
    lock.release().await.unwrap();

    let other = f.reopen().await;
    let second = RunId::new();
    let mut lock = other
        .acquire_apply_lock(&holder(second, "bob"))
        .await
        .unwrap();
    lock.heartbeat().await.unwrap();
    let refused = f
        .store
        .acquire_apply_lock(&holder(RunId::new(), "cy"))
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, StateError::Locked { holder } if holder.contains("by bob")),
        "{refused}"
    );
    lock.release().await.unwrap();
    other.close().await;
}

async fn racing_applies_get_the_lock_exactly_once(f: &Fixture) {
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(f.reopen().await);
    }
    let attempts = stores.iter().enumerate().map(|(i, store)| async move {
        store
            .acquire_apply_lock(&holder(RunId::new(), &format!("racer{i}")))
            .await
    });
    let results = futures::future::join_all(attempts).await;
    let mut won = Vec::new();
    for result in results {
        match result {
            Ok(lock) => won.push(lock),
            Err(StateError::Locked { holder }) => assert!(holder.contains("by racer"), "{holder}"),
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert_eq!(won.len(), 1, "exactly one apply holds the lock");
    for lock in won {
        lock.release().await.unwrap();
    }
    for store in stores {
        store.close().await;
    }
}

/// Write an `apply_lock` row the way a process that no longer runs would have left it.
async fn plant_sqlite_lock(url: &str, host: &str, pid: i64, heartbeat_age: chrono::Duration) {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
    let at = Utc::now() - heartbeat_age;
    sqlx::query(
        "INSERT INTO apply_lock (id, run_id, actor, host, pid, command, acquired_at, heartbeat_at) \
         VALUES (1, $1, 'ghost', $2, $3, 'apply', $4, $4)",
    )
    .bind(RunId::new().to_string())
    .bind(host)
    .bind(pid)
    .bind(at)
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
}

fn dead_pid() -> i64 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    i64::from(pid)
}

#[tokio::test]
async fn sqlite_lock_of_a_dead_process_on_this_host_is_taken_over() {
    let f = Fixture::sqlite().await;
    plant_sqlite_lock(&f.url, &hostname(), dead_pid(), chrono::Duration::zero()).await;
    let lock = f
        .store
        .acquire_apply_lock(&holder(RunId::new(), "ann"))
        .await
        .unwrap();
    lock.release().await.unwrap();
}

#[tokio::test]
async fn sqlite_lock_from_another_host_is_taken_over_only_once_silent() {
    let f = Fixture::sqlite().await;
    plant_sqlite_lock(&f.url, "elsewhere", 1, chrono::Duration::minutes(1)).await;
    let refused = f
        .store
        .acquire_apply_lock(&holder(RunId::new(), "ann"))
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, StateError::Locked { holder } if holder.contains("by ghost on elsewhere pid 1")),
        "{refused}"
    );

    let f = Fixture::sqlite().await;
    plant_sqlite_lock(&f.url, "elsewhere", 1, chrono::Duration::hours(1)).await;
    let lock = f
        .store
        .acquire_apply_lock(&holder(RunId::new(), "ann"))
        .await
        .unwrap();
    lock.release().await.unwrap();
}

#[tokio::test]
async fn sqlite_lock_taken_over_as_stale_is_reported_lost_and_not_released_by_its_old_holder() {
    use sqlx::Connection;
    let f = Fixture::sqlite().await;
    let mut old = f
        .store
        .acquire_apply_lock(&holder(RunId::new(), "ann"))
        .await
        .unwrap();
    // Make ann's lock look abandoned (no heartbeat for an hour, from another host).
    let mut conn = sqlx::SqliteConnection::connect(&f.url).await.unwrap();
    sqlx::query("UPDATE apply_lock SET host = 'elsewhere', heartbeat_at = $1")
        .bind(Utc::now() - chrono::Duration::hours(1))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    let new = f
        .store
        .acquire_apply_lock(&holder(RunId::new(), "bob"))
        .await
        .unwrap();
    assert!(matches!(
        old.heartbeat().await,
        Err(StateError::LockLost { .. })
    ));
    old.release().await.unwrap();
    let refused = f
        .store
        .acquire_apply_lock(&holder(RunId::new(), "cy"))
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, StateError::Locked { holder } if holder.contains("by bob")),
        "{refused}"
    );
    new.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lock_of_a_dropped_connection_is_released() {
    let Some(f) = Fixture::postgres().await else {
        return;
    };
    let lock = f
        .store
        .acquire_apply_lock(&holder(RunId::new(), "ann"))
        .await
        .unwrap();
    // As if the process died: no release, the connection just goes away.
    drop(lock);

    // The server notices the closed connection asynchronously.
    let deadline = Instant::now() + Duration::from_secs(10);
    let lock = loop {
        match f
            .store
            .acquire_apply_lock(&holder(RunId::new(), "bob"))
            .await
        {
            Ok(lock) => break lock,
            Err(StateError::Locked { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(other) => panic!("lock not released after the connection died: {other}"),
        }
    };
    lock.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_locks_in_different_schemas_are_independent() {
    let (Some(a), Some(b)) = (Fixture::postgres().await, Fixture::postgres().await) else {
        return;
    };
    let lock_a = a
        .store
        .acquire_apply_lock(&holder(RunId::new(), "ann"))
        .await
        .unwrap();
    let lock_b = b
        .store
        .acquire_apply_lock(&holder(RunId::new(), "bob"))
        .await
        .unwrap();
    lock_a.release().await.unwrap();
    lock_b.release().await.unwrap();
}

#[tokio::test]
async fn sqlite_store_creates_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("deep/project");
    let store = StateStore::connect(&StateStore::default_url(&project))
        .await
        .unwrap();
    assert!(project.join(".klsync/state.db").is_file());
    assert!(store.location().ends_with("deep/project/.klsync/state.db"));
}

/// Every message of an error and its sources.
fn full_message(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[tokio::test]
async fn connection_errors_never_show_the_password() {
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    let error = StateStore::connect("postgres://app:hunter2@127.0.0.1:1/state")
        .await
        .unwrap_err();
    assert!(matches!(error, StateError::Connect { .. }), "{error:?}");
    let shown = format!("{} {error:?}", full_message(&error));
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("127.0.0.1:1"), "{shown}");

    let error = StateStore::connect("mysql://app:hunter2@db/state")
        .await
        .unwrap_err();
    assert!(matches!(error, StateError::UnsupportedUrl { .. }));
    assert!(!full_message(&error).contains("hunter2"));
}

#[tokio::test]
async fn sqlite_heartbeat_keeps_a_lock_from_going_stale() {
    use sqlx::Connection;
    let f = Fixture::sqlite().await;
    let mut lock = f
        .store
        .acquire_apply_lock(&holder(RunId::new(), "ann"))
        .await
        .unwrap();
    // Seen from another host, ann's lock has been silent for an hour...
    let mut conn = sqlx::SqliteConnection::connect(&f.url).await.unwrap();
    sqlx::query("UPDATE apply_lock SET host = 'elsewhere', heartbeat_at = $1")
        .bind(Utc::now() - chrono::Duration::hours(1))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    // ...until it beats.
    lock.heartbeat().await.unwrap();
    let refused = f
        .store
        .acquire_apply_lock(&holder(RunId::new(), "bob"))
        .await
        .unwrap_err();
    assert!(matches!(refused, StateError::Locked { .. }), "{refused}");
    lock.release().await.unwrap();
}

/// Run one statement on the store's database behind klsync's back.
async fn exec_raw(f: &Fixture, sql: &str) {
    use sqlx::Connection;
    let sql = sqlx::AssertSqlSafe(sql.to_string());
    match f.store.backend() {
        StateBackend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&f.url).await.unwrap();
            sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
        }
        StateBackend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&f.url).await.unwrap();
            sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
        }
    }
}

/// The text column of a query run on the store's database behind klsync's back.
async fn strings_raw(f: &Fixture, sql: &str) -> Vec<String> {
    use sqlx::Connection;
    let sql = sqlx::AssertSqlSafe(sql.to_string());
    match f.store.backend() {
        StateBackend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&f.url).await.unwrap();
            sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap()
        }
        StateBackend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&f.url).await.unwrap();
            sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap()
        }
    }
}

async fn recorded_hashes(store: &StateStore, sync_id: &str) -> Vec<(String, [u8; 16])> {
    let mut seen = Vec::new();
    store
        .visit_sync_row_hashes(sync_id, |identifier, _, hash| {
            seen.push((identifier.to_string(), *hash))
        })
        .await
        .unwrap();
    seen.sort();
    seen
}

fn sync_row(identifier: &str, hash_byte: u8) -> SyncRowRecord {
    SyncRowRecord {
        identifier: identifier.into(),
        row_hash: hex::encode([hash_byte; 16]),
        applied: json!({"plan": "gold"}),
    }
}

/// A plan's view of a sync's recorded rows: the seed of their keys and `(key, short hash)`,
/// sorted.
async fn recorded_keys(store: &StateStore, sync_id: &str) -> (u64, Vec<(u64, u64)>) {
    let (keys, seen) = recorded_keys_and_scheme(store, sync_id).await;
    (keys.seed, seen)
}

/// [`recorded_keys`], with the scheme the plan is told to hash rows with.
async fn recorded_keys_and_scheme(
    store: &StateStore,
    sync_id: &str,
) -> (StoredKeys, Vec<(u64, u64)>) {
    let mut seed = None;
    let mut seen = Vec::new();
    store
        .visit_sync_row_keys(
            sync_id,
            |s| seed = Some(s),
            |key, hash| seen.push((key, hash)),
        )
        .await
        .unwrap();
    seen.sort();
    (seed.expect("the seed comes first"), seen)
}

/// `rows` keyed as a plan sees them under `seed`, sorted.
fn keyed(seed: u64, rows: &[(String, [u8; 16])]) -> Vec<(u64, u64)> {
    let mut keyed: Vec<_> = rows
        .iter()
        .map(|(identifier, hash)| (identifier_key(seed, identifier), short_row_hash(hash)))
        .collect();
    keyed.sort();
    keyed
}

/// Rows recorded under SHA-256 (every sync before XXH3) keep it, with or without a digest, so
/// upgrading klsync changes no plan; a sync moves to the current scheme when most of its rows
/// were recorded again under it (`--resync`), and a sync with no rows starts there.
async fn sync_rows_keep_the_hash_scheme_most_of_them_were_recorded_with(f: &Fixture) {
    let recorded = |identifier: &str, scheme: HashScheme, byte: u8| SyncRowRecord {
        identifier: identifier.into(),
        row_hash: hash_text(scheme, &[byte; 16]),
        applied: json!({}),
    };
    let scheme_of = |sync_id: &'static str| async move {
        recorded_keys_and_scheme(&f.store, sync_id).await.0.scheme
    };
    assert_eq!(scheme_of("new").await, HashScheme::CURRENT);
    let legacy: Vec<_> = (0..3)
        .map(|n| recorded(&format!("c{n}@x.test"), HashScheme::Sha256, n))
        .collect();
    f.store.record_sync_rows("shop", &legacy).await.unwrap();
    assert_eq!(scheme_of("shop").await, HashScheme::Sha256, "no digest");
    f.store.refresh_sync_digest("shop").await.unwrap();
    assert_eq!(scheme_of("shop").await, HashScheme::Sha256, "the digest's");
    // A resync records two of the three rows again under XXH3.
    let again: Vec<_> = (0..2)
        .map(|n| recorded(&format!("c{n}@x.test"), HashScheme::Xxh3, n + 10))
        .collect();
    f.store.record_sync_rows("shop", &again).await.unwrap();
    assert_eq!(scheme_of("shop").await, HashScheme::Xxh3, "no digest");
    f.store.refresh_sync_digest("shop").await.unwrap();
    let (keys, entries) = recorded_keys_and_scheme(&f.store, "shop").await;
    assert_eq!(keys.scheme, HashScheme::Xxh3, "the digest's");
    // Every row keeps its own hash: the one SHA-256 row just cannot match an XXH3 hash.
    assert_eq!(
        entries,
        keyed(
            keys.seed,
            &[
                ("c0@x.test".to_string(), [10; 16]),
                ("c1@x.test".to_string(), [11; 16]),
                ("c2@x.test".to_string(), [2; 16]),
            ]
        )
    );
}

async fn sync_row_digest_is_read_while_exact_and_dropped_by_every_write(f: &Fixture) {
    let rows: Vec<SyncRowRecord> = (0..300)
        .map(|n| sync_row(&format!("c{n}@x.test"), n as u8))
        .collect();
    f.store.record_sync_rows("customers", &rows).await.unwrap();
    f.store
        .record_sync_rows("other", &[sync_row("o@x.test", 9)])
        .await
        .unwrap();
    let expected: Vec<(String, [u8; 16])> = {
        let mut all: Vec<_> = rows
            .iter()
            .map(|r| {
                let hash: [u8; 16] = hex::decode(&r.row_hash).unwrap().try_into().unwrap();
                (r.identifier.clone(), hash)
            })
            .collect();
        all.sort();
        all
    };
    assert_eq!(recorded_hashes(&f.store, "customers").await, expected);
    // Without a digest the rows are read and keyed under a fresh seed each time.
    let (seed, keys) = recorded_keys(&f.store, "customers").await;
    assert_eq!(keys, keyed(seed, &expected));
    assert_ne!(recorded_keys(&f.store, "customers").await.0, seed);

    f.store.refresh_sync_digest("customers").await.unwrap();
    let (seed, keys) = recorded_keys(&f.store, "customers").await;
    assert_eq!(keys, keyed(seed, &expected));
    // The digest's own seed, every time: proof that the digest was read.
    f.store.refresh_sync_digest("customers").await.unwrap();
    assert_eq!(
        recorded_keys(&f.store, "customers").await,
        (seed, keys.clone())
    );

    // A change made behind klsync's back is not seen while the digest stands: the digest, not
    // the table, was read.
    exec_raw(
        f,
        "UPDATE sync_profile_rows SET row_hash = 'ffffffffffffffffffffffffffffffff' \
         WHERE identifier = 'c0@x.test'",
    )
    .await;
    assert_eq!(recorded_keys(&f.store, "customers").await, (seed, keys));

    // Any write through klsync drops the digest: the table (with that change) is read again.
    f.store
        .record_sync_rows("customers", &[sync_row("new@x.test", 7)])
        .await
        .unwrap();
    let now = recorded_hashes(&f.store, "customers").await;
    assert_eq!(now.len(), 301);
    assert!(now.contains(&("c0@x.test".to_string(), [0xff; 16])));
    assert!(now.contains(&("new@x.test".to_string(), [7; 16])));
    let (fresh, keys) = recorded_keys(&f.store, "customers").await;
    assert_eq!(keys, keyed(fresh, &now));
    f.store.refresh_sync_digest("customers").await.unwrap();
    let (seed, keys) = recorded_keys(&f.store, "customers").await;
    assert_eq!(keys, keyed(seed, &now));

    // A digest this build cannot read (another format, or keys computed differently) counts as
    // none: plans read the rows, and the next refresh replaces it.
    let foreign = match f.store.backend() {
        StateBackend::Sqlite => "X'4B4C443100'",
        StateBackend::Postgres => "'\\x4b4c443100'::bytea",
    };
    exec_raw(
        f,
        &format!(
            "UPDATE sync_profile_digests SET data = {foreign} \
             WHERE sync_id = 'customers' AND chunk = 0"
        ),
    )
    .await;
    let (unread, keys) = recorded_keys(&f.store, "customers").await;
    assert_eq!(keys, keyed(unread, &now));
    assert_ne!(recorded_keys(&f.store, "customers").await.0, unread);
    f.store.refresh_sync_digest("customers").await.unwrap();
    let (seed, keys) = recorded_keys(&f.store, "customers").await;
    assert_eq!(keys, keyed(seed, &now));
    assert_eq!(recorded_keys(&f.store, "customers").await.0, seed);

    f.store
        .forget_sync_rows("customers", &["new@x.test".to_string()])
        .await
        .unwrap();
    assert_eq!(recorded_keys(&f.store, "customers").await.1.len(), 300);
    // Other syncs keep their own rows.
    assert_eq!(
        recorded_hashes(&f.store, "other").await,
        vec![("o@x.test".to_string(), [9; 16])]
    );
}

/// A holder on another host: its pid says nothing here, only its heartbeat counts.
fn elsewhere(run_id: RunId, actor: &str) -> LockHolder {
    LockHolder {
        host: "elsewhere".into(),
        ..holder(run_id, actor)
    }
}

fn beating_every(heartbeat_every: Duration, stale_after: Duration) -> LockOptions {
    LockOptions {
        heartbeat_every,
        stale_after,
        ..LockOptions::default()
    }
}

/// Finding 3: the heartbeat was refreshed only between configuration changes, so an apply busy
/// in one long query for longer than the stale threshold lost its lock to a second apply. The
/// lock now beats on its own while the run does anything (here: nothing at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_lock_held_through_a_long_silence_is_not_taken_over() {
    let f = Fixture::sqlite().await;
    let stale_after = Duration::from_millis(600);
    let ann = f
        .store
        .acquire_apply_lock_with(
            &elsewhere(RunId::new(), "ann"),
            &beating_every(Duration::from_millis(50), stale_after),
            &mut |_| {},
        )
        .await
        .unwrap();
    // A run busy elsewhere for well over the stale threshold, without touching its lock.
    tokio::time::sleep(stale_after * 3).await;

    let other = f.reopen().await;
    let refused = other
        .acquire_apply_lock_with(
            &holder(RunId::new(), "bob"),
            &beating_every(Duration::from_secs(10), stale_after),
            &mut |_| {},
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, StateError::Locked { holder } if holder.contains("by ann on elsewhere")),
        "{refused}"
    );
    assert!(!ann.is_lost());
    ann.release().await.unwrap();
    other.close().await;
}

/// Write the holder row of another process into the SQLite state.
async fn plant_holder(url: &str, host: &str, pid: i64, heartbeat_age: chrono::Duration) -> RunId {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
    let run = RunId::new();
    let at = Utc::now() - heartbeat_age;
    sqlx::query(
        "INSERT INTO apply_lock (id, run_id, actor, host, pid, command, acquired_at, heartbeat_at) \
         VALUES (1, $1, 'ghost', $2, $3, 'apply', $4, $4)",
    )
    .bind(run.to_string())
    .bind(host)
    .bind(pid)
    .bind(at)
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    run
}

/// A process alive on this host keeps its lock however old its heartbeat (it may be stuck in a
/// query, or stopped, and still send later); once it is gone the lock is taken over, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_lock_of_a_live_process_here_is_kept_until_it_exits() {
    let f = Fixture::sqlite().await;
    let mut sleeper = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let pid = i64::from(sleeper.id());
    plant_holder(&f.url, &hostname(), pid, chrono::Duration::days(2)).await;
    let refused = f
        .store
        .acquire_apply_lock(&holder(RunId::new(), "ann"))
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, StateError::Locked { holder } if holder.contains(&format!("by ghost on {} pid {pid}", hostname()))),
        "{refused}"
    );

    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    let lock = f
        .store
        .acquire_apply_lock(&holder(RunId::new(), "ann"))
        .await
        .unwrap();
    let took_over = lock.took_over().expect("a takeover is reported");
    assert!(took_over.contains("by ghost"), "{took_over}");
    assert!(
        took_over.contains(&format!("its process {pid} no longer runs")),
        "{took_over}"
    );
    lock.release().await.unwrap();
}

/// A heartbeat that finds the lock gone (here: released with `state unlock`) makes the run
/// learn it, so it stops before sending more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_lock_released_from_outside_is_reported_lost_by_the_next_beat() {
    let f = Fixture::sqlite().await;
    let run = RunId::new();
    let mut lock = f
        .store
        .acquire_apply_lock_with(
            &holder(run, "ann"),
            &beating_every(Duration::from_millis(50), Duration::from_secs(600)),
            &mut |_| {},
        )
        .await
        .unwrap();
    let released = f
        .reopen()
        .await
        .force_unlock(&run.to_string()[..8])
        .await
        .unwrap();
    assert_eq!(released.run_id, run.to_string());
    assert_eq!(released.process_alive, Some(true));
    tokio::time::timeout(Duration::from_secs(30), lock.lost())
        .await
        .expect("the heartbeat task notices the lock is gone");
    assert!(lock.is_lost());
    assert!(matches!(
        lock.heartbeat().await,
        Err(StateError::LockLost { .. })
    ));
    // Someone else can take it now, and the old holder's release leaves that alone.
    let bob = f
        .store
        .acquire_apply_lock(&holder(RunId::new(), "bob"))
        .await
        .unwrap();
    lock.release().await.unwrap();
    let holder_now = f.store.lock_holder().await.unwrap().expect("bob holds it");
    assert!(holder_now.description.contains("by bob"));
    bob.release().await.unwrap();
}

async fn a_held_lock_is_waited_for_until_released(f: &Fixture) {
    let ann = f
        .store
        .acquire_apply_lock(&holder(RunId::new(), "ann"))
        .await
        .unwrap();
    let other = f.reopen().await;
    let (announced, waiting_started) = tokio::sync::oneshot::channel::<String>();
    let mut announced = Some(announced);
    let mut calls = 0;
    let options = LockOptions {
        timeout: Duration::from_secs(60),
        ..LockOptions::default()
    };
    let bob_holder = holder(RunId::new(), "bob");
    let mut waiting = |held: &str| {
        calls += 1;
        if let Some(announced) = announced.take() {
            let _ = announced.send(held.to_owned());
        }
    };
    let bob = other.acquire_apply_lock_with(&bob_holder, &options, &mut waiting);
    let release_ann = async {
        let held_by = waiting_started.await.unwrap();
        assert!(held_by.contains("by ann"), "{held_by}");
        ann.release().await.unwrap();
    };
    let (bob, ()) = tokio::join!(bob, release_ann);
    let bob = bob.unwrap();
    assert_eq!(calls, 1, "the wait is announced once");
    assert_eq!(
        bob.took_over(),
        None,
        "ann released it: nothing to take over"
    );
    bob.release().await.unwrap();
    other.close().await;
}

async fn a_lock_wait_gives_up_naming_the_holder(f: &Fixture) {
    let ann = f
        .store
        .acquire_apply_lock(&holder(RunId::new(), "ann"))
        .await
        .unwrap();
    let other = f.reopen().await;
    let mut calls = 0;
    let options = LockOptions {
        timeout: Duration::from_millis(700),
        ..LockOptions::default()
    };
    let refused = other
        .acquire_apply_lock_with(&holder(RunId::new(), "bob"), &options, &mut |_| calls += 1)
        .await
        .unwrap_err();
    assert_eq!(calls, 1);
    let StateError::LockWaitTimedOut { holder, waited } = &refused else {
        panic!("expected LockWaitTimedOut, got {refused:?}");
    };
    assert!(holder.contains("by ann"), "{holder}");
    assert_eq!(waited, "0s", "{refused}");
    ann.release().await.unwrap();
    other.close().await;
}

async fn unlock_refuses_another_run_and_an_empty_lock(f: &Fixture) {
    assert!(matches!(
        f.store.force_unlock("9d1c2e4f").await,
        Err(StateError::NotLocked)
    ));
    let ann = f
        .store
        .acquire_apply_lock(&holder(RunId::new(), "ann"))
        .await
        .unwrap();
    let refused = f.store.force_unlock("9d1c2e4f").await.unwrap_err();
    assert!(
        matches!(&refused, StateError::UnlockOtherRun { holder, .. } if holder.contains("by ann")),
        "{refused}"
    );
    let held = f.store.lock_holder().await.unwrap().expect("ann holds it");
    match f.store.backend() {
        StateBackend::Sqlite => assert_eq!(held.session, None),
        StateBackend::Postgres => {
            // A live session's advisory lock cannot be released from outside: say whose it
            // is and how to end it.
            let session = held.session.clone().expect("ann's session holds it");
            let refused = f.store.force_unlock(&held.run_id).await.unwrap_err();
            let text = refused.to_string();
            assert!(
                matches!(refused, StateError::LiveSession { .. }),
                "{refused:?}"
            );
            assert!(text.contains("by ann"), "{text}");
            assert!(
                text.contains(&format!("pg_terminate_backend({})", session.backend_pid)),
                "{text}"
            );
        }
    }
    ann.release().await.unwrap();
}

/// PostgreSQL: a holder whose session ended (killed process, lost connection) loses the
/// advisory lock with it; the next holder replaces its row and says so, and the old holder's
/// heartbeat finds the lock lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lock_of_an_ended_session_is_taken_over_with_a_message() {
    let Some(f) = Fixture::postgres().await else {
        return;
    };
    let ann = f
        .store
        .acquire_apply_lock_with(
            &holder(RunId::new(), "ann"),
            &beating_every(Duration::from_millis(50), Duration::from_secs(600)),
            &mut |_| {},
        )
        .await
        .unwrap();
    let session = f
        .store
        .lock_holder()
        .await
        .unwrap()
        .and_then(|held| held.session)
        .expect("ann's session holds the lock");
    exec_raw(
        &f,
        &format!("SELECT pg_terminate_backend({})", session.backend_pid),
    )
    .await;
    tokio::time::timeout(Duration::from_secs(30), ann.lost())
        .await
        .expect("ann's heartbeat notices its session is gone");

    // The row is left; `state unlock` could remove it, the next apply replaces it.
    let bob = f
        .store
        .acquire_apply_lock_with(
            &holder(RunId::new(), "bob"),
            &LockOptions {
                // The server may take a moment to drop the session's locks.
                timeout: Duration::from_secs(10),
                ..LockOptions::default()
            },
            &mut |_| {},
        )
        .await
        .unwrap();
    let took_over = bob.took_over().expect("the replaced row is reported");
    assert!(took_over.contains("by ann"), "{took_over}");
    assert!(took_over.contains("session ended"), "{took_over}");
    ann.release().await.unwrap_or_default();
    bob.release().await.unwrap();
}

/// Finding 8: simultaneous first runs on a new SQLite state each ran the migrations, and all
/// but one failed with `table managed_resources already exists`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_first_runs_at_once_migrate_a_new_sqlite_state_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = StateStore::default_url(dir.path());
    let connects = (0..10).map(|_| {
        let url = url.clone();
        tokio::spawn(async move { StateStore::connect(&url).await })
    });
    let stores: Vec<StateStore> = futures::future::join_all(connects)
        .await
        .into_iter()
        .map(|joined| {
            joined
                .unwrap()
                .unwrap_or_else(|err| panic!("{}", full_message(&err)))
        })
        .collect();
    // All of them see one working schema.
    let run = stores[3].begin_run(&start("apply")).await.unwrap();
    assert_eq!(stores[7].history(5).await.unwrap()[0].run_id, run);
    for store in stores {
        store.close().await;
    }
}

fn added(identifier: &str, profile_id: Option<&str>) -> SyncMemberRecord {
    SyncMemberRecord {
        identifier: identifier.into(),
        profile_id: profile_id.map(Into::into),
        origin: MemberOrigin::Added,
        removal_pending: None,
    }
}

/// A removal klsync could not resolve stays recorded with its reason (migration 0009); one it
/// made forgets the member and remembers the removal; recording a member again clears both.
async fn pending_removals_are_kept_with_their_reason_and_removals_remembered(f: &Fixture) {
    let store = &f.store;
    store
        .record_sync_members(
            "vip",
            &[added("a@x.test", Some("P1")), added("b@x.test", None)],
        )
        .await
        .unwrap();
    let before = Utc::now() - chrono::Duration::seconds(5);
    store
        .record_pending_removals("vip", &["b@x.test".into()], Some("not found"))
        .await
        .unwrap();
    store
        .record_member_removals(
            "vip",
            &[RemovedMember {
                identifier: "a@x.test".into(),
                profile_id: Some("P1".into()),
            }],
        )
        .await
        .unwrap();
    let members = store.sync_members("vip").await.unwrap();
    assert_eq!(members.len(), 1, "{members:?}");
    let pending = members[0].removal_pending.as_ref().expect("kept, pending");
    assert_eq!(
        (members[0].identifier.as_str(), pending.reason.as_str()),
        ("b@x.test", "not found")
    );
    assert!(pending.tried_at > before, "{pending:?}");
    // The query returns it again: klsync no longer owes the removal.
    store
        .record_pending_removals("vip", &["b@x.test".into()], None)
        .await
        .unwrap();
    assert_eq!(
        store.sync_members("vip").await.unwrap()[0].removal_pending,
        None
    );
    store
        .record_pending_removals("vip", &["b@x.test".into()], Some("not found"))
        .await
        .unwrap();
    assert_eq!(
        store.removed_members("vip").await.unwrap(),
        [RemovedMember {
            identifier: "a@x.test".into(),
            profile_id: Some("P1".into()),
        }]
    );
    assert!(store.removed_members("other").await.unwrap().is_empty());

    // Both come back into the query: recorded again, neither pending nor removed.
    store
        .record_sync_members("vip", &[added("a@x.test", None), added("b@x.test", None)])
        .await
        .unwrap();
    let members = store.sync_members("vip").await.unwrap();
    assert!(
        members.iter().all(|m| m.removal_pending.is_none()),
        "{members:?}"
    );
    assert!(store.removed_members("vip").await.unwrap().is_empty());
}

/// A list created again (the old one deleted outside klsync) starts with no records: its
/// members, sends and removals are forgotten together, and other lists keep theirs.
async fn forgetting_the_members_of_a_list_forgets_its_removals_and_sends(f: &Fixture) {
    let store = &f.store;
    let removed = |identifier: &str| RemovedMember {
        identifier: identifier.into(),
        profile_id: Some(format!("P-{identifier}")),
    };
    for key in ["vip", "other"] {
        store
            .record_sync_members(key, &[added("a@x.test", None), added("b@x.test", None)])
            .await
            .unwrap();
        store
            .record_member_removals(key, &[removed("a@x.test")])
            .await
            .unwrap();
        store
            .record_member_send(key, &format!("send-{key}"), &["c@x.test".into()])
            .await
            .unwrap();
    }

    store.forget_list_members("vip").await.unwrap();

    assert!(store.sync_members("vip").await.unwrap().is_empty());
    assert!(store.removed_members("vip").await.unwrap().is_empty());
    // The send is gone too: its job's outcome says nothing about the new list.
    let sends = "SELECT list_key FROM sync_member_sends ORDER BY list_key";
    assert_eq!(strings_raw(f, sends).await, ["other"]);
    let other: Vec<String> = store
        .sync_members("other")
        .await
        .unwrap()
        .into_iter()
        .map(|member| member.identifier)
        .collect();
    assert_eq!(other, ["b@x.test", "c@x.test"]);
    assert_eq!(
        store.removed_members("other").await.unwrap(),
        [removed("a@x.test")]
    );
    // Forgetting a list klsync recorded nothing for is a no-op.
    store.forget_list_members("new").await.unwrap();
}
