"""Roles and row-level security, in the spirit of pg_stat_statements' privileges.sql: two
readers, an admin and a pg_read_all_stats member each see exactly what they should, through
tables, functions and the metric views; a hostile search_path changes nothing."""

import uuid

import psycopg
import pytest

from conftest import connect, scalar


@pytest.fixture
def cast(fresh_db):
    """Four login roles (unique per test run) with statements of their own, scanned and
    refreshed by the superuser. Yields (dbname, roles, query ids by owner)."""
    db = scalar(fresh_db, "SELECT current_database()")
    tag = uuid.uuid4().hex[:6]
    roles = {k: f"optidb_{k}_{tag}" for k in ("alice", "bob", "carol", "dave")}
    su = fresh_db
    for name in roles.values():
        su.execute(f'CREATE ROLE "{name}" LOGIN')
    su.execute(f'GRANT optidb_reader TO "{roles["alice"]}", "{roles["bob"]}"')
    su.execute(f'GRANT optidb_admin TO "{roles["carol"]}"')
    su.execute(f'GRANT pg_read_all_stats, optidb_reader TO "{roles["dave"]}"')
    su.execute("CREATE TABLE shared_t AS SELECT g AS id FROM generate_series(1, 1000) g")
    su.execute("GRANT SELECT ON shared_t TO PUBLIC")
    su.execute(f'GRANT CREATE ON DATABASE "{db}" TO PUBLIC')
    su.execute("SELECT pg_stat_statements_reset()")
    for who in ("alice", "bob"):
        with connect(db, user=roles[who]) as c:
            for i in range(5):
                c.execute(f"SELECT count(*) AS {who}_secret FROM shared_t WHERE id > {i}")
    su.execute("SELECT * FROM optidb.scan()")
    su.execute("SELECT * FROM optidb.refresh()")
    ids = {}
    for who in ("alice", "bob"):
        ids[who] = scalar(su, "SELECT q.id FROM optidb.query q JOIN pg_roles r ON r.oid = q.userid "
                              "WHERE r.rolname = %s AND q.norm_sql LIKE %s",
                          (roles[who], f"%{who}_secret%"))
        assert ids[who] is not None, f"{who}'s statement was not captured"
    try:
        yield db, roles, ids
    finally:
        su.execute(f'DROP OWNED BY {", ".join(chr(34) + r + chr(34) for r in roles.values())}')
        for name in roles.values():
            su.execute(f'DROP ROLE "{name}"')


def seen(conn):
    """What one role sees of the statements, through every read path."""
    return {
        "query": sorted(r[0] for r in conn.execute("SELECT id FROM optidb.query")),
        "metric": sorted({r[0] for r in conn.execute("SELECT query_id FROM optidb.metric")}),
        "latency": sorted({r[0] for r in conn.execute("SELECT query_id FROM optidb.latency")}),
        "bottlenecks": sorted(r[0] for r in conn.execute(
            "SELECT query_id FROM optidb.bottlenecks(1000)")),
        "stats": sorted(r[0] for r in conn.execute(
            "SELECT query_id FROM optidb.execution_time_stats()")),
        "views": sorted(r[0] for r in conn.execute(
            "SELECT query_id FROM optidb.query_metrics")),
        "hourly": sorted({r[0] for r in conn.execute(
            "SELECT query_id FROM optidb.query_metrics_hourly")}),
    }


def test_each_role_sees_exactly_its_statements(cast):
    db, roles, ids = cast
    with connect(db) as su:
        everything = seen(su)
    assert ids["alice"] in everything["views"] and ids["bob"] in everything["views"]
    for who, other in (("alice", "bob"), ("bob", "alice")):
        with connect(db, user=roles[who]) as c:
            view = seen(c)
            for path, got in view.items():
                assert ids[who] in got, f"{who} cannot see own statement via {path}"
                assert ids[other] not in got, f"{who} sees {other}'s statement via {path}"
            texts = " ".join(r[0] or "" for r in c.execute("SELECT query FROM optidb.query_metrics"))
            assert f"{other}_secret" not in texts
            # Another role's statement is indistinguishable from one that does not exist.
            with pytest.raises(psycopg.errors.NoDataFound):
                c.execute("SELECT optidb.query(%s)", (ids[other],))
            assert c.execute("SELECT optidb.query(%s)", (ids[who],)).fetchone()[0]["query_id"] == ids[who]
    for who in ("carol", "dave"):
        with connect(db, user=roles[who]) as c:
            assert seen(c)["views"] == everything["views"], f"{who} should see every statement"
            assert seen(c)["query"] == everything["query"]


