//! klsync's own state: which Klaviyo objects it manages, the apply journal, the audit record and
//! the apply lock. `[io]`: the only module that talks to the state database.
//!
//! The store is an SQLite file under the project directory by default
//! ([`StateStore::default_url`]) or PostgreSQL when `KLSYNC_STATE_URL` says so, so that a team
//! running applies from several CI runners shares one state. The schema lives in `migrations/`
//! (one directory per database, because the DDL differs) and is applied on connect.
//!
//! Every query is written once: SQLite understands PostgreSQL's `$1` placeholders, the column
//! types are chosen so the same Rust types bind and decode on both, and the `on_backend!` macro expands
//! one body for each pool. Timestamps come from the Rust clock, never from column defaults, for
//! the same reason.
//!
//! Crash safety is the caller's protocol, supported here: `apply` journals a change
//! ([`StateStore::journal_started`]) before sending it and records the outcome after; a change
//! still `started` on the next run ([`StateStore::unfinished_journal`]) is one whose outcome is
//! unknown, and apply looks the resource up before deciding to send it again.

mod actor;
mod error;
mod records;
#[cfg(feature = "test-support")]
pub mod testing;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Connection;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::types::Json;

use crate::settings::redact_url;

pub use actor::{detect_actor, detect_git_commit, hostname};
pub use error::StateError;
pub use records::{
    JournalId, JournalRow, ManagedRow, Phase, RunId, RunOutcome, RunRow, RunStart, SavedPlanRecord,
};

/// The environment variable naming a state database other than the default SQLite file.
pub const STATE_URL_ENV: &str = "KLSYNC_STATE_URL";

static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// How long an SQLite statement waits for another process's write lock before failing.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting to PostgreSQL keeps retrying (a server restarting, a slow network)
/// before reporting the failure.
const PG_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections per pool: apply runs a few changes at once; more would only queue on Klaviyo.
const MAX_CONNECTIONS: u32 = 4;
/// How often [`StateStore::journal_started`] retries when a concurrent start took its `seq`.
const SEQ_ATTEMPTS: usize = 20;

/// Expand `$body` once per backend, with `$pool` bound to that backend's pool. The body is
/// written (and reviewed) once; the compiler checks it against each driver.
macro_rules! on_backend {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.backend {
            Backend::Sqlite($pool) => $body,
            Backend::Postgres($pool) => $body,
        }
    };
}

// Declared after `on_backend!` so that the macro is in scope there.
mod lock;
mod sync_records;
pub use lock::{
    ApplyLock, HEARTBEAT_EVERY, LOCK_STALE_AFTER, LockHolder, LockInfo, LockOptions, LockSession,
};
pub use sync_records::{
    MemberOrigin, PendingRemoval, RemovedMember, RowHashBytes, StoredKeys, SyncMemberRecord,
    SyncRowRecord, identifier_key, short_row_hash,
};

/// A connection pool to the state database, migrated to the current schema.
///
/// Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct StateStore {
    backend: Backend,
    /// The URL with any password masked, for messages.
    location: String,
}

