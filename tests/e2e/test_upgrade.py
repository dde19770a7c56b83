"""Upgrade path: an install of every earlier release (frozen in sql/releases/) upgraded with
ALTER EXTENSION ... UPDATE through the hand-written scripts sql/optidb--<from>--<to>.sql has the
same schema as a fresh install of the current version (tables, columns, constraints, indexes,
views, functions with their settings and privileges, policies, extension members) and keeps its
data."""

import glob
import os
import re
import shutil
import subprocess
import uuid

import pytest

from conftest import connect, scalar

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RELEASES = sorted(re.search(r"optidb--([0-9.]+)\.sql$", f).group(1)
                  for f in glob.glob(os.path.join(ROOT, "sql", "releases", "optidb--*.sql")))
CURRENT = re.search(r'^version = "([^"]+)"', open(os.path.join(ROOT, "Cargo.toml")).read(),
                    re.M).group(1)

# One line per schema fact; two schemas are the same when these sets are equal.
DESCRIBE = r"""
SELECT 'rel ' || c.relname || ' ' || c.relkind::text || ' rls=' || c.relrowsecurity || '/' ||
       c.relforcerowsecurity || ' acl=' ||
       -- No ACL means the default one (what a grant and its revoke leave spelled out); the
       -- order of grants is not part of the schema.
       (SELECT string_agg(i::text, ',' ORDER BY i::text)
        FROM unnest(coalesce(c.relacl, acldefault(CASE WHEN c.relkind = 'S' THEN 's'
                                                       ELSE 'r' END::"char", c.relowner))) i)
FROM pg_class c WHERE c.relnamespace = 'optidb'::regnamespace
UNION ALL
SELECT 'col ' || c.relname || '.' || a.attname || ' #' || a.attnum || ' ' ||
       format_type(a.atttypid, a.atttypmod) || ' notnull=' || a.attnotnull || ' default=' ||
       coalesce(pg_get_expr(d.adbin, d.adrelid), '') || ' identity=' || a.attidentity::text
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE c.relnamespace = 'optidb'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT 'con ' || c.relname || ' ' || pg_get_constraintdef(k.oid)
FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
WHERE c.relnamespace = 'optidb'::regnamespace
UNION ALL
SELECT 'idx ' || pg_get_indexdef(i.indexrelid)
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
WHERE c.relnamespace = 'optidb'::regnamespace
UNION ALL
SELECT 'view ' || c.relname || ' ' || pg_get_viewdef(c.oid) || ' ' || coalesce(c.reloptions::text, '')
FROM pg_class c WHERE c.relnamespace = 'optidb'::regnamespace AND c.relkind IN ('v', 'm')
UNION ALL
SELECT 'fn ' || p.oid::regprocedure || ' (' || pg_get_function_arguments(p.oid) || ') -> ' ||
       pg_get_function_result(p.oid) || ' secdef=' ||
       p.prosecdef || ' vol=' || p.provolatile::text || ' par=' || p.proparallel::text || ' strict=' ||
       p.proisstrict || ' config=' || coalesce(p.proconfig::text, '') || ' acl=' ||
       coalesce((SELECT string_agg(i::text, ',' ORDER BY i::text) FROM unnest(p.proacl) i), '') ||
       ' src=' || p.prosrc
FROM pg_proc p WHERE p.pronamespace = 'optidb'::regnamespace
UNION ALL
SELECT 'policy ' || c.relname || '.' || p.polname || ' ' || p.polcmd::text || ' ' ||
       p.polroles::regrole[]::text || ' ' || coalesce(pg_get_expr(p.polqual, p.polrelid), '') ||
       ' ' || coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '')
FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
UNION ALL
SELECT 'comment ' || pg_describe_object(d.classoid, d.objoid, d.objsubid) || ' ' || d.description
FROM pg_description d JOIN pg_class c ON c.oid = d.objoid AND d.classoid = 'pg_class'::regclass
WHERE c.relnamespace = 'optidb'::regnamespace
UNION ALL
SELECT 'comment ' || pg_describe_object(d.classoid, d.objoid, d.objsubid) || ' ' || d.description
FROM pg_description d JOIN pg_proc p ON p.oid = d.objoid AND d.classoid = 'pg_proc'::regclass
WHERE p.pronamespace = 'optidb'::regnamespace
UNION ALL
SELECT 'member ' || pg_describe_object(d.classid, d.objid, d.objsubid)
FROM pg_depend d JOIN pg_extension e ON d.refobjid = e.oid AND d.refclassid = 'pg_extension'::regclass
WHERE e.extname = 'optidb' AND d.deptype = 'e'
UNION ALL
SELECT 'dumped ' || c.relname FROM pg_extension e, unnest(e.extconfig) x(oid)
JOIN pg_class c ON c.oid = x.oid WHERE e.extname = 'optidb'
UNION ALL
SELECT 'version ' || extversion FROM pg_extension WHERE extname = 'optidb'
"""


