-- Data syncs (issue 5), PostgreSQL flavour. Keep in step with migrations/sqlite/0004_sync_row_digest.sql.

-- A compact copy of each profiles: sync's (identifier, row hash) pairs, so that a plan reads a
-- few large values instead of a million rows. Derived from sync_profile_rows: every write to a
-- sync's rows deletes its digest in the same transaction, and apply rebuilds it at its end, so a
-- digest that exists is always exact. A missing digest only means the plan reads
-- sync_profile_rows instead.
CREATE TABLE sync_profile_digests (
    sync_id TEXT    NOT NULL,  -- the manifest id of the profiles: sync
    chunk   INTEGER NOT NULL,  -- 0, 1, 2, ...: the chunks in order
    entries INTEGER NOT NULL,  -- entries in this chunk (their sum sizes the plan's table up front)
    data    BYTEA NOT NULL,  -- entries: identifier length (u16, little-endian), identifier (UTF-8), 16-byte row hash
    PRIMARY KEY (sync_id, chunk)
);
