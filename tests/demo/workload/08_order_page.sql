-- weight: 3
\set off random(100000, 500000)
SELECT id, status, total FROM orders ORDER BY id LIMIT 20 OFFSET :off;
