//! QueryManager against the MariaDB on this machine (`KLSYNC_TEST_MYSQL_URL`; each test skips,
//! saying so, when it is unset): values, read-only, timeouts, interrupts, placeholders, errors,
//! saved queries and redaction. The data-sync scenarios run on MariaDB in `sync_engine.rs`.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use klsync::settings::Secret;
use klsync::sql::{QueryManager, QueryOptions, Row, SqlError};
use serde_json::{Value, json};
use sqlx::Connection;

use crate::support::source::{self, TestMySql};

async fn manager(db: &TestMySql, options: QueryOptions) -> QueryManager {
    QueryManager::connect(&Secret::new(db.url().to_owned()), options)
        .await
        .expect("connect to the test MariaDB")
}

async fn rows(manager: &QueryManager, sql: &str, params: &[Value]) -> Result<Vec<Row>, SqlError> {
    manager.execute_query(sql, params).try_collect().await
}

async fn scalar_i64(db: &TestMySql, sql: &str) -> i64 {
    let mut conn = sqlx::MySqlConnection::connect(db.url()).await.unwrap();
    let value: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    value
}

fn object(value: Value) -> Row {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// Each type as `src/sql/mysql/mod.rs` documents it, the JSON PostgreSQL's counterpart gives.
#[tokio::test]
async fn mysql_values_are_typed_like_postgres() {
    let Some(db) = TestMySql::create().await else {
        return;
    };
    source::execute(
        db.url(),
        "CREATE TABLE v (
             i INT, ti TINYINT, big BIGINT UNSIGNED, flag BOOLEAN, odd BOOLEAN, bits BIT(3),
             y YEAR, d DECIMAL(12, 2), huge DECIMAL(30, 3), f FLOAT, g DOUBLE,
             t VARCHAR(20), tb VARCHAR(20) COLLATE utf8mb4_bin, e ENUM('a', 'b'),
             bin VARBINARY(4), day DATE, local DATETIME(3), utc TIMESTAMP(6) NULL,
             tod TIME(3), j JSON, nothing TEXT);
         SET time_zone = '+02:00';
         INSERT INTO v VALUES (-7, -3, 18446744073709551615, TRUE, 5, b'101', 2024, 12.50,
             123456789012345678901234567.125, 0.1, 0.1, 'é', 'Bin', 'b', x'dead01',
             '2024-05-01', '2024-05-01 10:30:00.250', '2024-05-01 12:30:00.000001',
             '10:30:00.500', '{\"a\": [1, 2]}', NULL);",
    )
    .await;
    let manager = manager(&db, QueryOptions::default()).await;
    let got = rows(&manager, "SELECT * FROM v", &[]).await.unwrap();
    assert_eq!(
        got,
        vec![object(json!({
            "i": -7, "ti": -3, "big": 18446744073709551615u64, "flag": true, "odd": 5,
            "bits": 5, "y": 2024, "d": 12.5, "huge": "123456789012345678901234567.125",
            "f": 0.1, "g": 0.1, "t": "é", "tb": "Bin", "e": "b", "bin": "\\xdead01",
            "day": "2024-05-01", "local": "2024-05-01T10:30:00.250",
            // Written at +02:00, stored in UTC, read in UTC whatever the URL says.
            "utc": "2024-05-01T10:30:00.000001Z",
            "tod": "10:30:00.500",
            // MariaDB's JSON is LONGTEXT on the wire: a string, as SQLite's JSON in TEXT.
            "j": "{\"a\": [1, 2]}",
            "nothing": null,
        }))]
    );
    // A comparison is an integer in MySQL.
    let got = rows(&manager, "SELECT 2 > 1 AS cmp", &[]).await.unwrap();
    assert_eq!(got, vec![object(json!({"cmp": 1}))]);
}

