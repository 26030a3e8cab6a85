//! Operator experience end to end through the real binary: logs (format, file, secrets),
//! metrics (--metrics-file, summary, -q), `history`, `completions` and `man`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Stdio;

use crate::support::project::{Finished, TempProject, klsync, run};
use clap::CommandFactory;
use serde_json::{Value, json};

use klsync::cli::Cli;
use klsync::state::testing::TestPostgres;
use klsync::state::{RunOutcome, RunStart, StateStore};

/// A project whose `DATABASE_URL` is an SQLite file with a small `customers` table and a saved
/// query `big` selecting the customers who spent more than `$1` (default 10).
struct SqliteData {
    project: TempProject,
    url: String,
}

impl SqliteData {
    async fn new() -> SqliteData {
        let project = TempProject::new(&[]);
        let url = format!("sqlite://{}/data.db?mode=rwc", project.path().display());
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE customers (email TEXT NOT NULL, spend INTEGER NOT NULL);
             INSERT INTO customers VALUES ('a@example.com', 5), ('b@example.com', 20),
                                          ('c@example.com', 30), ('d@example.com', 40);",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
        let data = SqliteData { project, url };
        let saved = data.klsync(&[
            "query",
            "save",
            "big",
            "--sql",
            "SELECT email FROM customers WHERE spend > $1 ORDER BY email",
            "--params",
            "[10]",
        ]);
        assert_eq!(saved.code, 0, "{}", saved.stderr);
        data
    }

    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut command = klsync();
        command
            .current_dir(self.project.path())
            .env("DATABASE_URL", &self.url)
            .args(args);
        command
    }

    fn klsync(&self, args: &[&str]) -> Finished {
        run(&mut self.command(args))
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.project.path().join(name)
    }
}

fn json_file(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{err}: {text}"))
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}")))
        .collect()
}

#[tokio::test]
async fn metrics_file_records_a_query_run() {
    let data = SqliteData::new().await;
    let metrics = data.path("out/metrics.json");
    std::fs::create_dir_all(metrics.parent().unwrap()).unwrap();
    let done = data.klsync(&[
        "query",
        "run",
        "big",
        "--format",
        "csv",
        "--metrics-file",
        metrics.to_str().unwrap(),
    ]);
    assert_eq!(done.code, 0, "{}", done.stderr);
    assert_eq!(
        done.stdout,
        "email\r\nb@example.com\r\nc@example.com\r\nd@example.com\r\n"
    );
    let value = json_file(&metrics);
    assert_eq!(value["command"], "query run");
    assert_eq!(value["rows_read"], 3);
    assert_eq!(value["outcome"], "success");
    assert_eq!(value["requests"], json!({}));
    assert_eq!(value["changes_applied"], 0);
    assert!(value["duration_ms"].as_u64().is_some(), "{value}");
    assert!(value["started_at"].as_str().is_some(), "{value}");
    // The summary on stderr agrees with the file.
    assert!(
        done.stderr.contains("summary: query run success in ")
            && done.stderr.contains("; 3 rows read"),
        "{}",
        done.stderr
    );

    // --limit stops the query: fewer rows read. A failed run still writes its metrics.
    let limited = data.klsync(&[
        "query",
        "run",
        "big",
        "--limit",
        "1",
        "--metrics-file",
        metrics.to_str().unwrap(),
    ]);
    assert_eq!(limited.code, 0, "{}", limited.stderr);
    assert_eq!(json_file(&metrics)["rows_read"], 1);
    let failed = data.klsync(&[
        "query",
        "run",
        "nope",
        "--metrics-file",
        metrics.to_str().unwrap(),
    ]);
    assert_eq!(failed.code, 1);
    let value = json_file(&metrics);
    assert_eq!(
        (value["outcome"].clone(), value["rows_read"].clone()),
        (json!("error"), json!(0))
    );

    // An unwritable metrics file fails an otherwise successful run.
    let unwritable = data.klsync(&[
        "query",
        "run",
        "big",
        "--metrics-file",
        "no/such/dir/m.json",
    ]);
    assert_eq!(unwritable.code, 1);
    assert!(
        unwritable.stderr.contains("no/such/dir/m.json"),
        "{}",
        unwritable.stderr
    );
}

