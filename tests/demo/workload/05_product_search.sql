-- weight: 3
\set n random(1, 999)
SELECT id, name, price FROM products WHERE name LIKE '%:n%';
