-- weight: 3
-- Three digits: a pattern of three characters or more is what a trigram index can serve
-- (shorter ones scan the whole index, and the planner rightly reads the table instead).
\set n random(100, 999)
SELECT id, name, price FROM products WHERE name LIKE '%:n%';
