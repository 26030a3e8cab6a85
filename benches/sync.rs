//! Data sync benchmark (issue 5): run with `cargo bench --bench sync` (release profile).
//!
//! Needs PostgreSQL (`KLSYNC_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`)
//! and `psql` on the PATH. Everything runs in a fresh schema, dropped at the end:
//!
//! 1. **No-op plan** over a generated table of `KLSYNC_BENCH_ROWS` rows (default 1,000,000),
//!    every row already recorded as applied, side by side with `psql \copy` of the same query to
//!    /dev/null (copy, plan, copy: the better copy is the reference). The plan runs in a child
//!    process (this binary re-executed with `--plan-child`), so its peak RSS (`VmHWM`) is the
//!    plan's alone, not the data generation's.
//!
//!    Then **whole processes**, median of `KLSYNC_BENCH_WHOLE_ROUNDS` (5) interleaved rounds:
//!    the plan child from spawn to exit against each database's own client reading the same
//!    query into /dev/null: PostgreSQL with `database.copy: off` against `psql -c "SELECT ..."`,
//!    and, when `KLSYNC_TEST_MYSQL_URL` names a MariaDB (or MySQL) server, the same rows in a
//!    database of their own there against `mariadb --quick -e "SELECT ..."`. The state is the
//!    PostgreSQL one either way: the rows hash alike on every database.
//! 2. **Apply of 100,000 changed profiles** (`KLSYNC_BENCH_CHANGED`) against the in-process
//!    emulator with rate limits off: bulk jobs and polls counted from the emulator's stats, and
//!    the time the same requests take at Klaviyo's published limits (the plan's estimate).
//! 3. **Membership**: 200,000 profiles added to a list (`KLSYNC_BENCH_MEMBERS`), then 50,000
//!    removed (`KLSYNC_BENCH_REMOVED`), mirror mode; requests sent vs the plan's lower bound.
//!
//! Prints one table; exits non-zero when a target is missed. `KLSYNC_BENCH_PERF=<file>` records
//! the no-op plan child with `perf record -g` for profiling.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use klsync::emulator::{self, EmulatorConfig, EmulatorHandle, RateLimitMode};
use klsync::klaviyo::{ClientConfig, KlaviyoClient};
use klsync::manifest::types::{
    IdentifyBy, ListSpec, ManifestFile, MembershipMode, MembershipSpec, OnMissingRow,
    ProfileSyncSpec, QuerySpec,
};
use klsync::settings::Secret;
use klsync::sql::{QueryManager, QueryOptions};
use klsync::state::StateStore;
use klsync::state::testing::TestPostgres;
use klsync::sync::{self, DataPlan};
use sqlx::Connection;

/// The allocator of the `klsync` binary (src/main.rs), so the plan runs as it does there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PROFILE_SQL: &str = "SELECT email, plan, ltv FROM customers";
const MEMBER_SQL: &str = "SELECT email FROM vips";
const CHILD_FLAG: &str = "--plan-child";
/// Targets of issue 5.
const COPY_FACTOR: f64 = 1.5;
const PEAK_MB: f64 = 200.0;
const REQUEST_SLACK: f64 = 1.05;

fn env_count(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == CHILD_FLAG) {
        let url = args
            .get(at + 1)
            .expect("--plan-child URL MODE [STATE_URL [copy-off]]");
        let mode = args.get(at + 2).map_or("plan", String::as_str);
        let state = args.get(at + 3).unwrap_or(url);
        let copy = args.get(at + 4).is_none_or(|flag| flag != "copy-off");
        runtime().block_on(child(url, mode, state, copy));
        return;
    }
    let ok = runtime().block_on(bench());
    if !ok {
        std::process::exit(1);
    }
}

fn profile_manifest() -> ManifestFile {
    ManifestFile {
        profiles: vec![ProfileSyncSpec {
            id: "customers".into(),
            query: "customers".into(),
            identify_by: IdentifyBy::Email,
            properties: BTreeMap::from([
                ("plan".to_string(), "plan".to_string()),
                ("ltv".to_string(), "ltv".to_string()),
            ]),
            on_missing_row: OnMissingRow::Keep,
        }],
        queries: BTreeMap::from([("customers".to_string(), query(PROFILE_SQL))]),
        ..ManifestFile::default()
    }
}

