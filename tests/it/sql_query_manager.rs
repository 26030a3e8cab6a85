//! QueryManager against the PostgreSQL on this machine and against SQLite files.
//!
//! PostgreSQL: `KLSYNC_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`).
//! Each test gets its own schema with a random name, selected through `search_path` in the URL,
//! and dropped afterwards.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use klsync::manifest::types::QuerySpec;
use klsync::settings::Secret;
use klsync::sql::{QueryManager, QueryOptions, Row, SqlError};
use serde_json::{Value, json};
use sqlx::{Connection, Executor};

const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn pg_base_url() -> String {
    std::env::var("KLSYNC_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_string())
}

/// A throwaway schema; dropped (with everything in it) when the test ends, even on panic.
struct PgSchema {
    name: String,
}

impl PgSchema {
    async fn new() -> PgSchema {
        let name = format!("klsync_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&pg_base_url()).await.unwrap();
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .await
            .unwrap();
        admin.close().await.unwrap();
        PgSchema { name }
    }

    /// The URL whose connections see only this schema.
    fn url(&self) -> String {
        let base = pg_base_url();
        let sep = if base.contains('?') { '&' } else { '?' };
        format!("{base}{sep}options=-c%20search_path%3D{}", self.name)
    }

    /// Run setup statements outside klsync, with write access.
    async fn setup(&self, sql: &str) {
        let mut conn = sqlx::PgConnection::connect(&self.url()).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    }

    async fn scalar_i64(&self, sql: &str) -> i64 {
        let mut conn = sqlx::PgConnection::connect(&self.url()).await.unwrap();
        let value: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
            .fetch_one(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        value
    }

    async fn manager(&self, options: QueryOptions) -> QueryManager {
        QueryManager::connect(&Secret::new(self.url()), options)
            .await
            .unwrap()
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on; use a fresh one.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(mut admin) = sqlx::PgConnection::connect(&pg_base_url()).await {
                    let _ = admin
                        .execute(sqlx::AssertSqlSafe(format!("DROP SCHEMA {name} CASCADE")))
                        .await;
                    let _ = admin.close().await;
                }
            });
        })
        .join();
    }
}

/// A SQLite database file in a temporary directory.
struct SqliteFile {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl SqliteFile {
    async fn new(setup: &str) -> SqliteFile {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.db");
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let mut conn = sqlx::SqliteConnection::connect_with(&options)
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(setup.to_string()))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        SqliteFile { _dir: dir, path }
    }

    fn url(&self) -> String {
        format!("sqlite://{}", self.path.display())
    }

    async fn manager(&self, options: QueryOptions) -> QueryManager {
        QueryManager::connect(&Secret::new(self.url()), options)
            .await
            .unwrap()
    }