#[derive(Clone)]
enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Which database a [`StateStore`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateBackend {
    /// An SQLite file (or memory).
    Sqlite,
    /// A PostgreSQL database.
    Postgres,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl StateStore {
    /// The default state URL for a project: an SQLite file at `<dir>/.klsync/state.db`.
    pub fn default_url(project_dir: &Path) -> String {
        let path = project_dir.join(".klsync/state.db");
        // sqlx percent-decodes the path and cuts it at `?`, so those two must be escaped.
        let path = path
            .display()
            .to_string()
            .replace('%', "%25")
            .replace('?', "%3F");
        format!("sqlite://{path}")
    }

    /// The state URL for a project: `configured` (the value of [`STATE_URL_ENV`]) unless unset
    /// or blank, else [`Self::default_url`].
    pub fn resolve_url(configured: Option<&str>, project_dir: &Path) -> String {
        match configured.map(str::trim) {
            Some(url) if !url.is_empty() => url.to_string(),
            _ => Self::default_url(project_dir),
        }
    }

    /// Open the state database at `url` and bring its schema up to date.
    ///
    /// `sqlite://PATH` (or `sqlite:PATH`) creates the file and its parent directories;
    /// `postgres://` and `postgresql://` connect to an existing database, whose `search_path`
    /// decides where the tables go (e.g. `?options=-c%20search_path%3Dklsync`).
    pub async fn connect(url: &str) -> Result<StateStore, StateError> {
        let location = redact_url(url);
        let connect_error = |source| StateError::Connect {
            url: location.clone(),
            source,
        };
        let migrate_error = |source| StateError::Migrate {
            url: location.clone(),
            source,
        };
        let backend = if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(connect_error)?
                .create_if_missing(true)
                // WAL lets `klsync history` read while an apply writes.
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
                .foreign_keys(true);
            create_parent_dir(options.get_filename())?;
            let pool = open_sqlite(options).await.map_err(connect_error)?;
            migrate_sqlite(&pool).await.map_err(migrate_error)?;
            Backend::Sqlite(pool)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url).map_err(connect_error)?;
            let pool = PgPoolOptions::new()
                .max_connections(MAX_CONNECTIONS)
                .acquire_timeout(PG_CONNECT_TIMEOUT)
                .connect_with(options)
                .await
                .map_err(connect_error)?;
            POSTGRES_MIGRATOR.run(&pool).await.map_err(migrate_error)?;
            Backend::Postgres(pool)
        } else {
            return Err(StateError::UnsupportedUrl { url: location });
        };
        Ok(StateStore { backend, location })
    }

    /// Which database this store uses.
    pub fn backend(&self) -> StateBackend {
        match self.backend {
            Backend::Sqlite(_) => StateBackend::Sqlite,
            Backend::Postgres(_) => StateBackend::Postgres,
        }
    }

    /// The URL, password masked: safe to print.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Close every connection, waiting for them to be returned.
    pub async fn close(&self) {
        on_backend!(self, pool => pool.close().await)
    }

    /// Every managed resource, ordered by kind then key.
    pub async fn managed(&self) -> Result<Vec<ManagedRow>, StateError> {
        const SQL: &str = "SELECT kind, key, klaviyo_id, applied, returned \
                           FROM managed_resources ORDER BY kind, key";
        type Row = (
            String,
            String,
            String,
            Json<serde_json::Value>,
            Option<Json<serde_json::Value>>,
        );
        let rows: Vec<Row> = on_backend!(self, pool => sqlx::query_as(SQL).fetch_all(pool).await)
            .map_err(StateError::query("read managed resources"))?;
        Ok(rows
            .into_iter()
            .map(
                |(kind, key, klaviyo_id, Json(applied), returned)| ManagedRow {
                    kind,
                    key,
                    klaviyo_id,
                    applied,
                    returned: returned.map(|Json(returned)| returned),
                },
            )
            .collect())
    }

    /// Record that `row` is managed and what was applied to it, replacing any earlier record of
    /// the same kind and key.
    pub async fn upsert_managed(&self, row: &ManagedRow, run_id: RunId) -> Result<(), StateError> {
        const SQL: &str = "INSERT INTO managed_resources \
                           (kind, key, klaviyo_id, applied, returned, updated_at, run_id) \
                           VALUES ($1, $2, $3, $4, $5, $6, $7) \
                           ON CONFLICT (kind, key) DO UPDATE SET \
                           klaviyo_id = excluded.klaviyo_id, applied = excluded.applied, \
                           returned = excluded.returned, \
                           updated_at = excluded.updated_at, run_id = excluded.run_id";
        on_backend!(self, pool => sqlx::query(SQL)
            .bind(&row.kind)
            .bind(&row.key)
            .bind(&row.klaviyo_id)
            .bind(Json(&row.applied))
            .bind(row.returned.as_ref().map(Json))
            .bind(Utc::now())
            .bind(run_id.to_string())
            .execute(pool)
            .await
            .map(|_| ()))
        .map_err(StateError::query("record a managed resource"))?;
        crate::crashpoint::after_state_write();
        Ok(())
    }

    /// Forget a managed resource (after deleting it, or when it is released from management).
    /// Returns whether it was recorded.
    pub async fn remove_managed(&self, kind: &str, key: &str) -> Result<bool, StateError> {
        const SQL: &str = "DELETE FROM managed_resources WHERE kind = $1 AND key = $2";
        let affected = on_backend!(self, pool => sqlx::query(SQL)
            .bind(kind)
            .bind(key)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))
        .map_err(StateError::query("forget a managed resource"))?;
        crate::crashpoint::after_state_write();
        Ok(affected > 0)
    }

    /// Record the start of a run and return its fresh id.
    pub async fn begin_run(&self, start: &RunStart) -> Result<RunId, StateError> {
        const SQL: &str = "INSERT INTO runs \
                           (run_id, command, started_at, actor, git_commit, manifest_digest, plan_id) \
                           VALUES ($1, $2, $3, $4, $5, $6, $7)";
        let run_id = RunId::new();
        on_backend!(self, pool => sqlx::query(SQL)
            .bind(run_id.to_string())
            .bind(&start.command)
            .bind(Utc::now())
            .bind(&start.actor)
            .bind(start.git_commit.as_deref())
            .bind(start.manifest_digest.as_deref())
            .bind(start.plan_id.as_deref())
            .execute(pool)
            .await
            .map(|_| ()))
        .map_err(StateError::query("record the start of a run"))?;
        Ok(run_id)
    }

    /// Record how a run ended. `summary` carries the counts and the requests used.
    pub async fn finish_run(
        &self,
        run_id: RunId,
        outcome: RunOutcome,
        summary: &serde_json::Value,
    ) -> Result<(), StateError> {
        const SQL: &str =
            "UPDATE runs SET finished_at = $1, outcome = $2, summary = $3 WHERE run_id = $4";
        let affected = on_backend!(self, pool => sqlx::query(SQL)
            .bind(Utc::now())
            .bind(outcome.as_str())
            .bind(Json(summary))
            .bind(run_id.to_string())
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))
        .map_err(StateError::query("record the end of a run"))?;
        if affected == 0 {
            return Err(StateError::NotFound {
                what: format!("run {run_id}"),
            });
        }
        Ok(())
    }

    /// Journal a change before it is sent. Call [`Self::journal_succeeded`] or
    /// [`Self::journal_failed`] once the outcome is known.
    pub async fn journal_started(
        &self,
        run_id: RunId,
        address: &str,
        action: &str,
        detail: &serde_json::Value,
    ) -> Result<JournalId, StateError> {
        // seq is the next number within the run. Two changes started at once can compute the
        // same one; the unique (run_id, seq) turns the loser into "no row" and it tries again.
        const SQL: &str = "INSERT INTO journal \
                           (run_id, seq, address, action, phase, detail, started_at) \
                           SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $6, $4, $5 \
                           FROM journal WHERE run_id = $1 \
                           ON CONFLICT (run_id, seq) DO NOTHING \
                           RETURNING id";
        let run = run_id.to_string();
        for _ in 0..SEQ_ATTEMPTS {
            let id: Option<i64> = on_backend!(self, pool => sqlx::query_scalar(SQL)
                .bind(&run)
                .bind(address)
                .bind(action)
                .bind(Json(detail))
                .bind(Utc::now())
                .bind(Phase::Started.as_str())
                .fetch_optional(pool)
                .await)
            .map_err(StateError::query("journal a change"))?;
            if let Some(id) = id {
                crate::crashpoint::after_state_write();
                return Ok(JournalId(id));
            }
        }
        Err(StateError::Busy {
            operation: "number a journal entry",
        })
    }

    /// Record that a journaled change succeeded. `detail`'s fields are merged over those
    /// recorded at the start (a non-object replaces it).
    pub async fn journal_succeeded(
        &self,
        id: JournalId,
        klaviyo_id: Option<&str>,
        detail: &serde_json::Value,
    ) -> Result<(), StateError> {
        const SQL: &str = "UPDATE journal SET phase = $5, \
                           klaviyo_id = COALESCE($1, klaviyo_id), detail = $2, finished_at = $3 \
                           WHERE id = $4";
        let merged = merge_detail(self.journal_detail(id).await?, detail);
        on_backend!(self, pool => sqlx::query(SQL)
            .bind(klaviyo_id)
            .bind(Json(&merged))
            .bind(Utc::now())
            .bind(id.0)
            .bind(Phase::Succeeded.as_str())
            .execute(pool)
            .await
            .map(|_| ()))
        .map_err(StateError::query("journal a success"))?;
        crate::crashpoint::after_state_write();
        Ok(())
    }

    /// Record that a journaled change failed, and why.
    pub async fn journal_failed(&self, id: JournalId, error: &str) -> Result<(), StateError> {
        const SQL: &str =
            "UPDATE journal SET phase = $4, error = $1, finished_at = $2 WHERE id = $3";
        let affected = on_backend!(self, pool => sqlx::query(SQL)
            .bind(error)
            .bind(Utc::now())
            .bind(id.0)
            .bind(Phase::Failed.as_str())
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))
        .map_err(StateError::query("journal a failure"))?;
        crate::crashpoint::after_state_write();
        if affected == 0 {
            return Err(StateError::NotFound {
                what: format!("journal entry {id}"),
            });
        }
        Ok(())
    }

    /// Changes journaled as started whose outcome was never recorded: the process applying them
    /// died. Oldest first.
    pub async fn unfinished_journal(&self) -> Result<Vec<JournalRow>, StateError> {
        const SQL: &str = "SELECT id, run_id, seq, address, action, phase, klaviyo_id, detail, \
                           error, started_at, finished_at FROM journal \
                           WHERE phase = $1 ORDER BY id";
        let rows: Vec<RawJournal> = on_backend!(self, pool => sqlx::query_as(SQL)
            .bind(Phase::Started.as_str())
            .fetch_all(pool)
            .await)
        .map_err(StateError::query("read the unfinished journal"))?;
        rows.into_iter().map(RawJournal::into_row).collect()
    }

    /// Whether the saved plan `plan_id` was applied before.
    pub async fn is_plan_applied(&self, plan_id: &str) -> Result<bool, StateError> {
        const SQL: &str = "SELECT COUNT(*) FROM applied_plans WHERE plan_id = $1";
        let count: i64 = on_backend!(self, pool => sqlx::query_scalar(SQL)
            .bind(plan_id)
            .fetch_one(pool)
            .await)
        .map_err(StateError::query("look up an applied plan"))?;
        Ok(count > 0)
    }

    /// Record that `run_id` applied the saved plan `plan_id`; refused with
    /// [`StateError::PlanAlreadyApplied`] if it was applied before.
    pub async fn mark_plan_applied(&self, plan_id: &str, run_id: RunId) -> Result<(), StateError> {
        const SQL: &str = "INSERT INTO applied_plans (plan_id, run_id, applied_at) \
                           VALUES ($1, $2, $3) ON CONFLICT (plan_id) DO NOTHING";
        let affected = on_backend!(self, pool => sqlx::query(SQL)
            .bind(plan_id)
            .bind(run_id.to_string())
            .bind(Utc::now())
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))
        .map_err(StateError::query("record an applied plan"))?;
        if affected == 0 {
            return Err(StateError::PlanAlreadyApplied {
                plan_id: plan_id.to_string(),
            });
        }
        Ok(())
    }

    /// The `limit` most recent runs, newest first, each with its journal in order.
    pub async fn history(&self, limit: u32) -> Result<Vec<RunRow>, StateError> {
        const RUNS: &str = "SELECT run_id, command, started_at, finished_at, actor, git_commit, \
                            manifest_digest, plan_id, outcome, summary FROM runs \
                            ORDER BY started_at DESC, run_id DESC LIMIT $1";
        let runs: Vec<RawRun> = on_backend!(self, pool => sqlx::query_as(RUNS)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await)
        .map_err(StateError::query("read the run history"))?;
        let mut history = Vec::with_capacity(runs.len());
        for run in runs {
            // One query per run: `limit` is small, and this cannot attach one run's entries to
            // another when a new run starts between two statements.
            let journal = self.journal_of(&run.run_id).await?;
            history.push(run.into_row(journal)?);
        }
        Ok(history)
    }

    /// The journal of run `run_id`, in order.
    pub async fn run_journal(&self, run_id: RunId) -> Result<Vec<JournalRow>, StateError> {
        self.journal_of(&run_id.to_string()).await
    }

    async fn journal_of(&self, run_id: &str) -> Result<Vec<JournalRow>, StateError> {
        const JOURNAL: &str = "SELECT id, run_id, seq, address, action, phase, klaviyo_id, \
                               detail, error, started_at, finished_at FROM journal \
                               WHERE run_id = $1 ORDER BY seq";
        let journal: Vec<RawJournal> = on_backend!(self, pool => sqlx::query_as(JOURNAL)
            .bind(run_id)
            .fetch_all(pool)
            .await)
        .map_err(StateError::query("read a run's journal"))?;
        journal.into_iter().map(RawJournal::into_row).collect()
    }

    async fn journal_detail(&self, id: JournalId) -> Result<serde_json::Value, StateError> {
        const SQL: &str = "SELECT detail FROM journal WHERE id = $1";
        let detail: Option<Json<serde_json::Value>> =
            on_backend!(self, pool => sqlx::query_scalar(SQL)
                .bind(id.0)
                .fetch_optional(pool)
                .await)
            .map_err(StateError::query("read a journal entry"))?;
        detail.map(|Json(d)| d).ok_or_else(|| StateError::NotFound {
            what: format!("journal entry {id}"),
        })
    }

    /// Register a plan `klsync plan --out` is about to write. Registering the same file twice
    /// (the same bytes) is a no-op.
    pub async fn register_saved_plan(&self, record: &SavedPlanRecord) -> Result<(), StateError> {
        const SQL: &str = "INSERT INTO saved_plans \
                           (plan_id, manifest_digest, created_at, saved_at, actor) \
                           VALUES ($1, $2, $3, $4, $5) ON CONFLICT (plan_id) DO NOTHING";
        on_backend!(self, pool => sqlx::query(SQL)
            .bind(&record.plan_id)
            .bind(&record.manifest_digest)
            .bind(&record.created_at)
            .bind(Utc::now())
            .bind(&record.actor)
            .execute(pool)
            .await
            .map(|_| ()))
        .map_err(StateError::query("register a saved plan"))
    }

    /// Whether `klsync plan --out` registered the saved plan `plan_id` in this state.
    pub async fn is_saved_plan_registered(&self, plan_id: &str) -> Result<bool, StateError> {
        const SQL: &str = "SELECT COUNT(*) FROM saved_plans WHERE plan_id = $1";
        let count: i64 = on_backend!(self, pool => sqlx::query_scalar(SQL)
            .bind(plan_id)
            .fetch_one(pool)
            .await)
        .map_err(StateError::query("look up a saved plan"))?;
        Ok(count > 0)
    }
}

