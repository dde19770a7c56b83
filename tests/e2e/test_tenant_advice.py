"""Schema-per-tenant and role-per-tenant workloads (issue 27 part 2): the same statement text
resolving to each tenant's own `ticket` table is one tenant family and one row of
optidb.tenant_advice(), simulated on a sample of the tenants.

Tenants: three with a login role of their own whose search_path is their schema (one with a
hostile schema name of quotes, spaces and a semicolon), two served by one application role that
switches search_path and runs the statement through PREPARE/EXECUTE, one whose table already
has the index, and one whose table differs (owner_id is bigint): it must not be folded in. An
optidb_admin (not a superuser) scans; a reader who is a member of two tenants' roles sees only
those two."""

import time
import uuid

import pytest

from conftest import connect, new_database, scalar

pytestmark = pytest.mark.hypopg

HOSTILE = 'Hostile "Co"; x'
ROLE_TENANTS = ["acme", "globex", HOSTILE]
PATH_TENANTS = ["umbrella", "wayne"]
INDEXED = "initech"
ODD = "oddco"
QUERY = "SELECT id, body FROM ticket WHERE owner_id = %s"


def quote(name):
    return '"' + name.replace('"', '""') + '"'


def ticket(schema, owner_type="int"):
    s = quote(schema)
    return (f"CREATE SCHEMA {s};"
            f"CREATE TABLE {s}.ticket (id int PRIMARY KEY, owner_id {owner_type} NOT NULL, "
            f"body text);"
            f"INSERT INTO {s}.ticket SELECT g, 1 + g % 20000, repeat('t', 60) "
            f"FROM generate_series(1, 80000) g;")


@pytest.fixture(scope="module")
def tenants():
    tag = uuid.uuid4().hex[:6]
    role_of = {t: f"t{i}_{tag}" for i, t in enumerate(ROLE_TENANTS + [INDEXED, ODD])}
    app, adm, reader = f"app_{tag}", f"adm_{tag}", f"reader_{tag}"
    roles = list(role_of.values()) + [app, adm, reader]
    with connect("postgres") as su:
        for r in list(role_of.values()) + [app]:
            su.execute(f"CREATE ROLE {r} LOGIN")
        su.execute(f"CREATE ROLE {adm} LOGIN IN ROLE optidb_admin")
        # A reader who is a member of two tenants' roles: sees their statements only.
        su.execute(f"CREATE ROLE {reader} LOGIN IN ROLE optidb_reader, "
                   f"{role_of['acme']}, {role_of['globex']}")
    try:
        with new_database(extensions=("pg_stat_statements", "hypopg", "optidb")) as db:
            with connect(db) as su:
                su.execute(f'ALTER DATABASE "{db}" SET optidb.sample_interval = 1')
                for t in ROLE_TENANTS + PATH_TENANTS + [INDEXED]:
                    su.execute(ticket(t))
                su.execute(ticket(ODD, owner_type="bigint"))
                su.execute(f"CREATE INDEX ON {INDEXED}.ticket (owner_id)")
                for t, r in role_of.items():
                    su.execute(f"GRANT USAGE ON SCHEMA {quote(t)} TO {r}")
                    su.execute(f"GRANT SELECT ON {quote(t)}.ticket TO {r}")
                    su.execute(f"ALTER ROLE {r} IN DATABASE \"{db}\" "
                               f"SET search_path = {quote(t)}")
                for t in PATH_TENANTS:
                    su.execute(f"GRANT USAGE ON SCHEMA {t} TO {app}")
                    su.execute(f"GRANT SELECT ON {t}.ticket TO {app}")
                su.execute("VACUUM ANALYZE")
                su.execute("SELECT pg_stat_statements_reset()")
            run_workload(db, role_of, app)
            with connect(db, user=adm) as a:
                a.execute("SELECT * FROM optidb.scan()")
                yield db, a, {"reader": reader, "role_of": role_of}
    finally:
        with connect("postgres") as su:
            for r in roles:
                su.execute(f"DROP ROLE IF EXISTS {r}")


