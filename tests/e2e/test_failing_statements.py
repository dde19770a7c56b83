"""Statements that never complete are first-class (issue 23): pg_stat_statements records only
completed statements, so a query that always hits statement_timeout has no entry there; optidb's
hooks keep its text, search_path, failures, time until failure and SQLSTATE, and a scan files
it, shows it in bottlenecks() and query(), and captures its plan as its owner.

Roles: the application (no superuser) works in schema `app` through SET search_path; an admin
(optidb_admin, no superuser) scans; a reader (optidb_reader) sees only its own statements; a
hostile role (optidb_reader too) sees nothing of the others'; a plain role has no access."""

import uuid

import psycopg
import pytest

from conftest import HYPOPG, PORT, SOCKET, connect, new_database, scalar

TIMEOUT_MS = 300

# A self-join that runs for seconds on 200k rows (no pg_sleep: it has a plan worth advising).
SLOW = ("SELECT count(*) FROM big a JOIN big b ON b.grp = a.grp "
        "WHERE a.pad > {v} AND b.id > 10")


@pytest.fixture
def world():
    tag = uuid.uuid4().hex[:6]
    roles = {k: f"optidb_{k}_{tag}" for k in ("adm", "app", "reader", "mallory", "plain")}
    try:
        with new_database(extensions=("pg_stat_statements", *HYPOPG, "optidb")) as db:
            with connect(db) as su:
                for name in roles.values():
                    su.execute(f'CREATE ROLE "{name}" LOGIN')
                su.execute(f'GRANT optidb_admin TO "{roles["adm"]}"')
                su.execute(f'GRANT optidb_reader TO "{roles["reader"]}", "{roles["mallory"]}"')
                su.execute(f'CREATE SCHEMA app AUTHORIZATION "{roles["app"]}"')
                su.execute(f'GRANT USAGE ON SCHEMA app TO "{roles["reader"]}"')
            with connect(db, user=roles["app"]) as c:
                c.execute("SET search_path = app")
                c.execute("CREATE TABLE big AS SELECT g AS id, g % 1000 AS grp, "
                          "md5(g::text) AS pad FROM generate_series(1, 200000) g")
                c.execute("ANALYZE big")
                c.execute(f'GRANT SELECT ON big TO "{roles["reader"]}"')
            yield db, roles
    finally:
        with connect("postgres") as su:
            for name in roles.values():
                su.execute(f'DROP ROLE IF EXISTS "{name}"')


def app_session(db, roles, **kw):
    if kw:
        c = psycopg.connect(host=SOCKET, port=PORT, user=roles["app"], dbname=db,
                            autocommit=True, **kw)
    else:
        c = connect(db, user=roles["app"])
    c.execute("SET search_path = app")
    c.execute(f"SET statement_timeout = '{TIMEOUT_MS}ms'")
    return c


def times_out(c, sql, params=None):
    with pytest.raises(psycopg.errors.QueryCanceled):
        c.execute(sql, params)


def scan(db, roles):
    with connect(db, user=roles["adm"]) as adm:
        adm.execute("SELECT * FROM optidb.scan()")


def failing_rows(conn, pattern):
    return conn.execute(
        "SELECT query_id, query, calls, reason, evidence, confidence FROM optidb.bottlenecks(50) "
        "WHERE query LIKE %s ORDER BY query_id", (pattern,)).fetchall()


