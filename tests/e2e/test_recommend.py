"""recommend() and simulate(): specific advice for the demo's slow patterns, proven by
hypothetical indexes; cleanup of hypothetical state whatever happens."""

import time

import psycopg
import pytest

from conftest import scalar

INDEX_KINDS = ("missing_index", "composite_index", "expression_index")

# Each seeded slow pattern of tests/demo/workload, by a fragment of its normalized text, and the
# kinds of advice that fit it.
SEEDED = {
    "FROM orders WHERE customer_id = $1": INDEX_KINDS,
    "ORDER BY created_at DESC LIMIT": ("composite_index",),
    "lower(email) = $1": ("expression_index",),
    "status = $1 AND created_at >": ("composite_index", "missing_index"),
    "name LIKE $1": ("trigram_index",),
    "FROM order_items WHERE order_id = $1": ("missing_index",),
    "FROM audit_log WHERE actor_id = $1": ("stats",),
    "WHERE store_id = $1 AND channel = $2": ("composite_index",),
}


def advice_for(conn, fragment, exact=False):
    pattern = fragment if exact else "%" + fragment + "%"
    qid = scalar(conn, "SELECT id FROM optidb.query WHERE norm_sql LIKE %s "
                       "ORDER BY id LIMIT 1", (pattern,))
    assert qid is not None, f"statement not captured: {fragment}"
    return qid, conn.execute(
        "SELECT kind, ddl, rationale, confidence FROM optidb.recommend(%s)", (qid,)).fetchall()


def test_every_seeded_slow_pattern_gets_specific_advice(demo):
    conn, _ = demo
    for fragment, kinds in SEEDED.items():
        qid, recs = advice_for(conn, fragment)
        fitting = [r for r in recs if r[0] in kinds]
        assert fitting, f"{fragment}: {recs}"
        for kind, ddl, rationale, confidence in fitting:
            assert ddl and rationale and 0 < confidence <= 1


@pytest.mark.hypopg
def test_index_advice_is_proven_by_simulation(demo):
    conn, _ = demo
    rows = conn.execute(
        "SELECT kind, columns, improvement_pct FROM optidb.recommend() "
        "WHERE kind = ANY (%s)", (list(INDEX_KINDS),)).fetchall()
    assert len(rows) >= 4, rows
    good = [r for r in rows if r[2] is not None and r[2] > 30]
    assert len(good) >= 0.8 * len(rows), rows


# Rewrites no replay confirms are not advised (tests/e2e/test_advice_precision.py): NOT IN whose
# subquery the planner hashes over NOT NULL keys, and shapes optidb cannot write out (a
# correlated subquery, OFFSET paging).
UNCONFIRMED_REWRITES = ("NOT id IN (SELECT", "SELECT max(o.created_at)", "OFFSET $2")


def test_unconfirmed_rewrites_are_not_advised(demo):
    conn, _ = demo
    for fragment in UNCONFIRMED_REWRITES:
        qid, recs = advice_for(conn, fragment)
        assert not [r for r in recs if r[0] == "rewrite"], f"{fragment}: {recs}"


def test_indexed_and_low_selectivity_statements_get_no_index_advice(demo):
    conn, _ = demo
    for text in ("SELECT id, email, name FROM customers WHERE id = $1",
                 "SELECT count(*) FROM orders WHERE status = $1",
                 "SELECT id, name, price FROM products WHERE id = $1"):
        qid, recs = advice_for(conn, text, exact=True)
        assert not [r for r in recs if r[0] in INDEX_KINDS], f"{fragment}: {recs}"


def test_one_index_serving_several_statements_is_one_recommendation(demo):
    conn, _ = demo
    rows = conn.execute(
        "SELECT columns, cardinality(query_ids) FROM optidb.recommend() "
        "WHERE table_name = 'public.orders' AND 'customer_id' = columns[1]").fetchall()
    assert len(rows) == 1, rows
    assert rows[0][1] >= 3


def test_redundant_index_is_reported_with_evidence(demo):
    conn, _ = demo
    row = conn.execute("SELECT ddl, evidence FROM optidb.recommend() "
                       "WHERE kind = 'redundant_index'").fetchone()
    assert row[0] == "DROP INDEX CONCURRENTLY public.customers_country;"
    assert "customers_country_created" in row[1]["covered_by"]


def test_bottlenecks_show_the_recommended_ddl(demo):
    conn, _ = demo
    ddl = scalar(conn, "SELECT ddl FROM optidb.bottlenecks(50) "
                       "WHERE query LIKE '%FROM order_items WHERE order_id = $1%'")
    assert ddl == "CREATE INDEX CONCURRENTLY ON public.order_items (order_id);"


def index_rec(conn):
    return conn.execute(
        "SELECT rec_id, query_ids[1] FROM optidb.recommend() WHERE kind = 'missing_index' "
        "AND table_name = 'public.order_items'").fetchone()


