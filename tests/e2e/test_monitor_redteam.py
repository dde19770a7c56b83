"""Red-team round against optidb_monitor (0.7.0): a role that is only a member of
optidb_monitor (and of pg_monitor, as docs/monitoring.md tells sites to grant) must see nothing
but aggregate figures and 60-character snippets of normalized texts, and nothing of another
role may run as it.

Both tests are attacks that succeed on the code they were written against (c84269c), so they
fail there:
- mallory (CREATE on the database, the threat model's usual attacker) creates the schema named
  like the exporter's role, which `"$user"` puts first in its default search_path, with an
  operator `/(float8, integer)`: the exporter's query file docs/monitoring/postgres_exporter_
  queries.yaml writes `total_ms / 1000` unqualified, so PostgreSQL picks her exact-match
  operator over pg_catalog's float8 / float8 and her function runs as the exporter (a
  pg_read_all_stats member: every statement text with its literals; as a superuser exporter,
  the server).
- literals of utility statements (COMMENT, ALTER ROLE ... SET, COPY ... TO PROGRAM) survive
  normalization and reach monitor_statements and metrics(), hence Prometheus labels."""

import os
import re

from conftest import ROOT, connect, new_database, scalar

QUERIES = os.path.join(ROOT, "docs", "monitoring", "postgres_exporter_queries.yaml")


def exporter_queries():
    """The `query: |` blocks of the exporter's query file, by metric name (a block ends at the
    first line indented no deeper than its `query:` key)."""
    queries, name, block, indent = {}, None, None, 0
    with open(QUERIES) as f:
        for line in f:
            top = re.match(r"^([a-z_]+):\s*$", line)
            if top:
                name = top.group(1)
            if block is not None:
                if line.strip() and len(line) - len(line.lstrip()) <= indent:
                    queries[name_of_block] = "".join(block)
                    block = None
                else:
                    block.append(line)
                    continue
            q = re.match(r"^(\s*)query:\s*\|\s*$", line)
            if q:
                block, indent, name_of_block = [], len(q.group(1)), name
    if block is not None:
        queries[name_of_block] = "".join(block)
    return queries


# Operators PostgreSQL would prefer to pg_catalog's for a division of a float8 or numeric
# column by an integer or numeric literal (no exact match in pg_catalog, so an exact one
# anywhere in the path wins): each logs the role it ran as.
PLANT = """
CREATE TABLE {s}.loot (who name, via text);
GRANT SELECT, INSERT ON {s}.loot TO PUBLIC;
CREATE FUNCTION {s}.spy(via text) RETURNS void LANGUAGE sql
    AS $f$ INSERT INTO {s}.loot VALUES (current_user, via) $f$;
CREATE FUNCTION {s}.d_fi(float8, int4) RETURNS float8 LANGUAGE sql
    AS $f$ SELECT {s}.spy('float8/int4'); SELECT $1 OPERATOR(pg_catalog./) $2::float8 $f$;
CREATE FUNCTION {s}.d_fn(float8, numeric) RETURNS float8 LANGUAGE sql
    AS $f$ SELECT {s}.spy('float8/numeric'); SELECT $1 OPERATOR(pg_catalog./) $2::float8 $f$;
CREATE FUNCTION {s}.d_fl(float8, int8) RETURNS float8 LANGUAGE sql
    AS $f$ SELECT {s}.spy('float8/int8'); SELECT $1 OPERATOR(pg_catalog./) $2::float8 $f$;
CREATE FUNCTION {s}.d_ni(numeric, int4) RETURNS numeric LANGUAGE sql
    AS $f$ SELECT {s}.spy('numeric/int4'); SELECT $1 OPERATOR(pg_catalog./) $2::numeric $f$;
CREATE OPERATOR {s}./ (LEFTARG = float8, RIGHTARG = int4, FUNCTION = {s}.d_fi);
CREATE OPERATOR {s}./ (LEFTARG = float8, RIGHTARG = numeric, FUNCTION = {s}.d_fn);
CREATE OPERATOR {s}./ (LEFTARG = float8, RIGHTARG = int8, FUNCTION = {s}.d_fl);
CREATE OPERATOR {s}./ (LEFTARG = numeric, RIGHTARG = int4, FUNCTION = {s}.d_ni);
"""


