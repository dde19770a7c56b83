-- weight: 1
SELECT c.id, (SELECT max(o.created_at) FROM orders o WHERE o.customer_id = c.id) AS last_order FROM customers c WHERE c.country = 'FR' ORDER BY c.id LIMIT 3;
