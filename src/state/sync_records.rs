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
/// Every write to a sync's rows runs this first, in its transaction (see [`digest`]).
const DROP_DIGEST: &str = "DELETE FROM sync_profile_digests WHERE sync_id = $1";

/// A row hash: 16 bytes (stored as 32 hex digits in `sync_profile_rows`).
pub type RowHashBytes = [u8; 16];

fn parse_row_hash(
    sync_id: &str,
    identifier: &str,
    hex_text: &str,
) -> Result<RowHashBytes, StateError> {
    hex::decode(hex_text)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| StateError::Corrupt {
            what: format!("row hash of {identifier} in profiles sync {sync_id}"),
        })
}

/// The digest format: chunks of about [`digest::CHUNK_BYTES`], each a run of entries
/// `identifier length (u16 LE) | identifier (UTF-8) | row hash (16 bytes)`.
mod digest {
    use super::RowHashBytes;

    pub(super) const CHUNK_BYTES: usize = 256 << 10;

    #[derive(Default)]
    pub(super) struct Builder {
        /// Entries and bytes of each chunk.
        chunks: Vec<(usize, Vec<u8>)>,
    }

    impl Builder {
        /// Add an entry; `false` if the identifier is too long for the format.
        pub(super) fn push(&mut self, identifier: &str, hash: &RowHashBytes) -> bool {
            let Ok(length) = u16::try_from(identifier.len()) else {
                return false;
            };
            let entry = 2 + identifier.len() + hash.len();
            let full = self
                .chunks
                .last()
                .is_none_or(|(_, chunk)| chunk.len() + entry > CHUNK_BYTES);
            if full {
                self.chunks.push((0, Vec::with_capacity(CHUNK_BYTES)));
            }
            let (entries, chunk) = self.chunks.last_mut().expect("a chunk was just ensured");
            *entries += 1;
            chunk.extend_from_slice(&length.to_le_bytes());
            chunk.extend_from_slice(identifier.as_bytes());
            chunk.extend_from_slice(hash);
            true
        }

        /// Each chunk: its entry count and bytes.
        pub(super) fn finish(self) -> Vec<(usize, Vec<u8>)> {
            self.chunks
        }
    }

    /// Call `visit` for each entry of a chunk; what is wrong if it is malformed.
    pub(super) fn visit_chunk(
        mut data: &[u8],
        visit: &mut impl FnMut(&str, &RowHashBytes),
    ) -> Result<(), String> {
        while !data.is_empty() {
            let (length, rest) = data.split_at_checked(2).ok_or("truncated entry")?;
            let length = usize::from(u16::from_le_bytes([length[0], length[1]]));
            let (identifier, rest) = rest.split_at_checked(length).ok_or("truncated entry")?;
            let (hash, rest) = rest.split_at_checked(16).ok_or("truncated entry")?;
            let identifier = std::str::from_utf8(identifier).map_err(|e| e.to_string())?;
            visit(identifier, hash.try_into().expect("16 bytes"));
            data = rest;
        }
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn entries_come_back_in_order_across_chunks() {
            let mut builder = Builder::default();
            // Entries are under 32 bytes: more than two chunks.
            let count = CHUNK_BYTES / 16 + 10;
            for n in 0..count {
                assert!(builder.push(&format!("c{n}@x.test"), &[n as u8; 16]));
            }
            let chunks = builder.finish();
            assert!(chunks.len() > 1);
            let mut seen = Vec::new();
            for (entries, chunk) in &chunks {
                assert!(chunk.len() <= CHUNK_BYTES);
                let before = seen.len();
                visit_chunk(chunk, &mut |id, hash| seen.push((id.to_string(), hash[0]))).unwrap();
                assert_eq!(seen.len() - before, *entries);
            }
            assert_eq!(seen.len(), count);
            assert_eq!(
                seen[count - 1],
                (format!("c{}@x.test", count - 1), (count - 1) as u8)
            );
        }

        #[test]
        fn malformed_chunks_are_refused() {
            assert!(visit_chunk(&[5, 0, b'a'], &mut |_, _| {}).is_err());
            assert!(
                visit_chunk(
                    &[1, 0, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                    &mut |_, _| {}
                )
                .is_err()
            );
            let mut builder = Builder::default();
            assert!(!builder.push(&"x".repeat(70_000), &[0; 16]));
        }
    }
}

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
    ///
    /// Reads the sync's digest when it has one (a few large values: see
    /// `migrations/*/0004_sync_row_digest.sql`), else `sync_profile_rows` itself.
    pub async fn visit_sync_row_hashes<F>(
        &self,
        sync_id: &str,
        mut visit: F,
    ) -> Result<(), StateError>
    where
        F: FnMut(&str, &RowHashBytes) + Send,
    {
        if self.visit_sync_digest(sync_id, &mut visit).await? {
            return Ok(());
        }
        self.visit_recorded_rows(sync_id, visit).await
    }

