-- weight: 5
\set cid random(1, 100000)
\set oid random(2000000, 900000000)
INSERT INTO orders (id, customer_id, status, created_at, total) VALUES (:oid, :cid, 'pending', now(), 42.00) ON CONFLICT (id) DO NOTHING;
