"""An application whose tables live in their own schema gets the same advice as the same
application in `public`, however its sessions reach the schema: `SET search_path` in the
session, `ALTER ROLE ... SET search_path`, or schema-qualified names; through the extended
protocol and SQL-level PREPARE/EXECUTE; with optidb preloaded (before or after
pg_stat_statements) and without it (the fallback that reads the role's settings and infers the
schema from the statement's relations)."""

import uuid

import pytest

from conftest import HYPOPG, PORT, connect, new_database, own_cluster, scalar

SCHEMA = """
CREATE TABLE {s}.orders AS
    SELECT g AS id, g % 20000 AS customer_id,
           (ARRAY['new', 'paid', 'shipped', 'cancelled'])[1 + g % 4] AS status,
           timestamptz '2026-01-01' + g * interval '1 minute' AS created_at
    FROM generate_series(1, 100000) g;
CREATE TABLE {s}.customers AS
    SELECT g AS id, 'user' || g || '@example.com' AS email FROM generate_series(1, 50000) g;
ANALYZE {s}.orders;
ANALYZE {s}.customers;
"""

# The application's statements, unqualified (the ORM relies on search_path), with parameters.
STATEMENTS = [
    ("SELECT * FROM {p}orders WHERE customer_id = %s", (42,)),
    ("SELECT id FROM {p}customers WHERE lower(email) = %s", ("user7@example.com",)),
    ("SELECT count(*) FROM {p}orders o JOIN {p}customers c ON c.id = o.customer_id "
     "WHERE c.email = %s", ("user9@example.com",)),
]


def run_workload(db, port, user, prefix="", prepare=False):
    with connect(db, user=user, port=port) as c:
        for _ in range(3):
            for sql, args in STATEMENTS:
                c.execute(sql.format(p=prefix), args)
        if prepare:
            # SQL-level PREPARE/EXECUTE, as some drivers and poolers do.
            c.execute("PREPARE by_customer(int) AS "
                      f"SELECT * FROM {prefix}orders WHERE customer_id = $1")
            for i in range(3):
                c.execute(f"EXECUTE by_customer({i})")


def advice(db, port):
    """Per statement text (schema prefix removed): the set of (kind, table, columns) advised,
    and the path source of its plan."""
    with connect(db, port=port) as c:
        c.execute("SELECT * FROM optidb.scan()")
        rows = c.execute("""
            SELECT q.norm_sql, r.rolname, p.path_source, p.explain_error,
                   (SELECT array_agg(DISTINCT x.kind || ' ' || split_part(x.table_name, '.', 2)
                                     || ' ' || array_to_string(x.columns, ','))
                    FROM optidb.recommend(q.id) x)
            FROM optidb.query q JOIN pg_roles r ON r.oid = q.userid
            LEFT JOIN LATERAL (SELECT * FROM optidb.plan WHERE query_id = q.id
                               ORDER BY captured_at DESC, id DESC LIMIT 1) p ON true
            WHERE q.norm_sql ~ '(orders|customers)' AND q.kind = 'select'""").fetchall()
    return [(sql.replace("app.", ""), role, src, err, sorted(recs or []))
            for sql, role, src, err, recs in rows]


def compare(db, port, roles, expected_sources, public_advice):
    got = advice(db, port)
    for sql, role, src, err, recs in got:
        who = next(k for k, v in roles.items() if v == role)
        assert err is None, (who, sql, err)
        assert src in expected_sources[who], (who, sql, src)
        assert recs == public_advice[sql], (who, sql, recs, public_advice[sql])
    assert {next(k for k, v in roles.items() if v == r) for _, r, *_ in got} == set(roles)


