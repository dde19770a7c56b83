-- weight: 2
SELECT count(*) FROM customers WHERE created_at > now() - interval '7 days';
