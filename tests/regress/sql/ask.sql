-- Golden answers of optidb.ask() on fixed data: a changed, added or dropped sentence is a diff.
-- The rows below are inserted as the superuser into optidb's tables (what scan() and the worker
-- would store), with fixed ids and times, so every answer is deterministic. Each answer is
-- printed one sentence a line, then each fact it cites, re-read by running its source query.
SET client_min_messages = warning;
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';

-- The statements run in schema shop (tables named through the search_path).
INSERT INTO optidb.family (id, key, label, verb, tables, statements, updated_at) VALUES
    (1, 'select:shop.orders', 'SELECT shop.orders WHERE customer_id | status', 'select',
     '{shop.orders}', 2, '2026-01-05 11:00:00+00');
INSERT INTO optidb.query (id, fingerprint, userid, dbid, kind, norm_sql, tables, family_id,
                          role_name, first_seen, last_seen)
SELECT v.id, v.fingerprint, r.oid, d.oid, 'select', v.norm_sql, '{shop.orders}', v.family_id,
       r.rolname, '2026-01-05 09:00:00+00', '2026-01-05 11:00:00+00'
FROM (VALUES
        (1, 'fp-orders-by-customer', 'SELECT * FROM orders WHERE customer_id = $1', 1),
        (2, 'fp-orders-by-status', 'SELECT count(*) FROM orders WHERE status = $1', 1),
        (3, 'fp-customer-by-id', 'SELECT * FROM customers WHERE id = $1', NULL)
     ) AS v(id, fingerprint, norm_sql, family_id)
CROSS JOIN pg_catalog.pg_roles r CROSS JOIN pg_catalog.pg_database d
WHERE r.rolname = current_user AND d.datname = current_database();
UPDATE optidb.query SET tables = '{shop.customers}' WHERE id = 3;

INSERT INTO optidb.metric (query_id, captured_at, calls, total_ms, mean_ms, rows, shared_blks_hit,
                           shared_blks_read, temp_blks_read, temp_blks_written) VALUES
    (1, '2026-01-05 10:00:00+00', 100, 1200.5, 12.005, 100, 5000, 800, 0, 0),
    (1, '2026-01-05 11:00:00+00', 150, 1850.25, 12.335, 150, 7000, 1200, 0, 0),
    (2, '2026-01-05 11:00:00+00', 20, 400, 20, 20, 3000, 10, 0, 0),
    (3, '2026-01-05 11:00:00+00', 5000, 250, 0.05, 5000, 15000, 0, 0, 0);

-- Statement 1's own histogram: 95 executions near 12 ms, 5 near 40 ms.
INSERT INTO optidb.latency (query_id, captured_at, calls, errors, sum_us, min_us, max_us,
                            buckets, counts) VALUES
    (1, '2026-01-05 11:00:00+00', 100, 0, 1340000, 11500, 41000, '{475,536}', '{95,5}');

INSERT INTO optidb.plan (id, query_id, captured_at, plan_json, total_cost, had_seq_scan,
                         est_rows, facts, search_path, path_source, plan_kind, basis) VALUES
    (1, 1, '2026-01-05 11:00:00+00', '{"Plan": {"Node Type": "Seq Scan"}}', 1234.5, true, 12,
     '{"seq_scans": [{"relation": "shop.orders", "filter": "(customer_id = $1)"}]}',
     'shop, public', 'recorded', 'generic', true),
    -- An older capture and a plan advice does not rest on: neither is cited.
    (2, 1, '2026-01-04 11:00:00+00', '{"Plan": {"Node Type": "Seq Scan"}}', 999, true, 12,
     '{"seq_scans": []}', 'shop, public', 'recorded', 'generic', true),
    (3, 1, '2026-01-05 11:00:00+00', '{"Plan": {"Node Type": "Index Scan"}}', 8.3, false, 12,
     '{"seq_scans": []}', 'shop, public', 'recorded', 'typical', false);

