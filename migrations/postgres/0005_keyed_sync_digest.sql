-- Data syncs (issue 5), PostgreSQL flavour. Keep in step with migrations/sqlite/0005_keyed_sync_digest.sql.

-- Digests now hold seeded identifier keys instead of identifiers (format "KLD2", see
-- src/state/sync_records.rs): a third of the bytes, nothing to hash when a plan loads them.
-- Digests of the earlier format are dropped; the next apply of each sync writes a new one,
-- and until then its plans read sync_profile_rows (slower, same result).
DELETE FROM sync_profile_digests;

-- Keys and hashes are random bytes: compressing them only costs time on every read.
ALTER TABLE sync_profile_digests ALTER COLUMN data SET STORAGE EXTERNAL;
