//! The apply run's lifecycle, end to end with the real binary: Ctrl-C and SIGTERM, the apply
//! lock (`--lock-timeout`, takeovers, `state unlock`) and the cancellation of a PostgreSQL query.
//!
//! Every interleaving is driven by a gate: a proxy between klsync and the emulator that holds
//! one chosen request until the test lets it through, so a signal or a second command lands
//! while that request is in flight, never by a sleep. What klsync prints on stderr is read as it
//! comes, to know when it has seen a signal.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::backend::{Backend, ok, on_both_backends};
use crate::support::project::{Finished, TempProject, klsync, many_lists};
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use klsync::emulator::{self, EmulatorConfig, EmulatorHandle, RateLimitMode};
use klsync::state::testing::TestPostgres;
use serde_json::Value;
use tokio::sync::watch;

/// Forwards every request to the emulator, logging it, and holds the `nth` request matching
/// `method path` until [`Gate::release`].
struct Gate {
    base_url: String,
    shared: Arc<GateShared>,
}

struct GateShared {
    upstream: String,
    http: reqwest::Client,
    /// `METHOD /path` of every request, in arrival order.
    log: Mutex<Vec<String>>,
    hold: (String, usize),
    /// The index in `log` of the held request, once it arrived.
    held: watch::Sender<Option<usize>>,
    released: watch::Sender<bool>,
}

impl Gate {
    async fn start(upstream: &str, method: &str, path: &str, nth: usize) -> Gate {
        let shared = Arc::new(GateShared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            log: Mutex::default(),
            hold: (format!("{method} {path}"), nth),
            held: watch::Sender::new(None),
            released: watch::Sender::new(false),
        });
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind the gate");
        let addr = listener.local_addr().expect("gate address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Gate {
            base_url: format!("http://{addr}"),
            shared,
        }
    }

    /// Wait until the chosen request arrived (and is being held); its index in the log.
    async fn wait_held(&self) -> usize {
        let mut held = self.shared.held.subscribe();
        let index = tokio::time::timeout(Duration::from_secs(60), held.wait_for(Option::is_some))
            .await
            .expect("the request to hold never came")
            .expect("gate alive");
        index.expect("some")
    }

    fn release(&self) {
        self.shared.released.send_replace(true);
    }

    /// Requests that arrived after the held one.
    fn after_held(&self) -> Vec<String> {
        let held = self.shared.held.borrow().expect("a request was held");
        self.shared.log.lock().unwrap()[held + 1..].to_vec()
    }
}

async fn forward(State(gate): State<Arc<GateShared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = to_bytes(body, 64 * 1024 * 1024).await.unwrap_or_default();
    let key = format!("{} {}", parts.method, parts.uri.path());
    let hold = {
        let mut log = gate.log.lock().unwrap();
        log.push(key.clone());
        let index = log.len() - 1;
        let matching = log.iter().filter(|seen| **seen == gate.hold.0).count();
        (key == gate.hold.0 && matching == gate.hold.1).then_some(index)
    };
    if let Some(index) = hold {
        gate.held.send_replace(Some(index));
        let mut released = gate.released.subscribe();
        let _ = released.wait_for(|released| *released).await;
    }
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let mut outgoing = gate
        .http
        .request(
            parts.method.clone(),
            format!("{}{path_and_query}", gate.upstream),
        )
        .body(bytes.to_vec());
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            outgoing = outgoing.header(name, value);
        }
    }
    let upstream = outgoing.send().await.expect("the emulator answers");
    let mut response = Response::builder().status(upstream.status().as_u16());
    for (name, value) in upstream.headers() {
        if name != "content-length" && name != "transfer-encoding" {
            response = response.header(name, value);
        }
    }
    let body = upstream.bytes().await.unwrap_or_default();
    response.body(Body::from(body)).expect("response")
}

/// An emulator behind a gate, a state backend and a project.
struct Setup {
    emulator: EmulatorHandle,
    gate: Gate,
    backend: Backend,
    project: TempProject,
}

impl Setup {
    /// The gate holds the `nth` `POST /api/lists` (a list create).
    async fn new(backend: Backend, files: &[(&str, &str)], nth_list: usize) -> Setup {
        Setup::holding(backend, files, ("POST", "/api/lists", nth_list)).await
    }

