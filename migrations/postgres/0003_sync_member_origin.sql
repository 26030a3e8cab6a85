-- Data syncs (issue 5), PostgreSQL flavour. Keep in step with migrations/sqlite/0003_sync_member_origin.sql.

-- A profile the list query returned that was already a member of the list when klsync would
-- have added it (it joined some other way). klsync remembers it so it is not planned as an add
-- again, but it did not add it, so mirror mode never removes it.
ALTER TABLE sync_list_members ADD COLUMN preexisting BOOLEAN NOT NULL DEFAULT FALSE;
