"""Red-team round against rule TRUST ("a replay runs only code the statement's owner trusts").

Each test is an attack that succeeds on the code it was written against (it fails there): a
statement of the superuser (or of the plain role `victim`) over objects mallory made harmless,
mallory then changes what they run under the same OIDs, and a non-superuser optidb_admin runs
scan(). Evidence: mallory's sequence m.s set (non-transactional, survives the rolled-back
job), and m.harm's marker file / superuser grant / log rows (tests/e2e/test_replay_attacks.py)."""

import glob

import pytest

from conftest import scalar
from test_replay_attacks import MARKERS, plan_errors, scan, world  # noqa: F401
from test_replay_trust import BUMP, run_three_times

SEQUENCE = """
CREATE SEQUENCE m.s;
GRANT USAGE, SELECT, UPDATE ON SEQUENCE m.s TO PUBLIC;
"""

# A CHECK function harmless when the statement runs, made hostile afterwards (same OID).
CHECK_FN = """
CREATE FUNCTION m.chk(i int) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $f$
BEGIN RETURN true; END $f$;
CREATE DOMAIN m.d AS int CHECK (m.chk(VALUE));
"""
HOSTILE_CHECK = """
CREATE OR REPLACE FUNCTION m.chk(i int) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $f$
BEGIN PERFORM m.bump('TAG'); RETURN true; END $f$"""


def assert_nothing_of_mallorys_ran(w):
    """Every trace m.bump / m.harm leave, in one message: her sequence set (as anyone else),
    a shell command run, mallory made a superuser, rows logged (kept only outside a rolled
    back job)."""
    with w.conn("postgres") as su:
        seq = scalar(su, "SELECT is_called FROM m.s") if scalar(
            su, "SELECT to_regclass('m.s') IS NOT NULL") else False
        superuser = scalar(su, "SELECT rolsuper FROM pg_roles WHERE rolname = %s",
                           (w.roles["mallory"],))
        logged = su.execute("SELECT sess, cur, note FROM m.log").fetchall()
    found = {"sequence set": seq, "mallory superuser": superuser, "logged": logged,
             "shell command ran": glob.glob(MARKERS + "*")}
    assert not any(found.values()), f"mallory's code ran as someone else: {found}"


def refused_or_planned(w, fragment):
    with w.conn("adm") as c:
        return plan_errors(c, fragment)


@pytest.mark.parametrize("owner", ["postgres", "victim"])
def test_a_literal_of_her_domains_array_runs_its_check_while_the_replay_parses(world, owner):
    """Finding RT6-1 (critical): code runs BEFORE vetting. The sampled text keeps its
    literals; `'{3,4}'::m.d[]` is converted by array_in at parse analysis, which runs the
    domain's CHECK (mallory's m.chk) for each element. The replay PREPAREs the sampled text
    as the owner (vetting::parse_as_owner: not even a security-restricted operation) before
    Vetted::prepared looks at anything: her function runs as the superuser / victim. Same for
    a composite literal with a domain column, or a range over her domain."""
    w = world
    w.as_mallory(SEQUENCE + BUMP + CHECK_FN)
    run_three_times(w, owner, "SELECT count(*) FROM public.shared_t WHERE v = ANY ('{3,4}'::m.d[])")
    w.as_mallory(HOSTILE_CHECK.replace("TAG", "parse-time"))
    scan(w, "adm")
    errors = refused_or_planned(w, "::m.d[]")
    assert errors, "the statement was not recorded or not attempted"
    assert_nothing_of_mallorys_ran(w)


