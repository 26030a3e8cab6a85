//! The apply lock: two applies never run against one account at once.
//!
//! PostgreSQL: a session advisory lock held on a connection of its own. The server drops it when
//! that connection closes, so a killed apply can never leave it behind. The `apply_lock` row only
//! names the holder for the "locked" message.
//!
//! SQLite has no session locks that survive across statements of a pool, so the `apply_lock` row
//! is the lock, inserted inside `BEGIN IMMEDIATE` (which serialises writers across processes). A
//! killed apply leaves its row behind; the next one takes it over when it is stale: written on
//! this host by a process that no longer exists, or not refreshed by
//! [`ApplyLock::heartbeat`] for [`LOCK_STALE_AFTER`].

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use sqlx::sqlite::SqlitePool;

use super::{Backend, RunId, StateError, StateStore, hostname};

/// An SQLite lock whose heartbeat is older than this is taken over, whoever holds it.
pub const LOCK_STALE_AFTER: Duration = Duration::from_secs(15 * 60);

/// The advisory lock's first key: "klsy". The second key is the hash of the current schema, so
/// states kept in different schemas of one database do not block each other.
const ADVISORY_CLASS: i32 = 0x6b6c_7379;

/// How often, and how far apart, a refused PostgreSQL apply looks for the winner's holder row.
const HOLDER_ROW_POLLS: usize = 40;
const HOLDER_ROW_POLL_INTERVAL: Duration = Duration::from_millis(50);

const READ_HOLDER: &str = "SELECT run_id, actor, host, pid, command, acquired_at, heartbeat_at \
                           FROM apply_lock WHERE id = 1";
const INSERT_HOLDER: &str = "INSERT INTO apply_lock \
                             (id, run_id, actor, host, pid, command, acquired_at, heartbeat_at) \
                             VALUES (1, $1, $2, $3, $4, $5, $6, $6)";
const DELETE_ANY_HOLDER: &str = "DELETE FROM apply_lock";
const DELETE_OWN_HOLDER: &str = "DELETE FROM apply_lock WHERE run_id = $1";
const HEARTBEAT: &str = "UPDATE apply_lock SET heartbeat_at = $1 WHERE run_id = $2";

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

/// The held apply lock. Call [`ApplyLock::release`] when done; on PostgreSQL dropping it also
/// releases it (the connection closes), on SQLite a dropped lock goes stale.
#[must_use = "the lock is released (PostgreSQL) or left to go stale (SQLite) when dropped"]
pub struct ApplyLock {
    run_id: RunId,
    held: Held,
}

enum Held {
    Sqlite(SqlitePool),
    /// Not a pooled connection: returning it to a pool would keep the advisory lock held.
    Postgres(PgConnection),
}

impl std::fmt::Debug for ApplyLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApplyLock")
            .field("run_id", &self.run_id)
            .finish_non_exhaustive()
    }
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

    /// Whether the holder is certainly gone. `pid_alive` is only asked about pids on `host`.
    fn is_stale(
        &self,
        now: DateTime<Utc>,
        host: &str,
        pid_alive: impl Fn(i64) -> bool,
        stale_after: Duration,
    ) -> bool {
        let silent_for = (now - self.heartbeat_at).to_std().unwrap_or_default();
        silent_for > stale_after || (self.host == host && !pid_alive(self.pid))
    }
}

