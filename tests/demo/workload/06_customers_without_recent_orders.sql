-- weight: 1
SELECT count(*) FROM customers WHERE country = 'JP' AND id NOT IN (SELECT customer_id FROM orders WHERE created_at > now() - interval '1 hour');
