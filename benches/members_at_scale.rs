//! Membership at scale (issue 12): `cargo bench --bench members_at_scale`.
//!
//! Adds `KLSYNC_BENCH_ADDS` members (default 1,000) by email to a list that already holds
//! `KLSYNC_BENCH_LIST_MEMBERS` members (default 1,000,000, who joined another way), in mirror
//! mode, against the in-process emulator (rate limits off), and counts the requests the emulator
//! received, per operation, against the plan's bound (docs/sync.md, "Requests and time"). Data
//! and state are SQLite files in a temporary directory: no server needed.
//!
//! Prints one table; exits non-zero when the requests sent exceed the plan's bound or the bound
//! depends on the list's size.
//!
//! `KLSYNC_BENCH_MIRROR=1` measures the other case of issue 16 instead: a mirror list of
//! `KLSYNC_BENCH_LIST_MEMBERS` members that klsync added (a first apply of the query), then the
//! query changes by `KLSYNC_BENCH_ADDS` rows in and as many out, and the second apply's requests
//! and time are measured.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use klsync::emulator::{self, EmulatorConfig, RateLimitMode};
use klsync::klaviyo::{ClientConfig, KlaviyoClient};
use klsync::manifest::types::{
    IdentifyBy, ListSpec, ManifestFile, MembershipMode, MembershipSpec, QuerySpec,
};
use klsync::settings::Secret;
use klsync::sql::{QueryManager, QueryOptions};
use klsync::state::StateStore;
use klsync::sync::{self, DataPlan};
use serde_json::{Map, Value};

fn env_count(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn manifest() -> ManifestFile {
    ManifestFile {
        lists: vec![ListSpec {
            id: "big".into(),
            name: "Big".into(),
            opt_in_process: None,
            tags: Vec::new(),
            members: Some(MembershipSpec {
                query: "newcomers".into(),
                identify_by: IdentifyBy::Email,
                mode: MembershipMode::Mirror,
                max_removals: None,
            }),
            prevent_destroy: false,
        }],
        queries: BTreeMap::from([(
            "newcomers".to_string(),
            QuerySpec {
                sql: "SELECT email FROM newcomers".into(),
                params: Vec::new(),
                description: None,
            },
        )]),
        ..ManifestFile::default()
    }
}

fn main() {
    let members = env_count("KLSYNC_BENCH_LIST_MEMBERS", 1_000_000);
    let adds = env_count("KLSYNC_BENCH_ADDS", 1_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let ok = if std::env::var_os("KLSYNC_BENCH_MIRROR").is_some() {
        runtime.block_on(mirror(members, adds))
    } else {
        runtime.block_on(bench(members, adds))
    };
    if !ok {
        std::process::exit(1);
    }
}

/// What both scenarios run on: a SQLite table `newcomers` of `rows` emails (`prefix` + n), the
/// in-process emulator (rate limits off) with the list `Big` that `seed_list` makes, and the
/// client, sources and state klsync uses. Data and state live in a temporary directory.
struct Rig {
    _dir: tempfile::TempDir,
    data: sqlx::SqlitePool,
    handle: emulator::EmulatorHandle,
    client: KlaviyoClient,
    queries: QueryManager,
    state: StateStore,
    manifest: ManifestFile,
    lists: BTreeMap<String, String>,
}

impl Rig {
    async fn new(
        prefix: &str,
        rows: u64,
        seed_list: impl FnOnce(&mut emulator::State) -> String,
    ) -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_url = format!("sqlite://{}?mode=rwc", dir.path().join("data.db").display());
        let state_url = format!("sqlite://{}", dir.path().join("state.db").display());
        let data = sqlx::SqlitePool::connect(&data_url).await.expect("data");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE newcomers (email TEXT);
             WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < {rows})
             INSERT INTO newcomers SELECT '{prefix}' || n || '@shop.test' FROM seq;"
        )))
        .execute(&data)
        .await
        .expect("seed the data");
        let handle = emulator::start(EmulatorConfig {
            rate_limits: RateLimitMode::Off,
            job_delay: std::time::Duration::from_millis(50),
            ..EmulatorConfig::default()
        })
        .await
        .expect("emulator");
        let list_id = handle.seed(seed_list);
        let mut config = ClientConfig::new(handle.base_url.clone(), Secret::new("pk_emulator"));
        config.rate_limit_factor = None;
        Rig {
            _dir: dir,
            data,
            client: KlaviyoClient::new(config).expect("client"),
            queries: QueryManager::connect(&Secret::new(data_url), QueryOptions::default())
                .await
                .expect("connect the data"),
            state: StateStore::connect(&state_url).await.expect("state"),
            handle,
            manifest: manifest(),
            lists: BTreeMap::from([("big".to_string(), list_id)]),
        }
    }

    async fn plan(&self) -> DataPlan {
        let resync = Default::default();
        let (manifest, lists) = (&self.manifest, &self.lists);
        sync::plan_data(manifest, lists, &self.queries, &self.state, None, &resync)
            .await
            .expect("plan")
    }

    /// Applies `planned`: its wall time and the requests the emulator received, per operation.
    async fn apply(&self, planned: &DataPlan) -> (Duration, BTreeMap<String, u64>) {
        let before = self.handle.stats();
        let started = Instant::now();
        let (manifest, lists) = (&self.manifest, &self.lists);
        sync::apply_data(
            planned,
            manifest,
            lists,
            &self.queries,
            &self.client,
            &self.state,
            false,
        )
        .await
        .expect("apply");
        let wall = started.elapsed();
        let after = self.handle.stats();
        let sent = after
            .by_operation
            .iter()
            .map(|(op, n)| (op.clone(), n - before.count(op)))
            .filter(|(_, n)| *n > 0)
            .collect();
        (wall, sent)
    }

    /// Members of every list in the emulator.
    fn on_lists(&self) -> usize {
        self.handle
            .seed(|state| state.lists.values().map(|l| l.members.len()).sum::<usize>())
    }
}

