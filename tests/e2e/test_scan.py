"""scan(): ingest of the real workload, deltas, resets, fingerprints, unexplainable statements."""

from conftest import DEMO_SCAN_PLANS, scalar


def test_demo_scan_captures_statements_fingerprints_and_plans(demo):
    conn, (seen, new, plans, failures, recs, sims, elapsed) = demo
    assert seen >= 20, f"only {seen} statements captured"
    assert new == seen
    assert plans >= 15, f"plans={plans} failures={failures}"
    # Every captured statement has a fingerprint and normalized text (16 hex digits).
    bad = conn.execute(
        "SELECT id, raw_sql FROM optidb.query "
        "WHERE fingerprint !~ '^[0-9a-f]{16}$' OR norm_sql IS NULL").fetchall()
    assert bad == []
    # Generic plans exist for the top-K explainable statements, with facts (as the demo's
    # scan left them: conftest reads them right after it).
    rows = DEMO_SCAN_PLANS["generic"]
    assert len(rows) == plans
    # The demo's statements were sampled (pgbench sends literals): each planned statement also
    # has a custom plan for a typical execution's own text, and one plan of each capture is the
    # basis of the advice.
    custom = DEMO_SCAN_PLANS["typical_statements"]
    assert custom >= plans - 2, (custom, plans)
    assert DEMO_SCAN_PLANS["captures_without_one_basis"] == 0
    by_text = {r[0]: r for r in rows}
    orders_by_customer = [t for t in by_text if "FROM orders WHERE customer_id = $1" in t]
    assert orders_by_customer, sorted(by_text)
    assert by_text[orders_by_customer[0]][1] is True
    assert "Seq Scan" in by_text[orders_by_customer[0]][2]


def test_deltas_accumulate_and_survive_resets(fresh_db):
    conn = fresh_db
    conn.execute("CREATE TABLE t AS SELECT g AS a FROM generate_series(1, 1000) g")
    for i in range(7):
        conn.execute(f"SELECT count(*) FROM t WHERE a > {i}")
    conn.execute("SELECT * FROM optidb.scan()")
    qid = scalar(conn, "SELECT id FROM optidb.query WHERE norm_sql = "
                       "'SELECT count(*) FROM t WHERE a > $1'")
    assert qid is not None

    def calls_per_snapshot():
        return [r[0] for r in conn.execute(
            "SELECT calls FROM optidb.metric WHERE query_id = %s ORDER BY captured_at",
            (qid,)).fetchall()]

    assert calls_per_snapshot() == [7]
    for i in range(3):
        conn.execute(f"SELECT count(*) FROM t WHERE a > {i}")
    conn.execute("SELECT * FROM optidb.scan()")
    assert calls_per_snapshot() == [7, 3]

    # No new calls: no new metric row (nothing happened).
    conn.execute("SELECT * FROM optidb.scan()")
    assert calls_per_snapshot() == [7, 3]

    # A full reset: the next delta is what ran since the reset, never negative.
    conn.execute("SELECT pg_stat_statements_reset()")
    for i in range(2):
        conn.execute(f"SELECT count(*) FROM t WHERE a > {i}")
    summary = conn.execute("SELECT * FROM optidb.scan()").fetchone()
    assert calls_per_snapshot() == [7, 3, 2]
    assert scalar(conn, "SELECT pgss_reset_detected FROM optidb.scan_log "
                        "ORDER BY id DESC LIMIT 1") is True
    assert summary[0] >= 1

    # Eviction of a single entry (re-created with fewer calls) is handled the same way.
    for i in range(5):
        conn.execute(f"SELECT count(*) FROM t WHERE a > {i}")
    conn.execute("SELECT * FROM optidb.scan()")
    conn.execute("SELECT pg_stat_statements_reset(0, 0, queryid) FROM pg_stat_statements "
                 "WHERE query = 'SELECT count(*) FROM t WHERE a > $1'")
    conn.execute("SELECT count(*) FROM t WHERE a > 1")
    conn.execute("SELECT * FROM optidb.scan()")
    assert calls_per_snapshot() == [7, 3, 2, 5, 1]
    assert scalar(conn, "SELECT min(calls) FROM optidb.metric") > 0
    # Every recorded delta is of executions that took time (a CHECK only forbids < 0).
    assert scalar(conn, "SELECT min(total_ms) FROM optidb.metric") > 0


def test_variants_share_one_fingerprint_and_distinct_statements_do_not(fresh_db):
    conn = fresh_db
    conn.execute("CREATE TABLE items (id int, name text, price int)")
    variants = [
        "SELECT * FROM items WHERE id = 1",
        "select * from items where id = 2",
        "/* from the app */ SELECT *   FROM items\n WHERE id = 3",
        "SELECT * FROM ITEMS WHERE ID = 4 -- trailing comment",
    ]
    for v in variants:
        conn.execute(v)
    distinct = [
        "SELECT name FROM items WHERE id = 1",
        "SELECT * FROM items WHERE price = 1",
        "SELECT * FROM items WHERE id = 1 AND price = 2",
        "SELECT count(*) FROM items",
    ]
    for d in distinct:
        conn.execute(d)
    conn.execute("SELECT * FROM optidb.scan()")
    rows = conn.execute(
        "SELECT norm_sql, fingerprint FROM optidb.query WHERE 'items' = ANY (tables) AND kind = 'select'").fetchall()
    fingerprints = {r[1] for r in rows}
    assert len(rows) == 5, rows
    assert len(fingerprints) == 5
    calls = scalar(conn, "SELECT sum(m.calls) FROM optidb.metric m JOIN optidb.query q "
                         "ON q.id = m.query_id WHERE q.norm_sql = "
                         "'SELECT * FROM items WHERE id = $1'")
    assert calls == 4


def test_boilerplate_is_not_recorded(fresh_db):
    conn = fresh_db
    conn.execute("SET work_mem = '8MB'")
    conn.execute("SHOW work_mem")
    conn.execute("BEGIN")
    conn.execute("COMMIT")
    conn.execute("SELECT * FROM optidb.scan()")
    kinds = [r[0] for r in conn.execute("SELECT DISTINCT kind FROM optidb.query").fetchall()]
    assert "boilerplate" not in kinds
    texts = [r[0] for r in conn.execute("SELECT raw_sql FROM optidb.query").fetchall()]
    assert not any(t.upper().startswith(("SET", "SHOW", "BEGIN", "COMMIT")) for t in texts), texts


def test_unexplainable_statements_are_recorded_and_skipped(fresh_db):
    conn = fresh_db
    conn.execute("CREATE TABLE base (a int)")
    with conn.transaction():
        conn.execute("CREATE TEMP TABLE scratch (a int)")
        for i in range(3):
            conn.execute(f"SELECT * FROM scratch WHERE a = {i}")
    dbname = conn.info.dbname
    conn.close()  # the temp table is gone with its session
    from conftest import connect
    conn2 = connect(dbname)
    summary = conn2.execute("SELECT * FROM optidb.scan()").fetchone()
    assert summary[3] >= 1, summary  # explain_failures
    err = scalar(conn2, "SELECT p.explain_error FROM optidb.plan p JOIN optidb.query q "
                        "ON q.id = p.query_id WHERE q.raw_sql LIKE 'SELECT * FROM scratch%'")
    assert "scratch" in err and "42P01" in err, err
    ddl = conn2.execute("SELECT kind, (SELECT count(*) FROM optidb.plan p WHERE p.query_id = q.id) "
                        "FROM optidb.query q WHERE raw_sql LIKE 'CREATE TABLE base%'").fetchone()
    assert ddl == ("utility", 0)
    conn2.close()