/// `query list` shows a missing description as `-`; `query delete` removes a saved query and
/// refuses one that is not there, naming it.
#[tokio::test]
async fn saved_queries_are_listed_and_deleted() {
    let data = SqliteData::new().await;
    let listed = data.klsync(&["query", "list"]);
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert!(
        listed.stdout.contains("big") && listed.stdout.contains(" - "),
        "{}",
        listed.stdout
    );
    assert!(!listed.stdout.contains("NULL"), "{}", listed.stdout);
    let deleted = data.klsync(&["query", "delete", "big"]);
    assert_eq!(deleted.code, 0, "{}", deleted.stderr);
    assert!(
        deleted.stderr.contains("deleted saved query `big`"),
        "{}",
        deleted.stderr
    );
    let listed = data.klsync(&["query", "list"]);
    assert!(
        listed.stderr.contains("no saved queries"),
        "{}",
        listed.stderr
    );
    let again = data.klsync(&["query", "delete", "big"]);
    assert_eq!(again.code, 1, "{}", again.stderr);
    assert!(
        again.stderr.contains("no saved query named `big`"),
        "{}",
        again.stderr
    );
}

#[tokio::test]
async fn quiet_leaves_only_the_data() {
    let data = SqliteData::new().await;
    let loud = data.klsync(&["query", "run", "big"]);
    assert!(loud.stderr.contains("summary:"), "{}", loud.stderr);
    let quiet = data.klsync(&["-q", "query", "run", "big"]);
    assert_eq!(quiet.code, 0);
    assert_eq!(quiet.stderr, "");
    assert!(quiet.stdout.contains("d@example.com"), "{}", quiet.stdout);
    // Commands that record no metrics print no summary.
    let schema = run(klsync().args(["schema"]));
    assert_eq!(schema.code, 0);
    assert_eq!(schema.stderr, "");
}

#[tokio::test]
async fn json_logs_on_stderr_are_one_object_per_line() {
    let data = SqliteData::new().await;
    let done = run(data
        .command(&["-q", "--log-format", "json", "query", "run", "big"])
        .env("RUST_LOG", "debug"));
    assert_eq!(done.code, 0, "{}", done.stderr);
    let events = json_lines(&done.stderr);
    assert!(
        events
            .iter()
            .any(|e| e["fields"]["message"] == "run finished"
                && e["fields"]["rows_read"] == 3
                && e["level"] == "INFO"),
        "{}",
        done.stderr
    );
    // RUST_LOG opened the dependencies too.
    assert!(
        events.iter().any(|e| e["target"] == "sqlx::query"),
        "{}",
        done.stderr
    );
}

#[tokio::test]
async fn log_file_gets_json_while_stderr_stays_text() {
    let data = SqliteData::new().await;
    let log = data.path("logs/klsync.log");
    let done = run(data
        .command(&[
            "--log-format",
            "json",
            "--log-file",
            log.to_str().unwrap(),
            "query",
            "run",
            "big",
        ])
        .env("RUST_LOG", "info"));
    assert_eq!(done.code, 0, "{}", done.stderr);
    let text = std::fs::read_to_string(&log).unwrap();
    let events = json_lines(&text);
    let messages: Vec<&Value> = events.iter().map(|e| &e["fields"]["message"]).collect();
    assert!(messages.contains(&&json!("run started")), "{text}");
    assert!(messages.contains(&&json!("run finished")), "{text}");
    // The same events on stderr, as text.
    assert!(done.stderr.contains("INFO"), "{}", done.stderr);
    assert!(done.stderr.contains("run finished"), "{}", done.stderr);
    assert!(!done.stderr.contains("{\"timestamp\""), "{}", done.stderr);

    // Without RUST_LOG, -q silences stderr but the file still records at info; runs append.
    let quiet = data.klsync(&[
        "-q",
        "--log-file",
        log.to_str().unwrap(),
        "query",
        "run",
        "big",
    ]);
    assert_eq!(quiet.stderr, "");
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches("run finished").count(), 2, "{text}");
    assert!(text.lines().last().unwrap().contains(" INFO "), "{text}");

    // A log file that cannot be created is a clear error.
    let blocked = data.path("blocked");
    std::fs::write(&blocked, "a file, not a directory").unwrap();
    let bad = data.klsync(&["--log-file", "blocked/k.log", "schema"]);
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr.contains("--log-file") && bad.stderr.contains("blocked"),
        "{}",
        bad.stderr
    );
}

const SECRET_KEY: &str = "pk_0ps5ecretKEYvalue0123456789abcd";

