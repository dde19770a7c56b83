"""Replays run only code the statement's owner trusts (issue 22, attack 1).

mallory (LOGIN, optidb_reader, owns schema m) makes harmless objects readable by everyone: a
function m.f(int), a view m.v and an empty table m.t. The superuser and victim (a plain role)
use them in statements that are harmless when they run. mallory then keeps the OIDs and changes
what they run (CREATE OR REPLACE FUNCTION, CREATE OR REPLACE VIEW over a new function, a
`_RETURN` rule that turns the table into a view) so that, run by anyone else, they log who ran
them, bump her sequence and, as a superuser, run a shell command and read password hashes.
adm (optidb_admin, not a superuser) scans and simulates. Nothing of mallory's may run as
anyone else, the refusal must name the object and its owner, and statements over trusted
objects only (the owner's own functions, built-ins) must still be planned and advised."""

import pytest

from conftest import HYPOPG, scalar
from test_replay_attacks import advice_serving, plan_errors, scan, world  # noqa: F401

HARMLESS = """
CREATE SEQUENCE m.s;
GRANT USAGE, SELECT, UPDATE ON SEQUENCE m.s TO PUBLIC;
CREATE FUNCTION m.f(i int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $f$
BEGIN RETURN i; END $f$;
CREATE VIEW m.v AS SELECT 1 AS x;
CREATE TABLE m.t (id int);
GRANT SELECT ON m.v, m.t TO PUBLIC;
"""

# What each variant turns its object into. m.bump(tag) logs and bumps m.s for anyone but
# mallory, and does the superuser's damage through m.harm.
HOSTILE = {
    "function": """
        CREATE OR REPLACE FUNCTION m.f(i int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $f$
        BEGIN PERFORM m.bump('function'); RETURN i; END $f$""",
    "view": """
        CREATE FUNCTION m.g() RETURNS int LANGUAGE plpgsql IMMUTABLE AS $f$
        BEGIN PERFORM m.bump('view'); RETURN 1; END $f$;
        CREATE OR REPLACE VIEW m.v AS SELECT m.g() AS x""",
    "rule": """
        CREATE FUNCTION m.g() RETURNS int LANGUAGE plpgsql IMMUTABLE AS $f$
        BEGIN PERFORM m.bump('rule'); RETURN 1; END $f$;
        CREATE RULE "_RETURN" AS ON SELECT TO m.t DO INSTEAD SELECT m.g() AS id""",
}

BUMP = """
CREATE FUNCTION m.bump(tag text) RETURNS int LANGUAGE plpgsql VOLATILE AS $f$
BEGIN
  IF pg_catalog.current_user() OPERATOR(pg_catalog.<>) 'MALLORY' THEN
    PERFORM pg_catalog.setval('m.s', 4242);
    PERFORM m.harm(tag);
  END IF;
  RETURN 1;
END $f$;
"""

STATEMENTS = {
    "function": "SELECT count(*) FROM public.shared_t WHERE v = m.f(3)",
    "view": "SELECT count(*) FROM m.v",
    "rule": "SELECT * FROM m.t",
}
# What identifies each in pg_stat_statements' normalized text.
FRAGMENT = {"function": "WHERE v = m.f(", "view": "FROM m.v", "rule": "FROM m.t"}
OBJECT = {"function": "function m.f(integer)", "view": "view m.v", "rule": "view m.t"}


def run_three_times(w, who, sql):
    with w.conn(who) as c:
        c.execute("SET search_path = vs, public" if who == "victim" else "SELECT 1")
        for _ in range(3):
            c.execute(sql)


def assert_sequence_untouched(w):
    with w.conn("postgres") as su:
        assert not scalar(su, "SELECT is_called FROM m.s"), "mallory's sequence was set"


