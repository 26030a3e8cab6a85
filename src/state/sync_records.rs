//! What data syncs (issue 5) remember: per `profiles:` sync, each row's last applied properties
//! and their hash; per list with `members:`, the profiles klsync added.
//!
//! Writes are multi-row `INSERT ... ON CONFLICT` statements of [`WRITE_BATCH`] rows inside one
//! transaction per call, which keeps recording 100,000 rows to a few hundred statements on both
//! databases (and under SQLite's bound-parameter limit).

use std::collections::HashMap;

use chrono::Utc;
use futures::TryStreamExt;
use sqlx::query::Query;
use sqlx::types::Json;
use sqlx::{Database, Encode, Type};

use super::{Backend, StateError, StateStore};
use crate::sync::diff::{HashScheme, XXH3_MARK};

/// Rows per multi-row statement: at most 6 parameters each stays far below SQLite's 32,766.
const WRITE_BATCH: usize = 1_000;
/// Identifiers per `IN (...)` lookup.
const READ_BATCH: usize = 500;
/// Every write to a sync's rows runs this first, in its transaction (see [`digest`]).
const DROP_DIGEST: &str = "DELETE FROM sync_profile_digests WHERE sync_id = $1";

/// A row hash: 16 bytes (stored as text in `sync_profile_rows`: see
/// [`crate::sync::diff::hash_text`]).
pub type RowHashBytes = [u8; 16];

fn parse_row_hash(
    sync_id: &str,
    identifier: &str,
    text: &str,
) -> Result<(HashScheme, RowHashBytes), StateError> {
    crate::sync::diff::parse_hash(text).ok_or_else(|| StateError::Corrupt {
        what: format!("row hash of {identifier} in profiles sync {sync_id}"),
    })
}

/// What a plan needs before it can compare rows with a sync's recorded ones: the seed their
/// keys are made with, and the scheme their hashes are made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredKeys {
    pub seed: u64,
    pub scheme: HashScheme,
}

/// The scheme most of a sync's rows were recorded with; [`HashScheme::CURRENT`] for a sync
/// with none, or as many of each. Rows of another scheme (a `--resync` that did not get every
/// row through) look changed to a plan, and are sent and recorded again in this one.
fn majority_scheme(xxh3_rows: u64, rows: u64) -> HashScheme {
    if rows == 0 || xxh3_rows * 2 >= rows {
        HashScheme::CURRENT
    } else {
        HashScheme::Sha256
    }
}

/// The key a plan files a recorded row under: [`identifier_key`] of its normalised identifier
/// under the digest's seed. The seed is a secret kept in the sync's digest (random per digest);
/// without a digest a plan draws a fresh one. foldhash does not promise the same output across
/// its versions, so a digest also stores the key of a fixed text and is used only while this
/// build agrees with it.
pub use crate::sync::diff::identifier_key;

/// The part of a row hash a digest keeps: its first 8 bytes, little-endian.
pub fn short_row_hash(hash: &RowHashBytes) -> u64 {
    u64::from_le_bytes(hash[..8].try_into().expect("16 bytes"))
}

/// The digest format: chunks of at most [`digest::CHUNK_BYTES`]. The first begins with a
/// header, `magic | seed (u64 LE) | identifier_key(seed, CHECK_TEXT) (u64 LE)`, where the magic
/// names the scheme of the rows' hashes (`"KLD2"`: SHA-256, `"KLD3"`: XXH3); then every
/// chunk is a run of 16-byte entries `identifier_key(seed, identifier) (u64 LE) | first 8 bytes
/// of the row hash`, sorted by key across chunks. Keys instead of identifiers: a third of the bytes to store and read, and
/// nothing to hash or check as text when loading; random, so stored uncompressed
/// (`migrations/*/0005_keyed_sync_digest.sql`).
mod digest {
    use super::{HashScheme, StoredKeys, identifier_key};

    pub(super) const CHUNK_BYTES: usize = 256 << 10;
    const CHECK_TEXT: &str = "klsync digest key check";
    const HEADER_BYTES: usize = 4 + 8 + 8;
    const ENTRY_BYTES: usize = 16;

