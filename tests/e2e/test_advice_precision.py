"""Precision of advice that is not a B-tree index (issue 23, part 6): a rewrite, statistics or
trigram recommendation is made only when a replay shows its effect, with the measurement in
its evidence, each under its own kind. The statements run as an application role in schema
`app` reached through search_path (one through PREPARE/EXECUTE, one that errors), a reader
that is a member of it reads the advice, a hostile role reads nothing."""

import psycopg
import pytest

from conftest import connect, new_database, scalar, wait_for

ROLES = ("prec_app", "prec_reader", "prec_hostile")

SCHEMA = """
-- NOT IN over NOT NULL keys whose subquery is small: the planner hashes it.
CREATE TABLE customers (id int PRIMARY KEY, country text NOT NULL);
INSERT INTO customers SELECT g, (ARRAY['JP', 'FR', 'US'])[1 + g % 3]
FROM generate_series(1, 20000) g;
CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL,
                     created_at timestamptz NOT NULL);
INSERT INTO orders SELECT g, 1 + g % 20000, now() - g * interval '1 minute'
FROM generate_series(1, 100000) g;
-- NOT IN whose subquery is too large to hash: a plain SubPlan rescanned per outer row.
CREATE TABLE wanted (k int NOT NULL);
INSERT INTO wanted SELECT g FROM generate_series(1, 5000) g;
CREATE TABLE stock (k int NOT NULL);
INSERT INTO stock SELECT g FROM generate_series(1, 600000) g;
-- 25 rows, analyzed while every code was distinct, then all changed to one code.
CREATE TABLE nation (n_key int PRIMARY KEY, code text NOT NULL)
    WITH (autovacuum_enabled = false);
INSERT INTO nation SELECT g, 'c' || g FROM generate_series(1, 25) g;
-- 150 values of 500 rows each, beside 125,000 unique ones: the default target keeps 100 of
-- them as most common values, the other 50 are estimated at a few rows.
CREATE TABLE events (id int NOT NULL, v int NOT NULL) WITH (autovacuum_enabled = false);
INSERT INTO events
SELECT g, CASE WHEN g <= 75000 THEN 1000000 + g % 150 ELSE g END
FROM generate_series(1, 200000) g;
-- Dexter's posts (test/support/schema.sql): user_id has 10 values, all most common; blog_id
-- decides user_id, so `user_id = 9 AND blog_id < 9` returns nothing where ~170 are expected.
CREATE TABLE posts (id int NOT NULL, blog_id int NOT NULL, user_id int NOT NULL)
    WITH (autovacuum_enabled = false);
INSERT INTO posts SELECT g, g % 1000, g % 10 FROM generate_series(1, 200000) g;
CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO items SELECT g, 'item ' || md5(g::text) FROM generate_series(1, 50000) g;
"""

# After the load's row counts reached the statistics (they are flushed when its session ends),
# so that ANALYZE leaves no table looking stale.
ANALYZE = """
ANALYZE customers, orders, wanted, stock, nation, events, posts, items;
UPDATE nation SET code = 'zz';
"""

HASHED_NOT_IN = ("SELECT count(*) FROM customers WHERE country = 'JP' AND id NOT IN "
                 "(SELECT customer_id FROM orders WHERE created_at > now() - interval '1 hour')")
PLAIN_NOT_IN = "SELECT count(*) FROM wanted WHERE k NOT IN (SELECT k FROM stock)"
TINY = "SELECT n_key FROM nation WHERE code = %s"
LIKE = "SELECT id FROM items WHERE name LIKE %s"
CORRELATED = "SELECT id FROM posts WHERE user_id = %s AND blog_id < %s"


def drop_roles(admin):
    for role in ROLES:
        admin.execute(f"DROP ROLE IF EXISTS {role}")


@pytest.fixture(scope="module")
def scanned():
    """The workload run as prec_app, then one scan as a superuser with DEBUG1 messages kept."""
    with connect("postgres") as admin:
        drop_roles(admin)
        for role in ROLES:
            admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute("GRANT optidb_reader TO prec_reader")
        admin.execute("GRANT prec_app TO prec_reader")
    try:
        with new_database() as name:
            with connect(name) as su:
                su.execute("CREATE SCHEMA app AUTHORIZATION prec_app")
            with connect(name, user="prec_app") as app:
                app.execute("SET search_path = app")
                app.execute(SCHEMA)
            with connect(name, user="prec_app") as app:
                app.execute("SET search_path = app")
                wait_for("the load's row counts", lambda: scalar(
                    app, "SELECT n_mod_since_analyze FROM pg_stat_user_tables "
                         "WHERE relname = 'events'") == 200000)
                app.execute(ANALYZE)
                skewed = scalar(app, """
                    SELECT min(v) FROM events WHERE v >= 1000000 AND v <> ALL (
                        SELECT pg_catalog.unnest(most_common_vals::text::int[]) FROM pg_stats
                        WHERE schemaname = 'app' AND tablename = 'events' AND attname = 'v')""")
                assert skewed is not None, "every frequent value made the MCV list"
            with connect(name) as su:
                su.execute("SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database "
                           "WHERE datname = current_database()), 0)")
            with connect(name, user="prec_app") as app:
                app.execute("SET search_path = app")
                for _ in range(3):
                    app.execute(HASHED_NOT_IN)
                    app.execute(PLAIN_NOT_IN)
                    app.execute(TINY, ("zz",))
                    app.execute(LIKE, ("%abc%",))
                    assert app.execute(CORRELATED, (9, 9)).fetchall() == []
                app.execute("PREPARE skewed(int) AS SELECT id FROM events WHERE v = $1")
                for _ in range(3):
                    assert len(app.execute("EXECUTE skewed(%s)" % int(skewed)).fetchall()) == 500
                with pytest.raises(psycopg.errors.DivisionByZero):
                    app.execute("SELECT 1 / (n_key - n_key) FROM nation")
            with connect(name) as su:
                yield su, name, scan_collecting_checks(su)
    finally:
        with connect("postgres") as admin:
            drop_roles(admin)


