"""Statements are replayed as their owners, never as whoever calls optidb.

A hostile role with nothing but LOGIN and optidb_reader plants functions that misbehave only
when their caller is privileged (read pg_authid and a server file, write them to a table, send
them in a NOTICE, run a shell command) and runs statements that call them. An optidb_admin
(not a superuser) and a superuser then run the documented functions: scan(), recommend(),
simulate() in both modes. None of the attacks may succeed, and the hostile role's own
statements must still be planned and advised, as that role."""

import os
import uuid

import psycopg
import pytest

from conftest import HYPOPG, connect, scalar

SECRET_PASSWORD = "hunter2-do-not-leak"

# Each function does its harm only when the role running it can read pg_authid (a superuser).
FUNCTIONS = """
CREATE TABLE m.loot (what text);
CREATE TABLE m.scribbles (what text);
CREATE FUNCTION m.privileged() RETURNS boolean LANGUAGE sql STABLE
    AS $$ SELECT pg_catalog.has_table_privilege('pg_catalog.pg_authid', 'SELECT') $$;
-- Folded by the planner: an error raised while planning ends up in the stored explain_error.
CREATE FUNCTION m.leak() RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF m.privileged() THEN
        RAISE EXCEPTION 'LEAK % %',
            (SELECT string_agg(rolpassword, ',') FROM pg_catalog.pg_authid
             WHERE rolpassword IS NOT NULL),
            pg_catalog.pg_read_file('PG_VERSION');
    END IF;
    RETURN 1;
END $$;
-- Same, through a NOTICE sent to whoever plans the statement.
CREATE FUNCTION m.shout() RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF m.privileged() THEN
        RAISE NOTICE 'LEAK %', (SELECT string_agg(rolpassword, ',') FROM pg_catalog.pg_authid
                                WHERE rolpassword IS NOT NULL);
    END IF;
    RETURN 1;
END $$;
-- Same, through a table the hostile role can read (an immutable function may call a volatile one).
CREATE FUNCTION m.steal() RETURNS int LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF m.privileged() THEN
        INSERT INTO m.loot SELECT rolpassword FROM pg_catalog.pg_authid WHERE rolpassword IS NOT NULL;
    END IF;
    RETURN 1;
END $$;
CREATE FUNCTION m.stash() RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN (SELECT m.steal());
END $$;
-- Run by EXPLAIN ANALYZE in real mode: a shell command as the postgres OS user.
CREATE FUNCTION m.act() RETURNS int LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF m.privileged() THEN
        COPY (SELECT 1) TO PROGRAM 'touch MARKER';
    END IF;
    RETURN 1;
END $$;
-- Writes whoever runs it: real mode must not let it.
CREATE FUNCTION m.scribble() RETURNS int LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    INSERT INTO m.scribbles VALUES ('written');
    RETURN 1;
END $$;
CREATE TABLE m.big AS SELECT g AS id, g % 5000 AS v FROM generate_series(1, 100000) g;
ANALYZE m.big;
"""


@pytest.fixture
def hostile(fresh_db):
    db = scalar(fresh_db, "SELECT current_database()")
    tag = uuid.uuid4().hex[:8]
    roles = {k: f"optidb_{k}_{tag}" for k in ("mallory", "admin", "gone")}
    su = fresh_db
    for ext in HYPOPG:
        su.execute(f"CREATE EXTENSION {ext}")
    su.execute(f"CREATE ROLE \"{roles['mallory']}\" LOGIN IN ROLE optidb_reader")
    su.execute(f"CREATE ROLE \"{roles['admin']}\" LOGIN IN ROLE optidb_admin")
    su.execute(f"CREATE ROLE \"{roles['gone']}\" LOGIN")
    su.execute(f"ALTER ROLE postgres PASSWORD '{SECRET_PASSWORD}'")
    su.execute(f"CREATE SCHEMA m AUTHORIZATION \"{roles['mallory']}\"")
    su.execute("CREATE TABLE public.shared_t AS SELECT g AS id FROM generate_series(1, 20000) g")
    su.execute("GRANT SELECT ON public.shared_t TO PUBLIC")
    marker = f"/tmp/optidb_pwned_{tag}"
    with connect(db, user=roles["mallory"]) as c:
        c.execute(FUNCTIONS.replace("MARKER", marker))
    su.execute("SELECT pg_stat_statements_reset()")
    with connect(db, user=roles["mallory"]) as c:
        for i in range(3):
            # Extended protocol: the parameters are bound, the text keeps $1.
            c.execute("SELECT m.leak(), pg_sleep(%s)", (0.001,))
            c.execute("SELECT m.shout(), count(*) FROM m.big WHERE v = %s", (i,))
            c.execute("SELECT m.stash(), count(*) FROM m.big WHERE v = %s", (i,))
            c.execute("SELECT m.act(), count(*) FROM m.big WHERE v = %s", (i,))
            c.execute("SELECT m.scribble(), count(*) FROM m.big WHERE v = %s", (i,))
            c.execute("UPDATE m.big SET v = v WHERE id = %s", (i,))
    with connect(db, user=roles["gone"]) as c:
        c.execute("SELECT count(*) FROM public.shared_t WHERE id = 7")
    yield {"db": db, "roles": roles, "marker": marker}
    if os.path.exists(marker):
        os.remove(marker)
    su.execute(f"DROP OWNED BY \"{roles['mallory']}\", \"{roles['admin']}\"")
    for name in (roles["mallory"], roles["admin"]):
        su.execute(f'DROP ROLE "{name}"')
    su.execute("ALTER ROLE postgres PASSWORD NULL")