@pytest.mark.parametrize("owner", ["postgres", "victim"])
def test_an_io_coercion_to_her_domains_array_is_not_vetted(world, owner):
    """Finding RT6-2 (critical): the walker collects the types of Const, Param and
    CoerceToDomain nodes only. `'{3}'::text::m.d[]` is a text Const under a CoerceViaIO whose
    result type m.d[] is never collected (its input function array_in is built in), so m.d
    and its CHECK pass vetting; planning a custom plan estimates `= ANY (...)` by evaluating
    the stable array_in, which runs m.chk as the owner (and real mode runs it again)."""
    w = world
    w.as_mallory(SEQUENCE + BUMP + CHECK_FN)
    run_three_times(w, owner,
                    "SELECT count(*) FROM public.shared_t WHERE v = ANY ('{3}'::text::m.d[])")
    w.as_mallory(HOSTILE_CHECK.replace("TAG", "coerce-via-io"))
    # The replay must get past parse analysis: a text literal runs nothing there.
    scan(w, "adm")
    errors = refused_or_planned(w, "::text::m.d[]")
    assert errors, "the statement was not recorded or not attempted"
    assert_nothing_of_mallorys_ran(w)


@pytest.mark.parametrize("owner", ["postgres", "victim"])
def test_her_range_types_subtype_diff_runs_while_selectivity_is_estimated(world, owner):
    """Finding RT6-3 (critical): a range type's subtype_diff function is not collected. Only
    the range's input/output functions (built-in range_in/range_out) are checked, and the
    operator `<@` and its estimator rangesel are built in. rangesel calls subtype_diff on
    the column's histogram bounds (calc_hist_selectivity_contained -> get_position), so
    planning the sampled statement runs mallory's m.diff as the owner."""
    w = world
    w.as_mallory(SEQUENCE + BUMP + """
        CREATE FUNCTION m.diff(a float8, b float8) RETURNS float8 LANGUAGE plpgsql IMMUTABLE
          AS $f$ BEGIN RETURN a - b; END $f$;
        CREATE TYPE m.fr AS RANGE (subtype = float8, subtype_diff = m.diff);
        CREATE TABLE m.rt AS SELECT m.fr(g, g + 10) AS r FROM generate_series(1, 3000) g;
        ANALYZE m.rt;
        GRANT SELECT ON m.rt TO PUBLIC""")
    run_three_times(w, owner, "SELECT count(*) FROM m.rt WHERE r <@ '[5,500]'::m.fr")
    w.as_mallory("""
        CREATE OR REPLACE FUNCTION m.diff(a float8, b float8) RETURNS float8 LANGUAGE plpgsql
          IMMUTABLE AS $f$ BEGIN PERFORM m.bump('subtype-diff'); RETURN a - b; END $f$""")
    scan(w, "adm")
    errors = refused_or_planned(w, "FROM m.rt WHERE r <@")
    assert errors, "the statement was not recorded or not attempted"
    assert_nothing_of_mallorys_ran(w)


@pytest.mark.parametrize("owner", ["postgres", "victim"])
def test_her_partition_keys_expression_is_folded_while_planning(world, owner):
    """Finding RT6-4 (critical): pg_depend of indexes, constraints and statistics is read, not
    the partitioned table's own dependencies. Its partition key expression `(id + m.pk(0))`
    is const-folded when the planner loads the key (RelationBuildPartitionKey ->
    eval_const_expressions), even for a generic plan: mallory's m.pk runs as the owner."""
    w = world
    w.as_mallory(SEQUENCE + BUMP + """
        CREATE FUNCTION m.pk(i int) RETURNS int LANGUAGE plpgsql IMMUTABLE
          AS $f$ BEGIN RETURN i; END $f$;
        CREATE TABLE m.pt (id int) PARTITION BY RANGE ((id + m.pk(0)));
        CREATE TABLE m.pt1 PARTITION OF m.pt FOR VALUES FROM (0) TO (1000000);
        INSERT INTO m.pt SELECT g FROM generate_series(1, 2000) g;
        ANALYZE m.pt;
        GRANT SELECT ON m.pt, m.pt1 TO PUBLIC""")
    run_three_times(w, owner, "SELECT count(*) FROM m.pt WHERE id = 5")
    w.as_mallory("""
        CREATE OR REPLACE FUNCTION m.pk(i int) RETURNS int LANGUAGE plpgsql IMMUTABLE
          AS $f$ BEGIN PERFORM m.bump('partition-key'); RETURN i; END $f$""")
    scan(w, "adm")
    errors = refused_or_planned(w, "FROM m.pt WHERE id")
    assert errors, "the statement was not recorded or not attempted"
    assert_nothing_of_mallorys_ran(w)