    async fn scalar_i64(&self, sql: &str) -> i64 {
        let mut conn = sqlx::SqliteConnection::connect(&self.url()).await.unwrap();
        let value: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
            .fetch_one(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        value
    }
}

async fn rows(manager: &QueryManager, sql: &str, params: &[Value]) -> Result<Vec<Row>, SqlError> {
    manager.execute_query(sql, params).try_collect().await
}

fn object(value: Value) -> Row {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

// ---------------------------------------------------------------- PostgreSQL

#[tokio::test]
async fn pg_types_round_trip_faithfully_in_column_order() {
    let schema = PgSchema::new().await;
    schema
        .setup(
            "CREATE TABLE sample (
                int_col int4, big_col int8, num_col numeric(12,2), huge_col numeric,
                float_col float8, text_col text, flag bool, at timestamptz, day date,
                doc jsonb, nothing text, id uuid, raw bytea, tags text[]
            );
            INSERT INTO sample VALUES (
                42, 9007199254740993, 1234.50, 123456789012345678901234.5,
                1.25, 'héllo, \"world\"', true, '2024-05-01 12:30:00.25+02', '2024-05-01',
                '{\"a\": [1, {\"b\": null}], \"c\": \"d\"}', NULL,
                'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\\xdead01', ARRAY['x', NULL]
            );",
        )
        .await;
    let manager = schema.manager(QueryOptions::default()).await;
    let got = rows(&manager, "SELECT * FROM sample", &[]).await.unwrap();
    let expected = object(json!({
        "int_col": 42,
        "big_col": 9007199254740993_i64,
        "num_col": 1234.5,
        "huge_col": "123456789012345678901234.5",
        "float_col": 1.25,
        "text_col": "héllo, \"world\"",
        "flag": true,
        "at": "2024-05-01T10:30:00.250Z",
        "day": "2024-05-01",
        "doc": {"a": [1, {"b": null}], "c": "d"},
        "nothing": null,
        "id": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "raw": "\\xdead01",
        "tags": ["x", null],
    }));
    assert_eq!(got, vec![expected.clone()]);
    // Same order as the SELECT list, not alphabetical.
    let keys: Vec<&String> = got[0].keys().collect();
    assert_eq!(keys, expected.keys().collect::<Vec<_>>());
    assert_eq!(keys[0], "int_col");
    assert_eq!(keys[13], "tags");
}

#[tokio::test]
async fn pg_more_types_enums_domains_and_special_values() {
    let schema = PgSchema::new().await;
    schema
        .setup(
            "CREATE TYPE mood AS ENUM ('happy', 'sad');
             CREATE DOMAIN email AS text CHECK (VALUE LIKE '%@%');
             CREATE DOMAIN score AS int4;",
        )
        .await;
    let manager = schema.manager(QueryOptions::default()).await;
    let got = rows(
        &manager,
        "SELECT 7::int2 AS small, 0.1::float4 AS f4,
                -0.0042::numeric AS tiny, 100::numeric(10,3) AS whole,
                'ab'::char(4) AS padded, 'v'::varchar(3) AS short, 'happy'::mood AS feeling,
                'a@b.c'::email AS mail, 5::score AS points,
                '2024-05-01 12:30:00'::timestamp AS naive, '23:59:58.5'::time AS clock,
                '[1, \"x\"]'::json AS plain_json, ARRAY[1.5, 2]::float8[] AS floats,
                9007199254740993::numeric AS past_f64",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(
        got,
        vec![object(json!({
            "small": 7, "f4": 0.1, "tiny": -0.0042,
            "whole": 100, "padded": "ab  ", "short": "v", "feeling": "happy",
            "mail": "a@b.c", "points": 5, "naive": "2024-05-01T12:30:00",
            "clock": "23:59:58.500", "plain_json": [1, "x"], "floats": [1.5, 2.0],
            "past_f64": 9007199254740993_i64,
        }))]
    );
    // JSON has no NaN and no infinities: refused, naming the column (see src/sql/decode.rs).
    for (sql, column, spelling) in [
        ("SELECT 'NaN'::float8 AS nan", "nan", "NaN"),
        ("SELECT '-Infinity'::float4 AS low", "low", "-Infinity"),
        (
            "SELECT 'Infinity'::numeric AS num_inf",
            "num_inf",
            "Infinity",
        ),
        (
            "SELECT ARRAY[1, 'NaN']::float8[] AS floats",
            "floats",
            "NaN",
        ),
    ] {
        let err = rows(&manager, sql, &[]).await.unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("column `{column}`"))
                && err.contains(&format!("the value is {spelling}:")),
            "{sql}: {err}"
        );
    }
}