/// Open the SQLite pool, waiting out other processes that hold the file's lock.
///
/// Opening sets WAL mode, which takes the file's exclusive lock when the file is new. While
/// another process migrates the same new file, SQLite can answer `database is locked` at once
/// instead of waiting out the busy timeout (it does not wait where waiting could deadlock), so
/// ten first runs at once failed now and then under load. Such opens are tried again until the
/// busy timeout has passed.
async fn open_sqlite(options: SqliteConnectOptions) -> Result<SqlitePool, sqlx::Error> {
    let deadline = std::time::Instant::now() + SQLITE_BUSY_TIMEOUT;
    loop {
        let opened = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options.clone())
            .await;
        match opened {
            Err(sqlx::Error::Database(db))
                if sqlite_busy(db.code().as_deref()) && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

/// Whether an SQLite result code is `SQLITE_BUSY` or `SQLITE_LOCKED` (extended codes keep the
/// primary code in the low byte).
fn sqlite_busy(code: Option<&str>) -> bool {
    code.and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| matches!(code & 0xff, 5 | 6))
}

/// Bring an SQLite state up to date, one process at a time.
///
/// sqlx does not lock an SQLite database while it migrates, so concurrent first runs on a new
/// file all saw an empty schema and all but one failed with `table ... already exists`. Inside
/// one `BEGIN IMMEDIATE` (the database's write lock, waited for up to the busy timeout) the
/// migrations run one process at a time, and each later process finds them applied. A state
/// that is already current skips the write lock, so reading history during an apply never
/// queues behind it.
async fn migrate_sqlite(pool: &SqlitePool) -> Result<(), sqlx::migrate::MigrateError> {
    let latest = SQLITE_MIGRATOR
        .iter()
        .map(|migration| migration.version)
        .max();
    let applied: Option<i64> =
        sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await
            .unwrap_or(None);
    if applied.is_some() && applied == latest {
        // Only reads: checks the applied migrations are the ones this build knows.
        return SQLITE_MIGRATOR.run(pool).await;
    }
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    // `run_direct` on the transaction's connection: `run` goes through `Acquire`, whose
    // implementation for `&mut SqliteConnection` makes the future not `Send`.
    SQLITE_MIGRATOR.run_direct(None, &mut *tx, false).await?;
    tx.commit().await?;
    Ok(())
}

/// `update`'s fields over `base`'s when both are objects; otherwise `update` wins.
fn merge_detail(base: serde_json::Value, update: &serde_json::Value) -> serde_json::Value {
    match (base, update) {
        (serde_json::Value::Object(mut base), serde_json::Value::Object(update)) => {
            for (key, value) in update {
                base.insert(key.clone(), value.clone());
            }
            serde_json::Value::Object(base)
        }
        (_, update) => update.clone(),
    }
}

fn create_parent_dir(file: &Path) -> Result<(), StateError> {
    // In-memory databases are named `file:...` and have no directory.
    if file.to_string_lossy().starts_with("file:") {
        return Ok(());
    }
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            std::fs::create_dir_all(dir).map_err(|source| StateError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })
        }
        _ => Ok(()),
    }
}

