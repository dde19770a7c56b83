"""Red-team tests of read replicas as sources (src/api/sources.rs; docs/security-model.md, rows
52-56). A real primary and a real streaming standby (pg_basebackup -R) as in
tests/e2e/test_replicas.py, on ports of their own. Each test asserts the safe behaviour; the
three findings failed before the fix (a pull connects as optidb's owner, a superuser, whom
dblink lets connect without a password).

Roles: mallory (LOGIN, CREATE on the database, no optidb grant), rt_admin (non-superuser
optidb_admin, with USAGE on dblink_fdw: what it needs to set sources up itself)."""

import psycopg
import pytest

from conftest import PORT, SOCKET, connect, scalar, own_data, wait_for
from fleet import pg_ctl, primary_and_standby

PRIMARY_PORT, STANDBY_PORT = PORT + 32, PORT + 33
STANDBY_DATA = own_data("replica-redteam-standby")
DB = "shop"
APP, READER, ADMIN, MALLORY = "rt_app", "rt_reader", "rt_admin", "mallory"
def standby(action):
    pg_ctl(STANDBY_DATA, action)


def setup(su):
    su.execute(f"CREATE ROLE {APP} LOGIN")
    su.execute(f"CREATE ROLE {READER} LOGIN IN ROLE optidb_reader")
    su.execute(f"CREATE ROLE {MALLORY} LOGIN")
    su.execute(f"GRANT CREATE ON DATABASE {DB} TO {MALLORY}")
    # What a non-superuser admin needs to create the servers of its sources itself.
    su.execute(f"GRANT USAGE ON FOREIGN DATA WRAPPER dblink_fdw TO {ADMIN}")
    su.execute("CREATE SCHEMA inv")
    su.execute("CREATE TABLE inv.item (id int PRIMARY KEY, category int NOT NULL, "
               "sku text NOT NULL, price int NOT NULL)")
    su.execute("INSERT INTO inv.item SELECT g, g % 500, 'sku-' || g, g % 997 "
               "FROM generate_series(1, 20000) g")
    su.execute("ANALYZE inv.item")
    su.execute(f"GRANT USAGE ON SCHEMA inv TO {APP}, {READER}, {MALLORY}")
    su.execute(f"GRANT SELECT ON inv.item TO {APP}, {READER}, {MALLORY}")


@pytest.fixture(scope="module")
def fleet():
    with primary_and_standby("redteam-primary", PRIMARY_PORT, STANDBY_PORT, STANDBY_DATA, DB,
                             ADMIN, setup) as port:
        with connect(DB, user=ADMIN, port=port) as admin:
            admin.execute("SELECT * FROM optidb.add_source('standby1', 'standby1')")
        yield port


def is_superuser(port, role):
    with connect(DB, port=port) as su:
        return scalar(su, "SELECT rolsuper FROM pg_roles WHERE rolname = %s", (role,))


# An operator =(oid, oid) whose function, when a superuser runs it, makes mallory a superuser
# (and records that it ran). The pull's remote query compares oids with a bare `=`.
TROJAN = """
CREATE SCHEMA {schema};
CREATE TABLE {schema}.ran (who text, super bool);
GRANT INSERT ON {schema}.ran TO PUBLIC;
CREATE FUNCTION {schema}.eq(oid, oid) RETURNS bool LANGUAGE plpgsql AS $f$
BEGIN
    IF (SELECT r.rolsuper FROM pg_catalog.pg_roles r
        WHERE r.rolname OPERATOR(pg_catalog.=) pg_catalog.current_user()) THEN
        BEGIN
            EXECUTE 'ALTER ROLE mallory SUPERUSER';
        EXCEPTION WHEN OTHERS THEN NULL;  -- read-only standby: still record the call
        END;
    END IF;
    RETURN $1 OPERATOR(pg_catalog.=) $2;
END $f$;
CREATE OPERATOR {schema}.= (LEFTARG = oid, RIGHTARG = oid, FUNCTION = {schema}.eq);
CREATE FUNCTION {schema}.strpos(text, text) RETURNS int LANGUAGE sql
    AS 'SELECT 1 / 0';
GRANT USAGE ON SCHEMA {schema} TO PUBLIC;
"""