#[test]
fn secrets_never_reach_the_trace_log() {
    let project = TempProject::new(&[]);
    let log = project.path().join("trace.log");
    let mut child = klsync()
        .args([
            "--log-file",
            log.to_str().unwrap(),
            "emulator",
            "--listen",
            "127.0.0.1:0",
        ])
        .env("KLAVIYO_API_KEY", SECRET_KEY)
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address = line
        .trim()
        .rsplit("http://")
        .next()
        .expect("the emulator prints its URL")
        .trim_end_matches('/')
        .to_string();
    // One accepted request with the key, one refused with a near miss of it.
    for key in [SECRET_KEY.to_string(), format!("{SECRET_KEY}x")] {
        let mut stream = TcpStream::connect(&address).unwrap();
        write!(
            stream,
            "GET /api/lists HTTP/1.1\r\nhost: {address}\r\nauthorization: Klaviyo-API-Key {key}\r\n\
             revision: 2026-07-15\r\naccept: application/vnd.api+json\r\nconnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 "), "{response}");
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("run started"), "{text}");
    assert!(
        text.contains("TRACE"),
        "trace-level events were logged: {text}"
    );
    assert!(
        !text.contains(&SECRET_KEY[3..]),
        "the API key leaked into the log"
    );
}

#[tokio::test]
async fn database_passwords_never_reach_the_trace_log() {
    let Some(pg) = TestPostgres::create().await else {
        eprintln!("skipped: KLSYNC_TEST_POSTGRES_URL=skip");
        return;
    };
    let mut url = url::Url::parse(pg.url()).unwrap();
    // A server that trusts local connections ignores the password; one that checks it was
    // given a password in KLSYNC_TEST_POSTGRES_URL already.
    if url.password().is_none() {
        url.set_password(Some("hunter2ops5ecret")).unwrap();
    }
    let password = url.password().unwrap().to_string();
    let project = TempProject::new(&[]);
    let log = project.path().join("trace.log");
    for args in [
        &["query", "save", "one", "--sql", "SELECT 1 AS n"][..],
        &["query", "run", "one"][..],
        &["query", "show", "missing"][..],
    ] {
        let done = run(klsync()
            .args(["--log-file", log.to_str().unwrap()])
            .args(args)
            .env("DATABASE_URL", url.as_str())
            .env("RUST_LOG", "trace"));
        assert!(!done.stderr.contains(&password), "{}", done.stderr);
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("sqlx::query"), "{text}");
    assert!(
        !text.contains(&password),
        "the database password leaked into the log"
    );
}

/// Two runs: an older apply that partly failed and a newer plan, with a known summary.
async fn record_history(store: &StateStore) {
    let older = store
        .begin_run(&RunStart {
            command: "apply".into(),
            actor: "alice@laptop".into(),
            git_commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
            manifest_digest: Some("sha256:feedfacecafebeef0011".into()),
            plan_id: Some("plan-7".into()),
        })
        .await
        .unwrap();
    let created = store
        .journal_started(
            older,
            "list.newsletter",
            "create",
            &json!({"name": "Newsletter"}),
        )
        .await
        .unwrap();
    store
        .journal_succeeded(created, Some("LST123"), &json!({"status": 201}))
        .await
        .unwrap();
    let failed = store
        .journal_started(older, "segment.vip", "update", &json!({}))
        .await
        .unwrap();
    store
        .journal_failed(failed, "400 invalid filter")
        .await
        .unwrap();
    store
        .finish_run(
            older,
            RunOutcome::Partial,
            &json!({"requests": {"createList": 1, "updateSegment": 2}, "retries": 1}),
        )
        .await
        .unwrap();
    // started_at has the clock's resolution: make sure the second run is later.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let newer = store
        .begin_run(&RunStart {
            command: "plan".into(),
            actor: "ci (github-actions)".into(),
            git_commit: None,
            manifest_digest: None,
            plan_id: None,
        })
        .await
        .unwrap();
    store
        .finish_run(
            newer,
            RunOutcome::Success,
            &json!({"requests": {"getLists": 4}}),
        )
        .await
        .unwrap();
}

