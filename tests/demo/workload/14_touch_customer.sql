-- weight: 5
\set cid random(1, 100000)
UPDATE customers SET name = name WHERE id = :cid;
