-- Data syncs (issue 11), SQLite flavour. Keep in step with migrations/postgres/0007_sync_member_sent.sql.

-- An add klsync sent (or was about to send) in a bulk import job whose outcome it has not seen
-- yet. Written before the job is sent, so whatever klsync sent is always owned by it: an apply
-- killed after Klaviyo accepted the job, or one that gave up polling it, leaves the member
-- recorded here, and the next apply, finding it on the list, records it as added by klsync
-- (mirror mode may then remove it), never as a member who joined another way.
ALTER TABLE sync_list_members ADD COLUMN pending BOOLEAN NOT NULL DEFAULT FALSE;
-- The bulk import job that carried the add, once Klaviyo accepted it (NULL before).
ALTER TABLE sync_list_members ADD COLUMN job_id TEXT;
