"""Driver of tests/bench/peer_advice_bench.sh: loads the peers' test cases (peer_cases.py), runs
them as an application role, asks optidb, pg_qualstats and supabase index_advisor for index
advice in the same database, and scores each tool against what the peers' tests expect.

Prints figures; exits non-zero only when the benchmark cannot run (not on low scores).
Connection: libpq environment (PGHOST, PGPORT, PGUSER = a superuser). Settings from env:
RUNS (executions per statement, default 5), PEER_DB (database, default optidb_peer_bench),
HAVE_INDEX_ADVISOR=1 when index_advisor is installed in the server.
"""

import json
import os
import random
import re
import sys
import time

import psycopg
from psycopg import sql

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_cases import CASES, SKIPPED  # noqa: E402

APP_ROLE = "optidb_peer_app"
DB = os.environ.get("PEER_DB", "optidb_peer_bench")
RUNS = int(os.environ.get("RUNS", "5"))
INDEX_KINDS = ("missing_index", "composite_index", "expression_index")


def say(*args):
    print(*args, flush=True)


def connect(dbname, **kw):
    return psycopg.connect(dbname=dbname, autocommit=True, **kw)


# --- advice as (schema.table, [columns]) ---------------------------------------------------------

def unquote(name):
    name = name.strip()
    return name[1:-1].replace('""', '"') if name.startswith('"') else name


def split_top(text, sep=","):
    """Split at `sep` outside parentheses and double quotes."""
    parts, depth, quoted, cur = [], 0, False, ""
    for ch in text:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
        if ch == sep and depth == 0 and not quoted:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


DDL_RE = re.compile(
    r'\bON\s+(?:ONLY\s+)?((?:"(?:[^"]|"")+"|[\w$]+)(?:\.(?:"(?:[^"]|"")+"|[\w$]+))?)'
    r'\s*(?:USING\s+\w+\s*)?\((.*)\)', re.I | re.S)


def parse_ddl(ddl, default_schema="public"):
    """CREATE INDEX ... ON [schema.]table [USING am] (col [opclass] [DESC], ...) ->
    (schema.table, [col, ...]); an expression is kept as its text."""
    m = DDL_RE.search(ddl)
    if not m:
        return None
    parts = split_top(m.group(1), ".")
    schema, table = (parts if len(parts) == 2 else [default_schema, parts[0]])
    body = m.group(2)
    # a WHERE or INCLUDE clause after the column list: keep the list only
    depth, end = 0, len(body)
    for i, ch in enumerate(body):
        depth += ch == "("
        depth -= ch == ")"
        if depth < 0:
            end = i
            break
    cols = []
    for item in split_top(body[:end]):
        if item.startswith("(") or re.match(r"[\w$]+\s*\(", item):
            cols.append(item)
        else:
            first = re.match(r'"(?:[^"]|"")+"|[\w$]+', item)
            cols.append(unquote(first.group(0)) if first else item)
    return (f"{unquote(schema)}.{unquote(table)}", cols)


# --- scoring -------------------------------------------------------------------------------------

def qualify(case, table):
    return table if "." in table else f"{case['id']}.{table}"


def case_tables(case):
    tables = case.get("tables") or [t for t, _ in case["expected"]]
    return [qualify(case, t) for t in tables]


def owns(case, table):
    for t in case_tables(case):
        if t.endswith(".*") and table.startswith(t[:-1]):
            return True
        if t == table:
            return True
    return False


DIRECTION_RE = re.compile(r"\s+(ASC|DESC)?\s*(NULLS\s+(FIRST|LAST))?\s*$", re.I)


def column_key(col):
    """A column as compared: without its sort direction (a btree serves both directions of a
    one-column ORDER BY) and case-insensitively."""
    return unquote(DIRECTION_RE.sub("", col)).lower()


def matches(advice, expect):
    table, cols = advice
    etable, ecols = expect
    return table == etable and [column_key(c) for c in cols[: len(ecols)]] == [
        column_key(c) for c in ecols]


def score(advice, implied=None):
    """advice: set of (table, tuple(cols)). implied: for an advised index, the indexes
    PostgreSQL creates with it on other tables (the partitions of a partitioned table, as
    `partition_indexes` found them); None or {} scores strictly. Returns (found, expected,
    right, judged, per-case)."""
    implied = implied or {}

    def serves(a, e):
        return any(matches((t, list(c)), e) for t, c in [a] + implied.get(a, []))

    found = n_expected = right = judged = 0
    rows = []
    for case in CASES:
        expected = [(qualify(case, t), c) for t, c in case["expected"]]
        mine = sorted(a for a in advice if owns(case, a[0]))
        hit = [e for e in expected if any(serves(a, e) for a in mine)]
        miss = [e for e in expected if e not in hit]
        wrong = [a for a in mine if not any(serves(a, e) for e in expected)]
        found += len(hit)
        n_expected += len(expected)
        judged += len(mine)
        right += len(mine) - len(wrong)
        rows.append((case, miss, wrong))
    return found, n_expected, right, judged, rows


