"""optidb's SQL surface against its registry (src/api/surface.rs, listed by optidb.surface()): every
function, table and view of the schema is classified there, and the catalog says what the
registry says: EXECUTE by audience, comments, forced row-level security, reader policies and
grants by reader rule, pg_dump registration; enumerated columns' CHECK constraints allow exactly
the words the Rust code uses (optidb_core::vocabulary)."""

import re

import pytest

@pytest.fixture
def surface(fresh_db):
    rows = fresh_db.execute("SELECT kind, name, access, dumped, description "
                            "FROM optidb.surface()").fetchall()
    return {(kind, name): (access, dumped, description)
            for kind, name, access, dumped, description in rows}


def names(surface, kind):
    return {name for (k, name) in surface if k == kind}


def test_every_function_is_classified_commented_and_granted_by_audience(fresh_db, surface):
    functions = {r[0]: r[1:] for r in fresh_db.execute(
        "SELECT p.oid::regprocedure::text, obj_description(p.oid, 'pg_proc'), "
        "has_function_privilege('optidb_reader', p.oid, 'EXECUTE'), "
        "has_function_privilege('optidb_admin', p.oid, 'EXECUTE'), "
        "has_function_privilege('optidb_monitor', p.oid, 'EXECUTE'), "
        "has_function_privilege('public', p.oid, 'EXECUTE') "
        "FROM pg_proc p WHERE p.pronamespace = 'optidb'::regnamespace")}
    registered = names(surface, "function")
    assert set(functions) - registered == set(), "functions nobody classified in src/api/surface.rs"
    assert registered - set(functions) == set(), "registry entries without a function"
    for name, (comment, reader, admin, monitor, public) in functions.items():
        audience, _, description = surface[("function", name)]
        assert comment == description and comment, name
        assert not public, name
        assert (reader, monitor, admin) == {
            "reader": (True, False, True), "monitor": (False, True, True),
            "admin": (False, False, True), "internal": (False, False, False)}[audience], (
            name, audience)


def test_every_relation_is_classified_with_its_rls_grants_and_dump(fresh_db, surface):
    relations = {r[0]: r[1:] for r in fresh_db.execute(
        "SELECT 'optidb.' || c.relname, c.relkind::text, c.relrowsecurity, c.relforcerowsecurity, "
        "obj_description(c.oid, 'pg_class'), "
        "has_table_privilege('optidb_reader', c.oid, 'SELECT'), "
        "has_table_privilege('optidb_admin', c.oid, 'SELECT'), "
        "has_table_privilege('optidb_admin', c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE'), "
        "has_table_privilege('optidb_monitor', c.oid, 'SELECT'), "
        "c.oid = ANY (SELECT unnest(e.extconfig) FROM pg_extension e WHERE e.extname = 'optidb') "
        "FROM pg_class c WHERE c.relnamespace = 'optidb'::regnamespace "
        "AND c.relkind IN ('r', 'p', 'v', 'm')")}
    kinds = {"r": "table", "p": "table", "v": "view", "m": "materialized view"}
    classified = {name for (k, name) in surface if k in kinds.values()}
    assert set(relations) - classified == set(), "relations nobody classified in src/api/surface.rs"
    assert classified - set(relations) == set(), "registry entries without a relation"
    for name, (relkind, rls, forced, comment, reader, admin, admin_writes, monitor, dumped) in \
            relations.items():
        access, should_dump, description = surface[(kinds[relkind], name)]
        # Settings such as alert rules are the admin's to edit; nothing else is. A monitoring
        # system (optidb_monitor) reads its own views and the tables flagged monitor_reads.
        access, *flags = access.split(",")
        edits = "admin_edits" in flags
        assert admin_writes == edits, f"{name}: optidb_admin may write it"
        assert monitor == ("monitor_reads" in flags or access == "monitor"), (
            f"{name}: optidb_monitor may read it")
        if relkind == "m":
            assert not reader and not admin, name
            continue
        assert reader == (access not in ("none", "monitor")), (name, access)
        if relkind == "v":
            continue
        assert rls and forced, f"{name}: row-level security not forced"
        assert admin, name
        assert comment == description, name
        assert dumped == should_dump, (name, dumped)
        if not dumped:
            assert "not dumped" in comment, f"{name}: neither dumped nor said why"
        policies = {r[0] for r in fresh_db.execute(
            "SELECT polname FROM pg_policy WHERE polrelid = %s::regclass", (name,))}
        admins = {"admin_reads_all"} | ({"admin_edits"} if edits else set()) | (
            {"monitor_reads_all"} if monitor else set())
        readers = policies - admins
        assert admins <= policies and len(readers) == (access != "none"), (name, policies)


def test_dumped_tables_take_their_identity_sequences_along(fresh_db):
    missing = fresh_db.execute(
        "SELECT pg_get_serial_sequence('optidb.' || c.relname, a.attname) "
        "FROM pg_extension e, unnest(e.extconfig) AS t(oid) "
        "JOIN pg_class c ON c.oid = t.oid "
        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attidentity <> '' "
        "WHERE e.extname = 'optidb' AND NOT pg_get_serial_sequence('optidb.' || c.relname, "
        "a.attname)::regclass::oid = ANY (e.extconfig)").fetchall()
    assert missing == [], missing


def test_enumerated_columns_allow_exactly_the_rust_words(fresh_db, surface):
    checks = {}
    for table, definition in fresh_db.execute(
            "SELECT c.relname, pg_get_constraintdef(k.oid) FROM pg_constraint k "
            "JOIN pg_class c ON c.oid = k.conrelid "
            "WHERE c.relnamespace = 'optidb'::regnamespace AND k.contype = 'c' "
            "AND pg_get_constraintdef(k.oid) LIKE '%ANY (ARRAY[%'"):
        column = re.search(r"CHECK \(\(*(\w+) = ANY", definition).group(1)
        checks[f"optidb.{table}.{column}"] = re.findall(r"'([^']*)'::text", definition)
    enums = {name: surface[("enum", name)][2].split(",") for name in names(surface, "enum")}
    assert set(checks) == set(enums), "enumerated columns without a Rust vocabulary, or the reverse"
    for column, words in enums.items():
        assert sorted(checks[column]) == sorted(words), column

