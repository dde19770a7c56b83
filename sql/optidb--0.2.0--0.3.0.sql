-- optidb 0.2.0 -> 0.3.0, hand-written. tests/e2e/test_upgrade.py checks that an install
-- upgraded with it has exactly the schema of a fresh 0.3.0 install (sql/bootstrap.sql plus the
-- generated functions, sql/views.sql and sql/security.sql) and keeps its data.
--
-- 0.3.0: statements are replayed as their owners, with their own search_path (src/replay.rs).

-- Resolve every name below in pg_catalog first (what pgspot checks for).
SET LOCAL search_path TO pg_catalog, pg_temp;

-- The context each plan was captured in.
ALTER TABLE optidb.plan
    ADD COLUMN search_path text,
    ADD COLUMN path_source text CHECK (path_source IN ('recorded', 'role_database_setting',
        'role_setting', 'database_setting', 'server_default', 'inferred'));

-- scan() and simulate() no longer resolve names through the caller's search_path.
ALTER FUNCTION optidb.scan(integer) SET search_path TO pg_catalog, pg_temp;
ALTER FUNCTION optidb.simulate(bigint, bigint, text) SET search_path TO pg_catalog, pg_temp;