/// Queries without parameters are read through `COPY ... (FORMAT binary)`, others row by row;
/// both must give the very same values (profile row hashes depend on it).
#[tokio::test]
async fn pg_copy_and_row_by_row_reads_agree_value_for_value() {
    let schema = PgSchema::new().await;
    schema
        .setup(
            "CREATE TYPE mood AS ENUM ('happy', 'sad');
             CREATE DOMAIN score AS int4;
             CREATE TABLE sample (
                n int4, small int2, big int8, o oid, f4 float4, f8 float8, num numeric,
                txt text, vc varchar(9), ch char(3), flag bool, at timestamptz, naive timestamp,
                day date, clock time, doc jsonb, plain json, id uuid, raw bytea, feeling mood,
                points score, tags text[], ints int8[], moods mood[]
             );
             INSERT INTO sample VALUES
               (1, -7, 9007199254740993, 42, 0.1, -1.5e300, 1234.5000, 'héllo \"x\" \\ é',
                'v', 'ab', true, '2024-05-01 12:30:00.25+02', '1999-12-31 23:59:59.999999',
                '1970-01-01', '00:00:00.000001', '{\"b\": [1, null], \"a\": {}}', '[1, \"x\"]',
                'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\\xdead01', 'happy', 5,
                ARRAY['x', NULL, ''], ARRAY[]::int8[], ARRAY['sad', 'happy']::mood[]),
               (2, NULL, NULL, NULL, '3.4e38', '1.7e308', '-99999999999999999999.5', NULL, NULL, NULL, false,
                'infinity', '-infinity', '-infinity', '23:59:59.999999', 'null', NULL, NULL, '\\x',
                NULL, NULL, NULL, ARRAY[NULL]::int8[], NULL),
               (3, 32767, -9223372036854775808, 4294967295, -0.0, 5e-324, -0.000001, '', '', '',
                NULL, '0001-01-01 00:00:00+00', '9999-12-31 23:59:59', '0044-03-15 BC',
                '12:34:56', '[]', '{}', '00000000-0000-0000-0000-000000000000', NULL, 'sad', -1,
                ARRAY['a,b', '{c}'], ARRAY[1, 2, 3], ARRAY[]::mood[]);",
        )
        .await;
    let manager = schema.manager(QueryOptions::default()).await;
    let copied = rows(&manager, "SELECT * FROM sample ORDER BY n", &[])
        .await
        .unwrap();
    let row_by_row = rows(
        &manager,
        "SELECT * FROM sample WHERE $1::bool ORDER BY n",
        &[json!(true)],
    )
    .await
    .unwrap();
    assert_eq!(copied.len(), 3);
    assert_eq!(copied, row_by_row);
    // `sslmode=allow` is a URL klsync's own COPY connection leaves to sqlx, whose COPY then
    // reads: the same values again.
    let sqlx_copy = QueryManager::connect(
        &Secret::new(format!("{}&sslmode=allow", schema.url())),
        QueryOptions::default(),
    )
    .await
    .unwrap();
    let copied_by_sqlx = rows(&sqlx_copy, "SELECT * FROM sample ORDER BY n", &[])
        .await
        .unwrap();
    assert_eq!(copied, copied_by_sqlx);
    // A value neither path can carry (NaN) fails both the same way, in its row only.
    let nan = "SELECT n, CASE WHEN n = 2 THEN 'NaN'::float8 ELSE n END AS f FROM sample";
    let copied_nan = rows(&manager, &format!("{nan} ORDER BY n"), &[]).await;
    let by_row_nan = rows(
        &manager,
        &format!("{nan} WHERE $1::bool ORDER BY n"),
        &[json!(true)],
    )
    .await;
    assert_eq!(
        copied_nan.unwrap_err().to_string(),
        by_row_nan.unwrap_err().to_string()
    );
    assert_eq!(copied[1]["at"], json!("infinity"));
    assert_eq!(copied[1]["naive"], json!("-infinity"));
    assert_eq!(copied[0]["moods"], json!(["sad", "happy"]));

    // Both COPY readers run their query in the same session: sqlx's start-up parameters, the
    // schema's search path, read-only, the statement timeout; klsync's own connection is the one
    // that prepared nothing (sqlx prepares the statement on its connection before its COPY).
    let session = "SELECT current_setting('DateStyle') AS date_style, \
        current_setting('TimeZone') AS time_zone, current_setting('client_encoding') AS encoding, \
        current_setting('extra_float_digits') AS float_digits, \
        current_setting('transaction_read_only') AS read_only, \
        current_setting('statement_timeout') AS timeout, current_setting('search_path') AS path, \
        current_setting('application_name') AS application, \
        (SELECT count(*) FROM pg_prepared_statements) AS prepared, \
        (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()) AS tls, \
        current_setting('ssl') AS server_tls";
    let mut own = rows(&manager, session, &[]).await.unwrap().remove(0);
    let mut by_sqlx = rows(&sqlx_copy, session, &[]).await.unwrap().remove(0);
    assert_eq!(own.remove("prepared"), Some(json!(0)), "{own:?}");
    assert_ne!(by_sqlx.remove("prepared"), Some(json!(0)), "{by_sqlx:?}");
    // sslmode=prefer (the schema's URL) encrypts when the server can; allow tries plain first.
    let server_tls = own["server_tls"] == json!("on");
    assert_eq!(own.remove("tls"), Some(json!(server_tls)));
    assert_eq!(by_sqlx.remove("tls"), Some(json!(false)));
    assert_eq!(own, by_sqlx);
    assert_eq!(own["read_only"], json!("on"));
    assert_eq!(own["timeout"], json!("1min"));
    assert_eq!(own["path"], json!(schema.name));

    // The first read really went through COPY, the second really did not.
    let through_copy = rows(&manager, "SELECT current_query() AS q", &[])
        .await
        .unwrap();
    let text = through_copy[0]["q"].as_str().unwrap();
    assert!(text.starts_with("COPY (\nSELECT current_query()"), "{text}");
    let bound = rows(
        &manager,
        "SELECT current_query() AS q WHERE $1::bool",
        &[json!(true)],
    )
    .await
    .unwrap();
    assert!(!bound[0]["q"].as_str().unwrap().starts_with("COPY"));

    // Statements COPY refuses are read the ordinary way; a trailing semicolon is fine.
    let shown = rows(&manager, "SHOW statement_timeout", &[]).await.unwrap();
    assert_eq!(shown, vec![object(json!({"statement_timeout": "1min"}))]);
    for sql in [
        "SELECT 1 AS one;",
        "SELECT 1 AS one; -- and a comment",
        "VALUES (1)",
    ] {
        let got = rows(&manager, sql, &[]).await.unwrap();
        assert_eq!(got.len(), 1, "{sql}");
    }
    // An error in the middle of the stream arrives after the rows before it, and the pool
    // stays healthy (the connection that failed is not reused).
    let mut stream = std::pin::pin!(manager.execute_query(
        "SELECT 10 / (3 - n) AS x FROM generate_series(1, 5) AS n",
        &[]
    ));
    let mut got = Vec::new();
    let mut failure = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(row) => got.push(row),
            Err(err) => failure = Some(err),
        }
    }
    assert_eq!(got, vec![object(json!({"x": 5})), object(json!({"x": 10}))]);
    // The database's message travels as the error's source.
    let failure = format!("{:?}", failure.expect("the error arrives"));
    assert!(failure.contains("division by zero"), "{failure}");
    for _ in 0..6 {
        let again = rows(&manager, "SELECT count(*) AS n FROM sample", &[])
            .await
            .unwrap();
        assert_eq!(again, vec![object(json!({"n": 3}))]);
    }
}

