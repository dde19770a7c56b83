"""pg_dump/pg_restore keep all of optidb's history (issue 22, part 2), and statements keep their
role by name across clusters.

A database of a cluster of its own, with a realistic workload: a plain application role whose
tables live in its own schema (reached through SET search_path, the extended protocol, SQL
PREPARE/EXECUTE, a statement that fails), a developer who reads its statements
(optidb_reader), an admin who scans (optidb_admin, no superuser), a role that will not exist on
the second cluster, and mallory. It is dumped with `pg_dump -Fc` and restored (a) into a new
database of the same cluster (also with `pg_restore --jobs 2`) and (b) into a second cluster
whose roles were created in the other order, so each role OID there is another role (mallory
holds the application's OID; the application holds the missing role's). Every dumped optidb
table must come back row for row; no reader may see a statement, and no replay may run, through
an OID that is another role now; the next snapshot re-maps each statement to its role by name
(the missing role's are a stored, visible state), and new executions add to the restored
history. A rename on the source cluster keeps the statements of the renamed role."""

import os
import subprocess
import tempfile
import time
import uuid

import psycopg
import pytest

from conftest import HYPOPG, SOCKET, connect, own_cluster, scalar

# Ports of this file's clusters (from the range reserved for it; OPTIDB_E2E_DUMP_PORT moves
# both, so a second worktree's run does not share them).
SOURCE_PORT = int(os.environ.get("OPTIDB_E2E_DUMP_PORT", "55452"))
SECOND_PORT = SOURCE_PORT + 1
# The second cluster's worker keeps this database's history (created by a test).
WORKER_DB = "by_worker"

ORDERS = """
CREATE TABLE orders AS
    SELECT g AS id, g % 5000 AS customer_id,
           (ARRAY['new', 'paid', 'shipped', 'cancelled'])[1 + g % 4] AS status,
           timestamptz '2026-01-01' + g * interval '1 minute' AS created_at
    FROM generate_series(1, 100000) g;
CREATE TABLE customers AS
    SELECT g AS id, 'user' || g || '@example.com' AS email FROM generate_series(1, 20000) g;
ALTER TABLE customers ADD PRIMARY KEY (id);
ANALYZE orders;
ANALYZE customers;
"""

# The statement both the application and the role missing on the second cluster run: one
# optidb statement each (same text, two roles).
BY_CUSTOMER = "SELECT * FROM orders WHERE customer_id = %s"


def bindir():
    pg_config = os.environ.get("PG_CONFIG", "/usr/lib/postgresql/15/bin/pg_config")
    return subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                          check=True).stdout.strip()


def client(tool, port, *args, env=None):
    """Run pg_dump/pg_restore; return (exit code, stderr)."""
    done = subprocess.run([os.path.join(bindir(), tool), "-h", SOCKET, "-p", str(port),
                           "-U", "postgres", *args], capture_output=True, text=True,
                          env=dict(os.environ, **(env or {})))
    return done.returncode, done.stderr


def create_roles(port, names):
    """Login roles, created first thing in a fresh cluster, in this order (so their OIDs
    follow it)."""
    with connect("postgres", port=port) as su:
        for name in names:
            su.execute(f'CREATE ROLE "{name}" LOGIN')
        return {name: scalar(su, "SELECT oid::int8 FROM pg_roles WHERE rolname = %s", (name,))
                for name in names}


def grant_cast(port, db, roles):
    with connect(db, port=port) as su:
        su.execute(f'GRANT "{roles["app"]}" TO "{roles["dev"]}"')
        su.execute(f'GRANT optidb_reader TO "{roles["dev"]}", "{roles["mallory"]}", '
                   f'"{roles["app"]}"')
        su.execute(f'GRANT optidb_admin TO "{roles["adm"]}"')