@pytest.mark.parametrize("owner", ["postgres", "victim"])
def test_a_domain_inside_her_composite_type_is_not_vetted(world, owner):
    """Finding RT6-5 (critical): types are followed through typbasetype and typelem only, not
    a composite's attributes. `NULL::m.comp` is a Const of mallory's composite type (input
    record_in, built in: trusted); its attribute of domain m.d is never looked at. Estimating
    `v = (jsonb_populate_record(NULL::m.comp, '{"a":3}')).a` for a custom plan evaluates the
    stable jsonb_populate_record, which runs m.d's CHECK (m.chk) as the owner."""
    w = world
    w.as_mallory(SEQUENCE + BUMP + CHECK_FN + "CREATE TYPE m.comp AS (a m.d)")
    run_three_times(w, owner, "SELECT count(*) FROM public.shared_t "
                              "WHERE v = (jsonb_populate_record(NULL::m.comp, '{\"a\":3}')).a")
    w.as_mallory(HOSTILE_CHECK.replace("TAG", "composite-attribute"))
    scan(w, "adm")
    errors = refused_or_planned(w, "jsonb_populate_record(")
    assert errors, "the statement was not recorded or not attempted"
    assert_nothing_of_mallorys_ran(w)


@pytest.mark.hypopg
def test_a_column_definition_lists_domain_runs_in_a_real_simulation(world):
    """Finding RT6-6 (critical, real mode): the column definition list of a function in FROM
    (`jsonb_to_record(...) AS x(a m.d)`) is not an expression: the walkers never see m.d. The
    statement is planned and advised; simulate(..., 'real') runs it (EXPLAIN ANALYZE), and
    jsonb_to_record converts each value with domain_in, running m.chk as the superuser. Real
    mode is read-only, so the payload is a shell command (COPY TO PROGRAM)."""
    w = world
    w.as_mallory(CHECK_FN)
    sql = ("SELECT (SELECT x.a FROM jsonb_to_record('{\"a\":7}') AS x(a m.d)), count(*) "
           "FROM public.shared_t WHERE v = 7")
    run_three_times(w, "postgres", sql)
    scan(w, "adm")
    with w.conn("adm") as c:
        served = c.execute(
            "SELECT r.rec_id, q.id FROM optidb.recommend() r "
            "JOIN optidb.query q ON q.id = ANY (r.query_ids) "
            "WHERE strpos(q.raw_sql, 'jsonb_to_record(') > 0 AND r.kind LIKE '%%index' "
            "LIMIT 1").fetchone()
        # Refused from the first scan on (the column definition list names mallory's domain):
        # nothing to simulate. Advice made anyway would be simulated for real below.
        errors = plan_errors(c, "jsonb_to_record(")
        if served is None:
            assert errors and all(e and "domain m.d" in e for e in errors), errors
            assert_nothing_of_mallorys_ran(w)
            return
        rec, qid = served
    w.as_mallory("""
        CREATE FUNCTION m.touch(tag text) RETURNS int LANGUAGE plpgsql VOLATILE AS $f$
        BEGIN
          IF pg_catalog.current_user() OPERATOR(pg_catalog.<>) 'MALLORY'
             AND pg_catalog.has_table_privilege('pg_catalog.pg_authid', 'SELECT') THEN
            EXECUTE pg_catalog.format('COPY (SELECT 1) TO PROGRAM %L', 'touch MARKERS' || tag);
          END IF;
          RETURN 1;
        END $f$;
        CREATE OR REPLACE FUNCTION m.chk(i int) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $f$
        BEGIN PERFORM m.touch('coldef'); RETURN true; END $f$""".replace("MARKERS", MARKERS))
    with w.conn("adm") as c:
        c.execute("SELECT * FROM optidb.simulate(%s, %s, 'real')", (qid, rec))
    assert_nothing_of_mallorys_ran(w)


