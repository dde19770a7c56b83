-- optidb (since 0.2.0): roles, row-level security and grants. Runs last in the install script (after
-- every table, view and function exists). Every name is schema-qualified.
--
--   optidb_reader  sees the statements of roles it is a member of (and their metrics, plans,
--                  latency, recommendations, simulations), catalog facts and logs.
--   optidb_admin   sees everything, runs scan/snapshot/refresh/prune/simulate (real mode too).
--                  It is a member of optidb_reader and of pg_read_all_stats. It reads the meta
--                  tables but cannot write them: what scan() stores (statement texts, their
--                  roles, search_paths, index DDL) is replayed as other roles, so only optidb's
--                  own functions write it. Those that write are SECURITY DEFINER (owned by the
--                  superuser who created the extension, search_path pinned) and EXECUTE on them
--                  is what admits a caller.
--   pg_read_all_stats members see every statement, as in pg_stat_statements.
-- The roles are created by sql/bootstrap.sql and the rule is optidb.can_see()
-- (src/visibility.rs); roles are cluster-wide: created once, they outlive DROP EXTENSION.

-- Resolve every name of the policies below in pg_catalog first (what pgspot checks for); the
-- end of this file restores the extension's own search_path for the generated definitions.
-- LOCAL: a plain SET in an extension script would outlive CREATE EXTENSION in the session.
SET LOCAL search_path TO pg_catalog, pg_temp;

-- RLS on every meta table, FORCED so the owner is filtered too unless it is a superuser, and
-- admins read everything. The array is every table of the schema: a table missing
-- from it has no RLS, which the test suite checks for.
DO $rls$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['query', 'metric', 'plan', 'latency', 'simulation', 'recommendation',
                             'schema_table', 'schema_index', 'schema_column', 'scan_log',
                             'refresh_log', 'pgss_state', 'latency_state', 'sample',
                             'job_lock'] LOOP
        EXECUTE pg_catalog.format('ALTER TABLE optidb.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE pg_catalog.format('ALTER TABLE optidb.%I FORCE ROW LEVEL SECURITY', t);
        EXECUTE pg_catalog.format(
            'CREATE POLICY admin_reads_all ON optidb.%I FOR SELECT TO optidb_admin USING (true)', t);
    END LOOP;
END
$rls$;

-- Statement data: readers see rows of statements they can see (the query table's own policy
-- does the filtering inside each EXISTS).
CREATE POLICY reader_own ON optidb.query FOR SELECT TO optidb_reader
    USING (optidb.can_see(userid));
CREATE POLICY reader_own ON optidb.metric FOR SELECT TO optidb_reader
    USING (EXISTS (SELECT FROM optidb.query q WHERE q.id = query_id));
CREATE POLICY reader_own ON optidb.plan FOR SELECT TO optidb_reader
    USING (EXISTS (SELECT FROM optidb.query q WHERE q.id = query_id));
CREATE POLICY reader_own ON optidb.latency FOR SELECT TO optidb_reader
    USING (EXISTS (SELECT FROM optidb.query q WHERE q.id = query_id));
CREATE POLICY reader_own ON optidb.simulation FOR SELECT TO optidb_reader
    USING (EXISTS (SELECT FROM optidb.query q WHERE q.id = query_id));
CREATE POLICY reader_own ON optidb.sample FOR SELECT TO optidb_reader
    USING (EXISTS (SELECT FROM optidb.query q WHERE q.id = query_id));
-- Advice is visible when every statement it serves is (its rationale and evidence come from
-- them): advice that serves statements of several roles is for those who may see them all.
-- Advice about an index no statement names (redundant, unused) is schema-level: readers see it.
CREATE POLICY reader_own ON optidb.recommendation FOR SELECT TO optidb_reader
    USING (NOT EXISTS (SELECT FROM pg_catalog.unnest(query_ids) AS served(id)
                       WHERE NOT EXISTS (SELECT FROM optidb.query q WHERE q.id = served.id)));

-- Catalog facts and run logs hold no statement text: every reader sees them. The counter
-- baselines (pgss_state, latency_state) stay admin-only.
CREATE POLICY reader_all ON optidb.schema_table FOR SELECT TO optidb_reader USING (true);
CREATE POLICY reader_all ON optidb.schema_index FOR SELECT TO optidb_reader USING (true);
-- Column statistics only of columns the reader may read, as pg_stats shows them.
CREATE POLICY reader_readable ON optidb.schema_column FOR SELECT TO optidb_reader
    USING (pg_catalog.has_column_privilege(relid, attname::text, 'SELECT'));
CREATE POLICY reader_all ON optidb.scan_log FOR SELECT TO optidb_reader USING (true);
CREATE POLICY reader_all ON optidb.refresh_log FOR SELECT TO optidb_reader USING (true);

-- Grants. Nothing is granted to PUBLIC (the bootstrap revoked table access; functions below).
GRANT USAGE ON SCHEMA optidb TO optidb_reader;
GRANT SELECT ON optidb.query, optidb.metric, optidb.plan, optidb.latency, optidb.simulation,
    optidb.recommendation, optidb.schema_table, optidb.schema_index, optidb.schema_column,
    optidb.scan_log, optidb.refresh_log, optidb.sample TO optidb_reader;
-- Read-only for admins too: optidb_admin must not become the roles whose statements optidb
-- replays by rewriting what it replays.
GRANT SELECT ON ALL TABLES IN SCHEMA optidb TO optidb_admin;
-- Materialized views are not RLS-capable: only the security-barrier views reach them.
REVOKE ALL ON optidb.mv_query_metrics, optidb.mv_query_metrics_hourly,
    optidb.mv_query_metrics_daily, optidb.mv_table_metrics FROM PUBLIC, optidb_reader, optidb_admin;
GRANT SELECT ON optidb.query_metrics, optidb.query_metrics_hourly, optidb.query_metrics_daily,
    optidb.table_metrics TO optidb_reader;

-- Functions: EXECUTE only through the roles.
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA optidb FROM PUBLIC;
GRANT EXECUTE ON FUNCTION optidb.can_see(oid) TO optidb_reader;
COMMENT ON FUNCTION optidb.can_see(oid) IS
    'True when the current user may see statements of role owner (member of it, of optidb_admin or of pg_read_all_stats)';
GRANT EXECUTE ON FUNCTION optidb.bottlenecks(integer) TO optidb_reader;
GRANT EXECUTE ON FUNCTION optidb.query(bigint) TO optidb_reader;
GRANT EXECUTE ON FUNCTION optidb.recommend(bigint) TO optidb_reader;
GRANT EXECUTE ON FUNCTION optidb.execution_time_stats(bigint, timestamptz, timestamptz) TO optidb_reader;
GRANT EXECUTE ON FUNCTION optidb.scan(integer) TO optidb_admin;
GRANT EXECUTE ON FUNCTION optidb.snapshot(integer) TO optidb_admin;
GRANT EXECUTE ON FUNCTION optidb.prune() TO optidb_admin;
GRANT EXECUTE ON FUNCTION optidb.refresh(text) TO optidb_admin;
GRANT EXECUTE ON FUNCTION optidb.simulate(bigint, bigint, text) TO optidb_admin;
GRANT EXECUTE ON FUNCTION optidb.latency_counters() TO optidb_admin;
GRANT EXECUTE ON FUNCTION optidb.memory() TO optidb_admin;
GRANT EXECUTE ON FUNCTION optidb.latency_rollup(text) TO optidb_admin;
GRANT EXECUTE ON FUNCTION optidb.query_metrics_by(text) TO optidb_admin;

SET LOCAL search_path TO optidb, pg_temp;
