"""TPC-H benchmark of index advice: every tool on the same data in one run (issue 23, 4(b)).

Run by tests/bench/tpch_advice_bench.sh, which makes the data, the cluster and the venv. Steps:
load the 8 tables (primary keys only) from tpchgen-cli's CSV files; run the 22 templates x 3
parameter sets (tpch_queries.py) as a plain role with simple queries and a statement_timeout
(the "none" run, which optidb observes); ask each tool for its indexes; then for each tool drop
every index but the primary keys, create its indexes, ANALYZE and run the same 66 statements.
Prints, per tool, the workload's estimated cost (sum of EXPLAIN total costs), its run time,
timeouts, index count and MB, advice time, and per template its wall and backend CPU time and
the CPU ratio to none.
"""

import argparse
import json
import random
import re
import sys
import time

import psycopg
from psycopg import errors

import tpch_queries as tq

TABLES = ["region", "nation", "supplier", "customer", "part", "partsupp", "orders", "lineitem"]

# TPC-H schema (spec 1.4.1) with the primary keys of 1.4.2.2 and nothing else.
DDL = """
CREATE TABLE region (r_regionkey int PRIMARY KEY, r_name char(25) NOT NULL,
  r_comment varchar(152));
CREATE TABLE nation (n_nationkey int PRIMARY KEY, n_name char(25) NOT NULL,
  n_regionkey int NOT NULL, n_comment varchar(152));
CREATE TABLE supplier (s_suppkey int PRIMARY KEY, s_name char(25) NOT NULL,
  s_address varchar(40) NOT NULL, s_nationkey int NOT NULL, s_phone char(15) NOT NULL,
  s_acctbal numeric(15,2) NOT NULL, s_comment varchar(101) NOT NULL);
CREATE TABLE customer (c_custkey int PRIMARY KEY, c_name varchar(25) NOT NULL,
  c_address varchar(40) NOT NULL, c_nationkey int NOT NULL, c_phone char(15) NOT NULL,
  c_acctbal numeric(15,2) NOT NULL, c_mktsegment char(10) NOT NULL,
  c_comment varchar(117) NOT NULL);
CREATE TABLE part (p_partkey int PRIMARY KEY, p_name varchar(55) NOT NULL,
  p_mfgr char(25) NOT NULL, p_brand char(10) NOT NULL, p_type varchar(25) NOT NULL,
  p_size int NOT NULL, p_container char(10) NOT NULL, p_retailprice numeric(15,2) NOT NULL,
  p_comment varchar(23) NOT NULL);
CREATE TABLE partsupp (ps_partkey int NOT NULL, ps_suppkey int NOT NULL,
  ps_availqty int NOT NULL, ps_supplycost numeric(15,2) NOT NULL,
  ps_comment varchar(199) NOT NULL, PRIMARY KEY (ps_partkey, ps_suppkey));
CREATE TABLE orders (o_orderkey int PRIMARY KEY, o_custkey int NOT NULL,
  o_orderstatus char(1) NOT NULL, o_totalprice numeric(15,2) NOT NULL,
  o_orderdate date NOT NULL, o_orderpriority char(15) NOT NULL, o_clerk char(15) NOT NULL,
  o_shippriority int NOT NULL, o_comment varchar(79) NOT NULL);
CREATE TABLE lineitem (l_orderkey int NOT NULL, l_partkey int NOT NULL, l_suppkey int NOT NULL,
  l_linenumber int NOT NULL, l_quantity numeric(15,2) NOT NULL,
  l_extendedprice numeric(15,2) NOT NULL, l_discount numeric(15,2) NOT NULL,
  l_tax numeric(15,2) NOT NULL, l_returnflag char(1) NOT NULL, l_linestatus char(1) NOT NULL,
  l_shipdate date NOT NULL, l_commitdate date NOT NULL, l_receiptdate date NOT NULL,
  l_shipinstruct char(25) NOT NULL, l_shipmode char(10) NOT NULL,
  l_comment varchar(44) NOT NULL, PRIMARY KEY (l_orderkey, l_linenumber));
"""

# Plan node keys whose expressions name the filter and join columns (Dexter-style candidates).
COND_KEYS = ("Filter", "Join Filter", "Hash Cond", "Merge Cond", "Index Cond", "Recheck Cond")


def log(msg):
    print("==> " + msg, file=sys.stderr, flush=True)


def connect(args, user, dbname=None):
    return psycopg.connect(host=args.host, port=args.port, dbname=dbname or args.db, user=user,
                           autocommit=True, prepare_threshold=None)


# ---------------------------------------------------------------- setup