async fn bench(members: u64, adds: u64) -> bool {
    let seeded = Instant::now();
    let rig = Rig::new("new", adds, |state| {
        let list = state.create_list("Big", None);
        let ids: Vec<String> = (0..members)
            .map(|n| {
                let mut attributes = Map::new();
                attributes.insert("email".into(), Value::String(format!("m{n}@shop.test")));
                state.create_profile(attributes)
            })
            .collect();
        state.add_members(&list, &ids);
        list
    })
    .await;
    eprintln!(
        "seeded {members} members in {:.1} s",
        seeded.elapsed().as_secs_f64()
    );

    let planned = rig.plan().await;
    let (wall, sent) = rig.apply(&planned).await;
    let lookups = sent
        .iter()
        .filter(|(op, _)| op.starts_with("GET /api/lists/") && op.ends_with("/profiles"))
        .map(|(_, n)| *n)
        .sum::<u64>();
    let bound_lookups = planned.memberships[0]
        .requests
        .get("get_profiles_for_list")
        .copied()
        .unwrap_or(0);
    let total_sent: u64 = sent.values().sum();
    let bound: u64 = planned.requests.values().sum();
    let on_list = rig.on_lists();
    rig.queries.close().await;

    let whole_read = members.div_ceil(100);
    let ok =
        total_sent <= bound && lookups == adds.div_ceil(100) && on_list as u64 == members + adds;
    println!(
        "\n| a (adds) | m (list members) | member lookups sent | plan bound ⌈a/100⌉ | whole-list read it replaces ⌈m/100⌉ | all requests sent / plan bound | wall time |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {adds} | {members} | {lookups} | {bound_lookups} | {whole_read} | {total_sent} / {bound} | {:.1} s |",
        wall.as_secs_f64()
    );
    println!("\nrequests by operation (emulator): {sent:?}");
    println!(
        "list members after: {on_list} (expected {}); {}",
        members + adds,
        if ok { "ok" } else { "MISSED" }
    );
    ok
}

/// A mirror list of `members` klsync added; the query then trades `churn` members for as many
/// new ones, and the apply of that change is measured.
/// A mirror list of `members` klsync added; the query then trades `churn` members for as many
/// new ones, and the apply of that change is measured.
async fn mirror(members: u64, churn: u64) -> bool {
    let rig = Rig::new("m", members, |state| state.create_list("Big", None)).await;
    let first = Instant::now();
    rig.apply(&rig.plan().await).await;
    eprintln!(
        "first apply of {members} members: {:.1} s",
        first.elapsed().as_secs_f64()
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DELETE FROM newcomers WHERE rowid <= {churn};
         WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < {churn})
         INSERT INTO newcomers SELECT 'new' || n || '@shop.test' FROM seq;"
    )))
    .execute(&rig.data)
    .await
    .expect("change the data");

    let planning = Instant::now();
    let planned = rig.plan().await;
    let plan_time = planning.elapsed();
    let counts = planned.memberships[0].counts;
    let bound: u64 = planned.requests.values().sum();
    let (wall, sent) = rig.apply(&planned).await;
    let total_sent: u64 = sent.values().sum();
    let on_list = rig.on_lists();
    rig.queries.close().await;
    let ok = counts.add == churn
        && counts.remove == churn
        && total_sent <= bound
        && on_list as u64 == members;
    println!("\n| list members | added | removed | requests sent / plan bound | plan | apply |");
    println!("|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {members} | {} | {} | {total_sent} / {bound} | {:.1} s | {:.1} s |",
        counts.add,
        counts.remove,
        plan_time.as_secs_f64(),
        wall.as_secs_f64()
    );
    println!("\nrequests by operation (emulator): {sent:?}");
    println!(
        "list members after: {on_list} (expected {members}); {}",
        if ok { "ok" } else { "MISSED" }
    );
    ok
}
