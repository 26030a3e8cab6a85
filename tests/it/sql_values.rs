//! SQL result values of every kind, from a real PostgreSQL and a real SQLite, through a
//! `profiles:` sync into the emulator (over HTTP): each value is either carried faithfully (the
//! emulator holds exactly it, and the next plan is empty) or refused before any request, with a
//! message naming the column, the row and what to do. The decisions are documented in
//! docs/sync.md ("Values").

use std::collections::BTreeMap;
use std::time::Duration;

use klsync::emulator::{self, EmulatorConfig, EmulatorHandle, RateLimitMode};
use klsync::klaviyo::{ClientConfig, KlaviyoClient};
use klsync::manifest::types::{IdentifyBy, ManifestFile, OnMissingRow, ProfileSyncSpec, QuerySpec};
use klsync::settings::Secret;
use klsync::sql::{QueryManager, QueryOptions};
use klsync::state::StateStore;
use klsync::state::testing::TestPostgres;
use klsync::sync::{self, DataPlan, ProfileSyncPlan};
use serde_json::{Value, json};
use sqlx::Connection;

/// A source database (its own PostgreSQL schema or SQLite file), the state, and the emulator.
struct Setup {
    url: String,
    queries: QueryManager,
    state: StateStore,
    emulator: EmulatorHandle,
    client: KlaviyoClient,
    _pg: Option<TestPostgres>,
    _dir: tempfile::TempDir,
}

impl Setup {
    async fn postgres() -> Setup {
        let pg = TestPostgres::create()
            .await
            .expect("these tests need the test PostgreSQL (KLSYNC_TEST_POSTGRES_URL)");
        Setup::with(pg.url().to_owned(), Some(pg)).await
    }

    async fn sqlite() -> Setup {
        Setup::with(String::new(), None).await
    }

    async fn with(url: String, pg: Option<TestPostgres>) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = if pg.is_some() {
            url
        } else {
            let url = format!("sqlite://{}", dir.path().join("source.db").display());
            sqlx::SqliteConnection::connect(&format!("{url}?mode=rwc"))
                .await
                .expect("create the SQLite source")
                .close()
                .await
                .expect("close");
            url
        };
        let state_url = format!("sqlite://{}", dir.path().join("state.db").display());
        let emulator = emulator::start(EmulatorConfig {
            rate_limits: RateLimitMode::Off,
            job_delay: Duration::from_millis(5),
            ..EmulatorConfig::default()
        })
        .await
        .expect("emulator");
        let mut config = ClientConfig::new(emulator.base_url.clone(), Secret::new("pk_emulator"));
        config.rate_limit_factor = None;
        Setup {
            queries: QueryManager::connect(&Secret::new(url.clone()), QueryOptions::default())
                .await
                .expect("source"),
            state: StateStore::connect(&state_url).await.expect("state"),
            client: KlaviyoClient::new(config).expect("client"),
            emulator,
            url,
            _pg: pg,
            _dir: dir,
        }
    }

    /// Run DDL/DML on the source (the sync's own connection is read-only).
    async fn exec(&self, sql: &str) {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        if self.url.starts_with("sqlite") {
            let mut conn = sqlx::SqliteConnection::connect(&self.url)
                .await
                .expect("sqlite");
            sqlx::raw_sql(sql).execute(&mut conn).await.expect("sql");
            conn.close().await.expect("close");
        } else {
            let mut conn = sqlx::PgConnection::connect(&self.url).await.expect("pg");
            sqlx::raw_sql(sql).execute(&mut conn).await.expect("sql");
            conn.close().await.expect("close");
        }
    }

    async fn plan(&self, manifest: &ManifestFile) -> Result<DataPlan, sync::SyncError> {
        sync::plan_data(
            manifest,
            &BTreeMap::new(),
            &self.queries,
            &self.state,
            None,
            &Default::default(),
        )
        .await
    }

    /// Plan and apply; the plan's one profile sync.
    async fn sync(&self, manifest: &ManifestFile) -> ProfileSyncPlan {
        let plan = self.plan(manifest).await.expect("plan");
        let report = sync::apply_data(
            &plan,
            manifest,
            &BTreeMap::new(),
            &self.queries,
            &self.client,
            &self.state,
            false,
        )
        .await
        .expect("apply");
        assert!(!report.has_failures(), "{report:?}");
        plan.profiles.into_iter().next().expect("one sync")
    }

    /// The properties the emulator holds for `email` (`None`: no such profile).
    fn stored(&self, email: &str) -> Option<Value> {
        self.emulator.seed(|s| {
            s.profiles
                .values()
                .find(|p| p.get_str("email") == Some(email))
                .map(|p| p.attributes.get("properties").cloned().unwrap_or(json!({})))
        })
    }

    fn profiles(&self) -> usize {
        self.emulator.seed(|s| s.profiles.len())
    }

    fn requests(&self) -> u64 {
        self.emulator.stats().total
    }
}