def create_database(args):
    with connect(args, "postgres", "postgres") as c:
        c.execute("DROP DATABASE IF EXISTS %s WITH (FORCE)" % args.db)
        c.execute("CREATE DATABASE %s" % args.db)
        # The database's own setting, not only the workload session's: optidb's replay
        # workers, index_advisor and the search then plan what the workload runs (a parallel
        # plan hid TPC-H Q5's flip to a slower nested loop from optidb's replays).
        c.execute("ALTER DATABASE %s SET max_parallel_workers_per_gather = %d"
                  % (args.db, args.parallel))
        if not c.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (args.role,)).fetchone():
            c.execute("CREATE ROLE %s LOGIN" % args.role)
    with connect(args, "postgres") as c:
        c.execute(DDL)
        for ext in ["pg_stat_statements", "hypopg", "optidb"]:
            c.execute("CREATE EXTENSION %s" % ext)
        if args.index_advisor:
            c.execute("CREATE EXTENSION index_advisor")
        c.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO %s" % args.role)


def load(args):
    t0 = time.monotonic()
    with connect(args, "postgres") as c:
        for t in TABLES:
            with open("%s/%s.csv" % (args.data, t), "rb") as f, c.cursor() as cur:
                with cur.copy("COPY %s FROM STDIN (FORMAT csv, HEADER true)" % t) as cp:
                    while block := f.read(1 << 20):
                        cp.write(block)
        c.execute("VACUUM (ANALYZE)")
        rows = {t: c.execute("SELECT count(*) FROM %s" % t).fetchone()[0] for t in TABLES}
    log("loaded %s in %.1f s" % (rows, time.monotonic() - t0))


def workload(args):
    """The 66 statements: [(template, set, sql)], parameters drawn by the spec's rules."""
    with connect(args, "postgres") as c:
        dom = {k: [r[0].strip() for r in c.execute(q)] for k, q in tq.DOMAIN_SQL.items()}
    stmts = []
    for n in range(1, 23):
        for k in range(args.sets):
            rng = random.Random("%d-%d-%d" % (args.seed, n, k))
            stmts.append((n, k, tq.render(n, tq.params(n, rng, dom, args.scale))))
    return stmts


# ---------------------------------------------------------------- measuring


def user_indexes(c):
    return c.execute(
        """SELECT i.indexrelid::regclass::text, pg_relation_size(i.indexrelid),
                  pg_get_indexdef(i.indexrelid)
           FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid
           WHERE t.relnamespace = 'public'::regnamespace AND t.relname = ANY(%s)
             AND NOT i.indisprimary ORDER BY 1""", (TABLES,)).fetchall()


def reset_indexes(c):
    for name, _, _ in user_indexes(c):
        c.execute("DROP INDEX %s" % name)
    c.execute("ANALYZE")


def explain(c, sql):
    return c.execute("EXPLAIN (FORMAT JSON) " + sql).fetchone()[0][0]["Plan"]


def total_cost(args, stmts):
    with connect(args, "postgres") as c:
        c.execute("SET pg_stat_statements.track_utility = off")
        return sum(explain(c, sql)["Total Cost"] for _, _, sql in stmts)


def cpu_s(pid):
    """CPU seconds the backend has used (/proc/PID/schedstat: ns on CPU, user + system)."""
    with open("/proc/%d/schedstat" % pid) as f:
        return int(f.read().split()[0]) / 1e9


def run_workload(args, stmts):
    """{template: [wall seconds or None (timeout) per set]}, {template: backend CPU seconds},
    errors; as the plain role. The backend's CPU time is what the other engineers' load on
    this shared machine changes least (wall time swings 2-3x between runs); with
    max_parallel_workers_per_gather = 0 (--parallel) it is all of the statement's work."""
    times, cpu, errs = {}, {}, []
    with connect(args, args.role) as c:
        c.execute("SET statement_timeout = %d" % (args.timeout * 1000))
        c.execute("SET max_parallel_workers_per_gather = %d" % args.parallel)
        pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        for n, k, sql in stmts:
            t0, c0 = time.monotonic(), cpu_s(pid)
            try:
                c.execute(sql).fetchall()
                times.setdefault(n, []).append(time.monotonic() - t0)
            except errors.QueryCanceled:
                times.setdefault(n, []).append(None)
            except psycopg.Error as e:
                times.setdefault(n, []).append(None)
                errs.append("Q%d set %d: %s" % (n, k, str(e).splitlines()[0]))
            cpu[n] = cpu.get(n, 0.0) + cpu_s(pid) - c0
    return times, cpu, errs


