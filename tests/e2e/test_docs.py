"""The documentation against the installed extension: every function of the SQL surface
(optidb.surface(), from src/api/surface.rs) has its page in docs/reference/ whose synopsis
names its arguments as the catalog does; every optidb.* setting in pg_settings has its row in
docs/reference/settings.md with the default and context PostgreSQL reports, and every row
there names a setting that exists; every role optidb creates or grants to has its row in
docs/reference/roles.md, which lists each function under the role the registry gives it; and
every relative link in the documentation leads to a file."""

import os
import re

from conftest import ROOT

REFERENCE = os.path.join(ROOT, "docs", "reference")
SECTIONS = ("## Synopsis", "## Description", "## Errors", "## Privileges", "## Example")


def read(*path):
    with open(os.path.join(ROOT, *path)) as f:
        return f.read()


def table_rows(text, first_cell):
    """The rows of the markdown tables in `text` whose first cell matches `first_cell`
    (a regex with one group), as {group: [cells]}."""
    rows = {}
    for line in text.splitlines():
        m = re.match(r"^\| " + first_cell + r" \|(.*)\|\s*$", line)
        if m:
            rows[m.group(1)] = [c.strip() for c in m.group(2).split("|")]
    return rows


def test_every_function_has_a_reference_page_naming_its_arguments(fresh_db):
    functions = fresh_db.execute(
        "SELECT s.name, p.proname, "
        "       coalesce(p.proargnames[1:p.pronargs], '{}') "
        "FROM optidb.surface() s JOIN pg_proc p ON p.oid = s.name::regprocedure "
        "WHERE s.kind = 'function'").fetchall()
    assert len(functions) > 20, functions
    missing = [name for name, proname, _ in functions
               if not os.path.exists(os.path.join(REFERENCE, proname + ".md"))]
    assert missing == [], f"functions without a page in docs/reference/: {missing}"
    for name, proname, args in functions:
        page = read("docs", "reference", proname + ".md")
        absent = [s for s in SECTIONS if s not in page]
        assert absent == [], f"docs/reference/{proname}.md lacks {absent}"
        synopsis = page.split("## Synopsis", 1)[1].split("##", 1)[0]
        assert f"optidb.{proname}(" in synopsis, proname
        for arg in args:
            assert re.search(rf"\b{arg}\b", synopsis), (
                f"docs/reference/{proname}.md: the synopsis lacks argument {arg} of {name}")
    index = read("docs", "reference", "README.md")
    unlisted = [p for _, p, _ in functions if f"]({p}.md)" not in index]
    assert unlisted == [], f"docs/reference/README.md does not list {unlisted}"


def test_every_result_column_has_its_row_in_the_columns_table(fresh_db):
    """A column added to a function's RETURNS TABLE without its row in the page fails here."""
    functions = fresh_db.execute(
        "SELECT p.proname, array_agg(a.name ORDER BY a.n) "
        "FROM optidb.surface() s JOIN pg_proc p ON p.oid = s.name::regprocedure, "
        "     unnest(p.proargnames, p.proargmodes) WITH ORDINALITY AS a(name, mode, n) "
        "WHERE s.kind = 'function' AND a.mode = 't' GROUP BY p.proname").fetchall()
    assert any(name == "bottlenecks" for name, _ in functions), functions
    for proname, columns in functions:
        page = read("docs", "reference", proname + ".md")
        assert "## Columns" in page, f"docs/reference/{proname}.md has no Columns section"
        section = page.split("## Columns", 1)[1].split("\n## ", 1)[0]
        documented = {word for first in re.findall(r"^\| ([^|]+) \|", section, re.M)
                      for word in re.findall(r"[a-z_][a-z_0-9]*", first)}
        missing = [c for c in columns if c not in documented]
        assert missing == [], f"docs/reference/{proname}.md: no Columns row for {missing}"


def test_settings_page_and_pg_settings_list_the_same_settings_and_defaults(fresh_db):
    rows = fresh_db.execute(
        "SELECT name, boot_val, context FROM pg_settings WHERE name LIKE 'optidb.%'").fetchall()
    settings = {name: boot for name, boot, _ in rows}
    assert "optidb.max_statements" in settings, "the e2e cluster preloads optidb"
    documented = table_rows(read("docs", "reference", "settings.md"), r"`(optidb\.[a-z_]+)`")
    assert set(settings) - set(documented) == set(), "settings without a row in settings.md"
    # A row may name a setting pg_settings hides (NO_SHOW_ALL), never one that does not exist.
    for name in set(documented) - set(settings):
        assert fresh_db.execute("SELECT current_setting(%s, true)", (name,)).fetchone()[0] \
            is not None, f"settings.md documents {name}, which does not exist"
    # Who may change it, in the page's words for pg_settings.context.
    words = {"superuser": "superuser", "user": "user", "sighup": "reload", "postmaster": "restart"}
    for name, boot, context in rows:
        default, _, changed_by = documented[name][:3]
        assert default == (boot or "(empty)"), (
            f"settings.md gives {name} the default {default}, PostgreSQL says {boot!r}")
        assert changed_by == words[context], (
            f"settings.md says {name} is changed by {changed_by}, PostgreSQL says {context}")


def test_roles_page_has_every_role_and_each_function_under_its_audience(fresh_db):
    created = set(re.findall(r"CREATE ROLE (\w+)", read("sql", "bootstrap.sql")))
    granted = {r[0] for r in fresh_db.execute(
        "SELECT DISTINCT a.grantee::regrole::text FROM pg_proc p, aclexplode(p.proacl) a "
        "WHERE p.pronamespace = 'optidb'::regnamespace AND a.grantee <> p.proowner "
        "  AND a.grantee <> 0")}
    assert {"optidb_reader", "optidb_admin"} <= created | granted
    roles = table_rows(read("docs", "reference", "roles.md"), r"`([a-z_]+)`")
    assert (created | granted) - set(roles) == set(), "roles without a row in roles.md"
    audience = dict(fresh_db.execute(
        "SELECT p.proname, s.access FROM optidb.surface() s "
        "JOIN pg_proc p ON p.oid = s.name::regprocedure WHERE s.kind = 'function'").fetchall())
    for role, want in (("optidb_reader", "reader"), ("optidb_monitor", "monitor"),
                       ("optidb_admin", "admin")):
        runs = set(re.findall(r"\[`([a-z_]+)`\]", roles[role][-1]))
        assert runs == {f for f, a in audience.items() if a == want}, (
            f"roles.md: what {role} may run differs from the registry's {want} functions")


def test_every_relative_link_in_the_documentation_leads_to_a_file():
    docs = ["README.md", "CONTRIBUTING.md", "CHANGELOG.md"] + [
        os.path.relpath(os.path.join(d, f), ROOT)
        for d, _, files in os.walk(os.path.join(ROOT, "docs")) for f in files
        if f.endswith(".md")]
    broken = []
    for doc in docs:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", read(doc)):
            if "://" in target:
                continue
            if not os.path.exists(os.path.join(ROOT, os.path.dirname(doc), target)):
                broken.append(f"{doc} -> {target}")
    assert broken == []
