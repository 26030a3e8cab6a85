//! Issue 11, "Secrets": the whole CLI surface run with a recognisable API key and database
//! password, at trace level with a JSON log file and a metrics file, in success and in failure
//! (a wrong key, a wrong password, unreachable hosts, mistyped URLs). Neither secret may appear
//! in any stdout, stderr, log file, metrics file, plan file, imported manifest, audit row or
//! state table.
//!
//! `tests/it/client_secrets.rs` covers the Klaviyo client in process (its errors' Display and
//! Debug, every dependency's trace logs); this suite runs the real binary end to end.
//!
//! The test PostgreSQL trusts every local connection, so a password there is accepted whatever
//! it is. The canary password is still real: a role created with it, named in every URL the
//! happy path uses. A *wrong* password is exercised against a small in-test server that speaks
//! the PostgreSQL protocol far enough to ask for the password and refuse it with SQLSTATE 28P01,
//! as a server with password authentication does.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use crate::support::project::{Finished, TempProject, klsync};
use klsync::emulator::{self, EmulatorConfig, EmulatorHandle, RateLimitMode};
use klsync::state::testing::test_postgres_url;
use sqlx::{Connection as _, Executor as _, PgConnection, Row as _};

const API_KEY: &str = "pk_SECRETKEY_canary_4f2a";
const DB_PASSWORD: &str = "pw_CANARY_93b1";
/// Parts of the secrets: a secret cut short or wrapped is still a leak. (Not the hex tails
/// alone: digests and ids are hex.)
const FRAGMENTS: [&str; 3] = ["SECRETKEY", "canary_4f2a", "CANARY"];

const PROJECT: &str = "\
tag_groups:
  - name: lifecycle
    tags: [vip]
lists:
  - id: vip
    name: VIP
    tags: [lifecycle/vip]
    members:
      query: big_spenders
      identify_by: email
      mode: mirror
segments:
  - id: big-spenders
    name: Big spenders
    definition:
      condition_groups:
        - conditions:
            - type: profile-property
              property: \"properties['shop_ltv']\"
              filter: {type: numeric, operator: greater-than, value: 500}
profiles:
  - id: facts
    query: facts
    identify_by: email
    properties:
      shop_ltv: ltv
queries:
  big_spenders:
    sql: SELECT email FROM customers WHERE ltv >= $1
    params: [100]
  facts:
    sql: SELECT email, ltv FROM customers
";

/// A PostgreSQL role whose password is the canary, and schemas it owns; dropped on drop.
struct CanaryRole {
    server: url::Url,
    role: String,
    schemas: Vec<String>,
}

impl CanaryRole {
    async fn create(schemas: &[&str]) -> CanaryRole {
        let server = test_postgres_url()
            .await
            .expect("KLSYNC_TEST_POSTGRES_URL=skip is not allowed for these tests");
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let role = format!("klsync_secrets_{suffix}");
        let schemas: Vec<String> = schemas.iter().map(|s| format!("{role}_{s}")).collect();
        let mut admin = PgConnection::connect(&server).await.expect("connect");
        // Names are generated from hex digits and fixed words; the password is a constant.
        let mut ddl = format!("CREATE ROLE {role} LOGIN PASSWORD '{DB_PASSWORD}';");
        for schema in &schemas {
            ddl.push_str(&format!("CREATE SCHEMA {schema} AUTHORIZATION {role};"));
        }
        sqlx::raw_sql(sqlx::AssertSqlSafe(ddl))
            .execute(&mut admin)
            .await
            .expect("create the canary role");
        admin.close().await.expect("close");
        CanaryRole {
            server: url::Url::parse(&server).expect("server URL"),
            role,
            schemas,
        }
    }

    /// A URL logging in as the role with the canary password, using `schema` only.
    fn url(&self, schema: usize) -> String {
        let mut url = self.server.clone();
        url.set_username(&self.role).unwrap();
        url.set_password(Some(DB_PASSWORD)).unwrap();
        url.query_pairs_mut().clear().append_pair(
            "options",
            &format!("-c search_path={}", self.schemas[schema]),
        );
        url.to_string()
    }

    /// `host:port/database` of the server, for hand-written (mistyped) URLs.
    fn host_and_database(&self) -> String {
        format!(
            "{}:{}{}",
            self.server.host_str().unwrap(),
            self.server.port().unwrap_or(5432),
            self.server.path()
        )
    }