def scenario(port, expected_sources):
    tag = uuid.uuid4().hex[:6]
    roles = {k: f"optidb_{k}_{tag}" for k in ("set", "alter", "qualified", "pub")}
    with connect("postgres", port=port) as su:
        for name in roles.values():
            su.execute(f'CREATE ROLE "{name}" LOGIN')
        su.execute(f"ALTER ROLE \"{roles['alter']}\" SET search_path = app, public")
    try:
        with new_database(port, ("pg_stat_statements", *HYPOPG, "optidb")) as public_db:
            with connect(public_db, port=port) as su:
                su.execute(SCHEMA.format(s="public"))
                su.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO PUBLIC")
                su.execute("SELECT pg_stat_statements_reset()")
            run_workload(public_db, port, roles["pub"], prepare=True)
            baseline = {sql: recs for sql, _, _, _, recs in advice(public_db, port)}
            assert len(baseline) == len(STATEMENTS), baseline
            assert all(baseline.values()), baseline

        with new_database(port, ("pg_stat_statements", *HYPOPG, "optidb")) as db:
            with connect(db, port=port) as su:
                su.execute("CREATE SCHEMA app")
                su.execute(SCHEMA.format(s="app"))
                su.execute("GRANT USAGE ON SCHEMA app TO PUBLIC")
                su.execute("GRANT SELECT ON ALL TABLES IN SCHEMA app TO PUBLIC")
                su.execute("SELECT pg_stat_statements_reset()")
            with connect(db, user=roles["set"], port=port) as c:
                c.execute("SET search_path = app, public")
                for _ in range(3):
                    for sql, args in STATEMENTS:
                        c.execute(sql.format(p=""), args)
                c.execute("PREPARE by_customer(int) AS "
                          "SELECT * FROM orders WHERE customer_id = $1")
                for i in range(3):
                    c.execute(f"EXECUTE by_customer({i})")
            run_workload(db, port, roles["alter"])
            run_workload(db, port, roles["qualified"], prefix="app.")
            compare(db, port, {k: roles[k] for k in ("set", "alter", "qualified")},
                    expected_sources, baseline)
    finally:
        with connect("postgres", port=port) as su:
            for name in roles.values():
                su.execute(f'DROP ROLE "{name}"')


# Where each role's search_path comes from: recorded by optidb's hooks when it is preloaded,
# else the role's setting, the server default, or inferred from the statement's relations.
RECORDED = {"set": {"recorded"}, "alter": {"recorded"}, "qualified": {"recorded"}}
FALLBACK = {"set": {"inferred"}, "alter": {"role_setting"}, "qualified": {"server_default"}}


def test_same_advice_in_a_schema_of_its_own_with_optidb_preloaded():
    scenario(PORT, RECORDED)


@pytest.mark.parametrize("preload", ["pg_stat_statements", "optidb,pg_stat_statements"])
def test_same_advice_in_a_schema_of_its_own_on_other_clusters(preload):
    with own_cluster("search-path", 55437, preload) as port:
        scenario(port, RECORDED if "optidb" in preload else FALLBACK)


def test_an_ambiguous_schema_is_explained_not_guessed(fresh_db):
    conn = fresh_db
    db = scalar(conn, "SELECT current_database()")
    conn.execute("CREATE SCHEMA app_a; CREATE SCHEMA app_b")
    for s in ("app_a", "app_b"):
        conn.execute(SCHEMA.format(s=s))
    conn.execute("SELECT pg_stat_statements_reset()")
    with connect(db) as c:
        c.execute("SET search_path = app_b, public")
        c.execute("SELECT * FROM orders WHERE customer_id = %s", (1,))
    conn.execute("SELECT * FROM optidb.scan()")
    err, src = conn.execute(
        "SELECT p.explain_error, p.path_source FROM optidb.plan p JOIN optidb.query q "
        "ON q.id = p.query_id WHERE q.raw_sql LIKE '%FROM orders WHERE customer_id%'").fetchone()
    if src == "recorded":  # optidb's hooks saw the session's search_path
        assert err is None
    else:
        assert "app_a, app_b" in err and "which one the statement used is unknown" in err, err