@pytest.mark.parametrize("owner", ["postgres", "victim"])
@pytest.mark.parametrize("variant", ["function", "view", "rule"])
def test_objects_redefined_after_the_statement_ran_are_not_replayed(world, owner, variant):
    w = world
    with w.conn("postgres") as su:
        if variant == "rule" and int(scalar(su, "SHOW server_version_num")) >= 160000:
            pytest.skip("PostgreSQL 16+ no longer turns a table into a view with a rule")
    w.as_mallory(HARMLESS + BUMP)
    run_three_times(w, owner, STATEMENTS[variant])
    w.as_mallory(HOSTILE[variant])
    scan(w, "adm")
    with w.conn("adm") as c:
        errors = plan_errors(c, FRAGMENT[variant])
        assert errors, "the statement was not recorded or not attempted"
        for err in errors:
            assert err and OBJECT[variant] in err and w.roles["mallory"] in err, err
        assert scalar(c, "SELECT count(*) FROM optidb.plan p JOIN optidb.query q "
                         "ON q.id = p.query_id WHERE strpos(q.raw_sql, %s) > 0 "
                         "AND p.plan_json IS NOT NULL", (FRAGMENT[variant],)) == 0
    assert_sequence_untouched(w)
    w.assert_unharmed()


@pytest.mark.hypopg
@pytest.mark.parametrize("owner", ["postgres", "victim"])
def test_a_function_handed_to_another_role_after_the_advice_is_not_simulated(world, owner):
    """The statement's function was its owner's when scan() planned and advised it; then it
    was handed to mallory (REASSIGN OWNED, ALTER FUNCTION ... OWNER) and she rewrote it.
    simulate() in both modes refuses, naming the function and mallory."""
    w = world
    w.as_mallory("CREATE SEQUENCE m.s; GRANT USAGE, SELECT, UPDATE ON SEQUENCE m.s TO PUBLIC;"
                 + BUMP)
    schema = "vs" if owner == "victim" else "public"
    with w.conn(owner) as c:
        c.execute(f"CREATE FUNCTION {schema}.norm(i int) RETURNS int LANGUAGE plpgsql "
                  "IMMUTABLE AS $f$ BEGIN RETURN i; END $f$")
    sql = f"SELECT {schema}.norm(count(*)::int) FROM public.shared_t WHERE v = 7"
    run_three_times(w, owner, sql)
    scan(w, "adm")
    with w.conn("adm") as c:
        served = advice_serving(c, f"{schema}.norm(count(*)")
        assert served, "a statement over its owner's own function was not advised"
        rec, qid = served
    with w.conn("postgres") as su:
        su.execute(f'ALTER FUNCTION {schema}.norm(int) OWNER TO "{w.roles["mallory"]}"')
        # CREATE OR REPLACE needs CREATE on the schema too.
        su.execute(f'GRANT CREATE ON SCHEMA {schema} TO "{w.roles["mallory"]}"')
    w.as_mallory(f"""
        CREATE OR REPLACE FUNCTION {schema}.norm(i int) RETURNS int LANGUAGE plpgsql
        IMMUTABLE AS $f$ BEGIN PERFORM m.bump('handed'); RETURN i; END $f$""")
    with w.conn("adm") as c:
        for mode in ("hypopg", "real"):
            err = scalar(c, "SELECT error FROM optidb.simulate(%s, %s, %s)", (qid, rec, mode))
            assert err and f"function {schema}.norm(integer)" in err \
                and w.roles["mallory"] in err, (mode, err)
    assert_sequence_untouched(w)
    w.assert_unharmed()


def test_statements_over_trusted_code_are_still_planned_and_advised(world):
    """The owner's own function, in its own schema reached through search_path, with
    PREPARE/EXECUTE; and a superuser's statement over built-ins only."""
    w = world
    with w.conn("victim") as c:
        c.execute("CREATE TABLE vs.orders AS SELECT g AS id, g % 400 AS customer_id "
                  "FROM generate_series(1, 40000) g")
        c.execute("ANALYZE vs.orders")
        c.execute("CREATE FUNCTION vs.cust(i int) RETURNS int LANGUAGE plpgsql IMMUTABLE "
                  "AS $f$ BEGIN RETURN i; END $f$")
        c.execute("SET search_path = vs, public")
        c.execute("PREPARE by_cust(int) AS SELECT count(*) FROM orders "
                  "WHERE customer_id = cust($1)")
        for i in range(3):
            c.execute(f"EXECUTE by_cust({i})")
    with w.conn("postgres") as c:
        for i in range(3):
            c.execute("SELECT count(*) FROM public.shared_t WHERE v = pg_catalog.abs(%s)", (i,))
    scan(w, "adm")
    with w.conn("adm") as c:
        for fragment in ("cust($1)", "pg_catalog.abs("):
            errors = plan_errors(c, fragment)
            assert errors and not [e for e in errors if e], (fragment, errors)
            assert advice_serving(c, fragment), f"no advice for {fragment}"
    w.assert_unharmed()


