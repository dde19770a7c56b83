"""Materialized metric views and optidb.refresh(): contents that match the history they come
from, one refresh at a time, readers never blocked, failures logged with old contents kept."""

import psycopg
import pytest

from conftest import connect, scalar


def workload(conn, n=40):
    conn.execute("CREATE TABLE IF NOT EXISTS mv_t AS SELECT g AS id FROM generate_series(1, 5000) g")
    conn.execute("SELECT pg_stat_statements_reset()")
    for i in range(n):
        conn.execute(f"SELECT count(*) AS mv_probe FROM mv_t WHERE id > {i}")
    # One statement (one queryid) that succeeds 8 times and fails twice.
    for d in (1, 2, 0, 3, 4, 5, 0, 6, 7, 8):
        try:
            conn.execute(f"SELECT count(*) / {d} AS mv_mixed FROM mv_t")
        except psycopg.errors.DivisionByZero:
            pass


def probe_id(conn, marker):
    return scalar(conn, "SELECT id FROM optidb.query WHERE norm_sql LIKE %s", (f"%{marker}%",))


def test_refresh_fills_every_view_consistently_with_history(fresh_db):
    c = fresh_db
    workload(c)
    c.execute("SELECT * FROM optidb.scan()")
    rows = c.execute("SELECT view_name, rows, error FROM optidb.refresh()").fetchall()
    # One list (surface::MATERIALIZED_VIEWS): refresh() walks it in its order, per-statement
    # views first, and it names exactly the materialized views sql/views.sql creates.
    registry = [r[0] for r in c.execute(
        "SELECT substr(name, 8) FROM optidb.surface() WHERE kind = 'materialized view'")]
    assert [r[0] for r in rows] == registry
    assert registry == ["mv_query_metrics", "mv_query_metrics_hourly",
                        "mv_query_metrics_daily", "mv_table_metrics"]
    assert set(registry) == {r[0] for r in c.execute(
        "SELECT matviewname::text FROM pg_matviews WHERE schemaname = 'optidb'")}
    assert all(err is None and n is not None for _, n, err in rows), rows
    qid = probe_id(c, "mv_probe FROM")
    m = c.execute("SELECT execution_count, mean_ms, p50_ms, p95_ms, p99_ms, min_ms, max_ms, "
                  "total_ms, success_rate, failure_rate, rows, shared_hit_ratio, last_updated "
                  "FROM optidb.query_metrics WHERE query_id = %s", (qid,)).fetchone()
    assert m is not None, "the probe statement is missing from query_metrics"
    live = c.execute("SELECT count, mean_ms, median_ms, p95_ms, p99_ms, min_ms, max_ms "
                     "FROM optidb.execution_time_stats(%s)", (qid,)).fetchone()
    assert m[0] == 40 == live[0]
    for got, want in zip(m[1:7], live[1:7]):
        assert got == pytest.approx(want, rel=1e-9)
    assert m[5] <= m[2] <= m[3] <= m[4] <= m[6]
    assert m[8] == 1.0 and m[9] == 0.0
    assert m[10] == 40  # rows from pg_stat_statements: one per count(*)
    assert 0 <= m[11] <= 1
    mixed = c.execute("SELECT execution_count, success_rate, failure_rate FROM optidb.query_metrics "
                      "WHERE query_id = %s", (probe_id(c, "mv_mixed"),)).fetchone()
    assert mixed == (10, 0.8, pytest.approx(0.2))
    hourly = c.execute("SELECT sum(execution_count), count(*) FROM optidb.query_metrics_hourly "
                       "WHERE query_id = %s", (qid,)).fetchone()
    daily = c.execute("SELECT sum(execution_count) FROM optidb.query_metrics_daily "
                      "WHERE query_id = %s", (qid,)).fetchone()
    assert hourly[0] == 40 and daily[0] == 40
    assert scalar(c, "SELECT count(*) FROM optidb.table_metrics WHERE relname = 'mv_t'") == 1
    logged = c.execute("SELECT view_name, rows, error FROM optidb.refresh_log ORDER BY id").fetchall()
    assert logged == [(v, n, None) for v, n, _ in rows]


