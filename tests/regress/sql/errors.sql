-- Bad arguments of the public functions: each a clear PostgreSQL error with its SQLSTATE and
-- a hint, never a crash (a Rust panic would show as XX000). pg_temp.fails() runs a statement
-- and returns what it raised: psql's VERBOSITY verbose would print the SQLSTATE too, but also
-- a LOCATION with a Rust line number that moves with every edit of the source.
SET client_min_messages = warning;
SET TimeZone = 'UTC';
CREATE FUNCTION pg_temp.fails(statement text)
RETURNS TABLE (sqlstate text, message text, hint text) LANGUAGE plpgsql AS $$
DECLARE
    state text;
    msg text;
    h text;
BEGIN
    EXECUTE statement;
    RETURN QUERY SELECT 'none'::text, 'no error'::text, NULL::text;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, h = PG_EXCEPTION_HINT;
    RETURN QUERY SELECT state, msg, NULLIF(h, '');
END
$$;
-- One statement with history, so that functions reach their checks past an empty table.
INSERT INTO optidb.query (id, fingerprint, userid, dbid, kind, role_name)
SELECT 1, 'fp-errors', r.oid, d.oid, 'select', r.rolname
FROM pg_catalog.pg_roles r, pg_catalog.pg_database d
WHERE r.rolname = current_user AND d.datname = current_database();
INSERT INTO optidb.metric VALUES (1, '2026-01-05 11:00:00+00', 1, 1, 1, 1, 0, 0, 0, 0);
INSERT INTO optidb.latency (query_id, captured_at, calls, errors, sum_us, buckets, counts)
VALUES (1, '2026-01-05 11:00:00+00', 1, 0, 1000, '{349}', '{1}');
\x on

-- Counts must be positive.
SELECT * FROM pg_temp.fails($$SELECT * FROM optidb.bottlenecks(0)$$);
SELECT * FROM pg_temp.fails($$SELECT * FROM optidb.bottlenecks(-5)$$);
SELECT * FROM pg_temp.fails($$SELECT * FROM optidb.scan(0)$$);
SELECT * FROM pg_temp.fails($$SELECT * FROM optidb.snapshot(-1)$$);
SELECT * FROM pg_temp.fails($$SELECT optidb.metrics(0)$$);
SELECT * FROM pg_temp.fails($$SELECT optidb.report(0)$$);
SELECT * FROM pg_temp.fails($$SELECT optidb.report(7, -1)$$);

-- Unknown names.
SELECT * FROM pg_temp.fails($$SELECT * FROM optidb.refresh('no_such_view')$$);
SELECT * FROM pg_temp.fails($$SELECT * FROM optidb.refresh('optidb.query')$$);
SELECT * FROM pg_temp.fails($$SELECT * FROM optidb.latency_rollup('week')$$);
SELECT * FROM pg_temp.fails($$SELECT * FROM optidb.query_metrics_by('minute')$$);
SELECT * FROM pg_temp.fails($$SELECT * FROM optidb.simulate(1, 1, 'imaginary')$$);

-- Unknown ids.
SELECT * FROM pg_temp.fails($$SELECT optidb.query(424242)$$);
SELECT * FROM pg_temp.fails($$SELECT * FROM optidb.recommend(424242)$$);
SELECT * FROM pg_temp.fails($$SELECT * FROM optidb.execution_time_stats(424242)$$);
SELECT * FROM pg_temp.fails($$SELECT * FROM optidb.simulate(424242, 424242)$$);

-- Ranges and NULLs.
SELECT * FROM pg_temp.fails($$SELECT * FROM optidb.execution_time_stats(NULL, '2026-01-02', '2026-01-01')$$);
SELECT * FROM pg_temp.fails($$SELECT * FROM optidb.ask(NULL)$$);
SELECT * FROM pg_temp.fails($$SELECT * FROM optidb.simulate(NULL, 1)$$);
SELECT * FROM pg_temp.fails($$SELECT optidb.query(NULL)$$);
SELECT * FROM pg_temp.fails($$SELECT * FROM optidb.bottlenecks(NULL)$$);

DELETE FROM optidb.query;

-- The same through psql, as a user sees it (message and hint; the SQLSTATE is above).
\x off
SELECT * FROM optidb.bottlenecks(0);
SELECT * FROM optidb.ask(NULL);
-- A failed call leaves the session usable.
SELECT 1 AS still_usable;