#[tokio::test]
async fn pg_parameters_are_bound_never_interpolated() {
    let schema = PgSchema::new().await;
    schema
        .setup("CREATE TABLE x (email text); INSERT INTO x VALUES ('a@example.com');")
        .await;
    let manager = schema.manager(QueryOptions::default()).await;
    let hostile = "'; DROP TABLE x; --";
    let got = rows(
        &manager,
        "SELECT $1::text AS echoed, $2::int8 + 1 AS next, $3::float8 AS half,
                $4::bool AS flag, $5::jsonb -> 'k' AS k, $6::text IS NULL AS missing,
                (SELECT count(*) FROM x WHERE email = $1) AS matches",
        &[
            json!(hostile),
            json!(41),
            json!(0.5),
            json!(false),
            json!({"k": [1, 2]}),
            json!(null),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        got,
        vec![object(json!({
            "echoed": hostile, "next": 42, "half": 0.5, "flag": false,
            "k": [1, 2], "missing": true, "matches": 0,
        }))]
    );
    assert_eq!(schema.scalar_i64("SELECT count(*) FROM x").await, 1);
}

#[tokio::test]
async fn pg_writes_are_refused_and_change_nothing() {
    let schema = PgSchema::new().await;
    schema
        .setup("CREATE TABLE items (id int4); INSERT INTO items VALUES (1), (2);")
        .await;
    let manager = schema.manager(QueryOptions::default()).await;
    for write in [
        "INSERT INTO items VALUES (3)",
        "UPDATE items SET id = id + 10",
        "DELETE FROM items",
        "CREATE TABLE other (x int)",
        "WITH gone AS (DELETE FROM items RETURNING id) SELECT id FROM gone",
    ] {
        let err = rows(&manager, write, &[]).await.unwrap_err();
        assert!(matches!(err, SqlError::ReadOnly { .. }), "{write}: {err:?}");
        assert!(
            err.to_string().contains("sync queries are read-only"),
            "{err}"
        );
    }
    // Nor can a query leave the read-only transaction to write.
    assert!(
        rows(&manager, "SET TRANSACTION READ WRITE", &[])
            .await
            .is_err()
    );
    assert!(
        rows(&manager, "COMMIT; DELETE FROM items", &[])
            .await
            .is_err(),
        "two statements in one query must be refused"
    );
    assert_eq!(schema.scalar_i64("SELECT count(*) FROM items").await, 2);
    assert_eq!(schema.scalar_i64("SELECT sum(id) FROM items").await, 3);
    assert_eq!(
        schema
            .scalar_i64("SELECT count(*) FROM pg_tables WHERE tablename = 'other'")
            .await,
        0
    );
    // The pool is still healthy after the failed transactions.
    let ok = rows(&manager, "SELECT count(*) AS n FROM items", &[])
        .await
        .unwrap();
    assert_eq!(ok, vec![object(json!({"n": 2}))]);
}

#[tokio::test]
async fn pg_statement_timeout_cancels_a_slow_query() {
    let schema = PgSchema::new().await;
    let manager = schema
        .manager(QueryOptions {
            statement_timeout: Duration::from_secs(1),
            connect_retries: 0,
            ..QueryOptions::default()
        })
        .await;
    let started = Instant::now();
    let err = rows(&manager, "SELECT pg_sleep(5)", &[]).await.unwrap_err();
    assert!(
        matches!(err, SqlError::Timeout { timeout } if timeout == Duration::from_secs(1)),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // Each query sets the timeout inside its own transaction (SET LOCAL).
    let ok = rows(
        &manager,
        "SELECT current_setting('statement_timeout') AS t",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(ok, vec![object(json!({"t": "1s"}))]);
}

#[tokio::test]
async fn pg_rows_stream_and_an_abandoned_stream_is_rolled_back() {
    let schema = PgSchema::new().await;
    let manager = schema.manager(QueryOptions::default()).await;
    let first: Vec<Row> = manager
        .execute_query("SELECT n FROM generate_series(1, 1000000) AS n", &[])
        .take(3)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        first,
        vec![
            object(json!({"n": 1})),
            object(json!({"n": 2})),
            object(json!({"n": 3}))
        ]
    );
    let again = rows(&manager, "SELECT 1 AS one", &[]).await.unwrap();
    assert_eq!(again, vec![object(json!({"one": 1}))]);
}

#[tokio::test]
async fn pg_duplicate_and_unsupported_columns_are_clear_errors() {
    let schema = PgSchema::new().await;
    let manager = schema.manager(QueryOptions::default()).await;
    let err = rows(&manager, "SELECT 1 AS a, 2 AS a", &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, SqlError::DuplicateColumn { ref column } if column == "a"),
        "{err:?}"
    );
    let err = rows(&manager, "SELECT interval '1 day' AS span", &[])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("span::text"), "{err}");
    let err = rows(&manager, "SELECT $1::int8 AS n", &[json!(u64::MAX)])
        .await
        .unwrap_err();
    assert!(
        matches!(err, SqlError::Param { position: 1, .. }),
        "{err:?}"
    );
}