def test_refresh_of_one_view_and_unknown_names(fresh_db):
    rows = fresh_db.execute("SELECT view_name FROM optidb.refresh('optidb.mv_table_metrics')").fetchall()
    assert rows == [("mv_table_metrics",)]
    with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
        fresh_db.execute("SELECT * FROM optidb.refresh('mv_query_metrics; DROP TABLE x')")
    assert "mv_query_metrics, " in str(e.value.diag.message_hint)


def test_second_refresh_waits_at_most_lock_timeout_and_readers_are_not_blocked(fresh_db):
    c = fresh_db
    db = scalar(c, "SELECT current_database()")
    workload(c, 5)
    c.execute("SELECT * FROM optidb.scan()")
    c.execute("SELECT * FROM optidb.refresh()")  # populated: later refreshes are CONCURRENTLY
    holder = connect(db)
    try:
        holder.autocommit = False
        concurrently = holder.execute("SELECT bool_and(concurrent) FROM optidb.refresh()").fetchone()[0]
        assert concurrently
        # The holder's transaction keeps the refresh lock (and the views' refresh locks).
        with connect(db) as other:
            other.execute("SET optidb.lock_timeout = '300ms'")
            with pytest.raises(psycopg.errors.LockNotAvailable) as e:
                other.execute("SELECT * FROM optidb.refresh()")
            assert "another optidb.refresh() is running" in str(e.value)
            # The caller's own lock_timeout is untouched by the failed attempt.
            assert scalar(other, "SHOW lock_timeout") == "0"
            other.execute("SET statement_timeout = '2s'")
            assert scalar(other, "SELECT count(*) FROM optidb.query_metrics") >= 1
    finally:
        holder.rollback()
        holder.close()


def test_interrupted_refresh_keeps_previous_contents_and_is_logged(fresh_db):
    c = fresh_db
    db = scalar(c, "SELECT current_database()")
    workload(c, 5)
    c.execute("SELECT * FROM optidb.scan()")
    c.execute("SELECT * FROM optidb.refresh()")
    before = c.execute("SELECT query_id, execution_count FROM optidb.query_metrics ORDER BY 1").fetchall()
    workload(c, 7)  # new history the interrupted refresh would have shown
    c.execute("SELECT * FROM optidb.scan()")
    blocker = connect(db)
    blocker.autocommit = False
    try:
        # The per-statement views read optidb.latency: their refresh waits, then times out.
        blocker.execute("LOCK optidb.latency IN ACCESS EXCLUSIVE MODE")
        c.execute("SET optidb.refresh_timeout = '500ms'")
        rows = {v: (n, err) for v, _, n, _, err in c.execute("SELECT * FROM optidb.refresh()")}
    finally:
        blocker.rollback()
        blocker.close()
    for view in ("mv_query_metrics", "mv_query_metrics_hourly", "mv_query_metrics_daily"):
        assert rows[view][0] is None
        assert "timed out after 500 ms (optidb.refresh_timeout)" in rows[view][1]
    assert rows["mv_table_metrics"][1] is None, "the other views must still refresh"
    after = c.execute("SELECT query_id, execution_count FROM optidb.query_metrics ORDER BY 1").fetchall()
    assert after == before, "a failed refresh must leave the previous contents"
    err = scalar(c, "SELECT error FROM optidb.refresh_log WHERE view_name = 'mv_query_metrics' "
                    "ORDER BY id DESC LIMIT 1")
    assert "timed out" in err
    c.execute("RESET optidb.refresh_timeout")
    c.execute("SELECT * FROM optidb.refresh('mv_query_metrics')")
    assert c.execute("SELECT query_id, execution_count FROM optidb.query_metrics "
                     "ORDER BY 1").fetchall() != before