def scan_collecting_checks(su):
    """Runs scan() and returns the "optidb advice check:" lines it logged at DEBUG1 (why an
    advice was or was not filed)."""
    notices = []
    su.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    su.execute("SET client_min_messages = debug1")
    su.execute("SELECT * FROM optidb.scan()")
    su.execute("RESET client_min_messages")
    return [n for n in notices if n.startswith("optidb advice check:")]


def advice(conn, fragment):
    qid = scalar(conn, "SELECT id FROM optidb.query WHERE norm_sql LIKE %s",
                 ("%" + fragment + "%",))
    assert qid is not None, f"statement not captured: {fragment}"
    recs = conn.execute("SELECT kind, columns, ddl, rationale, confidence, evidence "
                        "FROM optidb.recommend(%s)", (qid,)).fetchall()
    return qid, recs


def test_not_in_over_a_not_null_key_with_a_hashed_subplan_gets_no_rewrite(scanned):
    conn, _, checks = scanned
    qid, recs = advice(conn, "FROM customers WHERE")
    assert not [r for r in recs if r[0] == "rewrite"], recs
    # Measured, not skipped: the replay saw the hashed subplan.
    said = [c for c in checks if "NOT IN (subquery)" in c and f"query {qid}" in c]
    assert said and "hashed SubPlan" in said[0] and "NOT NULL" in said[0], checks


def test_not_in_that_not_exists_beats_is_advised_with_both_costs(scanned):
    conn, name, _ = scanned
    qid, recs = advice(conn, "FROM wanted WHERE")
    rewrites = [r for r in recs if r[0] == "rewrite"]
    assert len(rewrites) == 1, recs
    kind, columns, ddl, rationale, confidence, evidence = rewrites[0]
    assert columns == ["NOT IN (subquery)"]
    replay = evidence["replays"][0]
    assert replay["query_id"] == qid
    assert replay["rewritten_cost"] < 0.8 * replay["original_cost"], replay
    assert not replay["hashed_subplan"] and replay["key_not_null"], replay
    assert "Hash Anti Join" in replay["rewritten_nodes"] or \
        "Hash Join" in replay["rewritten_nodes"], replay
    # The DDL is the statement itself, rewritten, and it runs.
    assert "NOT EXISTS (SELECT 1 FROM (SELECT k FROM stock)" in ddl, ddl
    sql = ddl.split("\n", 1)[1].rstrip(";")
    with connect(name, user="prec_app") as app:
        app.execute("SET search_path = app")
        assert scalar(app, sql) == scalar(app, PLAIN_NOT_IN) == 0
    # A member of the application role reads it; a hostile role reads nothing.
    with connect(name, user="prec_reader") as reader:
        kinds = [r[0] for r in reader.execute("SELECT kind FROM optidb.recommend(%s)",
                                              (qid,)).fetchall()]
        assert "rewrite" in kinds, kinds
    with connect(name, user="prec_hostile") as hostile:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            hostile.execute("SELECT * FROM optidb.recommend()")


def test_a_25_row_table_gets_no_statistics_advice(scanned):
    conn, _, checks = scanned
    qid, recs = advice(conn, "FROM nation WHERE code")
    assert not [r for r in recs if r[0] == "stats"], recs
    said = [c for c in checks if c.startswith("optidb advice check: stats:app.nation:code")]
    assert said and "changes no estimate" in said[0], checks


def test_a_skewed_column_gets_statistics_advice_with_estimated_and_actual_rows(scanned):
    conn, _, _ = scanned
    _, recs = advice(conn, "FROM events WHERE v")
    stats = [r for r in recs if r[0] == "stats"]
    assert len(stats) == 1, recs
    kind, columns, ddl, rationale, confidence, evidence = stats[0]
    assert columns == ["v"] and "SET STATISTICS" in ddl, stats
    replayed = evidence["replay"]["replayed_estimates"][0]
    assert replayed["actual_rows_per_call"] == 500, replayed
    assert replayed["estimated_rows"] * 10 <= 500, replayed
    assert evidence["replay"]["table_rows"] > evidence["replay"]["analyze_sample_rows"], evidence


def test_correlated_columns_get_no_statistics_target_for_a_fully_described_column(scanned):
    conn, _, checks = scanned
    qid, recs = advice(conn, "FROM posts WHERE user_id")
    assert scalar(conn, "SELECT sum(calls) FROM optidb.metric WHERE query_id = %s", (qid,)) == 3
    assert not [r for r in recs if r[0] == "stats"], recs
    # Measured, not skipped: the replay saw the estimate far off, and the column's statistics.
    said = [c for c in checks if c.startswith("optidb advice check: stats:app.posts:user_id")]
    assert said and "most-common-values list already" in said[0], checks


def test_like_on_a_large_table_is_trigram_advice_never_high_confidence(scanned):
    conn, _, _ = scanned
    _, recs = advice(conn, "FROM items WHERE name LIKE")
    assert not [r for r in recs if r[0] == "rewrite"], recs
    trigram = [r for r in recs if r[0] == "trigram_index"]
    assert len(trigram) == 1, recs
    kind, columns, ddl, rationale, confidence, evidence = trigram[0]
    assert columns == ["name"] and "gin_trgm_ops" in ddl, trigram
    assert confidence <= 0.3 and evidence["verified"] is False, trigram
    assert "Unverified" in rationale, rationale