/// Issue 13: a database error is the database's message at a place in the user's SQL, never
/// the line of PostgreSQL's own source file that sqlx appends (`at line 1180`), whichever path
/// ran the query (COPY without parameters, row by row with them).
#[tokio::test]
async fn pg_errors_point_into_the_users_sql() {
    let schema = PgSchema::new().await;
    let manager = schema.manager(QueryOptions::default()).await;
    let sql = "SELECT email\n  FROM customerz\n WHERE 1 = 1";
    for params in [vec![], vec![json!(1)]] {
        let sql = if params.is_empty() {
            sql.to_owned()
        } else {
            format!("{sql} AND 1 = $1")
        };
        let err = rows(&manager, &sql, &params).await.unwrap_err();
        let text = err.to_string();
        assert_eq!(
            text, "relation \"customerz\" does not exist (at line 2, column 8 of the query)",
            "{params:?}"
        );
    }
    let err = rows(&manager, "SELECT 1 AS one ORDER BY", &[])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "syntax error at end of input (at line 1, column 25 of the query)"
    );
    let err = rows(&manager, "SELECT 1 / 0 AS n", &[]).await.unwrap_err();
    assert_eq!(err.to_string(), "division by zero");
}

#[tokio::test]
async fn pg_saved_queries_save_load_update_and_list() {
    let schema = PgSchema::new().await;
    let manager = schema.manager(QueryOptions::default()).await;
    saved_queries_save_load_update_and_list(
        &manager,
        // Only this test's schema: other tests create the table in theirs concurrently.
        async || {
            schema
                .scalar_i64(
                    "SELECT count(*) FROM pg_tables \
                     WHERE tablename = 'saved_queries' AND schemaname = current_schema()",
                )
                .await
        },
        async || {
            schema
                .scalar_i64("SELECT count(*) FROM saved_queries WHERE name = 'vip'")
                .await
        },
        "SELECT 2 AS v WHERE $1::int > 0",
    )
    .await;
}

