-- Data syncs (issue 5), PostgreSQL flavour. Keep in step with migrations/sqlite/0002_sync.sql.

-- What klsync last applied for each row of a `profiles:` sync: the row's mapped properties
-- (JSON, nulls included) and their hash, so a plan compares a million rows against compact
-- hashes and reads the JSON only for the few rows that changed. A row is written only after
-- Klaviyo accepted it.
CREATE TABLE sync_profile_rows (
    sync_id    TEXT NOT NULL,  -- the manifest id of the profiles: sync
    identifier TEXT NOT NULL,  -- normalised email / phone_number / external_id
    row_hash   TEXT NOT NULL,  -- 32 hex digits: sha256 of the canonical properties JSON, cut
    applied    JSONB NOT NULL, -- JSON object: the properties as last applied
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (sync_id, identifier)
);

-- Profiles klsync added to a list through `members:`. Only these are ever removed (mirror mode):
-- a member who joined the list any other way is not in this table.
CREATE TABLE sync_list_members (
    list_key   TEXT NOT NULL,  -- the manifest id of the list
    identifier TEXT NOT NULL,  -- normalised identifier, per the list's identify_by
    profile_id TEXT,           -- Klaviyo profile id when known
    added_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (list_key, identifier)
);