def workload(port, db, roles, who, rounds=4):
    """The application's statements as its ORM sends them: unqualified names found through
    SET search_path, parameters over the extended protocol, a SQL-level PREPARE/EXECUTE and a
    statement that fails."""
    with connect(db, user=roles[who], port=port) as c:
        c.execute("SET search_path = shop")
        for i in range(rounds):
            c.execute(BY_CUSTOMER, (i,))
            c.execute("SELECT count(*) FROM orders WHERE status = %s", ("paid",))
            c.execute("SELECT o.id, c.email FROM orders o JOIN customers c ON c.id = o.customer_id "
                      "WHERE o.created_at > %s ORDER BY o.id LIMIT 10", ("2026-02-01",))
        c.execute("PREPARE by_status(text) AS SELECT count(*) FROM orders WHERE status = $1")
        for status in ("new", "shipped"):
            c.execute(f"EXECUTE by_status('{status}')")
        with pytest.raises(psycopg.errors.DivisionByZero):
            c.execute("SELECT id / (id - id) FROM orders WHERE id = %s", (1,))


def dumped_tables(conn):
    return [r[0] for r in conn.execute(
        "SELECT name FROM optidb.surface() WHERE kind = 'table' AND dumped ORDER BY name")]


def contents(conn, tables):
    """Every row of every table, as text: (row count, digest) per table."""
    return {t: conn.execute(f"SELECT count(*), md5(coalesce(string_agg(x::text, '|' "
                            f"ORDER BY x::text), '')) FROM {t} x").fetchone()
            for t in tables}


def statements(conn):
    """Each statement's role: by the name it stores and by the role its OID is here."""
    return {r[0]: r[1:] for r in conn.execute(
        "SELECT q.id, q.role_name::text, r.rolname::text, q.fingerprint, q.role_missing "
        "FROM optidb.query q LEFT JOIN pg_roles r ON r.oid = q.userid")}


def visible(port, db, user):
    """What one role sees: statement ids through the table (row-level security), through
    bottlenecks() and the metric view, and the families."""
    with connect(db, user=user, port=port) as c:
        return {
            "query": {r[0] for r in c.execute("SELECT id FROM optidb.query")},
            "bottlenecks": {r[0] for r in c.execute(
                "SELECT query_id FROM optidb.bottlenecks(1000)")},
            "views": {r[0] for r in c.execute("SELECT query_id FROM optidb.query_metrics")},
            "families": {r[0] for r in c.execute("SELECT id FROM optidb.family")},
        }


def ids_of(stmts, role):
    return {i for i, (name, *_rest) in stmts.items() if name == role}


def by_customer_id(conn, role):
    return scalar(conn, "SELECT id FROM optidb.query WHERE role_name = %s "
                        "AND norm_sql = 'SELECT * FROM orders WHERE customer_id = $1'", (role,))


def index_advice(conn):
    """The open index recommendation to simulate (a missing index first)."""
    return scalar(conn, "SELECT id FROM optidb.recommendation WHERE index_sql IS NOT NULL "
                        "AND status = 'open' "
                        "ORDER BY kind = 'missing_index' DESC, confidence DESC LIMIT 1")


def simulate_error(port, db, admin, query_id, rec_id):
    """What simulate() says of a statement (None: it was replayed)."""
    with connect(db, user=admin, port=port) as c:
        return c.execute("SELECT error FROM optidb.simulate(%s, %s, 'hypopg')",
                         (query_id, rec_id)).fetchone()[0]


