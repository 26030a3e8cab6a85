-- Mirror removals that never forget silently (issue 12), SQLite flavour. Keep in step with
-- migrations/postgres/0009_member_removals.sql.

-- A recorded member mirror mode had to remove but could not: no profile id was recorded and
-- none was found by its identifier (an email changed in Klaviyo leaves the profile on the list
-- under the new one). It stays recorded, with why and when klsync last tried; every apply tries
-- again, the plan and the apply report show it, and `klsync drift --members` lists it. Any new
-- record of the member (it is added again) clears both.
ALTER TABLE sync_list_members ADD COLUMN removal_pending TEXT;  -- the reason; NULL: none
ALTER TABLE sync_list_members ADD COLUMN removal_tried_at TEXT;

-- Members klsync removed from a list: what `klsync drift --members` compares the list with, to
-- find those added back by hand. One row per member, replaced when removed again; a member
-- recorded in sync_list_members again (klsync added it back) is no longer "removed", whatever
-- this table says.
CREATE TABLE sync_list_removals (
    list_key   TEXT NOT NULL,  -- the manifest id of the list
    identifier TEXT NOT NULL,  -- normalised identifier, per the list's identify_by
    profile_id TEXT,           -- the Klaviyo profile id removed
    removed_at TEXT NOT NULL,
    PRIMARY KEY (list_key, identifier)
);