/// A `profiles:` sync `values` keyed by `email`, mapping each of `columns` to the property of
/// the same name.
fn manifest(sql: &str, columns: &[&str]) -> ManifestFile {
    ManifestFile {
        profiles: vec![ProfileSyncSpec {
            id: "values".into(),
            query: "values_query".into(),
            identify_by: IdentifyBy::Email,
            properties: columns
                .iter()
                .map(|c| ((*c).to_owned(), (*c).to_owned()))
                .collect(),
            on_missing_row: OnMissingRow::Keep,
        }],
        queries: BTreeMap::from([(
            "values_query".to_owned(),
            QuerySpec {
                sql: sql.to_owned(),
                params: Vec::new(),
                description: None,
            },
        )]),
        ..ManifestFile::default()
    }
}

/// The rejected rows of a plan: (row, identifier as returned, reason).
fn rejected(plan: &ProfileSyncPlan) -> Vec<(u64, String, String)> {
    plan.rejected_sample
        .iter()
        .map(|r| (r.row, r.identifier.clone(), r.reason.clone()))
        .collect()
}

fn nested(depth: usize) -> String {
    "[".repeat(depth) + "1" + &"]".repeat(depth)
}

// ---- PostgreSQL ------------------------------------------------------------------------------

/// Every supported PostgreSQL type arrives in Klaviyo as the JSON the decoding table in
/// `src/sql/decode.rs` promises, and the next plan finds nothing to change (the state recorded
/// exactly what Klaviyo holds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_values_are_carried_faithfully() {
    let setup = Setup::postgres().await;
    let columns = [
        "bytes",
        "doc",
        "docb",
        "deep",
        "ints",
        "texts",
        "at",
        "naive",
        "day",
        "clock",
        "id",
        "yes",
        "no",
        "num",
        "big_num",
        "f8",
        "f4",
        "i8",
        "long_text",
        "empty",
        "nothing",
    ];
    let sql = format!(
        "SELECT 'a@values.test' AS email,
                '\\xdeadbeef00'::bytea AS bytes,
                '{{\"a\": [1, {{\"b\": null}}], \"c\": \"é\\u0000x\"}}'::json AS doc,
                '{{\"z\": 1, \"a\": {{\"nested\": [true, 2.5, \"s\"]}}}}'::jsonb AS docb,
                '{deep}'::jsonb AS deep,
                ARRAY[1, NULL, 3]::int[] AS ints,
                ARRAY['a', NULL, 'c''d']::text[] AS texts,
                '2024-05-01 12:30:00.25+02'::timestamptz AS at,
                '2024-05-01 12:30:00'::timestamp AS naive,
                '2024-02-29'::date AS day,
                '23:59:59.5'::time AS clock,
                'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS id,
                true AS yes, false AS no,
                12.50::numeric AS num,
                12345678901234567890.123::numeric AS big_num,
                1.5::float8 AS f8, 0.1::float4 AS f4,
                9007199254740993::int8 AS i8,
                repeat('é', 40000) AS long_text,
                '' AS empty,
                NULL::text AS nothing",
        deep = nested(100),
    );
    let manifest = manifest(&sql, &columns);
    let planned = setup.sync(&manifest).await;
    assert_eq!(
        (planned.counts.new, planned.counts.rejected),
        (1, 0),
        "{:?}",
        rejected(&planned)
    );
    let mut deep: Value = json!(1);
    for _ in 0..100 {
        deep = json!([deep]);
    }
    // A null under `on_missing_row: keep` is not sent (it leaves the property as it is).
    let expected = json!({
        "bytes": "\\xdeadbeef00",
        "doc": {"a": [1, {"b": null}], "c": "é\u{0}x"},
        "docb": {"a": {"nested": [true, 2.5, "s"]}, "z": 1},
        "deep": deep,
        "ints": [1, null, 3],
        "texts": ["a", null, "c'd"],
        "at": "2024-05-01T10:30:00.250Z",
        "naive": "2024-05-01T12:30:00",
        "day": "2024-02-29",
        "clock": "23:59:59.500",
        "id": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "yes": true,
        "no": false,
        "num": 12.5,
        "big_num": "12345678901234567890.123",
        "f8": 1.5,
        "f4": 0.1,
        "i8": 9_007_199_254_740_993_i64,
        "long_text": "é".repeat(40_000),
        "empty": "",
    });
    assert_eq!(setup.stored("a@values.test"), Some(expected));
    let again = setup.plan(&manifest).await.expect("plan");
    assert!(!again.has_changes(), "{:?}", again.profiles[0].counts);
}

