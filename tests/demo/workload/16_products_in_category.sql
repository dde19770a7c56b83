-- weight: 6
\set c random(0, 49)
SELECT id, name, price FROM products WHERE category = 'cat:c' ORDER BY price LIMIT 20;
