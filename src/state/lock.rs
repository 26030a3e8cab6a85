//! The apply lock: two applies never run against one account at once.
//!
//! PostgreSQL: a session advisory lock held on a connection of its own. The server drops it when
//! that connection closes, so a killed apply can never leave it behind. The `apply_lock` row only
//! names the holder for the "locked" message; a row left by a session that ended is replaced,
//! and the new holder says so.
//!
//! SQLite has no session locks that survive across statements of a pool, so the `apply_lock` row
//! is the lock, inserted inside `BEGIN IMMEDIATE` (which serialises writers across processes). A
//! killed apply leaves its row behind; the next one takes it over, naming the old holder, when it
//! is certainly gone:
//! - written on this host: when its process no longer exists. A live process is never taken
//!   over, however old its heartbeat (it may be stopped in a debugger or stuck in a query, but it
//!   may also wake up and send);
//! - written on another host: when its heartbeat is older than [`LOCK_STALE_AFTER`].
//!
//! While the lock is held a task of its own refreshes the heartbeat every [`HEARTBEAT_EVERY`],
//! on a connection of its own, from acquisition to release, whatever the run is doing (a long
//! query, a data phase). If a beat finds the row gone (taken over, or released with
//! `klsync state unlock`) or the PostgreSQL session dead, [`ApplyLock::lost`] resolves, so the run
//! can stop before sending more.

use std::collections::HashSet;
use std::future::Future;
use std::path::Path;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use sqlx::sqlite::SqliteConnection;
use tokio::sync::{mpsc, oneshot, watch};

use super::{Backend, RunId, StateError, StateStore, hostname};
use crate::duration::human_duration;

/// A lock row written on another host whose heartbeat is older than this is taken over.
pub const LOCK_STALE_AFTER: Duration = Duration::from_secs(15 * 60);
/// How often a held lock's heartbeat is refreshed. Far below [`LOCK_STALE_AFTER`], so missed
/// beats (a state database busy for a while) never make a live lock look stale; short, because
/// it is also how soon a run learns that its lock was taken from it (one `UPDATE` on a
/// connection of its own each time).
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);

/// The advisory lock's first key: "klsy". The second key is the hash of the current schema, so
/// states kept in different schemas of one database do not block each other.
const ADVISORY_CLASS: i32 = 0x6b6c_7379;

/// How often, and how far apart, a refused PostgreSQL apply looks for the winner's holder row.
const HOLDER_ROW_POLLS: usize = 40;
const HOLDER_ROW_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long a waiting apply sleeps between two tries at first, and at most.
const FIRST_WAIT: Duration = Duration::from_millis(250);
const MAX_WAIT: Duration = Duration::from_secs(5);

const READ_HOLDER: &str = "SELECT run_id, actor, host, pid, command, acquired_at, heartbeat_at \
                           FROM apply_lock WHERE id = 1";
const INSERT_HOLDER: &str = "INSERT INTO apply_lock \
                             (id, run_id, actor, host, pid, command, acquired_at, heartbeat_at) \
                             VALUES (1, $1, $2, $3, $4, $5, $6, $6)";
const DELETE_ANY_HOLDER: &str = "DELETE FROM apply_lock";
const DELETE_OWN_HOLDER: &str = "DELETE FROM apply_lock WHERE run_id = $1";
const HEARTBEAT: &str = "UPDATE apply_lock SET heartbeat_at = $1 WHERE run_id = $2";
/// The backend pid of the session holding this schema's advisory lock, with where it connects
/// from, if any session holds it.
const ADVISORY_HOLDER: &str = "SELECT a.pid, COALESCE(host(a.client_addr), 'a local socket') \
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 \
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
      AND l.classid = ($1::bigint)::oid \
      AND l.objid = (hashtext(current_schema())::bigint & 4294967295)::oid";

/// Run ids whose lock this process holds: a row naming this process's pid but none of them was
/// left by an earlier process that had the same pid (a container restarted, pids reused).
static HELD_HERE: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Mutex::default);

fn held_here() -> std::sync::MutexGuard<'static, HashSet<String>> {
    HELD_HERE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Who asks for the apply lock; shown to anyone refused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolder {
    /// The run taking the lock.
    pub run_id: RunId,
    /// Who runs it.
    pub actor: String,
    /// This machine's name.
    pub host: String,
    /// This process's id.
    pub pid: u32,
    /// The subcommand, e.g. "apply".
    pub command: String,
}