/// Whether process `pid` exists on this machine. Without `/proc` nothing is known, so the answer
/// is "alive" and only the heartbeat can declare the holder gone.
fn pid_alive(pid: i64) -> bool {
    let proc = Path::new("/proc");
    !proc.join("self").exists() || proc.join(pid.to_string()).exists()
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
        let held = match &self.backend {
            Backend::Sqlite(pool) => {
                acquire_sqlite(pool, holder).await?;
                Held::Sqlite(pool.clone())
            }
            Backend::Postgres(pool) => {
                let options = pool.connect_options();
                let conn = PgConnection::connect_with(&options)
                    .await
                    .map_err(StateError::query("open the lock connection"))?;
                Held::Postgres(acquire_postgres(conn, holder).await?)
            }
        };
        Ok(ApplyLock {
            run_id: holder.run_id,
            held,
        })
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

async fn acquire_sqlite(pool: &SqlitePool, holder: &LockHolder) -> Result<(), StateError> {
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(StateError::query("lock the state database"))?;
    let current: Option<HolderRow> = sqlx::query_as(READ_HOLDER)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StateError::query("read the lock holder"))?;
    if let Some(row) = current {
        if !row.is_stale(Utc::now(), &holder.host, pid_alive, LOCK_STALE_AFTER) {
            return Err(locked(Some(row)));
        }
        tracing::warn!(holder = %row.describe(), "taking over a stale apply lock");
        sqlx::query(DELETE_ANY_HOLDER)
            .execute(&mut *tx)
            .await
            .map_err(StateError::query("remove a stale lock"))?;
    }
    insert_holder!(&mut *tx, holder)?;
    tx.commit()
        .await
        .map_err(StateError::query("commit the apply lock"))
}

async fn acquire_postgres(
    mut conn: PgConnection,
    holder: &LockHolder,
) -> Result<PgConnection, StateError> {
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
    sqlx::query(DELETE_ANY_HOLDER)
        .execute(&mut *tx)
        .await
        .map_err(StateError::query("remove an old lock holder"))?;
    insert_holder!(&mut *tx, holder)?;
    tx.commit()
        .await
        .map_err(StateError::query("record the lock holder"))?;
    Ok(conn)
}

impl ApplyLock {
    /// The run holding the lock.
    pub fn run_id(&self) -> RunId {
        self.run_id
    }

    /// Show the lock is still in use, so it is not taken over as stale. Call it at least every
    /// few minutes during a long apply. Fails with [`StateError::LockLost`] if another apply took
    /// the lock over meanwhile (the PostgreSQL lock cannot be lost while its connection lives).
    pub async fn heartbeat(&mut self) -> Result<(), StateError> {
        let run = self.run_id.to_string();
        macro_rules! beat {
            ($conn:expr) => {
                sqlx::query(HEARTBEAT)
                    .bind(Utc::now())
                    .bind(&run)
                    .execute($conn)
                    .await
                    .map(|done| done.rows_affected())
            };
        }
        let affected = match &mut self.held {
            Held::Sqlite(pool) => beat!(&*pool),
            Held::Postgres(conn) => beat!(&mut *conn),
        }
        .map_err(StateError::query("refresh the apply lock"))?;
        if affected == 0 {
            return Err(StateError::LockLost { run_id: run });
        }
        Ok(())
    }

    /// Give the lock up.
    pub async fn release(self) -> Result<(), StateError> {
        let run = self.run_id.to_string();
        match self.held {
            Held::Sqlite(pool) => {
                // Only our own row: if it was taken over, the new holder's row stays.
                sqlx::query(DELETE_OWN_HOLDER)
                    .bind(&run)
                    .execute(&pool)
                    .await
                    .map_err(StateError::query("release the apply lock"))?;
            }
            Held::Postgres(mut conn) => {
                sqlx::query(DELETE_OWN_HOLDER)
                    .bind(&run)
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

    #[test]
    fn holder_is_stale_when_its_process_is_gone_or_it_fell_silent() {
        let now = Utc::now();
        let minute = chrono::Duration::minutes(1);
        let limit = Duration::from_secs(600);
        let alive = |_| true;
        let dead = |_| false;

        assert!(!row("here", 7, now).is_stale(now, "here", alive, limit));
        assert!(row("here", 7, now).is_stale(now, "here", dead, limit));
        // A pid on another host says nothing about our process table.
        assert!(!row("there", 7, now).is_stale(now, "here", dead, limit));
        assert!(row("there", 7, now - minute * 11).is_stale(now, "here", alive, limit));
        assert!(!row("there", 7, now - minute * 9).is_stale(now, "here", alive, limit));
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
    fn this_process_is_alive() {
        assert!(pid_alive(i64::from(std::process::id())));
    }
}