/// NaN and the infinities (float8 and numeric), JSON nested deeper than klsync reads, and a
/// profile over Klaviyo's 100 KB are refused row by row, before any request, naming the row,
/// its identifier, the column and what to do; the other rows are synced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_values_klaviyo_cannot_hold_are_refused_before_sending() {
    let setup = Setup::postgres().await;
    setup
        .exec(&format!(
            "CREATE TABLE customers (n int, email text, score float8, amount numeric, doc jsonb,
                                     note text, grid int[]);
             INSERT INTO customers (n, email, score, amount, doc, note) VALUES
               (1, 'ok@values.test', 1.5, 2.25, '{{\"a\": 1}}', 'fine'),
               (2, 'nan@values.test', 'NaN', 1, NULL, NULL),
               (3, 'inf@values.test', 'Infinity', 1, NULL, NULL),
               (4, 'ninf@values.test', '-Infinity', 1, NULL, NULL),
               (5, 'numnan@values.test', 1, 'NaN', NULL, NULL),
               (6, 'numinf@values.test', 1, 'Infinity', NULL, NULL),
               (7, 'deep@values.test', 1, 1, '{deep}', NULL),
               (8, 'huge@values.test', 1, 1, NULL, repeat('x', 1000000)),
               (9, 'deeper@values.test', 1, 1, '{deeper}', NULL),
               (10, 'grid@values.test', 1, 1, NULL, NULL);
             UPDATE customers SET grid = ARRAY[[1, 2], [3, 4]] WHERE n = 10;",
            deep = nested(300),
            deeper = nested(120),
        ))
        .await;
    let manifest = manifest(
        "SELECT email, score, amount, doc, note, grid FROM customers ORDER BY n",
        &["score", "amount", "doc", "note", "grid"],
    );
    // A query with a parameter cannot go through `COPY`: its rows are decoded one by one, and
    // must be refused the same way.
    let mut by_row = manifest.clone();
    let by_row_query = by_row.queries.get_mut("values_query").expect("query");
    by_row_query.sql =
        "SELECT email, score, amount, doc, note, grid FROM customers WHERE n > $1 ORDER BY n"
            .into();
    by_row_query.params = vec![json!(0)];
    let before = setup.requests();
    let planned = setup.plan(&manifest).await.expect("plan");
    let planned_by_row = setup.plan(&by_row).await.expect("plan");
    assert_eq!(setup.requests(), before, "planning sends nothing");
    assert_eq!(
        planned_by_row.profiles[0].counts,
        planned.profiles[0].counts
    );
    assert_eq!(
        rejected(&planned_by_row.profiles[0]),
        rejected(&planned.profiles[0])
    );
    let sync_plan = &planned.profiles[0];
    assert_eq!(
        (sync_plan.counts.new, sync_plan.counts.rejected),
        (1, 9),
        "{:?}",
        rejected(sync_plan)
    );
    // What `klsync plan` prints for the sync: each refused row with its number, identifier,
    // column and reason.
    let text = sync::render_text(&planned);
    assert!(
        text.contains(
            "! row 2 \"nan@values.test\": column `score` (FLOAT8): cannot decode value: the value is NaN: "
        ),
        "{text}"
    );
    let reasons = rejected(sync_plan);
    for (row, email, column, what) in [
        (2, "nan", "score", "the value is NaN"),
        (3, "inf", "score", "the value is Infinity"),
        (4, "ninf", "score", "the value is -Infinity"),
        (5, "numnan", "amount", "the value is NaN"),
        (6, "numinf", "amount", "the value is Infinity"),
        (7, "deep", "doc", "recursion limit"),
        (10, "grid", "grid", "2-dimensional arrays are not converted"),
    ] {
        let (_, identifier, reason) = reasons
            .iter()
            .find(|(r, _, _)| *r == row)
            .unwrap_or_else(|| panic!("row {row} refused: {reasons:?}"));
        assert_eq!(identifier, &format!("\"{email}@values.test\""));
        assert!(
            reason.contains(&format!("column `{column}`")) && reason.contains(what),
            "row {row}: {reason}"
        );
        if what.starts_with("the value") {
            assert!(reason.contains("NULLIF(col, 'NaN')"), "{reason}");
        }
    }
    for (row, what) in [
        (8, "over Klaviyo's limit"),
        (
            9,
            "property `doc` is nested 120 levels deep, more than the 100 klsync sends",
        ),
    ] {
        assert!(
            reasons
                .iter()
                .any(|(r, _, reason)| *r == row && reason.contains(what)),
            "row {row} {what:?}: {reasons:?}"
        );
    }

    // Apply reads the rows again and refuses the same ones: only the good row reaches Klaviyo,
    // and none of the refused ones becomes a profile, null or string.
    setup.sync(&manifest).await;
    assert_eq!(setup.profiles(), 1);
    assert_eq!(
        setup.stored("ok@values.test"),
        Some(json!({"score": 1.5, "amount": 2.25, "doc": {"a": 1}, "note": "fine"}))
    );

    // A row refused later keeps what Klaviyo has: it is not taken for a row gone from the
    // query, even with `on_missing_row: unset`.
    setup
        .exec("UPDATE customers SET score = 'NaN' WHERE n = 1")
        .await;
    let mut unset = manifest.clone();
    unset.profiles[0].on_missing_row = OnMissingRow::Unset;
    let later = setup.plan(&unset).await.expect("plan");
    let counts = later.profiles[0].counts;
    assert_eq!(
        (counts.rejected, counts.unset, counts.changed),
        (10, 0, 0),
        "{counts:?}"
    );
}

