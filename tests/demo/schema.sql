-- optidb demo shop: realistic sizes, a few missing indexes on purpose, one redundant and one
-- unused index, and a table whose statistics go stale. Deterministic (setseed).
SELECT setseed(0.42);

DROP TABLE IF EXISTS order_items, orders, products, customers, audit_log CASCADE;

CREATE TABLE customers (
    id         int PRIMARY KEY,
    email      text NOT NULL,
    name       text NOT NULL,
    country    text NOT NULL,
    created_at timestamptz NOT NULL
);
INSERT INTO customers
SELECT g, 'User' || g || '@Example.com', 'Customer ' || g,
       (ARRAY['US','DE','FR','GB','JP','BR','IN','CA','ES','IT'])[1 + (g % 10)],
       now() - (g % 1000) * interval '1 day'
FROM generate_series(1, 100000) g;

CREATE TABLE products (
    id       int PRIMARY KEY,
    name     text NOT NULL,
    category text NOT NULL,
    price    numeric(10,2) NOT NULL
);
INSERT INTO products
SELECT g, 'product ' || md5(g::text), 'cat' || (g % 50), round((random() * 500)::numeric, 2)
FROM generate_series(1, 20000) g;

-- No index on customer_id, status, created_at, store_id or channel: the slow patterns below
-- depend on it. store_id (200 values) and channel (20 values) are only selective together.
CREATE TABLE orders (
    id          bigint PRIMARY KEY,
    customer_id int NOT NULL,
    status      text NOT NULL,
    created_at  timestamptz NOT NULL,
    total       numeric(12,2) NOT NULL,
    store_id    int NOT NULL DEFAULT 1,
    channel     int NOT NULL DEFAULT 1
);
INSERT INTO orders (id, customer_id, status, created_at, total, store_id, channel)
SELECT g, 1 + (hashint4(g::int) & 2147483647) % 100000,
       CASE WHEN g % 100 < 80 THEN 'delivered' WHEN g % 100 < 95 THEN 'shipped'
            WHEN g % 100 < 99 THEN 'pending' ELSE 'cancelled' END,
       now() - (g % 100000) * interval '5 minutes',
       round((random() * 300)::numeric, 2),
       1 + (hashint4(g::int + 7) & 2147483647) % 200,
       1 + (hashint4(g::int + 13) & 2147483647) % 20
FROM generate_series(1, 1000000) g;

-- No index on order_id: joins and lookups by order scan the whole table.
CREATE TABLE order_items (
    order_id   bigint NOT NULL,
    product_id int NOT NULL,
    qty        int NOT NULL,
    price      numeric(10,2) NOT NULL
);
INSERT INTO order_items
SELECT 1 + (g / 2), 1 + (hashint4(g::int) & 2147483647) % 20000, 1 + g % 3, 9.99
FROM generate_series(1, 600000) g;

-- customers_country is a prefix of customers_country_created: redundant.
CREATE INDEX customers_country ON customers (country);
CREATE INDEX customers_country_created ON customers (country, created_at);
-- Never used by the workload.
CREATE INDEX products_price ON products (price);

-- Statistics go stale: analyzed while small, then filled without autovacuum/analyze.
CREATE TABLE audit_log (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    actor_id int NOT NULL,
    action   text NOT NULL,
    at       timestamptz NOT NULL DEFAULT now()
) WITH (autovacuum_enabled = false);
INSERT INTO audit_log (actor_id, action) SELECT g % 10, 'login' FROM generate_series(1, 100) g;
ANALYZE customers, products, orders, order_items, audit_log;
INSERT INTO audit_log (actor_id, action)
SELECT (hashint4(g) & 2147483647) % 50000, 'view' FROM generate_series(1, 300000) g;