@pytest.fixture(scope="module")
def source():
    """The source cluster and database after the workload, one scan and the admin's jobs.
    Yields (port, db, roles, role oids, dump file, what the source holds)."""
    tag = uuid.uuid4().hex[:6]
    roles = {k: f"{k}_{tag}" for k in ("app", "dev", "adm", "gone", "mallory")}
    db = f"shop_{tag}"
    with own_cluster(f"dump-source-{SOURCE_PORT}", SOURCE_PORT) as port, \
            tempfile.TemporaryDirectory() as tmp:
        oids = create_roles(port, [roles[k] for k in ("app", "dev", "adm", "gone", "mallory")])
        with connect("postgres", port=port) as su:
            su.execute(f'CREATE DATABASE "{db}"')
        with connect(db, port=port) as su:
            for ext in ("pg_stat_statements",) + HYPOPG + ("optidb",):
                su.execute(f"CREATE EXTENSION {ext}")
            su.execute(f'CREATE SCHEMA shop AUTHORIZATION "{roles["app"]}"')
        grant_cast(port, db, roles)
        with connect(db, user=roles["app"], port=port) as c:
            c.execute("SET search_path = shop")
            c.execute(ORDERS)
            # Anyone may read the shop (no grant names a role missing elsewhere).
            c.execute("GRANT USAGE ON SCHEMA shop TO PUBLIC")
            c.execute("GRANT SELECT ON ALL TABLES IN SCHEMA shop TO PUBLIC")
        workload(port, db, roles, "app")
        workload(port, db, roles, "gone", rounds=2)
        with connect(db, user=roles["dev"], port=port) as c:
            c.execute("SELECT count(*) FROM shop.customers WHERE email LIKE %s", ("user1%",))
        with connect(db, port=port) as su:
            # A registered read replica (optidb.source is dumped); without dblink here, the
            # scan records it as unreachable.
            su.execute("INSERT INTO optidb.source (name, server) VALUES ('replica1', 'replica1')")
        with connect(db, user=roles["adm"], port=port) as c:
            c.execute("INSERT INTO optidb.alert_rule (name, metric, comparison, threshold, "
                      "severity, description) VALUES ('any_connection', 'connections', '>=', 0, "
                      "'info', 'fires at once')")
            # One slot for plans: every statement that ran still has its history (issue 27).
            c.execute("SELECT * FROM optidb.snapshot(top => 1)")
            c.execute("SELECT * FROM optidb.scan()")
            c.execute("SELECT * FROM optidb.refresh()")
            c.execute("SELECT optidb.record_health()")
            c.execute("SELECT * FROM optidb.check_alerts()")
            tables = dumped_tables(c)
        with connect(db, port=port) as su:
            held = {"contents": contents(su, tables), "statements": statements(su),
                    "with_history": scalar(su, "SELECT count(DISTINCT query_id) "
                                               "FROM optidb.latency"),
                    "tables": tables, "dbid": scalar(su, "SELECT oid::int8 FROM pg_database "
                                                         "WHERE datname = current_database()")}
        dump = os.path.join(tmp, "shop.dump")
        rc, err = client("pg_dump", port, "-Fc", "-f", dump, db)
        assert rc == 0, err
        yield port, db, roles, oids, dump, held


def test_the_source_fills_every_dumped_table(source):
    """The comparisons below mean something only if every table has rows to lose."""
    _, _, roles, _, _, held = source
    empty = {t for t, (n, _) in held["contents"].items() if n == 0}
    # Simulations need hypopg (the alert fired through the admin's rule).
    assert empty == (set() if HYPOPG else {"optidb.simulation"}), empty
    assert {"optidb.family", "optidb.query", "optidb.plan", "optidb.sample",
            "optidb.statement_relation"} <= set(held["tables"]), held["tables"]
    names = {name for name, *_ in held["statements"].values()}
    assert {roles["app"], roles["gone"], roles["dev"]} <= names, names
    # Not only the one statement snapshot(top => 1) chose: the restores compare them all.
    assert held["with_history"] > 3, held["with_history"]


def restore_and_compare(port, target, dump, held, *options, env=None):
    with connect("postgres", port=port) as su:
        su.execute(f'CREATE DATABASE "{target}"')
    rc, err = client("pg_restore", port, "--exit-on-error", "-d", target, *options, dump,
                     env=env)
    assert rc == 0 and err == "", err
    with connect(target, port=port) as su:
        got = contents(su, held["tables"])
        for table, (rows, digest) in held["contents"].items():
            assert got[table] == (rows, digest), (table, got[table], rows)
        # What each row stores (its role's name); which role its OID is here varies.
        stored = lambda stmts: {i: (v[0], v[2], v[3]) for i, v in stmts.items()}  # noqa: E731
        assert stored(statements(su)) == stored(held["statements"])


