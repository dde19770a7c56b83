-- weight: 3
\set cid random(1, 100000)
SELECT id, total FROM orders WHERE customer_id = :cid AND status = 'cancelled';