def seconds(ts, timeout):
    """A template's time: a timeout counts as the timeout."""
    return sum(timeout if t is None else t for t in ts)


# ---------------------------------------------------------------- the tools' advice


# Estimated MB of each index optidb advised, by (table, columns): printed beside the size
# PostgreSQL builds.
ESTIMATED_MB = {}


def has_storage_price(args):
    with connect(args, "postgres") as c:
        return c.execute(
            "SELECT 1 FROM pg_settings WHERE name = 'optidb.storage_price'").fetchone() is not None


def advise_optidb(args, stmts, settings=()):
    """optidb saw the none run: scan(), then the open index advice's DDL."""
    with connect(args, "postgres") as c:
        c.execute("SET pg_stat_statements.track_utility = off")
        for name, value in settings:
            c.execute("SELECT set_config(%s, %s, false)", (name, value))
        c.execute("SELECT * FROM optidb.scan()").fetchall()
        recs = c.execute(
            """SELECT kind, table_name, columns, ddl, improvement_pct, index_mb
               FROM optidb.recommend()
               WHERE ddl ~* '^\\s*CREATE\\s+(UNIQUE\\s+)?INDEX'""").fetchall()
        others = c.execute(
            "SELECT kind, count(*) FROM optidb.recommend() "
            "WHERE ddl !~* '^\\s*CREATE\\s+(UNIQUE\\s+)?INDEX' GROUP BY 1 ORDER BY 1").fetchall()
        summary = None
        if c.execute("SELECT 1 FROM pg_proc WHERE proname = 'advice_summary' "
                     "AND pronamespace = 'optidb'::regnamespace").fetchone():
            cur = c.execute("SELECT * FROM optidb.advice_summary()")
            summary = [dict(zip([d.name for d in cur.description], row)) for row in cur]
    for kind, table, cols, ddl, pct, mb in recs:
        log("optidb %s %s %s (%s%%)" % (kind, table, cols, pct))
        ESTIMATED_MB[(table.split(".")[-1], ", ".join(cols))] = mb
    if summary is not None:
        print("optidb.advice_summary(): %s" % summary)
    if others:
        log("optidb's other advice (not applied): %s" % others)
    return [r[3] for r in recs]


def plan_columns(plan, colmap, out):
    """Add (table, column) of every column named in the plan's conditions to out."""
    for key in COND_KEYS:
        for ident in re.findall(r"\b[a-z_][a-z0-9_]*\b", plan.get(key, "")):
            if ident in colmap:
                out.add((colmap[ident], ident))
    for child in plan.get("Plans", []):
        plan_columns(child, colmap, out)


def used_indexes(plan, out):
    if "Index Name" in plan:
        out.add(plan["Index Name"])
    for child in plan.get("Plans", []):
        used_indexes(child, out)


def hypo_cost(c, sql, candidates):
    """Estimated cost with the candidates as hypothetical indexes, and the ones the plan uses."""
    c.execute("SELECT hypopg_reset()")
    names = {}
    for table, cols in candidates:
        name = c.execute("SELECT indexname FROM hypopg_create_index(%s)",
                         ("CREATE INDEX ON %s (%s)" % (table, ", ".join(cols)),)).fetchone()[0]
        names[name] = (table, cols)
    plan = explain(c, sql)
    used = set()
    used_indexes(plan, used)
    return plan["Total Cost"], {names[u] for u in used if u in names}


def covered(existing, table, cols):
    """An existing index (the primary keys) starts with these columns: not a candidate."""
    return any(t == table and tuple(ix[:len(cols)]) == cols for t, ix in existing)


