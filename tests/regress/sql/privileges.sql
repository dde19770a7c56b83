-- What each role may call and see: a plain role with no optidb grant, optidb_reader members
-- (each sees its own statements only), an optidb_admin member that is not a superuser. The
-- roles and rows are made here and dropped at the end. Errors come back through
-- pg_temp.fails() with their SQLSTATE (see errors.sql for why not VERBOSITY verbose).
SET client_min_messages = warning;
SET TimeZone = 'UTC';
-- Facts print as the session prints them: one test in PostgreSQL's own DateStyle.
SET DateStyle = 'Postgres, MDY';
CREATE ROLE golden_plain;
CREATE ROLE golden_reader IN ROLE optidb_reader;
CREATE ROLE golden_other IN ROLE optidb_reader;
CREATE ROLE golden_admin IN ROLE optidb_admin;
CREATE FUNCTION pg_temp.fails(statement text)
RETURNS TABLE (sqlstate text, message text) LANGUAGE plpgsql AS $$
DECLARE
    state text;
    msg text;
BEGIN
    EXECUTE statement;
    RETURN QUERY SELECT 'none'::text, 'no error'::text;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
    RETURN QUERY SELECT state, msg;
END
$$;

-- Fixed rows: one statement of golden_reader, one of golden_other, in one family, each with
-- history and advice; advice serving both is visible to admins only.
INSERT INTO optidb.family (id, key, label, verb, tables, statements, updated_at) VALUES
    (11, 'select:app.items', 'SELECT app.items', 'select', '{app.items}', 2, '2026-01-05 11:00:00+00'),
    (12, 'select:app.secrets', 'SELECT app.secrets', 'select', '{app.secrets}', 1, '2026-01-05 11:00:00+00');
INSERT INTO optidb.query (id, fingerprint, userid, dbid, kind, norm_sql, tables, family_id, role_name)
SELECT v.id, v.fingerprint, r.oid, d.oid, 'select', v.norm_sql, v.tables, v.family_id, r.rolname
FROM (VALUES
        (11, 'fp-items', 'golden_reader', 'SELECT * FROM items WHERE sku = $1', '{app.items}'::text[], 11),
        (12, 'fp-items-other', 'golden_other', 'SELECT * FROM items WHERE name = $1', '{app.items}', 11),
        (13, 'fp-secrets', 'golden_other', 'SELECT * FROM secrets WHERE owner = $1', '{app.secrets}', 12)
     ) AS v(id, fingerprint, role, norm_sql, tables, family_id)
JOIN pg_catalog.pg_roles r ON r.rolname = v.role
CROSS JOIN pg_catalog.pg_database d WHERE d.datname = current_database();
INSERT INTO optidb.metric (query_id, captured_at, calls, total_ms, mean_ms, rows, shared_blks_hit,
                           shared_blks_read, temp_blks_read, temp_blks_written) VALUES
    (11, '2026-01-05 11:00:00+00', 10, 50, 5, 10, 100, 0, 0, 0),
    (12, '2026-01-05 11:00:00+00', 30, 300, 10, 30, 300, 0, 0, 0),
    (13, '2026-01-05 11:00:00+00', 5, 900, 180, 5, 50, 20, 0, 0);
INSERT INTO optidb.recommendation (id, rec_key, kind, schemaname, tablename, columns, ddl,
                                   rationale, evidence, confidence, risk, query_ids, simulable,
                                   not_simulable_reason) VALUES
    (11, 'golden:items', 'stats', 'app', 'items', '{sku}', 'ANALYZE app.items;', 'stale estimates',
     '{}', 0.6, 'none', '{11,12}', false, 'statistics advice changes no index'),
    (12, 'golden:secrets', 'stats', 'app', 'secrets', '{owner}', 'ANALYZE app.secrets;',
     'stale estimates', '{}', 0.6, 'none', '{13}', false, 'statistics advice changes no index'),
    (13, 'golden:items-sku', 'stats', 'app', 'items', '{sku}', 'ANALYZE app.items (sku);',
     'stale estimates', '{}', 0.5, 'none', '{11}', false, 'statistics advice changes no index');
INSERT INTO optidb.health_history (captured_at, item, value, status) VALUES
    ('2026-01-05 11:00:00+00', 'connections', 3, 'ok');

