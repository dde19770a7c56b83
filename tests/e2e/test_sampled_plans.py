"""Plans with real values: statements are planned for the parameter values their executions
really use (sampled by optidb's hooks), advice rests on the plan that matches what executions
do, simulations report the gain for both, and without samples the generic plan is used and the
evidence says so."""

import datetime

import pytest

from conftest import connect, scalar

SCHEMA = """
CREATE TABLE orders_r AS
    SELECT g AS id,
           (ARRAY['new', 'paid', 'shipped', 'cancelled'])[1 + g % 4] AS status,
           timestamptz '2025-01-01' + g * interval '2 minutes' AS created_at,
           g % 1000 AS customer_id
    FROM generate_series(1, 300000) g;
ANALYZE orders_r;
"""

RANGE = "SELECT count(*) FROM orders_r WHERE status = %s AND created_at > %s"
TOP_N = "SELECT id, status FROM orders_r ORDER BY created_at DESC LIMIT 10"


def latest(conn, offset_days):
    return (scalar(conn, "SELECT max(created_at) FROM orders_r")
            - datetime.timedelta(days=offset_days))


def advice_for(conn, fragment):
    qid = scalar(conn, "SELECT id FROM optidb.query WHERE norm_sql LIKE %s", (f"%{fragment}%",))
    assert qid is not None, fragment
    return qid, conn.execute("SELECT rec_id, kind, columns, improvement_pct, evidence "
                             "FROM optidb.recommend(%s)", (qid,)).fetchall()


@pytest.mark.hypopg
def test_range_predicates_are_judged_by_the_values_executions_use(fresh_db):
    """status = $1 AND created_at > $2: the generic plan guesses a third of a quarter of the
    table (8%: no index); executions look at the last day (0.1%)."""
    conn = fresh_db
    conn.execute("CREATE EXTENSION hypopg")
    conn.execute(SCHEMA)
    conn.execute("SELECT pg_stat_statements_reset()")
    since = latest(conn, 1)
    for _ in range(5):
        conn.execute(RANGE, ("new", since))          # extended protocol: bound values
    conn.execute("SELECT * FROM optidb.scan()")

    qid, recs = advice_for(conn, "status = $1 AND created_at > $2")
    # The cost-based search picks what the planner finds cheapest for the sampled values: an
    # index led by created_at (0.1% of the rows), alone or after status.
    index = [r for r in recs if r[1] in ("missing_index", "composite_index")
             and "created_at" in r[2]]
    assert index, recs
    rec_id, _, columns, pct, _ = index[0]
    assert columns in (["created_at"], ["status", "created_at"]), columns
    assert pct > 30, pct
    # The plans of the capture: the generic one keeps > 5%, the sampled one < 1%; the sampled
    # one is the basis, and the evidence says which plan and which values.
    plans = dict(conn.execute(
        "SELECT plan_kind, (facts -> 'seq_scans' -> 0 ->> 'est_rows')::float8 FROM optidb.plan "
        "WHERE query_id = %s AND plan_json IS NOT NULL", (qid,)).fetchall())
    table_rows = 300000
    assert plans["generic"] / table_rows > 0.05, plans
    assert plans["typical"] / table_rows < 0.01, plans
    basis = scalar(conn, "SELECT evidence -> 'plan_basis' FROM optidb.bottlenecks(50) "
                         "WHERE query_id = %s", (qid,))
    assert basis["plan"] == "typical" and basis["values"][0] == "new", basis
    assert "custom plan" in basis["reason"], basis
    # simulate(): both gains, the sampled one is the basis and above 30%.
    row = conn.execute("SELECT plan_basis, improvement_pct, generic_improvement_pct, "
                       "sampled_improvement_pct, sampled_values, error "
                       "FROM optidb.simulate(%s, %s)", (qid, rec_id)).fetchone()
    kind, pct, generic, sampled, values, error = row
    assert error is None and kind == "sampled", row
    assert sampled > 30 and pct == sampled, row
    assert generic is not None and values[0] == "new", row
    # Real mode runs the sampled values too.
    real = conn.execute("SELECT plan_basis, before_ms, after_ms, error "
                        "FROM optidb.simulate(%s, %s, 'real')", (qid, rec_id)).fetchone()
    assert real[0] == "sampled" and real[3] is None and real[2] < real[1], real


@pytest.mark.hypopg
def test_a_top_n_query_gets_an_index_on_its_sort_keys(fresh_db):
    conn = fresh_db
    conn.execute("CREATE EXTENSION hypopg")
    conn.execute(SCHEMA)
    conn.execute("SELECT pg_stat_statements_reset()")
    for _ in range(5):
        conn.execute(TOP_N)
    conn.execute("SELECT * FROM optidb.scan()")
    _, recs = advice_for(conn, "ORDER BY created_at DESC LIMIT")
    index = [r for r in recs if r[1] == "missing_index"]
    assert index and index[0][2] == ["created_at DESC"], recs
    assert index[0][3] > 30, recs


def test_without_samples_the_generic_plan_is_used_and_said(fresh_db):
    """A session that samples nothing (optidb.sample_interval = 0 and no new maximum kept
    typical): the generic plan is the basis and the evidence says why."""
    conn = fresh_db
    conn.execute(SCHEMA)
    db = scalar(conn, "SELECT current_database()")
    conn.execute("SELECT pg_stat_statements_reset()")
    with connect(db) as quiet:
        quiet.execute("SET optidb.sample_interval = 0")
        for i in range(3):
            quiet.execute("SELECT count(*) FROM orders_r WHERE customer_id = %s", (i,))
    conn.execute("SELECT * FROM optidb.scan()")
    qid = scalar(conn, "SELECT id FROM optidb.query WHERE norm_sql LIKE "
                       "'%FROM orders_r WHERE customer_id = $1%'")
    basis = scalar(conn, "SELECT evidence -> 'plan_basis' FROM optidb.bottlenecks(50) "
                         "WHERE query_id = %s", (qid,))
    assert basis["plan"] == "generic" and "no sampled execution" in basis["reason"], basis
    assert scalar(conn, "SELECT count(*) FROM optidb.sample WHERE query_id = %s "
                        "AND kind = 'typical'", (qid,)) == 0