def scan_as(db, user):
    """scan() by `user`, collecting every notice sent to its session."""
    notices = []
    with connect(db, user=user) as c:
        c.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        c.execute("SELECT * FROM optidb.scan()")
    return notices


def statement(conn, fragment):
    return scalar(conn, "SELECT id FROM optidb.query WHERE raw_sql LIKE %s", (f"%{fragment}%",))


def secrets_in(texts):
    return [t for t in texts if t and ("SCRAM-SHA-256" in t or "LEAK" in t)]


def test_nothing_leaks_to_a_hostile_role_through_an_admins_scan(hostile):
    db, roles = hostile["db"], hostile["roles"]
    # The role was dropped after its statement ran: its statement is skipped with a reason.
    with connect(db) as su:
        su.execute(f"DROP ROLE \"{roles['gone']}\"")
    notices = scan_as(db, roles["admin"]) + scan_as(db, "postgres")
    assert secrets_in(notices) == [], notices

    with connect(db, user=roles["mallory"]) as c:
        stored = [r[0] for r in c.execute(
            "SELECT coalesce(p.explain_error, '') || coalesce(p.plan_json::text, '') "
            "FROM optidb.plan p UNION ALL SELECT coalesce(s.error, '') FROM optidb.simulation s")]
        assert secrets_in(stored) == [], stored
        assert scalar(c, "SELECT count(*) FROM m.loot") == 0
        # Her own statements were planned, as her, with her search_path.
        plans = c.execute(
            "SELECT q.raw_sql, p.plan_json IS NOT NULL, p.path_source, p.explain_error "
            "FROM optidb.query q JOIN optidb.plan p ON p.query_id = q.id "
            "WHERE q.raw_sql LIKE '%m.%'").fetchall()
        assert len(plans) >= 5, plans
        assert all(ok for _, ok, _, _ in plans), plans
        # optidb is preloaded here: the search_path her sessions ran with was recorded.
        assert {src for _, _, src, _ in plans} == {"recorded"}, plans
        # ... and advised: an index on m.big (v), proven by a hypothetical index.
        advice = c.execute("SELECT table_name, columns, improvement_pct FROM optidb.recommend() "
                           "WHERE table_name = 'm.big'").fetchall()
        assert ("m.big", ["v"]) in [(t, cols) for t, cols, _ in advice], advice
        if HYPOPG:
            assert all(pct and pct > 30 for _, cols, pct in advice if cols == ["v"]), advice
    with connect(db) as su:
        gone = su.execute("SELECT p.explain_error FROM optidb.plan p JOIN optidb.query q "
                          "ON q.id = p.query_id WHERE q.raw_sql LIKE '%shared_t WHERE id%'"
                          ).fetchall()
        assert gone and all("no longer exists" in (e or "") for (e,) in gone), gone


@pytest.mark.parametrize("caller", ["admin", "postgres"])
def test_simulations_run_as_the_statement_owner_in_both_modes(hostile, caller):
    db, roles, marker = hostile["db"], hostile["roles"], hostile["marker"]
    user = roles.get(caller, caller)
    scan_as(db, user)
    notices = []
    with connect(db, user=user) as c:
        c.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        rec = scalar(c, "SELECT rec_id FROM optidb.recommend() WHERE table_name = 'm.big' "
                        "AND columns = ARRAY['v']")
        assert rec is not None
        for fragment in ("m.act()", "m.shout()", "m.stash()") if HYPOPG else ():
            qid = statement(c, fragment)
            hyp = c.execute("SELECT improvement_pct, error FROM optidb.simulate(%s, %s)",
                            (qid, rec)).fetchone()
            assert hyp[1] is None, (fragment, hyp)
            # (hypopg forgets its hypothetical indexes when planning runs a query of its own,
            # as folding m.stash() does, so that one plans without the index.)
            assert fragment == "m.stash()" or hyp[0] > 30, (fragment, hyp)
        act = statement(c, "m.act()")
        real = c.execute("SELECT before_ms, after_ms, error FROM optidb.simulate(%s, %s, 'real')",
                         (act, rec)).fetchone()
        assert real[2] is None and real[0] > 0, real
        # A statement that writes, through a function it calls, is run read-only and fails.
        scribble = statement(c, "m.scribble()")
        failed = scalar(c, "SELECT error FROM optidb.simulate(%s, %s, 'real')", (scribble, rec))
        assert "read-only transaction" in failed, failed
        # A data-changing statement is refused before anything runs.
        update = statement(c, "UPDATE m.big")
        id_rec = scalar(c, "SELECT rec_id FROM optidb.recommend() WHERE table_name = 'm.big' "
                           "AND columns = ARRAY['id']")
        with pytest.raises(psycopg.errors.FeatureNotSupported) as refused:
            c.execute("SELECT * FROM optidb.simulate(%s, %s, 'real')", (update, id_rec))
        assert "only runs plain queries" in str(refused.value)
    assert not os.path.exists(marker), "a shell command ran as the postgres OS user"
    assert secrets_in(notices) == [], notices
    with connect(db, user=roles["mallory"]) as c:
        assert scalar(c, "SELECT count(*) FROM m.loot") == 0
        assert scalar(c, "SELECT count(*) FROM m.scribbles") == 3, "only her own 3 runs wrote"
        assert scalar(c, "SELECT count(*) FROM m.big WHERE v <> id % 5000") == 0
        assert secrets_in([r[0] for r in c.execute("SELECT error FROM optidb.simulation")]) == []
        # The index was built and rolled back: nothing is left on her table.
        assert scalar(c, "SELECT count(*) FROM pg_indexes WHERE schemaname = 'm'") == 0