@pytest.mark.parametrize("owner", ["postgres", "victim"])
def test_an_index_added_later_whose_expression_folds_hostile_code_is_not_planned(world, owner):
    """The planner folds constant parts of index expressions when it loads a table's indexes:
    mallory adds to her own table, after the statement ran, an index over m.f(1)."""
    w = world
    w.as_mallory(HARMLESS + BUMP + """
        CREATE TABLE m.t2 AS SELECT g AS id FROM generate_series(1, 5000) g;
        GRANT SELECT ON m.t2 TO PUBLIC""")
    sql = "SELECT count(*) FROM m.t2 WHERE id = 5"
    run_three_times(w, owner, sql)
    w.as_mallory(HOSTILE["function"] + "; CREATE INDEX ON m.t2 ((id + m.f(1)))")
    scan(w, "adm")
    with w.conn("adm") as c:
        errors = plan_errors(c, "FROM m.t2 WHERE id")
        assert errors and all(e and "function m.f(integer)" in e for e in errors), errors
    assert_sequence_untouched(w)
    w.assert_unharmed()


def test_a_role_the_dba_lists_in_trusted_roles_is_trusted_for_every_replay(world):
    """An application whose views and functions belong to a migration role: refused by
    default, planned once a superuser lists that role in optidb.trusted_roles."""
    w = world
    migr = w.roles["mallory"].replace("mallory", "migr")
    with w.conn("postgres") as su:
        su.execute(f'CREATE ROLE "{migr}"')
        su.execute(f'CREATE SCHEMA app AUTHORIZATION "{migr}"')
        su.execute(f'SET ROLE "{migr}"')
        su.execute("CREATE FUNCTION app.f(i int) RETURNS int LANGUAGE plpgsql IMMUTABLE "
                   "AS $f$ BEGIN RETURN i; END $f$")
        su.execute("CREATE VIEW app.v AS SELECT id, v FROM public.shared_t WHERE v > app.f(1)")
        su.execute("GRANT USAGE ON SCHEMA app TO PUBLIC; GRANT SELECT ON app.v TO PUBLIC")
        su.execute("RESET ROLE")
    try:
        run_three_times(w, "victim", "SELECT count(*) FROM app.v WHERE id = 9")
        scan(w, "adm")
        with w.conn("adm") as c:
            errors = plan_errors(c, "FROM app.v WHERE")
            assert errors and all(e and "view app.v" in e and migr in e for e in errors), errors
        with w.conn("postgres") as su:
            su.execute(f'ALTER DATABASE "{w.db}" SET optidb.trusted_roles = \'"{migr}"\'')
        scan(w, "adm")
        with w.conn("adm") as c:
            latest = c.execute(
                "SELECT p.explain_error FROM optidb.plan p JOIN optidb.query q "
                "ON q.id = p.query_id WHERE strpos(q.raw_sql, 'FROM app.v WHERE') > 0 "
                "ORDER BY p.captured_at DESC LIMIT 1").fetchone()
            assert latest == (None,), latest
    finally:
        with w.conn("postgres") as su:
            su.execute(f'ALTER DATABASE "{w.db}" RESET optidb.trusted_roles')
            su.execute("DROP SCHEMA app CASCADE")
            su.execute(f'DROP ROLE "{migr}"')
    w.assert_unharmed()