@pytest.mark.hypopg
def test_simulate_reports_costs_and_plan_changes_and_cleans_up(demo):
    conn, _ = demo
    rec_id, qid = index_rec(conn)
    row = conn.execute("SELECT before_cost, after_cost, improvement_pct, node_changes, error "
                       "FROM optidb.simulate(%s, %s)", (qid, rec_id)).fetchone()
    before, after, pct, changes, error = row
    assert error is None
    assert after < before and pct > 30
    assert "Seq Scan -> Index Scan on order_items" in changes
    assert scalar(conn, "SELECT count(*) FROM hypopg_list_indexes") == 0
    stored = scalar(conn, "SELECT count(*) FROM optidb.simulation WHERE rec_id = %s", (rec_id,))
    assert stored >= 2  # scan()'s own simulation and this one


def test_simulate_errors_are_clear(demo):
    conn, _ = demo
    rec_id, qid = index_rec(conn)
    for sql, args, state, text in [
        ("SELECT * FROM optidb.simulate(%s, %s)", (qid, 999999), "P0002", "no recommendation"),
        ("SELECT * FROM optidb.simulate(%s, %s)", (999999, rec_id), "P0002", "no statement"),
        ("SELECT * FROM optidb.simulate(%s, %s, 'bogus')", (qid, rec_id), "22023", "unknown simulation mode"),
    ]:
        with pytest.raises(psycopg.Error) as e:
            conn.execute(sql, args)
        assert e.value.sqlstate == state and text in str(e.value), str(e.value)
    trigram = conn.execute("SELECT rec_id, query_ids[1] FROM optidb.recommend() "
                           "WHERE kind = 'trigram_index' AND columns[1] = 'name'").fetchone()
    with pytest.raises(psycopg.Error) as e:
        conn.execute("SELECT * FROM optidb.simulate(%s, %s)", (trigram[1], trigram[0]))
    assert e.value.sqlstate == "0A000"
    assert "GIN" in str(e.value)


@pytest.mark.hypopg
def test_1000_simulations_leave_no_hypothetical_state(demo):
    conn, _ = demo
    rec_id, qid = index_rec(conn)
    # A user's own hypothetical index and prepared statement must survive untouched.
    mine = scalar(conn, "SELECT indexrelid FROM hypopg_create_index("
                        "'CREATE INDEX ON public.products (category)')")
    conn.execute("PREPARE users_own AS SELECT 1")
    # A statement that no longer parses against the schema: its table is gone.
    conn.execute("CREATE TABLE doomed (a int)")
    # (With its role's name: a replay runs as the role by name, src/postgres/replay.rs.)
    broken = scalar(conn, "INSERT INTO optidb.query "
                          "(fingerprint, userid, role_name, dbid, kind, raw_sql) "
                          "VALUES ('broken', 10, 'postgres', 1, 'select', "
                          "'SELECT * FROM doomed WHERE a = $1') RETURNING id")
    conn.execute("DROP TABLE doomed")
    try:
        run_simulations(conn, qid, rec_id, broken, mine)
    finally:
        conn.execute("DELETE FROM optidb.query WHERE id = %s", (broken,))
        conn.execute("SELECT hypopg_drop_index(%s)", (mine,))
        conn.execute("DEALLOCATE users_own")


def reset_timeout(conn):
    # RESET itself starts under the tiny statement_timeout and can be canceled on a busy
    # machine; retrying is harness plumbing, not part of what is tested.
    for _ in range(50):
        try:
            conn.execute("RESET statement_timeout")
            return
        except psycopg.errors.QueryCanceled:
            continue
    raise AssertionError("could not reset statement_timeout")


def run_simulations(conn, qid, rec_id, broken, mine):
    outcomes = {"ok": 0, "stored_error": 0, "bad_rec": 0, "canceled": 0}
    for i in range(1000):
        try:
            if i % 10 == 3:
                conn.execute("SELECT * FROM optidb.simulate(%s, -1)", (qid,))
            elif i % 10 == 7:
                err = scalar(conn, "SELECT error FROM optidb.simulate(%s, %s)", (broken, rec_id))
                assert "doomed" in err, err
                outcomes["stored_error"] += 1
            elif i % 20 == 5:
                conn.execute("SET statement_timeout = '1ms'")
                try:
                    conn.execute("SELECT * FROM optidb.simulate(%s, %s)", (qid, rec_id))
                    outcomes["ok"] += 1
                finally:
                    reset_timeout(conn)
            else:
                pct = scalar(conn, "SELECT improvement_pct FROM optidb.simulate(%s, %s)",
                             (qid, rec_id))
                assert pct > 30
                outcomes["ok"] += 1
        except psycopg.errors.QueryCanceled:
            outcomes["canceled"] += 1
        except psycopg.errors.NoDataFound:
            outcomes["bad_rec"] += 1
    assert outcomes["bad_rec"] == 100 and outcomes["stored_error"] == 100, outcomes
    assert outcomes["canceled"] >= 1, outcomes
    left = [r[0] for r in conn.execute("SELECT indexrelid FROM hypopg_list_indexes").fetchall()]
    assert left == [mine], left
    prepared = [r[0] for r in conn.execute("SELECT name FROM pg_prepared_statements").fetchall()]
    assert prepared == ["users_own"], prepared
    assert scalar(conn, "SELECT current_setting('plan_cache_mode')") == "auto"


