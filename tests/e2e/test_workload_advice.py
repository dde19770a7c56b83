"""Cost-based, workload-level index advice (issue 23): candidates from everything the planner
could use, judged by hypopg costs, chosen for the whole workload net of write cost.

One database, one application role `app` (a plain LOGIN role, no optidb grant) whose tables
live in schema `shop`, reached through SET search_path; it runs each statement several times
with varied values over the extended protocol, PREPARE/EXECUTE or the simple protocol, and one
statement that errors. An optidb_admin (not a superuser) scans. A reader and a hostile reader
see none of the app's advice. Each case is a shape the old per-statement rules missed."""

import time
import uuid

import psycopg
import pytest

from conftest import app_workload_database, connect, scalar

pytestmark = pytest.mark.hypopg

INDEX_KINDS = ["missing_index", "composite_index", "expression_index"]

SCHEMA = """
CREATE SCHEMA shop;
SET search_path = shop;
CREATE TABLE author (id int PRIMARY KEY, name text);
CREATE TABLE book (id int PRIMARY KEY, author_id int NOT NULL, title text);
CREATE TABLE review (id int PRIMARY KEY, book_id int NOT NULL, stars int, body text);
INSERT INTO author SELECT g, 'author ' || g FROM generate_series(1, 2000) g;
INSERT INTO book SELECT g, 1 + g % 2000, 'title ' || g FROM generate_series(1, 20000) g;
INSERT INTO review SELECT g, 1 + (g * 7919) % 20000, g % 5, repeat('r', 80)
    FROM generate_series(1, 200000) g;

-- user_id keeps ~10% of the rows; blog_id 0.1%.
CREATE TABLE post (id int PRIMARY KEY, user_id int NOT NULL, blog_id int NOT NULL,
                   created_at timestamptz NOT NULL, body text);
INSERT INTO post SELECT g, 1 + g % 10, 1 + (g * 31) % 1000,
                        '2026-01-01'::timestamptz + g * interval '1 minute', repeat('p', 200)
    FROM generate_series(1, 200000) g;

CREATE TABLE measurement (sensor_id int NOT NULL, logdate date NOT NULL, value float8)
    PARTITION BY RANGE (logdate);
CREATE TABLE measurement_q1 PARTITION OF measurement FOR VALUES FROM ('2026-01-01') TO ('2026-04-01');
CREATE TABLE measurement_q2 PARTITION OF measurement FOR VALUES FROM ('2026-04-01') TO ('2026-07-01');
CREATE TABLE measurement_q3 PARTITION OF measurement FOR VALUES FROM ('2026-07-01') TO ('2026-10-01');
CREATE TABLE measurement_q4 PARTITION OF measurement FOR VALUES FROM ('2026-10-01') TO ('2027-01-01');
INSERT INTO measurement SELECT 1 + g % 5000, '2026-01-01'::date + (g % 365), g
    FROM generate_series(1, 400000) g;

CREATE TABLE account (id int PRIMARY KEY, email text NOT NULL, balance numeric NOT NULL);
INSERT INTO account SELECT g, 'user' || g || '@example.com', 0 FROM generate_series(1, 200000) g;
CREATE TABLE session (id int PRIMARY KEY, token text NOT NULL, data text);
INSERT INTO session SELECT g, md5(g::text), repeat('s', 50) FROM generate_series(1, 200000) g;

CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL, total numeric NOT NULL,
                     note text);
INSERT INTO orders SELECT g, 1 + g % 40000, g % 500, repeat('o', 60)
    FROM generate_series(1, 200000) g;
CREATE VIEW big_orders AS SELECT id, customer_id, total FROM orders WHERE total > 100;

-- One schema per tenant, the same table in each: the same statement text runs in both.
CREATE SCHEMA tenant_a;
CREATE SCHEMA tenant_b;
CREATE TABLE tenant_a.ticket (id int PRIMARY KEY, owner_id int NOT NULL, body text);
CREATE TABLE tenant_b.ticket (id int PRIMARY KEY, owner_id int NOT NULL, body text);
INSERT INTO tenant_a.ticket SELECT g, 1 + g % 20000, repeat('t', 60)
    FROM generate_series(1, 150000) g;
INSERT INTO tenant_b.ticket SELECT g, 1 + g % 20000, repeat('t', 60)
    FROM generate_series(1, 150000) g;

-- Renamed all day, looked up by username. Room on each page (fillfactor 90) keeps the renames
-- HOT, so an index on username, whose name contains the column they set, costs them nothing.
CREATE TABLE member (id int PRIMARY KEY, username text NOT NULL, name text, bio text)
    WITH (fillfactor = 90);
INSERT INTO member SELECT g, 'member' || g, 'Name ' || g, repeat('b', 60)
    FROM generate_series(1, 200000) g;

-- Looked up by part since a date: part_id keeps 10 rows, the date 88% of them.
-- (part_id, shipped) plans a little cheaper than (part_id) (well within 1.2x) but is half
-- again as large.
CREATE TABLE line (id int PRIMARY KEY, part_id int NOT NULL, shipped timestamptz NOT NULL,
                   note text);
INSERT INTO line SELECT g, 1 + (g * 7919) % 20000,
                        '2026-01-01'::timestamptz + (g % 400) * interval '1 day', repeat('l', 60)
    FROM generate_series(1, 200000) g;

-- Counted by item under a quantity: item_id keeps 10 rows, qty < 90 nine tenths of them.
-- (item_id, qty) answers from the index alone; (item_id) must visit the table for qty, which
-- plans several times the cost, however small a share of the saving that is.
CREATE TABLE stock (id int PRIMARY KEY, item_id int NOT NULL, qty int NOT NULL, note text);
INSERT INTO stock SELECT g, 1 + (g * 7919) % 20000, g % 100, repeat('s', 60)
    FROM generate_series(1, 200000) g;

-- Written all the time, read once: an index on status would cost more than it saves.
CREATE TABLE event (id int PRIMARY KEY, status int NOT NULL, payload text);
INSERT INTO event SELECT g, g % 50, repeat('e', 40) FROM generate_series(1, 200000) g;
"""