def test_a_quoted_role_name_with_a_comma_in_trusted_roles_trusts_only_that_role(world):
    """Finding RT6-7 (low: needs a DBA to list a role whose name has a comma): gucs::trusted_roles
    splits optidb.trusted_roles on every comma, quotes or not, and trims quotes. Listing the
    role "deploy,<mallory>" (quoted, as an identifier list would be) trusts `deploy` and
    mallory: her row-level security policy, folded while planning the victim's statement, runs
    with the victim's rights instead of being refused."""
    w = world
    mal = w.roles["mallory"]
    w.as_mallory(SEQUENCE + BUMP + """
        CREATE FUNCTION m.gf(i int) RETURNS boolean LANGUAGE plpgsql IMMUTABLE
          AS $f$ BEGIN RETURN true; END $f$;
        CREATE TABLE m.tr AS SELECT g AS id FROM generate_series(1, 100) g;
        GRANT SELECT ON m.tr TO PUBLIC;
        ALTER TABLE m.tr ENABLE ROW LEVEL SECURITY;
        CREATE POLICY p ON m.tr USING (m.gf(1) AND id > 0)""")
    with w.conn("postgres") as su:
        su.execute(f'CREATE ROLE "deploy,{mal}"')
        su.execute(f'ALTER DATABASE "{w.db}" SET optidb.trusted_roles = \'"deploy,{mal}"\'')
    try:
        run_three_times(w, "victim", "SELECT count(*) FROM m.tr WHERE id = 5")
        w.as_mallory("""
            CREATE OR REPLACE FUNCTION m.gf(i int) RETURNS boolean LANGUAGE plpgsql IMMUTABLE
              AS $f$ BEGIN PERFORM m.bump('trusted-roles-comma'); RETURN true; END $f$""")
        scan(w, "adm")
        errors = refused_or_planned(w, "FROM m.tr WHERE id")
        assert errors, "the statement was not recorded or not attempted"
        assert_nothing_of_mallorys_ran(w)
    finally:
        with w.conn("postgres") as su:
            su.execute(f'ALTER DATABASE "{w.db}" RESET optidb.trusted_roles')
            su.execute(f'DROP ROLE "deploy,{mal}"')


@pytest.mark.parametrize("owner", ["postgres", "victim"])
@pytest.mark.parametrize("kind", ["statistics", "inherited_check"])
def test_the_catalog_walk_names_what_the_planner_folds_from_her_tables(world, owner, kind):
    """What the planner folds from a relation it reads counts, however deep: an extended
    statistics expression (get_relation_statistics const-folds it) and a CHECK constraint of an
    inheritance child (constraint exclusion folds it). The vetting's catalog walk
    (vetting_catalog.rs, which replaced a catalog query in session 7) must reach both through
    pg_statistic_ext, pg_inherits, pg_constraint and pg_depend, and its refusal name mallory's
    function."""
    w = world
    tables = {
        "statistics": """
            CREATE TABLE m.st (id int);
            CREATE STATISTICS m.sx ON (id + m.fold(0)) FROM m.st;""",
        "inherited_check": """
            CREATE TABLE m.st (id int);
            CREATE TABLE m.st_child (CHECK (id > m.fold(0))) INHERITS (m.st);""",
    }[kind]
    w.as_mallory(SEQUENCE + BUMP + """
        CREATE FUNCTION m.fold(i int) RETURNS int LANGUAGE plpgsql IMMUTABLE
          AS $f$ BEGIN RETURN i; END $f$;""" + tables + """
        INSERT INTO m.st SELECT g FROM generate_series(1, 2000) g;
        ANALYZE m.st;
        GRANT SELECT ON ALL TABLES IN SCHEMA m TO PUBLIC""")
    run_three_times(w, owner, "SELECT count(*) FROM m.st WHERE id = 5")
    w.as_mallory("""
        CREATE OR REPLACE FUNCTION m.fold(i int) RETURNS int LANGUAGE plpgsql IMMUTABLE
          AS $f$ BEGIN PERFORM m.bump('folded'); RETURN i; END $f$""")
    scan(w, "adm")
    errors = refused_or_planned(w, "FROM m.st WHERE id")
    assert any("fold(integer), owned by" in (e or "") for e in errors), errors
    assert_nothing_of_mallorys_ran(w)


