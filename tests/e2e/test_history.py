"""History for every statement (issue 27, part 3): each snapshot stores the deltas of every
statement that ran, not only the `top` it chooses for plans, so a statement that becomes slow
later has its history from before; older rows are merged per hour and day
(src/postgres/compaction.rs) with the same totals and percentiles; each reader sees only the
statements of its own roles."""

import uuid

import psycopg
import pytest

from conftest import connect, new_database, scalar

STATS = ("SELECT count, error_count, mean_ms, median_ms, min_ms, max_ms, p95_ms, p99_ms "
         "FROM optidb.execution_time_stats(%s)")


@pytest.fixture
def shop():
    """A new database with an application role (optidb_reader) whose tables are in schema
    shop, another reader role with statements of its own, and the superuser. Yields
    (db, superuser conn, app role, other role)."""
    tag = uuid.uuid4().hex[:6]
    app, other = f"app_{tag}", f"other_{tag}"
    with connect("postgres") as admin:
        for role in (app, other):
            admin.execute(f'CREATE ROLE "{role}" LOGIN IN ROLE optidb_reader')
        try:
            with new_database() as db, connect(db) as su:
                su.execute(f'CREATE SCHEMA shop AUTHORIZATION "{app}"')
                su.execute("CREATE TABLE shop.orders AS SELECT g AS id, g % 7 AS qty "
                           "FROM generate_series(1, 20000) g")
                su.execute(f'GRANT SELECT ON shop.orders TO "{app}"')
                yield db, su, app, other
        finally:
            admin.execute(f'DROP ROLE "{app}", "{other}"')


def run_quiet(db, app, times, fail=False):
    """The application's quiet statement: a prepared lookup by id, through EXECUTE with
    search_path = shop; with `fail`, one more execution raises division_by_zero."""
    with connect(db, user=app) as c:
        c.execute("SET search_path = shop")
        c.execute("PREPARE by_id(int) AS SELECT 100 / qty FROM orders WHERE id = $1")
        for i in range(times):
            c.execute(f"EXECUTE by_id({i % 6 + 1})")  # qty 1..6
        if fail:
            with pytest.raises(psycopg.errors.DivisionByZero):
                c.execute("EXECUTE by_id(7)")  # qty 0


def run_hot(db, role, times=3):
    """A costly statement that takes the single `top` slot."""
    with connect(db, user=role) as c:
        for _ in range(times):
            c.execute("SELECT count(*) FROM generate_series(1, 300000) g WHERE g % 3 = 0")


def quiet_id(su, app):
    ids = su.execute("SELECT id FROM optidb.query WHERE userid = %s::regrole "
                     "AND raw_sql LIKE '%%/ qty FROM orders WHERE id%%'", (app,)).fetchall()
    assert len(ids) == 1, su.execute("SELECT userid::regrole, raw_sql FROM optidb.query").fetchall()
    return ids[0][0]


def test_a_statement_outside_the_top_has_its_history(shop):
    db, su, app, other = shop
    su.execute("SELECT pg_stat_statements_reset()")
    run_quiet(db, app, 7, fail=True)
    run_hot(db, other)
    # One slot for plans, taken by the other role's costly statement.
    assert scalar(su, "SELECT queries_seen FROM optidb.snapshot(top => 1)") == 1

    # The quiet statement was recorded anyway: its owner reads its executions and percentiles.
    qid = quiet_id(su, app)
    assert qid is not None
    with connect(db, user=app) as c:
        count, errors, mean, median, low, high, p95, p99 = c.execute(STATS, (qid,)).fetchone()
        assert (count, errors) == (7, 1)
        assert 0 < low <= median <= p95 <= p99 <= high
        # The other role's statement is not the application's to see.
        assert {r[0] for r in c.execute("SELECT query_id FROM optidb.execution_time_stats()")} \
            == {qid}

    # It runs again, the other role does not: the next snapshot adds to its history.
    run_quiet(db, app, 5)
    su.execute("SELECT * FROM optidb.snapshot(top => 1)")
    with connect(db, user=app) as c:
        assert c.execute(STATS, (qid,)).fetchone()[:2] == (12, 1)
        assert scalar(c, "SELECT count(*) FROM optidb.latency WHERE query_id = %s", (qid,)) == 2
    # The other reader sees neither its rows nor its statistics.
    with connect(db, user=other) as c:
        with pytest.raises(psycopg.errors.NoDataFound):
            c.execute(STATS, (qid,))
        assert scalar(c, "SELECT count(*) FROM optidb.latency WHERE query_id = %s", (qid,)) == 0
        assert scalar(c, "SELECT count(*) FROM optidb.metric WHERE query_id = %s", (qid,)) == 0
        assert scalar(c, "SELECT count(*) FROM optidb.query WHERE id = %s", (qid,)) == 0