def expected(conn, table, leading):
    """Open index advice on shop.<table> whose columns start with `leading`."""
    rows = conn.execute(
        "SELECT columns, query_ids, rank, saving_ms_per_hour, write_ms_per_hour, "
        "       net_ms_per_hour, index_mb, evidence "
        "FROM optidb.recommend() WHERE kind = ANY (%s) AND table_name = %s",
        (INDEX_KINDS, f"shop.{table}")).fetchall()
    return [r for r in rows if r[0][:len(leading)] == leading], rows


def statement_id(conn, fragment):
    qid = scalar(conn, "SELECT id FROM optidb.query WHERE norm_sql LIKE %s ORDER BY id LIMIT 1",
                 ("%" + fragment + "%",))
    assert qid is not None, f"statement not recorded: {fragment}"
    return qid


def run_workload(db, app):
    with connect(db, user=app) as c:
        c.execute("SET search_path = shop")
        for i in range(1, 6):
            # Extended protocol (psycopg sends parameters separately).
            c.execute("SELECT count(*) FROM book b JOIN review r ON r.book_id = b.id "
                      "WHERE b.author_id = %s", (i * 37,))
            c.execute("SELECT count(*) FROM post WHERE user_id = %s", (i,))
            c.execute("SELECT id, created_at FROM post WHERE blog_id = %s "
                      "ORDER BY created_at DESC LIMIT 10", (i * 101,))
            c.execute("SELECT avg(value) FROM measurement WHERE sensor_id = %s "
                      "AND logdate >= %s AND logdate < %s", (i * 13, "2026-05-01", "2026-05-08"))
            c.execute("SELECT id, total FROM big_orders WHERE customer_id = %s", (i * 999,))
            c.execute("DELETE FROM session WHERE token = %s", (f"no-such-token-{i}",))
            c.execute("SELECT id, note FROM line WHERE part_id = %s AND shipped >= %s",
                      (i * 3001, "2026-02-18"))
            c.execute("SELECT count(*) FROM stock WHERE item_id = %s AND qty < %s",
                      (i * 3001, 90))
        # The same text in each tenant's schema, the tenants taking turns, each turn past the
        # database's 1 s sample interval: every tenant's executions are sampled however fast
        # they run (a release build ran all eight within one interval, sampling tenant_a only).
        for i in range(1, 5):
            for tenant in ("tenant_a", "tenant_b"):
                time.sleep(1.1)
                c.execute(f"SET search_path = {tenant}")
                c.execute("SELECT id, body FROM ticket WHERE owner_id = %s", (i * 4001,))
        c.execute("SET search_path = shop")
        # SQL-level PREPARE/EXECUTE.
        c.execute("PREPARE pay(numeric, text) AS "
                  "UPDATE account SET balance = balance + $1 WHERE email = $2")
        for i in range(1, 6):
            c.execute(f"EXECUTE pay(1, 'user{i * 7}@example.com')")
        # A statement that errors is recorded as failing and does not stop anything.
        with pytest.raises(psycopg.errors.DivisionByZero):
            c.execute("SELECT count(*) FROM post WHERE user_id = 1 / (%s - %s)", (1, 1))
        # The write-heavy table: 9,000 single-row INSERTs and 9,000 UPDATEs of status, in the
        # simple protocol (ClientCursor inlines the values), and one read of status.
        cur = psycopg.ClientCursor(c)
        with c.transaction():
            for i in range(9000):
                cur.execute("INSERT INTO event VALUES (%s, %s, 'x')", (300000 + i, i % 50))
        with c.transaction():
            for i in range(9000):
                cur.execute("UPDATE event SET status = %s WHERE id = %s", (i % 50, 1 + i * 7))
        c.execute("SELECT count(*) FROM event WHERE status = %s", (7,))
        with c.transaction():
            for i in range(9000):
                cur.execute("UPDATE member SET name = %s WHERE id = %s", (f"N{i}", 1 + i * 13))
        for i in range(1, 6):
            c.execute("SELECT id, name FROM member WHERE username = %s", (f"member{i * 3001}",))


