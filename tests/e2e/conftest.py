"""End-to-end fixtures: a real PostgreSQL cluster (15, or another major under
tests/scripts/test-major.sh) started by tests/scripts/cluster.sh (the test runner exports
OPTIDB_PGPORT/OPTIDB_PGSOCKET), real pg_stat_statements, committed data."""

import contextlib
import os
import subprocess
import time
import uuid

import psycopg
import pytest

PORT = int(os.environ.get("OPTIDB_PGPORT", "55433"))
SOCKET = os.environ.get("OPTIDB_PGSOCKET", "/tmp")
DEMO_DB = os.environ.get("OPTIDB_DB", "optidb_e2e_demo")

# The preload order of every cluster a test starts with both libraries and no order of its own
# (the e2e cluster's too: tests/scripts/env.sh reads the same variable). Every capability is
# tested under both orders: CI runs 15 and 18 with pgss-first, 16 and 17 with optidb-first.
PRELOAD_ORDERS = {"pgss-first": "pg_stat_statements,optidb",
                  "optidb-first": "optidb,pg_stat_statements"}
PRELOAD = PRELOAD_ORDERS[os.environ.get("OPTIDB_PRELOAD_ORDER") or "pgss-first"]

# Clusters of a test's own use fixed ports (55434-55472) and data directories under /tmp;
# a second run beside this one (another worktree) moves them: OPTIDB_E2E_PORT_SHIFT is added
# to each such port, OPTIDB_E2E_OWN_DIR replaces /tmp.
PORT_SHIFT = int(os.environ.get("OPTIDB_E2E_PORT_SHIFT") or 0)
OWN_DIR = os.environ.get("OPTIDB_E2E_OWN_DIR") or "/tmp"


def own_port(port):
    """The port a test's own cluster listens on, for the fixed port the test names."""
    return port + PORT_SHIFT


def own_data(name):
    """The data directory of the test's own cluster `name`."""
    return f"{OWN_DIR}/optidb-{name}/data"


def pytest_configure(config):
    # The other-major run (tests/scripts/test-major.sh) has no pg_cron: it deselects those
    # with -m. A server without hypopg or libxml can deselect the others the same way.
    config.addinivalue_line("markers", "hypopg: needs the hypopg extension (simulations)")
    config.addinivalue_line("markers", "pg_cron: needs pg_cron preloaded")
    config.addinivalue_line("markers", "libxml: needs a server built with libxml (XMLTABLE)")


# Set on a server without hypopg (no script of the suite does any more: test-major.sh builds
# it): fixtures leave it out, and the tests marked `hypopg` are to be deselected.
HYPOPG = () if os.environ.get("OPTIDB_WITHOUT_HYPOPG") == "1" else ("hypopg",)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def connect(dbname, user="postgres", port=PORT, **kw):
    # prepare_threshold=None: psycopg neither prepares statements of its own nor sends
    # DEALLOCATE ALL after DDL, so tests see exactly what optidb does to a session.
    return psycopg.connect(host=SOCKET, port=port, user=user, dbname=dbname,
                           autocommit=True, prepare_threshold=None, **kw)


@contextlib.contextmanager
def own_cluster(name, port, preload=PRELOAD, conf="", shift=True):
    """A cluster of the test's own (started by tests/scripts/cluster.sh) on `own_port(port)`
    (`port` itself with shift=False: one derived from the e2e cluster's) with this
    shared_preload_libraries and extra postgresql.conf lines; stopped and removed afterwards.
    Yields its port."""
    data = own_data(name)
    port = own_port(port) if shift else port
    subprocess.run(["rm", "-rf", os.path.dirname(data)], check=True)
    env = dict(os.environ, OPTIDB_PGDATA=data, OPTIDB_PGPORT=str(port), OPTIDB_PRELOAD=preload)
    script = os.path.join(ROOT, "tests/scripts/cluster.sh")
    subprocess.run(["bash", script, "start"], env=env, check=True, capture_output=True)
    if conf:
        with open(os.path.join(data, "postgresql.conf"), "a") as f:
            f.write(conf + "\n")
        subprocess.run(["bash", script, "restart"], env=env, check=True, capture_output=True)
    try:
        yield port
    finally:
        subprocess.run(["bash", script, "stop"], env=env, check=False)
        subprocess.run(["rm", "-rf", os.path.dirname(data)], check=False)


