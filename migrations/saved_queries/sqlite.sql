-- Reusable SQL kept beside the data it reads (issue 5): the SQLite equivalent of the PostgreSQL
-- table. JSON is stored as TEXT; timestamps are UTC text with millisecond precision
-- ('YYYY-MM-DD HH:MM:SS.SSS'), because CURRENT_TIMESTAMP's whole seconds would hide an update
-- made within the same second.
--
-- Idempotent on purpose: klsync's QueryManager runs this text itself (only when saving a query,
-- never just to run one) on the user's data database. It lives outside migrations/{postgres,sqlite}/
-- so that the state database's migrator never applies it: saved queries live with the data.
CREATE TABLE IF NOT EXISTS saved_queries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name VARCHAR(100) NOT NULL,
    description TEXT,
    query_text TEXT NOT NULL,
    parameters TEXT,
    created_at TIMESTAMP DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
    updated_at TIMESTAMP DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now'))
);

-- "Names are unique in practice": enforce it, so saving an existing name is an upsert.
CREATE UNIQUE INDEX IF NOT EXISTS saved_queries_name_key ON saved_queries (name);
