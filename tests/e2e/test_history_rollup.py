"""History for every statement, fast to read and to compact (issue 27, part 3):
execution_time_stats() reads whole days from the per-day rollup (optidb.latency_day,
src/postgres/latency/rollup.rs) with the same answer as from every history row; a pass compacts
under a lock of its own, so a concurrent snapshot() does not wait for it, and a pass cancelled
while compacting loses and doubles nothing."""

import threading
import time

import psycopg
import pytest

from conftest import connect, scalar, wait_for
from test_history import quiet_id, run_hot, run_quiet, shop  # noqa: F401 (fixture)

STATS = "SELECT * FROM optidb.execution_time_stats(NULL, %s, %s) ORDER BY query_id"

# Hand-made history as compaction leaves it, for every statement: a row a day 20 to 9 days
# ago, a row an hour for the hours 3 days ago, a row a minute 2 hours ago, with failures.
HISTORY = """
WITH stamps AS (
    SELECT t AS at FROM generate_series(date_trunc('day', now() - interval '20 days', 'UTC'),
                                        date_trunc('day', now() - interval '9 days', 'UTC'),
                                        interval '1 day') t
    UNION ALL
    SELECT t FROM generate_series(date_trunc('day', now() - interval '3 days', 'UTC'),
                                  date_trunc('day', now() - interval '3 days', 'UTC')
                                      + interval '23 hours', interval '1 hour') t
    UNION ALL
    SELECT t FROM generate_series(date_trunc('hour', now() - interval '2 hours', 'UTC'),
                                  date_trunc('hour', now() - interval '2 hours', 'UTC')
                                      + interval '59 minutes', interval '1 minute') t)
INSERT INTO optidb.latency (query_id, captured_at, calls, errors, error_classes, sum_us,
                            min_us, max_us, buckets, counts)
SELECT q.id, s.at, 6, e.n, CASE WHEN e.n > 0 THEN '{"22": 1, "57": 1}' ELSE '{}' END::jsonb,
       600.0 + extract(minute FROM s.at), 20.0 + extract(hour FROM s.at), 400.0,
       ARRAY[250 + extract(hour FROM s.at)::int, 400], ARRAY[2, 4]::int8[]
FROM optidb.query q, stamps s,
     LATERAL (SELECT CASE WHEN extract(minute FROM s.at)::int % 7 = 0 THEN 2 ELSE 0 END AS n) e
"""

# Ranges that cross day, hour and minute rows, aligned to days or not (relative to now).
RANGES = [
    (None, None),
    ("now() - interval '15 days'", None),
    (None, "now() - interval '5 days'"),
    ("date_trunc('day', now() - interval '12 days', 'UTC')",
     "date_trunc('day', now() - interval '2 days', 'UTC')"),
    ("now() - interval '13 days 5 hours'", "now() - interval '90 minutes'"),
    ("now() - interval '3 days 2 hours'", "now() - interval '1 day 7 hours'"),
    ("now() - interval '2 hours'", None),
]


def bounds(su, start, end):
    return su.execute(f"SELECT {start or 'NULL::timestamptz'}, "
                      f"{end or 'NULL::timestamptz'}").fetchone()


def exact(su, role, start, end):
    """execution_time_stats() from every history row: the rollup emptied in a transaction
    rolled back, read as `role`."""
    rows = None
    with su.transaction():
        su.execute("DELETE FROM optidb.latency_day")
        su.execute(f'SET LOCAL ROLE "{role}"')
        rows = su.execute(STATS, (start, end)).fetchall()
        raise psycopg.Rollback()
    return rows


def assert_same(fast, slow):
    assert [r[0] for r in fast] == [r[0] for r in slow]
    for f, s in zip(fast, slow):
        assert f == pytest.approx(s, rel=1e-9), (f, s)


def test_the_rollup_answers_as_every_row_does(shop):  # noqa: F811 (fixture)
    db, su, app, other = shop
    su.execute("SELECT pg_stat_statements_reset()")
    run_quiet(db, app, 7, fail=True)
    run_hot(db, other)
    su.execute("SELECT * FROM optidb.snapshot(top => 1)")
    qid = quiet_id(su, app)
    # Rows written by hand: the rollup is emptied, the next passes build it again (today's
    # under the snapshot lock, the older days under the compaction lock).
    su.execute(HISTORY)
    su.execute("DELETE FROM optidb.latency_day")
    su.execute("SELECT * FROM optidb.snapshot(top => 1)")
    run_quiet(db, app, 5, fail=True)  # added to today's rollup row by the next pass
    su.execute("SELECT * FROM optidb.snapshot(top => 1)")
    days = scalar(su, "SELECT count(*) FROM optidb.latency_day WHERE query_id = %s", (qid,))
    assert days >= 12 + 1 + 1, days  # 12 days, the hourly day, today (and 2 hours ago's)

    for start, end in RANGES:
        s, e = bounds(su, start, end)
        with connect(db, user=app) as c:
            fast = c.execute(STATS, (s, e)).fetchall()
        slow = exact(su, app, s, e)
        assert fast and {r[0] for r in fast} == {qid}, (start, end, fast)
        assert_same(fast, slow)
        # And for the superuser, who sees every statement.
        assert_same(su.execute(STATS, (s, e)).fetchall(), exact(su, "postgres", s, e))
    # The whole history: the run statements' and the hand-made rows' (with their failures).
    count, errors = su.execute("SELECT count, error_count FROM optidb.execution_time_stats(%s)",
                               (qid,)).fetchone()
    # 12 executions and 2 failures run, 96 hand-made rows of 6 executions each, 45 of them
    # (every day's, every hour's, 9 minutes') with 2 failures.
    assert (count, errors) == (12 + 96 * 6, 2 + 45 * 2)

    # The second reader sees nothing of the application's, in the rollup either.
    with connect(db, user=other) as c:
        assert qid not in {r[0] for r in c.execute(STATS, (None, None)).fetchall()}
        assert scalar(c, "SELECT count(*) FROM optidb.latency_day WHERE query_id = %s",
                      (qid,)) == 0
        with pytest.raises(psycopg.errors.NoDataFound):
            c.execute("SELECT * FROM optidb.execution_time_stats(%s)", (qid,))