impl LockHolder {
    /// A holder for this process on this host.
    pub fn current(run_id: RunId, actor: impl Into<String>, command: impl Into<String>) -> Self {
        LockHolder {
            run_id,
            actor: actor.into(),
            host: hostname(),
            pid: std::process::id(),
            command: command.into(),
        }
    }
}

/// How to take the lock and keep it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockOptions {
    /// How long to wait for a lock held by another run before giving up; zero fails at once.
    pub timeout: Duration,
    /// How often the held lock's heartbeat is refreshed.
    pub heartbeat_every: Duration,
    /// How old another host's heartbeat must be for its lock to be taken over.
    pub stale_after: Duration,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            timeout: Duration::ZERO,
            heartbeat_every: HEARTBEAT_EVERY,
            stale_after: LOCK_STALE_AFTER,
        }
    }
}

/// The held apply lock. Call [`ApplyLock::release`] when done; dropping it releases it too,
/// as soon as its heartbeat task next runs.
#[must_use = "the lock is released when dropped"]
pub struct ApplyLock {
    run_id: RunId,
    took_over: Option<String>,
    commands: mpsc::Sender<Command>,
    lost: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for ApplyLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApplyLock")
            .field("run_id", &self.run_id)
            .finish_non_exhaustive()
    }
}

/// A connection of the lock's own: the heartbeat never queues behind the run's statements.
enum Held {
    Sqlite(SqliteConnection),
    /// Not a pooled connection: returning it to a pool would keep the advisory lock held.
    Postgres(PgConnection),
}

/// What the lock's owner asks of its heartbeat task.
enum Command {
    /// Beat now and say whether the lock is still held.
    Beat(oneshot::Sender<Result<(), StateError>>),
    /// Give the lock up and end.
    Release(oneshot::Sender<Result<(), StateError>>),
}

/// An `apply_lock` row as stored.
#[derive(Debug, sqlx::FromRow)]
struct HolderRow {
    run_id: String,
    actor: String,
    host: String,
    pid: i64,
    command: String,
    acquired_at: DateTime<Utc>,
    heartbeat_at: DateTime<Utc>,
}

/// What a holder row is compared with to decide whether its holder is gone.
struct Here<'a> {
    host: &'a str,
    pid: i64,
    /// Whether this process holds the lock of a run id.
    holds: &'a dyn Fn(&str) -> bool,
    /// Whether a process of this host exists.
    pid_alive: &'a dyn Fn(i64) -> bool,
}

impl HolderRow {
    /// `run <id> by <actor> on <host> pid <pid> since <time> (<command>)`.
    fn describe(&self) -> String {
        format!(
            "run {} by {} on {} pid {} since {} ({})",
            self.run_id,
            self.actor,
            self.host,
            self.pid,
            self.acquired_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            self.command,
        )
    }

    /// Why the holder is certainly gone, or `None` while it may still run.
    fn gone_because(
        &self,
        now: DateTime<Utc>,
        here: &Here<'_>,
        stale_after: Duration,
    ) -> Option<String> {
        if self.host == here.host {
            if self.pid == here.pid {
                return (!(here.holds)(&self.run_id)).then(|| {
                    format!(
                        "it was left by an earlier process that had this process's id ({})",
                        self.pid
                    )
                });
            }
            return (!(here.pid_alive)(self.pid))
                .then(|| format!("its process {} no longer runs on {}", self.pid, self.host));
        }
        let silent_for = (now - self.heartbeat_at).to_std().unwrap_or_default();
        (silent_for > stale_after).then(|| {
            format!(
                "its heartbeat stopped {} ago (a lock from another host is stale after {})",
                human_duration(silent_for),
                human_duration(stale_after)
            )
        })
    }
}

/// Whether process `pid` exists on this machine (a zombie does not count). When `/proc` cannot
/// tell (none at all, or hidden from us) the answer is "alive": a live holder must never be
/// taken over, and only a heartbeat can then declare it gone.
fn pid_alive(pid: i64) -> bool {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return true;
    }
    match std::fs::read_to_string(proc.join(pid.to_string()).join("stat")) {
        // `pid (comm) S ...`: the state follows the last `)`.
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(err) => err.kind() != std::io::ErrorKind::NotFound,
    }
}