def test_admin_made_server_cannot_run_code_as_the_superuser_in_the_pull(fleet):
    """FINDING 1 (critical): a non-superuser optidb_admin (with USAGE on dblink_fdw) creates a
    loopback server whose libpq `options` set the remote session's search_path, and a
    no-password PUBLIC user mapping for 'postgres'. scan() connects through it AS THE EXTENSION
    OWNER (a superuser: dblink skips its password check for superusers), so the remote session
    is a superuser session, whose search_path puts mallory's schema before pg_catalog: the bare
    `=` of the fixed remote query runs mallory's function as a superuser."""
    with connect(DB, user=MALLORY, port=fleet) as m:
        m.execute(TROJAN.format(schema="trap"))
    with connect(DB, user=ADMIN, port=fleet) as admin:
        admin.execute(f"CREATE SERVER loop FOREIGN DATA WRAPPER dblink_fdw OPTIONS "
                      f"(host '{SOCKET}', port '{fleet}', dbname '{DB}', "
                      "options '-c search_path=trap,pg_catalog')")
        admin.execute("CREATE USER MAPPING FOR PUBLIC SERVER loop OPTIONS (user 'postgres')")
        # The admin itself cannot use it (dblink requires a password of non-superusers) ...
        with pytest.raises(psycopg.Error):
            admin.execute("SELECT * FROM dblink('loop', 'SELECT 1') AS t(x int)")
        # ... and may not have optidb's owner, a superuser, use it for it.
        with pytest.raises(psycopg.errors.InsufficientPrivilege,
                           match="its owner is not a superuser"):
            admin.execute("SELECT * FROM optidb.add_source('loop', 'loop')")
        admin.execute("SELECT * FROM optidb.scan()")
        state = admin.execute("SELECT state, last_error FROM optidb.source "
                              "WHERE name = 'loop'").fetchall()
        assert state == []
    try:
        assert not is_superuser(fleet, MALLORY), (
            "mallory became a superuser through the pull", state)
    finally:
        with connect(DB, port=fleet) as su:
            su.execute("ALTER ROLE mallory NOSUPERUSER")
            su.execute("SELECT optidb.drop_source('loop') "
                       "WHERE EXISTS (SELECT FROM optidb.source WHERE name = 'loop')")
            su.execute("DROP SERVER loop CASCADE")
            su.execute("DROP SCHEMA trap CASCADE")


def other_database_statement(port):
    """Database `postgres` of the same cluster as another application's database with its own
    optidb (optidb is per database), and a statement that only ever ran there. pg_stat_statements
    replaces constants, not identifiers: the table name carries the marker."""
    with connect("postgres", port=port) as su:
        su.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        su.execute("CREATE EXTENSION IF NOT EXISTS optidb")
        su.execute("CREATE TABLE IF NOT EXISTS payroll_secret_marker (salary int)")
        for _ in range(3):
            su.execute("SELECT count(*) FROM payroll_secret_marker WHERE salary > 100000")


def pulled_from_other_database(admin, source, refusal=None, before_drop=lambda admin: None):
    """What a scan pulled through `source`; with `refusal`, add_source() must refuse it so.
    `before_drop(admin)` runs after the scan, while the source is still registered."""
    if refusal:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match=refusal):
            admin.execute("SELECT * FROM optidb.add_source(%s, %s)", (source, source))
        return [], "refused"
    admin.execute("SELECT * FROM optidb.add_source(%s, %s)", (source, source))
    admin.execute("SELECT * FROM optidb.scan()")
    leaked = admin.execute(
        "SELECT source, role_name, norm_sql FROM optidb.query "
        "WHERE norm_sql LIKE %s AND source = %s", ('%payroll_secret_marker%', source)).fetchall()
    state = admin.execute("SELECT state, last_error FROM optidb.source WHERE name = %s",
                          (source,)).fetchone()
    before_drop(admin)
    admin.execute("SELECT optidb.drop_source(%s) "
                  "WHERE EXISTS (SELECT FROM optidb.source WHERE name = %s)", (source, source))
    return leaked, state


def test_admin_made_server_does_not_give_the_superuser_connection_to_another_database(fleet):
    """FINDING 2 (high): the same kind of admin-made, no-password server pointed at ANOTHER
    database of the cluster (here `postgres`, with optidb installed) makes scan() read, as a
    superuser, that database's pg_stat_statements and file its texts here as statements of the
    same-named roles, which the admin then reads: another database's query texts cross a
    boundary the admin has no right to cross (it cannot even connect through that server with
    dblink itself). Safe: the source is refused, or its pull fails."""
    other_database_statement(fleet)
    with connect(DB, user=ADMIN, port=fleet) as admin:
        admin.execute(f"CREATE SERVER otherdb FOREIGN DATA WRAPPER dblink_fdw OPTIONS "
                      f"(host '{SOCKET}', port '{fleet}', dbname 'postgres')")
        admin.execute("CREATE USER MAPPING FOR PUBLIC SERVER otherdb "
                      "OPTIONS (user 'postgres')")
        with pytest.raises(psycopg.Error):  # the admin's own dblink may not use it
            admin.execute("SELECT * FROM dblink('otherdb', 'SELECT 1') AS t(x int)")
        try:
            leaked, state = pulled_from_other_database(admin, "otherdb",
                                                       "its owner is not a superuser")
            assert not leaked, (leaked, state)
        finally:
            admin.execute("DROP SERVER otherdb CASCADE")