/// klsync reads a query without parameters on a connection of its own, speaking the protocol
/// (`src/sql/mysql/wire.rs`); queries with parameters, and URLs it does not read that way (here
/// `charset=`), go through sqlx. Both must set the session up alike and give the same values.
#[tokio::test]
async fn mysql_both_readers_agree_on_session_and_values() {
    let Some(db) = TestMySql::create().await else {
        return;
    };
    source::execute(
        db.url(),
        "CREATE TABLE v (
             i INT, big BIGINT UNSIGNED, flag BOOLEAN, bits BIT(3), y YEAR, d DECIMAL(30, 3),
             f FLOAT, g DOUBLE, t VARCHAR(20), tb VARCHAR(20) COLLATE utf8mb4_bin,
             e ENUM('a', 'b'), s SET('x', 'y'), bin VARBINARY(4), day DATE, local DATETIME(6),
             utc TIMESTAMP(6) NULL, tod TIME(3), long_text MEDIUMTEXT, nothing TEXT);
         INSERT INTO v VALUES (-7, 18446744073709551615, TRUE, b'101', 2024,
             123456789012345678901234567.125, 0.1, 0.1, 'é', 'Bin', 'b', 'x,y', x'dead01',
             '2024-05-01', '2024-05-01 10:30:00.250001', '2024-05-01 12:30:00.000001',
             '10:30:00.500', REPEAT('ü', 70000), NULL),
             (NULL, 0, FALSE, b'0', 1999, -0.5, -1.5e10, 1e-300, '', '', 'a', '', x'', '1000-01-01',
             '9999-12-31 23:59:59', NULL, '00:00:00', '', 'x');",
    )
    .await;
    let fast = manager(&db, QueryOptions::default()).await;
    let through_sqlx = QueryManager::connect(
        &Secret::new(format!("{}?charset=utf8mb4", db.url())),
        QueryOptions::default(),
    )
    .await
    .unwrap();
    let all = "SELECT * FROM v ORDER BY i IS NULL, i";
    let read_fast = rows(&fast, all, &[]).await.unwrap();
    assert_eq!(read_fast.len(), 2);
    assert_eq!(read_fast, rows(&through_sqlx, all, &[]).await.unwrap());
    // With a parameter, the same connection string reads through sqlx: the same rows.
    let bound = "SELECT * FROM v WHERE y > $1 ORDER BY i IS NULL, i";
    assert_eq!(read_fast, rows(&fast, bound, &[json!(0)]).await.unwrap());
    assert_eq!(
        read_fast[0]["long_text"].as_str().map(str::len),
        Some(140_000)
    );
    let session = "SELECT @@SESSION.sql_mode AS mode, @@SESSION.time_zone AS zone, \
                   @@character_set_connection AS charset, @@collation_connection AS collation, \
                   @@character_set_results AS results, @@SESSION.max_statement_time AS timeout, \
                   @@SESSION.tx_read_only AS read_only, @@in_transaction AS in_transaction";
    let fast_session = rows(&fast, session, &[]).await.unwrap();
    assert_eq!(
        fast_session,
        rows(&through_sqlx, session, &[]).await.unwrap()
    );
    assert_eq!(fast_session[0]["read_only"], json!(1), "{fast_session:?}");
    // The fast reader runs each query on a fresh connection where it is the only statement
    // prepared; sqlx's connections have also prepared `SELECT CONNECTION_ID()` (`mysql/mod.rs`):
    // this is how the test knows which reader ran.
    let prepared = "SELECT CAST(VARIABLE_VALUE AS SIGNED) AS n \
                    FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'COM_STMT_PREPARE'";
    let count = |rows: Vec<Row>| rows[0]["n"].as_i64().unwrap();
    assert_eq!(
        count(rows(&fast, prepared, &[]).await.unwrap()),
        1,
        "the fast reader did not run"
    );
    assert!(
        count(rows(&through_sqlx, prepared, &[]).await.unwrap()) >= 2,
        "sqlx did not run"
    );
    // An error before the first row is reported as sqlx reports it, placed in the user's SQL.
    let err = rows(&fast, "SELECT nope FROM v", &[]).await.unwrap_err();
    assert!(err.to_string().contains("Unknown column 'nope'"), "{err}");
    fast.close().await;
    through_sqlx.close().await;
}