    fn magic(scheme: HashScheme) -> &'static [u8; 4] {
        match scheme {
            HashScheme::Sha256 => b"KLD2",
            HashScheme::Xxh3 => b"KLD3",
        }
    }

    pub(super) struct Builder {
        seed: u64,
        entries: Vec<(u64, u64)>,
        xxh3_rows: u64,
    }

    impl Builder {
        pub(super) fn new(seed: u64) -> Self {
            Builder {
                seed,
                entries: Vec::new(),
                xxh3_rows: 0,
            }
        }

        /// Add a recorded row.
        pub(super) fn push(&mut self, identifier: &str, scheme: HashScheme, short_hash: u64) {
            self.entries
                .push((identifier_key(self.seed, identifier), short_hash));
            self.xxh3_rows += u64::from(scheme == HashScheme::Xxh3);
        }

        /// Each chunk: its entry count and bytes. Entries come sorted by key: a plan's table
        /// places keys by their value, so it is then filled front to back (sequential writes,
        /// which the processor prefetches) instead of at random.
        pub(super) fn finish(mut self) -> Vec<(usize, Vec<u8>)> {
            let scheme = super::majority_scheme(self.xxh3_rows, self.entries.len() as u64);
            self.entries.sort_unstable();
            let mut chunk = Vec::with_capacity(CHUNK_BYTES);
            chunk.extend_from_slice(magic(scheme));
            chunk.extend_from_slice(&self.seed.to_le_bytes());
            chunk.extend_from_slice(&identifier_key(self.seed, CHECK_TEXT).to_le_bytes());
            let mut chunks = vec![(0, chunk)];
            for (key, short_hash) in self.entries {
                if chunks
                    .last()
                    .is_some_and(|(_, chunk)| chunk.len() + ENTRY_BYTES > CHUNK_BYTES)
                {
                    chunks.push((0, Vec::with_capacity(CHUNK_BYTES)));
                }
                let (entries, chunk) = chunks.last_mut().expect("never empty");
                *entries += 1;
                chunk.extend_from_slice(&key.to_le_bytes());
                chunk.extend_from_slice(&short_hash.to_le_bytes());
            }
            chunks
        }
    }

    /// The seed and scheme of a digest whose first chunk is `first`, and the chunk's entries
    /// after the header; `None` when the header is not one this build can use (another
    /// format, or keys this build computes differently).
    pub(super) fn read_header(first: &[u8]) -> Option<(StoredKeys, &[u8])> {
        let (header, entries) = first.split_at_checked(HEADER_BYTES)?;
        let (found, rest) = header.split_at(4);
        let scheme = [HashScheme::Sha256, HashScheme::Xxh3]
            .into_iter()
            .find(|scheme| found == magic(*scheme))?;
        let seed = u64::from_le_bytes(rest[..8].try_into().ok()?);
        let check = u64::from_le_bytes(rest[8..].try_into().ok()?);
        (check == identifier_key(seed, CHECK_TEXT))
            .then_some((StoredKeys { seed, scheme }, entries))
    }

    /// Call `visit(key, short hash)` for each entry of a chunk (after the header, for the
    /// first); what is wrong if it is malformed.
    pub(super) fn visit_entries(
        data: &[u8],
        visit: &mut impl FnMut(u64, u64),
    ) -> Result<(), String> {
        let entries = data.chunks_exact(ENTRY_BYTES);
        if !entries.remainder().is_empty() {
            return Err("truncated entry".into());
        }
        for entry in entries {
            let (key, hash) = entry.split_at(8);
            visit(
                u64::from_le_bytes(key.try_into().expect("8 bytes")),
                u64::from_le_bytes(hash.try_into().expect("8 bytes")),
            );
        }
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn entries_come_back_sorted_by_key_across_chunks_under_the_header_seed() {
            let mut builder = Builder::new(42);
            let count = CHUNK_BYTES / ENTRY_BYTES + 10;
            for n in 0..count {
                builder.push(&format!("c{n}@x.test"), HashScheme::Sha256, n as u64);
            }
            let chunks = builder.finish();
            assert!(chunks.len() > 1);
            let (keys, first) = read_header(&chunks[0].1).expect("a header this build wrote");
            assert_eq!(
                keys,
                StoredKeys {
                    seed: 42,
                    scheme: HashScheme::Sha256
                }
            );
            let mut seen = Vec::new();
            for (index, (entries, chunk)) in chunks.iter().enumerate() {
                assert!(chunk.len() <= CHUNK_BYTES);
                let before = seen.len();
                let data = if index == 0 { first } else { chunk.as_slice() };
                visit_entries(data, &mut |key, hash| seen.push((key, hash))).unwrap();
                assert_eq!(seen.len() - before, *entries);
            }
            assert_eq!(seen.len(), count);
            assert!(seen.is_sorted(), "sorted by key, across chunks");
            let last = count - 1;
            let key = identifier_key(42, &format!("c{last}@x.test"));
            assert!(seen.contains(&(key, last as u64)));
            assert_ne!(
                identifier_key(42, "a@x.test"),
                identifier_key(43, "a@x.test"),
                "the seed matters"
            );
        }

        #[test]
        fn the_header_names_the_scheme_of_most_rows() {
            let scheme_of = |schemes: &[HashScheme]| {
                let mut builder = Builder::new(1);
                for (n, scheme) in schemes.iter().enumerate() {
                    builder.push(&format!("c{n}@x.test"), *scheme, 0);
                }
                let chunks = builder.finish();
                read_header(&chunks[0].1).expect("readable").0.scheme
            };
            use HashScheme::{Sha256, Xxh3};
            assert_eq!(scheme_of(&[]), HashScheme::CURRENT);
            assert_eq!(scheme_of(&[Sha256, Sha256, Xxh3]), Sha256);
            assert_eq!(scheme_of(&[Sha256, Xxh3, Xxh3]), Xxh3);
            assert_eq!(scheme_of(&[Sha256, Xxh3]), HashScheme::CURRENT);
        }

        #[test]
        fn foreign_headers_and_torn_entries_are_refused() {
            let header = Builder::new(7).finish().remove(0).1;
            assert!(read_header(&header).is_some());
            let mut other_keys = header.clone();
            other_keys[12] ^= 1;
            assert!(
                read_header(&other_keys).is_none(),
                "keys computed differently"
            );
            let mut old_format = header.clone();
            old_format[..4].copy_from_slice(b"KLD1");
            assert!(read_header(&old_format).is_none());
            assert!(read_header(&header[..10]).is_none());
            assert!(visit_entries(&[0; 17], &mut |_, _| {}).is_err());
            assert!(visit_entries(&[], &mut |_, _| {}).is_ok());
        }
    }
}
/// One applied row of a `profiles:` sync.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncRowRecord {
    /// The normalised identifier.
    pub identifier: String,
    /// The row's hash, as [`crate::sync::diff::hash_text`] writes it (the scheme, then the
    /// hash).
    pub row_hash: String,
    /// The properties as applied (a JSON object, nulls included).
    pub applied: serde_json::Value,
}