def test_the_exporters_queries_run_no_operator_of_a_role_that_owns_its_user_schema():
    exporter, mallory = "rt_exporter", "rt_mallory"
    queries = exporter_queries()
    assert set(queries) == {"optidb_health", "optidb_alerts", "optidb_statement"}, queries
    with new_database() as db:
        with connect(db) as su:
            for role in (exporter, mallory):
                su.execute(f"DROP ROLE IF EXISTS {role}")
            su.execute(f"CREATE ROLE {exporter} LOGIN IN ROLE optidb_monitor, pg_monitor")
            su.execute(f"CREATE ROLE {mallory} LOGIN")
            su.execute(f'GRANT CREATE ON DATABASE "{db}" TO {mallory}')
            su.execute("CREATE TABLE t (id int, v text)")
            su.execute("INSERT INTO t SELECT g, 'x' || g FROM generate_series(1, 100) g")
            for _ in range(3):
                su.execute("SELECT count(*) FROM t WHERE v = 'x7'")
            su.execute("SELECT optidb.snapshot()")
            su.execute("SELECT optidb.refresh()")
        try:
            with connect(db, user=mallory) as m:
                # The schema "$user" finds first in the exporter's default search_path.
                m.execute(f"CREATE SCHEMA {exporter}")
                m.execute(f"GRANT USAGE ON SCHEMA {exporter} TO PUBLIC")
                m.execute(PLANT.format(s=exporter))
            with connect(db, user=exporter) as e:
                assert scalar(e, "SHOW search_path") == '"$user", public'
                rows = {name: e.execute(sql).fetchall() for name, sql in queries.items()}
            assert rows["optidb_health"] and rows["optidb_alerts"] and rows["optidb_statement"]
            with connect(db, user=mallory) as m:
                ran = m.execute(f"SELECT who, via FROM {exporter}.loot").fetchall()
            assert ran == [], (
                f"mallory's operators ran as the exporter {exporter} (optidb_monitor, "
                f"pg_monitor) from the query file's SQL: {ran}")
        finally:
            with connect(db) as su:
                su.execute(f"DROP SCHEMA IF EXISTS {exporter} CASCADE")
                su.execute(f'REVOKE CREATE ON DATABASE "{db}" FROM {mallory}')
                for role in (exporter, mallory):
                    su.execute(f"DROP ROLE IF EXISTS {role}")


# Utility statements whose literals pg_query's normalization keeps (measured on c84269c):
# each literal is within the first 60 characters, so it would be in the snippet.
UTILITY = [
    "COMMENT ON TABLE t IS 'monitor-secret-1'",
    "ALTER ROLE rt_app SET app.k TO 'monitor-secret-2'",
    # The program reads its input: one that exits first fails the COPY on a broken pipe.
    "COPY (SELECT 1) TO PROGRAM 'cat>/dev/null #monitor-secret-3'",
]


def test_monitors_see_no_literal_of_another_roles_utility_statement():
    monitor = "rt_monitor"
    with new_database() as db:
        with connect(db) as su:
            for role in (monitor, "rt_app"):
                su.execute(f"DROP ROLE IF EXISTS {role}")
            su.execute(f"CREATE ROLE {monitor} LOGIN IN ROLE optidb_monitor")
            su.execute("CREATE ROLE rt_app")
            su.execute("CREATE TABLE t (id int)")
            for sql in UTILITY:
                su.execute(sql)
            su.execute("SELECT optidb.snapshot()")
            su.execute("SELECT optidb.refresh()")
            stored = [r[0] for r in su.execute(
                "SELECT norm_sql FROM optidb.query WHERE norm_sql LIKE '%monitor-secret-%' "
                "OR raw_sql LIKE '%monitor-secret-%'")]
            # The statements are there with their literals (PostgreSQL 18's
            # pg_stat_statements normalizes the value of ALTER ROLE ... SET: not that one).
            assert len(stored) >= 2, stored
        try:
            with connect(db, user=monitor) as m:
                seen = [r[0] for r in m.execute(
                    "SELECT query FROM optidb.monitor_statements "
                    "WHERE query LIKE '%monitor-secret-%'")]
                page = scalar(m, "SELECT optidb.metrics(100)")
            exported = [line for line in page.splitlines() if "monitor-secret-" in line]
            assert seen == [] and exported == [], (
                f"optidb_monitor reads literals of the superuser's utility statements: "
                f"{seen}; metrics(): {exported[:3]}")
        finally:
            with connect(db) as su:
                su.execute("ALTER ROLE rt_app RESET ALL")
                for role in (monitor, "rt_app"):
                    su.execute(f"DROP ROLE IF EXISTS {role}")