    /// The gate holds the `nth` request `method path`.
    async fn holding(
        backend: Backend,
        files: &[(&str, &str)],
        (method, path, nth): (&str, &str, usize),
    ) -> Setup {
        let emulator = emulator::start(EmulatorConfig {
            rate_limits: RateLimitMode::Off,
            ..EmulatorConfig::default()
        })
        .await
        .expect("start the emulator");
        let gate = Gate::start(&emulator.base_url, method, path, nth).await;
        Setup {
            emulator,
            gate,
            backend,
            project: TempProject::new(files),
        }
    }

    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut command = self.command_anywhere(args, env);
        command.arg("-C").arg(self.project.path());
        command
    }

    /// A command for this emulator and state, without `-C` (for `import`).
    fn command_anywhere(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut command = klsync();
        command
            .args(args)
            .env("KLAVIYO_BASE_URL", &self.gate.base_url)
            .env("KLAVIYO_API_KEY", "pk_emulator")
            .env("KLSYNC_STATE_URL", self.backend.url())
            .envs(env.iter().copied())
            .stdin(Stdio::null());
        command
    }

    async fn run(&self, args: &[&str]) -> Finished {
        let mut command = self.command(args, &[]);
        tokio::task::spawn_blocking(move || Finished::from(command.output().expect("run klsync")))
            .await
            .expect("join")
    }

    fn spawn(&self, args: &[&str], env: &[(&str, &str)]) -> Running {
        Running::spawn(self.command(args, env))
    }

    /// Names per kind, with their counts: a duplicate shows as a count above 1.
    fn list_counts(&self) -> std::collections::BTreeMap<String, usize> {
        self.emulator.seed(|state| {
            let mut names = std::collections::BTreeMap::new();
            for list in state.lists.values() {
                *names.entry(list.name.clone()).or_default() += 1;
            }
            names
        })
    }

    /// The newest run of the audit history.
    async fn last_run(&self) -> Value {
        let history = self
            .run(&["history", "--format", "json", "--limit", "1"])
            .await;
        ok(&history, 0);
        let runs: Value = serde_json::from_str(&history.stdout).expect("history JSON");
        runs[0].clone()
    }

    /// Apply again, converge, and find each list exactly once.
    async fn converges(&self, lists: usize) {
        ok(&self.run(&["apply", "--auto-approve"]).await, 0);
        ok(&self.run(&["plan", "--detailed-exitcode"]).await, 0);
        let counts = self.list_counts();
        for i in 0..lists {
            assert_eq!(counts[&format!("List {i}")], 1, "{counts:?}");
        }
    }
}

/// A `klsync` process whose stderr is read as it is written.
struct Running {
    child: Child,
    stderr: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<String>>,
}

