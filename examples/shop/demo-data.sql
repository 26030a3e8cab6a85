-- Sample shop data for `klsync demo` (SQLite; the demo loads it into a temporary database).
-- 200 customers generated deterministically, dated relative to today so the example queries
-- always find VIP and lapsed customers. Two rows carry invalid emails, to show how klsync
-- rejects rows it cannot identify.
--
-- The queries in queries.yaml read the `customer_stats` view; PostgreSQL, MySQL and MariaDB
-- define it in their own dialects (customer_stats.postgres.sql, customer_stats.mysql.sql).

CREATE TABLE customers (
    customer_id      TEXT PRIMARY KEY,
    email            TEXT,
    first_name       TEXT NOT NULL,
    country          TEXT NOT NULL,
    lifetime_value   REAL NOT NULL,
    order_count      INTEGER NOT NULL,
    first_order_at   TEXT NOT NULL,
    last_order_at    TEXT NOT NULL,
    marketing_status TEXT NOT NULL  -- subscribed | unsubscribed | do-not-contact
);

CREATE TABLE first_names (n INTEGER PRIMARY KEY, name TEXT NOT NULL);
INSERT INTO first_names (n, name) VALUES
    (0, 'Anna'), (1, 'Ben'), (2, 'Chloe'), (3, 'David'), (4, 'Elif'), (5, 'Felix'),
    (6, 'Greta'), (7, 'Hugo'), (8, 'Ines'), (9, 'Jonas'), (10, 'Kira'), (11, 'Luca'),
    (12, 'Mia'), (13, 'Noah'), (14, 'Olivia'), (15, 'Paul');

CREATE TABLE countries (n INTEGER PRIMARY KEY, code TEXT NOT NULL);
INSERT INTO countries (n, code) VALUES
    (0, 'DE'), (1, 'DE'), (2, 'AT'), (3, 'CH'), (4, 'FR'), (5, 'NL'), (6, 'GB');

WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < 200),
shaped AS (
    SELECT i,
           -- Days since the last order: 0 to 699, spread over the range.
           (i * 37) % 700 AS recency,
           -- Orders: 1 to 12; lifetime value grows with them.
           1 + (i * 7) % 12 AS orders
    FROM seq
)
INSERT INTO customers
SELECT printf('C-%05d', i),
       lower(f.name) || '.' || printf('%03d', i) || '@example.com',
       f.name,
       c.code,
       round(orders * (45.5 + (i * 13) % 160), 2),
       orders,
       strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-' || (recency + orders * 30) || ' days', 'start of day', '+9 hours'),
       strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-' || recency || ' days', 'start of day', '+14 hours'),
       CASE WHEN i % 17 = 0 THEN 'do-not-contact' WHEN i % 5 = 0 THEN 'unsubscribed' ELSE 'subscribed' END
FROM shaped
JOIN first_names f ON f.n = i % 16
JOIN countries c ON c.n = i % 7;

-- Typed by hand at a till: klsync rejects these rows and says why.
UPDATE customers SET email = 'noah.at.example.com' WHERE customer_id = 'C-00013';
UPDATE customers SET email = 'mia.012@example' WHERE customer_id = 'C-00012';

DROP TABLE first_names;
DROP TABLE countries;

CREATE VIEW customer_stats AS
SELECT customer_id AS external_id,
       email,
       country,
       lifetime_value,
       order_count,
       first_order_at,
       last_order_at,
       marketing_status,
       CAST(julianday('now') - julianday(last_order_at) AS INTEGER) AS days_since_last_order
FROM customers;