    /// Every row of `sync_profile_rows` of a sync, streamed.
    async fn visit_recorded_rows<F>(&self, sync_id: &str, mut visit: F) -> Result<(), StateError>
    where
        F: FnMut(&str, &RowHashBytes) + Send,
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
                visit(identifier, &parse_row_hash(sync_id, identifier, hash)?);
            }
            Ok(())
        })
    }

    /// How many rows [`StateStore::visit_sync_row_hashes`] will visit, when the sync's digest
    /// says so cheaply (`None`: no digest), to size a table up front.
    pub async fn sync_digest_entries(&self, sync_id: &str) -> Result<Option<usize>, StateError> {
        const SQL: &str = "SELECT COUNT(*), COALESCE(SUM(entries), 0) FROM sync_profile_digests \
                           WHERE sync_id = $1";
        let (chunks, entries): (i64, i64) = on_backend!(self, pool => {
            sqlx::query_as(SQL).bind(sync_id).fetch_one(pool).await
        })
        .map_err(StateError::query("read sync row digest"))?;
        Ok((chunks > 0).then(|| usize::try_from(entries).unwrap_or(0)))
    }

    /// Every entry of the sync's digest; `false` when it has none.
    async fn visit_sync_digest<F>(&self, sync_id: &str, visit: &mut F) -> Result<bool, StateError>
    where
        F: FnMut(&str, &RowHashBytes) + Send,
    {
        const SQL: &str = "SELECT data FROM sync_profile_digests WHERE sync_id = $1 ORDER BY chunk";
        let mut found = false;
        on_backend!(self, pool => {
            let mut rows = sqlx::query(SQL).bind(sync_id).fetch(pool);
            while let Some(row) = rows
                .try_next()
                .await
                .map_err(StateError::query("read sync row digest"))?
            {
                use sqlx::Row as _;
                let data: &[u8] = row.try_get(0).map_err(StateError::query("read sync row digest"))?;
                digest::visit_chunk(data, &mut *visit).map_err(|what| StateError::Corrupt {
                    what: format!("row digest of profiles sync {sync_id}: {what}"),
                })?;
                found = true;
            }
        });
        Ok(found)
    }

    /// Give a `profiles:` sync a digest of its recorded rows if it has none (every write to its
    /// rows drops it). Apply calls this once it has recorded a sync's rows, so the next plan
    /// reads the digest. Must run under the apply lock: a write between the read and the insert
    /// would not be in the digest (writes drop digests, but this one is inserted after).
    pub async fn refresh_sync_digest(&self, sync_id: &str) -> Result<(), StateError> {
        const INSERT: &str = "INSERT INTO sync_profile_digests (sync_id, chunk, entries, data) \
                              VALUES ($1, $2, $3, $4)";
        if self.sync_digest_entries(sync_id).await?.is_some() {
            return Ok(());
        }
        let mut builder = digest::Builder::default();
        let mut fits = true;
        self.visit_recorded_rows(sync_id, |identifier, hash| {
            fits = fits && builder.push(identifier, hash);
        })
        .await?;
        if !fits {
            // An identifier too long for the format: no digest, plans read the rows.
            return Ok(());
        }
        on_backend!(self, pool => {
            let mut tx = pool.begin().await.map_err(StateError::query("begin a transaction"))?;
            sqlx::query(DROP_DIGEST)
                .bind(sync_id)
                .execute(&mut *tx)
                .await
                .map_err(StateError::query("drop sync row digest"))?;
            for (index, (entries, chunk)) in builder.finish().iter().enumerate() {
                sqlx::query(INSERT)
                    .bind(sync_id)
                    .bind(index as i64)
                    .bind(*entries as i64)
                    .bind(chunk.as_slice())
                    .execute(&mut *tx)
                    .await
                    .map_err(StateError::query("write sync row digest"))?;
            }
            tx.commit().await.map_err(StateError::query("commit sync row digest"))
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
        if rows.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        on_backend!(self, pool => {
            let mut tx = pool.begin().await.map_err(StateError::query("begin a transaction"))?;
            sqlx::query(DROP_DIGEST)
                .bind(sync_id)
                .execute(&mut *tx)
                .await
                .map_err(StateError::query("drop sync row digest"))?;
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
        self.delete_keyed("sync_profile_rows", "sync_id", sync_id, identifiers, true)
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
        self.delete_keyed(
            "sync_list_members",
            "list_key",
            list_key,
            identifiers,
            false,
        )
        .await
    }

    async fn delete_keyed(
        &self,
        table: &'static str,
        key_column: &'static str,
        key: &str,
        identifiers: &[String],
        drop_digest: bool,
    ) -> Result<(), StateError> {
        if identifiers.is_empty() {
            return Ok(());
        }
        on_backend!(self, pool => {
            let mut tx = pool.begin().await.map_err(StateError::query("begin a transaction"))?;
            if drop_digest {
                sqlx::query(DROP_DIGEST)
                    .bind(key)
                    .execute(&mut *tx)
                    .await
                    .map_err(StateError::query("drop sync row digest"))?;
            }
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
