-- Data syncs (issue 11), PostgreSQL flavour. Keep in step with migrations/sqlite/0007_sync_member_sends.sql.

-- List adds klsync sent (or was about to send) in a bulk import job whose outcome it has not
-- seen yet. A job's profiles are recorded in sync_list_members with the send's id *before* the
-- job is sent, so whatever klsync sent is always owned by it: an apply killed after Klaviyo
-- accepted the job, or one that gave up polling it, leaves them recorded as sent, and the next
-- apply, finding them on the list, records them as added by klsync (mirror mode may then remove
-- them), never as members who joined another way. The job's known outcome settles them: the
-- accepted ones lose their send_id (added by klsync), the refused ones are forgotten.
ALTER TABLE sync_list_members ADD COLUMN send_id TEXT;  -- NULL once settled
-- Settling a job's 10,000 profiles is one statement through this index; settled rows leave it.
CREATE INDEX sync_list_members_sent ON sync_list_members (list_key, send_id)
    WHERE send_id IS NOT NULL;

-- One row per send: its list and, once Klaviyo accepted the job, the job's id.
CREATE TABLE sync_member_sends (
    send_id  TEXT PRIMARY KEY,  -- klsync's id for the send (a UUID)
    list_key TEXT NOT NULL,
    job_id   TEXT,              -- the bulk import job, once Klaviyo accepted it
    sent_at  TIMESTAMPTZ NOT NULL
);
