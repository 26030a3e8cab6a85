//! `klsync query save/list/show/run` end to end through the real binary, against PostgreSQL.
//!
//! `KLSYNC_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`); each test works
//! in its own randomly named schema, dropped afterwards.

use std::process::{Command, Output};

use serde_json::{Value, json};
use sqlx::{Connection, Executor};

const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn pg_base_url() -> String {
    std::env::var("KLSYNC_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_string())
}

struct PgSchema {
    name: String,
}

impl PgSchema {
    async fn new(setup: &str) -> PgSchema {
        let name = format!("klsync_cli_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&pg_base_url()).await.unwrap();
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .await
            .unwrap();
        admin.close().await.unwrap();
        let schema = PgSchema { name };
        let mut conn = sqlx::PgConnection::connect(&schema.url()).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(setup.to_string()))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        schema
    }

    fn url(&self) -> String {
        let base = pg_base_url();
        let sep = if base.contains('?') { '&' } else { '?' };
        format!("{base}{sep}options=-c%20search_path%3D{}", self.name)
    }

    /// Run the real binary with this schema's URL in `DATABASE_URL`.
    fn klsync(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_klsync"))
            .args(args)
            .env("DATABASE_URL", self.url())
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let name = self.name.clone();
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

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

#[track_caller]
fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        stdout(output),
        stderr(output)
    );
}

const CUSTOMERS: &str = "
    CREATE TABLE customers (id int4, email text, spend numeric(10,2), note text, joined date);
    INSERT INTO customers VALUES
        (1, 'ann@example.com', 1500.00, 'likes, commas', '2024-01-05'),
        (2, 'bob@example.com', 250.50, 'says \"hi\"', '2024-02-10'),
        (3, 'cy@example.com', 9000.25, NULL, '2024-03-15');";

const VIP_SQL: &str =
    "SELECT id, email, spend, note, joined FROM customers WHERE spend >= $1::numeric ORDER BY id";

#[tokio::test]
async fn save_list_show_and_run_in_every_format() {
    let schema = PgSchema::new(CUSTOMERS).await;

    let saved = schema.klsync(&[
        "query",
        "save",
        "vip",
        "--sql",
        VIP_SQL,
        "--description",
        "Big spenders",
        "--params",
        "[1000]",
    ]);
    assert_success(&saved);
    assert!(
        stderr(&saved).contains("saved query `vip`"),
        "{}",
        stderr(&saved)
    );

    let list = schema.klsync(&["query", "list"]);
    assert_success(&list);
    let listing = stdout(&list);
    let lines: Vec<&str> = listing.lines().collect();
    assert!(
        lines[0].starts_with("name  description   params  updated_at"),
        "{listing}"
    );
    assert!(
        lines[2].starts_with("vip   Big spenders  1       20"),
        "{listing}"
    );

    let show = schema.klsync(&["query", "show", "vip"]);
    assert_success(&show);
    let shown = stdout(&show);
    assert!(
        shown.starts_with("name:        vip\ndescription: Big spenders\nparams:      [1000]\n"),
        "{shown}"
    );
    assert!(shown.contains("created_at:  20"), "{shown}");
    assert!(
        shown.ends_with(&format!("sql:\n    {VIP_SQL}\n")),
        "{shown}"
    );

    let json_run = schema.klsync(&["query", "run", "vip", "--format", "json"]);
    assert_success(&json_run);
    let parsed: Value = serde_json::from_str(&stdout(&json_run)).unwrap();
    assert_eq!(
        parsed,
        json!([
            {"id": 1, "email": "ann@example.com", "spend": 1500, "note": "likes, commas", "joined": "2024-01-05"},
            {"id": 3, "email": "cy@example.com", "spend": 9000.25, "note": null, "joined": "2024-03-15"},
        ])
    );

    // --params replaces the saved ones for this run.
    let csv_run = schema.klsync(&["query", "run", "vip", "--format", "csv", "--params", "[0]"]);
    assert_success(&csv_run);
    assert_eq!(
        stdout(&csv_run),
        "id,email,spend,note,joined\r\n\
         1,ann@example.com,1500,\"likes, commas\",2024-01-05\r\n\
         2,bob@example.com,250.5,\"says \"\"hi\"\"\",2024-02-10\r\n\
         3,cy@example.com,9000.25,,2024-03-15\r\n"
    );

    let table_run = schema.klsync(&["query", "run", "vip", "--params", "[0]", "--limit", "2"]);
    assert_success(&table_run);
    let expected = [
        "id  email            spend  note           joined",
        "--  ---------------  -----  -------------  ----------",
        "1   ann@example.com  1500   likes, commas  2024-01-05",
        "2   bob@example.com  250.5  says \"hi\"      2024-02-10",
    ];
    assert_eq!(stdout(&table_run), expected.join("\n") + "\n");
    assert!(
        stderr(&table_run).contains("(2 rows)"),
        "{}",
        stderr(&table_run)
    );

    let limited = schema.klsync(&[
        "query", "run", "vip", "--format", "json", "--params", "[0]", "--limit", "1",
    ]);
    assert_success(&limited);
    let parsed: Value = serde_json::from_str(&stdout(&limited)).unwrap();
    assert_eq!(parsed.as_array().map(Vec::len), Some(1));
    assert_eq!(parsed[0]["email"], "ann@example.com");

    // Saving again updates in place.
    let updated = schema.klsync(&["query", "save", "vip", "--sql", "SELECT 1 AS one"]);
    assert_success(&updated);
    assert!(
        stderr(&updated).contains("updated query `vip`"),
        "{}",
        stderr(&updated)
    );
    let run = schema.klsync(&["query", "run", "vip", "--format", "json"]);
    assert_success(&run);
    assert_eq!(stdout(&run), "[\n{\"one\":1}\n]\n");
}

#[tokio::test]
async fn errors_exit_1_with_a_clear_message_and_no_password() {
    let schema = PgSchema::new(CUSTOMERS).await;

    let missing = schema.klsync(&["query", "show", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("no saved query named `nope`"),
        "{}",
        stderr(&missing)
    );

    let missing_run = schema.klsync(&["query", "run", "nope"]);
    assert_eq!(missing_run.status.code(), Some(1));

    // A write that parses as a query (a data-modifying WITH) is refused when it runs.
    let writer = schema.klsync(&[
        "query",
        "save",
        "wipe",
        "--sql",
        "WITH gone AS (DELETE FROM customers RETURNING id) SELECT count(*) FROM gone",
    ]);
    assert_success(&writer);
    let refused = schema.klsync(&["query", "run", "wipe"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused)
            .contains("query `wipe` (saved_queries) failed: sync queries are read-only"),
        "{}",
        stderr(&refused)
    );
    let count = schema.klsync(&[
        "query",
        "save",
        "count",
        "--sql",
        "SELECT count(*) AS n FROM customers",
    ]);
    assert_success(&count);
    let counted = schema.klsync(&["query", "run", "count", "--format", "json"]);
    assert_eq!(stdout(&counted), "[\n{\"n\":3}\n]\n");

    let slow = schema.klsync(&["query", "save", "slow", "--sql", "SELECT pg_sleep(5)"]);
    assert_success(&slow);
    let started = std::time::Instant::now();
    let timed_out = schema.klsync(&["query", "run", "slow", "--statement-timeout", "1s"]);
    assert_eq!(timed_out.status.code(), Some(1));
    assert!(
        stderr(&timed_out).contains("statement timeout of 1s"),
        "{}",
        stderr(&timed_out)
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(4));

    let bad_params = schema.klsync(&["query", "run", "count", "--params", "{\"a\":1}"]);
    assert_eq!(bad_params.status.code(), Some(1));
    assert!(stderr(&bad_params).contains("--params must be a JSON array"));

    let no_env = Command::new(env!("CARGO_BIN_EXE_klsync"))
        .args([
            "query",
            "list",
            "--database-url-env",
            "KLSYNC_TEST_UNSET_VARIABLE",
        ])
        .env_remove("KLSYNC_TEST_UNSET_VARIABLE")
        .output()
        .unwrap();
    assert_eq!(no_env.status.code(), Some(1));
    assert!(stderr(&no_env).contains("KLSYNC_TEST_UNSET_VARIABLE is not set"));

    let unreachable = Command::new(env!("CARGO_BIN_EXE_klsync"))
        .args(["query", "list", "--database-url-env", "KLSYNC_TEST_DB"])
        .env(
            "KLSYNC_TEST_DB",
            "postgres://klsync:hunter2@127.0.0.1:1/test",
        )
        .output()
        .unwrap();
    assert_eq!(unreachable.status.code(), Some(1));
    let message = stderr(&unreachable);
    assert!(
        message.contains("cannot connect to postgres://klsync:***@127.0.0.1:1/test"),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");
}

/// `query save` checks what it stores as a manifest query is checked, and asks the database to
/// prepare it, so a query that cannot run is refused there, naming itself; nothing is stored.
#[tokio::test]
async fn save_refuses_what_could_not_run_and_stores_nothing() {
    let schema = PgSchema::new(CUSTOMERS).await;
    let cases: [(&[&str], &str); 6] = [
        (
            &[
                "--sql",
                "SELECT email FROM customers WHERE spend > $1 AND id > $2",
                "--params",
                "[1]",
            ],
            "the SQL uses placeholders up to `$2` but 1 parameter(s) are given",
        ),
        (
            &["--sql", "SELECT email FROM customers", "--params", "[1]"],
            "the SQL has no `$n` placeholders but 1 parameter(s) are given",
        ),
        (
            &["--sql=-- tidy up\nDELETE FROM customers"],
            "the SQL starts with `DELETE` (line 2, column 1): a query must be a single SELECT or WITH statement",
        ),
        (
            &["--sql", "SELECT 1; SELECT 2"],
            "a second one starts at line 1, column 11",
        ),
        (
            &[
                "--sql",
                "SELECT email\nFROM customers\nWHERE spend > 10 AND AND id = 1",
            ],
            "syntax error at or near \"AND\" (at line 3, column 22 of the query)",
        ),
        (
            &["--sql", "SELECT email FROM customer"],
            "relation \"customer\" does not exist (at line 1, column 19 of the query)",
        ),
    ];
    for (args, expected) in cases {
        let mut full = vec!["query", "save", "broken"];
        full.extend_from_slice(args);
        let refused = schema.klsync(&full);
        assert_eq!(
            refused.status.code(),
            Some(1),
            "{args:?}: {}",
            stderr(&refused)
        );
        let message = stderr(&refused);
        assert!(
            message.contains("query `broken` (saved_queries) not saved: ")
                && message.contains(expected),
            "{args:?}: expected {expected:?} in:\n{message}"
        );
    }
    let list = schema.klsync(&["query", "list"]);
    assert_success(&list);
    assert!(!stdout(&list).contains("broken"), "{}", stdout(&list));

    let fine = schema.klsync(&[
        "query", "save", "vip", "--sql", VIP_SQL, "--params", "[1000]",
    ]);
    assert_success(&fine);
}

/// `query` reads the project's klsync.yaml (`-C DIR`) like every other command: the variable
/// holding the database URL and the statement timeout come from it unless a flag says otherwise.
#[tokio::test]
async fn query_honours_the_project_directory_and_its_settings() {
    let schema = PgSchema::new(CUSTOMERS).await;
    let project = tempfile::tempdir().unwrap();
    std::fs::write(
        project.path().join("klsync.yaml"),
        "version: 1\ndatabase:\n  url_env: WAREHOUSE_URL\n  statement_timeout_seconds: 1\n",
    )
    .unwrap();
    let klsync = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_klsync"))
            .args(args)
            .arg("-C")
            .arg(project.path())
            .env("WAREHOUSE_URL", schema.url())
            .env_remove("DATABASE_URL")
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    assert_success(&klsync(&[
        "query",
        "save",
        "slow",
        "--sql",
        "SELECT pg_sleep(5)",
    ]));
    let timed_out = klsync(&["query", "run", "slow"]);
    assert_eq!(timed_out.status.code(), Some(1));
    assert!(
        stderr(&timed_out).contains("statement timeout of 1s"),
        "{}",
        stderr(&timed_out)
    );
    // A flag still wins over klsync.yaml.
    let unset = klsync(&[
        "query",
        "list",
        "--database-url-env",
        "KLSYNC_TEST_UNSET_VARIABLE",
    ]);
    assert!(
        stderr(&unset).contains("KLSYNC_TEST_UNSET_VARIABLE is not set"),
        "{}",
        stderr(&unset)
    );
    let missing = Command::new(env!("CARGO_BIN_EXE_klsync"))
        .args(["query", "list", "-C", "/nonexistent/klsync-project"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("-C /nonexistent/klsync-project: no such directory"));
}
