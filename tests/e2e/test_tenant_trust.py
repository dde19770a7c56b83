"""Who may join a tenant family, and who sees it (red-team findings on issue 27 part 2).

mallory (CREATE on the database, no optidb role) copies the tenants' table into a schema of her
own and runs their statement text there: her table is of the same definition, so before this
fix her schema joined the family and the DBA's script built an index on her table. A tenant is
now admitted only when its table belongs to a role the family's vetting trusts (superusers, the
database's owner, optidb.trusted_roles, or the role owning more than half of the family's
tables); others are listed apart, never in the script.

bob (optidb_reader) runs the statement in his two tenants, one through SET search_path, one
through PREPARE/EXECUTE; carol is another tenant. As a reader bob sees the family advice for
his own tenants, with neither carol's nor mallory's statements or schemas.

Also: every tenant is listed though the samples (which name the schema a statement ran in)
are gone: the relations each statement used are recorded once per statement
(optidb.statement_relation)."""

import time
import uuid

import psycopg
import pytest

from conftest import connect, new_database, scalar
from test_tenant_advice import QUERY, ticket

pytestmark = pytest.mark.hypopg

FAMILY = ("SELECT schemas, lacking, untrusted_schemas, script, query_ids, rec_ids "
          "FROM optidb.tenant_advice() WHERE table_name = 'ticket' AND columns[1] = 'owner_id'")


@pytest.fixture(scope="module")
def world():
    tag = uuid.uuid4().hex[:6]
    bob, carol, mallory, adm = (f"{n}_{tag}" for n in ("bob", "carol", "mallory", "adm"))
    with connect("postgres") as su:
        su.execute(f"CREATE ROLE {bob} LOGIN IN ROLE optidb_reader")
        su.execute(f"CREATE ROLE {carol} LOGIN")
        su.execute(f"CREATE ROLE {mallory} LOGIN")
        su.execute(f"CREATE ROLE {adm} LOGIN IN ROLE optidb_admin")
    try:
        with new_database(extensions=("pg_stat_statements", "hypopg", "optidb")) as db:
            with connect(db) as su:
                su.execute(f'GRANT CREATE ON DATABASE "{db}" TO {mallory}')
                su.execute(f'ALTER DATABASE "{db}" SET optidb.sample_interval = 1')
                # The tenants' tables are the DBA's (a superuser's), used by the tenants' roles.
                for s, r in (("acme", bob), ("globex", bob), ("initech", carol)):
                    su.execute(ticket(s))
                    su.execute(f"GRANT USAGE ON SCHEMA {s} TO {r}")
                    su.execute(f"GRANT SELECT ON {s}.ticket TO {r}")
                su.execute("VACUUM ANALYZE")
            with connect(db, user=mallory) as m:
                m.execute(ticket("mal"))
                m.execute("ANALYZE mal.ticket")
            with connect(db) as su:
                su.execute("SELECT pg_stat_statements_reset()")
            with connect(db, user=bob) as b, connect(db, user=carol) as c, \
                    connect(db, user=mallory) as m:
                b.execute("SET search_path = globex")
                b.execute("PREPARE by_owner(int) AS "
                          "SELECT id, body FROM ticket WHERE owner_id = $1")
                c.execute("SET search_path = initech")
                m.execute("SET search_path = mal")
                for i in range(1, 4):
                    time.sleep(1.1)
                    b.execute("SET search_path = acme")
                    b.execute(QUERY, (i * 4001,))
                    b.execute("SET search_path = globex")
                    b.execute(f"EXECUTE by_owner({i * 4001})")
                    c.execute(QUERY, (i * 4001,))
                    m.execute(QUERY, (i * 4001,))
                    # A statement that errors, in the same sessions.
                    with pytest.raises(Exception):
                        m.execute("SELECT 1 / 0 FROM ticket LIMIT 1")
            with connect(db, user=adm) as a:
                a.execute("SELECT * FROM optidb.scan()")
            yield db, {"bob": bob, "carol": carol, "mallory": mallory, "adm": adm}
    finally:
        with connect("postgres") as su:
            for r in (bob, carol, mallory, adm):
                su.execute(f"DROP ROLE IF EXISTS {r}")


def test_a_hostile_copy_of_a_tenant_table_is_listed_apart_never_in_the_script(world):
    db, roles = world
    with connect(db, user=roles["adm"]) as a:
        rows = a.execute(FAMILY).fetchall()
    assert len(rows) == 1, rows
    schemas, lacking, untrusted, script, _, _ = rows[0]
    assert (sorted(schemas), lacking, untrusted) == (["acme", "globex", "initech"], 3, ["mal"])
    assert "mal" not in script and len(script.split("\n")) == 3, script
    with connect(db) as su:
        for line in script.split("\n"):
            su.execute(line)
        built = su.execute(
            "SELECT n.nspname FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relname = 'ticket' AND NOT i.indisprimary ORDER BY 1").fetchall()
        assert [r[0] for r in built] == ["acme", "globex", "initech"], built
        for (name,) in su.execute(
                "SELECT indexrelid::regclass::text FROM pg_index i JOIN pg_class c "
                "ON c.oid = i.indrelid WHERE c.relname = 'ticket' AND NOT i.indisprimary"):
            su.execute(f"DROP INDEX {name}")


