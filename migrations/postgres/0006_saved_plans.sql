-- Saved plans (issue 11), PostgreSQL flavour. Keep in step with migrations/sqlite/0006_saved_plans.sql.

-- Every plan `klsync plan --out` wrote against this state, by the digest of the file's bytes
-- (src/apply/saved.rs, plan_id). `klsync apply FILE` applies only a file whose digest is here:
-- a plan edited by hand, cut short, or made against another state is refused.
CREATE TABLE saved_plans (
    plan_id         TEXT PRIMARY KEY,
    manifest_digest TEXT NOT NULL,
    created_at      TEXT NOT NULL,  -- the plan's own created_at, as written in the file
    saved_at        TIMESTAMPTZ NOT NULL,
    actor           TEXT NOT NULL   -- who ran `klsync plan --out`
);
