"""End-to-end fixtures: a real PostgreSQL 15 cluster started by tests/scripts/cluster.sh (the
test runner exports OPTIDB_PGPORT/OPTIDB_PGSOCKET), real pg_stat_statements, committed data."""

import os
import uuid

import psycopg
import pytest

PORT = int(os.environ.get("OPTIDB_PGPORT", "55433"))
SOCKET = os.environ.get("OPTIDB_PGSOCKET", "/tmp")
DEMO_DB = os.environ.get("OPTIDB_DB", "optidb_e2e_demo")


def connect(dbname, user="postgres", **kw):
    # prepare_threshold=None: psycopg neither prepares statements of its own nor sends
    # DEALLOCATE ALL after DDL, so tests see exactly what optidb does to a session.
    return psycopg.connect(host=SOCKET, port=PORT, user=user, dbname=dbname,
                           autocommit=True, prepare_threshold=None, **kw)


@pytest.fixture
def fresh_db():
    """A new empty database with pg_stat_statements and optidb installed; dropped afterwards."""
    name = "optidb_t_" + uuid.uuid4().hex[:10]
    with connect("postgres") as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    conn = connect(name)
    conn.execute("CREATE EXTENSION pg_stat_statements")
    conn.execute("CREATE EXTENSION optidb")
    try:
        yield conn
    finally:
        conn.close()
        with connect("postgres") as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(scope="session", autouse=True)
def demo():
    """The demo shop after its workload ran (loaded by tests/scripts/run-workload.sh), with a
    fresh optidb and one scan done. Autouse, so the scan happens before any test calls
    pg_stat_statements_reset() (which clears every database's entries)."""
    conn = connect(DEMO_DB)
    conn.execute("DROP EXTENSION IF EXISTS optidb CASCADE")
    conn.execute("CREATE EXTENSION optidb")
    summary = conn.execute("SELECT * FROM optidb.scan()").fetchone()
    yield conn, summary
    conn.close()


def scalar(conn, sql, params=None):
    return conn.execute(sql, params).fetchone()[0]