fn member_manifest() -> ManifestFile {
    ManifestFile {
        lists: vec![ListSpec {
            id: "bench".into(),
            name: "Bench".into(),
            opt_in_process: None,
            tags: Vec::new(),
            members: Some(MembershipSpec {
                query: "vips".into(),
                identify_by: IdentifyBy::Email,
                mode: MembershipMode::Mirror,
                max_removals: None,
            }),
            prevent_destroy: false,
        }],
        queries: BTreeMap::from([("vips".to_string(), query(MEMBER_SQL))]),
        ..ManifestFile::default()
    }
}

fn query(sql: &str) -> QuerySpec {
    QuerySpec {
        sql: sql.to_string(),
        params: Vec::new(),
        description: None,
    }
}

async fn connect(url: &str) -> (QueryManager, StateStore) {
    connect_to(url, url, true).await
}

/// The source at `url` (COPY allowed or not), the state at `state`.
async fn connect_to(url: &str, state: &str, copy: bool) -> (QueryManager, StateStore) {
    let options = QueryOptions {
        copy,
        ..QueryOptions::default()
    };
    let queries = QueryManager::connect(&Secret::new(url.to_string()), options)
        .await
        .expect("connect the source");
    let state = StateStore::connect(state).await.expect("connect the state");
    (queries, state)
}

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// User plus system CPU time of this process so far, in ms (from `/proc/self/stat`).
fn cpu_ms() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    ticks * 1000 / 100
}

/// The child: connect, run the no-op plan (or only stream the query), report time and peak RSS.
async fn child(url: &str, mode: &str, state: &str, copy: bool) {
    let (queries, state) = connect_to(url, state, copy).await;
    let cpu_before = cpu_ms();
    let started = Instant::now();
    let rows = if mode == "stream" {
        use futures::StreamExt;
        queries
            .execute_query_batches(PROFILE_SQL, &[])
            .fold(0u64, |n, batch| async move {
                n + batch.map_or(0, |b| b.len() as u64)
            })
            .await
    } else if mode == "state" {
        let mut n = 0u64;
        state
            .visit_sync_row_keys("customers", |_| {}, |_, _| n += 1)
            .await
            .expect("read the state");
        n
    } else {
        let plan = sync::plan_data(
            &profile_manifest(),
            &BTreeMap::new(),
            &queries,
            &state,
            None,
            &Default::default(),
        )
        .await
        .expect("no-op plan");
        assert!(!plan.has_changes(), "the no-op plan found changes");
        plan.profiles[0].counts.unchanged
    };
    let elapsed = started.elapsed();
    println!(
        "CHILD ms={} rows={rows} hwm_kb={} cpu_ms={}",
        elapsed.as_millis(),
        peak_rss_kb(),
        cpu_ms().saturating_sub(cpu_before)
    );
}

struct ChildRun {
    elapsed: Duration,
    rows: u64,
    peak_mb: f64,
    cpu: Duration,
}

fn run_child(url: &str, mode: &str) -> ChildRun {
    run_child_with(url, mode, &[]).0
}

/// [`run_child`] with more arguments (the state's URL, `copy-off`); also the child's whole
/// time, from spawn to exit.
fn run_child_with(url: &str, mode: &str, more: &[&str]) -> (ChildRun, Duration) {
    let exe = std::env::current_exe().expect("own path");
    // KLSYNC_BENCH_PERF=<file>: record the child with `perf record -g` (the figures then include
    // perf's overhead).
    let mut command = match std::env::var("KLSYNC_BENCH_PERF") {
        Ok(file) if mode == "plan" => {
            let mut perf = Command::new("perf");
            perf.args(["record", "-g", "-o", &file, "--"]).arg(exe);
            perf
        }
        _ => Command::new(exe),
    };
    let started = Instant::now();
    let out = command
        .args([CHILD_FLAG, url, mode])
        .args(more)
        .output()
        .expect("run the plan child");
    let whole = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "plan child failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("CHILD "))
        .expect("child result line");
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|part| part.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .expect("child field")
    };
    let run = ChildRun {
        elapsed: Duration::from_millis(field("ms")),
        rows: field("rows"),
        peak_mb: field("hwm_kb") as f64 / 1024.0,
        cpu: Duration::from_millis(field("cpu_ms")),
    };
    (run, whole)
}