# Mallory's functions for the deep paths below: harmless while the statements run, hostile
# (HOSTILE_DEEP_FNS) before the scan; the refusal must name them.
DEEP_FNS = """
CREATE FUNCTION m.fold(i int) RETURNS int LANGUAGE plpgsql IMMUTABLE
  AS $f$ BEGIN RETURN i; END $f$;
CREATE FUNCTION m.tf(s int, i int) RETURNS int LANGUAGE plpgsql IMMUTABLE
  AS $f$ BEGIN RETURN s + i; END $f$;
CREATE FUNCTION m.ff(s int) RETURNS int LANGUAGE plpgsql IMMUTABLE
  AS $f$ BEGIN RETURN s; END $f$;
CREATE FUNCTION m.eqf(a int, b int) RETURNS boolean LANGUAGE plpgsql IMMUTABLE
  AS $f$ BEGIN RETURN a = b; END $f$;
CREATE FUNCTION m.diff(a float8, b float8) RETURNS float8 LANGUAGE plpgsql IMMUTABLE
  AS $f$ BEGIN RETURN a - b; END $f$;
"""

# The same functions, each now bumping (run as anyone but mallory) before it returns.
HOSTILE_DEEP_FNS = "".join(
    f"CREATE OR REPLACE FUNCTION m.{name}({args}) RETURNS {ret} LANGUAGE plpgsql IMMUTABLE "
    f"AS $f$ BEGIN PERFORM m.bump('deep-path'); RETURN {body}; END $f$;\n"
    for name, args, ret, body in [
        ("fold", "i int", "int", "i"), ("tf", "s int, i int", "int", "s + i"),
        ("ff", "s int", "int", "s"), ("eqf", "a int, b int", "boolean", "a = b"),
        ("diff", "a float8, b float8", "float8", "a - b"),
        ("gtf", "a int, b int", "boolean", "a > b")])

