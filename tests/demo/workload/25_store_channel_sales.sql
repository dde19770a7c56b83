-- weight: 4
\set s random(1, 200)
\set ch random(1, 20)
SELECT count(*), sum(total) FROM orders WHERE store_id = :s AND channel = :ch;
