-- weight: 8
\set cid random(1, 100000)
SELECT id, total, created_at FROM orders WHERE customer_id = :cid ORDER BY created_at DESC LIMIT 10;