/// A zero date (`0000-00-00`) is no date: it reads as NULL (the driver gives it no value, as
/// MySQL's own connectors do with `zeroDateTimeBehavior=convertToNull`). A `TIME` beyond a day
/// (MySQL's TIME is a duration) refuses its row, naming what to do; a type klsync does not
/// convert stops the query, naming the column.
#[tokio::test]
async fn mysql_values_klsync_cannot_carry_are_refused() {
    let Some(db) = TestMySql::create().await else {
        return;
    };
    source::execute(
        db.url(),
        "SET SESSION sql_mode = '';
         CREATE TABLE z (email TEXT, day DATE, span TIME, shape POINT);
         INSERT INTO z VALUES ('a@x.test', '0000-00-00', '10:00:00', POINT(1, 2)),
                              ('b@x.test', '2024-01-01', '30:00:00', NULL);",
    )
    .await;
    let manager = manager(&db, QueryOptions::default()).await;
    let batches: Vec<_> = manager
        .execute_query_batches("SELECT email, day, span FROM z ORDER BY email", &[])
        .try_collect()
        .await
        .unwrap();
    let batch = &batches[0];
    assert_eq!(batch.row(0).value(1).unwrap().as_ref(), &Value::Null);
    assert_eq!(batch.row(0).value(2).unwrap().as_ref(), &json!("10:00:00"));
    let span = batch.row(1).value(2).unwrap_err().to_string();
    assert!(span.contains("CAST(col AS CHAR)"), "{span}");
    let err = rows(&manager, "SELECT email, shape FROM z", &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, SqlError::UnsupportedType { ref column, .. } if column == "shape"),
        "{err:?}"
    );
}

#[tokio::test]
async fn mysql_writes_are_refused_and_change_nothing() {
    let Some(db) = TestMySql::create().await else {
        return;
    };
    source::execute(
        db.url(),
        "CREATE TABLE items (id INT); INSERT INTO items VALUES (1), (2);",
    )
    .await;
    let manager = manager(&db, QueryOptions::default()).await;
    for write in [
        "INSERT INTO items VALUES (3)",
        "UPDATE items SET id = id + 10",
        "DELETE FROM items",
        // DDL would commit the transaction and run outside it.
        "CREATE TABLE other (x INT)",
        "SELECT id FROM items INTO OUTFILE '/tmp/klsync-must-not-exist'",
        "SELECT 1; DELETE FROM items",
        "COMMIT",
    ] {
        let err = rows(&manager, write, &[]).await.unwrap_err();
        assert!(
            matches!(
                err,
                SqlError::ReadOnly { .. } | SqlError::MultipleStatements { .. }
            ),
            "{write}: {err:?}"
        );
    }
    // Even a statement that passed the text checks runs in a read-only session.
    let err = rows(
        &manager,
        "WITH x AS (SELECT 1) SELECT * FROM x FOR UPDATE",
        &[],
    )
    .await;
    assert!(err.is_ok(), "{err:?}");
    assert_eq!(scalar_i64(&db, "SELECT COUNT(*) FROM items").await, 2);
    assert_eq!(
        scalar_i64(&db, "SELECT CAST(SUM(id) AS SIGNED) FROM items").await,
        3
    );
    assert_eq!(
        scalar_i64(
            &db,
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_schema = DATABASE() AND table_name = 'other'"
        )
        .await,
        0
    );
    assert!(!std::path::Path::new("/tmp/klsync-must-not-exist").exists());
    let ok = rows(&manager, "SELECT COUNT(*) AS n FROM items", &[])
        .await
        .unwrap();
    assert_eq!(ok, vec![object(json!({"n": 2}))]);
}

