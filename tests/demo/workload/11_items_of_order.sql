-- weight: 8
\set oid random(1, 300000)
SELECT product_id, qty, price FROM order_items WHERE order_id = :oid;
