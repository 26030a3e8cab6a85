-- The `customer_stats` view the shop's queries read, in PostgreSQL's dialect (demo-data.sql has
-- SQLite's, customer_stats.mysql.sql MySQL's and MariaDB's). Only the date arithmetic differs.
CREATE VIEW customer_stats AS
SELECT customer_id AS external_id,
       email,
       country,
       lifetime_value,
       order_count,
       first_order_at,
       last_order_at,
       marketing_status,
       (CURRENT_DATE - last_order_at::date) AS days_since_last_order
FROM customers;
