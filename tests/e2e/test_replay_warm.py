"""Warm replay workers serve many owners in one process (src/postgres/warm_replay.rs): what one
owner's replayed code leaves in that process must never be seen by the next owner's, a job that
fails or times out must leave the worker clean, and a worker killed mid-job or a caller
cancelled mid-wait must give a clear error, never a hang or a stuck worker.

Cast: `alice` and `bob`, plain roles with a schema each. alice's functions, folded while a
replay plans her statements, plant session state when they run inside a replay worker (a
setting, the search_path, a prepared statement, a hypothetical index, a session advisory lock,
a temporary table, sequence state) and raise their pid; bob's function raises what it sees."""

import re
import threading
import time
import uuid

import psycopg
import pytest

from conftest import HYPOPG, connect, new_database, scalar

# The owner sees its own client backend's type; a replay worker's is hidden from it (NULL: the
# worker connected as the bootstrap superuser).
IN_REPLAY = """((SELECT backend_type FROM pg_catalog.pg_stat_activity
                 WHERE pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid())
                IS DISTINCT FROM 'client backend')"""

ALICE = f"""
CREATE SEQUENCE a.seq;
CREATE FUNCTION a.plant_v() RETURNS int LANGUAGE plpgsql VOLATILE AS $f$
BEGIN
  IF NOT {IN_REPLAY} THEN RETURN 1; END IF;
  PERFORM pg_catalog.set_config('app.planted', 'alice-guc', false);
  PERFORM pg_catalog.set_config('search_path', 'a, public', false);
  BEGIN EXECUTE 'PREPARE alice_stmt AS SELECT 1'; EXCEPTION WHEN OTHERS THEN NULL; END;
  BEGIN PERFORM public.hypopg_create_index('CREATE INDEX ON public.shared_t (v)');
  EXCEPTION WHEN OTHERS THEN NULL; END;
  PERFORM pg_catalog.pg_advisory_lock(4242);
  BEGIN EXECUTE 'CREATE TEMP TABLE alice_tmp (x int)'; EXCEPTION WHEN OTHERS THEN NULL; END;
  PERFORM pg_catalog.nextval('a.seq');
  RETURN 1;
END $f$;
CREATE FUNCTION a.plant_raise() RETURNS int LANGUAGE plpgsql IMMUTABLE AS $f$
BEGIN
  IF (SELECT a.plant_v()) OPERATOR(pg_catalog.=) 1 AND {IN_REPLAY} THEN
    RAISE EXCEPTION 'PLANTED pid=% guc=[%] prepared=% hypo=% locks=% last=%',
      pg_catalog.pg_backend_pid(), pg_catalog.current_setting('app.planted', true),
      (SELECT pg_catalog.count(*) FROM pg_catalog.pg_prepared_statements
       WHERE name OPERATOR(pg_catalog.=) 'alice_stmt'),
      (SELECT pg_catalog.count(*) FROM public.hypopg_list_indexes),
      (SELECT pg_catalog.count(*) FROM pg_catalog.pg_locks
       WHERE locktype OPERATOR(pg_catalog.=) 'advisory'
         AND pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid()),
      pg_catalog.lastval();
  END IF;
  RETURN 1;
END $f$;
CREATE FUNCTION a.plant_sleep() RETURNS int LANGUAGE plpgsql IMMUTABLE AS $f$
BEGIN
  IF (SELECT a.plant_v()) OPERATOR(pg_catalog.=) 1 AND {IN_REPLAY} THEN
    PERFORM pg_catalog.pg_sleep(30);
  END IF;
  RETURN 1;
END $f$;
CREATE FUNCTION a.hang() RETURNS int LANGUAGE plpgsql IMMUTABLE AS $f$
BEGIN
  IF {IN_REPLAY} THEN PERFORM pg_catalog.pg_sleep(30); END IF;
  RETURN 1;
END $f$;
"""