impl Running {
    fn spawn(mut command: Command) -> Running {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn klsync");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        let shared = stderr.clone();
        let readers = vec![
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = out.read_to_string(&mut text);
                text
            }),
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    let mut text = shared.lock().unwrap();
                    text.push_str(&line);
                    text.push('\n');
                }
                String::new()
            }),
        ];
        Running {
            child,
            stderr,
            readers,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Wait until stderr contains `needle`; its text then.
    async fn wait_stderr(&self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let text = self.stderr();
            if text.contains(needle) {
                return text;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "timed out waiting for {needle:?} on stderr:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// [`Running::finish`], killing the process and failing if it takes longer than `limit`.
    async fn finish_within(self, limit: Duration) -> Finished {
        let pid = self.pid().to_string();
        match tokio::time::timeout(limit, self.finish()).await {
            Ok(finished) => finished,
            Err(_) => {
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
                panic!("klsync still ran {limit:?} later");
            }
        }
    }

    async fn finish(mut self) -> Finished {
        let (code, readers) = tokio::task::spawn_blocking(move || {
            let status = self.child.wait().expect("wait");
            (status.code().unwrap_or(-1), self.readers)
        })
        .await
        .expect("join");
        let mut texts = readers
            .into_iter()
            .map(|reader| reader.join().expect("reader"));
        let stdout = texts.next().unwrap_or_default();
        Finished {
            code,
            stdout,
            stderr: self.stderr.lock().unwrap().clone(),
        }
    }
}

const LISTS: usize = 6;

on_both_backends!(
    ctrl_c_stops_the_apply_gracefully,
    a_lock_is_waited_for_with_lock_timeout,
    a_killed_holders_lock_is_taken_over_with_a_message,
    state_unlock_checks_the_run_and_what_the_database_allows,
);

/// Ctrl-C while a create is in flight: it is awaited, nothing new is sent, the run is recorded
/// as interrupted with a consistent journal, the lock is released, and apply resumes.
async fn ctrl_c_stops_the_apply_gracefully(backend: Backend) {
    a_signal_stops_the_apply_gracefully(backend, "INT", 130).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_apply_gracefully() {
    a_signal_stops_the_apply_gracefully(Backend::sqlite(), "TERM", 143).await;
}

async fn a_signal_stops_the_apply_gracefully(backend: Backend, signal: &str, code: i32) {
    let setup = Setup::new(backend, &[("m.yaml", &many_lists(LISTS))], 3).await;
    let apply = setup.spawn(&["apply", "--auto-approve"], &[]);
    setup.gate.wait_held().await;
    apply.signal(signal);
    apply
        .wait_stderr(&format!("SIG{signal} received: stopping"))
        .await;
    // The request in flight when the signal came is let through now: it must be awaited.
    setup.gate.release();
    let finished = apply.finish().await;
    ok(&finished, code);
    // The tag, the segment (its own lane, sent at once beside the lists: see
    // `apply::Executor`) and three lists, the third being the one in flight.
    assert!(
        finished.stderr.contains(&format!(
            "Apply interrupted by SIG{signal}: 5 change(s) made"
        )),
        "{}",
        finished.stderr
    );
    assert!(
        finished
            .stderr
            .contains("Run `klsync apply` again to resume."),
        "{}",
        finished.stderr
    );
    assert_eq!(
        setup.gate.after_held(),
        Vec::<String>::new(),
        "nothing is sent after the signal"
    );

    let run = setup.last_run().await;
    assert_eq!(run["command"], "apply");
    assert_eq!(run["outcome"], "interrupted", "{run:#}");
    let changes = run["changes"].as_array().expect("changes");
    assert_eq!(changes.len(), 5, "{run:#}");
    assert!(
        changes
            .iter()
            .all(|change| change["outcome"] == "succeeded"),
        "no journal entry is left started: {run:#}"
    );
    // The lock was released: nothing to unlock, and the next apply runs at once.
    let unlock = setup.run(&["state", "unlock", "00000000", "-y"]).await;
    ok(&unlock, 1);
    assert!(
        unlock.stderr.contains("the apply lock is not held"),
        "{}",
        unlock.stderr
    );
    setup.converges(LISTS).await;
}

/// A second Ctrl-C ends the process at once; the journal still lets the next apply converge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ctrl_c_exits_at_once_and_apply_still_converges() {
    let setup = Setup::new(Backend::sqlite(), &[("m.yaml", &many_lists(LISTS))], 2).await;
    let apply = setup.spawn(&["apply", "--auto-approve"], &[]);
    setup.gate.wait_held().await;
    apply.signal("INT");
    apply.wait_stderr("SIGINT received: stopping").await;
    apply.signal("INT");
    // Without the held request being let through.
    let finished = apply.finish().await;
    ok(&finished, 130);
    assert!(
        finished
            .stderr
            .contains("SIGINT received again: stopping at once"),
        "{}",
        finished.stderr
    );
    setup.gate.release();
    setup.converges(LISTS).await;
}

/// A request still in flight when the grace period ends is abandoned: its journal entry stays
/// `started` (sent, outcome unknown) and the next apply checks it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_outlasting_the_grace_period_is_abandoned() {
    let setup = Setup::new(Backend::sqlite(), &[("m.yaml", &many_lists(LISTS))], 2).await;
    let apply = setup.spawn(&["apply", "--auto-approve"], &[]);
    setup.gate.wait_held().await;
    apply.signal("INT");
    let finished = apply.finish().await;
    ok(&finished, 130);
    assert!(
        finished
            .stderr
            .contains("1 change(s) still in flight after 10s were abandoned"),
        "{}",
        finished.stderr
    );
    let run = setup.last_run().await;
    assert_eq!(run["outcome"], "interrupted", "{run:#}");
    let started: Vec<&Value> = run["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .filter(|change| change["outcome"] == "started")
        .collect();
    assert_eq!(started.len(), 1, "{run:#}");
    assert_eq!(started[0]["address"], "list.l1");
    setup.gate.release();
    setup.converges(LISTS).await;
}

/// Finding 5: a PostgreSQL sync query kept running on the server after Ctrl-C until its
/// statement timeout. It is cancelled there now, before klsync exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_cancels_the_postgresql_query_on_the_server() {
    let source = TestPostgres::create()
        .await
        .expect("the test PostgreSQL is required");
    let marker = format!("klsync_sleep_{}", uuid::Uuid::new_v4().simple());
    let manifest = format!(
        "lists:\n  - id: sleepy\n    name: Sleepy\n    members:\n      query: slow\n      identify_by: email\n      mode: mirror\nqueries:\n  slow:\n    sql: SELECT 'a@example.com'::text AS email, '{marker}' AS marker FROM pg_sleep(600)\n"
    );
    let setup = Setup::new(Backend::sqlite(), &[("m.yaml", &manifest)], 1).await;
    // Far beyond the test: only a cancel ends the query in time.
    setup.project.write(
        "klsync.yaml",
        "version: 1\ndatabase:\n  statement_timeout_seconds: 900\n",
    );
    let apply = setup.spawn(
        &["apply", "--auto-approve"],
        &[("DATABASE_URL", source.url())],
    );
    let running = |source_url: String, marker: String| async move {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(&source_url).await.expect("pg");
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE state = 'active' AND pid <> pg_backend_pid() AND strpos(query, $1) > 0",
        )
        .bind(&marker)
        .fetch_one(&mut conn)
        .await
        .expect("pg_stat_activity");
        conn.close().await.expect("close");
        count
    };
    let start = Instant::now();
    while running(source.url().to_owned(), marker.clone()).await == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the query never started: {}",
            apply.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    apply.signal("INT");
    let finished = apply.finish_within(Duration::from_secs(60)).await;
    ok(&finished, 130);
    assert!(
        finished.stderr.contains("Apply interrupted by SIGINT"),
        "{}",
        finished.stderr
    );
    assert!(
        !finished.stderr.contains("abandoned"),
        "the query ended when it was cancelled, not at the end of the grace period: {}",
        finished.stderr
    );
    assert_eq!(
        running(source.url().to_owned(), marker.clone()).await,
        0,
        "the query is gone from the server"
    );
    assert_eq!(setup.last_run().await["outcome"], "interrupted");
    assert_eq!(
        setup
            .gate
            .shared
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.starts_with("POST"))
            .count(),
        0,
        "nothing was written to Klaviyo"
    );
}