@pytest.fixture(scope="module")
def advised():
    tag = uuid.uuid4().hex[:6]
    app, reader, adm, mallory = (f"{r}_{tag}" for r in ("app", "reader", "adm", "mallory"))
    with connect("postgres") as su:
        su.execute(f"CREATE ROLE {app} LOGIN")
        su.execute(f"CREATE ROLE {reader} LOGIN IN ROLE optidb_reader")
        su.execute(f"CREATE ROLE {adm} LOGIN IN ROLE optidb_admin")
        su.execute(f"CREATE ROLE {mallory} LOGIN IN ROLE optidb_reader")
    try:
        with app_workload_database(app, SCHEMA, run_workload) as db:
            with connect(db, user=adm) as a:
                a.execute("SELECT * FROM optidb.scan()")
                yield db, a, {"app": app, "reader": reader, "mallory": mallory}
    finally:
        with connect("postgres") as su:
            for r in (app, reader, adm, mallory):
                su.execute(f"DROP ROLE IF EXISTS {r}")


def test_a_join_key_inside_a_hash_join_is_advised(advised):
    _, adm, _ = advised
    hits, rows = expected(adm, "review", ["book_id"])
    assert hits, rows
    qid = statement_id(adm, "JOIN review r ON r.book_id = b.id")
    assert qid in hits[0][1]
    served = {s["query_id"]: s for s in hits[0][7]["serves"]}
    assert served[qid]["cost_after"] < 0.7 * served[qid]["cost_before"]


def test_a_filter_keeping_a_tenth_of_the_rows_is_advised_when_the_cost_falls(advised):
    _, adm, _ = advised
    hits, rows = expected(adm, "post", ["user_id"])
    assert hits, rows
    assert statement_id(adm, "FROM post WHERE user_id = $1") in hits[0][1]


def test_equality_and_order_by_limit_make_one_index(advised):
    _, adm, _ = advised
    hits, rows = expected(adm, "post", ["blog_id", "created_at DESC"])
    assert hits, rows
    # Not also the narrower index the combined one makes useless.
    plain = [r for r in expected(adm, "post", ["blog_id"])[0] if r[0] == ["blog_id"]]
    assert not plain, rows