fn check_history(project: &Path, state_url: Option<&str>) {
    let history = |args: &[&str]| {
        let mut command = klsync();
        command.arg("history").arg("-C").arg(project).args(args);
        if let Some(url) = state_url {
            command.env("KLSYNC_STATE_URL", url);
        }
        run(&mut command)
    };
    let text = history(&[]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    let lines: Vec<&str> = text.stdout.lines().collect();
    assert_eq!(lines.len(), 6, "{}", text.stdout);
    assert!(
        lines[0].starts_with("run ") && lines[0].contains("  plan  success  "),
        "{}",
        text.stdout
    );
    assert_eq!(lines[1], "  by ci (github-actions), 4 requests");
    assert!(lines[2].contains("  apply  partial  "), "{}", text.stdout);
    assert_eq!(
        lines[3],
        "  by alice@laptop, commit 0123456789ab, manifests feedfacecafe, plan plan-7, 3 requests"
    );
    assert_eq!(
        lines[4],
        "  #1 create list.newsletter -> succeeded (LST123)"
    );
    assert_eq!(
        lines[5],
        "  #2 update segment.vip -> failed: 400 invalid filter"
    );

    let limited = history(&["--limit", "1"]);
    assert_eq!(limited.stdout.lines().count(), 2, "{}", limited.stdout);

    let json_out = history(&["--format", "json"]);
    assert_eq!(json_out.code, 0, "{}", json_out.stderr);
    let runs: Value = serde_json::from_str(&json_out.stdout).unwrap();
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["command"], "plan");
    assert_eq!(runs[0]["changes"], json!([]));
    let apply = &runs[1];
    assert_eq!(apply["outcome"], "partial");
    assert_eq!(apply["actor"], "alice@laptop");
    assert_eq!(apply["plan_id"], "plan-7");
    assert_eq!(apply["requests"], 3);
    assert_eq!(apply["summary"]["retries"], 1);
    assert_eq!(apply["changes"][0]["address"], "list.newsletter");
    assert_eq!(apply["changes"][0]["outcome"], "succeeded");
    assert_eq!(
        apply["changes"][0]["detail"],
        json!({"name": "Newsletter", "status": 201})
    );
    assert_eq!(apply["changes"][1]["outcome"], "failed");
    assert_eq!(apply["changes"][1]["error"], "400 invalid filter");
    assert!(apply["finished_at"].as_str().is_some());
}

#[tokio::test]
async fn history_reads_the_default_sqlite_store() {
    let project = TempProject::new(&[]);
    let empty = run(klsync().args(["history", "-C"]).arg(project.path()));
    assert_eq!(empty.code, 0);
    assert_eq!(empty.stdout, "");
    assert!(
        empty.stderr.contains("no runs recorded yet"),
        "{}",
        empty.stderr
    );
    assert!(
        !project.path().join(".klsync").exists(),
        "reading history must not create a state database"
    );
    let empty_json = run(klsync()
        .args(["history", "--format", "json", "-C"])
        .arg(project.path()));
    assert_eq!(empty_json.stdout.trim(), "[]");

    let store = StateStore::connect(&StateStore::default_url(project.path()))
        .await
        .unwrap();
    record_history(&store).await;
    store.close().await;
    check_history(project.path(), None);
}

#[tokio::test]
async fn history_reads_a_postgres_store() {
    let Some(pg) = TestPostgres::create().await else {
        eprintln!("skipped: KLSYNC_TEST_POSTGRES_URL=skip");
        return;
    };
    let store = StateStore::connect(pg.url()).await.unwrap();
    record_history(&store).await;
    store.close().await;
    let project = TempProject::new(&[]);
    check_history(project.path(), Some(pg.url()));
    assert!(!project.path().join(".klsync").exists());
}

fn subcommand_names() -> Vec<String> {
    Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect()
}

#[test]
fn completions_know_every_subcommand() {
    let names = subcommand_names();
    assert!(names.contains(&"history".to_string()), "{names:?}");
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let done = run(klsync().args(["completions", shell]));
        assert_eq!(done.code, 0, "{shell}: {}", done.stderr);
        for name in &names {
            assert!(done.stdout.contains(name.as_str()), "{shell} misses {name}");
        }
        assert!(
            done.stdout.contains("log-format"),
            "{shell} misses global flags"
        );
    }
    let bad = run(klsync().args(["completions", "tcsh"]));
    assert_eq!(bad.code, 64);
}

#[test]
fn man_pages_render_from_the_clap_definitions() {
    let page = run(klsync().arg("man"));
    assert_eq!(page.code, 0, "{}", page.stderr);
    assert!(page.stdout.contains(".TH klsync 1"), "{}", page.stdout);
    for name in subcommand_names() {
        assert!(
            page.stdout.contains(&format!("klsync\\-{name}")),
            "klsync.1 misses {name}"
        );
    }

    let project = TempProject::new(&[]);
    let out = project.path().join("man/man1");
    let written = run(klsync().args(["man", "--out"]).arg(&out));
    assert_eq!(written.code, 0, "{}", written.stderr);
    for name in subcommand_names() {
        let text = std::fs::read_to_string(out.join(format!("klsync-{name}.1")))
            .unwrap_or_else(|err| panic!("klsync-{name}.1: {err}"));
        assert!(text.contains(&format!(".TH klsync-{name} 1")), "{text}");
    }
    let run_page = std::fs::read_to_string(out.join("klsync-query-run.1")).unwrap();
    assert!(run_page.contains("statement\\-timeout"), "{run_page}");
}