/// A list member klsync added, sent, or found already on the list when it would have added it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncMemberRecord {
    /// The normalised identifier.
    pub identifier: String,
    /// The Klaviyo profile id, when known.
    pub profile_id: Option<String>,
    /// How it came to be recorded.
    pub origin: MemberOrigin,
    /// Mirror mode had to remove it, and the last apply could not: it stays recorded, and every
    /// apply tries again (`None` for every member not being removed).
    pub removal_pending: Option<PendingRemoval>,
}

/// Why a removal klsync owes is still pending, and since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRemoval {
    /// What stopped it, for the plan and the report.
    pub reason: String,
    /// When an apply last tried.
    pub tried_at: chrono::DateTime<Utc>,
}

/// A member klsync removed from a list (`sync_list_removals`), for `klsync drift --members`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedMember {
    /// The normalised identifier.
    pub identifier: String,
    /// The profile id klsync removed.
    pub profile_id: Option<String>,
}

/// How a list member came to be in klsync's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberOrigin {
    /// klsync added it: Klaviyo accepted it in a bulk import job klsync saw complete.
    Added,
    /// Already a member (joined another way) when klsync would have added it: klsync did not
    /// add it, so mirror mode never removes it.
    Preexisting,
    /// klsync sent it (or was about to) in a bulk import job whose outcome it has not seen:
    /// recorded before the job is sent, so it counts as klsync's whatever happened next.
    Sent {
        /// klsync's id for the send (`sync_member_sends`).
        send_id: String,
        /// The bulk import job, once Klaviyo accepted it.
        job_id: Option<String>,
    },
}

impl MemberOrigin {
    /// Whether klsync put it on the list (or may have): the only members mirror mode removes.
    pub fn is_klsyncs(&self) -> bool {
        !matches!(self, MemberOrigin::Preexisting)
    }

    /// The stored columns: `preexisting`, `send_id`.
    fn columns(&self) -> (bool, Option<&str>) {
        match self {
            MemberOrigin::Added => (false, None),
            MemberOrigin::Preexisting => (true, None),
            MemberOrigin::Sent { send_id, .. } => (false, Some(send_id)),
        }
    }
}

fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `VALUES` of a multi-row insert: `rows` rows of `columns` placeholders from `$1`.
fn value_rows(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|row| format!("({})", placeholders(row * columns + 1, columns)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `DELETE` of the rows of `table` under `key_column = $1` whose identifier is one of `count`
/// bound from `$2`. Table and column names are constants of this module, never input.
fn delete_identifiers_sql(table: &str, key_column: &str, count: usize) -> String {
    format!(
        "DELETE FROM {table} WHERE {key_column} = $1 AND identifier IN ({})",
        placeholders(2, count)
    )
}

/// `query` with each of `values` bound in turn after what it already has.
fn bind_each<'q, DB, T>(
    mut query: Query<'q, DB, DB::Arguments>,
    values: impl IntoIterator<Item = T>,
) -> Query<'q, DB, DB::Arguments>
where
    DB: Database,
    T: for<'e> Encode<'e, DB> + Type<DB>,
{
    for value in values {
        query = query.bind(value);
    }
    query
}

impl StateStore {
    /// Every recorded row of a `profiles:` sync as `(identifier_key(seed, identifier),
    /// short_row_hash(row hash))`: what a plan compares its query's rows with.
    ///
    /// `on_seed(keys)` is called once, before any `visit`: the seed and scheme of the sync's
    /// digest when it has one this build can use (its entries are then visited as stored: a
    /// few large values, see `migrations/*/0004_sync_row_digest.sql`), else a fresh random
    /// seed and the scheme of most recorded rows, with which the rows of `sync_profile_rows`
    /// are read and keyed.
    pub async fn visit_sync_row_keys<S, F>(
        &self,
        sync_id: &str,
        on_seed: S,
        mut visit: F,
    ) -> Result<(), StateError>
    where
        S: FnOnce(StoredKeys) + Send,
        F: FnMut(u64, u64) + Send,
    {
        const SQL: &str = "SELECT data FROM sync_profile_digests WHERE sync_id = $1 ORDER BY chunk";
        let corrupt = |what: String| StateError::Corrupt {
            what: format!("row digest of profiles sync {sync_id}: {what}"),
        };
        let mut on_seed = Some(on_seed);
        on_backend!(self, pool => {
            let mut rows = sqlx::query(SQL).bind(sync_id).fetch(pool);
            while let Some(row) = rows
                .try_next()
                .await
                .map_err(StateError::query("read sync row digest"))?
            {
                use sqlx::Row as _;
                let data: &[u8] = row.try_get(0).map_err(StateError::query("read sync row digest"))?;
                let entries = match on_seed.take() {
                    Some(name_seed) => match digest::read_header(data) {
                        Some((keys, entries)) => {
                            name_seed(keys);
                            entries
                        }
                        None => {
                            // Not a digest this build can read: as if there were none.
                            on_seed = Some(name_seed);
                            break;
                        }
                    },
                    None => data,
                };
                digest::visit_entries(entries, &mut visit).map_err(corrupt)?;
            }
        });
        let Some(on_seed) = on_seed else {
            return Ok(());
        };
        const SCHEMES: &str = "SELECT COUNT(*), \
                               COALESCE(SUM(CASE WHEN row_hash LIKE $2 THEN 1 ELSE 0 END), 0) \
                               FROM sync_profile_rows WHERE sync_id = $1";
        let marked = format!("{XXH3_MARK}%");
        let (rows, xxh3_rows): (i64, i64) = on_backend!(self, pool => {
            sqlx::query_as(SCHEMES).bind(sync_id).bind(&marked).fetch_one(pool).await
        })
        .map_err(StateError::query("read sync row hashes"))?;
        let seed = rand::random();
        on_seed(StoredKeys {
            seed,
            scheme: majority_scheme(xxh3_rows.max(0) as u64, rows.max(0) as u64),
        });
        self.visit_sync_row_hashes(sync_id, |identifier, _, hash| {
            visit(identifier_key(seed, identifier), short_row_hash(hash));
        })
        .await
    }

    /// Call `visit(identifier, scheme, row_hash)` for every recorded row of a `profiles:` sync
    /// (the rows of `sync_profile_rows`, never the digest), streaming, so a million rows never
    /// sit in memory as strings.
    pub async fn visit_sync_row_hashes<F>(
        &self,
        sync_id: &str,
        mut visit: F,
    ) -> Result<(), StateError>
    where
        F: FnMut(&str, HashScheme, &RowHashBytes) + Send,
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
                let (scheme, hash) = parse_row_hash(sync_id, identifier, hash)?;
                visit(identifier, scheme, &hash);
            }
            Ok(())
        })
    }

    /// How many entries [`StateStore::visit_sync_row_keys`] will visit, when the sync's digest
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

    /// Give a `profiles:` sync a digest of its recorded rows if it has none (every write to its
    /// rows drops it) or only one this build cannot read. Apply calls this once it has recorded a sync's rows, so the next plan
    /// reads the digest. Must run under the apply lock: a write between the read and the insert
    /// would not be in the digest (writes drop digests, but this one is inserted after).
    pub async fn refresh_sync_digest(&self, sync_id: &str) -> Result<(), StateError> {
        const INSERT: &str = "INSERT INTO sync_profile_digests (sync_id, chunk, entries, data) \
                              VALUES ($1, $2, $3, $4)";
        const FIRST: &str =
            "SELECT data FROM sync_profile_digests WHERE sync_id = $1 AND chunk = 0";
        let first: Option<Vec<u8>> = on_backend!(self, pool => {
            sqlx::query_scalar(FIRST).bind(sync_id).fetch_optional(pool).await
        })
        .map_err(StateError::query("read sync row digest"))?;
        if first.is_some_and(|first| digest::read_header(&first).is_some()) {
            // Exact (writes drop it) and readable by this build.
            return Ok(());
        }
        let mut builder = digest::Builder::new(rand::random());
        self.visit_sync_row_hashes(sync_id, |identifier, scheme, hash| {
            builder.push(identifier, scheme, short_row_hash(hash));
        })
        .await?;
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
        })?;
        crate::crashpoint::after_state_write();
        Ok(())
    }

    /// The applied properties of the given identifiers of a sync (absent ones are left out).
    pub async fn sync_applied(
        &self,
        sync_id: &str,
        identifiers: &[String],
    ) -> Result<HashMap<String, serde_json::Value>, StateError> {
        let mut found = HashMap::with_capacity(identifiers.len());
        for batch in identifiers.chunks(READ_BATCH) {
            let rows: Vec<(String, Json<serde_json::Value>)> = match &self.backend {
                // One array parameter, not an IN list of 500: with a list PostgreSQL's plan
                // for a freshly loaded million-row table was a sequential scan, 0.3 s a lookup
                // (a minute for a plan of 100,000 changed rows).
                Backend::Postgres(pool) => {
                    sqlx::query_as(
                        "SELECT identifier, applied FROM sync_profile_rows \
                         WHERE sync_id = $1 AND identifier = ANY($2)",
                    )
                    .bind(sync_id)
                    .bind(batch)
                    .fetch_all(pool)
                    .await
                }
                Backend::Sqlite(pool) => {
                    let sql = format!(
                        "SELECT identifier, applied FROM sync_profile_rows \
                         WHERE sync_id = $1 AND identifier IN ({})",
                        placeholders(2, batch.len())
                    );
                    let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str())).bind(sync_id);
                    for identifier in batch {
                        query = query.bind(identifier);
                    }
                    query.fetch_all(pool).await
                }
            }
            .map_err(StateError::query("read applied sync rows"))?;
            found.extend(rows.into_iter().map(|(id, Json(applied))| (id, applied)));
        }
        Ok(found)
    }

    /// How many rows of a `profiles:` sync are recorded.
    pub async fn sync_row_count(&self, sync_id: &str) -> Result<u64, StateError> {
        const SQL: &str = "SELECT COUNT(*) FROM sync_profile_rows WHERE sync_id = $1";
        let count: i64 = on_backend!(self, pool => {
            sqlx::query_scalar(SQL).bind(sync_id).fetch_one(pool).await
        })
        .map_err(StateError::query("count sync rows"))?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Up to `limit` recorded rows of a sync with their applied properties, in identifier
    /// order, after `after` (`""` for the first page): pages through a million rows by the
    /// primary key without holding them all.
    pub async fn sync_rows_after(
        &self,
        sync_id: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, serde_json::Value)>, StateError> {
        const SQL: &str = "SELECT identifier, applied FROM sync_profile_rows \
                           WHERE sync_id = $1 AND identifier > $2 ORDER BY identifier LIMIT $3";
        let rows: Vec<(String, Json<serde_json::Value>)> = on_backend!(self, pool => {
            sqlx::query_as(SQL)
                .bind(sync_id)
                .bind(after)
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(pool)
                .await
        })
        .map_err(StateError::query("read applied sync rows"))?;
        Ok(rows
            .into_iter()
            .map(|(identifier, Json(applied))| (identifier, applied))
            .collect())
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
                let values = value_rows(batch.len(), 5);
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
        })?;
        crate::crashpoint::after_state_write();
        Ok(())
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

    /// Every member klsync recorded for a list: those it added, sent, or found already there.
    pub async fn sync_members(&self, list_key: &str) -> Result<Vec<SyncMemberRecord>, StateError> {
        const SQL: &str = "SELECT m.identifier, m.profile_id, m.preexisting, m.send_id, s.job_id, \
                           m.removal_pending, m.removal_tried_at \
                           FROM sync_list_members m \
                           LEFT JOIN sync_member_sends s ON s.send_id = m.send_id \
                           WHERE m.list_key = $1 ORDER BY m.identifier";
        type Row = (
            String,
            Option<String>,
            bool,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<chrono::DateTime<Utc>>,
        );
        let rows: Vec<Row> =
            on_backend!(self, pool => sqlx::query_as(SQL).bind(list_key).fetch_all(pool).await)
                .map_err(StateError::query("read list members added by klsync"))?;
        Ok(rows
            .into_iter()
            .map(
                |(identifier, profile_id, preexisting, send_id, job_id, reason, tried_at)| {
                    let origin = match (send_id, preexisting) {
                        (Some(send_id), _) => MemberOrigin::Sent { send_id, job_id },
                        (None, true) => MemberOrigin::Preexisting,
                        (None, false) => MemberOrigin::Added,
                    };
                    SyncMemberRecord {
                        identifier,
                        profile_id,
                        origin,
                        removal_pending: reason.map(|reason| PendingRemoval {
                            reason,
                            tried_at: tried_at.unwrap_or_default(),
                        }),
                    }
                },
            )
            .collect())
    }

    /// How many members klsync recorded for a list as added or found there (not those sent
    /// without a known outcome).
    pub async fn sync_member_count(&self, list_key: &str) -> Result<u64, StateError> {
        const SQL: &str =
            "SELECT COUNT(*) FROM sync_list_members WHERE list_key = $1 AND send_id IS NULL";
        let count: i64 = on_backend!(self, pool => {
            sqlx::query_scalar(SQL).bind(list_key).fetch_one(pool).await
        })
        .map_err(StateError::query("count list members"))?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Record members of a list (a known profile id replaces an unknown one), in one
    /// transaction of multi-row statements. The latest write says whether a member is still
    /// [`MemberOrigin::Sent`]. A member klsync added or sent stays klsync's even if recorded
    /// again as preexisting (an add that was sent, then found on the list, is klsync's), and a
    /// preexisting one becomes klsync's once klsync sends it (it had left the list in between).
    /// A member recorded again is wanted on the list: a removal pending for it is dropped.
    pub async fn record_sync_members(
        &self,
        list_key: &str,
        members: &[SyncMemberRecord],
    ) -> Result<(), StateError> {
        if members.is_empty() {
            return Ok(());
        }
        const COLUMNS: usize = 6;
        let now = Utc::now();
        on_backend!(self, pool => {
            let mut tx = pool.begin().await.map_err(StateError::query("begin a transaction"))?;
            for batch in members.chunks(WRITE_BATCH) {
                let values = value_rows(batch.len(), COLUMNS);
                let sql = format!(
                    "INSERT INTO sync_list_members \
                     (list_key, identifier, profile_id, added_at, preexisting, send_id) \
                     VALUES {values} ON CONFLICT (list_key, identifier) DO UPDATE SET \
                     profile_id = COALESCE(excluded.profile_id, sync_list_members.profile_id), \
                     preexisting = excluded.preexisting AND sync_list_members.preexisting, \
                     send_id = excluded.send_id, \
                     removal_pending = NULL, removal_tried_at = NULL"
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for member in batch {
                    let (preexisting, send_id) = member.origin.columns();
                    query = query
                        .bind(list_key)
                        .bind(&member.identifier)
                        .bind(member.profile_id.as_deref())
                        .bind(now)
                        .bind(preexisting)
                        .bind(send_id);
                }
                query.execute(&mut *tx).await.map_err(StateError::query("record list members"))?;
            }
            tx.commit().await.map_err(StateError::query("commit list members"))
        })?;
        crate::crashpoint::after_state_write();
        Ok(())
    }

    /// Record, before their bulk import job is sent, the adds of send `send_id` to a list: the
    /// send, then its members as [`MemberOrigin::Sent`] (one multi-row write). A send left
    /// without members by a crash in between is cleared by [`StateStore::forget_settled_sends`].
    pub async fn record_member_send(
        &self,
        list_key: &str,
        send_id: &str,
        identifiers: &[String],
    ) -> Result<(), StateError> {
        const SQL: &str =
            "INSERT INTO sync_member_sends (send_id, list_key, sent_at) VALUES ($1, $2, $3)";
        on_backend!(self, pool => {
            sqlx::query(SQL)
                .bind(send_id)
                .bind(list_key)
                .bind(Utc::now())
                .execute(pool)
                .await
                .map(drop)
        })
        .map_err(StateError::query("record a send of list members"))?;
        let sent: Vec<SyncMemberRecord> = identifiers
            .iter()
            .map(|identifier| SyncMemberRecord {
                identifier: identifier.clone(),
                profile_id: None,
                origin: MemberOrigin::Sent {
                    send_id: send_id.to_string(),
                    job_id: None,
                },
                removal_pending: None,
            })
            .collect();
        self.record_sync_members(list_key, &sent).await
    }

    /// Klaviyo accepted the bulk import job `job_id` of a send.
    pub async fn record_member_send_job(
        &self,
        send_id: &str,
        job_id: &str,
    ) -> Result<(), StateError> {
        const SQL: &str = "UPDATE sync_member_sends SET job_id = $1 WHERE send_id = $2";
        on_backend!(self, pool => {
            sqlx::query(SQL).bind(job_id).bind(send_id).execute(pool).await.map(drop)
        })
        .map_err(StateError::query(
            "record the job of a send of list members",
        ))?;
        Ok(())
    }

    /// A send's outcome is known: its members Klaviyo `refused` are forgotten (they are not on
    /// the list), and the others are added by klsync; the send is forgotten. One transaction of
    /// a few statements, whatever the job's size.
    pub async fn settle_member_send(
        &self,
        list_key: &str,
        send_id: &str,
        refused: &[String],
    ) -> Result<(), StateError> {
        const SETTLE: &str =
            "UPDATE sync_list_members SET send_id = NULL WHERE list_key = $1 AND send_id = $2";
        on_backend!(self, pool => {
            let mut tx = pool.begin().await.map_err(StateError::query("begin a transaction"))?;
            for batch in refused.chunks(READ_BATCH) {
                let sql = format!(
                    "DELETE FROM sync_list_members WHERE list_key = $1 AND send_id = $2 \
                     AND identifier IN ({})",
                    placeholders(3, batch.len())
                );
                let query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(list_key).bind(send_id);
                bind_each(query, batch)
                    .execute(&mut *tx)
                    .await
                    .map_err(StateError::query("forget refused list members"))?;
            }
            sqlx::query(SETTLE)
                .bind(list_key)
                .bind(send_id)
                .execute(&mut *tx)
                .await
                .map_err(StateError::query("record added list members"))?;
            sqlx::query("DELETE FROM sync_member_sends WHERE send_id = $1")
                .bind(send_id)
                .execute(&mut *tx)
                .await
                .map_err(StateError::query("forget a settled send"))?;
            tx.commit().await.map_err(StateError::query("commit a settled send"))
        })
    }

    /// A send whose job Klaviyo never accepted: its members are not on the list, so they are
    /// forgotten, with the send.
    pub async fn drop_member_send(&self, list_key: &str, send_id: &str) -> Result<(), StateError> {
        on_backend!(self, pool => {
            let mut tx = pool.begin().await.map_err(StateError::query("begin a transaction"))?;
            sqlx::query("DELETE FROM sync_list_members WHERE list_key = $1 AND send_id = $2")
                .bind(list_key)
                .bind(send_id)
                .execute(&mut *tx)
                .await
                .map_err(StateError::query("forget list members never sent"))?;
            sqlx::query("DELETE FROM sync_member_sends WHERE send_id = $1")
                .bind(send_id)
                .execute(&mut *tx)
                .await
                .map_err(StateError::query("forget a send never made"))?;
            tx.commit().await.map_err(StateError::query("commit a dropped send"))
        })
    }

    /// Forget a list's sends none of whose members is still unsettled (a later apply found
    /// them on the list, or removed them).
    pub async fn forget_settled_sends(&self, list_key: &str) -> Result<(), StateError> {
        const SQL: &str = "DELETE FROM sync_member_sends WHERE list_key = $1 AND send_id NOT IN \
                           (SELECT send_id FROM sync_list_members \
                            WHERE list_key = $1 AND send_id IS NOT NULL)";
        on_backend!(self, pool => sqlx::query(SQL).bind(list_key).execute(pool).await.map(drop))
            .map_err(StateError::query("forget settled sends of list members"))?;
        Ok(())
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

    /// Forget everything klsync recorded about the members of list `list_key`: the members, the
    /// sends of members, and the members it removed, in one transaction. For a list created again
    /// (the old one was deleted outside klsync): the new list is empty, and a member of the old
    /// one someone adds to it by hand was never removed from it by klsync.
    pub async fn forget_list_members(&self, list_key: &str) -> Result<(), StateError> {
        const TABLES: [&str; 3] = [
            "sync_list_members",
            "sync_member_sends",
            "sync_list_removals",
        ];
        on_backend!(self, pool => {
            let mut tx = pool.begin().await.map_err(StateError::query("begin a transaction"))?;
            for table in TABLES {
                // Table names are constants of this function, never input.
                let sql = format!("DELETE FROM {table} WHERE list_key = $1");
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(list_key)
                    .execute(&mut *tx)
                    .await
                    .map_err(StateError::query("forget the members of a list"))?;
            }
            tx.commit().await.map_err(StateError::query("commit forgetting the members of a list"))
        })?;
        crate::crashpoint::after_state_write();
        Ok(())
    }

    /// Members klsync removed from a list: forgotten as members, remembered as removed
    /// (`sync_list_removals`, with the profile id removed), in one transaction.
    pub async fn record_member_removals(
        &self,
        list_key: &str,
        removed: &[RemovedMember],
    ) -> Result<(), StateError> {
        if removed.is_empty() {
            return Ok(());
        }
        const COLUMNS: usize = 4;
        let now = Utc::now();
        on_backend!(self, pool => {
            let mut tx = pool.begin().await.map_err(StateError::query("begin a transaction"))?;
            for batch in removed.chunks(READ_BATCH) {
                let values = value_rows(batch.len(), COLUMNS);
                let sql = format!(
                    "INSERT INTO sync_list_removals (list_key, identifier, profile_id, removed_at) \
                     VALUES {values} ON CONFLICT (list_key, identifier) DO UPDATE SET \
                     profile_id = excluded.profile_id, removed_at = excluded.removed_at"
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for member in batch {
                    query = query
                        .bind(list_key)
                        .bind(&member.identifier)
                        .bind(member.profile_id.as_deref())
                        .bind(now);
                }
                query.execute(&mut *tx).await.map_err(StateError::query("record removed list members"))?;
                let sql = delete_identifiers_sql("sync_list_members", "list_key", batch.len());
                let query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(list_key);
                bind_each(query, batch.iter().map(|member| &member.identifier))
                    .execute(&mut *tx)
                    .await
                    .map_err(StateError::query("forget removed list members"))?;
            }
            tx.commit().await.map_err(StateError::query("commit removed list members"))
        })?;
        crate::crashpoint::after_state_write();
        Ok(())
    }

    /// Members of a list whose removal mirror mode could not resolve: kept, with `reason` and
    /// the time of this try, so that the plan and the report say so and the next apply tries
    /// again. `None` clears it: the query returns them again, so klsync no longer owes it.
    pub async fn record_pending_removals(
        &self,
        list_key: &str,
        identifiers: &[String],
        reason: Option<&str>,
    ) -> Result<(), StateError> {
        if identifiers.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        on_backend!(self, pool => {
            let mut tx = pool.begin().await.map_err(StateError::query("begin a transaction"))?;
            for batch in identifiers.chunks(READ_BATCH) {
                let sql = format!(
                    "UPDATE sync_list_members SET removal_pending = $2, removal_tried_at = $3 \
                     WHERE list_key = $1 AND identifier IN ({})",
                    placeholders(4, batch.len())
                );
                let query = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(list_key)
                    .bind(reason)
                    .bind(reason.map(|_| now));
                bind_each(query, batch)
                    .execute(&mut *tx)
                    .await
                    .map_err(StateError::query("record pending removals"))?;
            }
            tx.commit().await.map_err(StateError::query("commit pending removals"))
        })?;
        crate::crashpoint::after_state_write();
        Ok(())
    }

    /// The members klsync removed from a list and has not recorded again since (klsync added
    /// them back), sorted by identifier.
    pub async fn removed_members(&self, list_key: &str) -> Result<Vec<RemovedMember>, StateError> {
        const SQL: &str = "SELECT r.identifier, r.profile_id FROM sync_list_removals r \
                           WHERE r.list_key = $1 AND NOT EXISTS (SELECT 1 FROM sync_list_members m \
                           WHERE m.list_key = r.list_key AND m.identifier = r.identifier) \
                           ORDER BY r.identifier";
        let rows: Vec<(String, Option<String>)> =
            on_backend!(self, pool => sqlx::query_as(SQL).bind(list_key).fetch_all(pool).await)
                .map_err(StateError::query("read list members removed by klsync"))?;
        Ok(rows
            .into_iter()
            .map(|(identifier, profile_id)| RemovedMember {
                identifier,
                profile_id,
            })
            .collect())
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
                let sql = delete_identifiers_sql(table, key_column, batch.len());
                let query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(key);
                bind_each(query, batch)
                    .execute(&mut *tx)
                    .await
                    .map_err(StateError::query("forget sync records"))?;
            }
            tx.commit().await.map_err(StateError::query("commit forgetting sync records"))
        })?;
        crate::crashpoint::after_state_write();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_number_their_placeholders_in_order() {
        assert_eq!(value_rows(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(
            delete_identifiers_sql("sync_list_members", "list_key", 2),
            "DELETE FROM sync_list_members WHERE list_key = $1 AND identifier IN ($2, $3)"
        );
    }

    #[tokio::test]
    async fn bind_each_binds_after_what_is_bound() {
        use sqlx::Connection as _;
        let mut connection = sqlx::SqliteConnection::connect("sqlite::memory:")
            .await
            .unwrap();
        let query = sqlx::query("SELECT $1 || $2 || $3").bind("a");
        let identifiers = ["b".to_owned(), "c".to_owned()];
        let row = bind_each(query, &identifiers)
            .fetch_one(&mut connection)
            .await
            .unwrap();
        use sqlx::Row as _;
        assert_eq!(row.get::<String, _>(0), "abc");
    }
}
