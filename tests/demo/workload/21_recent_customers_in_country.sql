-- weight: 3
SELECT id, email FROM customers WHERE country = 'DE' AND created_at > now() - interval '30 days' ORDER BY created_at DESC LIMIT 20;