/// Saving, reading, updating, listing and deleting saved queries on any database:
/// `tables` counts the saved_queries tables the test's database has, `vips` the rows named
/// `vip`, and `with_param` is a query with one parameter in the database's syntax.
pub(crate) async fn saved_queries_save_load_update_and_list(
    manager: &QueryManager,
    tables: impl AsyncFn() -> i64,
    vips: impl AsyncFn() -> i64,
    with_param: &str,
) {
    // Reading never creates the table.
    assert_eq!(manager.load_query("vip").await.unwrap(), None);
    assert!(manager.list_queries().await.unwrap().is_empty());
    assert_eq!(tables().await, 0);

    let first = manager
        .save_query("vip", "SELECT 1 AS v", Some("Big spenders"), &[json!(5)])
        .await
        .unwrap();
    assert_eq!(first.created_at, first.updated_at);
    let loaded = manager.load_query("vip").await.unwrap().unwrap();
    assert_eq!(loaded, first);
    assert_eq!(loaded.sql, "SELECT 1 AS v");
    assert_eq!(loaded.description.as_deref(), Some("Big spenders"));
    assert_eq!(loaded.params, vec![json!(5)]);

    // The clock of MySQL's saved_queries counts milliseconds.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = manager
        .save_query("vip", with_param, None, &[json!(7), json!("x")])
        .await
        .unwrap();
    assert_eq!(second.sql, with_param);
    assert_eq!(
        second.description.as_deref(),
        Some("Big spenders"),
        "kept when omitted"
    );
    assert_eq!(second.params, vec![json!(7), json!("x")]);
    assert_eq!(second.created_at, first.created_at);
    assert!(
        second.updated_at > first.updated_at,
        "{second:?} vs {first:?}"
    );
    assert_eq!(vips().await, 1);
    // Names compare exactly, whatever the database's collation.
    assert_eq!(manager.load_query("VIP").await.unwrap(), None);

    manager
        .save_query("alpha", "SELECT 3", None, &[])
        .await
        .unwrap();
    let names: Vec<String> = manager
        .list_queries()
        .await
        .unwrap()
        .into_iter()
        .map(|q| q.name)
        .collect();
    assert_eq!(names, ["alpha", "vip"]);
    assert!(
        manager
            .load_query("alpha")
            .await
            .unwrap()
            .unwrap()
            .params
            .is_empty()
    );
    assert!(matches!(
        manager.save_query("", "SELECT 1", None, &[]).await,
        Err(SqlError::InvalidName { .. })
    ));
    assert!(manager.delete_query("alpha").await.unwrap());
    assert!(!manager.delete_query("alpha").await.unwrap());
    let names: Vec<String> = manager
        .list_queries()
        .await
        .unwrap()
        .into_iter()
        .map(|q| q.name)
        .collect();
    assert_eq!(names, ["vip"]);
}