fn locked(row: Option<HolderRow>) -> StateError {
    StateError::Locked {
        holder: row.map_or_else(
            || "holder unknown (it is still starting)".to_string(),
            |row| row.describe(),
        ),
    }
}

impl StateStore {
    /// Take the apply lock for this state's account, or fail with [`StateError::Locked`] naming
    /// the holder. Never waits.
    pub async fn acquire_apply_lock(&self, holder: &LockHolder) -> Result<ApplyLock, StateError> {
        self.acquire_apply_lock_with(holder, &LockOptions::default(), &mut |_| {})
            .await
    }

    /// Take the apply lock, waiting up to `options.timeout` for another run to give it up
    /// (polling with backoff). `waiting` is called once, with the holder, when waiting starts.
    /// A lock whose holder is certainly gone is taken over: [`ApplyLock::took_over`] says whose.
    pub async fn acquire_apply_lock_with(
        &self,
        holder: &LockHolder,
        options: &LockOptions,
        waiting: &mut (dyn FnMut(&str) + Send),
    ) -> Result<ApplyLock, StateError> {
        let started = tokio::time::Instant::now();
        let mut pause = FIRST_WAIT;
        let mut announced = false;
        loop {
            match self.try_apply_lock(holder, options).await {
                Err(StateError::Locked { holder: held_by }) => {
                    let waited = started.elapsed();
                    if waited >= options.timeout {
                        if options.timeout.is_zero() {
                            return Err(StateError::Locked { holder: held_by });
                        }
                        return Err(StateError::LockWaitTimedOut {
                            holder: held_by,
                            waited: human_duration(options.timeout),
                        });
                    }
                    if !announced {
                        waiting(&held_by);
                        announced = true;
                    }
                    tokio::time::sleep(pause.min(options.timeout - waited)).await;
                    pause = (pause * 2).min(MAX_WAIT);
                }
                other => return other,
            }
        }
    }

    async fn try_apply_lock(
        &self,
        holder: &LockHolder,
        options: &LockOptions,
    ) -> Result<ApplyLock, StateError> {
        let (held, took_over) = match &self.backend {
            Backend::Sqlite(pool) => {
                let options_of_pool = pool.connect_options();
                let mut conn = SqliteConnection::connect_with(&options_of_pool)
                    .await
                    .map_err(StateError::query("open the lock connection"))?;
                match acquire_sqlite(&mut conn, holder, options.stale_after).await {
                    Ok(took_over) => (Held::Sqlite(conn), took_over),
                    Err(err) => {
                        // Refused: the connection is of no further use; closing it politely
                        // changes nothing.
                        let _ = conn.close().await;
                        return Err(err);
                    }
                }
            }
            Backend::Postgres(pool) => {
                let conn = PgConnection::connect_with(&pool.connect_options())
                    .await
                    .map_err(StateError::query("open the lock connection"))?;
                let (conn, took_over) = acquire_postgres(conn, holder).await?;
                (Held::Postgres(conn), took_over)
            }
        };
        Ok(ApplyLock::start(
            holder.run_id,
            took_over,
            held,
            options.heartbeat_every,
        ))
    }