def test_a_statement_that_always_times_out_is_shown_planned_and_private(world):
    db, roles = world
    runs = 3
    # Simple protocol (no parameters: psycopg sends the text as is).
    with app_session(db, roles) as c:
        for _ in range(runs):
            times_out(c, SLOW.format(v="'8'"))
    # SQL-level PREPARE/EXECUTE.
    with app_session(db, roles) as c:
        c.execute("PREPARE slow(text) AS " + SLOW.format(v="$1"))
        for _ in range(runs):
            times_out(c, "EXECUTE slow('8')")
    # Extended protocol, a named prepared statement from the first execution.
    with app_session(db, roles, prepare_threshold=0) as c:
        for _ in range(runs):
            times_out(c, SLOW.format(v="%s"), ("8",))

    with connect(db) as su:
        # pg_stat_statements records completed statements only.
        assert scalar(su, "SELECT count(*) FROM pg_stat_statements "
                          "WHERE query LIKE '%big a JOIN big b%'") == 0
    scan(db, roles)

    with connect(db, user=roles["adm"]) as adm:
        rows = failing_rows(adm, "%big a JOIN big b%")
        assert rows, "the statement that never completes is not a bottleneck"
        failures = 0
        for qid, query, calls, reason, evidence, confidence in rows:
            f = evidence["failures"]
            failures += f["count"]
            assert calls == 0, query
            assert f["timeouts"] == f["count"] == f["executions"], f
            assert f["sqlstate"] == "57014", f
            # Time until failure: the timeout, give or take a loaded machine.
            assert TIMEOUT_MS <= f["mean_time_until_failure_ms"] < TIMEOUT_MS + 3000, f
            assert reason.startswith(
                f"never completes: {f['count']} of {f['count']} executions cancelled by "
                "statement_timeout after"), reason
            assert evidence["reasons"][0]["code"] == "never_completes"
            assert confidence >= 0.6
            detail = scalar(adm, "SELECT optidb.query(%s)", (qid,))
            assert detail["failures"]["timeouts"] == f["count"], detail["failures"]
            assert detail["raw_sql"].count("$") >= 1, detail["raw_sql"]  # normalized
            stats = adm.execute("SELECT count, error_count, error_rate "
                                "FROM optidb.execution_time_stats(%s)", (qid,)).fetchone()
            assert stats == (0, f["count"], 1.0), stats
            # Planned as its owner, in the search_path it ran in.
            plan = adm.execute(
                "SELECT p.search_path, p.path_source, r.rolname FROM optidb.plan p "
                "JOIN optidb.query q ON q.id = p.query_id JOIN pg_roles r ON r.oid = q.userid "
                "WHERE p.query_id = %s AND p.plan_json IS NOT NULL AND p.plan_kind = 'generic'",
                (qid,)).fetchone()
            assert plan is not None, f"no plan captured for {query}"
            assert plan[0] == "pg_catalog, app" and plan[1] == "recorded", plan
            assert plan[2] == roles["app"]
        assert failures == 3 * runs
        # No index makes this join cheap (its result is the cost): no advice is invented.

    # The reader sees only its own statements; the hostile role sees no text of others.
    with connect(db, user=roles["reader"]) as r:
        r.execute("SET search_path = app")
        with pytest.raises(psycopg.errors.DivisionByZero):
            r.execute("SELECT count(*) FROM big WHERE id / (grp - grp) = 1")
    scan(db, roles)
    with connect(db, user=roles["reader"]) as r:
        assert failing_rows(r, "%big a JOIN big b%") == []
        own = failing_rows(r, "%grp - grp%")
        assert len(own) == 1 and own[0][4]["failures"]["sqlstate"] == "22012"
    with connect(db, user=roles["mallory"]) as m:
        assert failing_rows(m, "%") == []
        for table in ("query", "latency", "sample", "plan"):
            assert scalar(m, f"SELECT count(*) FROM optidb.{table}") == 0, table
        with pytest.raises(psycopg.errors.NoDataFound):
            m.execute("SELECT optidb.query(%s)", (rows[0][0],))
    with connect(db, user=roles["plain"]) as p:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            p.execute("SELECT * FROM optidb.bottlenecks()")


def test_a_statement_that_fails_otherwise_is_failing_not_timing_out(world):
    db, roles = world
    with app_session(db, roles) as c:
        for _ in range(3):
            with pytest.raises(psycopg.errors.DivisionByZero):
                c.execute("SELECT count(*) FROM big WHERE id / (grp - grp) = 1")
    scan(db, roles)
    with connect(db, user=roles["adm"]) as adm:
        [(qid, query, calls, reason, evidence, _)] = failing_rows(adm, "%grp - grp%")
        f = evidence["failures"]
        assert (calls, f["count"], f["timeouts"], f["sqlstate"]) == (0, 3, 0, "22012"), f
        assert evidence["reasons"][0]["code"] == "fails"
        assert reason.startswith("never completes: 3 of 3 executions failed (SQLSTATE 22012)")
        assert "statement_timeout" not in reason and "times out" not in reason
        assert scalar(adm, "SELECT optidb.query(%s)", (qid,))["failures"]["timeouts"] == 0


@pytest.mark.hypopg
def test_a_statement_that_only_ever_times_out_gets_the_index_that_fixes_it(world):
    """A lookup by an unindexed column always cancelled by statement_timeout: pg_stat_statements
    never sees it, yet its time until failure makes it worth an index, advised for it."""
    db, roles = world
    with app_session(db, roles) as c, app_session(db, roles, prepare_threshold=0) as ext:
        c.execute("SET statement_timeout = '2ms'")
        ext.execute("SET statement_timeout = '2ms'")
        for i in range(3):
            times_out(c, f"SELECT id FROM big WHERE pad = md5('{i}x')")
            times_out(ext, "SELECT id FROM big WHERE pad = %s", (f"no-such-{i}",))
    scan(db, roles)
    with connect(db, user=roles["adm"]) as adm:
        qids = [r[0] for r in adm.execute(
            "SELECT id FROM optidb.query WHERE norm_sql LIKE %s",
            ("%FROM big WHERE pad = %",)).fetchall()]
        assert qids, "the statement was not filed"
        assert not scalar(adm, "SELECT count(*) FROM pg_stat_statements "
                               "WHERE query LIKE '%FROM big WHERE pad =%'")
        recs = adm.execute(
            "SELECT columns, query_ids, status, saving_ms_per_hour FROM optidb.recommendation "
            "WHERE tablename = 'big' AND kind = 'missing_index'").fetchall()
        served = [r for r in recs if r[0] == ["pad"] and set(r[1]) & set(qids)]
        assert served and served[0][2] == "open" and served[0][3] > 0, recs
