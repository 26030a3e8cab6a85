-- Three-way comparison (issue 12), PostgreSQL flavour. Keep in step with migrations/sqlite/0008_managed_returned.sql.

-- What Klaviyo returned for a managed resource after klsync's last write to it (or showed when
-- klsync imported or adopted it): a JSON object of the fields klsync compares, in Klaviyo's own
-- form (a segment definition as Klaviyo canonicalised it, say). `applied` keeps what klsync sent.
-- The plan updates a field only when the manifest differs from what was sent, or Klaviyo's value
-- differs from what it returned (a hand edit); see src/plan/three_way.rs. NULL for rows written
-- before this migration, and a field missing from the object when Klaviyo's answer did not
-- carry it: those fall back to comparing the manifest with Klaviyo's value directly.
ALTER TABLE managed_resources ADD COLUMN returned JSONB;