    /// Every row of every table in the role's schemas, as text.
    async fn dump(&self) -> String {
        let mut admin = PgConnection::connect(self.server.as_str())
            .await
            .expect("connect");
        let mut dump = String::new();
        for schema in &self.schemas {
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
            )
            .bind(schema)
            .fetch_all(&mut admin)
            .await
            .expect("list tables");
            for table in tables {
                let rows = admin
                    .fetch_all(sqlx::AssertSqlSafe(format!(
                        "SELECT t::text FROM \"{schema}\".\"{table}\" t"
                    )))
                    .await
                    .expect("dump a table");
                dump.push_str(&format!("== {schema}.{table} ({} rows)\n", rows.len()));
                for row in rows {
                    dump.push_str(&row.get::<String, _>(0));
                    dump.push('\n');
                }
            }
        }
        admin.close().await.expect("close");
        dump
    }
}

impl Drop for CanaryRole {
    fn drop(&mut self) {
        let server = self.server.to_string();
        let mut ddl: String = self
            .schemas
            .iter()
            .map(|schema| format!("DROP SCHEMA IF EXISTS {schema} CASCADE;"))
            .collect();
        ddl.push_str(&format!("DROP ROLE IF EXISTS {};", self.role));
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async move {
                let mut admin = PgConnection::connect(&server).await.ok()?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(ddl))
                    .execute(&mut admin)
                    .await
                    .ok()?;
                admin.close().await.ok()
            })
        })
        .join();
    }
}

/// A server that speaks PostgreSQL's protocol far enough to ask for a cleartext password and
/// refuse it (SQLSTATE 28P01), as a server with password authentication refuses a wrong one.
/// Records the passwords it was sent, which proves the client really tried one.
struct PasswordRefusingServer {
    port: u16,
    received: Arc<Mutex<Vec<String>>>,
}

impl PasswordRefusingServer {
    fn start() -> PasswordRefusingServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let seen = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let seen = seen.clone();
                std::thread::spawn(move || {
                    if let Some(password) = refuse_password(stream) {
                        seen.lock().unwrap().push(password);
                    }
                });
            }
        });
        PasswordRefusingServer { port, received }
    }

    fn received(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }
}

/// One connection: answer an SSL request with "no", read the startup message, ask for the
/// password, read it, refuse it.
fn refuse_password(mut stream: TcpStream) -> Option<String> {
    let read_i32 = |stream: &mut TcpStream| -> Option<i32> {
        let mut bytes = [0u8; 4];
        stream.read_exact(&mut bytes).ok()?;
        Some(i32::from_be_bytes(bytes))
    };
    let user = loop {
        let length = read_i32(&mut stream)?;
        let mut body = vec![0u8; usize::try_from(length).ok()?.checked_sub(4)?];
        stream.read_exact(&mut body).ok()?;
        if body[..4] == 80_877_103i32.to_be_bytes() {
            stream.write_all(b"N").ok()?; // SSLRequest: no TLS here.
            continue;
        }
        // StartupMessage: protocol version, then NUL-terminated name/value pairs.
        let params: Vec<&[u8]> = body[4..].split(|b| *b == 0).collect();
        let user = params
            .chunks(2)
            .find(|pair| pair[0] == b"user")
            .and_then(|pair| pair.get(1))
            .map(|user| String::from_utf8_lossy(user).into_owned())
            .unwrap_or_default();
        break user;
    };
    // AuthenticationCleartextPassword.
    stream.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3]).ok()?;
    let mut tag = [0u8; 1];
    stream.read_exact(&mut tag).ok()?;
    let length = read_i32(&mut stream)?;
    let mut body = vec![0u8; usize::try_from(length).ok()?.checked_sub(4)?];
    stream.read_exact(&mut body).ok()?;
    let password = String::from_utf8_lossy(body.strip_suffix(&[0]).unwrap_or(&body)).into_owned();
    let mut fields = Vec::new();
    for (code, value) in [
        (b'S', "FATAL".to_owned()),
        (b'V', "FATAL".to_owned()),
        (b'C', "28P01".to_owned()),
        (
            b'M',
            format!("password authentication failed for user \"{user}\""),
        ),
    ] {
        fields.push(code);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut message = vec![b'E'];
    message.extend_from_slice(&(i32::try_from(fields.len()).ok()? + 4).to_be_bytes());
    message.extend_from_slice(&fields);
    stream.write_all(&message).ok()?;
    Some(password)
}

/// A command's arguments and the environment variables set for it.
type Invocation<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);

/// Runs klsync the way an operator who wants everything recorded would: `-vvv`, a JSON log
/// file and a metrics file per run, all kept for the leak scan.
struct Suite {
    work: tempfile::TempDir,
    project: TempProject,
    emulator: EmulatorHandle,
    env: Vec<(String, String)>,
    transcripts: Vec<(String, Finished)>,
    runs: usize,
}

