-- weight: 4
SELECT count(*) FROM orders WHERE status = 'pending' AND created_at > now() - interval '2 days';