def test_restore_into_a_new_database_of_the_same_cluster(source):
    port, _, roles, oids, dump, held = source
    target = "copy_" + uuid.uuid4().hex[:6]
    restore_and_compare(port, target, dump, held)
    with connect(target, port=port) as su:
        app_stmt = by_customer_id(su, roles["app"])
        here = scalar(su, "SELECT oid::int8 FROM pg_database WHERE datname = current_database()")
        assert scalar(su, "SELECT count(*) FROM optidb.query WHERE dbid <> %s", (here,)) > 0
        # The same cluster: the OIDs are its roles; the developer sees the application's
        # statements at once.
        seen = visible(port, target, roles["dev"])["query"]
        assert ids_of(held["statements"], roles["app"]) <= seen
        with connect(target, user=roles["adm"], port=port) as adm:
            adm.execute("SELECT * FROM optidb.snapshot()")
        assert scalar(su, "SELECT count(*) FROM optidb.query WHERE dbid <> %s", (here,)) == 0
        assert scalar(su, "SELECT count(*) FROM optidb.query WHERE userid IS NULL") == 0
        # (The snapshot also registered the restore's own statements.)
        got = statements(su)
        assert {i: got[i] for i in held["statements"]} == held["statements"]
        calls_before = scalar(su, "SELECT sum(calls) FROM optidb.metric WHERE query_id = %s",
                              (app_stmt,))
        # New executions (a new queryid: other relation OIDs) add to the restored history.
        workload(port, target, roles, "app", rounds=3)
        with connect(target, user=roles["adm"], port=port) as adm:
            adm.execute("SELECT * FROM optidb.scan()")
        assert by_customer_id(su, roles["app"]) == app_stmt
        assert scalar(su, "SELECT count(*) FROM optidb.query WHERE userid = %s "
                          "AND norm_sql = 'SELECT * FROM orders WHERE customer_id = $1'",
                      (oids[roles["app"]],)) == 1
        assert scalar(su, "SELECT sum(calls) FROM optidb.metric WHERE query_id = %s",
                      (app_stmt,)) >= calls_before + 3


def test_parallel_restore_keeps_every_row(source):
    """pg_dump orders extension tables' data by their foreign keys, but records no dependency
    for it in the archive: pg_restore --jobs loads optidb's tables in any order, and each
    COPY's foreign key checks fail when the table it references is not loaded yet. The recipe
    of docs/install.md skips those checks during the restore (the rows come from one
    consistent snapshot); user tables' foreign keys are created, and checked, after the data
    either way."""
    port, _, _, _, dump, held = source
    restore_and_compare(port, "jobs_" + uuid.uuid4().hex[:6], dump, held, "--jobs", "2",
                        env={"PGOPTIONS": "-c session_replication_role=replica"})


@pytest.fixture(scope="module")
def second(source):
    """A second cluster: the same roles but the one missing, created in the other order, so
    that every OID of the source is another role here; then the restore. Its worker keeps the
    history of WORKER_DB, which only the last test creates."""
    _, _, roles, oids, dump, held = source
    conf = f"optidb.database = '{WORKER_DB}'\noptidb.snapshot_interval = '1s'"
    with own_cluster(f"dump-second-{SECOND_PORT}", SECOND_PORT, conf=conf) as port:
        # One role more (it never ran anything), so the database gets the source's OID too, as
        # fresh clusters' first databases often do.
        here = create_roles(port, [roles[k] for k in ("mallory", "adm", "dev", "app")]
                            + [f"newcomer_{roles['app']}"])
        # The premise: mallory holds the application's OID of the source, the application the
        # missing role's.
        assert here[roles["mallory"]] == oids[roles["app"]], (here, oids)
        assert here[roles["app"]] == oids[roles["gone"]], (here, oids)
        target = "restored"
        restore_and_compare(port, target, dump, held)
        with connect(target, port=port) as su:
            # So re-mapping moves the application's statement onto the key (text, role OID,
            # database) the missing role's copy of it holds until it moves too.
            assert scalar(su, "SELECT oid::int8 FROM pg_database "
                              "WHERE datname = current_database()") == held["dbid"]
        grant_cast(port, target, roles)
        yield port, target, here


