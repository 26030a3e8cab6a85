-- klsync state, PostgreSQL flavour. Keep in step with migrations/sqlite/0001_state.sql: the two
-- differ only in types (TEXT for JSON and timestamps, INTEGER for ids), never in columns, so one
-- set of queries in src/state serves both. Timestamps are written by klsync (chrono, UTC), not by
-- column defaults, for the same reason.

-- What klsync manages: the map from a manifest resource (kind + key) to the Klaviyo object it
-- created or adopted, and the desired state last applied to it. A resource that is not in this
-- table is never updated or deleted by klsync.
CREATE TABLE managed_resources (
    kind        TEXT NOT NULL,  -- "list", "segment", "tag", ...
    key         TEXT NOT NULL,  -- the manifest id, unique within its kind
    klaviyo_id  TEXT NOT NULL,
    applied     JSONB NOT NULL, -- JSON: the attributes last sent, to detect drift made in Klaviyo
    updated_at  TIMESTAMPTZ NOT NULL,
    run_id      TEXT NOT NULL,  -- the run that last wrote this row
    PRIMARY KEY (kind, key)
);

-- One row per klsync command that touches Klaviyo or the state (the audit record).
-- outcome is NULL while the run is going, and stays NULL when the process was killed.
CREATE TABLE runs (
    run_id          TEXT PRIMARY KEY,  -- UUID v4
    command         TEXT NOT NULL,     -- "apply", "sync", ...
    started_at      TIMESTAMPTZ NOT NULL,
    finished_at     TIMESTAMPTZ,
    actor           TEXT NOT NULL,     -- CI user or $USER@host
    git_commit      TEXT,
    manifest_digest TEXT,
    plan_id         TEXT,
    outcome         TEXT,              -- "succeeded", "partial", "failed", ...
    summary         JSONB              -- JSON: counts and requests used
);
CREATE INDEX runs_started_at ON runs (started_at);

-- The apply journal: a row is written before a change is sent to Klaviyo (phase 'started') and
-- updated once the answer is known. A row still 'started' is a change whose outcome is unknown
-- because the process died; the next apply looks the resource up before retrying, so a create is
-- never sent twice.
CREATE TABLE journal (
    id          BIGSERIAL PRIMARY KEY,
    run_id      TEXT NOT NULL REFERENCES runs (run_id),
    seq         BIGINT NOT NULL,  -- 1, 2, ... within the run, in the order changes were started
    address     TEXT NOT NULL,     -- the plan address of the change, e.g. "list.newsletter"
    action      TEXT NOT NULL,     -- "create", "update", "delete", ...
    phase       TEXT NOT NULL CHECK (phase IN ('started', 'succeeded', 'failed')),
    klaviyo_id  TEXT,
    detail      JSONB NOT NULL,    -- JSON: what was sent, and requests used
    error       TEXT,
    started_at  TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    UNIQUE (run_id, seq)
);
CREATE INDEX journal_unfinished ON journal (phase) WHERE phase = 'started';

-- Saved plans already applied: applying one again is refused, because the live state it was
-- computed against is gone.
CREATE TABLE applied_plans (
    plan_id    TEXT PRIMARY KEY,
    run_id     TEXT NOT NULL REFERENCES runs (run_id),
    applied_at TIMESTAMPTZ NOT NULL
);

-- The apply lock. On PostgreSQL the lock is a session advisory lock, released by the server when
-- the holding connection dies; this row only names the holder for the "locked" message.
-- (On SQLite the row itself is the lock.)
CREATE TABLE apply_lock (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    run_id       TEXT NOT NULL,
    actor        TEXT NOT NULL,
    host         TEXT NOT NULL,
    pid          BIGINT NOT NULL,
    command      TEXT NOT NULL,
    acquired_at  TIMESTAMPTZ NOT NULL,
    heartbeat_at TIMESTAMPTZ NOT NULL
);