/// A `journal` row as stored.
#[derive(sqlx::FromRow)]
struct RawJournal {
    id: i64,
    run_id: String,
    seq: i64,
    address: String,
    action: String,
    phase: String,
    klaviyo_id: Option<String>,
    detail: Json<serde_json::Value>,
    error: Option<String>,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

impl RawJournal {
    fn into_row(self) -> Result<JournalRow, StateError> {
        Ok(JournalRow {
            id: JournalId(self.id),
            run_id: self.run_id.parse()?,
            seq: self.seq,
            address: self.address,
            action: self.action,
            phase: self.phase.parse()?,
            klaviyo_id: self.klaviyo_id,
            detail: self.detail.0,
            error: self.error,
            started_at: self.started_at,
            finished_at: self.finished_at,
        })
    }
}

/// A `runs` row as stored.
#[derive(sqlx::FromRow)]
struct RawRun {
    run_id: String,
    command: String,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    actor: String,
    git_commit: Option<String>,
    manifest_digest: Option<String>,
    plan_id: Option<String>,
    outcome: Option<String>,
    summary: Option<Json<serde_json::Value>>,
}

impl RawRun {
    fn into_row(self, journal: Vec<JournalRow>) -> Result<RunRow, StateError> {
        Ok(RunRow {
            run_id: self.run_id.parse()?,
            command: self.command,
            started_at: self.started_at,
            finished_at: self.finished_at,
            actor: self.actor,
            git_commit: self.git_commit,
            manifest_digest: self.manifest_digest,
            plan_id: self.plan_id,
            outcome: self.outcome.as_deref().map(str::parse).transpose()?,
            summary: self.summary.map(|Json(s)| s),
            journal,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn default_url_is_an_sqlite_file_under_the_project() {
        let url = StateStore::default_url(Path::new("/srv/marketing"));
        assert_eq!(url, "sqlite:///srv/marketing/.klsync/state.db");
        let options = SqliteConnectOptions::from_str(&url).unwrap();
        assert_eq!(
            options.get_filename(),
            Path::new("/srv/marketing/.klsync/state.db")
        );
        let odd = StateStore::default_url(Path::new("/tmp/100% sure?"));
        let options = SqliteConnectOptions::from_str(&odd).unwrap();
        assert_eq!(
            options.get_filename(),
            Path::new("/tmp/100% sure?/.klsync/state.db")
        );
    }

    #[test]
    fn configured_url_wins_unless_blank() {
        let dir = Path::new("/p");
        let pg = "postgres://klsync@db/state";
        assert_eq!(StateStore::resolve_url(Some(pg), dir), pg);
        assert_eq!(
            StateStore::resolve_url(Some("  "), dir),
            "sqlite:///p/.klsync/state.db"
        );
        assert_eq!(
            StateStore::resolve_url(None, dir),
            "sqlite:///p/.klsync/state.db"
        );
    }

    #[test]
    fn detail_merge_overlays_objects_and_replaces_anything_else() {
        assert_eq!(
            merge_detail(json!({"sent": 1, "status": "?"}), &json!({"status": 201})),
            json!({"sent": 1, "status": 201})
        );
        assert_eq!(merge_detail(json!({"sent": 1}), &json!([1])), json!([1]));
        assert_eq!(merge_detail(json!(null), &json!({"a": 1})), json!({"a": 1}));
    }
}
