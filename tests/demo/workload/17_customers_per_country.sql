-- weight: 1
SELECT country, count(*) FROM customers GROUP BY country;
