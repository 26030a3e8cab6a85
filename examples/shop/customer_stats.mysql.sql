-- The `customer_stats` view the shop's queries read, in MySQL's and MariaDB's dialect
-- (demo-data.sql has SQLite's, customer_stats.postgres.sql PostgreSQL's). Only the date
-- arithmetic differs. The queries' `$1` placeholders run unchanged: klsync sends them as `?`.
CREATE VIEW customer_stats AS
SELECT customer_id AS external_id,
       email,
       country,
       lifetime_value,
       order_count,
       first_order_at,
       last_order_at,
       marketing_status,
       DATEDIFF(CURRENT_DATE, last_order_at) AS days_since_last_order
FROM customers;