INSERT INTO optidb.anomaly (id, query_id, kind, detected_at, evidence) VALUES
    (1, 1, 'latency_spike', '2026-01-05 11:05:00+00',
     '{"window": "2026-01-05 10:00:00+00", "latest_mean_ms": 12.335, "ratio": 3.1, "median_mean_ms": 3.979}'),
    (2, 2, 'plan_change', '2026-01-05 11:05:00+00',
     '{"before_captured_at": "2026-01-04 11:00:00+00", "after_captured_at": "2026-01-05 11:00:00+00",
       "before": "Index Scan on shop.orders", "after": "Seq Scan on shop.orders"}'),
    (3, 2, 'family_outlier', '2026-01-05 11:05:00+00',
     '{"family": "SELECT shop.orders WHERE customer_id | status", "mean_ms": 20, "family_median_ms": 12.335}');

INSERT INTO optidb.recommendation (id, rec_key, kind, schemaname, tablename, columns, ddl, index_sql,
                                   rationale, evidence, confidence, risk, query_ids, simulable,
                                   not_simulable_reason, status, improvement_pct, est_saved_ms,
                                   created_at, updated_at) VALUES
    (1, 'missing_index:shop.orders:customer_id', 'missing_index', 'shop', 'orders', '{customer_id}',
     'CREATE INDEX CONCURRENTLY ON shop.orders (customer_id);',
     'CREATE INDEX ON shop.orders (customer_id)',
     'sequential scan of shop.orders filtered on customer_id', '{}', 0.9, 'low', '{1}', true,
     NULL, 'open', 87.5, 2660.5, '2026-01-05 11:01:00+00', '2026-01-05 11:01:00+00'),
    (2, 'stats:shop.orders:status', 'stats', 'shop', 'orders', '{status}',
     'ANALYZE shop.orders;', NULL, 'estimates of shop.orders are off', '{}', 0.5, 'none', '{2}',
     false, 'statistics advice changes no index', 'open', NULL, NULL,
     '2026-01-05 11:01:00+00', '2026-01-05 11:01:00+00'),
    (3, 'missing_index:shop.orders:status', 'missing_index', 'shop', 'orders', '{status}',
     'CREATE INDEX CONCURRENTLY ON shop.orders (status);', 'CREATE INDEX ON shop.orders (status)',
     'rejected: the hypothetical index improved nothing', '{}', 0.7, 'low', '{2}', true, NULL,
     'rejected', 0, NULL, '2026-01-05 11:01:00+00', '2026-01-05 11:01:00+00');

INSERT INTO optidb.simulation (id, rec_id, query_id, mode, before_cost, after_cost, improvement_pct,
                               ran_at, plan_kind) VALUES
    (1, 1, 1, 'hypopg', 1234.5, 154.31, 87.5, '2026-01-05 11:02:00+00', 'generic');

INSERT INTO optidb.health_history (captured_at, item, value, status) VALUES
    ('2026-01-05 10:00:00+00', 'cache_hit_pct', 99.5, 'ok'),
    ('2026-01-05 10:00:00+00', 'dead_tuples', 100, 'ok'),
    ('2026-01-05 11:00:00+00', 'cache_hit_pct', 99.1, 'ok'),
    ('2026-01-05 11:00:00+00', 'connections', 12, 'ok'),
    ('2026-01-05 11:00:00+00', 'dead_tuples', 50000, 'warning'),
    ('2026-01-05 11:00:00+00', 'tables_overdue_vacuum', 2, 'warning');
INSERT INTO optidb.alert (rule_id, rule_name, metric, subject, severity, fired_at, resolved_at, value)
SELECT id, name, metric, '', severity, '2026-01-05 10:30:00+00', v.resolved_at::timestamptz, 2
FROM optidb.alert_rule, (VALUES (NULL), ('2026-01-05 10:45:00+00')) AS v(resolved_at)
WHERE name = 'vacuum_overdue';

