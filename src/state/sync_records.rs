//! What data syncs (issue 5) remember: per `profiles:` sync, each row's last applied properties
//! and their hash; per list with `members:`, the profiles klsync added.
//!
//! Writes are multi-row `INSERT ... ON CONFLICT` statements of [`WRITE_BATCH`] rows inside one
//! transaction per call, which keeps recording 100,000 rows to a few hundred statements on both
//! databases (and under SQLite's bound-parameter limit).

use std::collections::HashMap;

use chrono::Utc;
use futures::TryStreamExt;
use sqlx::types::Json;

use super::{Backend, StateError, StateStore};

/// Rows per multi-row statement: 5 parameters each stays far below SQLite's 32,766.
const WRITE_BATCH: usize = 1_000;
/// Identifiers per `IN (...)` lookup.
const READ_BATCH: usize = 500;

/// One applied row of a `profiles:` sync.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncRowRecord {
    /// The normalised identifier.
    pub identifier: String,
    /// The row's hash (hex), as computed by `crate::sync`.
    pub row_hash: String,
    /// The properties as applied (a JSON object, nulls included).
    pub applied: serde_json::Value,
}

/// A list member klsync added, or found already on the list when it would have added it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncMemberRecord {
    /// The normalised identifier.
    pub identifier: String,
    /// The Klaviyo profile id, when known.
    pub profile_id: Option<String>,
    /// Already a member (joined another way) when klsync would have added it: klsync did not
    /// add it, so mirror mode never removes it.
    pub preexisting: bool,
}

fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl StateStore {
    /// Call `visit(identifier, row_hash)` for every recorded row of a `profiles:` sync,
    /// streaming, so a million rows never sit in memory as strings.
    pub async fn visit_sync_row_hashes<F>(
        &self,
        sync_id: &str,
        mut visit: F,
    ) -> Result<(), StateError>
    where
        F: FnMut(&str, &str) + Send,
    {
        const SQL: &str = "SELECT identifier, row_hash FROM sync_profile_rows WHERE sync_id = $1";
        on_backend!(self, pool => {
            let mut rows = sqlx::query(SQL).bind(sync_id).fetch(pool);
            while let Some(row) = rows
                .try_next()
                .await
                .map_err(StateError::query("read sync row hashes"))?
            {
                // Borrowed from the row: no two strings allocated per row of a million.
                use sqlx::Row as _;
                let identifier: &str =
                    row.try_get(0).map_err(StateError::query("read sync row hashes"))?;
                let hash: &str = row.try_get(1).map_err(StateError::query("read sync row hashes"))?;
                visit(identifier, hash);
            }
            Ok(())
        })
    }

    /// The applied properties of the given identifiers of a sync (absent ones are left out).
    pub async fn sync_applied(
        &self,
        sync_id: &str,
        identifiers: &[String],
    ) -> Result<HashMap<String, serde_json::Value>, StateError> {
        let mut found = HashMap::with_capacity(identifiers.len());
        for batch in identifiers.chunks(READ_BATCH) {
            let sql = format!(
                "SELECT identifier, applied FROM sync_profile_rows \
                 WHERE sync_id = $1 AND identifier IN ({})",
                placeholders(2, batch.len())
            );
            let rows: Vec<(String, Json<serde_json::Value>)> = on_backend!(self, pool => {
                let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str())).bind(sync_id);
                for identifier in batch {
                    query = query.bind(identifier);
                }
                query.fetch_all(pool).await
            })
            .map_err(StateError::query("read applied sync rows"))?;
            found.extend(rows.into_iter().map(|(id, Json(applied))| (id, applied)));
        }
        Ok(found)
    }

    /// Record (insert or replace) applied rows of a sync, in one transaction.
    pub async fn record_sync_rows(
        &self,
        sync_id: &str,
        rows: &[SyncRowRecord],
    ) -> Result<(), StateError> {
        let now = Utc::now();
        on_backend!(self, pool => {
            let mut tx = pool.begin().await.map_err(StateError::query("begin a transaction"))?;
            for batch in rows.chunks(WRITE_BATCH) {
                let values = (0..batch.len())
                    .map(|i| format!("({})", placeholders(i * 5 + 1, 5)))
                    .collect::<Vec<_>>()
                    .join(", ");
                let sql = format!(
                    "INSERT INTO sync_profile_rows \
                     (sync_id, identifier, row_hash, applied, updated_at) VALUES {values} \
                     ON CONFLICT (sync_id, identifier) DO UPDATE SET \
                     row_hash = excluded.row_hash, applied = excluded.applied, \
                     updated_at = excluded.updated_at"
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for row in batch {
                    query = query
                        .bind(sync_id)
                        .bind(&row.identifier)
                        .bind(&row.row_hash)
                        .bind(Json(&row.applied))
                        .bind(now);
                }
                query.execute(&mut *tx).await.map_err(StateError::query("record sync rows"))?;
            }
            tx.commit().await.map_err(StateError::query("commit sync rows"))
        })
    }

    /// Forget rows of a sync (their properties were unset).
    pub async fn forget_sync_rows(
        &self,
        sync_id: &str,
        identifiers: &[String],
    ) -> Result<(), StateError> {
        self.delete_keyed("sync_profile_rows", "sync_id", sync_id, identifiers)
            .await
    }

    /// Every member klsync recorded for a list: those it added and those it found already there.
    pub async fn sync_members(&self, list_key: &str) -> Result<Vec<SyncMemberRecord>, StateError> {
        const SQL: &str = "SELECT identifier, profile_id, preexisting FROM sync_list_members \
                           WHERE list_key = $1 ORDER BY identifier";
        let rows: Vec<(String, Option<String>, bool)> =
            on_backend!(self, pool => sqlx::query_as(SQL).bind(list_key).fetch_all(pool).await)
                .map_err(StateError::query("read list members added by klsync"))?;
        Ok(rows
            .into_iter()
            .map(|(identifier, profile_id, preexisting)| SyncMemberRecord {
                identifier,
                profile_id,
                preexisting,
            })
            .collect())
    }

    /// Record members of a list (a known profile id replaces an unknown one). A member recorded
    /// as added by klsync stays so even if recorded again as preexisting, and a preexisting one
    /// becomes klsync's once klsync adds it (it had left the list in between).
    pub async fn record_sync_members(
        &self,
        list_key: &str,
        members: &[SyncMemberRecord],
    ) -> Result<(), StateError> {
        let now = Utc::now();
        on_backend!(self, pool => {
            let mut tx = pool.begin().await.map_err(StateError::query("begin a transaction"))?;
            for batch in members.chunks(WRITE_BATCH) {
                let values = (0..batch.len())
                    .map(|i| format!("({})", placeholders(i * 5 + 1, 5)))
                    .collect::<Vec<_>>()
                    .join(", ");
                let sql = format!(
                    "INSERT INTO sync_list_members \
                     (list_key, identifier, profile_id, added_at, preexisting) \
                     VALUES {values} ON CONFLICT (list_key, identifier) DO UPDATE SET \
                     profile_id = COALESCE(excluded.profile_id, sync_list_members.profile_id), \
                     preexisting = excluded.preexisting AND sync_list_members.preexisting"
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for member in batch {
                    query = query
                        .bind(list_key)
                        .bind(&member.identifier)
                        .bind(member.profile_id.as_deref())
                        .bind(now)
                        .bind(member.preexisting);
                }
                query.execute(&mut *tx).await.map_err(StateError::query("record list members"))?;
            }
            tx.commit().await.map_err(StateError::query("commit list members"))
        })
    }

    /// Forget members klsync removed from a list.
    pub async fn forget_sync_members(
        &self,
        list_key: &str,
        identifiers: &[String],
    ) -> Result<(), StateError> {
        self.delete_keyed("sync_list_members", "list_key", list_key, identifiers)
            .await
    }

    async fn delete_keyed(
        &self,
        table: &'static str,
        key_column: &'static str,
        key: &str,
        identifiers: &[String],
    ) -> Result<(), StateError> {
        on_backend!(self, pool => {
            let mut tx = pool.begin().await.map_err(StateError::query("begin a transaction"))?;
            for batch in identifiers.chunks(READ_BATCH) {
                // Table and column names are constants of this module, never input.
                let sql = format!(
                    "DELETE FROM {table} WHERE {key_column} = $1 AND identifier IN ({})",
                    placeholders(2, batch.len())
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(key);
                for identifier in batch {
                    query = query.bind(identifier);
                }
                query.execute(&mut *tx).await.map_err(StateError::query("forget sync records"))?;
            }
            tx.commit().await.map_err(StateError::query("commit forgetting sync records"))
        })
    }
}