BOB = f"""
CREATE FUNCTION b.probe() RETURNS int LANGUAGE plpgsql IMMUTABLE AS $f$
DECLARE last text;
BEGIN
  IF NOT {IN_REPLAY} THEN RETURN 1; END IF;
  BEGIN last := pg_catalog.lastval()::text; EXCEPTION WHEN OTHERS THEN last := 'none'; END;
  RAISE EXCEPTION 'PROBE pid=% guc=[%] path=[%] prepared=% hypo=% locks=% temp=% last=% user=%/%',
    pg_catalog.pg_backend_pid(),
    pg_catalog.current_setting('app.planted', true),
    pg_catalog.current_setting('search_path'),
    -- (the replay's own EXPLAIN runs through a prepared optidb_explain_N)
    (SELECT pg_catalog.count(*) FROM pg_catalog.pg_prepared_statements
     WHERE name OPERATOR(pg_catalog.!~~) 'optidb\\_explain\\_%'),
    (SELECT pg_catalog.count(*) FROM public.hypopg_list_indexes),
    (SELECT pg_catalog.count(*) FROM pg_catalog.pg_locks
     WHERE locktype OPERATOR(pg_catalog.=) 'advisory'
       AND pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid()),
    (SELECT pg_catalog.count(*) FROM pg_catalog.pg_class
     WHERE relname OPERATOR(pg_catalog.=) 'alice_tmp'),
    last, current_user, session_user;
END $f$;
"""


@pytest.fixture
def world():
    tag = uuid.uuid4().hex[:6]
    roles = {k: f"warm_{k}_{tag}" for k in ("alice", "bob")}
    with connect("postgres") as su:
        for name in roles.values():
            su.execute(f'CREATE ROLE "{name}" LOGIN')
    try:
        with new_database(extensions=("pg_stat_statements", *HYPOPG, "optidb")) as db:
            with connect(db) as su:
                su.execute(f"CREATE SCHEMA a AUTHORIZATION \"{roles['alice']}\"")
                su.execute(f"CREATE SCHEMA b AUTHORIZATION \"{roles['bob']}\"")
                su.execute("CREATE TABLE public.shared_t AS "
                           "SELECT g AS id, g % 500 AS v FROM generate_series(1, 20000) g")
                su.execute("GRANT SELECT ON public.shared_t TO PUBLIC")
                su.execute("ANALYZE public.shared_t")
                if HYPOPG:
                    su.execute("GRANT SELECT ON hypopg_list_indexes TO PUBLIC")
            with connect(db, user=roles["alice"]) as c:
                c.execute(ALICE)
            with connect(db, user=roles["bob"]) as c:
                c.execute(BOB)
            with connect(db) as su:
                su.execute("SELECT pg_stat_statements_reset()")
            yield db, roles
    finally:
        with connect("postgres") as su:
            su.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE backend_type = 'optidb warm replay'")
            for name in roles.values():
                su.execute(f'DROP ROLE IF EXISTS "{name}"')


def run_as(db, user, sql, times=3):
    with connect(db, user=user) as c:
        for i in range(times):
            c.execute(sql, (i,))


def errors(c, fragment):
    return [r[0] for r in c.execute(
        "SELECT p.explain_error FROM optidb.plan p JOIN optidb.query q ON q.id = p.query_id "
        "WHERE strpos(q.raw_sql, %s) > 0 AND p.explain_error IS NOT NULL", (fragment,))]


def warm_pids(c):
    return [r[0] for r in c.execute(
        "SELECT pid FROM pg_stat_activity WHERE backend_type = 'optidb warm replay'")]


def admin(db, **settings):
    c = connect(db)
    c.execute("SET optidb.replay_workers = 1")
    for k, v in settings.items():
        c.execute(f"SET {k} = '{v}'")
    return c


