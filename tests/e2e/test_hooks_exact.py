"""optidb's hooks count exactly what pg_stat_statements counts, in every case it handles,
whatever the order of the two libraries in shared_preload_libraries, and leave its figures
alone; failures are counted whatever the logging settings; a panic or an ERROR inside the
bookkeeping leaves no lock held; a burst of new statements cannot thrash the table.

Each configuration gets a cluster of its own (own_cluster), so restarts and settings do not
disturb the other tests."""

import asyncio
import os
import re
import subprocess
import threading

import asyncpg
import psycopg
import pytest

from conftest import ROOT, SOCKET, connect, new_database, own_cluster, own_data, scalar

ORDERS = {
    "pgss first": "pg_stat_statements,optidb",
    "optidb first": "optidb,pg_stat_statements",
}


@pytest.fixture(scope="module", params=list(ORDERS))
def cluster(request):
    port = 55438 if request.param == "pgss first" else 55439
    with own_cluster(f"hooks-{port}", port, ORDERS[request.param]) as p:
        yield p


def counts(conn):
    """(pg_stat_statements calls, optidb calls) per (queryid, userid, toplevel) of this database;
    top-level entries only unless pg_stat_statements tracks all."""
    pgss = {(q, u): c for q, u, c in conn.execute(
        "SELECT queryid, userid, sum(calls) FROM pg_stat_statements "
        "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "GROUP BY 1, 2")}
    ours = {(q, u): c for q, u, c in conn.execute(
        "SELECT queryid, userid::oid, calls FROM optidb.latency_counters()")}
    return pgss, ours


def assert_same_calls(conn, marker):
    """Every statement whose text holds `marker`: the same calls in both."""
    pgss, ours = counts(conn)
    texts = dict(((q, u), t) for q, u, t in conn.execute(
        "SELECT queryid, userid, query FROM pg_stat_statements"))
    checked = 0
    for key, calls in pgss.items():
        if marker not in (texts.get(key) or ""):
            continue
        assert ours.get(key, 0) == calls, (texts[key], calls, ours.get(key))
        checked += 1
    assert checked, f"pg_stat_statements saw no statement with {marker}"
    # And optidb counted nothing pg_stat_statements did not.
    for key, calls in ours.items():
        if marker in (texts.get(key) or ""):
            assert key in pgss, texts.get(key)
    return checked


def workload(c, marker):
    """One of each case pg_stat_statements counts, each statement tagged with `marker`."""
    m = marker
    c.execute(f"CREATE TABLE {m} AS SELECT g AS id, g % 10 AS v FROM generate_series(1, 20000) g")
    for i in range(3):
        c.execute(f"SELECT count(*) AS {m} FROM {m} WHERE v = {i}")          # simple protocol
        c.execute(f"SELECT sum(id) AS {m} FROM {m} WHERE v = %s", (i,))       # extended
    c.execute(f"PREPARE {m}_pq(int) AS SELECT max(id) AS {m} FROM {m} WHERE v = $1")
    for i in range(5):
        c.execute(f"EXECUTE {m}_pq({i})")                                    # SQL EXECUTE
    c.execute(f"DEALLOCATE {m}_pq")
    c.execute("BEGIN")
    c.execute(f"DECLARE {m}_cur CURSOR FOR SELECT id AS {m} FROM {m} ORDER BY id")
    for _ in range(3):
        c.execute(f"FETCH 100 FROM {m}_cur")                                 # cursors
    c.execute(f"CLOSE {m}_cur")
    c.execute("COMMIT")
    c.execute(f"CREATE TABLE {m}_ctas AS SELECT * FROM {m} WHERE v < 3")     # CREATE TABLE AS
    c.execute(f"EXPLAIN ANALYZE SELECT count(*) AS {m} FROM {m}")          # EXPLAIN ANALYZE
    with c.cursor().copy(f"COPY (SELECT id AS {m} FROM {m} WHERE v = 1) TO STDOUT") as copy:
        for _ in copy:                                                       # COPY (query)
            pass
    c.execute(f"""CREATE FUNCTION {m}_f(n int) RETURNS int LANGUAGE plpgsql AS $$
        BEGIN
            BEGIN PERFORM 1 / (n - n) AS {m}; EXCEPTION WHEN division_by_zero THEN NULL; END;
            RETURN (SELECT count(*) FROM {m} WHERE v = n);
        END $$""")
    c.execute(f"""CREATE PROCEDURE {m}_p() LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM count(*) AS {m} FROM {m}; COMMIT; PERFORM max(v) AS {m} FROM {m};
        END $$""")
    for i in range(2):
        c.execute(f"SELECT {m}_f({i})")                                      # PL/pgSQL exception
        c.execute(f"DO $$ BEGIN PERFORM {m}_f({i}); END $$")                 # DO, nested
        c.execute(f"CALL {m}_p()")                                           # CALL, COMMIT inside


def chunked(port, db, marker):
    """An extended-protocol portal fetched 100 rows at a time (ExecutorRun called many times for
    one execution), twice."""
    async def run():
        conn = await asyncpg.connect(host=SOCKET, port=port, user="postgres", database=db)
        try:
            for _ in range(2):
                async with conn.transaction():
                    async for _ in conn.cursor(f"SELECT id AS {marker} FROM {marker} "
                                               "WHERE v = $1", 2, prefetch=100):
                        pass
        finally:
            await conn.close()
    asyncio.run(run())


@pytest.mark.parametrize("track", ["top", "all"])
def test_calls_match_pg_stat_statements_in_every_case(cluster, track):
    with new_database(cluster) as db, connect(db, port=cluster) as c:
        c.execute(f"SET pg_stat_statements.track = '{track}'")
        c.execute(f"SET optidb.track_nested = {'on' if track == 'all' else 'off'}")
        marker = f"exact_{track}"
        workload(c, marker)
        chunked(cluster, db, marker)
        assert assert_same_calls(c, marker) >= 12
        # The chunked portal is one execution each time.
        assert scalar(c, "SELECT calls FROM pg_stat_statements WHERE query LIKE %s",
                      (f"SELECT id AS {marker} FROM {marker} WHERE v = $1",)) == 2


def test_pg_stat_statements_buffer_figures_are_unchanged(cluster):
    """optidb shares queryDesc->totaltime with pg_stat_statements; allocated as pgss
    allocates it (INSTRUMENT_ALL), so pgss still sees buffer and WAL usage in either order."""
    with own_cluster("hooks-pgss-alone", 55440, "pg_stat_statements") as alone:
        figures = []
        for port in (alone, cluster):
            with new_database(port) as db, connect(db, port=port) as c:
                c.execute("CREATE TABLE buffers_probe AS SELECT g AS id, repeat('x', 100) AS pad "
                          "FROM generate_series(1, 50000) g")
                c.execute("SELECT pg_stat_statements_reset()")
                for _ in range(3):
                    c.execute("SELECT count(*) FROM buffers_probe WHERE pad <> 'y'")
                c.execute("INSERT INTO buffers_probe SELECT g, 'z' FROM generate_series(1, 100) g")
                figures.append(c.execute(
                    "SELECT query, shared_blks_hit + shared_blks_read, wal_records "
                    "FROM pg_stat_statements WHERE query LIKE '%buffers_probe%' "
                    "AND query NOT LIKE 'CREATE%' ORDER BY query").fetchall())
        assert figures[0] == figures[1], figures
        assert all(blocks > 0 for _, blocks, _ in figures[1]), figures


def test_failures_are_counted_whatever_the_logging_settings():
    conf = "log_min_messages = fatal\nlog_min_error_statement = panic"
    with own_cluster("hooks-quiet", 55441, conf=conf) as port:
        with new_database(port) as db, connect(db, port=port) as c:
            c.execute("CREATE TABLE u (id int PRIMARY KEY)")
            c.execute("INSERT INTO u VALUES (1)")
            for _ in range(2):
                with pytest.raises(psycopg.errors.UniqueViolation):
                    c.execute("INSERT INTO u VALUES (1)")            # in the executor
                with pytest.raises(psycopg.errors.DivisionByZero):
                    c.execute("SELECT 10 / 0 AS quiet")              # while planned
                with pytest.raises(psycopg.errors.DuplicateTable):
                    c.execute("CREATE TABLE u (id int)")             # a utility
            c.execute("SET statement_timeout = '50ms'")
            with pytest.raises(psycopg.errors.QueryCanceled):
                c.execute("SELECT pg_sleep(1) AS quiet")
            c.execute("RESET statement_timeout")
            c.execute("BEGIN")
            c.execute("SAVEPOINT s")
            with pytest.raises(psycopg.errors.DivisionByZero):
                c.execute("SELECT 1 / (2 - 2) AS quiet_in_savepoint")
            c.execute("ROLLBACK TO SAVEPOINT s")
            c.execute("COMMIT")
            # Caught inside, then the procedure rolls back on purpose: no failure.
            c.execute("""CREATE PROCEDURE quiet_p() LANGUAGE plpgsql AS $$
                BEGIN
                    BEGIN PERFORM 1 / 0; EXCEPTION WHEN division_by_zero THEN NULL; END;
                    ROLLBACK;
                END $$""")
            c.execute("CALL quiet_p()")

            def failures(pattern):
                return c.execute(
                    "SELECT c.errors, c.error_classes FROM optidb.latency_counters() c "
                    "JOIN pg_stat_statements s ON s.queryid = c.queryid AND s.userid = c.userid "
                    "WHERE s.query LIKE %s", (pattern,)).fetchall()
            # pg_stat_statements has an entry only for statements that also succeeded once.
            assert failures("INSERT INTO u VALUES ($1)") == [(2, {"23": 2})]
            assert failures("CALL quiet_p()") == [(0, {})]
            all_classes = {}
            for errors, classes in c.execute(
                    "SELECT errors, error_classes FROM optidb.latency_counters()"):
                for k, v in classes.items():
                    all_classes[k] = all_classes.get(k, 0) + v
            assert all_classes == {"23": 2, "22": 3, "42": 2, "57": 1}, all_classes


def test_a_panic_or_error_in_the_bookkeeping_leaves_no_lock_held():
    with own_cluster("hooks-faults", 55442) as port:
        with new_database(port) as db:
            with connect(db, port=port) as c:
                c.execute("CREATE TABLE f AS SELECT g AS id FROM generate_series(1, 1000) g")
            errors = []

            def client(i):
                try:
                    with connect(db, port=port) as c:
                        c.execute(f"SET optidb.fault_injection = "
                                  f"{'panic' if i % 2 else 'error'}")
                        for j in range(50):
                            # Statements keep working: the fault only stops recording.
                            assert c.execute(f"SELECT count(*) FROM f WHERE id > {j}"
                                             ).fetchone()[0] == 1000 - j
                except Exception as e:  # noqa: BLE001 - reported below
                    errors.append(e)
            threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert errors == [], errors
            with connect(db, port=port) as c:
                # Nobody waits on optidb's lock, and recording goes on in new sessions,
                # inserts included (they take the lock exclusively).
                assert scalar(c, "SELECT count(*) FROM pg_stat_activity "
                                 "WHERE wait_event LIKE 'optidb%'") == 0
                for i in range(3):
                    c.execute(f"SELECT {i} AS after_faults")
                assert scalar(c, "SELECT sum(c.calls) FROM optidb.latency_counters() c "
                                 "JOIN pg_stat_statements s USING (queryid) "
                                 "WHERE s.query = 'SELECT $1 AS after_faults'") == 3


def test_a_burst_of_new_statements_evicts_in_batches_and_keeps_hot_ones():
    conf = "optidb.max_statements = 100\npg_stat_statements.max = 1000"
    with own_cluster("hooks-evict", 55443, conf=conf) as port:
        log = os.path.join(own_data("hooks-evict"), "server.log")
        with new_database(port) as db, connect(db, port=port) as c:
            notices = []
            c.add_notice_handler(lambda d: notices.append(d.message_primary))
            for _ in range(200):
                c.execute("SELECT 1 AS hot_statement")
            for i in range(2, 402):
                # A different number of constants is a different statement (aliases are not).
                c.execute("SELECT " + " + ".join(["1"] * i) + " AS burst")
            used = c.execute("SELECT entries, max_entries, evictions FROM optidb.memory()"
                             ).fetchone()
            assert used[0] <= 100 and used[1] == 100, used
            # 5% at a time: about 400 / 5 rounds, not one per statement.
            assert 300 <= used[2] <= 420, used
            assert scalar(c, "SELECT sum(c.calls) FROM optidb.latency_counters() c "
                             "JOIN pg_stat_statements s USING (queryid) "
                             "WHERE s.query = 'SELECT $1 AS hot_statement'") == 200
            assert notices == [], "eviction notices must not reach a user's session"
        text = open(log).read()
        assert len(re.findall(r"optidb evicted \d+ least used statements", text)) == 1, text[-2000:]
        assert "WARNING" not in text


BEFORE_RESTART = ("SELECT sum(c.calls) FROM optidb.latency_counters() c "
                  "JOIN pg_stat_statements s USING (queryid) "
                  "WHERE s.query = 'SELECT $1 AS before_restart'")


def test_settings_are_reserved_and_a_foreign_dump_is_ignored():
    with own_cluster("hooks-misc", 55444) as port:
        with connect("postgres", port=port) as c:
            with pytest.raises(psycopg.errors.InvalidName):
                c.execute("SET optidb.no_such_setting = 1")
            c.execute("CREATE EXTENSION pg_stat_statements")
            c.execute("CREATE EXTENSION optidb")
            for i in range(3):
                c.execute(f"SELECT {i} AS before_restart")
            assert scalar(c, BEFORE_RESTART) == 3
        data = own_data("hooks-misc")
        env = dict(os.environ, OPTIDB_PGDATA=data, OPTIDB_PGPORT=str(port))
        script = os.path.join(ROOT, "tests/scripts/cluster.sh")
        subprocess.run(["bash", script, "stop"], env=env, check=True)
        # A clean shutdown wrote the dump (under its final name: written aside, then renamed);
        # replace it by one from "another version".
        dump = f"{data}/pg_stat/optidb_latency.stat"
        assert os.path.getsize(dump) > 40 and not os.path.exists(dump + ".tmp")
        with open(dump, "wb") as f:
            f.write(b"\x00" * 64)
        subprocess.run(["bash", script, "start"], env=env, check=True, capture_output=True)
        with connect("postgres", port=port) as c:
            assert scalar(c, BEFORE_RESTART) is None, "a foreign dump was loaded"
        assert "ignoring pg_stat/optidb_latency.stat" in open(f"{data}/server.log").read()
