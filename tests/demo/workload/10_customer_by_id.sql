-- weight: 20
\set cid random(1, 100000)
SELECT id, email, name FROM customers WHERE id = :cid;
