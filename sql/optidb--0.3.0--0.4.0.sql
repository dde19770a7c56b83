SET LOCAL pg_stat_statements.track = none;
-- optidb 0.3.0 -> 0.4.0, hand-written. tests/e2e/test_upgrade.py checks that an install
-- upgraded with it has exactly the schema of a fresh 0.4.0 install and keeps its data.
--
-- 0.4.0: optidb_admin reads the meta tables but no longer writes them. What they hold (statement
-- texts and their roles, search_paths, index DDL) is replayed as other roles, so an admin who
-- could rewrite it could run any SQL as any statement's owner or table's owner. The functions
-- that write are SECURITY DEFINER instead (search_path pinned), admitted by EXECUTE. Grants,
-- policies, dump registration and comments now come from one registry (src/surface.rs),
-- applied by optidb.apply_surface().

-- The first line: none of this script reaches pg_stat_statements, whatever its track setting
-- (why and how: the top of sql/bootstrap.sql); set back at the end. First, so that it is the
-- same text in every upgrade script: an upgrade through several leaves one entry of it.

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
    END LOOP;
END
$policies$;

ALTER FUNCTION optidb.scan(integer) SECURITY DEFINER;
ALTER FUNCTION optidb.snapshot(integer) SECURITY DEFINER;
ALTER FUNCTION optidb.prune() SECURITY DEFINER;
ALTER FUNCTION optidb.simulate(bigint, bigint, text) SECURITY DEFINER;

CREATE FUNCTION optidb.surface() RETURNS TABLE (
    "kind" TEXT,
    "name" TEXT,
    "access" TEXT,
    "dumped" bool,
    "description" TEXT
)
STRICT STABLE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'surface_wrapper';

CREATE FUNCTION optidb.apply_surface("missing_ok" bool) RETURNS void
STRICT VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'apply_surface_wrapper';

REVOKE EXECUTE ON FUNCTION optidb.surface(), optidb.apply_surface(boolean) FROM PUBLIC;
-- missing_ok: a newer library may list objects a later upgrade script creates.
SELECT optidb.apply_surface(true);

SET LOCAL search_path TO optidb, pg_temp;

-- Statements after the script are tracked again as the session's settings say (see the top).
SET LOCAL pg_stat_statements.track TO DEFAULT;