#[tokio::test]
async fn mysql_statement_timeout_and_stopping_end_the_query_on_the_server() {
    let Some(db) = TestMySql::create().await else {
        return;
    };
    let manager = manager(
        &db,
        QueryOptions {
            statement_timeout: Duration::from_secs(1),
            connect_retries: 0,
            ..QueryOptions::default()
        },
    )
    .await;
    let started = Instant::now();
    let err = rows(&manager, "SELECT SLEEP(5) AS s", &[]).await;
    // MariaDB stops SLEEP at the limit and returns 1 (it was interrupted) or an error.
    match err {
        Err(SqlError::Timeout { timeout }) => assert_eq!(timeout, Duration::from_secs(1)),
        Ok(rows) => assert_eq!(rows, vec![object(json!({"s": 1}))]),
        Err(other) => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(4));
    // MariaDB's sequence tables: ten billion pairs to compare.
    let err = rows(
        &manager,
        "SELECT SUM(a.seq + b.seq) AS s FROM seq_1_to_100000 a JOIN seq_1_to_100000 b \
         ON a.seq % 7 = b.seq % 5",
        &[],
    )
    .await
    .unwrap_err();
    assert!(matches!(err, SqlError::Timeout { .. }), "{err:?}");

    // A consumer that goes away stops the query on the server (KILL QUERY): it does not run on
    // to its timeout.
    let patient = manager_with_timeout(&db, Duration::from_secs(60)).await;
    let mut stream = Box::pin(
        patient.execute_query("SELECT SLEEP(30) AS s UNION ALL SELECT SLEEP(30) AS s", &[]),
    );
    let waiting = tokio::time::timeout(Duration::from_millis(500), stream.next()).await;
    assert!(waiting.is_err(), "the query is still running");
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let running = scalar_i64(
            &db,
            "SELECT COUNT(*) FROM information_schema.processlist WHERE info LIKE 'SELECT SLEEP(30)%'",
        )
        .await;
        if running == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the query was not stopped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ok = rows(&patient, "SELECT 1 AS one", &[]).await.unwrap();
    assert_eq!(ok, vec![object(json!({"one": 1}))]);
}

async fn manager_with_timeout(db: &TestMySql, timeout: Duration) -> QueryManager {
    manager(
        db,
        QueryOptions {
            statement_timeout: timeout,
            connect_retries: 0,
            ..QueryOptions::default()
        },
    )
    .await
}

/// `?` binds in order; klsync's portable `$n` binds each parameter where it is used; values
/// are bound, never interpolated.
#[tokio::test]
async fn mysql_parameters_are_bound_in_either_syntax() {
    let Some(db) = TestMySql::create().await else {
        return;
    };
    source::execute(
        db.url(),
        "CREATE TABLE c (email VARCHAR(50), ltv INT);
         INSERT INTO c VALUES ('a@x.test', 10), ('b@x.test', 20), ('c@x.test', 30);",
    )
    .await;
    let manager = manager(&db, QueryOptions::default()).await;
    let marks = rows(
        &manager,
        "SELECT email FROM c WHERE ltv >= ? AND email <> ? ORDER BY email",
        &[json!(15), json!("c@x.test")],
    )
    .await
    .unwrap();
    assert_eq!(marks, vec![object(json!({"email": "b@x.test"}))]);
    let dollars = rows(
        &manager,
        "SELECT email FROM c WHERE ltv >= $1 AND ltv <= $1 + $2 -- '$3' is no parameter\n",
        &[json!(10), json!(10)],
    )
    .await
    .unwrap();
    assert_eq!(dollars.len(), 2);
    let hostile = rows(
        &manager,
        "SELECT COUNT(*) AS n FROM c WHERE email = ?",
        &[json!("x' OR '1'='1")],
    )
    .await
    .unwrap();
    assert_eq!(hostile, vec![object(json!({"n": 0}))]);
    let err = rows(&manager, "SELECT ? AS a", &[]).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "the SQL has 1 `?` placeholder(s) but 0 parameter(s) are given; give one value per \
         placeholder (`$1`..`$n`, or each `?` on MySQL), in order"
    );
    manager
        .check_query("SELECT email FROM c WHERE ltv > ?", &[json!(1)])
        .await
        .unwrap();
    let err = manager
        .check_query("SELECT email FROM c WHERE ltv > ?", &[])
        .await
        .unwrap_err();
    assert!(matches!(err, SqlError::Placeholders { .. }), "{err:?}");
}

