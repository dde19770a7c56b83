"""optidb's own catalog SQL cannot be captured by operators someone created in a schema that
comes before pg_catalog on a search_path (docs/security-model.md, row 59).

Some of optidb's checks run as a statement's owner under the statement's recorded search_path:
for a statement whose sample recorded no relations (its plan used over 64), the check that
every relation it names belongs to a role its owner trusts. A superuser whose session put
`public` before `pg_catalog` (`SET search_path = public, pg_catalog`) records that path; mallory,
who may create in `public`, adds `=` operators for (oid, oid) and (name, name) there. A bare `=`
in optidb's SQL would then run her function as the superuser. Every operator in that SQL is
`OPERATOR(pg_catalog.=)`: the replay is vetted and planned, and none of her code runs."""

import glob
import os
import uuid

import pytest

from conftest import connect, new_database, scalar

MARKER = "/tmp/optidb_operator_capture_"
TABLES = 65  # one more than a sample records relations of (samples.rs, MAX_RELATIONS)

# mallory's function behind her `=` for type {t}: counts every call (public.calls: a sequence
# is not rolled back with a replay's subtransaction) and, when a superuser runs it, leaves a
# file through the shell.
HOSTILE = """
CREATE FUNCTION public.same_{t}({t}, {t}) RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN
    PERFORM pg_catalog.nextval('public.calls');
    IF pg_catalog.current_setting('is_superuser') OPERATOR(pg_catalog.=) 'on' THEN
        EXECUTE pg_catalog.format('COPY (SELECT 1) TO PROGRAM %L', 'touch {marker}{t}');
    END IF;
    RETURN $1 OPERATOR(pg_catalog.=) $2;
END $f$;
CREATE OPERATOR public.= (LEFTARG = {t}, RIGHTARG = {t}, FUNCTION = public.same_{t});
"""


def remove_markers():
    for f in glob.glob(MARKER + "*"):
        os.remove(f)


@pytest.fixture
def world():
    tag = uuid.uuid4().hex[:6]
    roles = {k: f"optidb_{k}_{tag}" for k in ("adm", "mallory")}
    remove_markers()
    try:
        with new_database() as db:
            with connect(db) as su:
                for name in roles.values():
                    su.execute(f'CREATE ROLE "{name}" LOGIN')
                su.execute(f'GRANT optidb_admin TO "{roles["adm"]}"')
                su.execute(f'GRANT CREATE ON SCHEMA public TO "{roles["mallory"]}"')
            yield db, roles
    finally:
        with connect("postgres") as su:
            for name in roles.values():
                su.execute(f'DROP ROLE IF EXISTS "{name}"')
        remove_markers()


def test_operators_in_an_earlier_schema_do_not_capture_optidbs_catalog_sql(world):
    db, roles = world
    union = " UNION ALL ".join(f"SELECT id FROM t{i}" for i in range(TABLES))
    with connect(db) as su:
        su.execute("SET search_path = public, pg_catalog")
        for i in range(TABLES):
            su.execute(f"CREATE TABLE t{i} (id int)")
        for _ in range(3):
            su.execute(f"SELECT count(*) FROM ({union}) s")
    with connect(db, user=roles["mallory"]) as m:
        m.execute("SET search_path = pg_catalog")
        m.execute("CREATE SEQUENCE public.calls")
        m.execute("GRANT USAGE ON SEQUENCE public.calls TO PUBLIC")
        for t in ("oid", "name"):
            m.execute(HOSTILE.format(t=t, marker=MARKER))
    with connect(db) as su:
        # The premise: under that path a bare `=` between oids or names is hers.
        su.execute("SET search_path = public, pg_catalog")
        assert scalar(su, "SELECT 'a'::name = 'a'::name")
        assert scalar(su, "SELECT last_value FROM public.calls") == 1
        su.execute("SELECT setval('public.calls', 1, false)")
    assert glob.glob(MARKER + "*"), "the premise: her code runs as a superuser"
    remove_markers()

    with connect(db, user=roles["adm"]) as adm:
        adm.execute("SELECT * FROM optidb.scan()")
        row = adm.execute(
            "SELECT s.search_path, s.relation_oids, p.plan_json IS NOT NULL, p.explain_error "
            "FROM optidb.query q JOIN optidb.sample s ON s.query_id = q.id "
            "LEFT JOIN optidb.plan p ON p.query_id = q.id "
            "WHERE q.norm_sql LIKE '%FROM t64%' ORDER BY p.plan_json IS NULL LIMIT 1").fetchone()
    assert row is not None, "the statement was not recorded"
    path, relations, planned, error = row
    assert path == "public, pg_catalog" and relations == [], row
    assert planned, f"the statement was not planned: {error}"
    with connect(db) as su:
        assert not scalar(su, "SELECT is_called FROM public.calls"), "mallory's `=` ran"
    assert glob.glob(MARKER + "*") == [], "mallory's code ran as a superuser"