@pytest.mark.hypopg
@pytest.mark.parametrize("ending", ["raise", "sleep"])
def test_nothing_one_owner_leaves_in_the_warm_worker_is_seen_by_the_next(world, ending):
    db, roles = world
    run_as(db, roles["alice"], f"SELECT a.plant_{ending}(), count(*) FROM public.shared_t "
                               "WHERE v = %s")
    with admin(db, **{"optidb.statement_timeout": "1s"}) as su:
        su.execute("SELECT * FROM optidb.scan()")
        planted = errors(su, f"a.plant_{ending}()")
        assert planted, "alice's statement was not replayed"
        if ending == "raise":
            assert all("PLANTED pid=" in e for e in planted), planted
            alice_pid = int(re.search(r"PLANTED pid=(\d+)", planted[0]).group(1))
            # The planting worked (so the probe below can fail): the setting, a hypothetical
            # index, the lock and sequence state were there (PREPARE and CREATE TEMP are
            # refused inside a security-restricted operation; the reset would drop them too).
            m = re.search(r"guc=\[alice-guc\] prepared=\d hypo=([1-9]\d*) locks=1 last=\d+",
                          planted[0])
            assert m or not HYPOPG, planted[0]
        else:
            assert all("timed out" in e for e in planted), planted
            (alice_pid,) = warm_pids(su)
    run_as(db, roles["bob"], "SELECT b.probe(), count(*) FROM public.shared_t WHERE v = %s")
    with admin(db) as su:
        su.execute("SELECT * FROM optidb.scan()")
        seen = errors(su, "b.probe()")
    assert seen, "bob's statement was not replayed"
    bob = roles["bob"]
    for e in seen:
        m = re.search(r"PROBE pid=(\d+) guc=\[(.*?)\] path=\[(.*?)\] prepared=(\d+) hypo=(\d+) "
                      r"locks=(\d+) temp=(\d+) last=(\S+) user=(\S+)/(\S+)", e)
        assert m, e
        pid, guc, path, prepared, hypo, locks, temp, last, cur, sess = m.groups()
        assert int(pid) == alice_pid, "the test needs both replays in the same warm worker"
        assert guc == "" and "a," not in path, e
        assert (prepared, hypo, locks, temp, last) == ("0", "0", "0", "0", "none"), e
        assert cur.strip('"') == bob and sess.strip('"').rstrip(",") == bob, e


def test_a_worker_killed_mid_job_gives_a_clear_error_and_the_next_replay_works(world):
    db, roles = world
    run_as(db, roles["alice"], "SELECT a.hang(), count(*) FROM public.shared_t WHERE v = %s")
    outcome = {}

    def scan():
        with admin(db, **{"optidb.statement_timeout": "60s", "statement_timeout": "120s"}) as c:
            started = time.monotonic()
            c.execute("SELECT * FROM optidb.scan()")
            outcome["seconds"] = time.monotonic() - started
            outcome["errors"] = errors(c, "a.hang()")

    t = threading.Thread(target=scan)
    t.start()
    with connect(db) as su:
        deadline = time.monotonic() + 30
        victim = None
        while victim is None and time.monotonic() < deadline:
            victim = scalar(su, "SELECT max(pid) FROM pg_stat_activity WHERE backend_type = "
                                "'optidb warm replay' AND wait_event = 'PgSleep'")
            time.sleep(0.1)
        assert victim, "the replay never reached the sleep"
        su.execute("SELECT pg_terminate_backend(%s)", (victim,))
    t.join(60)
    assert not t.is_alive(), "scan() hung after its worker was killed"
    assert outcome["seconds"] < 30, outcome
    assert outcome["errors"] and all("ended without an answer" in e or "terminated" in e
                                     for e in outcome["errors"]), outcome
    with admin(db, **{"optidb.statement_timeout": "300ms"}) as c:
        c.execute("SELECT * FROM optidb.scan()")
        pids = warm_pids(c)
        assert pids and victim not in pids, pids


@pytest.mark.parametrize("cancel", ["statement_timeout", "pg_cancel_backend"])
def test_a_cancelled_caller_does_not_leave_the_warm_worker_stuck(world, cancel):
    db, roles = world
    run_as(db, roles["alice"], "SELECT a.hang(), count(*) FROM public.shared_t WHERE v = %s")
    with admin(db, **{"optidb.statement_timeout": "60s"}) as c:
        if cancel == "statement_timeout":
            c.execute("SET statement_timeout = '1s'")
        else:
            me = scalar(c, "SELECT pg_backend_pid()")

            def cancel_soon():
                time.sleep(1.0)
                with connect(db) as su:
                    su.execute("SELECT pg_cancel_backend(%s)", (me,))
            threading.Thread(target=cancel_soon, daemon=True).start()
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            c.execute("SELECT * FROM optidb.scan()")
        assert time.monotonic() - started < 10
    with connect(db) as su:
        deadline = time.monotonic() + 10
        while scalar(su, "SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE "
                         "'optidb%%replay' AND wait_event = 'PgSleep'") \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        assert scalar(su, "SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE "
                          "'optidb%%replay' AND wait_event = 'PgSleep'") == 0, \
            "a replay worker kept running the cancelled caller's job"
    with admin(db, **{"optidb.statement_timeout": "300ms"}) as c:
        started = time.monotonic()
        c.execute("SELECT * FROM optidb.scan()")
        assert time.monotonic() - started < 20
        assert all("timed out" in e for e in errors(c, "a.hang()"))