def test_no_one_sees_or_replays_a_statement_through_another_roles_oid(source, second):
    _, _, roles, _, _, held = source
    port, db, _ = second
    app_ids = ids_of(held["statements"], roles["app"])
    gone_ids = ids_of(held["statements"], roles["gone"])
    with connect(db, port=port) as su:
        rec = index_advice(su)
        app_stmt, gone_stmt = by_customer_id(su, roles["app"]), by_customer_id(su, roles["gone"])
        # Not re-mapped yet: the OIDs are the source's, each another role here.
        assert scalar(su, "SELECT count(*) FROM optidb.query q JOIN pg_roles r "
                          "ON r.oid = q.userid WHERE r.rolname <> q.role_name") > 0
    assert rec is not None and app_stmt in app_ids and gone_stmt in gone_ids
    # mallory holds the application's OID here, the application the missing role's.
    for who in ("mallory", "dev", "app"):
        seen = visible(port, db, roles[who])
        for path, ids in seen.items():
            if path != "families":
                assert not ids & (app_ids | gone_ids), (who, path, ids)
        # No family shows through a statement the reader may not see.
        assert seen["families"] == set(), (who, seen["families"])
    # Replays refuse: neither as mallory (the application's OID) nor as the application (the
    # missing role's OID).
    for stmt, ran_as in ((app_stmt, roles["app"]), (gone_stmt, roles["gone"])):
        error = simulate_error(port, db, roles["adm"], stmt, rec)
        assert error and f'ran as role "{ran_as}"' in error and "re-mapped" in error, error


def test_the_next_snapshot_maps_each_statement_to_its_role_by_name(source, second):
    _, _, roles, _, _, held = source
    port, db, here = second
    with connect(db, user=roles["adm"], port=port) as adm:
        # refresh() first: the metric views copy OIDs, so it re-maps before it refreshes.
        adm.execute("SELECT * FROM optidb.refresh()")
    with connect(db, port=port) as su:
        got = statements(su)
        assert {i: v[0] for i, v in got.items()} == {i: v[0] for i, v in held["statements"].items()}
        for i, (name, role_here, _, missing) in got.items():
            if name == roles["gone"]:
                assert role_here is None and f'no role named {name} ' in missing, (i, missing)
            else:
                assert role_here == name and missing is None, (i, name, role_here, missing)
        app_stmt, gone_stmt = by_customer_id(su, roles["app"]), by_customer_id(su, roles["gone"])
        rec = index_advice(su)
    app_ids = ids_of(held["statements"], roles["app"])
    gone_ids = ids_of(held["statements"], roles["gone"])
    for who in ("app", "dev"):
        seen = visible(port, db, roles[who])
        assert app_ids <= seen["query"] and not gone_ids & seen["query"], (who, seen["query"])
        assert app_stmt in seen["views"] and app_stmt in seen["bottlenecks"], who
        assert seen["families"], f"{who} sees the families of the application's statements"
    mallory = visible(port, db, roles["mallory"])
    for path, ids in mallory.items():
        if path != "families":
            assert not ids & (app_ids | gone_ids), (path, ids)
    # The missing role's statement: a stored state, replayed as nobody.
    error = simulate_error(port, db, roles["adm"], gone_stmt, rec)
    assert error and "no role in this cluster" in error and roles["gone"] in error, error
    if HYPOPG:
        assert simulate_error(port, db, roles["adm"], app_stmt, rec) is None
    # New executions of the application add to its restored statement.
    with connect(db, port=port) as su:
        calls_before = scalar(su, "SELECT sum(calls) FROM optidb.metric WHERE query_id = %s",
                              (app_stmt,))
        count_before = scalar(su, "SELECT count(*) FROM optidb.query")
    workload(port, db, roles, "app", rounds=3)
    with connect(db, user=roles["adm"], port=port) as adm:
        adm.execute("SELECT * FROM optidb.scan()")
    with connect(db, port=port) as su:
        assert by_customer_id(su, roles["app"]) == app_stmt
        assert scalar(su, "SELECT count(*) FROM optidb.query WHERE userid = %s "
                          "AND norm_sql = 'SELECT * FROM orders WHERE customer_id = $1'",
                      (here[roles["app"]],)) == 1
        assert scalar(su, "SELECT sum(calls) FROM optidb.metric WHERE query_id = %s",
                      (app_stmt,)) >= calls_before + 3
        # Only the workload's failing statement may be new (it never reached the source's
        # pg_stat_statements); none of the application's restored ones split in two.
        new = su.execute("SELECT norm_sql FROM optidb.query WHERE id > %s",
                         (max(held["statements"]),)).fetchall()
        assert scalar(su, "SELECT count(*) FROM optidb.query") - count_before == len(new)
        assert all("orders WHERE customer_id" not in (sql or "") for (sql,) in new), new
    # Once the missing role exists, its statements are its own again.
    with connect("postgres", port=port) as su:
        su.execute(f'CREATE ROLE "{roles["gone"]}" LOGIN')
    with connect(db, user=roles["adm"], port=port) as adm:
        adm.execute("SELECT * FROM optidb.snapshot()")
    with connect(db, port=port) as su:
        got = statements(su)
        assert all(got[i][1] == roles["gone"] and got[i][3] is None for i in gone_ids), got