/// A column of a type klsync does not convert (interval) stops the whole sync with an error
/// naming the sync, the query, the column and the cast to use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unconvertible_types_stop_the_sync_naming_the_column() {
    let setup = Setup::postgres().await;
    let manifest = manifest(
        "SELECT 'a@values.test' AS email, '1 day 02:00'::interval AS wait",
        &["wait"],
    );
    let err = setup.plan(&manifest).await.unwrap_err().to_string();
    for expected in [
        "profiles sync `values`",
        "query `values_query`",
        "column `wait` has type INTERVAL",
        "cast it in the query (for example `wait::text`)",
    ] {
        assert!(err.contains(expected), "{expected:?} in {err}");
    }
    assert_eq!(setup.requests(), 0);
}

/// NULL and empty identifiers are refused (counted, with their row); two rows with the same
/// identifier (after normalisation) are both refused, since klsync cannot know which is right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_null_and_duplicate_identifiers_are_refused() {
    let setup = Setup::postgres().await;
    let manifest = manifest(
        "SELECT * FROM (VALUES (1, 'ok@values.test', 'a'), (2, NULL, 'b'), (3, '', 'c'),
                               (4, 'twin@values.test', 'd'), (5, ' TWIN@values.test', 'e'))
                 AS t(n, email, plan) ORDER BY n",
        &["plan"],
    );
    let planned = setup.sync(&manifest).await;
    assert_eq!(
        (planned.counts.new, planned.counts.rejected),
        (1, 4),
        "{:?}",
        rejected(&planned)
    );
    let reasons = rejected(&planned);
    assert!(
        reasons
            .iter()
            .any(|(row, id, reason)| *row == 2 && id == "null" && reason.contains("missing")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|(row, _, reason)| *row == 5
            && reason.contains("duplicate identifier twin@values.test")),
        "{reasons:?}"
    );
    assert_eq!(setup.profiles(), 1);
    assert_eq!(setup.stored("ok@values.test"), Some(json!({"plan": "a"})));
}