def fmt_index(table, cols):
    return f"{table}({', '.join(cols) if cols else 'any'})"


def report(tool, advice, seconds, note="", implied=None):
    """One tool's block: the strict figures, and when its advice includes indexes on
    partitioned tables, the figures that also count the index PostgreSQL creates with each on
    every partition (both printed, never one silently)."""
    found, n_expected, right, judged, rows = score(advice)
    recall = found / n_expected if n_expected else 0.0
    precision = right / judged if judged else float("nan")
    say("")
    say(f"== {tool}{' (' + note + ')' if note else ''}")
    say(f"   strict:     recall {found}/{n_expected} = {recall:.3f}   precision {right}/{judged}"
        f" = {precision:.3f}   advice time {seconds:.2f} s")
    efound, _, eright, _, erows = score(advice, implied)
    say(f"   equivalent: recall {efound}/{n_expected} = {efound / n_expected:.3f}   precision "
        f"{eright}/{judged} = {eright / judged if judged else float('nan'):.3f}   (an index "
        f"on a partitioned table also counts as the index PostgreSQL creates on each "
        f"partition: {sum(len(v) for v in (implied or {}).values())} such indexes, checked by "
        f"creating the parent's in a rolled-back transaction)")
    for (case, miss, wrong), (_, emiss, _) in zip(rows, erows):
        if not miss and not wrong:
            continue
        parts = []
        if miss:
            parts.append("missed " + "; ".join(
                fmt_index(t, c) + ("" if (t, c) in emiss else " (equivalent found)")
                for t, c in miss))
        if wrong:
            parts.append("wrong " + "; ".join(fmt_index(t, list(c)) for t, c in wrong))
        say(f"   {case['id']:<30} {' | '.join(parts)}")
    return dict(tool=tool, recall=recall, precision=precision, found=found,
                expected=n_expected, right=right, judged=judged, seconds=seconds,
                efound=efound, eright=eright)


def partition_indexes(db, advice):
    """For each advised index on a partitioned table, the indexes PostgreSQL creates with it
    on the partitions: measured, not assumed. The index is created on the parent inside a
    transaction that is rolled back, and the partitions' indexes attached to it (pg_inherits)
    are read back with their columns. Only plain column lists are tried."""
    out = {}
    for table, cols in sorted(advice):
        kind = db.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)",
                          (sql.Identifier(*table.split(".", 1)).as_string(db),)).fetchone()
        if not kind or kind[0] != "p" or not cols:
            continue
        if not all(re.fullmatch(r"[^()]+", c) for c in cols):
            continue
        names = [column_key(c) for c in cols]
        try:
            with db.transaction(force_rollback=True):
                db.execute(sql.SQL("CREATE INDEX optidb_peer_probe ON {} ({})").format(
                    sql.Identifier(*table.split(".", 1)),
                    sql.SQL(", ").join(sql.Identifier(n) for n in names)))
                parts = db.execute("""
                    SELECT n.nspname || '.' || c.relname,
                           array(SELECT pg_get_indexdef(i.indexrelid, k, false)
                                 FROM generate_series(1, i.indnkeyatts) k)
                    FROM pg_inherits h JOIN pg_index i ON i.indexrelid = h.inhrelid
                    JOIN pg_class c ON c.oid = i.indrelid
                    JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE h.inhparent = (SELECT oid FROM pg_class WHERE relname =
                                         'optidb_peer_probe' AND relnamespace = %s::regnamespace)
                    ORDER BY 1""", (sql.Identifier(table.split(".", 1)[0]).as_string(db),)
                ).fetchall()
        except psycopg.Error as e:
            say(f"   partition check of {fmt_index(table, list(cols))} failed: "
                f"{e.diag.message_primary}")
            continue
        out[(table, cols)] = [(t, [unquote(c) for c in pcols]) for t, pcols in parts]
    return out


# --- load and run --------------------------------------------------------------------------------

def setup_database(admin):
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB)))
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB)))
    exists = admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_ROLE,)).fetchone()
    if not exists:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(APP_ROLE)))


def load_cases(db):
    for case in CASES:
        schema = sql.Identifier(case["id"])
        db.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(
            schema, sql.Identifier(APP_ROLE)))
        if not case["setup"].strip():
            continue
        db.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(APP_ROLE)))
        db.execute(sql.SQL("SET search_path = {}").format(schema))
        db.execute(case["setup"])
        db.execute("RESET ROLE")
        db.execute("RESET search_path")