def advise_dexter(args, stmts):
    """Dexter-style search: per statement, single-column hypothetical indexes on its filter and
    join columns, then those plus every two-column pair on one table; keep the indexes of the
    cheaper plan when it costs at most (1 - min_saving) of the plan without them."""
    chosen = set()
    with connect(args, "postgres") as c:
        c.execute("SET pg_stat_statements.track_utility = off")
        colmap = dict(c.execute(
            """SELECT attname, relname FROM pg_attribute a JOIN pg_class t ON t.oid = a.attrelid
               WHERE relname = ANY(%s) AND relnamespace = 'public'::regnamespace
                 AND attnum > 0 AND NOT attisdropped""", (TABLES,)).fetchall())
        existing = c.execute(
            """SELECT t.relname, array_agg(a.attname ORDER BY k.ord)
               FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid
               CROSS JOIN unnest(i.indkey) WITH ORDINALITY k(attnum, ord)
               JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
               WHERE t.relname = ANY(%s) AND t.relnamespace = 'public'::regnamespace
               GROUP BY i.indexrelid, t.relname""", (TABLES,)).fetchall()
        for n, k, sql in stmts:
            c.execute("SELECT hypopg_reset()")
            base = explain(c, sql)
            cols = set()
            plan_columns(base, colmap, cols)
            singles = [(t, (col,)) for t, col in sorted(cols)
                       if not covered(existing, t, (col,))]
            pairs = [(t, (a, b)) for t, a in sorted(cols) for u, b in sorted(cols)
                     if t == u and a != b and not covered(existing, t, (a, b))]
            cost1, used1 = hypo_cost(c, sql, singles)
            cost2, used2 = hypo_cost(c, sql, singles + pairs)
            cost, used = (cost2, used2) if cost2 < cost1 else (cost1, used1)
            if used and cost <= base["Total Cost"] * (1 - args.min_saving):
                chosen |= used
        c.execute("SELECT hypopg_reset()")
    # A single-column index that is the prefix of a chosen two-column one adds nothing.
    keep = {ix for ix in chosen
            if not any(o != ix and o[0] == ix[0] and o[1][:len(ix[1])] == ix[1] for o in chosen)}
    return ["CREATE INDEX ON %s (%s)" % (t, ", ".join(cols)) for t, cols in sorted(keep)]


def advise_index_advisor(args, stmts):
    ddl = {}
    with connect(args, "postgres") as c:
        c.execute("SET pg_stat_statements.track_utility = off")
        for n, k, sql in stmts:
            stmts_, errs = c.execute(
                "SELECT index_statements, errors FROM index_advisor(%s)", (sql,)).fetchone()
            for s in stmts_ or []:
                ddl.setdefault(re.sub(r"\s+", " ", s.strip().lower()), s)
            for e in errs or []:
                log("index_advisor Q%d set %d: %s" % (n, k, e))
    return list(ddl.values())


# ---------------------------------------------------------------- the run


def apply(args, ddl):
    errs = []
    with connect(args, "postgres") as c:
        reset_indexes(c)
        t0 = time.monotonic()
        for d in ddl:
            try:
                c.execute(d)
            except psycopg.Error as e:
                errs.append("%s: %s" % (d, str(e).splitlines()[0]))
        built = time.monotonic() - t0
        c.execute("ANALYZE")
        idx = user_indexes(c)
    return idx, built, errs


def measure(args, name, stmts, advice_s, ddl):
    idx, built, errs = apply(args, ddl)
    for e in errs:
        log("%s: index failed: %s" % (name, e))
    log("%s: %d indexes built in %.1f s; costs, then the workload" % (name, len(idx), built))
    cost = total_cost(args, stmts)
    t0 = time.monotonic()
    times, cpu, qerrs = run_workload(args, stmts)
    log("%s: workload %.1f s" % (name, time.monotonic() - t0))
    return {"tool": name, "advice_s": advice_s, "build_s": built, "cost": cost, "times": times,
            "cpu": cpu, "errors": qerrs + errs, "indexes": [(n, s, d) for n, s, d in idx]}


def report(args, results, elapsed):
    to = args.timeout
    base = results[0]
    print("\nTPC-H SF %s, %d templates x %d parameter sets, statement_timeout %d s, "
          "max_parallel_workers_per_gather %d, seed %d"
          % (args.scale, 22, args.sets, to, args.parallel, args.seed))
    print("\n%-14s %7s %7s %8s %12s %8s %8s %8s  %s" % (
        "tool", "indexes", "MB", "advice_s", "est_cost", "run_s", "cpu_s", "timeouts",
        "templates slower than none (> 1.2x)"))
    for r in results:
        tot = sum(seconds(ts, to) for ts in r["times"].values())
        tos = sum(ts.count(None) for ts in r["times"].values())
        slower = [n for n in range(1, 23) if slow(r, base, n, to)]
        adv = "-" if r["advice_s"] is None else "%.2f" % r["advice_s"]
        print("%-14s %7d %7.1f %8s %12.0f %8.1f %8.1f %8d  %s" % (
            r["tool"], len(r["indexes"]), sum(s for _, s, _ in r["indexes"]) / 2**20, adv,
            r["cost"], tot, sum(r["cpu"].values()), tos,
            " ".join("Q%d" % n for n in slower) or "none"))
    print("\nper template: wall seconds of its %d sets (T = all timed out, t = some did), then "
          "backend CPU seconds and their ratio to none's; ! = slower than none: wall and CPU "
          "both > 1.2x, or a timeout none did not have" % args.sets)
    head = "%-4s %15s" % ("Q", "none")
    for r in results[1:]:
        head += " %24s" % r["tool"]
    print(head)
    for n in range(1, 23):
        line = "%-4s %15s" % ("Q%d" % n, "%s %6.2f" % (cell(base["times"][n], to),
                                                          base["cpu"][n]))
        for r in results[1:]:
            ratio = r["cpu"][n] / max(base["cpu"][n], 1e-3)
            line += " %24s" % ("%s %6.2f %6.2fx%s" % (
                cell(r["times"][n], to), r["cpu"][n], ratio, "!" if slow(r, base, n, to) else " "))
        print(line)
    for r in results:
        print("\n%s indexes:" % r["tool"])
        for name, size, d in r["indexes"]:
            est = ""
            if r["tool"].startswith("optidb"):
                m = re.search(r"ON \S*?\.?(\w+) USING btree \((.*)\)$", d)
                mb = ESTIMATED_MB.get((m.group(1), m.group(2))) if m else None
                est = " (optidb estimated %s MB)" % ("?" if mb is None else "%.1f" % mb)
            print("  %7.1f MB  %s%s" % (size / 2**20, d, est))
        for e in r["errors"]:
            print("  error: %s" % e)
    print("\nbenchmark wall time: %.0f s" % elapsed)