    /// The current holder of the apply lock, if any, with what is known of whether it runs.
    pub async fn lock_holder(&self) -> Result<Option<LockInfo>, StateError> {
        let row: Option<HolderRow> = on_backend!(self, pool => sqlx::query_as(READ_HOLDER)
            .fetch_optional(pool)
            .await)
        .map_err(StateError::query("read the lock holder"))?;
        let session = match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(pool) => advisory_session(pool).await?,
        };
        Ok(match (row, session) {
            (Some(row), session) => Some(LockInfo::from_row(&row, session)),
            // Taken a moment ago; the holder writes its row next.
            (None, Some(session)) => Some(LockInfo {
                run_id: String::new(),
                description: "a run that has not named itself yet".to_owned(),
                process_alive: None,
                session: Some(session),
            }),
            (None, None) => None,
        })
    }

    /// Release the lock of run `run_id` from outside that run (`klsync state unlock`); see
    /// [`LockInfo::is_run`] for the forms of `run_id`.
    ///
    /// Refused when nothing is locked, when another run holds the lock, and on PostgreSQL when
    /// a live session holds it (only the server can end a session's advisory lock). Returns the
    /// holder released.
    pub async fn force_unlock(&self, run_id: &str) -> Result<LockInfo, StateError> {
        let check = |info: LockInfo| -> Result<LockInfo, StateError> {
            if !info.is_run(run_id) {
                return Err(StateError::UnlockOtherRun {
                    asked: run_id.to_owned(),
                    holder: info.description,
                });
            }
            match info.session {
                Some(session) => Err(StateError::LiveSession {
                    holder: info.description,
                    backend_pid: session.backend_pid,
                    client: session.client,
                }),
                None => Ok(info),
            }
        };
        let released = match &self.backend {
            Backend::Sqlite(pool) => {
                let mut tx = pool
                    .begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err(StateError::query("lock the state database"))?;
                let row: HolderRow = sqlx::query_as(READ_HOLDER)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(StateError::query("read the lock holder"))?
                    .ok_or(StateError::NotLocked)?;
                let released = check(LockInfo::from_row(&row, None))?;
                sqlx::query(DELETE_OWN_HOLDER)
                    .bind(&row.run_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(StateError::query("release the apply lock"))?;
                tx.commit()
                    .await
                    .map_err(StateError::query("release the apply lock"))?;
                released
            }
            Backend::Postgres(pool) => {
                let released = check(self.lock_holder().await?.ok_or(StateError::NotLocked)?)?;
                // The session ended; only its row is left. By run id: should a new holder have
                // taken the lock meanwhile, its row stays.
                sqlx::query(DELETE_OWN_HOLDER)
                    .bind(&released.run_id)
                    .execute(pool)
                    .await
                    .map_err(StateError::query("remove the lock row"))?;
                released
            }
        };
        Ok(released)
    }
}

/// The session holding this schema's advisory lock, if any.
async fn advisory_session(pool: &sqlx::PgPool) -> Result<Option<LockSession>, StateError> {
    let session: Option<(i32, String)> = sqlx::query_as(ADVISORY_HOLDER)
        .bind(i64::from(ADVISORY_CLASS))
        .fetch_optional(pool)
        .await
        .map_err(StateError::query("look up the advisory lock's session"))?;
    Ok(session.map(|(backend_pid, client)| LockSession {
        backend_pid,
        client,
    }))
}

/// The holder of the apply lock, as `klsync state unlock` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockInfo {
    /// The holder's run id (empty for a PostgreSQL holder that has not written its row yet).
    pub run_id: String,
    /// `run <id> by <actor> on <host> pid <pid> since <time> (<command>)`.
    pub description: String,
    /// Whether its process runs: on this host, whether the pid exists; `None` when it is on
    /// another host (only its heartbeat tells).
    pub process_alive: Option<bool>,
    /// PostgreSQL: the live session holding the advisory lock, if any. While there is one the
    /// lock is held, whatever the row says.
    pub session: Option<LockSession>,
}

/// A PostgreSQL session holding the advisory lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockSession {
    /// Its server process id (for `pg_terminate_backend`).
    pub backend_pid: i32,
    /// Where it connects from.
    pub client: String,
}

impl LockInfo {
    fn from_row(row: &HolderRow, session: Option<LockSession>) -> Self {
        LockInfo {
            run_id: row.run_id.clone(),
            description: row.describe(),
            process_alive: (row.host == hostname()).then(|| pid_alive(row.pid)),
            session,
        }
    }

    /// Whether `run_id` names this holder's run: the whole id, or its first group as
    /// `klsync history` shows it (case-insensitive).
    pub fn is_run(&self, run_id: &str) -> bool {
        let run_id = run_id.trim();
        !self.run_id.is_empty()
            && !run_id.is_empty()
            && (self.run_id.eq_ignore_ascii_case(run_id)
                || self
                    .run_id
                    .split('-')
                    .next()
                    .is_some_and(|group| group.eq_ignore_ascii_case(run_id)))
    }
}

/// Write `holder`'s row on `$conn` (an `&mut` connection or transaction of either driver).
macro_rules! insert_holder {
    ($conn:expr, $holder:expr) => {
        sqlx::query(INSERT_HOLDER)
            .bind($holder.run_id.to_string())
            .bind(&$holder.actor)
            .bind(&$holder.host)
            .bind(i64::from($holder.pid))
            .bind(&$holder.command)
            .bind(Utc::now())
            .execute($conn)
            .await
            .map_err(StateError::query("record the lock holder"))
    };
}

