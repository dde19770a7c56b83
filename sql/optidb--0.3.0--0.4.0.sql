-- optidb 0.3.0 -> 0.4.0, hand-written. tests/e2e/test_upgrade.py checks that an install
-- upgraded with it has exactly the schema of a fresh 0.4.0 install and keeps its data.
--
-- 0.4.0: optidb_admin reads the meta tables but no longer writes them. What they hold (statement
-- texts and their roles, search_paths, index DDL) is replayed as other roles, so an admin who
-- could rewrite it could run any SQL as any statement's owner or table's owner. The functions
-- that write are SECURITY DEFINER instead (search_path pinned), admitted by EXECUTE.

-- Resolve every name below in pg_catalog first (what pgspot checks for).
SET LOCAL search_path TO pg_catalog, pg_temp;

REVOKE INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA optidb FROM optidb_admin;
REVOKE USAGE ON ALL SEQUENCES IN SCHEMA optidb FROM optidb_admin;

DO $policies$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['query', 'metric', 'plan', 'latency', 'simulation', 'recommendation',
                             'schema_table', 'schema_index', 'schema_column', 'scan_log',
                             'refresh_log', 'pgss_state', 'latency_state', 'sample',
                             'job_lock'] LOOP
        EXECUTE pg_catalog.format('DROP POLICY admin_all ON optidb.%I', t);
        EXECUTE pg_catalog.format(
            'CREATE POLICY admin_reads_all ON optidb.%I FOR SELECT TO optidb_admin USING (true)', t);
    END LOOP;
END
$policies$;

ALTER FUNCTION optidb.scan(integer) SECURITY DEFINER;
ALTER FUNCTION optidb.snapshot(integer) SECURITY DEFINER;
ALTER FUNCTION optidb.prune() SECURITY DEFINER;
ALTER FUNCTION optidb.simulate(bigint, bigint, text) SECURITY DEFINER;

SET LOCAL search_path TO optidb, pg_temp;