@contextlib.contextmanager
def new_database(port=PORT, extensions=("pg_stat_statements", "optidb")):
    """A new empty database with these extensions; dropped afterwards. Yields its name."""
    name = "optidb_t_" + uuid.uuid4().hex[:10]
    with connect("postgres", port=port) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        with connect(name, port=port) as c:
            for ext in extensions:
                c.execute(f"CREATE EXTENSION {ext}")
        yield name
    finally:
        with connect("postgres", port=port) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@contextlib.contextmanager
def app_workload_database(app, schema, run_workload):
    """A new database with hypopg where the plain role `app` (CREATE on it) made `schema` and
    then ran `run_workload(db, app)` from an empty pg_stat_statements, sampled every second.
    Yields the database's name."""
    with new_database(extensions=("pg_stat_statements", "hypopg", "optidb")) as db:
        with connect(db) as su:
            su.execute(f'GRANT CREATE ON DATABASE "{db}" TO {app}')
            su.execute(f'ALTER DATABASE "{db}" SET optidb.sample_interval = 1')
        with connect(db, user=app) as c:
            c.execute(schema)
            c.execute("VACUUM ANALYZE")
        with connect(db) as su:
            su.execute("SELECT pg_stat_statements_reset()")
        run_workload(db, app)
        yield db


@pytest.fixture
def fresh_db():
    """A new empty database with pg_stat_statements and optidb installed; dropped afterwards."""
    with new_database() as name, connect(name) as conn:
        yield conn


# What the demo fixture's own scan stored about plans, read at once: module fixtures of other
# files (families, the report) scan the demo database again, which refreshes and adds plans.
DEMO_SCAN_PLANS = {}


@pytest.fixture(scope="session", autouse=True)
def demo():
    """The demo shop after its workload ran (loaded by tests/scripts/run-workload.sh), with a
    fresh optidb and one scan done. Autouse, so the scan happens before any test calls
    pg_stat_statements_reset() (which clears every database's entries)."""
    conn = connect(DEMO_DB)
    conn.execute("DROP EXTENSION IF EXISTS optidb CASCADE")
    conn.execute("CREATE EXTENSION optidb")
    summary = conn.execute("SELECT * FROM optidb.scan()").fetchone()
    DEMO_SCAN_PLANS["generic"] = conn.execute(
        "SELECT q.norm_sql, p.had_seq_scan, p.node_types FROM optidb.plan p "
        "JOIN optidb.query q ON q.id = p.query_id "
        "WHERE p.plan_json IS NOT NULL AND p.plan_kind = 'generic'").fetchall()
    DEMO_SCAN_PLANS["typical_statements"] = scalar(
        conn, "SELECT count(DISTINCT query_id) FROM optidb.plan "
              "WHERE plan_kind = 'typical' AND plan_json IS NOT NULL")
    DEMO_SCAN_PLANS["captures_without_one_basis"] = scalar(
        conn, "SELECT count(*) FROM (SELECT query_id FROM optidb.plan "
              "WHERE basis GROUP BY query_id, captured_at HAVING count(*) <> 1) x")
    yield conn, summary
    conn.close()


def scalar(conn, sql, params=None):
    return conn.execute(sql, params).fetchone()[0]


def wait_for(what, check, timeout=30.0, every=0.5):
    """Poll `check()` until it returns something true (a server restarting counts as not yet);
    fail the test after `timeout` seconds."""
    deadline = time.time() + timeout
    while True:
        try:
            value = check()
        except psycopg.OperationalError:
            value = None  # the server is restarting
        if value:
            return value
        if time.time() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)
