-- weight: 8
\set cid random(1, 100000)
SELECT id, name FROM customers WHERE lower(email) = 'user:cid@example.com';