/// Take the SQLite lock on `conn`; `Some` describes the gone holder whose row was replaced.
async fn acquire_sqlite(
    conn: &mut SqliteConnection,
    holder: &LockHolder,
    stale_after: Duration,
) -> Result<Option<String>, StateError> {
    let mut tx = conn
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(StateError::query("lock the state database"))?;
    let current: Option<HolderRow> = sqlx::query_as(READ_HOLDER)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StateError::query("read the lock holder"))?;
    let mut took_over = None;
    if let Some(row) = current {
        let holds = |run: &str| held_here().contains(run);
        let here = Here {
            host: &holder.host,
            pid: i64::from(holder.pid),
            holds: &holds,
            pid_alive: &pid_alive,
        };
        let Some(why) = row.gone_because(Utc::now(), &here, stale_after) else {
            return Err(locked(Some(row)));
        };
        sqlx::query(DELETE_ANY_HOLDER)
            .execute(&mut *tx)
            .await
            .map_err(StateError::query("remove a stale lock"))?;
        took_over = Some(format!("{}: {why}", row.describe()));
    }
    insert_holder!(&mut *tx, holder)?;
    tx.commit()
        .await
        .map_err(StateError::query("commit the apply lock"))?;
    Ok(took_over)
}

/// Take the PostgreSQL lock on `conn`; `Some` describes the holder whose row was replaced.
async fn acquire_postgres(
    mut conn: PgConnection,
    holder: &LockHolder,
) -> Result<(PgConnection, Option<String>), StateError> {
    let got: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext(current_schema()))")
            .bind(ADVISORY_CLASS)
            .fetch_one(&mut conn)
            .await
            .map_err(StateError::query("take the advisory lock"))?;
    if !got {
        // The winner writes its row just after taking the lock: give it a moment, so the
        // message can name it.
        for _ in 0..HOLDER_ROW_POLLS {
            let current: Option<HolderRow> = sqlx::query_as(READ_HOLDER)
                .fetch_optional(&mut conn)
                .await
                .map_err(StateError::query("read the lock holder"))?;
            if current.is_some() {
                return Err(locked(current));
            }
            tokio::time::sleep(HOLDER_ROW_POLL_INTERVAL).await;
        }
        return Err(locked(None));
    }
    // A row left by a holder whose connection died is replaced, in one transaction so that a
    // refused apply never sees the table empty.
    let mut tx = conn
        .begin()
        .await
        .map_err(StateError::query("record the lock holder"))?;
    let previous: Option<HolderRow> = sqlx::query_as(READ_HOLDER)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StateError::query("read the lock holder"))?;
    sqlx::query(DELETE_ANY_HOLDER)
        .execute(&mut *tx)
        .await
        .map_err(StateError::query("remove an old lock holder"))?;
    insert_holder!(&mut *tx, holder)?;
    tx.commit()
        .await
        .map_err(StateError::query("record the lock holder"))?;
    let took_over = previous.map(|row| {
        format!(
            "{}: its database session ended without releasing the lock (the process was killed or lost its connection)",
            row.describe()
        )
    });
    Ok((conn, took_over))
}

impl ApplyLock {
    /// Hand `held` to a heartbeat task of its own.
    fn start(
        run_id: RunId,
        took_over: Option<String>,
        held: Held,
        heartbeat_every: Duration,
    ) -> ApplyLock {
        let run = run_id.to_string();
        held_here().insert(run.clone());
        let (commands, receiver) = mpsc::channel(1);
        let (lost_sender, lost) = watch::channel(false);
        let task = tokio::spawn(keep(held, run, heartbeat_every, receiver, lost_sender));
        ApplyLock {
            run_id,
            took_over,
            commands,
            lost,
            task,
        }
    }

    /// The run holding the lock.
    pub fn run_id(&self) -> RunId {
        self.run_id
    }

    /// The holder this lock was taken over from, and why it was judged gone.
    pub fn took_over(&self) -> Option<&str> {
        self.took_over.as_deref()
    }

    /// Refresh the heartbeat now (the task also does it on its own every few seconds). Fails
    /// with [`StateError::LockLost`] if another apply took the lock over, `klsync state unlock`
    /// released it, or the PostgreSQL session holding it ended.
    pub async fn heartbeat(&mut self) -> Result<(), StateError> {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(Command::Beat(reply)).await.is_err() {
            return Err(self.lost_error());
        }
        answer.await.unwrap_or_else(|_| Err(self.lost_error()))
    }