/// `--lock-timeout` waits for a held lock, saying once for whom, and takes it when it is
/// released; a wait that runs out is refused naming the holder.
async fn a_lock_is_waited_for_with_lock_timeout(backend: Backend) {
    let setup = Setup::new(backend, &[("m.yaml", &many_lists(LISTS))], 2).await;
    let first = setup.spawn(&["apply", "--auto-approve"], &[]);
    setup.gate.wait_held().await;

    let impatient = setup
        .run(&["apply", "--auto-approve", "--lock-timeout", "1s"])
        .await;
    ok(&impatient, 1);
    assert!(
        impatient
            .stderr
            .contains("another apply is still running after waiting 1s for the lock: run "),
        "{}",
        impatient.stderr
    );
    assert!(
        impatient.stderr.contains(&format!("pid {}", first.pid())),
        "{}",
        impatient.stderr
    );

    // import takes the same lock, and waits the same way.
    let out = tempfile::tempdir().expect("tempdir");
    let out = out.path().display().to_string();
    let import = setup
        .command_anywhere(&["import", "--out", &out, "--lock-timeout", "1s"], &[])
        .output()
        .expect("run import");
    let import = Finished::from(import);
    ok(&import, 1);
    for needle in [
        "Waiting up to 1s (--lock-timeout) for the apply lock, held by run ",
        "another apply is still running after waiting 1s for the lock: run ",
    ] {
        assert!(import.stderr.contains(needle), "{}", import.stderr);
    }

    let patient = setup.spawn(&["apply", "--auto-approve", "--lock-timeout", "2m"], &[]);
    let waiting = patient
        .wait_stderr("Waiting up to 2m (--lock-timeout) for the apply lock, held by run ")
        .await;
    assert!(
        waiting.contains(&format!("pid {}", first.pid())),
        "{waiting}"
    );
    setup.gate.release();
    ok(&first.finish().await, 0);
    let patient = patient.finish().await;
    ok(&patient, 0);
    assert_eq!(
        patient.stderr.matches("Waiting up to").count(),
        1,
        "{}",
        patient.stderr
    );
    ok(&setup.run(&["plan", "--detailed-exitcode"]).await, 0);
}