def test_a_role_the_dba_trusts_joins_the_family(world):
    db, roles = world
    with connect(db) as su:
        su.execute(f'ALTER DATABASE "{db}" SET optidb.trusted_roles = {roles["mallory"]}')
    try:
        with connect(db, user=roles["adm"]) as a:
            schemas, lacking, untrusted, *_ = a.execute(FAMILY).fetchone()
        assert (sorted(schemas), lacking, untrusted) == (["acme", "globex", "initech", "mal"],
                                                         4, [])
    finally:
        with connect(db) as su:
            su.execute(f'ALTER DATABASE "{db}" RESET optidb.trusted_roles')


def test_a_reader_sees_the_family_of_its_own_tenants_only(world):
    db, roles = world
    with connect(db, user=roles["bob"]) as b:
        rows = b.execute(FAMILY).fetchall()
        assert len(rows) == 1, rows
        schemas, lacking, untrusted, script, query_ids, rec_ids = rows[0]
        assert (sorted(schemas), lacking, untrusted) == (["acme", "globex"], 2, []), rows
        assert "initech" not in script and "mal" not in script
        # Every statement and advice it is shown, it may read.
        seen = {r[0] for r in b.execute("SELECT id FROM optidb.query")}
        assert query_ids and set(query_ids) <= seen, (query_ids, seen)
        assert scalar(b, "SELECT count(*) FROM optidb.recommendation WHERE id = ANY (%s)",
                      (rec_ids,)) == len(rec_ids)
    with connect(db) as su:
        owners = {r[0] for r in su.execute(
            "SELECT pg_get_userbyid(userid)::text FROM optidb.query WHERE id = ANY (%s)",
            (query_ids,))}
    assert owners == {roles["bob"]}, owners


def test_every_tenant_is_listed_from_the_relations_each_statement_used(world):
    """The samples name where a statement ran only while the ring keeps them: with none kept,
    the family still lists every tenant (optidb.statement_relation, recorded once per
    statement by the hooks)."""
    db, roles = world
    with connect(db) as su:
        used = su.execute(
            "SELECT DISTINCT pg_get_userbyid(q.userid)::text, r.schema_name, r.table_name "
            "FROM optidb.statement_relation r JOIN optidb.query q ON q.id = r.query_id "
            "WHERE r.table_name = 'ticket' ORDER BY 1, 2").fetchall()
        assert used == sorted([(roles["bob"], "acme", "ticket"), (roles["bob"], "globex", "ticket"),
                               (roles["carol"], "initech", "ticket"),
                               (roles["mallory"], "mal", "ticket")]), used
        with su.transaction():
            su.execute("DELETE FROM optidb.sample")
            schemas, _, untrusted, *_ = su.execute(FAMILY).fetchone()
            assert (sorted(schemas), untrusted) == (["acme", "globex", "initech"], ["mal"])
            raise psycopg.Rollback()
    with connect(db, user=roles["mallory"]) as m:
        # mallory, without an optidb role, reads none of it.
        with pytest.raises(Exception):
            m.execute("SELECT * FROM optidb.statement_relation")


@pytest.fixture(scope="module")
def app_world():
    """The common layouts: one application role owning every tenant's table (schemas a1-a3,
    mallory's copy beside them) and a role per tenant owning its own (p1, p2, another text)."""
    tag = uuid.uuid4().hex[:6]
    app, u1, u2, mallory, adm = (f"{n}_{tag}" for n in ("app", "u1", "u2", "mallory", "adm"))
    with connect("postgres") as su:
        for r in (app, u1, u2, mallory):
            su.execute(f"CREATE ROLE {r} LOGIN")
        su.execute(f"CREATE ROLE {adm} LOGIN IN ROLE optidb_admin")
    try:
        with new_database(extensions=("pg_stat_statements", "hypopg", "optidb")) as db:
            with connect(db) as su:
                su.execute(f'ALTER DATABASE "{db}" SET optidb.sample_interval = 1')
                for r in (app, u1, u2, mallory):
                    su.execute(f'GRANT CREATE ON DATABASE "{db}" TO {r}')
            for role, schemas in ((app, ("a1", "a2", "a3")), (mallory, ("mal",)),
                                  (u1, ("p1",)), (u2, ("p2",))):
                with connect(db, user=role) as c:
                    for s in schemas:
                        c.execute(ticket(s))
                        c.execute(f"ANALYZE {s}.ticket")
            with connect(db) as su:
                su.execute("SELECT pg_stat_statements_reset()")
            per_tenant = "SELECT id FROM ticket WHERE owner_id = %s"
            with connect(db, user=app) as a, connect(db, user=mallory) as m, \
                    connect(db, user=u1) as c1, connect(db, user=u2) as c2:
                m.execute("SET search_path = mal")
                c1.execute("SET search_path = p1")
                c2.execute("SET search_path = p2")
                for i in range(1, 4):
                    time.sleep(1.1)
                    for s in ("a1", "a2", "a3"):
                        a.execute(f"SET search_path = {s}")
                        a.execute(QUERY, (i * 4001,))
                    m.execute(QUERY, (i * 4001,))
                    c1.execute(per_tenant, (i * 4001,))
                    c2.execute(per_tenant, (i * 4001,))
            with connect(db, user=adm) as a:
                a.execute("SELECT * FROM optidb.scan()")
            yield db, adm
    finally:
        with connect("postgres") as su:
            for r in (app, u1, u2, mallory, adm):
                su.execute(f"DROP ROLE IF EXISTS {r}")