def test_compaction_keeps_the_totals_and_percentiles(shop):
    db, su, app, other = shop
    su.execute("SELECT pg_stat_statements_reset()")
    for times in (9, 4, 6):
        run_quiet(db, app, times, fail=times == 4)
        run_hot(db, other, 1)
        su.execute("SELECT * FROM optidb.snapshot(top => 1)")
    qid = quiet_id(su, app)
    assert scalar(su, "SELECT count(*) FROM optidb.latency WHERE query_id = %s", (qid,)) == 3
    stored = su.execute(STATS, (qid,)).fetchone()
    assert stored[:2] == (19, 1)
    metric = su.execute("SELECT sum(calls), sum(total_ms), sum(rows) FROM optidb.metric "
                        "WHERE query_id = %s", (qid,)).fetchone()
    assert metric[0] == 19

    # Ten days pass (the history and the passes are moved back): the next snapshot merges what
    # is more than a day old per hour, and what is more than a week old per day.
    with su.transaction():
        for table, column in (("optidb.latency", "captured_at"), ("optidb.metric", "captured_at"),
                              ("optidb.latency_day", "day"), ("optidb.scan_log", "started_at")):
            su.execute(f"UPDATE {table} SET {column} = {column} - interval '10 days'")
    su.execute("SELECT * FROM optidb.snapshot(top => 1)")

    rows = su.execute("SELECT captured_at = date_trunc('day', captured_at, 'UTC') "
                      "FROM optidb.latency WHERE query_id = %s", (qid,)).fetchall()
    # The three snapshots were taken within a minute: one day (two if midnight fell between).
    assert 1 <= len(rows) <= 2 and all(r[0] for r in rows), rows
    assert su.execute(STATS, (qid,)).fetchone() == pytest.approx(stored)
    assert scalar(su, "SELECT error_classes FROM optidb.latency WHERE query_id = %s "
                      "AND errors > 0", (qid,)) == {"22": 1}
    assert su.execute("SELECT sum(calls), sum(total_ms), sum(rows) FROM optidb.metric "
                      "WHERE query_id = %s", (qid,)).fetchone() == pytest.approx(metric)
    # Its owner still reads it; a second compaction changes nothing.
    with connect(db, user=app) as c:
        assert c.execute(STATS, (qid,)).fetchone() == pytest.approx(stored)
    before = su.execute("SELECT * FROM optidb.latency ORDER BY 1, 2").fetchall()
    su.execute("UPDATE optidb.scan_log SET started_at = started_at - interval '10 days'")
    su.execute("SELECT * FROM optidb.snapshot(top => 1)")
    assert su.execute("SELECT * FROM optidb.latency ORDER BY 1, 2").fetchall() == before


def test_the_metric_views_refresh_when_planned_in_parallel(shop):
    """With every statement's history the tables grow and a refresh of the metric views may be
    planned in parallel; latency_rollup() reads through SPI, which a parallel worker cannot."""
    db, su, app, other = shop
    run_quiet(db, app, 3)
    run_hot(db, other, 1)
    su.execute("SELECT * FROM optidb.snapshot()")
    for setting in ("parallel_setup_cost = 0", "parallel_tuple_cost = 0",
                    "min_parallel_table_scan_size = 0", "max_parallel_workers_per_gather = 2"):
        su.execute(f"SET {setting}")
    new_name = int(scalar(su, "SHOW server_version_num")) >= 160000
    su.execute(f"SET {'debug_parallel_query' if new_name else 'force_parallel_mode'} = on")
    refreshed = su.execute("SELECT view_name, error FROM optidb.refresh()").fetchall()
    assert refreshed and all(error is None for _, error in refreshed), refreshed