def totals(su, qid):
    return (su.execute("SELECT count(*), sum(calls), sum(errors), sum(sum_us) "
                       "FROM optidb.latency WHERE query_id = %s", (qid,)).fetchone(),
            su.execute("SELECT sum(calls), sum(total_ms), sum(rows) FROM optidb.metric "
                       "WHERE query_id = %s", (qid,)).fetchone(),
            su.execute("SELECT * FROM optidb.execution_time_stats(%s)", (qid,)).fetchone())


def test_a_pass_cancelled_while_compacting_loses_nothing_and_blocks_no_snapshot(shop):  # noqa: F811
    db, su, app, other = shop
    su.execute("SELECT pg_stat_statements_reset()")
    run_quiet(db, app, 4, fail=True)
    su.execute("SELECT * FROM optidb.snapshot()")
    qid = quiet_id(su, app)
    # A row a minute in the hour before the last one (the one the next pass compacts), and
    # the previous pass made to look as if it ran in it.
    hour = "date_trunc('hour', now() - interval '2 hours', 'UTC')"
    su.execute(f"""
        INSERT INTO optidb.latency (query_id, captured_at, calls, errors, sum_us, min_us, max_us,
                                    buckets, counts)
        SELECT %s, {hour} + m * interval '1 minute', 3, 0, 300.0, 50.0, 150.0,
               ARRAY[300, 320], ARRAY[1, 2]::int8[]
        FROM generate_series(0, 29) m""", (qid,))
    su.execute(f"""
        INSERT INTO optidb.metric (query_id, captured_at, calls, total_ms, mean_ms, rows,
                                   shared_blks_hit, shared_blks_read, temp_blks_read,
                                   temp_blks_written)
        SELECT %s, {hour} + m * interval '1 minute', 3, 0.3, 0.1, 3, 5, 0, 0, 0
        FROM generate_series(0, 29) m""", (qid,))
    su.execute("DELETE FROM optidb.latency_day")  # hand-made rows: built again
    su.execute(f"UPDATE optidb.scan_log SET started_at = {hour} + interval '1 minute' "
               "WHERE id = (SELECT max(id) FROM optidb.scan_log)")
    before = totals(su, qid)
    assert before[0][0] >= 31

    # Another session holds one of the metric rows: the pass compacts the latency rows, then
    # waits on it, halfway through its compaction; it is cancelled there.
    with connect(db) as blocker, connect(db) as passing, connect(db) as other_pass:
        blocker.execute("BEGIN")
        blocker.execute(f"SELECT 1 FROM optidb.metric WHERE query_id = %s "
                        f"AND captured_at = {hour} FOR UPDATE", (qid,))
        pid = scalar(passing, "SELECT pg_backend_pid()")
        outcome = {}

        def compacting_pass():
            try:
                passing.execute("SELECT * FROM optidb.snapshot()")
                outcome["result"] = "finished"
            except psycopg.errors.QueryCanceled:
                outcome["result"] = "cancelled"

        thread = threading.Thread(target=compacting_pass)
        thread.start()
        wait_for("the pass waits on the held row",
                 lambda: scalar(su, "SELECT wait_event_type = 'Lock' FROM pg_stat_activity "
                                    "WHERE pid = %s", (pid,)))
        # A concurrent snapshot() neither waits for the compaction nor does it again.
        t0 = time.monotonic()
        other_pass.execute("SELECT * FROM optidb.snapshot()")
        assert time.monotonic() - t0 < 10
        assert scalar(su, "SELECT wait_event_type = 'Lock' FROM pg_stat_activity "
                          "WHERE pid = %s", (pid,))
        su.execute("SELECT pg_cancel_backend(%s)", (pid,))
        thread.join(30)
        assert outcome == {"result": "cancelled"}
        blocker.execute("ROLLBACK")

    # Nothing lost, nothing counted twice, nothing compacted.
    assert totals(su, qid) == before
    # The next pass compacts that hour: one row instead of 30, same totals and statistics.
    su.execute("SELECT * FROM optidb.snapshot()")
    after = totals(su, qid)
    assert after[0][0] == before[0][0] - 29
    assert after[0][1:] == pytest.approx(before[0][1:])
    assert after[1] == pytest.approx(before[1])
    assert after[2] == pytest.approx(before[2])
    # The application reads the same through the rollup as from every row.
    with connect(db, user=app) as c:
        fast = c.execute(STATS, (None, None)).fetchall()
    assert_same(fast, exact(su, app, None, None))