def run_workload(app, rand):
    """Each statement RUNS times with varied values, as the application role, through
    search_path; statements that write run in a transaction rolled back."""
    errors = 0
    for case in CASES:
        app.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(case["id"])))
        for text, params in case["queries"]:
            for _ in range(RUNS):
                args = params(rand) if params else None
                try:
                    if case.get("write"):
                        with app.transaction(force_rollback=True):
                            app.execute(text, args)
                    else:
                        cur = app.execute(text, args)
                        if cur.description:
                            cur.fetchall()
                except psycopg.Error:
                    errors += 1
    return errors


# --- the tools -----------------------------------------------------------------------------------

def optidb_advice(db, top_k=None):
    if top_k is not None:
        db.execute(sql.SQL("SET optidb.explain_top_k = {}").format(sql.Literal(top_k)))
    start = time.monotonic()
    scan = db.execute("SELECT queries_seen, plans_captured, explain_failures, recommendations, "
                      "elapsed_ms FROM optidb.scan()").fetchone()
    seconds = time.monotonic() - start
    rows = db.execute("SELECT table_name, columns FROM optidb.recommend() WHERE kind = ANY(%s)",
                      (list(INDEX_KINDS),)).fetchall()
    db.execute("RESET optidb.explain_top_k")
    note = (f"scan(): queries_seen={scan[0]} plans_captured={scan[1]} "
            f"explain_failures={scan[2]} recommendations={scan[3]} elapsed_ms={scan[4]:.0f}")
    # optidb's own summary of the advised set, in versions that have one
    if db.execute("SELECT to_regproc('optidb.advice_summary')").fetchone()[0]:
        summary = db.execute("SELECT to_jsonb(s) - 'scanned_at' FROM optidb.advice_summary() s "
                             "ORDER BY s.scanned_at DESC LIMIT 1").fetchone()
        if summary:
            note += "; advice_summary(): " + ", ".join(
                f"{k}={round(v, 1) if isinstance(v, float) else v}"
                for k, v in summary[0].items())
    return {(t, tuple(c)) for t, c in rows}, seconds, note


def qualstats_advice(db):
    start = time.monotonic()
    out = db.execute("SELECT pg_qualstats_index_advisor()").fetchone()[0]
    seconds = time.monotonic() - start
    if isinstance(out, str):
        out = json.loads(out)
    advice = set()
    for ddl in out.get("indexes") or []:
        parsed = parse_ddl(ddl)
        if parsed:
            advice.add((parsed[0], tuple(parsed[1])))
    return advice, seconds, f"{len(out.get('unoptimised') or [])} quals left unoptimised"


def dollar_params(text):
    n = 0

    def next_param(_):
        nonlocal n
        n += 1
        return f"${n}"
    return re.sub(r"%s", next_param, text)


def index_advisor_advice(db):
    """index_advisor(query) once per distinct statement text, with the case's search_path."""
    advice, errors, calls = set(), [], 0
    start = time.monotonic()
    for case in CASES:
        db.execute(sql.SQL("SET search_path = {}, public").format(sql.Identifier(case["id"])))
        for text, _ in case["queries"]:
            calls += 1
            try:
                stmts, errs = db.execute(
                    "SELECT index_statements, errors FROM public.index_advisor(%s)",
                    (dollar_params(text),)).fetchone()
            except psycopg.Error as e:
                errors.append(f"{case['id']}: {e.diag.message_primary}")
                continue
            errors += [f"{case['id']}: {e}" for e in errs or []]
            for ddl in stmts or []:
                parsed = parse_ddl(ddl)
                if parsed:
                    advice.add((parsed[0], tuple(parsed[1])))
    db.execute("RESET search_path")
    seconds = time.monotonic() - start
    return advice, seconds, f"{calls} calls, {len(errors)} errors", errors