    /// Whether a heartbeat found the lock lost.
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Resolves once a heartbeat finds the lock lost (never, while it is held).
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut lost = self.lost.clone();
        async move {
            if lost.wait_for(|lost| *lost).await.is_err() {
                // The heartbeat task ended, which only a release does.
                std::future::pending::<()>().await;
            }
        }
    }

    fn lost_error(&self) -> StateError {
        StateError::LockLost {
            run_id: self.run_id.to_string(),
        }
    }

    /// Give the lock up (only our own: a row another run took over stays) and stop the
    /// heartbeat.
    pub async fn release(self) -> Result<(), StateError> {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(Command::Release(reply)).await.is_err() {
            // The task is gone (its runtime is shutting down): the connection went with it.
            return Ok(());
        }
        let released = answer.await.unwrap_or(Ok(()));
        let _ = self.task.await;
        released
    }
}

/// The heartbeat task: beat every `every` until told to release (or until the [`ApplyLock`] is
/// dropped, which releases too).
async fn keep(
    mut held: Held,
    run: String,
    every: Duration,
    mut commands: mpsc::Receiver<Command>,
    lost: watch::Sender<bool>,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; the row was just written.
    ticker.tick().await;
    let reply = loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Beat(reply)) => {
                    let _ = reply.send(beat(&mut held, &run, &lost).await);
                }
                Some(Command::Release(reply)) => break Some(reply),
                None => break None,
            },
            _ = ticker.tick(), if !*lost.borrow() => {
                if let Err(err) = beat(&mut held, &run, &lost).await {
                    tracing::warn!(run = %run, error = %err, "apply lock heartbeat failed");
                }
            }
        }
    };
    let released = held.release(&run).await;
    held_here().remove(&run);
    if let Some(reply) = reply {
        let _ = reply.send(released);
    } else if let Err(err) = released {
        tracing::warn!(run = %run, error = %err, "releasing a dropped apply lock failed");
    }
}

/// One heartbeat; a lost lock is also announced through `lost`.
async fn beat(held: &mut Held, run: &str, lost: &watch::Sender<bool>) -> Result<(), StateError> {
    let result = held.beat(run).await;
    if matches!(result, Err(StateError::LockLost { .. })) {
        lost.send_replace(true);
    }
    result
}

