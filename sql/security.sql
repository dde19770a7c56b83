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
-- (src/api/visibility.rs); roles are cluster-wide: created once, they outlive DROP EXTENSION.

-- Resolve every name of the policies below in pg_catalog first (what pgspot checks for); the
-- end of this file restores the extension's own search_path for the generated definitions.
-- LOCAL: a plain SET in an extension script would outlive CREATE EXTENSION in the session.
SET LOCAL search_path TO pg_catalog, pg_temp;

-- Functions: EXECUTE only through the roles. Grants, row-level security (enabled and forced on
-- every meta table: admins read everything; readers by each table's rule), pg_dump registration
-- and comments all come from the registry in src/api/surface.rs; tests/e2e/test_surface.py fails on
-- any function, table or view it does not classify.
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA optidb FROM PUBLIC;
SELECT optidb.apply_surface(false);

SET LOCAL search_path TO optidb, pg_temp;

-- Statements after the script are tracked again as the session's settings say (see the top of
-- sql/bootstrap.sql).
SET LOCAL pg_stat_statements.track TO DEFAULT;