def self_check():
    """The scoring and the DDL parser on known answers (no database): `--self-check`."""
    perfect = {(qualify(c, t), tuple(cols or ["x"])) for c in CASES for t, cols in c["expected"]}
    found, n_expected, right, judged, _ = score(perfect)
    assert (found, right) == (n_expected, judged), (found, n_expected, right, judged)
    # a wider index with the expected columns as prefix counts; the wrong order does not
    assert matches(("s.posts", ["user_id", "blog_id", "id"]), ("s.posts", ["user_id", "blog_id"]))
    assert not matches(("s.posts", ["blog_id", "user_id"]), ("s.posts", ["user_id", "blog_id"]))
    assert not matches(("s.events_0", ["blog_id"]), ("s.events", ["blog_id"]))
    # the parent's index counts for a partition only through `implied` (the equivalent figure)
    case = next(c for c in CASES if ("events_0", ["blog_id"]) in c["expected"])
    parent = (qualify(case, "events"), ("blog_id",))
    strict = score({parent})
    equivalent = score({parent}, {parent: [(qualify(case, "events_0"), ["blog_id"])]})
    assert (strict[0], strict[2], strict[3]) == (1, 1, 1), strict[:4]
    assert (equivalent[0], equivalent[2], equivalent[3]) == (2, 1, 1), equivalent[:4]
    # advice where the peer expects none is wrong, and it counts
    wrong = perfect | {("dx_indexed.posts", ("id",)), ("pg_catalog.pg_index", ("indrelid",))}
    found, n_expected, right, judged, _ = score(wrong)
    assert (found, right, judged) == (n_expected, right, right + 2), (found, right, judged)
    assert score(set())[:4] == (0, n_expected, 0, 0)
    assert parse_ddl('CREATE INDEX ON "A b"."Foo" USING btree ("Id" DESC, lower(x))') == (
        "A b.Foo", ["Id", "lower(x)"])
    assert parse_ddl("CREATE INDEX ON public.book USING btree (id)") == ("public.book", ["id"])
    say("self-check: ok")


def main():
    if sys.argv[1:] == ["--self-check"]:
        self_check()
        return
    rand = random.Random(23)
    n_expected = sum(len(c["expected"]) for c in CASES)
    say(f"peer cases: {len(CASES)} cases ({sum(1 for c in CASES if not c['expected'])} expect "
        f"no index), {n_expected} expected indexes, {len(SKIPPED)} peer tests not translatable "
        f"(see peer_cases.SKIPPED); each statement run {RUNS} times")
    with connect("postgres") as admin:
        setup_database(admin)
    # index_advisor() runs DEALLOCATE ALL in its caller's session: no prepared statements of
    # psycopg's own on this connection.
    with connect(DB, prepare_threshold=None) as db:
        for ext in ("pg_stat_statements", "hypopg", "pg_qualstats"):
            db.execute(sql.SQL("CREATE EXTENSION {}").format(sql.Identifier(ext)))
        have_ia = os.environ.get("HAVE_INDEX_ADVISOR") == "1"
        if have_ia:
            db.execute("CREATE EXTENSION index_advisor")
        start = time.monotonic()
        load_cases(db)
        db.execute("ANALYZE")
        say(f"loaded in {time.monotonic() - start:.0f} s")
        db.execute("SELECT pg_stat_statements_reset()")
        db.execute("SELECT pg_qualstats_reset()")
        db.execute("CREATE EXTENSION optidb")

        with connect(DB, user=APP_ROLE) as app:
            start = time.monotonic()
            errors = run_workload(app, rand)
        say(f"workload: {time.monotonic() - start:.0f} s, {errors} statement errors "
            f"(dx_explain_error's {RUNS} are expected; dx_catalogs' pg_policies statement may fail as in index_advisor's test)")

        results = []
        advice, secs, note = qualstats_advice(db)
        results.append(report("pg_qualstats 2.0.4 (pg_qualstats_index_advisor)", advice, secs,
                              note, partition_indexes(db, advice)))
        if have_ia:
            advice, secs, note, errs = index_advisor_advice(db)
            results.append(report("supabase index_advisor 0.2.0", advice, secs, note,
                                  partition_indexes(db, advice)))
            for e in errs:
                say(f"   error: {e}")
        else:
            say("\nindex_advisor: skipped (INDEX_ADVISOR_SRC unset)")
        default_top_k = db.execute("SHOW optidb.explain_top_k").fetchone()[0]
        advice, secs, note = optidb_advice(db)
        results.append(report(f"optidb (defaults, explain_top_k {default_top_k})", advice,
                              secs, note, partition_indexes(db, advice)))
        advice, secs, note = optidb_advice(db, 100)
        results.append(report("optidb (second scan, explain_top_k 100)", advice, secs, note,
                              partition_indexes(db, advice)))

    say("")
    say("strict: the index on the table the peer names; equivalent: an index on a partitioned "
        "table also counts as the one PostgreSQL creates on each partition")
    say(f"{'tool':<48} {'strict recall':>14} {'precision':>13} {'equiv. recall':>14} "
        f"{'precision':>13} {'time s':>7}")

    def ratio(a, b):
        return f"{a:>2}/{b} {a / b if b else float('nan'):.3f}"
    for r in results:
        n, j = r["expected"], r["judged"]
        say(f"{r['tool']:<48} {ratio(r['found'], n):>14} {ratio(r['right'], j):>13} "
            f"{ratio(r['efound'], n):>14} {ratio(r['eright'], j):>13} {r['seconds']:>7.2f}")


if __name__ == "__main__":
    main()
