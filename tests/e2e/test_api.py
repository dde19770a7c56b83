"""bottlenecks() and query(id), and the errors a user sees."""

import psycopg
import pytest

from conftest import connect, scalar


def test_bottlenecks_rank_by_total_time_with_reasons(demo):
    conn, _ = demo
    rows = conn.execute(
        "SELECT query_id, query, total_ms, reason, confidence, evidence "
        "FROM optidb.bottlenecks(10)").fetchall()
    assert len(rows) == 10
    totals = [r[2] for r in rows]
    assert totals == sorted(totals, reverse=True)
    for qid, query, total, reason, confidence, evidence in rows:
        assert reason, query
        assert 0 < confidence <= 1
        assert evidence["metrics"]["total_ms"] == pytest.approx(total)
    # The unindexed lookup on orders is explained by its sequential scan, citing the table.
    seq = [r for r in rows if "FROM orders WHERE customer_id = $1" in r[1]]
    assert seq, [r[1] for r in rows]
    assert "sequential scan of orders" in seq[0][3]


def test_query_detail_has_metrics_plan_and_diagnosis(demo):
    conn, _ = demo
    qid = scalar(conn, "SELECT query_id FROM optidb.bottlenecks(1)")
    detail = scalar(conn, "SELECT optidb.query(%s)", (qid,))
    assert detail["query_id"] == qid
    assert detail["metrics"]["calls"] > 0
    assert detail["fingerprint"]
    assert detail["diagnosis"]["reasons"]
    assert detail["history"]


def test_bad_arguments_get_clear_errors(demo):
    conn, _ = demo
    with pytest.raises(psycopg.Error) as e:
        conn.execute("SELECT * FROM optidb.scan(-5)")
    assert e.value.sqlstate == "22023"
    assert "top must be a positive integer" in str(e.value)
    with pytest.raises(psycopg.Error) as e:
        conn.execute("SELECT * FROM optidb.bottlenecks(-1)")
    assert e.value.sqlstate == "22023"
    with pytest.raises(psycopg.Error) as e:
        conn.execute("SELECT optidb.query(987654321)")
    assert e.value.sqlstate == "P0002"
    assert "optidb has no statement with id 987654321" in str(e.value)
    # The session is still usable after each error.
    assert scalar(conn, "SELECT 1") == 1


def test_missing_pg_stat_statements_says_what_to_do(fresh_db):
    conn = fresh_db
    conn.execute("DROP EXTENSION pg_stat_statements")
    with pytest.raises(psycopg.Error) as e:
        conn.execute("SELECT * FROM optidb.scan()")
    assert e.value.sqlstate == "55000"
    assert "CREATE EXTENSION pg_stat_statements" in e.value.diag.message_hint


def test_functions_are_not_executable_by_public(fresh_db):
    conn = fresh_db
    conn.execute("DROP ROLE IF EXISTS optidb_nobody")
    conn.execute("CREATE ROLE optidb_nobody LOGIN")
    conn.execute("GRANT USAGE ON SCHEMA optidb TO optidb_nobody")
    try:
        dbname = conn.info.dbname
        with psycopg.connect(host=conn.info.host, port=conn.info.port, user="optidb_nobody",
                             dbname=dbname, autocommit=True) as other:
            with pytest.raises(psycopg.Error) as e:
                other.execute("SELECT * FROM optidb.scan()")
            assert e.value.sqlstate == "42501"
    finally:
        conn.execute("REVOKE USAGE ON SCHEMA optidb FROM optidb_nobody")
        conn.execute("DROP ROLE optidb_nobody")