def app_families(app_world):
    db, adm = app_world
    with connect(db, user=adm) as a:
        rows = a.execute(FAMILY).fetchall()
    return {("mal" in r[2] or "a1" in r[0]): r for r in rows}, rows


def test_the_role_owning_most_tenant_tables_is_trusted_without_a_setting(app_world):
    by_layout, rows = app_families(app_world)
    schemas, lacking, untrusted, script, _, _ = by_layout[True]
    assert (sorted(schemas), lacking, untrusted) == (["a1", "a2", "a3"], 3, ["mal"]), rows
    assert "mal" not in script and len(script.split("\n")) == 3, script


def test_a_family_no_role_outnumbers_is_listed_without_a_script(app_world):
    by_layout, rows = app_families(app_world)
    assert len(rows) == 2, rows
    schemas, lacking, untrusted, script, _, _ = by_layout[False]
    assert (schemas, lacking, sorted(untrusted), script) == ([], 0, ["p1", "p2"], None), rows


def test_every_tenant_of_one_role_is_recorded_whatever_the_queryid_spans(app_world):
    """PostgreSQL 18 computes a queryid from table names, not OIDs: the app role's statement in
    a1, a2 and a3 (through search_path) is one pg_stat_statements entry there, three before.
    Either way each schema it ran in is recorded, and the family lists all three with no
    sample kept."""
    db, _ = app_world
    with connect(db) as su:
        used = [r[0] for r in su.execute(
            "SELECT DISTINCT r.schema_name FROM optidb.statement_relation r "
            "WHERE r.table_name = 'ticket' AND r.schema_name LIKE 'a_' ORDER BY 1")]
        assert used == ["a1", "a2", "a3"], used
        with su.transaction():
            su.execute("DELETE FROM optidb.sample")
            families = {("a1" in r[0] or "mal" in r[2]): r for r in su.execute(FAMILY)}
            schemas, lacking, untrusted, *_ = families[True]
            assert (sorted(schemas), lacking, untrusted) == (["a1", "a2", "a3"], 3, ["mal"])
            raise psycopg.Rollback()


# Relations a latency entry keeps on PostgreSQL 18 until a snapshot stores them
# (src/postgres/latency/table.rs, ENTRY_RELATIONS); 8 before 18, where it does not matter here.
ENTRY_RELATIONS_18 = 32


def test_tenants_beyond_what_one_entry_keeps_are_recorded_by_later_snapshots():
    """One role, 34 tenant schemas, one statement text: a single entry on PostgreSQL 18,
    which keeps 32 relations per entry until a snapshot stores them and starts again."""
    tag = uuid.uuid4().hex[:6]
    app = f"app34_{tag}"
    schemas = [f"s{i:02d}" for i in range(1, ENTRY_RELATIONS_18 + 3)]
    with connect("postgres") as su:
        su.execute(f"CREATE ROLE {app} LOGIN")
    try:
        with new_database(extensions=("pg_stat_statements", "hypopg", "optidb")) as db:
            with connect(db) as su:
                su.execute(f'GRANT CREATE ON DATABASE "{db}" TO {app}')
            with connect(db, user=app) as a:
                for s in schemas:
                    a.execute(f"CREATE SCHEMA {s}; CREATE TABLE {s}.ticket (id int, owner_id int)")

                def run_in(names):
                    for s in names:
                        a.execute(f"SET search_path = {s}")
                        a.execute("SELECT id FROM ticket WHERE owner_id = %s", (7,))

                def recorded():
                    with connect(db) as su:
                        su.execute("SELECT * FROM optidb.snapshot()")
                        return [r[0] for r in su.execute(
                            "SELECT DISTINCT schema_name FROM optidb.statement_relation "
                            "WHERE table_name = 'ticket' ORDER BY 1")]

                run_in(schemas)
                first = recorded()
                assert len(first) >= ENTRY_RELATIONS_18 and set(first) <= set(schemas), first
                run_in(schemas[ENTRY_RELATIONS_18:])
                assert recorded() == schemas
    finally:
        with connect("postgres") as su:
            su.execute(f"DROP ROLE IF EXISTS {app}")