// ---- SQLite ----------------------------------------------------------------------------------

/// SQLite's storage classes: INTEGER, REAL, TEXT (with the declared `BOOLEAN` and `DATETIME`
/// conventions) and BLOB arrive as documented; JSON kept in TEXT stays a string (SQLite has no
/// JSON type); a 1 MB text is refused as over 100 KB; infinities are refused like PostgreSQL's;
/// NaN does not exist in SQLite (it stores NULL), so it cannot reach klsync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_values_are_carried_or_refused() {
    let setup = Setup::sqlite().await;
    setup
        .exec(
            "CREATE TABLE customers (n INTEGER, email TEXT, flag BOOLEAN, at DATETIME,
                                     score REAL, count INTEGER, doc TEXT, bytes BLOB, note TEXT);
             INSERT INTO customers VALUES
               (1, 'ok@values.test', 1, '2024-05-01 12:30:00', 1.5, 9007199254740993,
                '{\"a\": [1, 2]}', x'deadbeef00', 'é'),
               (2, 'inf@values.test', 0, NULL, 9e999, 1, NULL, NULL, NULL),
               (3, 'ninf@values.test', 0, NULL, -9e999, 1, NULL, NULL, NULL),
               (4, 'nan@values.test', 0, NULL, 0.0 / 0.0, 1, NULL, NULL, NULL),
               (5, 'huge@values.test', 0, NULL, 1, 1, NULL, NULL, hex(zeroblob(500000))),
               (6, NULL, 0, NULL, 1, 1, NULL, NULL, NULL),
               (7, 'twin@values.test', 0, NULL, 1, 1, NULL, NULL, NULL),
               (8, 'Twin@values.test', 1, NULL, 1, 1, NULL, NULL, NULL);",
        )
        .await;
    let manifest = manifest(
        "SELECT email, flag, at, score, count, doc, bytes, note FROM customers ORDER BY n",
        &["flag", "at", "score", "count", "doc", "bytes", "note"],
    );
    let planned = setup.sync(&manifest).await;
    let reasons = rejected(&planned);
    assert_eq!(
        (planned.counts.new, planned.counts.rejected),
        (2, 6),
        "{reasons:?}"
    );
    for (row, what) in [
        (
            2,
            "column `score` (REAL): cannot decode value: the value is Infinity",
        ),
        (3, "the value is -Infinity"),
        (5, "over Klaviyo's limit"),
        (6, "missing"),
        (8, "duplicate identifier twin@values.test"),
    ] {
        assert!(
            reasons
                .iter()
                .any(|(r, _, reason)| *r == row && reason.contains(what)),
            "row {row} {what:?}: {reasons:?}"
        );
    }
    assert_eq!(
        setup.stored("ok@values.test"),
        Some(json!({
            "flag": true,
            "at": "2024-05-01T12:30:00",
            "score": 1.5,
            "count": 9_007_199_254_740_993_i64,
            "doc": "{\"a\": [1, 2]}",
            "bytes": "\\xdeadbeef00",
            "note": "é",
        }))
    );
    // SQLite turned 0.0 / 0.0 into NULL, which `on_missing_row: keep` does not send.
    assert_eq!(
        setup.stored("nan@values.test"),
        Some(json!({"flag": false, "count": 1}))
    );
    assert_eq!(setup.profiles(), 2);
    assert!(!setup.plan(&manifest).await.expect("plan").has_changes());
}
