-- The SQL surface as installed, checked against the registry (src/api/surface.rs, listed by
-- optidb.surface()): each function with its argument names and defaults and its audience,
-- each table, view and materialized view with its reader rule, row-level security and what
-- pg_dump keeps, each enumerated column's values. A function, argument, default, grant or
-- comment that changes shows up as a diff here.
-- bottlenecks() is listed by signature only: its result columns are changing (issue 25).
SET client_min_messages = warning;

\pset format unaligned
-- Every function of the extension, its arguments as \df prints them, and what the registry
-- says of it (NULL: a function the registry does not know).
SELECT p.proname AS function,
       pg_catalog.pg_get_function_arguments(p.oid) AS arguments,
       s.access AS audience,
       p.prosecdef AS security_definer,
       p.provolatile AS volatility
FROM pg_catalog.pg_proc p
LEFT JOIN optidb.surface() s ON s.kind = 'function' AND s.name = p.oid::regprocedure::text
WHERE p.pronamespace = 'optidb'::regnamespace
ORDER BY p.proname, arguments;

-- Result columns, but for bottlenecks().
SELECT p.proname AS function, pg_catalog.pg_get_function_result(p.oid) AS result
FROM pg_catalog.pg_proc p
WHERE p.pronamespace = 'optidb'::regnamespace AND p.proname <> 'bottlenecks'
ORDER BY p.proname;

\pset format aligned
-- Registry entries with no object, objects with no registry entry: both empty.
SELECT s.kind, s.name FROM optidb.surface() s
WHERE (s.kind = 'function' AND pg_catalog.to_regprocedure(s.name) IS NULL)
   OR (s.kind IN ('table', 'view', 'materialized view') AND pg_catalog.to_regclass(s.name) IS NULL)
ORDER BY 1, 2;
SELECT c.relname, c.relkind FROM pg_catalog.pg_class c
WHERE c.relnamespace = 'optidb'::regnamespace AND c.relkind IN ('r', 'v', 'm')
  AND NOT EXISTS (SELECT FROM optidb.surface() s
                  WHERE s.kind IN ('table', 'view', 'materialized view')
                    AND s.name = 'optidb.' || c.relname)
ORDER BY 1;

-- Relations: kind, reader rule, RLS enabled and forced, dumped, policies.
SELECT s.name, s.kind, s.access, s.dumped,
       c.relrowsecurity AS rls, c.relforcerowsecurity AS forced,
       (SELECT pg_catalog.string_agg(pol.polname, ', ' ORDER BY pol.polname)
        FROM pg_catalog.pg_policy pol WHERE pol.polrelid = c.oid) AS policies
FROM optidb.surface() s
JOIN pg_catalog.pg_class c ON c.oid = pg_catalog.to_regclass(s.name)
WHERE s.kind IN ('table', 'view', 'materialized view')
ORDER BY s.kind, s.name;

-- The comments \df+ and \d+ show come from the registry (no row differs), and read:
SELECT s.kind, s.name
FROM optidb.surface() s
WHERE s.kind IN ('function', 'table')
  AND s.description IS DISTINCT FROM coalesce(pg_catalog.obj_description(
           CASE s.kind WHEN 'function' THEN pg_catalog.to_regprocedure(s.name)::oid
                       ELSE pg_catalog.to_regclass(s.name)::oid END,
           CASE s.kind WHEN 'function' THEN 'pg_proc' ELSE 'pg_class' END), '')
ORDER BY 1, 2;
\pset format unaligned
\pset tuples_only on
SELECT s.kind || ' ' || s.name || ': ' || s.description
FROM optidb.surface() s WHERE s.kind IN ('function', 'table')
ORDER BY s.kind, s.name;
\pset format aligned
\pset tuples_only off

-- Enumerated columns and their words (CHECK constraints must allow exactly these).
\pset format unaligned
SELECT s.name AS column_name, s.description AS vocabulary_values
FROM optidb.surface() s WHERE s.kind = 'enum' ORDER BY 1;
\pset format aligned

-- Roles optidb creates, and what PUBLIC may do: nothing.
SELECT rolname, rolcanlogin, rolsuper FROM pg_catalog.pg_roles
WHERE rolname IN ('optidb_reader', 'optidb_monitor', 'optidb_admin') ORDER BY 1;
SELECT pg_catalog.pg_has_role('optidb_admin', 'optidb_reader', 'MEMBER') AS admin_is_reader,
       pg_catalog.pg_has_role('optidb_admin', 'optidb_monitor', 'MEMBER') AS admin_is_monitor,
       pg_catalog.pg_has_role('optidb_monitor', 'optidb_reader', 'MEMBER') AS monitor_is_reader,
       pg_catalog.pg_has_role('optidb_admin', 'pg_read_all_stats', 'MEMBER') AS admin_reads_all_stats;
SELECT p.proname FROM pg_catalog.pg_proc p
WHERE p.pronamespace = 'optidb'::regnamespace
  AND pg_catalog.has_function_privilege('public', p.oid, 'EXECUTE')
ORDER BY 1;
SELECT c.relname FROM pg_catalog.pg_class c
WHERE c.relnamespace = 'optidb'::regnamespace AND c.relkind IN ('r', 'v', 'm')
  AND pg_catalog.has_table_privilege('public', c.oid, 'SELECT')
ORDER BY 1;