impl Held {
    /// Refresh the heartbeat; [`StateError::LockLost`] when the lock is no longer ours.
    async fn beat(&mut self, run: &str) -> Result<(), StateError> {
        let lost = || StateError::LockLost {
            run_id: run.to_owned(),
        };
        match self {
            Held::Sqlite(conn) => {
                let affected = sqlx::query(HEARTBEAT)
                    .bind(Utc::now())
                    .bind(run)
                    .execute(&mut *conn)
                    .await
                    .map_err(StateError::query("refresh the apply lock"))?
                    .rows_affected();
                if affected == 0 {
                    return Err(lost());
                }
                Ok(())
            }
            Held::Postgres(conn) => {
                // The advisory lock is what counts; the row only names the holder. A failed
                // statement on a connection that still answers leaves the lock held.
                match sqlx::query(HEARTBEAT)
                    .bind(Utc::now())
                    .bind(run)
                    .execute(&mut *conn)
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(err) => match conn.ping().await {
                        Ok(()) => Err(StateError::Query {
                            operation: "refresh the apply lock",
                            source: err,
                        }),
                        // The session is gone, and the advisory lock with it.
                        Err(_) => Err(lost()),
                    },
                }
            }
        }
    }

    async fn release(self, run: &str) -> Result<(), StateError> {
        match self {
            Held::Sqlite(mut conn) => {
                // Only our own row: if it was taken over, the new holder's row stays.
                sqlx::query(DELETE_OWN_HOLDER)
                    .bind(run)
                    .execute(&mut conn)
                    .await
                    .map_err(StateError::query("release the apply lock"))?;
                conn.close()
                    .await
                    .map_err(StateError::query("close the lock connection"))?;
            }
            Held::Postgres(mut conn) => {
                sqlx::query(DELETE_OWN_HOLDER)
                    .bind(run)
                    .execute(&mut conn)
                    .await
                    .map_err(StateError::query("release the apply lock"))?;
                sqlx::query("SELECT pg_advisory_unlock($1, hashtext(current_schema()))")
                    .bind(ADVISORY_CLASS)
                    .execute(&mut conn)
                    .await
                    .map_err(StateError::query("release the advisory lock"))?;
                conn.close()
                    .await
                    .map_err(StateError::query("close the lock connection"))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(host: &str, pid: i64, heartbeat_at: DateTime<Utc>) -> HolderRow {
        HolderRow {
            run_id: RunId::new().to_string(),
            actor: "ann".into(),
            host: host.into(),
            pid,
            command: "apply".into(),
            acquired_at: heartbeat_at,
            heartbeat_at,
        }
    }

    fn here<'a>(holds: &'a dyn Fn(&str) -> bool, pid_alive: &'a dyn Fn(i64) -> bool) -> Here<'a> {
        Here {
            host: "here",
            pid: 1000,
            holds,
            pid_alive,
        }
    }

    #[test]
    fn a_holder_on_this_host_is_gone_only_when_its_process_is() {
        let now = Utc::now();
        let limit = Duration::from_secs(600);
        let holds_nothing = |_: &str| false;
        let alive = |_| true;
        let dead = |_| false;
        let week_old = now - chrono::Duration::days(7);

        // Alive on this host: never taken over, however old its heartbeat.
        assert_eq!(
            row("here", 7, week_old).gone_because(now, &here(&holds_nothing, &alive), limit),
            None
        );
        let gone = row("here", 7, now).gone_because(now, &here(&holds_nothing, &dead), limit);
        assert_eq!(
            gone.as_deref(),
            Some("its process 7 no longer runs on here")
        );
    }

    #[test]
    fn our_own_pid_is_gone_unless_this_process_holds_that_run() {
        let now = Utc::now();
        let limit = Duration::from_secs(600);
        let alive = |_| true;
        let ours = row("here", 1000, now);
        let run = ours.run_id.clone();
        let holds_it = move |candidate: &str| candidate == run;
        let holds_nothing = |_: &str| false;
        assert_eq!(
            ours.gone_because(now, &here(&holds_it, &alive), limit),
            None
        );
        assert!(
            ours.gone_because(now, &here(&holds_nothing, &alive), limit)
                .is_some_and(|why| why.contains("earlier process")),
        );
    }

    #[test]
    fn a_holder_on_another_host_is_gone_once_silent_too_long() {
        let now = Utc::now();
        let minute = chrono::Duration::minutes(1);
        let limit = Duration::from_secs(600);
        let holds_nothing = |_: &str| false;
        let dead = |_| false;
        // A pid on another host says nothing about our process table.
        assert_eq!(
            row("there", 7, now - minute * 9).gone_because(
                now,
                &here(&holds_nothing, &dead),
                limit
            ),
            None
        );
        let gone = row("there", 7, now - minute * 11).gone_because(
            now,
            &here(&holds_nothing, &dead),
            limit,
        );
        assert_eq!(
            gone.as_deref(),
            Some("its heartbeat stopped 11m ago (a lock from another host is stale after 10m)")
        );
    }

    #[test]
    fn unlock_accepts_the_whole_run_id_or_its_first_group() {
        let info = LockInfo {
            run_id: "9d1c2e4f-1111-4222-8333-444455556666".into(),
            description: String::new(),
            process_alive: None,
            session: None,
        };
        assert!(info.is_run("9d1c2e4f-1111-4222-8333-444455556666"));
        assert!(info.is_run("9D1C2E4F"));
        assert!(!info.is_run("9d1c2e4"));
        assert!(!info.is_run("1111"));
        assert!(!info.is_run(""));
        let unnamed = LockInfo {
            run_id: String::new(),
            ..info
        };
        assert!(!unnamed.is_run(""));
    }

    #[test]
    fn holder_description_names_run_actor_host_pid_and_time() {
        let at = DateTime::parse_from_rfc3339("2026-11-28T02:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let row = row("ci-7", 4242, at);
        assert_eq!(
            row.describe(),
            format!(
                "run {} by ann on ci-7 pid 4242 since 2026-11-28T02:00:00Z (apply)",
                row.run_id
            )
        );
    }

    #[test]
    fn this_process_is_alive_and_a_reaped_child_is_not() {
        assert!(pid_alive(i64::from(std::process::id())));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = i64::from(child.id());
        child.wait().unwrap();
        assert!(!pid_alive(pid));
    }
}