def test_admin_cannot_borrow_a_superusers_own_user_mapping(fleet):
    """FINDING 3 (high): add_source() takes ANY foreign server, and the pull uses the user
    mapping of the extension owner. A superuser's server made for something else (here a
    postgres_fdw-style reporting link, mapped FOR postgres only, not PUBLIC) is not usable by
    the admin, yet the admin registers it and every scan connects with the superuser's
    credentials and files that database's statement texts here. Safe: refused (the admin has
    no USAGE on the server / no mapping of its own), or the pull fails."""
    other_database_statement(fleet)
    with connect(DB, port=fleet) as su:
        su.execute(f"CREATE SERVER reporting FOREIGN DATA WRAPPER dblink_fdw OPTIONS "
                   f"(host '{SOCKET}', port '{fleet}', dbname 'postgres')")
        su.execute("CREATE USER MAPPING FOR postgres SERVER reporting "
                   "OPTIONS (user 'postgres')")
    try:
        with connect(DB, user=ADMIN, port=fleet) as admin:
            with pytest.raises(psycopg.Error):
                admin.execute("SELECT * FROM dblink('reporting', 'SELECT 1') AS t(x int)")
            leaked, state = pulled_from_other_database(admin, "reporting",
                                                       "no USAGE privilege")
            assert not leaked, (leaked, state)
    finally:
        with connect(DB, port=fleet) as su:
            su.execute("DROP SERVER reporting CASCADE")


@pytest.mark.parametrize("where", ["the primary itself", "another database of the standby"])
def test_a_server_that_is_not_this_database_on_a_standby_is_refused_at_each_pull(fleet, where):
    """A superuser's server that the admin may use, pointing at the primary (not in recovery)
    or at another database of the standby: registered, but every pull is refused before it
    reads anything, recorded on the source, and nothing of that database is filed here."""
    other_database_statement(fleet)
    port, dbname = (fleet, DB) if where == "the primary itself" else (STANDBY_PORT, "postgres")
    with connect(DB, port=fleet) as su:
        su.execute(f"CREATE SERVER elsewhere FOREIGN DATA WRAPPER dblink_fdw OPTIONS "
                   f"(host '{SOCKET}', port '{port}', dbname '{dbname}')")
        su.execute("CREATE USER MAPPING FOR PUBLIC SERVER elsewhere OPTIONS (user 'postgres')")
        su.execute(f"GRANT USAGE ON FOREIGN SERVER elsewhere TO {ADMIN}")
    if dbname == "postgres":
        wait_for("the other database's table on the standby", lambda: scalar(
            connect("postgres", port=STANDBY_PORT),
            "SELECT to_regclass('payroll_secret_marker') IS NOT NULL"))
        with connect("postgres", port=STANDBY_PORT) as c:
            c.execute("SELECT count(*) FROM payroll_secret_marker WHERE salary > 100000")
    health = {}

    def refused_is_a_health_item(admin):
        health["item"] = admin.execute(
            "SELECT value, status, details FROM optidb.health() "
            "WHERE item = 'sources_unreachable'").fetchone()
        admin.execute("SELECT * FROM optidb.check_alerts()")
        health["alerts"] = scalar(admin, "SELECT count(*) FROM optidb.alert "
                                         "WHERE resolved_at IS NULL "
                                         "AND rule_name = 'source_unreachable'")

    try:
        with connect(DB, user=ADMIN, port=fleet) as admin:
            leaked, (state, error) = pulled_from_other_database(
                admin, "elsewhere", before_drop=refused_is_a_health_item)
        assert not leaked
        # Refused, a state of its own (it was reached, unlike `unreachable`): a health item,
        # and the default rule fires on it.
        assert state == "refused"
        expected = ("not a server in recovery" if where == "the primary itself"
                    else "its database is not this one")
        assert error.startswith("refused") and expected in error, error
        value, status, details = health["item"]
        assert value >= 1 and status == "warning", health
        [entry] = [e for e in details["sources"] if e["source"] == "elsewhere"]
        assert entry["state"] == "refused" and entry["error"] == error, entry
        assert health["alerts"] == 1, health
    finally:
        with connect(DB, port=fleet) as su:
            su.execute("DROP SERVER elsewhere CASCADE")