impl Suite {
    fn dir(&self) -> &Path {
        self.work.path()
    }

    fn path(&self, name: &str) -> String {
        self.dir().join(name).display().to_string()
    }

    /// A command with the suite's environment, `env` over it, and the recording flags.
    fn command(&mut self, args: &[&str], env: &[(&str, &str)]) -> Command {
        self.runs += 1;
        let mut command = klsync();
        command
            .args(args)
            .arg("-vvv")
            .args(["--log-format", "json", "--log-file"])
            .arg(self.dir().join(format!("logs/{:02}.log", self.runs)))
            .arg("--metrics-file")
            .arg(self.dir().join(format!("metrics/{:02}.json", self.runs)))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(env.iter().copied())
            .stdin(Stdio::null());
        command
    }

    /// Run to completion; keep the transcript for the scan.
    fn run(&mut self, args: &[&str], env: &[(&str, &str)]) -> &Finished {
        let mut command = self.command(args, env);
        let finished = crate::support::project::run(&mut command);
        self.keep(args, env, finished)
    }

    fn keep(&mut self, args: &[&str], env: &[(&str, &str)], finished: Finished) -> &Finished {
        let label = format!("klsync {} (env {env:?})", args.join(" "));
        self.transcripts.push((label, finished));
        &self.transcripts.last().unwrap().1
    }

    /// Run several commands at once (the slow failures: connection timeouts).
    fn run_all(&mut self, runs: &[Invocation<'_>]) -> Vec<Finished> {
        let children: Vec<_> = runs
            .iter()
            .map(|(args, env)| {
                self.command(args, env)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn klsync")
            })
            .collect();
        let mut finished = Vec::new();
        for ((args, env), child) in runs.iter().zip(children) {
            let done = Finished::from(child.wait_with_output().expect("wait"));
            finished.push(Finished {
                code: done.code,
                stdout: done.stdout.clone(),
                stderr: done.stderr.clone(),
            });
            self.keep(args, env, done);
        }
        finished
    }
}

fn expect(finished: &Finished, code: i32, needles: &[&str]) {
    assert_eq!(
        finished.code, code,
        "stdout:\n{}\nstderr:\n{}",
        finished.stdout, finished.stderr
    );
    for needle in needles {
        assert!(
            finished.stderr.contains(needle) || finished.stdout.contains(needle),
            "{needle:?} not in:\nstdout:\n{}\nstderr:\n{}",
            finished.stdout,
            finished.stderr
        );
    }
}

/// Every file under `dir`, with its text (lossy).
fn files_under(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.is_file() {
                let bytes = std::fs::read(&path).expect("read");
                files.push((path, String::from_utf8_lossy(&bytes).into_owned()));
            }
        }
    }
    files
}