# kind: (mallory's objects, the statement owner's objects (in vs, over hers), statement,
# what the refusal names). The owner's own objects are trusted: only the path to hers counts.
DEEP_PATHS = {
    "aggregate_transfn": (
        "", "CREATE AGGREGATE vs.agg(int) (sfunc = m.tf, stype = int, initcond = '0')",
        "SELECT vs.agg(v) FROM public.shared_t WHERE v = 5", "function m.tf(integer,integer)"),
    "aggregate_finalfn": (
        "", "CREATE AGGREGATE vs.agg(int) (sfunc = int4pl, stype = int, finalfunc = m.ff)",
        "SELECT vs.agg(v) FROM public.shared_t WHERE v = 5", "function m.ff(integer)"),
    "aggregate_combinefn": (
        "", "CREATE AGGREGATE vs.agg(int) (sfunc = int4pl, stype = int, combinefunc = m.tf)",
        "SELECT vs.agg(v) FROM public.shared_t WHERE v = 5", "function m.tf(integer,integer)"),
    "aggregate_moving_fns": (
        "", "CREATE AGGREGATE vs.agg(int) (sfunc = int4pl, stype = int, msfunc = int4pl, "
            "minvfunc = int4mi, mstype = int, mfinalfunc = m.ff)",
        "SELECT vs.agg(v) OVER (ORDER BY id) FROM public.shared_t WHERE v = 5",
        "function m.ff(integer)"),
    # Planning reads the initial transition value through the transition type's input
    # function (preprocess_aggref -> GetAggInitVal): domain_in runs her domain's CHECK.
    "aggregate_transition_type": (
        "CREATE DOMAIN m.d AS int CHECK (m.fold(VALUE) >= 0)",
        """CREATE FUNCTION vs.sf(s m.d, i int) RETURNS m.d LANGUAGE sql IMMUTABLE
             AS 'SELECT (s + i)::m.d';
           CREATE FUNCTION vs.fin(s m.d) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT s::int';
           CREATE AGGREGATE vs.agg(int) (sfunc = vs.sf, stype = m.d, finalfunc = vs.fin,
                                         initcond = '0')""",
        "SELECT vs.agg(v) FROM public.shared_t WHERE v = 5", "domain m.d"),
    "operator_function": (
        "", "CREATE OPERATOR vs.=== (function = m.eqf, leftarg = int, rightarg = int, "
            "restrict = eqsel, join = eqjoinsel)",
        "SELECT count(*) FROM public.shared_t WHERE v OPERATOR(vs.===) 5",
        "function m.eqf(integer,integer)"),
    # `NOT (id <<> 1)` is planned as `id === 1` (negate_clause), her operator: its estimator
    # eqsel compares her m.eqf with the column's most common values.
    "operators_negator": (
        """CREATE OPERATOR m.=== (function = m.eqf, leftarg = int, rightarg = int,
                                 restrict = eqsel, join = eqjoinsel);
           CREATE TABLE m.sk AS SELECT g % 3 AS id FROM generate_series(1, 3000) g;
           ANALYZE m.sk""",
        # plpgsql: an SQL function would be inlined to a built-in `<>` before the NOT goes.
        """CREATE FUNCTION vs.ne(a int, b int) RETURNS boolean LANGUAGE plpgsql IMMUTABLE
             AS $f$ BEGIN RETURN a <> b; END $f$;
           CREATE OPERATOR vs.<<> (function = vs.ne, leftarg = int, rightarg = int,
                                   restrict = neqsel, negator = OPERATOR(m.===))""",
        "SELECT count(*) FROM m.sk WHERE NOT (id OPERATOR(vs.<<>) 1)",
        "function m.eqf(integer,integer)"),
    # `1 <<< id` is estimated through the commutator (scalarineqsel_wrapper), her operator:
    # her m.gtf runs on the column's most common values.
    "operators_commutator": (
        """CREATE FUNCTION m.gtf(a int, b int) RETURNS boolean LANGUAGE plpgsql IMMUTABLE
             AS $f$ BEGIN RETURN a > b; END $f$;
           CREATE OPERATOR m.>>> (function = m.gtf, leftarg = int, rightarg = int,
                                  restrict = scalargtsel);
           CREATE TABLE m.sk AS SELECT g % 3 AS id FROM generate_series(1, 3000) g;
           ANALYZE m.sk""",
        """CREATE FUNCTION vs.lt(a int, b int) RETURNS boolean LANGUAGE plpgsql IMMUTABLE
             AS $f$ BEGIN RETURN a < b; END $f$;
           CREATE OPERATOR vs.<<< (function = vs.lt, leftarg = int, rightarg = int,
                                   restrict = scalarltsel, commutator = OPERATOR(m.>>>))""",
        "SELECT count(*) FROM m.sk WHERE 1 OPERATOR(vs.<<<) id",
        "function m.gtf(integer,integer)"),
    "domain_over_her_domain": (
        "CREATE DOMAIN m.d AS int CHECK (m.fold(VALUE) > 0)", "CREATE DOMAIN vs.d2 AS m.d",
        "SELECT count(*) FROM public.shared_t WHERE v = 5::vs.d2", "domain m.d"),
    "multirange_of_her_range": (
        "CREATE TYPE m.fr AS RANGE (subtype = float8, subtype_diff = m.diff, "
        "multirange_type_name = m.frm)", "",
        "SELECT count(*) FROM public.shared_t WHERE v::float8 <@ '{[5,500]}'::m.frm",
        "function m.diff(double precision,double precision)"),
    "partitions_expression_index": (
        """CREATE TABLE m.st (id int) PARTITION BY RANGE (id);
           CREATE TABLE m.st1 PARTITION OF m.st FOR VALUES FROM (0) TO (1000000);
           CREATE INDEX ON m.st1 ((id + m.fold(0)))""", "",
        "SELECT count(*) FROM m.st WHERE id = 5", "function m.fold(integer)"),
    "sub_partitions_check": (
        """CREATE TABLE m.st (id int) PARTITION BY RANGE (id);
           CREATE TABLE m.st1 PARTITION OF m.st FOR VALUES FROM (0) TO (1000000)
             PARTITION BY RANGE (id);
           CREATE TABLE m.st11 PARTITION OF m.st1 FOR VALUES FROM (0) TO (1000000);
           ALTER TABLE m.st11 ADD CHECK (id > m.fold(-1))""", "",
        "SELECT count(*) FROM m.st WHERE id = 5", "function m.fold(integer)"),
    "inheritance_childs_expression_index": (
        """CREATE TABLE m.st (id int);
           CREATE TABLE m.st_child () INHERITS (m.st);
           CREATE INDEX ON m.st_child ((id + m.fold(0)))""", "",
        "SELECT count(*) FROM m.st WHERE id = 5", "function m.fold(integer)"),
    "inheritance_childs_partial_index": (
        """CREATE TABLE m.st (id int);
           CREATE TABLE m.st_child () INHERITS (m.st);
           CREATE INDEX ON m.st_child (id) WHERE id > m.fold(0)""", "",
        "SELECT count(*) FROM m.st WHERE id = 5", "function m.fold(integer)"),
}


