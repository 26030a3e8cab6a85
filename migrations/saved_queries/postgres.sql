-- Reusable SQL kept beside the data it reads (issue 5). The table is the original design's,
-- unchanged, so existing tooling that reads or writes it keeps working.
--
-- Idempotent on purpose: klsync's QueryManager runs this text itself (only when saving a query,
-- never just to run one) on the user's data database. It lives outside migrations/{postgres,sqlite}/
-- so that the state database's migrator never applies it: saved queries live with the data.
CREATE TABLE IF NOT EXISTS saved_queries (
    id SERIAL PRIMARY KEY,
    name VARCHAR(100) NOT NULL,
    description TEXT,
    query_text TEXT NOT NULL,
    parameters JSONB,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

-- "Names are unique in practice": enforce it, so saving an existing name is an upsert.
CREATE UNIQUE INDEX IF NOT EXISTS saved_queries_name_key ON saved_queries (name);