fn assert_no_secret(what: &str, text: &str) {
    for fragment in FRAGMENTS {
        if let Some(at) = text.find(fragment) {
            let start = text[..at]
                .char_indices()
                .rev()
                .nth(80)
                .map_or(0, |(i, _)| i);
            let end = (at + 120).min(text.len());
            let end = (end..=text.len())
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(text.len());
            panic!("{fragment:?} leaked in {what}: …{}…", &text[start..end]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_any_output_file_or_table() {
    let role = CanaryRole::create(&["state", "data", "import"]).await;
    let (state_url, data_url, import_url) = (role.url(0), role.url(1), role.url(2));
    let mut data = PgConnection::connect(&data_url)
        .await
        .expect("connect as the role");
    sqlx::raw_sql(
        "CREATE TABLE customers (email TEXT, ltv INTEGER);
         INSERT INTO customers VALUES
           ('a@example.com', 900), ('b@example.com', 300), ('c@example.com', 50);",
    )
    .execute(&mut data)
    .await
    .expect("seed the data");
    data.close().await.expect("close");
    let emulator = emulator::start(EmulatorConfig {
        rate_limits: RateLimitMode::Off,
        api_keys: vec![API_KEY.to_owned()],
        ..EmulatorConfig::default()
    })
    .await
    .expect("start the emulator");
    let work = tempfile::tempdir().expect("tempdir");
    for dir in ["logs", "metrics"] {
        std::fs::create_dir(work.path().join(dir)).unwrap();
    }
    let project = TempProject::new(&[("shop.yaml", PROJECT)]);
    let mut suite = Suite {
        env: vec![
            ("KLAVIYO_API_KEY".into(), API_KEY.into()),
            ("KLAVIYO_BASE_URL".into(), emulator.base_url.clone()),
            ("KLSYNC_STATE_URL".into(), state_url.clone()),
            ("DATABASE_URL".into(), data_url.clone()),
        ],
        work,
        project,
        emulator,
        transcripts: Vec::new(),
        runs: 0,
    };
    let dir = suite.project.path().display().to_string();
    let dir = dir.as_str();
    let plan = suite.path("plan.json");
    let plan = plan.as_str();
    // Dependencies' trace events too (sqlx, reqwest, hyper), not only klsync's.
    let all_logs = [("RUST_LOG", "trace")];

    // The happy path, every command.
    expect(suite.run(&["validate", "-C", dir], &[]), 0, &["ok:"]);
    expect(suite.run(&["plan", "-C", dir], &all_logs), 0, &["list.vip"]);
    for format in ["markdown", "json"] {
        expect(
            suite.run(&["plan", "-C", dir, "--format", format], &[]),
            0,
            &[],
        );
    }
    expect(
        suite.run(&["plan", "-C", dir, "--out", plan], &[]),
        0,
        &["Saved plan"],
    );
    expect(
        suite.run(&["apply", "-C", dir, plan], &all_logs),
        0,
        &["Apply complete"],
    );
    expect(
        suite.run(
            &["plan", "-C", dir, "--refresh", "--detailed-exitcode"],
            &[],
        ),
        0,
        &[],
    );
    suite.project.write(
        "more.yaml",
        "lists:\n  - id: newsletter\n    name: Newsletter\n",
    );
    expect(
        suite.run(&["apply", "-C", dir, "--auto-approve"], &[]),
        0,
        &["create list.newsletter"],
    );
    expect(suite.run(&["history", "-C", dir], &[]), 0, &["apply"]);
    expect(
        suite.run(&["history", "-C", dir, "--format", "json"], &[]),
        0,
        &[],
    );
    expect(suite.run(&["drift", "-C", dir], &[]), 0, &[]);
    expect(
        suite.run(
            &[
                "drift",
                "-C",
                dir,
                "--format",
                "json",
                "--include-unmanaged",
            ],
            &[],
        ),
        0,
        &[],
    );
    let imported = suite.path("imported");
    expect(
        suite.run(
            &["import", "--out", &imported],
            &[("KLSYNC_STATE_URL", &import_url)],
        ),
        0,
        &[],
    );
    expect(
        suite.run(
            &[
                "query",
                "save",
                "big",
                "--sql",
                "SELECT email FROM customers WHERE ltv > $1",
                "--params",
                "[100]",
            ],
            &[],
        ),
        0,
        &[],
    );
    expect(suite.run(&["query", "list"], &[]), 0, &["big"]);
    expect(
        suite.run(&["query", "show", "big"], &[]),
        0,
        &["SELECT email"],
    );
    expect(
        suite.run(&["query", "run", "big", "--format", "json"], &all_logs),
        0,
        &["a@example.com"],
    );
    // The demo must use none of the configured secrets, and print none. It runs beside the
    // failures below. (The state database on a closed port is left out: the pool retries it
    // for its whole 10 s acquire timeout, through the same redaction as the unknown host.)
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let demo = suite
        .command(&["demo"], &[])
        .current_dir(elsewhere.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the demo");

    // Failures: the secrets are at hand, and the errors must still not print them.
    let wrong_key = "pk_SECRETKEY_canary_wrong";
    expect(
        suite.run(&["plan", "-C", dir], &[("KLAVIYO_API_KEY", wrong_key)]),
        1,
        &["401"],
    );
    // Recorded in the audit rows: the apply begins a run before Klaviyo refuses the key.
    expect(
        suite.run(
            &["apply", "-C", dir, "--auto-approve"],
            &[("KLAVIYO_API_KEY", wrong_key)],
        ),
        1,
        &["401"],
    );
    let refusing = PasswordRefusingServer::start();
    let wrong_password = format!(
        "postgres://{}:{DB_PASSWORD}_wrong@127.0.0.1:{}/test",
        role.role, refusing.port
    );
    expect(
        suite.run(
            &["plan", "-C", dir],
            &[("KLSYNC_STATE_URL", &wrong_password)],
        ),
        1,
        &["password authentication failed"],
    );
    expect(
        suite.run(&["plan", "-C", dir], &[("DATABASE_URL", &wrong_password)]),
        1,
        &["password authentication failed"],
    );
    expect(
        suite.run(&["query", "list"], &[("DATABASE_URL", &wrong_password)]),
        1,
        &["password authentication failed"],
    );
    assert!(
        refusing
            .received()
            .iter()
            .any(|sent| sent == &format!("{DB_PASSWORD}_wrong")),
        "the wrong password was never sent: {:?}",
        refusing.received().len()
    );
    let closed_port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let role_name = role.role.clone();
    let unreachable_db =
        format!("postgres://{role_name}:{DB_PASSWORD}@127.0.0.1:{closed_port}/test");
    let unknown_host = format!("postgres://{role_name}:{DB_PASSWORD}@db.invalid/test");
    let klaviyo_down = format!("http://127.0.0.1:{closed_port}");
    let plan_args: &[&str] = &["plan", "-C", dir];
    let query_args: &[&str] = &["query", "list"];
    let finished = suite.run_all(&[
        (plan_args, &[("KLAVIYO_BASE_URL", klaviyo_down.as_str())]),
        (plan_args, &[("KLSYNC_STATE_URL", unknown_host.as_str())]),
        (plan_args, &[("DATABASE_URL", unreachable_db.as_str())]),
        (query_args, &[("DATABASE_URL", unknown_host.as_str())]),
    ]);
    for done in &finished {
        expect(done, 1, &["error:"]);
    }
    let finished = Finished::from(demo.wait_with_output().expect("wait for the demo"));
    expect(suite.keep(&["demo"], &[], finished), 0, &["No changes"]);
    // Finding 4: mistyped URLs that no parser accepts, in both variables.
    let host = role.host_and_database();
    let mistyped = [
        format!("postgres:/{role_name}:{DB_PASSWORD}@{host}"),
        format!("{role_name}:{DB_PASSWORD}@{host}"),
        format!("postgres//{role_name}:{DB_PASSWORD}@{host}"),
        format!("host=127.0.0.1 user={role_name} password={DB_PASSWORD} dbname=test"),
        format!("postgres://{role_name}@{role_name}:{DB_PASSWORD}@db.invalid/test"),
        format!(
            "postgres://{role_name}@db.invalid/test?sslpassword={DB_PASSWORD}&password={DB_PASSWORD}"
        ),
    ];
    let envs: Vec<[(&str, &str); 1]> = mistyped
        .iter()
        .flat_map(|url| {
            [
                [("KLSYNC_STATE_URL", url.as_str())],
                [("DATABASE_URL", url.as_str())],
            ]
        })
        .collect();
    let runs: Vec<Invocation<'_>> = envs
        .iter()
        .flat_map(|env| {
            let plan: Invocation<'_> = (plan_args, env);
            let query: Invocation<'_> = (query_args, env);
            if env[0].0 == "DATABASE_URL" {
                vec![plan, query]
            } else {
                vec![plan]
            }
        })
        .collect();
    for (done, (_, env)) in suite.run_all(&runs).iter().zip(&runs) {
        assert_eq!(done.code, 1, "{env:?}: {}", done.stderr);
    }

    // The scan. First, that it looks at real output: the logs saw the traffic.
    let logs: String = files_under(&suite.dir().join("logs"))
        .into_iter()
        .map(|(_, text)| text)
        .collect();
    for needle in [
        "klaviyo.request",
        "\"level\":\"TRACE\"",
        "sqlx::query",
        "status=401",
    ] {
        assert!(
            logs.contains(needle) || logs.contains(&needle.replace('=', "\":")),
            "the logs lack {needle:?}"
        );
    }
    // Run 6 applied the saved plan: its metrics are among the files scanned below.
    let metrics = std::fs::read_to_string(suite.dir().join("metrics/06.json")).expect("metrics");
    assert!(metrics.contains("\"command\": \"apply\""), "{metrics}");
    assert!(std::path::Path::new(&imported).join("lists.yaml").exists());
    for (label, finished) in &suite.transcripts {
        assert_no_secret(&format!("stdout of {label}"), &finished.stdout);
        assert_no_secret(&format!("stderr of {label}"), &finished.stderr);
    }
    let mut files = 0;
    for root in [suite.dir(), suite.project.path(), elsewhere.path()] {
        for (path, text) in files_under(root) {
            assert_no_secret(&path.display().to_string(), &text);
            files += 1;
        }
    }
    let tables = role.dump().await;
    for table in [
        "runs",
        "journal",
        "managed_resources",
        "saved_plans",
        "saved_queries",
    ] {
        assert!(
            tables.contains(&format!(".{table} (")),
            "no {table} in the dump"
        );
    }
    assert!(
        tables.contains("failed with HTTP 401: not_authenticated"),
        "the refused apply is in the audit rows:\n{tables}"
    );
    assert_no_secret("the state and data tables", &tables);
    eprintln!(
        "secrets: {} klsync runs ({} outputs), {files} files and {} bytes of table dumps \
         scanned; leaks found: 0",
        suite.runs,
        suite.transcripts.len() * 2,
        tables.len()
    );
    suite.emulator.shutdown().await;
}