def run_workload(db, role_of, app):
    conns = {t: connect(db, user=r) for t, r in role_of.items()}
    with connect(db, user=app) as c:
        # Prepared once: PostgreSQL parses it again when the search_path changes.
        c.execute(f"SET search_path = {PATH_TENANTS[0]}")
        c.execute("PREPARE by_owner(int) AS SELECT id, body FROM ticket WHERE owner_id = $1")
        try:
            # The tenants take turns, each turn past the database's 1 s sample interval, so
            # every tenant's executions are sampled (where they ran is seen in the samples).
            for i in range(1, 4):
                for t, conn in conns.items():
                    time.sleep(1.1)
                    conn.execute(QUERY, (i * 4001,))
                for t in PATH_TENANTS:
                    time.sleep(1.1)
                    c.execute(f"SET search_path = {t}")
                    c.execute(f"EXECUTE by_owner({i * 4001})")
        finally:
            for conn in conns.values():
                conn.close()


def families(conn):
    return conn.execute(
        "SELECT schemas, lacking, already_indexed, indexed_schemas, script, rec_ids, "
        "       improvement_pct, evidence "
        "FROM optidb.tenant_advice() WHERE table_name = 'ticket' AND columns[1] = 'owner_id'"
    ).fetchall()


def test_one_family_for_every_tenant_whatever_role_or_search_path(tenants):
    _, adm, _ = tenants
    rows = families(adm)
    assert len(rows) == 1, rows
    schemas, lacking, *_ = rows[0]
    # (In the database's collation: compared as sets.)
    assert sorted(schemas) == sorted(ROLE_TENANTS + PATH_TENANTS), schemas
    assert lacking == 5


def test_a_tenant_whose_table_differs_is_not_folded_in(tenants):
    _, adm, _ = tenants
    schemas = families(adm)[0][0]
    assert ODD not in schemas
    # Its own advice stays a per-schema row of recommend().
    odd = adm.execute("SELECT rec_id FROM optidb.recommend() "
                      "WHERE table_name = 'oddco.ticket' AND columns[1] = 'owner_id'").fetchall()
    assert len(odd) == 1, odd


def test_a_tenant_that_already_has_the_index_is_counted(tenants):
    _, adm, _ = tenants
    _, _, already, indexed_schemas, *_ = families(adm)[0]
    assert (already, indexed_schemas) == (1, [INDEXED])