def test_a_renamed_role_keeps_its_statements(source):
    port, db, roles, _, _, held = source
    app_ids = ids_of(held["statements"], roles["app"])
    renamed = roles["app"] + "_renamed"
    with connect(db, port=port) as su:
        su.execute(f'ALTER ROLE "{roles["app"]}" RENAME TO "{renamed}"')
    try:
        with connect(db, user=roles["adm"], port=port) as adm:
            adm.execute("SELECT * FROM optidb.snapshot()")
        with connect(db, port=port) as su:
            got = statements(su)
            assert {i for i, v in got.items() if v[0] == renamed} >= app_ids
            assert all(got[i][1] == renamed and got[i][3] is None for i in app_ids)
        assert app_ids <= visible(port, db, roles["dev"])["query"]
    finally:
        with connect(db, port=port) as su:
            su.execute(f'ALTER ROLE "{renamed}" RENAME TO "{roles["app"]}"')


def test_the_worker_re_maps_a_restore_by_itself(source, second):
    """Restored into the database the worker keeps (in one transaction, as docs/install.md says,
    so no snapshot runs between CREATE EXTENSION and the data): its own snapshots re-map it."""
    _, _, _, _, dump, held = source
    port, _, _ = second
    with connect("postgres", port=port) as su:
        su.execute(f'CREATE DATABASE "{WORKER_DB}"')
        here = dict(su.execute("SELECT rolname::text, oid::int8 FROM pg_roles").fetchall())
    rc, err = client("pg_restore", port, "--exit-on-error", "--single-transaction",
                     "-d", WORKER_DB, dump)
    assert rc == 0 and err == "", err
    expected = {i: here.get(name) for i, (name, *_rest) in held["statements"].items()}
    with connect(WORKER_DB, port=port) as su:
        for _ in range(60):
            got = {i: (userid, missing) for i, userid, missing in su.execute(
                "SELECT id, userid::int8, role_missing FROM optidb.query WHERE id <= %s",
                (max(held["statements"]),))}
            if {i: u for i, (u, _) in got.items()} == expected:
                break
            time.sleep(1)
        assert {i: u for i, (u, _) in got.items()} == expected, (got, expected)
        assert all((missing is None) == (expected[i] is not None)
                   for i, (_, missing) in got.items()), got