/// How long `command` takes to run to its end (its output goes to /dev/null, as a user's
/// `> /dev/null` would send it).
fn whole_run(command: &mut Command) -> Duration {
    let started = Instant::now();
    let status = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .status()
        .expect("run the database's client");
    let elapsed = started.elapsed();
    assert!(status.success(), "{command:?} failed");
    elapsed
}

/// `psql URL -c "SELECT ..."`: psql reads the whole result, then prints it.
fn psql_select(url: &str, sql: &str) -> Command {
    let mut command = Command::new("psql");
    command.arg(url.replace('+', "%20")).arg("-c").arg(sql);
    command
}

/// `mariadb --quick -e "SELECT ..."` on the database of `url` (`mysql://user[:password]@host:port/db`).
fn mariadb_select(url: &str, sql: &str) -> Command {
    let parsed = url::Url::parse(url).expect("MariaDB URL");
    let mut command = Command::new("mariadb");
    command
        .arg("--quick")
        .arg(format!(
            "--host={}",
            parsed.host_str().unwrap_or("127.0.0.1")
        ))
        .arg(format!("--port={}", parsed.port().unwrap_or(3306)))
        .arg(format!("--user={}", parsed.username()))
        .arg(parsed.path().trim_start_matches('/'))
        .arg("-e")
        .arg(sql);
    if let Some(password) = parsed.password() {
        // Not on the command line, where `ps` would show it.
        command.env("MYSQL_PWD", password);
    }
    command
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// A database of its own on the MariaDB server at `server`, dropped by [`drop_mysql`].
async fn create_mysql(server: &str) -> (String, String) {
    let database = format!("klsync_bench_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::MySqlConnection::connect(server)
        .await
        .expect("connect the MariaDB server");
    // The name is generated above from hex digits: nothing to inject.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
        .execute(&mut conn)
        .await
        .expect("create the bench database");
    conn.close().await.expect("close");
    let mut url = url::Url::parse(server).expect("MariaDB URL");
    url.set_path(&format!("/{database}"));
    (url.to_string(), database)
}

async fn drop_mysql(server: &str, database: &str) {
    let mut conn = sqlx::MySqlConnection::connect(server)
        .await
        .expect("connect");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE {database}")))
        .execute(&mut conn)
        .await
        .expect("drop the bench database");
    conn.close().await.expect("close");
}

/// Whole-process no-op plans against each database's own client (see the module docs).
async fn whole_process(pg_url: &str, rows: u64, report: &mut Report) {
    let rounds = env_count("KLSYNC_BENCH_WHOLE_ROUNDS", 5).max(1);
    let mysql = match std::env::var("KLSYNC_TEST_MYSQL_URL") {
        Ok(server) => {
            let (url, database) = create_mysql(&server).await;
            let started = Instant::now();
            let mut conn = sqlx::MySqlConnection::connect(&url).await.expect("connect");
            // MariaDB's sequence engine makes the rows; their values are the PostgreSQL ones.
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "CREATE TABLE customers (email VARCHAR(64), plan VARCHAR(16), ltv BIGINT, \
                 active BOOLEAN); \
                 INSERT INTO customers SELECT CONCAT('c', seq, '@shop.test'), 'basic', seq, TRUE \
                 FROM seq_0_to_{}",
                rows - 1
            )))
            .execute(&mut conn)
            .await
            .expect("generate the MariaDB rows");
            conn.close().await.expect("close");
            eprintln!("generated {rows} MariaDB rows in {:?}", started.elapsed());
            Some((server, url, database))
        }
        Err(_) => {
            eprintln!("KLSYNC_TEST_MYSQL_URL is not set: no MariaDB comparison");
            None
        }
    };
    let mut sides: Vec<(&str, String, &[&str], Command)> = vec![(
        "PostgreSQL, `database.copy: off`, vs `psql -c \"SELECT ...\"`",
        pg_url.to_string(),
        &["copy-off"],
        psql_select(pg_url, PROFILE_SQL),
    )];
    if let Some((_, url, _)) = &mysql {
        sides.push((
            "MariaDB vs `mariadb --quick -e \"SELECT ...\" > /dev/null`",
            url.clone(),
            &[],
            mariadb_select(url, PROFILE_SQL),
        ));
    }
    for (what, url, flags, mut client) in sides {
        let mut clients = Vec::new();
        let mut plans = Vec::new();
        let mut peak: f64 = 0.0;
        for _ in 0..rounds {
            clients.push(whole_run(&mut client));
            let mut more = vec![pg_url];
            more.extend_from_slice(flags);
            let (run, whole) = run_child_with(&url, "plan", &more);
            assert_eq!(run.rows, rows, "the plan did not see every row unchanged");
            peak = peak.max(run.peak_mb);
            plans.push(whole);
        }
        let list = |times: &[Duration]| {
            times
                .iter()
                .map(|t| format!("{:.2}", t.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (client_median, plan_median) = (median(clients.clone()), median(plans.clone()));
        let ratio = plan_median.as_secs_f64() / client_median.as_secs_f64();
        report.row(
            format!("whole process, median of {rounds}: {what}: the client"),
            format!(
                "{:.2} s ({} s)",
                client_median.as_secs_f64(),
                list(&clients)
            ),
            None,
        );
        report.row(
            format!("  no-op plan, {rows} rows (target <= {COPY_FACTOR}x)"),
            format!(
                "{:.2} s = {ratio:.2}x ({} s)",
                plan_median.as_secs_f64(),
                list(&plans)
            ),
            Some(ratio <= COPY_FACTOR),
        );
        report.row(
            format!("  its peak RSS, highest of {rounds} (target < {PEAK_MB} MB)"),
            format!("{peak:.0} MB"),
            Some(peak < PEAK_MB),
        );
    }
    if let Some((server, _, database)) = mysql {
        drop_mysql(&server, &database).await;
    }
}

fn psql_copy(url: &str, sql: &str) -> Duration {
    let started = Instant::now();
    // psql does not read `+` as a space in URL parameters.
    let out = Command::new("psql")
        .arg(url.replace('+', "%20"))
        .arg("-c")
        .arg(format!("\\copy ({sql}) TO '/dev/null'"))
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql \\copy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed()
}

async fn exec(url: &str, sql: &str) {
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&mut conn)
        .await
        .expect("statement");
    conn.close().await.expect("close");
}

async fn emulator() -> (EmulatorHandle, KlaviyoClient) {
    let handle = emulator::start(EmulatorConfig {
        rate_limits: RateLimitMode::Off,
        job_delay: Duration::from_millis(50),
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator");
    let mut config = ClientConfig::new(handle.base_url.clone(), Secret::new("pk_emulator"));
    config.rate_limit_factor = None;
    (handle, KlaviyoClient::new(config).expect("client"))
}

/// Requests per emulator operation (`METHOD /api/path`) between two snapshots.
fn sent_since(
    before: &klsync::emulator::StatsSnapshot,
    after: &klsync::emulator::StatsSnapshot,
) -> BTreeMap<String, u64> {
    after
        .by_operation
        .iter()
        .map(|(op, n)| (op.clone(), n - before.count(op)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

fn total(requests: &BTreeMap<String, u64>) -> u64 {
    requests.values().sum()
}

struct Report {
    lines: Vec<(String, String, String)>,
    ok: bool,
}

impl Report {
    fn row(&mut self, what: impl Into<String>, value: impl Into<String>, target: Option<bool>) {
        let verdict = match target {
            None => String::new(),
            Some(true) => "ok".to_string(),
            Some(false) => {
                self.ok = false;
                "MISSED".to_string()
            }
        };
        let line = (what.into(), value.into(), verdict);
        // As it goes, too: the whole run takes minutes.
        eprintln!("{} | {} | {}", line.0, line.1, line.2);
        self.lines.push(line);
    }

    /// Print the table; whether every target was met.
    fn finish(self) -> bool {
        let width = self.lines.iter().map(|l| l.0.len()).max().unwrap_or(0);
        println!("\n{:width$} | result | target", "measure");
        println!("{}", "-".repeat(width + 20));
        for (what, value, verdict) in &self.lines {
            println!("{what:width$} | {value} | {verdict}");
        }
        self.ok
    }
}

async fn bench() -> bool {
    let rows = env_count("KLSYNC_BENCH_ROWS", 1_000_000);
    let changed = env_count("KLSYNC_BENCH_CHANGED", 100_000).min(rows);
    let members = env_count("KLSYNC_BENCH_MEMBERS", 200_000);
    let removed = env_count("KLSYNC_BENCH_REMOVED", 50_000).min(members);
    let pg = TestPostgres::create()
        .await
        .expect("PostgreSQL (KLSYNC_TEST_POSTGRES_URL) is needed for this benchmark");
    let url = pg.url().to_string();
    let mut report = Report {
        lines: Vec::new(),
        ok: true,
    };

    // ---- 1. no-op plan vs psql \copy --------------------------------------------------------
    let started = Instant::now();
    exec(
        &url,
        &format!(
            "CREATE TABLE customers (email TEXT, plan TEXT, ltv BIGINT, active BOOLEAN); \
             INSERT INTO customers SELECT 'c' || n || '@shop.test', 'basic', n, TRUE \
             FROM generate_series(0, {}) AS n; ANALYZE customers",
            rows - 1
        ),
    )
    .await;
    let (queries, state) = connect(&url).await;
    // Record every row as applied, exactly as an apply would have.
    let numbers: Vec<u64> = (0..rows).collect();
    for batch in numbers.chunks(100_000) {
        let records: Vec<klsync::state::SyncRowRecord> = batch
            .iter()
            .map(|n| {
                let properties = serde_json::json!({"plan": "basic", "ltv": n});
                let map = properties.as_object().expect("an object");
                klsync::state::SyncRowRecord {
                    identifier: format!("c{n}@shop.test"),
                    row_hash: {
                        let scheme = sync::diff::HashScheme::CURRENT;
                        sync::diff::hash_text(scheme, &sync::diff::row_hash(scheme, map))
                    },
                    applied: properties.clone(),
                }
            })
            .collect();
        state
            .record_sync_rows("customers", &records)
            .await
            .expect("record rows");
    }
    // Apply ends by writing the sync's digest; so does this.
    state
        .refresh_sync_digest("customers")
        .await
        .expect("write the digest");
    eprintln!(
        "generated {rows} rows and their state in {:?}",
        started.elapsed()
    );

    // Interleaved rounds, so both sides see the same machine; the best of each is compared.
    let rounds = env_count("KLSYNC_BENCH_ROUNDS", 3).max(1);
    let mut copies = Vec::new();
    let mut plans = Vec::new();
    for _ in 0..rounds {
        copies.push(psql_copy(&url, PROFILE_SQL));
        plans.push(run_child(&url, "plan"));
    }
    let stream_run = run_child(&url, "stream");
    let state_run = run_child(&url, "state");
    let copy = copies.iter().min().copied().expect("one round");
    let plan_run = plans
        .iter()
        .min_by_key(|run| run.elapsed)
        .expect("one round");
    for run in &plans {
        assert_eq!(run.rows, rows, "the plan did not see every row unchanged");
    }
    assert_eq!(stream_run.rows, rows);
    let ratio = plan_run.elapsed.as_secs_f64() / copy.as_secs_f64();
    let list = |times: &mut dyn Iterator<Item = Duration>| {
        times
            .map(|t| format!("{:.2}", t.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    report.row(
        format!("psql \\copy of the query, {rows} rows (best of {rounds})"),
        format!(
            "{:.2} s ({} s)",
            copy.as_secs_f64(),
            list(&mut copies.iter().copied())
        ),
        None,
    );
    report.row(
        "the query streamed alone through QueryManager",
        format!("{:.2} s", stream_run.elapsed.as_secs_f64()),
        None,
    );
    report.row(
        "the stored row hashes read alone from the state",
        format!("{:.2} s", state_run.elapsed.as_secs_f64()),
        None,
    );
    report.row(
        format!("no-op plan, best of {rounds} (target <= {COPY_FACTOR}x psql)"),
        format!(
            "{:.2} s = {ratio:.2}x ({} s)",
            plan_run.elapsed.as_secs_f64(),
            list(&mut plans.iter().map(|run| run.elapsed))
        ),
        Some(ratio <= COPY_FACTOR),
    );
    report.row(
        "  CPU time of that plan (user + system, all threads)",
        format!("{:.2} s", plan_run.cpu.as_secs_f64()),
        None,
    );
    report.row(
        format!("no-op plan peak RSS (target < {PEAK_MB} MB)"),
        format!("{:.0} MB", plan_run.peak_mb),
        Some(plan_run.peak_mb < PEAK_MB),
    );

    whole_process(&url, rows, &mut report).await;

    if std::env::var_os("KLSYNC_BENCH_NOOP_ONLY").is_some() {
        queries.close().await;
        return report.finish();
    }

    // ---- 2. apply of `changed` changed profiles ---------------------------------------------
    exec(
        &url,
        &format!("UPDATE customers SET plan = 'pro' WHERE ltv < {changed}"),
    )
    .await;
    let (handle, client) = emulator().await;
    let manifest = profile_manifest();
    let no_lists = BTreeMap::new();
    let planned = sync::plan_data(
        &manifest,
        &no_lists,
        &queries,
        &state,
        None,
        &Default::default(),
    )
    .await
    .expect("plan the changes");
    assert_eq!(planned.profiles[0].counts.changed, changed);
    let before = handle.stats();
    let started = Instant::now();
    let applied = sync::apply_data(
        &planned, &manifest, &no_lists, &queries, &client, &state, false,
    )
    .await
    .expect("apply the changes");
    let wall = started.elapsed();
    let sent = sent_since(&before, &handle.stats());
    assert_eq!(applied.profiles[0].recorded, changed);
    let jobs = sent
        .get("POST /api/profile-bulk-import-jobs")
        .copied()
        .unwrap_or(0);
    let polls = sent
        .get("GET /api/profile-bulk-import-jobs/{job_id}")
        .copied()
        .unwrap_or(0);
    let max_jobs = changed.div_ceil(10_000);
    report.row(
        format!("apply {changed} changed profiles, rate limits off: wall time"),
        format!("{:.1} s", wall.as_secs_f64()),
        None,
    );
    report.row(
        format!("  bulk import jobs (target <= {max_jobs}) + polls"),
        format!(
            "{jobs} jobs + {polls} polls ({} requests in all)",
            total(&sent)
        ),
        Some(jobs <= max_jobs && polls >= jobs),
    );
    report.row(
        "  the same at Klaviyo's published limits (plan estimate)",
        format!("{} s for {:?}", planned.estimated_seconds, planned.requests),
        None,
    );
    drop(handle);

    // ---- 3. membership: add, then remove -----------------------------------------------------
    exec(
        &url,
        &format!(
            "CREATE TABLE vips (n BIGINT, email TEXT); \
             INSERT INTO vips SELECT n, 'm' || n || '@shop.test' FROM generate_series(0, {}) AS n",
            members - 1
        ),
    )
    .await;
    let (handle, client) = emulator().await;
    let list_id = handle.seed(|s| s.create_list("Bench", None));
    let lists = BTreeMap::from([("bench".to_string(), list_id)]);
    let manifest = member_manifest();
    for (step, sql) in [
        (format!("add {members} members"), None),
        (
            format!("remove {removed} members (mirror)"),
            Some(format!("DELETE FROM vips WHERE n < {removed}")),
        ),
    ] {
        if let Some(sql) = sql {
            exec(&url, &sql).await;
        }
        let planned: DataPlan = sync::plan_data(
            &manifest,
            &lists,
            &queries,
            &state,
            None,
            &Default::default(),
        )
        .await
        .expect("plan membership");
        let before = handle.stats();
        let started = Instant::now();
        sync::apply_data(
            &planned, &manifest, &lists, &queries, &client, &state, false,
        )
        .await
        .expect("apply membership");
        let wall = started.elapsed();
        let sent = sent_since(&before, &handle.stats());
        let bound = total(&planned.requests);
        let ratio = total(&sent) as f64 / bound.max(1) as f64;
        report.row(
            format!("membership: {step} (requests within 5% of the lower bound)"),
            format!(
                "{} sent / {bound} bound = {ratio:.3} in {:.1} s",
                total(&sent),
                wall.as_secs_f64()
            ),
            Some(ratio <= REQUEST_SLACK),
        );
        report.row("  sent, by operation", format!("{sent:?}"), None);
        report.row(
            "  lower bound (plan), at Klaviyo's limits",
            format!("{:?}, {} s", planned.requests, planned.estimated_seconds),
            None,
        );
    }
    queries.close().await;
    report.finish()
}
