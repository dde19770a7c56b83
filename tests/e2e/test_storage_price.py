"""Storage priced in the workload index search (issue 23, `optidb.storage_price`): a wider
index must earn its extra MB over the narrower index made of its leading columns at least at
the advised set's own saving per MB, or the narrower one is advised.

A plain application role `app` (no optidb grant) owns schema `inv`, reached through SET
search_path, and runs its statements with PREPARE/EXECUTE; one statement errors. An
optidb_admin (not a superuser) scans. `stock` is counted by item under a quantity: (item_id,
qty) answers from the index alone and plans several times cheaper than (item_id), which must
visit the table; in milliseconds that is little against the set's big saver (`session` looked
up by token, many times), so at the default price the extra column goes; with storage free
(price 0) it stays, as `max_cost_rise` alone would have it."""

import uuid

import psycopg
import pytest

from conftest import app_workload_database, connect, scalar

pytestmark = pytest.mark.hypopg

INDEX_KINDS = ["missing_index", "composite_index", "expression_index"]

SCHEMA = """
CREATE SCHEMA inv;
SET search_path = inv;
CREATE TABLE stock (id int PRIMARY KEY, item_id int NOT NULL, qty int NOT NULL, note text);
INSERT INTO stock SELECT g, 1 + (g * 7919) % 20000, g % 100, repeat('s', 60)
    FROM generate_series(1, 200000) g;
CREATE TABLE session (id int PRIMARY KEY, token text NOT NULL, data text);
INSERT INTO session SELECT g, md5(g::text), repeat('d', 50) FROM generate_series(1, 200000) g;
"""


def run_workload(db, app):
    with connect(db, user=app) as c:
        c.execute("SET search_path = inv")
        c.execute("PREPARE cnt(int, int) AS "
                  "SELECT count(*) FROM stock WHERE item_id = $1 AND qty < $2")
        c.execute("PREPARE tok(text) AS SELECT data FROM session WHERE token = $1")
        for i in range(1, 6):
            c.execute(f"EXECUTE cnt({i * 3001}, 90)")
        for i in range(1, 41):
            c.execute(f"EXECUTE tok('{i * 4999:x}')")
        with pytest.raises(psycopg.errors.DivisionByZero):
            c.execute("SELECT count(*) FROM stock WHERE item_id = 1 / (%s - %s)", (1, 1))


def stock_advice(adm):
    return adm.execute(
        "SELECT columns, query_ids, evidence, index_mb FROM optidb.recommend() "
        "WHERE kind = ANY (%s) AND table_name = 'inv.stock'", (INDEX_KINDS,)).fetchall()


def last_summary(adm):
    return scalar(adm, "SELECT advice FROM optidb.scan_log WHERE advice IS NOT NULL "
                       "ORDER BY id DESC LIMIT 1")


@pytest.fixture(scope="module")
def workload():
    tag = uuid.uuid4().hex[:6]
    app, adm = f"app_{tag}", f"adm_{tag}"
    with connect("postgres") as su:
        su.execute(f"CREATE ROLE {app} LOGIN")
        su.execute(f"CREATE ROLE {adm} LOGIN IN ROLE optidb_admin")
    try:
        with app_workload_database(app, SCHEMA, run_workload) as db:
            with connect(db, user=adm) as a:
                yield db, a
    finally:
        with connect("postgres") as su:
            for r in (app, adm):
                su.execute(f"DROP ROLE IF EXISTS {r}")


def test_a_wide_index_gives_way_to_its_prefix_by_the_storage_price(workload):
    _, adm = workload
    adm.execute("RESET optidb.storage_price")
    adm.execute("SELECT * FROM optidb.scan()")
    rows = stock_advice(adm)
    assert [r[0] for r in rows] == [["item_id"]], rows
    _, query_ids, evidence, index_mb = rows[0]
    counted = scalar(adm, "SELECT id FROM optidb.query WHERE norm_sql LIKE "
                          "'%FROM stock WHERE item_id = $1 AND qty%' ORDER BY id LIMIT 1")
    assert counted in query_ids
    instead = evidence["instead_of"]
    assert "(item_id, qty)" in instead["dropped"], instead
    assert instead["rule"] == "storage_price", instead
    # What the narrower set loses is less than the freed bytes are worth at the price.
    assert 0 < instead["loss_ms_per_hour"] < instead["storage_price_ms_per_hour"], instead
    assert instead["bytes_saved"] > 0
    # 20,000 item values over 200,000 rows: deduplicated, (item_id) is below hypopg's one
    # entry per row (~4.3 MB).
    assert 0 < index_mb < 3.5, index_mb
    summary = last_summary(adm)
    assert summary["storage_price"] == 1.0
    assert summary["storage_price_ms_per_hour_per_mb"] > 0
    assert any(n["rule"] == "storage_price" for n in summary["narrowed"]), summary
    # The big saver is still advised.
    tok = adm.execute("SELECT columns FROM optidb.recommend() WHERE kind = ANY (%s) "
                      "AND table_name = 'inv.session'", (INDEX_KINDS,)).fetchall()
    assert [r[0] for r in tok] == [["token"]], tok


def test_with_storage_free_the_wide_index_is_kept_and_says_why(workload):
    _, adm = workload
    adm.execute("SET optidb.storage_price = 0")
    try:
        adm.execute("SELECT * FROM optidb.scan()")
        rows = stock_advice(adm)
        assert [r[0] for r in rows] == [["item_id", "qty"]], rows
        evidence = rows[0][2]
        assert "instead_of" not in evidence, evidence
        storage = evidence["storage"]
        assert "(item_id, qty)" in storage["kept"], storage
        assert storage["against"] is not None and "(item_id)" in storage["against"], storage
        assert storage["extra_bytes"] > 0
        assert storage["storage_price_ms_per_hour"] == 0
        assert storage["extra_saving_ms_per_hour"] > 0
        assert last_summary(adm)["storage_price"] == 0
    finally:
        adm.execute("RESET optidb.storage_price")


def test_the_price_is_the_dbas_to_set_and_refuses_nonsense(workload):
    _, adm = workload
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        adm.execute("SET optidb.storage_price = -1")
    adm.rollback() if adm.info.transaction_status != psycopg.pq.TransactionStatus.IDLE else None
    assert scalar(adm, "SELECT setting FROM pg_settings WHERE name = 'optidb.storage_price'") \
        == "1"