/// A holder killed with SIGKILL leaves its lock behind (SQLite: the row; PostgreSQL: the row of
/// a session that ended); the next apply takes it over and names it.
async fn a_killed_holders_lock_is_taken_over_with_a_message(backend: Backend) {
    let postgres = matches!(backend, Backend::Postgres(_));
    let setup = Setup::new(backend, &[("m.yaml", &many_lists(LISTS))], 2).await;
    let mut first = setup.spawn(&["apply", "--auto-approve"], &[]);
    setup.gate.wait_held().await;
    let pid = first.pid();
    first.child.kill().expect("kill the holder");
    let killed = first.finish().await;
    assert_ne!(killed.code, 0);
    setup.gate.release();

    // PostgreSQL drops a dead client's session (and its locks) a moment later.
    let next = setup
        .run(&["apply", "--auto-approve", "--lock-timeout", "30s"])
        .await;
    ok(&next, 0);
    let why = if postgres {
        "its database session ended without releasing the lock".to_owned()
    } else {
        format!("its process {pid} no longer runs on")
    };
    let line = next
        .stderr
        .lines()
        .find(|line| line.starts_with("Took over the apply lock of run "))
        .unwrap_or_else(|| panic!("no takeover message:\n{}", next.stderr));
    assert!(line.contains(&format!("pid {pid}")), "{line}");
    assert!(line.contains(&why), "{line}");
    setup.converges(LISTS).await;
}