def test_the_family_is_simulated_on_a_sample_with_its_costs(tenants):
    _, adm, _ = tenants
    schemas, _, _, _, _, rec_ids, improvement, evidence = families(adm)[0]
    simulated = evidence["simulated"]
    assert evidence["sample_size"] == 3
    # The first, middle and last by name (byte order, as the scan sorts them).
    by_name = sorted(schemas)
    assert sorted(s["schema"] for s in simulated) == \
        sorted([by_name[0], by_name[len(by_name) // 2], by_name[-1]]), simulated
    for s in simulated:
        assert s["after_cost"] < 0.5 * s["before_cost"], s
    assert improvement > 50
    # Only the sample was simulated: the other tenants' advice has no simulation of its own
    # and says why in recommend().
    sims = scalar(adm, "SELECT count(DISTINCT rec_id) FROM optidb.simulation "
                       "WHERE rec_id = ANY (%s)", (rec_ids,))
    assert sims == 3
    notes = adm.execute("SELECT note FROM optidb.recommend() WHERE rec_id = ANY (%s) "
                        "AND rec_id <> ALL (%s)",
                        (rec_ids, [s["rec_id"] for s in simulated])).fetchall()
    assert len(notes) == 2 and all("sample of its tenant family" in n[0] for n in notes), notes


def test_the_script_quotes_every_schema_and_creates_the_indexes(tenants):
    db, adm, _ = tenants
    schemas, _, _, _, script, *_ = families(adm)[0]
    statements = script.split("\n")
    assert len(statements) == 5, script
    assert any(quote(HOSTILE) in s for s in statements), script
    with connect(db) as su:
        su.autocommit = True  # CREATE INDEX CONCURRENTLY: one statement at a time
        for s in statements:
            su.execute(s)
        indexed = su.execute(
            "SELECT n.nspname FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_attribute a "
            "ON a.attrelid = c.oid AND a.attnum = i.indkey[0] "
            "WHERE c.relname = 'ticket' AND a.attname = 'owner_id' ORDER BY 1").fetchall()
    assert [r[0] for r in indexed] == sorted(schemas + [INDEXED]), indexed
    # Dropped again: the other tests read the advice as scanned.
    with connect(db) as su:
        for s in schemas:
            for (name,) in su.execute(
                    "SELECT indexrelid::regclass::text FROM pg_index i JOIN pg_class c "
                    "ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = %s AND c.relname = 'ticket' AND NOT i.indisprimary",
                    (s,)).fetchall():
                su.execute(f"DROP INDEX {name}")


def test_a_reader_sees_only_the_tenants_of_statements_it_may_see(tenants):
    db, _, names = tenants
    with connect(db, user=names["reader"]) as r:
        rows = families(r)
        assert [(row[0], row[1]) for row in rows] == [(["acme", "globex"], 2)], rows
        # Tenants it may not see are neither listed nor counted as indexed.
        assert rows[0][2] == 0 and rows[0][3] == []
        assert HOSTILE not in rows[0][4] and "umbrella" not in rows[0][4]


MANY = 30


@pytest.fixture(scope="module")
def many_tenants():
    """MANY tenants, each with a role whose search_path is its own schema, all running the same
    statement: each is 1/MANY of the workload, and optidb.explain_top_k = 5 plans fewer
    statements than there are tenants."""
    tag = uuid.uuid4().hex[:6]
    schemas = [f"tenant_{i:02d}" for i in range(MANY)]
    role_of = {s: f"{s}_{tag}" for s in schemas}
    adm = f"adm_many_{tag}"
    with connect("postgres") as su:
        for r in role_of.values():
            su.execute(f"CREATE ROLE {r} LOGIN")
        su.execute(f"CREATE ROLE {adm} LOGIN IN ROLE optidb_admin")
    try:
        with new_database(extensions=("pg_stat_statements", "hypopg", "optidb")) as db:
            with connect(db) as su:
                for s, r in role_of.items():
                    su.execute(
                        f"CREATE SCHEMA {s};"
                        f"CREATE TABLE {s}.ticket (id int PRIMARY KEY, owner_id int NOT NULL, "
                        f"body text);"
                        f"INSERT INTO {s}.ticket SELECT g, 1 + g % 5000, repeat('t', 60) "
                        f"FROM generate_series(1, 30000) g;"
                        f"GRANT USAGE ON SCHEMA {s} TO {r};"
                        f"GRANT SELECT ON {s}.ticket TO {r};"
                        f'ALTER ROLE {r} IN DATABASE "{db}" SET search_path = {s}')
                su.execute("VACUUM ANALYZE")
                su.execute("SELECT pg_stat_statements_reset()")
            for s, r in role_of.items():
                with connect(db, user=r) as c:
                    for i in range(1, 4):
                        c.execute(QUERY, (i * 1001,))
            with connect(db, user=adm) as a:
                a.execute("SET optidb.explain_top_k = 5")
                a.execute("SELECT * FROM optidb.scan()")
                yield db, a, role_of
    finally:
        with connect("postgres") as su:
            for r in list(role_of.values()) + [adm]:
                su.execute(f"DROP ROLE IF EXISTS {r}")


def test_a_family_of_many_tenants_is_planned_once_and_lists_every_tenant(many_tenants):
    _, adm, role_of = many_tenants
    rows = families(adm)
    assert len(rows) == 1, rows
    schemas, lacking, already, _, script, rec_ids, improvement, evidence = rows[0]
    assert (sorted(schemas), lacking, already) == (sorted(role_of), MANY, 0)
    # One index statement per tenant, each naming its own schema once.
    statements = script.split("\n")
    assert len(statements) == MANY, script
    for s in role_of:
        assert sum(f"{s}.ticket" in line for line in statements) == 1, (s, script)
    # Planned on a sample, not per tenant: the budget of 5 is not 30 plans.
    assert 2 <= len(rec_ids) <= 5 + 3, rec_ids
    assert len(evidence["simulated"]) == 3 and improvement > 50, evidence
    # Each planned tenant's advice rests on its own role's statement (its own search_path),
    # never on another tenant's.
    owners = adm.execute(
        "SELECT r.schemaname::text, pg_get_userbyid(q.userid)::text "
        "FROM optidb.recommendation r JOIN optidb.query q ON q.id = ANY (r.query_ids) "
        "WHERE r.id = ANY (%s)", (rec_ids,)).fetchall()
    assert owners and all(role_of[schema] == role for schema, role in owners), owners
