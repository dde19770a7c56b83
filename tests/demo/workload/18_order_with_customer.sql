-- weight: 6
\set oid random(1, 1000000)
SELECT o.id, o.total, c.email FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id = :oid;