@pytest.mark.parametrize("owner", ["postgres", "victim"])
@pytest.mark.parametrize("kind", sorted(DEEP_PATHS))
def test_the_catalog_walk_reaches_her_code_through_every_deep_path(world, owner, kind):
    """The paths of the vetting's catalog walk (vetting_catalog.rs) no other test takes: an
    aggregate's transition, final, combine and moving-aggregate functions and its transition
    type; an operator's function, commutator and negator; a domain over her domain; a multirange of her range (its subtype_diff); an
    expression index, partial index or CHECK of a partition, sub-partition or inheritance
    child. The owner's statement reaches mallory's code only through these: the replay is
    refused, naming it."""
    if kind in ("operators_commutator", "operators_negator") and owner == "victim":
        pytest.skip("PostgreSQL links a commutator or negator only for its owner or a superuser")
    w = world
    hers, owners, sql, named = DEEP_PATHS[kind]
    w.as_mallory(SEQUENCE + BUMP + DEEP_FNS + hers + """;
        DO $d$ BEGIN
          IF to_regclass('m.st') IS NOT NULL THEN
            INSERT INTO m.st SELECT g FROM generate_series(1, 2000) g;
            ANALYZE m.st;
          END IF;
        END $d$;
        GRANT SELECT ON ALL TABLES IN SCHEMA m TO PUBLIC""")
    if owners:
        with w.conn(owner) as c:
            c.execute(owners)
    run_three_times(w, owner, sql)
    w.as_mallory(HOSTILE_DEEP_FNS)
    scan(w, "adm")
    # The text before WHERE: no literal that pg_stat_statements would replace.
    errors = refused_or_planned(w, sql.split(" WHERE")[0][len("SELECT "):])
    assert errors, "the statement was not recorded or not attempted"
    assert all(f"{named}, owned by" in (e or "") for e in errors), errors
    assert_nothing_of_mallorys_ran(w)