def test_objects_planted_on_the_standby_search_path_are_not_used_by_the_pull(fleet):
    """Failed attack: mallory creates a schema named after the mapping's role ('postgres', the
    first entry of the remote session's default search_path "$user", public) with an
    =(oid, oid) operator and a strpos(text, text); it replicates to the standby. pg_catalog is
    searched first implicitly and every name in the remote query is either qualified or an
    exact match there, so the pull uses none of it."""
    with connect(DB, user=MALLORY, port=fleet) as m:
        m.execute(TROJAN.format(schema="postgres"))
    try:
        with connect(DB, user=APP, port=STANDBY_PORT) as c:
            c.execute("SET search_path = inv")
            for i in range(3):
                c.execute("SELECT sku FROM item WHERE category = %s", (i,))
        with connect(DB, port=fleet) as su:
            wait_for("the schema to replicate", lambda: scalar(
                connect(DB, port=STANDBY_PORT),
                "SELECT count(*) FROM pg_namespace WHERE nspname = 'postgres'"))
        with connect(DB, user=ADMIN, port=fleet) as admin:
            admin.execute("SELECT * FROM optidb.scan()")
            state, error = admin.execute("SELECT state, last_error FROM optidb.source "
                                         "WHERE name = 'standby1'").fetchone()
        assert (state, error) == ("ok", None)
        assert not is_superuser(fleet, MALLORY)
    finally:
        with connect(DB, port=fleet) as su:
            su.execute("ALTER ROLE mallory NOSUPERUSER")
            su.execute("DROP SCHEMA postgres CASCADE")


def test_mallory_cannot_register_or_drop_a_source(fleet):
    with connect(DB, user=MALLORY, port=fleet) as m:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            m.execute("SELECT * FROM optidb.add_source('mine', 'standby1')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            m.execute("SELECT optidb.drop_source('standby1')")
        # Nor read (and drain) what a standby's hooks recorded: texts, values, search_paths.
        for standby_read in ("latency_entries", "sample_entries", "failure_entries"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                m.execute(f"SELECT * FROM optidb.{standby_read}()")
    with connect(DB, user=MALLORY, port=STANDBY_PORT) as m:
        for standby_read in ("sample_entries", "failure_entries"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                m.execute(f"SELECT * FROM optidb.{standby_read}()")


def test_source_and_server_names_with_quotes_are_data(fleet):
    with connect(DB, user=ADMIN, port=fleet) as admin:
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            admin.execute("SELECT * FROM optidb.add_source('a''b', 'standby1')")
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            admin.execute("SELECT * FROM optidb.add_source('a\"b', 'standby1')")
    with connect(DB, port=fleet) as su:
        su.execute('CREATE SERVER "we""ird\'srv" FOREIGN DATA WRAPPER dblink_fdw OPTIONS '
                   f"(host '{SOCKET}', port '{STANDBY_PORT}', dbname '{DB}')")
        su.execute('CREATE USER MAPPING FOR PUBLIC SERVER "we""ird\'srv" '
                   "OPTIONS (user 'postgres')")
        su.execute(f'GRANT USAGE ON FOREIGN SERVER "we""ird\'srv" TO {ADMIN}')
    try:
        with connect(DB, user=ADMIN, port=fleet) as admin:
            admin.execute("SELECT * FROM optidb.add_source('weird', %s)", ('we"ird\'srv',))
            admin.execute("SELECT * FROM optidb.scan()")
            state, error = admin.execute("SELECT state, last_error FROM optidb.source "
                                         "WHERE name = 'weird'").fetchone()
            assert (state, error) == ("ok", None), error
            admin.execute("SELECT optidb.drop_source('weird')")
    finally:
        with connect(DB, port=fleet) as su:
            su.execute('DROP SERVER "we""ird\'srv" CASCADE')


def test_a_huge_statement_text_on_the_standby_does_not_break_the_scan(fleet):
    """Resilience: a 4 MB statement text (a comment) run on the standby by mallory is pulled
    without failing the scan or the source."""
    with connect(DB, user=MALLORY, port=STANDBY_PORT) as m:
        m.execute("/* " + "x" * (4 << 20) + " */ SELECT sku FROM inv.item WHERE id = %s", (7,))
    with connect(DB, user=ADMIN, port=fleet) as admin:
        scans = scalar(admin, "SELECT count(*) FROM optidb.scan_log")
        admin.execute("SELECT * FROM optidb.scan()")
        assert scalar(admin, "SELECT count(*) FROM optidb.scan_log") == scans + 1
        state, error = admin.execute("SELECT state, last_error FROM optidb.source "
                                     "WHERE name = 'standby1'").fetchone()
        assert (state, error) == ("ok", None), error