def test_a_function_redefined_by_a_hostile_role_after_vetting_is_refused_by_the_warm_worker(
        world):
    """The warm worker keeps nothing of a vetting for the next one (the check reads the system
    caches, refreshed by every committed catalog change). A function bob's statement uses is vetted and replayed;
    then it passes to a hostile role, which redefines it: the same warm worker's next replay of
    the statement must see the new owner and refuse, and the new body must never run."""
    db, roles = world
    bob, mallory = roles["bob"], f"warm_mallory_{uuid.uuid4().hex[:6]}"
    with connect("postgres") as su:
        su.execute(f'CREATE ROLE "{mallory}" LOGIN')
    try:
        with connect(db) as su:
            su.execute("GRANT USAGE, CREATE ON SCHEMA b TO PUBLIC")
        with connect(db, user=bob) as c:
            c.execute("CREATE FUNCTION b.f(int) RETURNS int LANGUAGE sql IMMUTABLE "
                      "AS 'SELECT $1 + 1'")
        sql = "SELECT b.f(v), count(*) FROM public.shared_t WHERE v = %s GROUP BY 1"
        run_as(db, bob, sql)
        with admin(db) as su:
            su.execute("SELECT * FROM optidb.scan()")
            assert not errors(su, "b.f(v)"), "bob's own function must replay"
            assert scalar(su, "SELECT count(*) FROM optidb.plan p JOIN optidb.query q "
                              "ON q.id = p.query_id WHERE strpos(q.raw_sql, 'b.f(v)') > 0") > 0
            (pid,) = warm_pids(su)
            su.execute(f'ALTER FUNCTION b.f(int) OWNER TO "{mallory}"')
        with connect(db, user=mallory) as c:
            # Harmless in bob's own session (so the statement runs and is filed again),
            # loud if a replay ever runs it.
            c.execute("CREATE OR REPLACE FUNCTION b.f(int) RETURNS int LANGUAGE plpgsql "
                      f"IMMUTABLE AS $f$ BEGIN IF {IN_REPLAY} THEN RAISE EXCEPTION "
                      "'MALLORY RAN'; END IF; RETURN $1 + 1; END $f$")
        run_as(db, bob, sql)
        with admin(db) as su:
            su.execute("SELECT * FROM optidb.scan()")
            assert warm_pids(su) == [pid], "the test needs the same warm worker"
            refused = errors(su, "b.f(v)")
        assert refused, "the redefined function was not refused"
        assert all("MALLORY RAN" not in e for e in refused), refused
        assert any(f"owned by {mallory}" in e for e in refused), refused
    finally:
        with connect(db) as su:
            su.execute("DROP FUNCTION IF EXISTS b.f(int)")
        with connect("postgres") as su:
            su.execute(f'DROP ROLE IF EXISTS "{mallory}"')


# A superuser's function every owner trusts, in a schema of its own (not public) that the
# owners reach through SET search_path. `app.me()` is mislabelled IMMUTABLE: a generic plan
# folds it as whoever made the plan. `app.who()` keeps such a plan (a PL/pgSQL simple
# expression) in the warm worker's plan cache and raises what it holds and who runs it.
WHO = f"""
CREATE SCHEMA app;
CREATE TABLE app.t AS SELECT g AS id, g % 300 AS v FROM generate_series(1, 20000) g;
ANALYZE app.t;
CREATE FUNCTION app.me() RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT current_user::text';
CREATE FUNCTION app.who() RETURNS int LANGUAGE plpgsql IMMUTABLE AS $f$
DECLARE cached text;
BEGIN
  IF NOT {IN_REPLAY} THEN RETURN 1; END IF;
  cached := app.me();
  RAISE EXCEPTION 'WHO pid=% cached=% user=% path=%', pg_catalog.pg_backend_pid(), cached,
    current_user, pg_catalog.current_setting('search_path');
END $f$;
"""