/// `state unlock`: refuses a run that does not hold the lock (naming the one that does), needs
/// confirmation, and then releases an SQLite lock, which its holder learns at its next
/// heartbeat; on PostgreSQL a live session's lock is refused with the way to end it.
async fn state_unlock_checks_the_run_and_what_the_database_allows(backend: Backend) {
    let postgres = matches!(backend, Backend::Postgres(_));
    let setup = Setup::new(backend, &[("m.yaml", &many_lists(LISTS))], 2).await;
    let holder = setup.spawn(&["apply", "--auto-approve"], &[]);
    setup.gate.wait_held().await;

    let wrong = setup.run(&["state", "unlock", "deadbeef", "--force"]).await;
    ok(&wrong, 1);
    let prefix = "run deadbeef does not hold the apply lock; it is held by run ";
    let at = wrong
        .stderr
        .find(prefix)
        .unwrap_or_else(|| panic!("{}", wrong.stderr));
    let run_id: String = wrong.stderr[at + prefix.len()..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    assert!(
        wrong.stderr.contains(&format!("pid {}", holder.pid())),
        "{}",
        wrong.stderr
    );

    let short = &run_id[..8];
    if postgres {
        // Refused before any question: nothing could be released anyway.
        let unlocked = setup.run(&["state", "unlock", short]).await;
        ok(&unlocked, 1);
        for needle in [
            "through a live PostgreSQL session (backend pid ",
            "SELECT pg_terminate_backend(",
            &format!("run {run_id} by "),
        ] {
            assert!(unlocked.stderr.contains(needle), "{}", unlocked.stderr);
        }
        setup.gate.release();
        ok(&holder.finish().await, 0);
        return;
    }
    let unconfirmed = setup.run(&["state", "unlock", &run_id]).await;
    ok(&unconfirmed, 1);
    assert!(
        unconfirmed.stderr.contains("pass --force (-y)"),
        "{}",
        unconfirmed.stderr
    );
    let unlocked = setup.run(&["state", "unlock", short, "-y"]).await;
    ok(&unlocked, 0);
    assert!(
        unlocked
            .stderr
            .contains(&format!("Released the apply lock of run {run_id} by ")),
        "{}",
        unlocked.stderr
    );
    assert!(
        unlocked.stderr.contains("still runs on this host"),
        "{}",
        unlocked.stderr
    );
    // The holder's next heartbeat finds the lock gone; it stops before sending more.
    holder
        .wait_stderr("The apply lock was lost: stopping.")
        .await;
    setup.gate.release();
    let stopped = holder.finish().await;
    ok(&stopped, 1);
    assert!(
        stopped.stderr.contains(&format!(
            "the apply lock of run {run_id} was lost while it ran"
        )),
        "{}",
        stopped.stderr
    );
    assert_eq!(setup.gate.after_held(), Vec::<String>::new());
    let history = setup
        .run(&["history", "--format", "json", "--limit", "2"])
        .await;
    let runs: Value = serde_json::from_str(&history.stdout).expect("history JSON");
    let commands: Vec<(&str, &str)> = runs
        .as_array()
        .expect("runs")
        .iter()
        .map(|run| {
            (
                run["command"].as_str().unwrap_or_default(),
                run["outcome"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        commands.contains(&("state unlock", "success")),
        "{commands:?}"
    );
    assert!(commands.contains(&("apply", "failed")), "{commands:?}");
    setup.converges(LISTS).await;
}

/// Ctrl-C in the data phase: the bulk job already sent is followed to its end (its polls are
/// still sent, within the grace period), and no other job starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_in_the_data_phase_follows_the_sent_job_and_starts_no_other() {
    use sqlx::Connection as _;
    let data = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", data.path().join("shop.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&format!("{url}?mode=rwc"))
        .await
        .expect("create the source");
    sqlx::raw_sql(
        "CREATE TABLE customers (email TEXT, plan TEXT);
         INSERT INTO customers VALUES ('a@example.com', 'gold'), ('b@example.com', 'silver'),
           ('c@example.com', 'free');",
    )
    .execute(&mut conn)
    .await
    .expect("fill the source");
    conn.close().await.expect("close");
    let manifest = "\
profiles:
  - id: facts
    query: everyone
    identify_by: email
    properties:
      shop_plan: plan
  - id: tier
    query: everyone
    identify_by: email
    properties:
      shop_tier: plan
queries:
  everyone:
    sql: SELECT email, plan FROM customers
";
    // The profiles syncs run one at a time: the first one's job comes first; the second's
    // would follow it. (A members sync would run beside them: see docs/operations.md.)
    let setup = Setup::holding(
        Backend::sqlite(),
        &[("m.yaml", manifest)],
        ("POST", "/api/profile-bulk-import-jobs", 1),
    )
    .await;
    let db = [("DATABASE_URL", url.as_str())];
    let apply = setup.spawn(&["apply", "--auto-approve"], &db);
    setup.gate.wait_held().await;
    apply.signal("INT");
    apply.wait_stderr("SIGINT received: stopping").await;
    setup.gate.release();
    let finished = apply.finish().await;
    ok(&finished, 130);
    assert!(
        finished.stderr.contains("Apply interrupted by SIGINT"),
        "{}",
        finished.stderr
    );
    let after = setup.gate.after_held();
    assert!(
        !after.is_empty()
            && after
                .iter()
                .all(|request| request.starts_with("GET /api/profile-bulk-import-jobs/")),
        "only the sent job is followed: {after:?}\n{}",
        finished.stderr
    );
    assert_eq!(setup.last_run().await["outcome"], "interrupted");

    let rerun = setup
        .command(&["apply", "--auto-approve"], &db)
        .output()
        .expect("rerun");
    ok(&Finished::from(rerun), 0);
    let plan = setup
        .command(&["plan", "--detailed-exitcode"], &db)
        .output()
        .expect("plan");
    ok(&Finished::from(plan), 0);
    let synced = setup.emulator.seed(|state| {
        state
            .profiles
            .values()
            .filter(|profile| {
                let properties = profile.attributes.get("properties");
                ["shop_plan", "shop_tier"]
                    .iter()
                    .all(|name| properties.and_then(|p| p.get(*name)).is_some())
            })
            .count()
    });
    assert_eq!(synced, 3);
}