def test_readers_cannot_reach_materialized_views_or_admin_functions(cast):
    db, roles, _ = cast
    with connect(db, user=roles["alice"]) as c:
        for sql in ("SELECT * FROM optidb.mv_query_metrics",
                    "SELECT * FROM optidb.pgss_state",
                    "SELECT * FROM optidb.scan()",
                    "SELECT * FROM optidb.refresh()",
                    "SELECT * FROM optidb.latency_counters()",
                    "INSERT INTO optidb.query (fingerprint, userid, dbid, kind) VALUES ('x', 1, 1, 'select')"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute(sql)
    # A role outside optidb's roles gets nothing at all.
    with connect(db) as su:
        su.execute(f'REVOKE optidb_reader FROM "{roles["bob"]}"')
    with connect(db, user=roles["bob"]) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("SELECT * FROM optidb.bottlenecks()")


def test_admin_runs_jobs_without_superuser(cast):
    db, roles, _ = cast
    with connect(db, user=roles["carol"]) as c:
        c.execute("SELECT * FROM optidb.scan()")
        rows = c.execute("SELECT view_name, error FROM optidb.refresh()").fetchall()
        assert len(rows) == 4 and all(err is None for _, err in rows), rows
        assert scalar(c, "SELECT count(*) FROM optidb.refresh_log WHERE run_by = current_user") == 4


def test_hostile_search_path_changes_nothing(cast):
    """Objects named like the ones optidb calls, in a schema placed before pg_catalog."""
    db, roles, ids = cast
    trap = ("CREATE SCHEMA {s}; "
            "CREATE TABLE {s}.calls (who name); GRANT ALL ON {s}.calls TO PUBLIC; "
            "CREATE FUNCTION {s}.pg_has_role(name, oid, text) RETURNS boolean LANGUAGE sql "
            "  AS $$ INSERT INTO {s}.calls VALUES (current_user) RETURNING true $$; "
            "CREATE FUNCTION {s}.can_see(oid) RETURNS boolean LANGUAGE sql AS $$ SELECT true $$; "
            "CREATE FUNCTION {s}.count(anyelement) RETURNS bigint LANGUAGE sql "
            "  AS $$ INSERT INTO {s}.calls VALUES (current_user) RETURNING 0::bigint $$; "
            "CREATE FUNCTION {s}.now() RETURNS timestamptz LANGUAGE sql "
            "  AS $$ INSERT INTO {s}.calls VALUES (current_user) RETURNING 'epoch'::timestamptz $$; "
            "CREATE FUNCTION {s}.eq_any(oid, oid) RETURNS boolean LANGUAGE sql AS $$ SELECT true $$; "
            "CREATE OPERATOR {s}.= (LEFTARG = oid, RIGHTARG = oid, FUNCTION = {s}.eq_any)")
    with connect(db, user=roles["alice"]) as c:
        c.execute(trap.format(s="evil"))
        c.execute("SET search_path = evil, pg_catalog, public")
        before = scalar(c, "SELECT count(*) FROM evil.calls")
        view = seen(c)
        assert ids["bob"] not in view["views"] and ids["bob"] not in view["query"]
        assert ids["alice"] in view["views"]
    with connect(db, user=roles["carol"]) as c:
        c.execute(trap.format(s="evil2"))
        c.execute("SET search_path = evil2, pg_catalog, public")
        rows = c.execute("SELECT view_name, rows, error FROM optidb.refresh()").fetchall()
        assert all(err is None for _, _, err in rows), rows
        counted = dict((v, n) for v, n, _ in rows)
        assert counted["mv_query_metrics"] >= 2
        assert scalar(c, "SELECT count(*) FROM evil2.calls") == 0, "refresh called a trap"
    with connect(db) as su:
        assert scalar(su, "SELECT count(*) FROM evil.calls") == before
        last = su.execute("SELECT max(last_updated) FROM optidb.mv_query_metrics").fetchone()[0]
        assert last.year > 2000, "refresh used a hostile now()"


def test_security_definer_functions_pin_search_path(fresh_db):
    rows = fresh_db.execute(
        "SELECT p.proname, p.proconfig FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'optidb' AND p.prosecdef").fetchall()
    assert rows, "expected at least optidb.refresh to be SECURITY DEFINER"
    for name, config in rows:
        assert config and "search_path=pg_catalog, pg_temp" in config, (name, config)
    public_exec = fresh_db.execute(
        "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'optidb' AND has_function_privilege('public', p.oid, 'EXECUTE')"
    ).fetchall()
    assert public_exec == [], f"PUBLIC may execute {public_exec}"
    forced = fresh_db.execute(
        "SELECT relname FROM pg_class WHERE relnamespace = 'optidb'::regnamespace "
        "AND relkind = 'r' AND NOT (relrowsecurity AND relforcerowsecurity)").fetchall()
    assert forced == [], f"tables without forced RLS: {forced}"


def test_admins_read_optidbs_tables_and_only_its_own_functions_write_them(cast):
    """What the tables hold (statement texts and roles, search_paths, index DDL) is replayed as
    other roles: no role but the owner may write them, and the functions that write are
    SECURITY DEFINER with a pinned search_path."""
    db, roles, _ = cast
    with connect(db) as su:
        writers = su.execute(
            "SELECT c.relname || ' ' || a.grantee::regrole::text || ' ' || a.privilege_type "
            "FROM pg_class c, aclexplode(c.relacl) a WHERE c.relnamespace = 'optidb'::regnamespace "
            "AND a.grantee <> c.relowner AND a.privilege_type <> 'SELECT' "
            "AND c.relname NOT IN ('alert_rule', 'alert_rule_id_seq')").fetchall()
        assert writers == [], writers
        definers = {r[0] for r in su.execute(
            "SELECT proname FROM pg_proc WHERE pronamespace = 'optidb'::regnamespace "
            "AND prosecdef")}
        assert definers == {"scan", "snapshot", "prune", "refresh", "simulate", "record_health",
                            "check_alerts", "sample_waits", "add_source", "drop_source"}, definers
    with connect(db, user=roles["carol"]) as c:
        assert scalar(c, "SELECT count(*) FROM optidb.query") > 0
        for sql in ("UPDATE optidb.query SET raw_sql = 'SELECT 1'",
                    "UPDATE optidb.recommendation SET index_sql = 'SELECT 1'",
                    "DELETE FROM optidb.sample",
                    "INSERT INTO optidb.query (fingerprint, userid, dbid, kind) "
                    "VALUES ('x', 10, 1, 'select')"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute(sql)


def test_readers_see_only_families_of_statements_they_may_see(fresh_db):
    """A family's label and tables come from its statements' text: a reader sees a family only
    when it may see one of its statements (admins see all), and what reads families for
    readers (family_metrics, bottlenecks(), query(id), ask()) still shows them theirs."""
    db = scalar(fresh_db, "SELECT current_database()")
    tag = uuid.uuid4().hex[:6]
    roles = {k: f"optidb_{k}_{tag}" for k in ("alice", "bob", "carol")}
    su = fresh_db
    for name in roles.values():
        su.execute(f'CREATE ROLE "{name}" LOGIN')
    su.execute(f'GRANT optidb_reader TO "{roles["alice"]}", "{roles["bob"]}"')
    su.execute(f'GRANT optidb_admin TO "{roles["carol"]}"')
    for t in ("ledger", "payroll"):
        su.execute(f"CREATE TABLE {t} AS SELECT g AS id, g % 100 AS k "
                   "FROM generate_series(1, 20000) g")
        su.execute(f"GRANT SELECT ON {t} TO PUBLIC")
    try:
        with connect(db, user=roles["alice"]) as c:
            for i in range(3):
                c.execute("SELECT count(*) FROM ledger WHERE k = %s", (i,))
        with connect(db, user=roles["bob"]) as c:
            for i in range(3):
                c.execute("SELECT id FROM payroll WHERE id > %s ORDER BY id LIMIT 5", (i,))
                c.execute("SELECT count(*) FROM ledger WHERE k = %s", (i,))
        su.execute("SELECT * FROM optidb.scan()")
        su.execute("SELECT * FROM optidb.refresh()")
        family_of = dict(su.execute(
            "SELECT r.rolname || ' ' || split_part(q.norm_sql, ' ', 4), q.family_id "
            "FROM optidb.query q JOIN pg_roles r ON r.oid = q.userid "
            "WHERE q.norm_sql ~ 'FROM (ledger|payroll)'").fetchall())
        ledger = family_of[f"{roles['alice']} ledger"]
        payroll = family_of[f"{roles['bob']} payroll"]
        assert ledger and payroll and ledger != payroll, family_of
        assert family_of[f"{roles['bob']} ledger"] == ledger, family_of
        every = {r[0] for r in su.execute("SELECT id FROM optidb.family")}
        with connect(db, user=roles["alice"]) as c:
            mine = {r[0] for r in c.execute("SELECT id FROM optidb.family")}
            assert ledger in mine and payroll not in mine, (mine, ledger, payroll)
            # Exactly the families of the statements it sees.
            assert mine == {r[0] for r in c.execute(
                "SELECT DISTINCT family_id FROM optidb.query WHERE family_id IS NOT NULL")}
            metrics = {r[0] for r in c.execute("SELECT family_id FROM optidb.family_metrics")}
            assert metrics == {ledger}, metrics
            stmt = scalar(c, "SELECT id FROM optidb.query WHERE norm_sql ~ 'FROM ledger'")
            detail = scalar(c, "SELECT optidb.query(%s)", (stmt,))
            assert detail["family"]["id"] == ledger, detail["family"]
            families = {r[0]["family"]["id"] for r in c.execute(
                "SELECT evidence FROM optidb.bottlenecks(100) WHERE evidence->'family' <> 'null'")}
            assert families == {ledger}, families
            label = scalar(c, "SELECT label FROM optidb.family WHERE id = %s", (ledger,))
            answer = scalar(c, "SELECT answer FROM optidb.ask(%s)", (f"why is query {stmt} slow?",))
            assert f"It belongs to the family {label}." in answer, answer
        with connect(db, user=roles["bob"]) as c:
            assert {r[0] for r in c.execute("SELECT id FROM optidb.family")} >= {ledger, payroll}
        with connect(db, user=roles["carol"]) as c:
            assert {r[0] for r in c.execute("SELECT id FROM optidb.family")} == every
    finally:
        for name in roles.values():
            su.execute(f'DROP OWNED BY "{name}"')
            su.execute(f'DROP ROLE "{name}"')