#[tokio::test]
async fn pg_resolve_prefers_the_manifest_then_the_table() {
    let schema = PgSchema::new().await;
    let manager = schema.manager(QueryOptions::default()).await;
    manager
        .save_query("shared", "SELECT 'table'", None, &[])
        .await
        .unwrap();
    manager
        .save_query("stored", "SELECT 'stored'", Some("d"), &[json!(1)])
        .await
        .unwrap();
    let mut manifest = BTreeMap::new();
    manifest.insert(
        "shared".to_string(),
        QuerySpec {
            sql: "SELECT 'manifest'".into(),
            params: vec![],
            description: None,
        },
    );
    assert_eq!(
        manager
            .resolve_query("shared", &manifest)
            .await
            .unwrap()
            .sql,
        "SELECT 'manifest'"
    );
    let stored = manager.resolve_query("stored", &manifest).await.unwrap();
    assert_eq!(stored.sql, "SELECT 'stored'");
    assert_eq!(stored.params, vec![json!(1)]);
    assert!(matches!(
        manager.resolve_query("nowhere", &manifest).await,
        Err(SqlError::NotFound { .. })
    ));
}

#[tokio::test]
async fn connect_errors_never_show_the_password() {
    let err = QueryManager::connect(
        &Secret::new("postgres://klsync:hunter2@127.0.0.1:1/test"),
        QueryOptions {
            statement_timeout: Duration::from_secs(1),
            connect_retries: 1,
            ..QueryOptions::default()
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, SqlError::Connect { attempts: 2, .. }),
        "{err:?}"
    );
    let mut shown = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        shown.push_str(&cause.to_string());
        source = cause.source();
    }
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(!format!("{err:?}").contains("hunter2"));
    assert!(shown.contains("klsync:***@127.0.0.1:1"), "{shown}");

    let err = QueryManager::connect(&Secret::new("oracle://u:p@h/db"), QueryOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, SqlError::UnsupportedUrl { .. }), "{err:?}");
}

// ---------------------------------------------------------------- SQLite

#[tokio::test]
async fn sqlite_types_round_trip_by_storage_class() {
    let db = SqliteFile::new(
        "CREATE TABLE sample (n INTEGER, r REAL, t TEXT, flag BOOLEAN, at DATETIME, b BLOB, z TEXT);
         INSERT INTO sample VALUES (9007199254740993, 1.25, 'héllo', 1, '2024-05-01 12:30:00', x'dead01', NULL);",
    )
    .await;
    let manager = db.manager(QueryOptions::default()).await;
    let got = rows(&manager, "SELECT * FROM sample", &[]).await.unwrap();
    assert_eq!(
        got,
        vec![object(json!({
            "n": 9007199254740993_i64, "r": 1.25, "t": "héllo", "flag": true,
            "at": "2024-05-01T12:30:00", "b": "\\xdead01", "z": null,
        }))]
    );
}

#[tokio::test]
async fn sqlite_parameters_are_bound_never_interpolated() {
    let db =
        SqliteFile::new("CREATE TABLE x (email TEXT); INSERT INTO x VALUES ('a@example.com');")
            .await;
    let manager = db.manager(QueryOptions::default()).await;
    let hostile = "'; DROP TABLE x; --";
    let got = rows(
        &manager,
        "SELECT $1 AS echoed, $2 + 1 AS next, $3 AS half, $4 AS flag, json_extract($5, '$.k[1]') AS k,
                $6 IS NULL AS missing, (SELECT count(*) FROM x WHERE email = $1) AS matches",
        &[json!(hostile), json!(41), json!(0.5), json!(true), json!({"k": [1, 2]}), json!(null)],
    )
    .await
    .unwrap();
    assert_eq!(
        got,
        vec![object(json!({
            "echoed": hostile, "next": 42, "half": 0.5, "flag": 1, "k": 2,
            "missing": 1, "matches": 0,
        }))]
    );
    assert_eq!(db.scalar_i64("SELECT count(*) FROM x").await, 1);
}

#[tokio::test]
async fn sqlite_writes_are_refused_and_change_nothing() {
    let db = SqliteFile::new("CREATE TABLE items (id INTEGER); INSERT INTO items VALUES (1), (2);")
        .await;
    let manager = db.manager(QueryOptions::default()).await;
    for write in [
        "INSERT INTO items VALUES (3)",
        "UPDATE items SET id = id + 10",
        "DELETE FROM items",
        "CREATE TABLE other (x INTEGER)",
        "DROP TABLE items",
        // A read-only file alone would allow this; PRAGMA query_only refuses it too.
        "CREATE TEMP TABLE scratch (x INTEGER)",
    ] {
        let err = rows(&manager, write, &[]).await.unwrap_err();
        assert!(matches!(err, SqlError::ReadOnly { .. }), "{write}: {err:?}");
        assert!(
            err.to_string().contains("sync queries are read-only"),
            "{err}"
        );
    }
    assert_eq!(db.scalar_i64("SELECT count(*) FROM items").await, 2);
    assert_eq!(db.scalar_i64("SELECT sum(id) FROM items").await, 3);
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM sqlite_master WHERE name = 'other'")
            .await,
        0
    );
}

