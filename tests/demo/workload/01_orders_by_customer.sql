-- weight: 10
\set cid random(1, 100000)
SELECT id, status, total FROM orders WHERE customer_id = :cid;
