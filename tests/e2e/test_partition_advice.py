"""Index advice for a partition the statement names itself (issue 23, part 2; Dexter's
test/create_test.rb test_partition): the index goes on that partition, which alone serves the
statement and can be built CONCURRENTLY; when the partitioned table is advised the same index
(a statement through the parent), the partition's advice is folded into it, since the parent's
CREATE INDEX makes that index on every partition. A plain role runs the statements in schema
`shop` reached through SET search_path, one through PREPARE/EXECUTE."""

import pytest

from conftest import connect, new_database

pytestmark = pytest.mark.hypopg

ROLE = "part_app"
SCHEMA = """
CREATE TABLE events (id int, blog_id int) PARTITION BY HASH (blog_id);
CREATE TABLE events_0 PARTITION OF events FOR VALUES WITH (MODULUS 3, REMAINDER 0);
CREATE TABLE events_1 PARTITION OF events FOR VALUES WITH (MODULUS 3, REMAINDER 1);
CREATE TABLE events_2 PARTITION OF events FOR VALUES WITH (MODULUS 3, REMAINDER 2);
INSERT INTO events SELECT n, n FROM generate_series(1, 300000) n;
ANALYZE events;
"""


def advice_after(statements):
    """Index advice on shop's tables after each of `statements` (n -> (SQL, params)) ran for
    n = 0, 1, 2."""
    with connect("postgres") as su:
        su.execute(f"DROP ROLE IF EXISTS {ROLE}")
        su.execute(f"CREATE ROLE {ROLE} LOGIN")
    try:
        with new_database(extensions=("pg_stat_statements", "hypopg", "optidb")) as db:
            with connect(db) as su:
                su.execute(f"CREATE SCHEMA shop AUTHORIZATION {ROLE}")
            with connect(db, user=ROLE) as app:
                app.execute("SET search_path = shop")
                app.execute(SCHEMA)
            with connect(db) as su:
                su.execute("SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database "
                           "WHERE datname = current_database()), 0)")
            with connect(db, user=ROLE) as app:
                app.execute("SET search_path = shop")
                app.execute("PREPARE one(int) AS SELECT * FROM events_0 WHERE blog_id = $1")
                for n in range(3):
                    for statement in statements:
                        app.execute(*statement(n)).fetchall()
            with connect(db) as su:
                su.execute("SELECT * FROM optidb.scan()")
                return su.execute(
                    "SELECT table_name, columns, ddl, array_length(query_ids, 1) "
                    "FROM optidb.recommend() WHERE kind IN ('missing_index', "
                    "'composite_index') AND table_name LIKE 'shop.%' "
                    "ORDER BY 1").fetchall()
    finally:
        with connect("postgres") as su:
            su.execute(f"DROP ROLE IF EXISTS {ROLE}")


def test_a_statement_on_one_partition_gets_that_partitions_index():
    rows = advice_after([lambda n: (f"EXECUTE one({3 * n + 3})", None)])
    assert [(t, c) for t, c, _, _ in rows] == [("shop.events_0", ["blog_id"])], rows
    assert rows[0][2].startswith("CREATE INDEX CONCURRENTLY"), rows


def test_with_a_statement_through_the_parent_one_parent_index_serves_both():
    rows = advice_after([
        lambda n: (f"EXECUTE one({3 * n + 3})", None),
        lambda n: ("SELECT * FROM events WHERE blog_id = %s", (n + 1000,)),
    ])
    assert [(t, c) for t, c, _, _ in rows] == [("shop.events", ["blog_id"])], rows
    assert rows[0][3] == 2, rows
