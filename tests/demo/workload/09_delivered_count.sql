-- weight: 2
SELECT count(*) FROM orders WHERE status = 'delivered';