@pytest.fixture
def two_databases():
    names = [f"optidb_up_{kind}_{uuid.uuid4().hex[:6]}" for kind in ("old", "new")]
    with connect("postgres") as admin:
        for name in names:
            admin.execute(f'CREATE DATABASE "{name}"')
    conns = [connect(name) for name in names]
    try:
        yield conns
    finally:
        for c in conns:
            c.close()
        with connect("postgres") as admin:
            for name in names:
                admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def sharedir():
    # The server's pg_config (test-major.sh points PG_CONFIG at another major's).
    pg_config = os.environ.get("PG_CONFIG", "/usr/lib/postgresql/15/bin/pg_config")
    return subprocess.run([pg_config, "--sharedir"], capture_output=True, text=True,
                          check=True).stdout.strip()


def install_frozen_releases():
    for version in RELEASES:
        with open(os.path.join(ROOT, "sql", "releases", f"optidb--{version}.sql")) as f:
            script = f.read()
        # A frozen script runs here against the current library, whose surface registry also
        # names the objects of later versions: it must skip those, as upgrade scripts do (a
        # real install of that version has its own library and registry).
        script = script.replace("optidb.apply_surface(false)", "optidb.apply_surface(true)")
        with open(os.path.join(sharedir(), "extension", f"optidb--{version}.sql"), "w") as f:
            f.write(script)


def test_every_release_has_an_upgrade_path_to_the_current_version():
    assert RELEASES, "no frozen releases in sql/releases"
    chain = RELEASES + [CURRENT]
    for old, new in zip(chain, chain[1:]):
        assert os.path.exists(os.path.join(ROOT, "sql", f"optidb--{old}--{new}.sql")), (old, new)


@pytest.mark.parametrize("previous", RELEASES)
def test_upgraded_install_has_the_fresh_schema_and_keeps_data(two_databases, previous):
    old, new = two_databases
    install_frozen_releases()
    for c in (old, new):
        c.execute("CREATE EXTENSION pg_stat_statements")
    old.execute(f"CREATE EXTENSION optidb VERSION '{previous}'")
    old.execute("INSERT INTO optidb.query (fingerprint, userid, dbid, kind) "
                "VALUES ('kept', 10, 1, 'select')")
    old.execute("ALTER EXTENSION optidb UPDATE")
    new.execute("CREATE EXTENSION optidb")
    # The scripts pin search_path while they run; the session's own is left as it was.
    for c in (old, new):
        assert scalar(c, "SHOW search_path") == '"$user", public'
    describe = lambda c: {r[0] for r in c.execute(DESCRIBE)}  # noqa: E731
    upgraded, fresh = describe(old), describe(new)
    assert f"version {CURRENT}" in upgraded
    assert upgraded - fresh == set() and fresh - upgraded == set(), (
        f"only after upgrade: {sorted(upgraded - fresh)}\nonly in fresh: {sorted(fresh - upgraded)}")
    assert scalar(old, "SELECT count(*) FROM optidb.query WHERE fingerprint = 'kept'") == 1
    # The upgraded install works: a refresh and a snapshot log what they did.
    old.execute("SELECT * FROM optidb.refresh()")
    old.execute("SELECT * FROM optidb.snapshot()")
    assert scalar(old, "SELECT count(*) FROM optidb.scan_log WHERE kind = 'snapshot'") == 1


def test_released_scripts_are_never_edited():
    """A released version's install script (sql/releases) and every upgrade script to it are
    frozen: sql/releases/SHA256SUMS lists them (`sha256sum` run in sql/); a change to one, or
    a released script missing from the list, fails here. A new release adds its lines."""
    import hashlib
    sums = {}
    with open(os.path.join(ROOT, "sql", "releases", "SHA256SUMS")) as f:
        for line in f:
            digest, name = line.split()
            sums[name] = digest
    released = [f"releases/optidb--{v}.sql" for v in RELEASES]
    released += [os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "sql", "optidb--*--*.sql"))
                 if re.search(r"--([0-9.]+)\.sql$", p).group(1) in RELEASES]
    assert set(released) == set(sums), "sql/releases/SHA256SUMS must list exactly the released scripts"
    for name in released:
        with open(os.path.join(ROOT, "sql", name), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == sums[name], f"{name} was edited after its release"