#[tokio::test]
async fn sqlite_statement_timeout_interrupts_a_runaway_query() {
    let db = SqliteFile::new("CREATE TABLE t (x INTEGER);").await;
    let manager = db
        .manager(QueryOptions {
            statement_timeout: Duration::from_secs(1),
            connect_retries: 0,
            ..QueryOptions::default()
        })
        .await;
    let started = Instant::now();
    let err = rows(
        &manager,
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
        &[],
    )
    .await
    .unwrap_err();
    assert!(matches!(err, SqlError::Timeout { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // The deadline does not follow the connection back into the pool.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let ok = rows(
        &manager,
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000) SELECT count(*) AS n FROM c",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(ok, vec![object(json!({"n": 100000}))]);
}

#[tokio::test]
async fn sqlite_saved_queries_save_load_update_and_list() {
    let db = SqliteFile::new("CREATE TABLE t (x INTEGER);").await;
    let manager = db.manager(QueryOptions::default()).await;
    assert_eq!(manager.load_query("vip").await.unwrap(), None);
    assert!(manager.list_queries().await.unwrap().is_empty());
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM sqlite_master WHERE name = 'saved_queries'")
            .await,
        0
    );
    let first = manager
        .save_query("vip", "SELECT 1", Some("Big spenders"), &[json!({"a": 1})])
        .await
        .unwrap();
    assert_eq!(manager.load_query("vip").await.unwrap().unwrap(), first);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = manager
        .save_query("vip", "SELECT 2", None, &[])
        .await
        .unwrap();
    assert_eq!(second.description.as_deref(), Some("Big spenders"));
    assert!(second.params.is_empty());
    assert_eq!(second.created_at, first.created_at);
    assert!(
        second.updated_at > first.updated_at,
        "{second:?} vs {first:?}"
    );
    manager
        .save_query("alpha", "SELECT 3", None, &[])
        .await
        .unwrap();
    let names: Vec<String> = manager
        .list_queries()
        .await
        .unwrap()
        .into_iter()
        .map(|q| q.name)
        .collect();
    assert_eq!(names, ["alpha", "vip"]);
    assert_eq!(db.scalar_i64("SELECT count(*) FROM saved_queries").await, 2);
    assert!(manager.delete_query("vip").await.unwrap());
    assert!(!manager.delete_query("vip").await.unwrap());
    assert_eq!(manager.load_query("vip").await.unwrap(), None);
    assert_eq!(db.scalar_i64("SELECT count(*) FROM saved_queries").await, 1);
}

/// `check_query` (what `query save` runs) on SQLite: the database prepares the statement, so
/// syntax errors and unknown tables are refused without running anything.
#[tokio::test]
async fn sqlite_check_query_prepares_without_running() {
    let db =
        SqliteFile::new("CREATE TABLE items (id INTEGER); INSERT INTO items VALUES (1);").await;
    let manager = db.manager(QueryOptions::default()).await;
    manager
        .check_query("SELECT id FROM items WHERE id > $1", &[json!(0)])
        .await
        .unwrap();
    for (sql, expected) in [
        ("SELECT id FROM itemz", "no such table: itemz"),
        ("SELECT id FROM items WHERE", "incomplete input"),
        ("SELECT id FROM items WHERE AND", "syntax error"),
        ("DELETE FROM items", "starts with `DELETE`"),
        (
            "SELECT id FROM items WHERE id > $1",
            "up to `$1` but 0 parameter(s)",
        ),
    ] {
        let err = manager.check_query(sql, &[]).await.unwrap_err();
        assert!(err.to_string().contains(expected), "{sql}: {err}");
    }
    assert_eq!(db.scalar_i64("SELECT count(*) FROM items").await, 1);
}
