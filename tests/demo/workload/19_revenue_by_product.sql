-- weight: 1
SELECT oi.product_id, sum(oi.qty * oi.price) FROM order_items oi JOIN orders o ON o.id = oi.order_id WHERE o.created_at > now() - interval '1 day' GROUP BY oi.product_id ORDER BY 2 DESC LIMIT 5;