-- Functions each role may call (the registry's audiences: reader, admin; internal: nobody).
\pset format unaligned
SELECT r.rolname AS role,
       pg_catalog.string_agg(p.proname, ' ' ORDER BY p.proname)
           FILTER (WHERE pg_catalog.has_function_privilege(r.oid, p.oid, 'EXECUTE')) AS may_call
FROM pg_catalog.pg_roles r CROSS JOIN pg_catalog.pg_proc p
WHERE r.rolname IN ('golden_plain', 'golden_reader', 'golden_admin')
  AND p.pronamespace = 'optidb'::regnamespace
GROUP BY r.rolname ORDER BY r.rolname;
-- Relations each role may read, and write.
SELECT r.rolname AS role,
       pg_catalog.string_agg(c.relname, ' ' ORDER BY c.relname)
           FILTER (WHERE pg_catalog.has_table_privilege(r.oid, c.oid, 'SELECT')) AS may_read,
       pg_catalog.string_agg(c.relname, ' ' ORDER BY c.relname)
           FILTER (WHERE pg_catalog.has_table_privilege(r.oid, c.oid, 'INSERT, UPDATE, DELETE')) AS may_write
FROM pg_catalog.pg_roles r CROSS JOIN pg_catalog.pg_class c
WHERE r.rolname IN ('golden_plain', 'golden_reader', 'golden_admin')
  AND c.relnamespace = 'optidb'::regnamespace AND c.relkind IN ('r', 'v', 'm')
GROUP BY r.rolname ORDER BY r.rolname;
\pset format aligned

-- A role with no optidb grant: nothing, not even the schema.
SET ROLE golden_plain;
SELECT * FROM pg_temp.fails($$SELECT count(*) FROM optidb.bottlenecks()$$);
SELECT * FROM pg_temp.fails($$SELECT * FROM optidb.ask('top bottlenecks')$$);
SELECT * FROM pg_temp.fails($$SELECT count(*) FROM optidb.query$$);
RESET ROLE;

-- A reader, its tables reached through search_path: its own statement only, in every table,
-- in bottlenecks() and in ask(); no admin function, no health, no writes.
SET ROLE golden_reader;
SET search_path = app, optidb, public;
SELECT id, role_name FROM query ORDER BY id;
SELECT query_id, calls FROM metric ORDER BY query_id;
SELECT id, query_ids FROM recommendation ORDER BY id;
SELECT id, label FROM family ORDER BY id;
SELECT count(*) AS bottlenecks_seen FROM bottlenecks();
SELECT rec_id FROM recommend() ORDER BY rec_id;
SELECT answer FROM ask('top bottlenecks');
SELECT answer FROM ask('why is query 12 slow?');
SELECT answer FROM ask('is the database healthy?');
SELECT optidb.can_see(r.oid) AS sees_other FROM pg_catalog.pg_roles r WHERE r.rolname = 'golden_other';
SELECT count(*) AS query_metrics_rows FROM query_metrics;
RESET search_path;
SELECT * FROM pg_temp.fails($$SELECT * FROM optidb.scan()$$);
SELECT * FROM pg_temp.fails($$SELECT * FROM optidb.simulate(11, 11, 'real')$$);
SELECT * FROM pg_temp.fails($$SELECT * FROM optidb.health()$$);
SELECT * FROM pg_temp.fails($$SELECT count(*) FROM optidb.health_history$$);
SELECT * FROM pg_temp.fails($$SELECT count(*) FROM optidb.mv_query_metrics$$);
SELECT * FROM pg_temp.fails($$SELECT optidb.query(12)$$);
SELECT * FROM pg_temp.fails($$SELECT * FROM optidb.execution_time_stats(13)$$);
SELECT * FROM pg_temp.fails($$DELETE FROM optidb.query$$);
SELECT * FROM pg_temp.fails($$UPDATE optidb.recommendation SET status = 'stale'$$);
RESET ROLE;

-- An admin that is not a superuser: every statement and health; edits alert rules only;
-- no materialized view directly, no install-only function, no writes to history.
SET ROLE golden_admin;
SELECT id, role_name FROM optidb.query ORDER BY id;
SELECT count(*) AS bottlenecks_seen FROM optidb.bottlenecks();
SELECT answer FROM optidb.ask('top bottlenecks');
SELECT answer FROM optidb.ask('is the database healthy?');
INSERT INTO optidb.alert_rule (name, metric, comparison, threshold, severity)
VALUES ('golden_rule', 'connections', '>', 40, 'info') RETURNING name, builtin;
DELETE FROM optidb.alert_rule WHERE name = 'golden_rule' RETURNING name;
SELECT * FROM pg_temp.fails($$SELECT * FROM optidb.refresh('no_such_view')$$);
SELECT * FROM pg_temp.fails($$SELECT optidb.apply_surface(false)$$);
SELECT * FROM pg_temp.fails($$SELECT count(*) FROM optidb.mv_query_metrics$$);
SELECT * FROM pg_temp.fails($$DELETE FROM optidb.metric$$);
SELECT * FROM pg_temp.fails($$UPDATE optidb.query SET role_name = 'golden_admin'$$);
RESET ROLE;

-- Clean up: the rows, then the roles.
DELETE FROM optidb.health_history;
DELETE FROM optidb.recommendation;
DELETE FROM optidb.query;
DELETE FROM optidb.family;
DROP ROLE golden_plain, golden_reader, golden_other, golden_admin;
