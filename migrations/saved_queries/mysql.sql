-- Reusable SQL kept beside the data it reads (issue 5): the MySQL/MariaDB equivalent of the
-- PostgreSQL table. `parameters` is JSON (on MariaDB an alias of LONGTEXT checked to hold JSON);
-- timestamps are UTC with millisecond precision, so an update within the same second shows. The
-- name compares exactly (`utf8mb4_bin`), as on PostgreSQL and SQLite: saving `VIP` does not
-- replace `vip`.
--
-- Idempotent on purpose: klsync's QueryManager runs this text itself (only when saving a query,
-- never just to run one) on the user's data database. MySQL has no `CREATE INDEX IF NOT
-- EXISTS`, so the unique key is part of the table.
CREATE TABLE IF NOT EXISTS saved_queries (
    id INT AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    description TEXT,
    query_text TEXT NOT NULL,
    parameters JSON,
    created_at DATETIME(3) DEFAULT CURRENT_TIMESTAMP(3),
    updated_at DATETIME(3) DEFAULT CURRENT_TIMESTAMP(3),
    UNIQUE KEY saved_queries_name_key (name)
) DEFAULT CHARSET = utf8mb4