def test_a_partitioned_table_gets_the_index_on_its_parent(advised):
    _, adm, _ = advised
    hits, rows = expected(adm, "measurement", ["sensor_id"])
    assert hits, rows
    partitions = adm.execute(
        "SELECT table_name FROM optidb.recommend() WHERE table_name LIKE 'shop.measurement_q%'"
    ).fetchall()
    assert not partitions, partitions
    ddl = scalar(adm, "SELECT ddl FROM optidb.recommend() WHERE table_name = 'shop.measurement' "
                      "AND columns[1] = 'sensor_id'")
    # A partitioned table's index cannot be built CONCURRENTLY (PostgreSQL refuses it).
    assert ddl.startswith("CREATE INDEX ON shop.measurement (sensor_id"), ddl


def test_update_and_delete_filters_are_advised(advised):
    _, adm, _ = advised
    for table, column, fragment in (("account", "email", "UPDATE account SET balance"),
                                    ("session", "token", "DELETE FROM session")):
        hits, rows = expected(adm, table, [column])
        assert hits, (table, rows)
        assert statement_id(adm, fragment) in hits[0][1]


def test_a_view_is_resolved_to_its_table(advised):
    _, adm, _ = advised
    hits, rows = expected(adm, "orders", ["customer_id"])
    assert hits, rows
    assert statement_id(adm, "FROM big_orders WHERE customer_id") in hits[0][1]


def test_the_same_text_in_each_tenant_schema_is_one_tenant_family(advised):
    _, adm, _ = advised
    qid = statement_id(adm, "FROM ticket WHERE owner_id = $1")
    rows = adm.execute(
        "SELECT table_name, columns, query_ids, rec_id FROM optidb.recommend() "
        "WHERE kind = ANY (%s) AND table_name LIKE 'tenant_%%.ticket'", (INDEX_KINDS,)
    ).fetchall()
    advised_in = sorted(r[0] for r in rows if r[1][:1] == ["owner_id"] and qid in r[2])
    assert advised_in == ["tenant_a.ticket", "tenant_b.ticket"], rows
    # Each simulated where the statement ran against that tenant's table.
    for table, _, _, rec_id in rows:
        sim = adm.execute("SELECT improvement_pct, error "
                          "FROM optidb.simulate(query_id => %s, rec_id => %s)",
                          (qid, rec_id)).fetchone()
        assert sim[1] is None and sim[0] > 50, (table, sim)
    # ... and one tenant family (issue 27): one row in tenant_advice() for both schemas, whose
    # tables the application role owns (all of them: it is trusted for the family).
    families = adm.execute(
        "SELECT schemas, lacking, already_indexed, rec_ids, untrusted_schemas "
        "FROM optidb.tenant_advice() WHERE table_name = 'ticket'").fetchall()
    assert [f[:3] + (f[4],) for f in families] == [(["tenant_a", "tenant_b"], 2, 0, [])], families
    assert sorted(families[0][3]) == sorted(r[3] for r in rows if r[0] in advised_in)


def test_an_index_whose_writes_cost_more_than_it_saves_is_not_advised(advised):
    _, adm, _ = advised
    hits, rows = expected(adm, "event", ["status"])
    assert not rows, rows
    kept = adm.execute(
        "SELECT status, confidence, saving_ms_per_hour, write_ms_per_hour, evidence "
        "FROM optidb.recommendation WHERE tablename = 'event' AND columns[1] = 'status'"
    ).fetchall()
    assert kept, "the net negative index is not kept as rejected advice"
    status, confidence, saving, write, evidence = kept[0]
    assert status == "rejected" and confidence <= 0.3
    assert write > saving > 0
    assert evidence["writes"]["rows_inserted"] >= 9000
    assert evidence["writes"]["rows_updated_in_indexed_columns"] >= 9000


def test_hot_updates_of_another_column_cost_an_index_nothing(advised):
    _, adm, _ = advised
    hits, rows = expected(adm, "member", ["username"])
    assert hits, rows
    _, query_ids, _, saving_ms_per_hour, write_ms_per_hour, _, _, evidence = hits[0]
    assert statement_id(adm, "FROM member WHERE username") in query_ids
    # 9,000 UPDATEs set `name`, none changes `username`: only an update that is not HOT (no
    # room on its page) would add an entry to it, and the table's counters say nearly all were.
    writes = evidence["writes"]
    assert writes["rows_updated_in_indexed_columns"] == 0, writes
    assert writes["hot_updates_lost"] == 0, writes
    assert writes["index_entries"] <= 0.05 * 9000, writes
    assert write_ms_per_hour < 0.05 * saving_ms_per_hour, hits[0]