def test_a_plan_cached_in_one_owners_replay_is_not_reused_in_anothers(world):
    """The warm worker keeps its plan cache between batches of the same owner only: before a
    batch of another owner it is reset (DISCARD PLANS). A plan made in alice's replay holds
    what was folded as alice (the plan cache itself would only revalidate it on another
    search_path or row-security role, and all three owners use `app, public` here), so if
    it were kept, bob's and mallory's replays would read alice's name from it."""
    db, roles = world
    mallory = f"warm_mallory_{uuid.uuid4().hex[:6]}"
    with connect("postgres") as su:
        su.execute(f'CREATE ROLE "{mallory}" LOGIN')
    try:
        with connect(db) as su:
            su.execute(WHO)
            su.execute(f'GRANT USAGE ON SCHEMA app TO "{roles["alice"]}", "{roles["bob"]}", '
                       f'"{mallory}"')
            su.execute(f'GRANT SELECT ON app.t TO "{roles["alice"]}", "{roles["bob"]}", '
                       f'"{mallory}"')
        sql = "SELECT app.who(), count(*) FROM t WHERE v = $1"
        order = [roles["alice"], roles["bob"], mallory, roles["alice"]]
        seen = []
        for owner in order:
            with connect(db, user=owner) as c:
                c.execute("SET search_path = app, public")
                c.execute(f"PREPARE q(int) AS {sql}")
                for i in range(3):
                    c.execute(f"EXECUTE q({i})")
            with admin(db) as su:
                su.execute("SELECT * FROM optidb.scan()")
                found = [e for e in errors(su, "app.who()") if f"user={owner} " in e]
                assert found, f"{owner}'s statement was not replayed: {errors(su, 'app.who()')}"
                seen.append((owner, found, warm_pids(su)))
        pids = set()
        for owner, found, warm in seen:
            for e in found:
                m = re.search(r"WHO pid=(\d+) cached=(\S+) user=(\S+) path=(.*?) \[", e)
                assert m, e
                pid, cached, user, path = m.groups()
                pids.add(int(pid))
                assert "app, public" in path, e
                assert cached == user.strip('"') == owner, \
                    f"{owner}'s replay read a plan made for {cached}: {e}"
        assert len(pids) == 1, f"the test needs every replay in one warm worker: {seen}"
    finally:
        with connect(db) as su:
            su.execute(f'DROP OWNED BY "{mallory}"')
        with connect("postgres") as su:
            su.execute(f'DROP ROLE IF EXISTS "{mallory}"')


def test_a_replay_workers_own_sql_is_not_recorded_as_workload(world):
    """A replay worker's SQL is top-level to pg_stat_statements: its own lookups (the settings
    it started with, the owner's name, hypopg's reset) were recorded as the superuser's
    statements, and the next scan took them for workload."""
    db, roles = world
    run_as(db, roles["alice"], "SELECT count(*) FROM public.shared_t WHERE v = %s")
    with connect(db) as su:
        su.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                   "WHERE backend_type = 'optidb warm replay'")
    # A new warm worker (its start-up and its reset between batches), then a one-shot one.
    for workers in (1, 1, 0):
        with admin(db) as su:
            su.execute(f"SET optidb.replay_workers = {workers}")
            su.execute("SELECT * FROM optidb.scan()")
    with connect(db) as su:
        assert scalar(su, "SELECT count(*) FROM optidb.plan p JOIN optidb.query q "
                          "ON q.id = p.query_id WHERE strpos(q.raw_sql, 'shared_t') > 0 "
                          "AND p.explain_error IS NULL") > 0, "nothing was replayed"
        own = ("strpos(query, 'pg_db_role_setting') > 0 "
               "OR strpos(query, 'AS reset FROM pg_catalog.pg_proc') > 0 "
               "OR strpos(query, 'FROM pg_catalog.pg_roles WHERE oid') > 0")
        recorded = su.execute(
            f"SELECT query FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database "
            f"WHERE datname = current_database()) AND ({own})").fetchall()
        assert recorded == [], recorded
        kept = su.execute(f"SELECT raw_sql FROM optidb.query q, "
                          f"LATERAL (SELECT q.raw_sql AS query) s WHERE {own}").fetchall()
        assert kept == [], kept
