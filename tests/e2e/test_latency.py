"""Execution-time statistics recorded by optidb's own hooks: percentile accuracy against the
executor's exact per-statement times, failure counting per queryid, history over time ranges,
and survival of restarts."""

import os
import re
import subprocess
import time

import psycopg
import pytest

from conftest import SOCKET, connect, own_cluster, own_data, own_port, scalar

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The restart tests' own cluster (one at a time), away from the suite's server.
RESTART_PORT = own_port(int(os.environ.get("OPTIDB_E2E_RESTART_PORT", "55434")))


def counters(conn, pattern):
    """Live counters of the statements whose pg_stat_statements text matches pattern."""
    return conn.execute(
        "SELECT c.calls, c.errors, c.error_classes FROM optidb.latency_counters() c "
        "JOIN pg_stat_statements s ON s.queryid = c.queryid AND s.userid = c.userid "
        "AND s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "WHERE s.query LIKE %s", (pattern,)).fetchall()


def test_failures_are_counted_per_queryid_with_sqlstate_class(fresh_db):
    conn = fresh_db
    conn.execute("CREATE TABLE u (id int PRIMARY KEY)")
    for i in range(5):
        conn.execute(f"SELECT 10 / {i + 1}")          # 5 successes
    for _ in range(3):
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 10 / 0")            # same queryid: 3 failures
    conn.execute("INSERT INTO u VALUES (1)")
    for _ in range(2):
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO u VALUES (1)")
    conn.execute("SET statement_timeout = '50ms'")
    for _ in range(2):
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(1.0)")  # numeric, same queryid as 0.01 below
    conn.execute("RESET statement_timeout")
    conn.execute("SELECT pg_sleep(0.01)")

    [(calls, errors, classes)] = counters(conn, "SELECT $1 / $2")
    assert (calls, errors, classes) == (5, 3, {"22": 3})
    [(calls, errors, classes)] = counters(conn, "INSERT INTO u VALUES ($1)")
    assert (calls, errors, classes) == (1, 2, {"23": 2})
    [(calls, errors, classes)] = counters(conn, "SELECT pg_sleep($1)")
    assert (calls, errors, classes) == (1, 2, {"57": 2})

    # After a scan the same numbers are history, with the success rate right to the count.
    conn.execute("SELECT * FROM optidb.scan()")
    row = conn.execute(
        "SELECT e.count, e.error_count, e.error_rate FROM optidb.execution_time_stats() e "
        "JOIN optidb.query q ON q.id = e.query_id WHERE q.norm_sql = 'SELECT $1 / $2'").fetchone()
    assert row == (5, 3, pytest.approx(3 / 8))


def test_errors_pass_through_the_hooks_unchanged(fresh_db):
    """optidb's hooks sit on every statement's path: an error raised below them must reach the
    client exactly as PostgreSQL raised it, with the fields drivers and ORMs read."""
    conn = fresh_db
    conn.execute("CREATE TABLE u (id int PRIMARY KEY)")
    conn.execute("INSERT INTO u VALUES (1)")
    with pytest.raises(psycopg.errors.UniqueViolation) as caught:
        conn.execute("INSERT INTO u VALUES (1)")
    diag = caught.value.diag
    assert (diag.schema_name, diag.table_name, diag.constraint_name) == ("public", "u", "u_pkey")
    assert diag.message_detail == "Key (id)=(1) already exists."
    assert diag.source_function == "_bt_check_unique"
    with pytest.raises(psycopg.errors.DivisionByZero) as caught:
        conn.execute("DO $$ BEGIN PERFORM 1 / 0; END $$")
    assert "PL/pgSQL function inline_code_block line 1 at PERFORM" in caught.value.diag.context
    assert caught.value.diag.message_detail is None


def test_only_top_level_statements_are_recorded_whatever_errors_happen_below(fresh_db):
    """Levels left by an ERROR are restored: by a subtransaction's abort when the error is
    caught (EXCEPTION block, ROLLBACK TO SAVEPOINT), by the transaction's end otherwise; COMMIT
    and ROLLBACK inside a procedure keep its statements nested."""
    conn = fresh_db
    conn.execute("SET pg_stat_statements.track = 'all'")  # nested ones get queryids we can see
    # One single-row table per statement: aliases and constants do not tell queryids apart.
    probes = ("after_swallow", "after_savepoint", "after_do", "after_call")
    nested = ("swallowed", "failing", "in_txn_a", "in_txn_b", "in_txn_c")
    for table in probes + nested:
        conn.execute(f"CREATE TABLE {table} AS SELECT 1 AS v")
    conn.execute("""CREATE FUNCTION swallow() RETURNS int LANGUAGE plpgsql AS $$
        BEGIN
            BEGIN PERFORM 1 / (v - 1) FROM swallowed; EXCEPTION WHEN division_by_zero THEN NULL; END;
            RETURN 1;
        END $$""")
    conn.execute("CREATE FUNCTION fail() RETURNS int LANGUAGE sql "
                 "AS 'SELECT 1 / (v - 1) FROM failing'")
    conn.execute("""CREATE PROCEDURE txn() LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM v FROM in_txn_a; COMMIT; PERFORM v FROM in_txn_b; ROLLBACK;
            PERFORM v FROM in_txn_c;
        END $$""")
    conn.execute("BEGIN")
    conn.execute("SELECT swallow()")
    conn.execute("SELECT v FROM after_swallow")
    conn.execute("SAVEPOINT s")
    with pytest.raises(psycopg.errors.DivisionByZero):
        conn.execute("SELECT fail()")
    conn.execute("ROLLBACK TO SAVEPOINT s")
    conn.execute("SELECT v FROM after_savepoint")
    conn.execute("COMMIT")
    with pytest.raises(psycopg.errors.DivisionByZero):
        conn.execute("DO $$ BEGIN PERFORM fail(); END $$")
    conn.execute("SELECT v FROM after_do")
    conn.execute("CALL txn()")
    conn.execute("SELECT v FROM after_call")

    for table in probes:
        assert counters(conn, f"SELECT v FROM {table}") == [(1, 0, {})], table
    assert counters(conn, "SELECT swallow()") == [(1, 0, {})]
    for table in nested:
        assert counters(conn, f"%FROM {table}") == [], table


def test_a_parallel_query_counts_once_per_execution(fresh_db):
    """Parallel workers run parts of the leader's statement under its queryid."""
    conn = fresh_db
    conn.execute("CREATE TABLE big AS SELECT g AS id FROM generate_series(1, 200000) g")
    conn.execute("ANALYZE big")
    for setting in ("parallel_setup_cost = 0", "parallel_tuple_cost = 0",
                    "min_parallel_table_scan_size = 0", "max_parallel_workers_per_gather = 2"):
        conn.execute(f"SET {setting}")
    plan = "\n".join(r[0] for r in conn.execute(
        "EXPLAIN (ANALYZE, COSTS OFF) SELECT count(*) FROM big WHERE id % 7 = 0"))
    assert re.search(r"Workers Launched: [12]", plan), plan
    for _ in range(5):
        conn.execute("SELECT count(*) FROM big WHERE id % 7 = 0")
    assert counters(conn, "SELECT count(*) FROM big WHERE id % $1 = $2") == [(5, 0, {})]


def test_percentiles_match_exact_executor_times_within_2_percent(fresh_db):
    """100,000 statements with controlled durations (work sizes from 70 us to 2 ms); the exact
    per-statement executor times come from auto_explain, which reads the same instrumentation
    (microsecond resolution, so the shortest statements are kept above 50 us)."""
    conn = fresh_db
    log = os.path.join(os.environ.get("OPTIDB_PGDATA", "/tmp/optidb-e2e/data"), "server.log")
    start = os.path.getsize(log)
    conn.execute("LOAD 'auto_explain'")
    conn.execute("SET auto_explain.log_min_duration = 0")
    conn.execute("SET auto_explain.log_nested_statements = on")
    conn.execute("SET optidb.track_nested = on")
    conn.execute("SET pg_stat_statements.track = 'all'")
    conn.execute("SET client_min_messages = warning")
    # 60% / 30% / 8% / 2% of four work sizes, interleaved deterministically.
    conn.execute("""
        DO $$
        DECLARE n int;
        BEGIN
            FOR i IN 1..100000 LOOP
                n := CASE WHEN (i * 7919) % 100 < 60 THEN 1000
                          WHEN (i * 7919) % 100 < 90 THEN 3000
                          WHEN (i * 7919) % 100 < 98 THEN 10000
                          ELSE 30000 END;
                PERFORM count(*) AS optidb_accuracy_probe FROM generate_series(1, n);
            END LOOP;
        END $$""")
    conn.execute("RESET auto_explain.log_min_duration")
    time.sleep(0.5)
    with open(log, "rb") as f:
        f.seek(start)
        text = f.read().decode(errors="replace")
    exact = sorted(float(m) for m in re.findall(
        r"duration: ([0-9.]+) ms  plan:\n\tQuery Text: SELECT count\(\*\) AS optidb_accuracy_probe",
        text))
    assert len(exact) == 100000, len(exact)

    def pct(p):
        return exact[max(1, int(-(-p * len(exact) // 1))) - 1]

    conn.execute("SET optidb.explain_top_k = 0")
    conn.execute("SELECT * FROM optidb.scan(1000)")
    stats = conn.execute(
        "SELECT e.count, e.median_ms, e.p95_ms, e.p99_ms FROM optidb.execution_time_stats() e "
        "JOIN optidb.query q ON q.id = e.query_id "
        "WHERE q.raw_sql LIKE 'SELECT count(*) AS optidb_accuracy_probe%'").fetchone()
    assert stats is not None
    count, m50, m95, m99 = stats
    assert count == 100000
    for measured, p in [(m50, 0.5), (m95, 0.95), (m99, 0.99)]:
        assert measured == pytest.approx(pct(p), rel=0.02), (p, measured, pct(p))


def test_time_ranges_select_history(fresh_db):
    conn = fresh_db
    for _ in range(4):
        conn.execute("SELECT pg_sleep(0.001)")
    conn.execute("SELECT * FROM optidb.scan()")
    t_mid = scalar(conn, "SELECT clock_timestamp()")
    for _ in range(6):
        conn.execute("SELECT pg_sleep(0.001)")
    conn.execute("SELECT * FROM optidb.scan()")
    qid = scalar(conn, "SELECT id FROM optidb.query WHERE norm_sql = 'SELECT pg_sleep($1)'")

    def count(start, end):
        return scalar(conn, "SELECT count FROM optidb.execution_time_stats(%s, %s, %s)",
                      (qid, start, end))
    assert count(None, None) == 10
    assert count(None, t_mid) == 4
    assert count(t_mid, None) == 6
    with pytest.raises(psycopg.Error) as e:
        conn.execute("SELECT * FROM optidb.execution_time_stats(%s, now(), now() - interval '1 day')", (qid,))
    assert e.value.sqlstate == "22023"
    with pytest.raises(psycopg.Error) as e:
        conn.execute("SELECT * FROM optidb.execution_time_stats(424242)")
    assert e.value.sqlstate == "P0002"
    # bottlenecks and query() show the percentiles too.
    p95 = scalar(conn, "SELECT p95_ms FROM optidb.bottlenecks(50) WHERE query_id = %s", (qid,))
    assert 1.0 <= p95 < 50
    assert scalar(conn, "SELECT optidb.query(%s) -> 'latency' ->> 'count'", (qid,)) == "10"


def test_memory_view_reports_capacity(fresh_db):
    row = fresh_db.execute("SELECT entries, max_entries, entry_bytes, evictions "
                           "FROM optidb.memory()").fetchone()
    # The table never holds more than its capacity (it evicts instead; the whole suite shares
    # it, so evictions may have happened). An entry is a histogram of a few hundred buckets
    # plus counters: kilobytes, not bytes, nor tens of kilobytes.
    assert 1 <= row[0] <= row[1] == 1000 and 4096 <= row[2] <= 8192 and row[3] >= 0


def test_counters_survive_clean_restart_and_recording_survives_a_crash():
    """Own cluster: restarts must not disturb the other tests' server."""
    data = own_data(f"restart-test-{RESTART_PORT}")
    subprocess.run(["rm", "-rf", os.path.dirname(data)], check=True)
    env = dict(os.environ, OPTIDB_PGDATA=data, OPTIDB_PGPORT=str(RESTART_PORT))
    cluster = os.path.join(ROOT, "tests/scripts/cluster.sh")
    subprocess.run(["bash", cluster, "start"], env=env, check=True)
    try:
        def conn():
            return psycopg.connect(host=SOCKET, port=RESTART_PORT, user="postgres",
                                   dbname="postgres", autocommit=True, prepare_threshold=None)

        def calls(c):
            return scalar(c, "SELECT coalesce(sum(c.calls), 0) FROM optidb.latency_counters() c "
                             "JOIN pg_stat_statements s USING (queryid) "
                             "WHERE s.query = 'SELECT $1 + $2 AS restart_probe'")
        def failures(c):
            return c.execute(
                "SELECT c.errors, c.error_classes FROM optidb.latency_counters() c "
                "JOIN pg_stat_statements s USING (queryid) "
                "WHERE s.query = 'SELECT $1 / $2 AS restart_failing'").fetchone()
        with conn() as c:
            c.execute("CREATE EXTENSION pg_stat_statements")
            c.execute("CREATE EXTENSION optidb")
            for i in range(25):
                c.execute(f"SELECT {i} + 1 AS restart_probe")
            assert calls(c) == 25
            c.execute("SELECT 1 / 1 AS restart_failing")
            for _ in range(2):
                with pytest.raises(psycopg.errors.DivisionByZero):
                    c.execute("SELECT 1 / 0 AS restart_failing")
            assert failures(c) == (2, {"22": 2})
        subprocess.run(["bash", cluster, "restart"], env=env, check=True)
        with conn() as c:
            assert calls(c) == 25, "counters lost across a clean restart"
            assert failures(c) == (2, {"22": 2}), "failures lost across a clean restart"
            # Scanned only now: the slowest execution's text can only come from the dump.
            c.execute("SELECT * FROM optidb.scan()")
            assert "1 / 1" in scalar(c, "SELECT slowest_sql FROM optidb.query "
                                        "WHERE norm_sql = 'SELECT $1 / $2 AS restart_failing'")
            pid = scalar(c, "SELECT pg_backend_pid()")
        os.kill(pid, 9)  # crash: the postmaster reinitializes shared memory
        # A session may still open before the postmaster has noticed the crash (then it is
        # ended with the others, or the next one finds recovery running): retry the whole probe
        # until it runs in the new shared memory, where pg_stat_statements starts empty (its
        # file was read and removed at the clean restart).
        deadline = time.time() + 30
        while True:
            try:
                with conn() as c:
                    if scalar(c, "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
                                 "WHERE query = 'SELECT $1 + $2 AS restart_probe'") >= 25:
                        raise psycopg.OperationalError("the crash is not handled yet")
                    for i in range(3):
                        c.execute(f"SELECT {i} + 1 AS restart_probe")
                    recorded = calls(c)
                break
            except psycopg.OperationalError:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
        assert recorded >= 3, "not recording after crash recovery"
    finally:
        subprocess.run(["bash", cluster, "stop"], env=env, check=False)


def test_a_counters_file_of_another_format_or_torn_is_refused_with_a_log_line():
    """The file a clean stop writes, altered while the server is down: the previous format
    version, then a torn body, then junk. Each start refuses it whole with a LOG line, deletes
    it and records afresh: no crash, no counters read at the wrong offsets."""
    name = f"restart-format-{RESTART_PORT}"
    with own_cluster(name, RESTART_PORT, shift=False) as port:
        data = own_data(name)
        env = dict(os.environ, OPTIDB_PGDATA=data, OPTIDB_PGPORT=str(port))
        cluster = os.path.join(ROOT, "tests/scripts/cluster.sh")
        stat = os.path.join(data, "pg_stat", "optidb_latency.stat")
        log = os.path.join(data, "server.log")

        def probe_calls():
            with connect("postgres", port=port) as c:
                return scalar(c, "SELECT coalesce(sum(c.calls), 0) FROM optidb.latency_counters() c "
                                 "JOIN pg_stat_statements s USING (queryid) "
                                 "WHERE s.query = 'SELECT $1 + $2 AS format_probe'")

        with connect("postgres", port=port) as c:
            c.execute("CREATE EXTENSION pg_stat_statements")
            c.execute("CREATE EXTENSION optidb")
            for i in range(7):
                c.execute(f"SELECT {i} + 1 AS format_probe")
        subprocess.run(["bash", cluster, "restart"], env=env, check=True)
        assert probe_calls() == 7, "a file of this format must load"
        for alter, said in (
                (lambda b: b[:8] + (int.from_bytes(b[8:16], "little") - 1).to_bytes(8, "little")
                 + b[16:], "written by another optidb or PostgreSQL version (format "),
                (lambda b: b[:-100], "truncated: "),
                (lambda b: b"junk", "not an optidb latency file")):
            with connect("postgres", port=port) as c:
                c.execute("SELECT 1 + 1 AS format_probe")
            subprocess.run(["bash", cluster, "stop"], env=env, check=True)
            with open(stat, "r+b") as f:  # written by the clean stop; keeps its owner
                altered = alter(f.read())
                f.seek(0)
                f.truncate()
                f.write(altered)
            logged = os.path.getsize(log)
            subprocess.run(["bash", cluster, "start"], env=env, check=True)
            with open(log) as f:
                f.seek(logged)
                lines = [line for line in f if "optidb_latency.stat" in line]
            assert any(f"ignoring pg_stat/optidb_latency.stat: {said}" in line
                       for line in lines), lines
            assert not os.path.exists(stat), "a refused file is deleted, never read again"
            assert probe_calls() == 0, "counters of a refused file were loaded"


def test_slowest_execution_text_is_kept_with_literals_and_secrets_redacted(fresh_db):
    conn = fresh_db
    for d in (0.002, 0.03, 0.01):
        conn.execute(f"SELECT pg_sleep({d}), length('host=db password=hunter2') AS probe")
    conn.execute("SELECT * FROM optidb.scan()")
    text, ms = conn.execute(
        "SELECT slowest_sql, slowest_ms FROM optidb.query "
        "WHERE norm_sql LIKE 'SELECT pg_sleep($1), length($2) AS probe'").fetchone()
    assert "pg_sleep(0.03)" in text, text
    assert "hunter2" not in text and "password=***" in text, text
    assert 30 <= ms < 1000