def cell(ts, to):
    mark = "T" if all(t is None for t in ts) else "t" if None in ts else ""
    return "%.2f%s" % (seconds(ts, to), mark)


def slow(r, base, n, to):
    """Slower than without indexes: a new timeout, or both wall and CPU time > 1.2x (wall
    alone moves with the machine's load; CPU alone misses waits)."""
    if r["times"][n].count(None) > base["times"][n].count(None):
        return True
    return (seconds(r["times"][n], to) > 1.2 * seconds(base["times"][n], to)
            and r["cpu"][n] > 1.2 * base["cpu"][n])


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="/tmp")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--db", default="tpch")
    p.add_argument("--role", default="tpch_app")
    p.add_argument("--data", required=True, help="directory of tpchgen-cli's CSV files")
    p.add_argument("--scale", type=float, required=True)
    p.add_argument("--sets", type=int, default=3, help="parameter sets per template")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=int, default=30, help="statement_timeout, seconds")
    p.add_argument("--parallel", type=int, default=0,
                   help="max_parallel_workers_per_gather of the database and the workload's session")
    p.add_argument("--min-saving", type=float, default=0.5, help="Dexter-style cost cut to keep")
    p.add_argument("--index-advisor", action="store_true", help="index_advisor is installed")
    p.add_argument("--json", help="write the raw results here")
    args = p.parse_args()
    t0 = time.monotonic()

    create_database(args)
    load(args)
    stmts = workload(args)
    with connect(args, "postgres") as c:
        c.execute("SELECT pg_stat_statements_reset()")
    log("none: costs, then the workload (optidb observes this run)")
    none_cost = total_cost(args, stmts)
    w0 = time.monotonic()
    none_times, none_cpu, none_errs = run_workload(args, stmts)
    log("none: workload %.1f s" % (time.monotonic() - w0))
    with connect(args, "postgres") as c:
        none_idx = user_indexes(c)
    results = [{"tool": "none", "advice_s": None, "build_s": 0, "cost": none_cost,
                "times": none_times, "cpu": none_cpu, "errors": none_errs,
                "indexes": none_idx}]

    advisors = [("optidb", advise_optidb)]
    if has_storage_price(args):
        # The same scan with storage free (the selection before the storage price).
        advisors.append(("optidb price 0", lambda a, s: advise_optidb(
            a, s, [("optidb.storage_price", "0")])))
    advisors.append(("dexter-style", advise_dexter))
    if args.index_advisor:
        advisors.append(("index_advisor", advise_index_advisor))
    else:
        print("index_advisor: skipped (INDEX_ADVISOR_SRC is not set)")
    advice = []
    for name, fn in advisors:
        a0 = time.monotonic()
        try:
            ddl = fn(args, stmts)
        except psycopg.Error as e:  # a tool that fails is reported, the others still run
            print("%s: failed, skipped: %s" % (name, str(e).splitlines()[0]))
            continue
        advice.append((name, time.monotonic() - a0, ddl))
        log("%s: %d indexes advised in %.1f s" % (name, len(ddl), advice[-1][1]))
    for name, secs, ddl in advice:
        results.append(measure(args, name, stmts, secs, ddl))
    with connect(args, "postgres") as c:
        reset_indexes(c)
    report(args, results, time.monotonic() - t0)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
