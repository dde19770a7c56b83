-- weight: 10
\set pid random(1, 20000)
SELECT id, name, price FROM products WHERE id = :pid;