def test_a_narrower_index_is_advised_when_the_wider_adds_little(advised):
    _, adm, _ = advised
    hits, rows = expected(adm, "line", ["part_id"])
    # Not (part_id, shipped): its second column saves under a tenth of what (part_id) does.
    assert [r[0] for r in rows] == [["part_id"]], rows
    _, query_ids, _, _, _, _, _, evidence = hits[0]
    assert statement_id(adm, "FROM line WHERE part_id") in query_ids
    instead = evidence["instead_of"]
    assert "(part_id, shipped)" in instead["dropped"], instead
    assert instead["bytes_saved"] > 0
    assert 0 <= instead["loss_ms_per_hour"] <= 0.1 * instead["served_ms_per_hour"], instead
    summary = scalar(adm, "SELECT advice FROM optidb.scan_log WHERE advice IS NOT NULL "
                          "ORDER BY id DESC LIMIT 1")
    assert summary["size_share"] == 0.1
    assert summary["max_cost_rise"] == 0.2
    assert any("(part_id, shipped)" in n["dropped"] for n in summary["narrowed"]), summary


def test_a_wider_index_is_kept_when_its_statement_would_plan_far_above_it(advised):
    _, adm, _ = advised
    # At the default storage price (qty's extra MB save less than the set's average MB) the
    # narrower index is advised by that rule, not by the 10% / 1.2x one.
    hits, rows = expected(adm, "stock", ["item_id"])
    assert [r[0] for r in rows] == [["item_id"]], rows
    assert hits[0][7]["instead_of"]["rule"] == "storage_price", hits[0][7]
    # With storage free, (item_id) keeps nearly all of the saving (the table scan was the
    # cost), but the count would plan several times its cost with (item_id, qty): it stays.
    adm.execute("SET optidb.storage_price = 0")
    try:
        adm.execute("SELECT * FROM optidb.scan()")
        hits, rows = expected(adm, "stock", ["item_id"])
        assert [r[0] for r in rows] == [["item_id", "qty"]], rows
        _, query_ids, _, _, _, _, _, evidence = hits[0]
        assert statement_id(adm, "FROM stock WHERE item_id") in query_ids
        assert "instead_of" not in evidence, evidence
    finally:
        adm.execute("RESET optidb.storage_price")
        adm.execute("SELECT * FROM optidb.scan()")


def test_every_advised_index_has_its_figures_and_the_set_a_summary(advised):
    _, adm, _ = advised
    rows = adm.execute(
        "SELECT rank, saving_ms_per_hour, write_ms_per_hour, net_ms_per_hour, index_mb "
        "FROM optidb.recommend() WHERE kind = ANY (%s)", (INDEX_KINDS,)).fetchall()
    assert len(rows) >= 6, rows
    ranks = sorted(r[0] for r in rows)
    assert ranks == list(range(1, len(rows) + 1)), ranks
    for rank, saving, write, net, mb in rows:
        assert net > 0 and abs(net - (saving - write)) < 1e-6 and mb > 0
    s = adm.execute("SELECT indexes, index_mb, budget_mb, workload_cost_before, "
                    "workload_cost_after, statements_searched FROM optidb.advice_summary()"
                    ).fetchone()
    assert s[0] == len(rows)
    assert 0 < s[1] <= s[2]
    assert s[4] < 0.5 * s[3], s
    assert s[5] >= 7


def test_readers_see_none_of_the_apps_advice_and_the_app_role_no_optidb(advised):
    db, adm, roles = advised
    for who in ("reader", "mallory"):
        with connect(db, user=roles[who]) as c:
            seen = c.execute("SELECT count(*) FROM optidb.recommend() WHERE kind = ANY (%s)",
                             (INDEX_KINDS,)).fetchone()[0]
            assert seen == 0
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute("SELECT * FROM optidb.advice_summary()")
    with connect(db, user=roles["app"]) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("SELECT * FROM optidb.recommend()")
