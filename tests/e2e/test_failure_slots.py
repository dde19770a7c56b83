"""The 64 shared-memory slots that keep failed statements until a snapshot drains them are
shared fairly between roles (docs/security-model.md, row 58): a hostile role that fills them
between two snapshots with many distinct statements cancelled by a short statement_timeout
does not push out another role's failures, and what each role had dropped is counted in
optidb.scan_log.failures_dropped.

Roles: mallory (LOGIN, no optidb grant) floods; bob (the application, no superuser) works in
schema `shop` through SET search_path, with a simple-protocol failure and a PREPARE/EXECUTE
one; an admin (optidb_admin, no superuser) takes the snapshot."""

import uuid

import psycopg
import pytest

from conftest import connect, new_database, scalar

SLOTS = 64


@pytest.fixture
def world():
    tag = uuid.uuid4().hex[:6]
    roles = {k: f"optidb_{k}_{tag}" for k in ("adm", "bob", "mallory")}
    try:
        with new_database() as db:
            with connect(db) as su:
                for name in roles.values():
                    su.execute(f'CREATE ROLE "{name}" LOGIN')
                su.execute(f'GRANT optidb_admin TO "{roles["adm"]}"')
                su.execute(f'CREATE SCHEMA shop AUTHORIZATION "{roles["bob"]}"')
            with connect(db, user=roles["bob"]) as c:
                c.execute("SET search_path = shop")
                c.execute("CREATE TABLE orders (id int PRIMARY KEY, total numeric, qty int)")
                c.execute("INSERT INTO orders SELECT g, g * 10, 0 FROM generate_series(1, 100) g")
            yield db, roles
    finally:
        with connect("postgres") as su:
            for name in roles.values():
                su.execute(f'DROP ROLE IF EXISTS "{name}"')


def flood(db, role, first, count):
    """`count` distinct statements (their target lists differ in length, so each has a
    queryid of its own), each cancelled by a 150 ms statement_timeout."""
    with connect(db, user=role) as m:
        m.execute("SET statement_timeout = '150ms'")
        for i in range(first, first + count):
            with pytest.raises(psycopg.errors.QueryCanceled):
                m.execute("SELECT pg_sleep(5)" + ", 1" * i)


def test_a_flooding_role_does_not_push_out_another_roles_failures(world):
    db, roles = world
    with connect(db, user=roles["adm"]) as adm:
        adm.execute("SELECT * FROM optidb.snapshot()")  # this database's slots drained
    # More distinct failing statements than there are slots, all costlier than bob's.
    flood(db, roles["mallory"], 0, SLOTS + 6)
    with connect(db, user=roles["bob"]) as bob:
        bob.execute("SET search_path = shop")
        with pytest.raises(psycopg.errors.DivisionByZero):
            bob.execute("SELECT total / qty FROM orders WHERE id = 7")
        bob.execute("PREPARE by_total(text) AS SELECT id FROM orders WHERE total > $1::int")
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            bob.execute("EXECUTE by_total('many')")
    # mallory goes on with new statements: she now competes only with her own slots.
    flood(db, roles["mallory"], SLOTS + 6, 20)

    with connect(db, user=roles["adm"]) as adm:
        # What mallory's flood dropped so far is a health figure (an alert rule can watch it),
        # under her name; bob lost nothing.
        value, by_role = adm.execute(
            "SELECT value, details -> 'by_role' FROM optidb.health() "
            "WHERE item = 'failures_dropped'").fetchone()
        assert value > 0 and by_role.get(roles["mallory"]) == value, by_role
        adm.execute("SELECT * FROM optidb.snapshot()")
        rows = adm.execute(
            "SELECT b.query, b.evidence -> 'failures' FROM optidb.bottlenecks(1000) b "
            "JOIN optidb.query q ON q.id = b.query_id JOIN pg_roles r ON r.oid = q.userid "
            "WHERE r.rolname = %s AND jsonb_typeof(b.evidence -> 'failures') = 'object' "
            "ORDER BY b.query",
            (roles["bob"],)).fetchall()
        assert len(rows) == 2, rows
        by_state = {f["sqlstate"]: (query, f) for query, f in rows}
        assert set(by_state) == {"22012", "22P02"}, rows
        query, f = by_state["22012"]
        assert "total / qty" in query and f["count"] == 1 and f["timeouts"] == 0, rows
        query, f = by_state["22P02"]
        assert "total >" in query and f["count"] == 1, rows
        # Kept with the search_path they ran in (a replay plans them there).
        paths = adm.execute(
            "SELECT s.search_path FROM optidb.sample s JOIN optidb.query q "
            "ON q.id = s.query_id JOIN pg_roles r ON r.oid = q.userid "
            "WHERE r.rolname = %s", (roles["bob"],)).fetchall()
        assert paths and all(p[0] == "pg_catalog, shop" for p in paths), paths
        # What mallory lost is counted, under her name; bob lost nothing.
        dropped = scalar(adm, "SELECT failures_dropped FROM optidb.scan_log "
                              "ORDER BY id DESC LIMIT 1")
        assert dropped == by_role, (dropped, by_role)
        # The pass filed them: the next interval starts from 0.
        assert scalar(adm, "SELECT value FROM optidb.health() "
                           "WHERE item = 'failures_dropped'") == 0


def test_a_role_flooding_the_sample_ring_does_not_push_out_another_roles_samples(world):
    """The sample ring (a quarter of optidb.max_statements slots, here 250) has the same
    weakness: 600 distinct statements of mallory's, each sampled at its first execution, used
    to overwrite every older sample. Now her pushes drop her own oldest samples first."""
    db, roles = world
    with connect(db, user=roles["adm"]) as adm:
        adm.execute("SELECT * FROM optidb.snapshot()")
    with connect(db, user=roles["bob"]) as bob:
        bob.execute("SET search_path = shop")
        bob.execute("PREPARE by_id(int) AS SELECT total FROM orders WHERE id = $1")
        bob.execute("EXECUTE by_id(42)")
    with connect(db, user=roles["mallory"]) as m:
        for i in range(600):
            m.execute("SELECT 1" + ", 2" * i)
    with connect(db, user=roles["adm"]) as adm:
        adm.execute("SELECT * FROM optidb.snapshot()")
        samples = adm.execute(
            "SELECT s.search_path, s.sql_text, s.param_values FROM optidb.sample s "
            "JOIN optidb.query q ON q.id = s.query_id JOIN pg_roles r ON r.oid = q.userid "
            "WHERE r.rolname = %s AND s.sql_text LIKE '%%WHERE id = $1%%'",
            (roles["bob"],)).fetchall()
        assert samples, "bob's sample was pushed out of the ring"
        assert all(s[0] == "pg_catalog, shop" and s[2] == ["42"] for s in samples), samples
        kept = scalar(adm, "SELECT count(*) FROM optidb.sample s JOIN optidb.query q "
                           "ON q.id = s.query_id JOIN pg_roles r ON r.oid = q.userid "
                           "WHERE r.rolname = %s", (roles["mallory"],))
        assert 0 < kept < 600, kept