def test_real_mode_measures_time_and_leaves_nothing_behind(demo):
    conn, _ = demo
    rec_id, qid = index_rec(conn)
    indexes_before = scalar(conn, "SELECT count(*) FROM pg_indexes WHERE tablename = 'order_items'")
    row = conn.execute("SELECT before_ms, after_ms, improvement_pct, error "
                       "FROM optidb.simulate(%s, %s, 'real')", (qid, rec_id)).fetchone()
    assert row[3] is None, row
    assert row[0] > 0 and row[1] >= 0 and row[1] < row[0], row
    assert scalar(conn, "SELECT count(*) FROM pg_indexes WHERE tablename = 'order_items'") \
        == indexes_before
    conn.execute("SET optidb.real_simulation_max_bytes = '1MB'")
    try:
        with pytest.raises(psycopg.Error) as e:
            conn.execute("SELECT * FROM optidb.simulate(%s, %s, 'real')", (qid, rec_id))
        assert e.value.sqlstate == "54000"
    finally:
        conn.execute("RESET optidb.real_simulation_max_bytes")


def test_real_mode_is_refused_to_non_admins(demo):
    conn, _ = demo
    rec_id, qid = index_rec(conn)
    conn.execute("DROP ROLE IF EXISTS optidb_plain")
    conn.execute("CREATE ROLE optidb_plain LOGIN")
    conn.execute("GRANT USAGE ON SCHEMA optidb TO optidb_plain")
    conn.execute("GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA optidb TO optidb_plain")
    conn.execute("GRANT EXECUTE ON FUNCTION optidb.simulate(bigint, bigint, text) TO optidb_plain")
    try:
        with psycopg.connect(host=conn.info.host, port=conn.info.port, user="optidb_plain",
                             dbname=conn.info.dbname, autocommit=True) as other:
            with pytest.raises(psycopg.Error) as e:
                other.execute("SELECT * FROM optidb.simulate(%s, %s, 'real')", (qid, rec_id))
            assert e.value.sqlstate == "42501"
    finally:
        conn.execute("REVOKE ALL ON ALL TABLES IN SCHEMA optidb FROM optidb_plain")
        conn.execute("REVOKE ALL ON FUNCTION optidb.simulate(bigint, bigint, text) FROM optidb_plain")
        conn.execute("REVOKE USAGE ON SCHEMA optidb FROM optidb_plain")
        conn.execute("DROP ROLE optidb_plain")


def test_real_mode_is_capped_rate_limited_and_never_waits_long_for_its_lock(demo):
    conn, _ = demo
    rec_id, qid = index_rec(conn)
    real = "SELECT error FROM optidb.simulate(%s, %s, 'real')"
    dsn = dict(host=conn.info.host, port=conn.info.port, dbname=conn.info.dbname, user="postgres",
               autocommit=True)
    with psycopg.connect(**dsn) as holder, psycopg.connect(**dsn) as other:
        # A simulation inside an open transaction keeps its slot until that transaction ends.
        other.execute("SET optidb.max_concurrent_simulations = 1")
        with holder.transaction():
            assert scalar(holder, real, (qid, rec_id)) is None
            with pytest.raises(psycopg.errors.ConfigurationLimitExceeded) as e:
                other.execute(real, (qid, rec_id))
            assert "optidb.max_concurrent_simulations" in str(e.value)
        assert scalar(other, real, (qid, rec_id)) is None
        # The per-minute budget counts the simulations stored in the last minute.
        recent = scalar(other, "SELECT count(*) FROM optidb.simulation WHERE mode = 'real' "
                               "AND ran_at > clock_timestamp() - interval '1 minute'")
        other.execute(f"SET optidb.real_simulations_per_minute = {recent}")
        with pytest.raises(psycopg.errors.ConfigurationLimitExceeded) as e:
            other.execute(real, (qid, rec_id))
        assert "optidb.real_simulations_per_minute" in str(e.value)
        other.execute("RESET optidb.real_simulations_per_minute")
        # A writer holds the table: the index build waits optidb.lock_timeout, then gives up,
        # and the writer was blocked for no longer than that.
        with holder.transaction():
            holder.execute("UPDATE order_items SET qty = qty WHERE order_id = 1")
            other.execute("SET optidb.lock_timeout = '300ms'")
            started = time.monotonic()
            error = scalar(other, real, (qid, rec_id))
            waited = time.monotonic() - started
        assert "lock timeout" in error, error
        assert waited < 10, waited