/// MySQL says `near '...' at line N`; klsync says where that is in the user's SQL, also when
/// `$n` placeholders were rewritten before sending.
#[tokio::test]
async fn mysql_errors_point_into_the_users_sql() {
    let Some(db) = TestMySql::create().await else {
        return;
    };
    source::execute(db.url(), "CREATE TABLE c (email TEXT, ltv INT);").await;
    let manager = manager(&db, QueryOptions::default()).await;
    let sql = "SELECT email\n  FROM c\n WHERE ltv > $1 AND ltv < $2 ORDR BY email";
    let err = rows(&manager, sql, &[json!(1), json!(2)])
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.ends_with("near 'ORDR BY email' at line 3 (at line 3, column 30 of the query)"),
        "{text}"
    );
    let err = manager.check_query(sql, &[json!(1), json!(2)]).await;
    assert_eq!(err.unwrap_err().to_string(), text);
    let err = rows(&manager, "SELECT email FROM customerz", &[])
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("customerz' doesn't exist"),
        "{err}"
    );
}

#[tokio::test]
async fn mysql_saved_queries_save_load_update_and_list() {
    let Some(db) = TestMySql::create().await else {
        return;
    };
    let manager = manager(&db, QueryOptions::default()).await;
    crate::sql_query_manager::saved_queries_save_load_update_and_list(
        &manager,
        async || {
            scalar_i64(
                &db,
                "SELECT COUNT(*) FROM information_schema.tables \
                 WHERE table_schema = DATABASE() AND table_name = 'saved_queries'",
            )
            .await
        },
        async || scalar_i64(&db, "SELECT COUNT(*) FROM saved_queries WHERE name = 'vip'").await,
        "SELECT 2 AS v WHERE ? > 0",
    )
    .await;
}

/// The password is in no error and no debug output, whatever fails.
#[tokio::test]
async fn mysql_passwords_are_never_shown() {
    let Some(db) = TestMySql::create().await else {
        return;
    };
    let password = "hunter2-k1";
    let user = format!("klsync_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let database = db.url().rsplit('/').next().unwrap().to_owned();
    source::execute(
        db.url(),
        &format!(
            "CREATE USER '{user}'@'%' IDENTIFIED BY '{password}';
             GRANT SELECT ON {database}.* TO '{user}'@'%';"
        ),
    )
    .await;
    let mut url = url::Url::parse(db.url()).unwrap();
    url.set_username(&user).unwrap();
    url.set_password(Some(password)).unwrap();
    let connected = QueryManager::connect(&Secret::new(url.to_string()), QueryOptions::default())
        .await
        .unwrap();
    let mut shown = format!("{connected:?} {}", connected.redacted_url());
    shown.push_str(
        &rows(&connected, "SELECT nope FROM nowhere", &[])
            .await
            .unwrap_err()
            .to_string(),
    );
    url.set_password(Some("wrong-hunter2-k1")).unwrap();
    let err = QueryManager::connect(
        &Secret::new(url.to_string()),
        QueryOptions {
            statement_timeout: Duration::from_secs(1),
            connect_retries: 0,
            ..QueryOptions::default()
        },
    )
    .await
    .unwrap_err();
    shown.push_str(&format!("{err} {err:?}"));
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        shown.push_str(&cause.to_string());
        source = cause.source();
    }
    source::execute(db.url(), &format!("DROP USER '{user}'@'%'")).await;
    assert!(!shown.contains(password), "{shown}");
    assert!(shown.contains(&format!("{user}:***@")), "{shown}");
}