-- One answer, a sentence a line (help text: a line a line): split after a full stop or a
-- semicolon (a DDL's end) followed by a word, not after "e.g.".
CREATE FUNCTION pg_temp.said(question text, id bigint DEFAULT NULL)
RETURNS TABLE (intent text, n bigint, sentence text) LANGUAGE sql AS $$
    SELECT a.intent, s.n, s.sentence
    FROM optidb.ask(question, id) a,
         pg_catalog.regexp_split_to_table(a.answer, E'\n|(?<=[^.][^.][.;]) (?=[A-Za-z])')
             WITH ORDINALITY AS s(sentence, n)
$$;
-- The facts it cites, and whether running each source returns the value cited.
CREATE FUNCTION pg_temp.cited(question text, id bigint DEFAULT NULL)
RETURNS TABLE (fact text, value text, source_agrees boolean) LANGUAGE plpgsql AS $$
DECLARE
    f jsonb;
    reread text;
BEGIN
    FOR f IN SELECT e FROM optidb.ask(question, id) a,
                           pg_catalog.jsonb_array_elements(a.facts) e LOOP
        EXECUTE f->>'source' INTO reread;
        fact := f->>'name';
        value := f->>'value';
        source_agrees := reread IS NOT DISTINCT FROM value;
        RETURN NEXT;
    END LOOP;
END
$$;

SELECT * FROM pg_temp.said('why is query 1 slow?') ORDER BY n;
SELECT * FROM pg_temp.cited('why is query 1 slow?');
SELECT * FROM pg_temp.said('Why is it slow?', 2) ORDER BY n;
SELECT * FROM pg_temp.said('why is statement #3 taking so long') ORDER BY n;
SELECT * FROM pg_temp.said('why is query 999 slow?') ORDER BY n;
SELECT * FROM pg_temp.said('why is it slow?') ORDER BY n;
SELECT * FROM pg_temp.said('what index should I add?') ORDER BY n;
SELECT * FROM pg_temp.cited('what index should I add?');
SELECT * FROM pg_temp.said('which index for query 2?') ORDER BY n;
SELECT * FROM pg_temp.said('show impact', 1) ORDER BY n;
SELECT * FROM pg_temp.said('what changed?') ORDER BY n;
SELECT * FROM pg_temp.said('what changed for statement 3?') ORDER BY n;
SELECT * FROM pg_temp.said('top bottlenecks') ORDER BY n;
SELECT * FROM pg_temp.cited('top bottlenecks');
SELECT * FROM pg_temp.said('is the database healthy?') ORDER BY n;
SELECT * FROM pg_temp.cited('is the database healthy?');
SELECT * FROM pg_temp.said('tell me a joke') ORDER BY n;
-- Every fact of every answer above is what its source returns.
SELECT count(*) AS facts, count(*) FILTER (WHERE NOT source_agrees) AS disagreeing
FROM (VALUES ('why is query 1 slow?', NULL), ('why is it slow?', 2), ('why is query 3 slow?', NULL),
             ('what index should I add?', NULL), ('which index for query 2?', NULL),
             ('show impact', 1), ('what changed?', NULL), ('what changed for statement 3?', NULL),
             ('top bottlenecks', NULL), ('is the database healthy?', NULL)) AS q(question, id),
     pg_temp.cited(q.question, q.id::bigint);
-- The statement the question names loses to the one passed.
SELECT * FROM pg_temp.said('why is query 1 slow?', 3) ORDER BY n;

-- The same call through a schema of the application, reached by search_path (ask() pins its
-- own search_path: the shadowing function below is never called).
CREATE SCHEMA shop;
CREATE FUNCTION shop.round(numeric, integer) RETURNS numeric LANGUAGE sql AS 'SELECT 0::numeric';
SELECT answer AS top_answer FROM optidb.ask('top bottlenecks') \gset
SET search_path = shop, optidb;
SELECT answer = :'top_answer' AS same_answer FROM ask('top bottlenecks');
RESET search_path;
DROP SCHEMA shop CASCADE;

-- Leave the database as CREATE EXTENSION made it.
DELETE FROM optidb.alert;
DELETE FROM optidb.health_history;
DELETE FROM optidb.recommendation;
DELETE FROM optidb.query;
DELETE FROM optidb.family;
SELECT (SELECT count(*) FROM optidb.metric) + (SELECT count(*) FROM optidb.plan)
     + (SELECT count(*) FROM optidb.anomaly) + (SELECT count(*) FROM optidb.simulation) AS rows_left;
