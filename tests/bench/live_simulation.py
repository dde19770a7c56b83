"""What real simulations and scans cost a live workload (driven by live_simulation_bench.sh).

Each round runs the demo mix with pgbench for SECONDS under four conditions, in rotating order:
  alone       the workload by itself;
  burst       plus, one second in, 3 real simulations at once (optidb.simulate(q, r, 'real') on
              three different recommendations) and a scan(): the issue's scenario;
  continuous  plus 3 sessions looping real simulations and one looping scan() for the whole
              run (limits raised): a stress far beyond what the defaults allow;
  control     plus 4 sessions looping a full scan and sort of orders (an index build's work,
              without optidb: the CPU competition alone, which a 2-core VM cannot hide).
It prints the workload's throughput and mean latency per condition (medians over rounds), the
workload's lock waits (pg_stat_activity sampled every 10 ms: share of samples, and the longest
wait seen), the background calls' wall times and outcomes by SQLSTATE, and the deadlocks
PostgreSQL counted.

Usage: live_simulation.py PORT DB SECONDS ROUNDS PGBENCH_ARGS..."""

import re
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter

import psycopg

port, db, seconds, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
pgbench_cmd = sys.argv[5:]


def connect():
    return psycopg.connect(host="/tmp", port=port, user="postgres", dbname=db, autocommit=True)


with connect() as c:
    c.execute("SELECT * FROM optidb.scan()")
    pairs = c.execute(
        "SELECT r.rec_id, q.id, q.raw_sql FROM optidb.recommend() r "
        "JOIN optidb.query q ON q.id = r.query_ids[1] "
        "WHERE r.kind IN ('missing_index', 'composite_index', 'expression_index') "
        "AND q.raw_sql ILIKE 'select%' ORDER BY r.rec_id").fetchall()
if not pairs:
    sys.exit("no simulable index recommendation on a SELECT: run the demo workload first")
print(f"simulating {len(pairs)} recommendations: " + ", ".join(f"({q}, {r})" for r, q, _ in pairs))


def loop(stop, body, outcomes, once=False):
    with connect() as c:
        # Raised for both: the rate limit is per minute and the conditions follow each other.
        c.execute("SET optidb.max_concurrent_simulations = 3")
        c.execute("SET optidb.real_simulations_per_minute = 10000")
        c.execute("SET statement_timeout = '60s'")
        i = 0
        if once:
            time.sleep(1)
        while not stop.is_set():
            started = time.monotonic()
            try:
                body(c, i)
                outcomes["ok"] += 1
            except psycopg.Error as e:
                outcomes[e.sqlstate or "client"] += 1
            outcomes["ms"] = max(outcomes["ms"], round(1000 * (time.monotonic() - started)))
            i += 1
            if once:
                return


def simulate(c, i):
    rec, qid, _ = pairs[i % len(pairs)]
    c.execute("SELECT * FROM optidb.simulate(%s, %s, 'real')", (qid, rec)).fetchall()


def scan(c, _):
    c.execute("SELECT * FROM optidb.scan()").fetchall()


def busy(c, _):
    # The shape of an index build's work, without optidb: a full scan and sort of orders.
    c.execute("SELECT count(*) FROM (SELECT customer_id FROM orders ORDER BY customer_id) s")


def lock_sampler(stop, waits):
    with connect() as c:
        while not stop.is_set():
            row = c.execute(
                "SELECT count(*) FILTER (WHERE wait_event_type = 'Lock'), count(*), "
                "coalesce(max(extract(epoch FROM now() - query_start) * 1000) "
                "FILTER (WHERE wait_event_type = 'Lock'), 0) "
                "FROM pg_stat_activity WHERE application_name = 'pgbench' "
                "AND state = 'active'").fetchone()
            waits["lock"] += row[0]
            waits["active"] += row[1]
            waits["longest_ms"] = max(waits["longest_ms"], round(row[2]))
            time.sleep(0.01)


def offset(body, k):
    return lambda c, i: body(c, i + k)


def run(condition):
    stop = threading.Event()
    outcomes, waits = Counter(), Counter()
    bodies = {"alone": [], "control": [busy] * 4, "continuous": [simulate] * 3 + [scan],
              "burst": [simulate] * 3 + [scan]}[condition]
    once = condition == "burst"
    # Each session starts at another recommendation.
    threads = [threading.Thread(target=loop, args=(stop, offset(b, k), outcomes, once))
               for k, b in enumerate(bodies)]
    threads.append(threading.Thread(target=lock_sampler, args=(stop, waits)))
    for t in threads:
        t.start()
    time.sleep(1)
    out = subprocess.run(pgbench_cmd + ["-T", str(seconds)], capture_output=True, text=True,
                         check=True).stdout
    stop.set()
    for t in threads:
        t.join()
    tps = float(re.search(r"^tps = ([\d.]+)", out, re.M).group(1))
    latency = float(re.search(r"^latency average = ([\d.]+) ms", out, re.M).group(1))
    return tps, latency, outcomes, waits


conditions = ["alone", "burst", "continuous", "control"]
results = {c: [] for c in conditions}
totals = {c: Counter() for c in conditions}
lock_share = {c: [] for c in conditions}
for r in range(rounds):
    for k in range(len(conditions)):
        condition = conditions[(r + k) % len(conditions)]
        tps, latency, outcomes, waits = run(condition)
        results[condition].append((tps, latency))
        totals[condition].update({k: v for k, v in outcomes.items() if k != "ms"})
        totals[condition]["longest call ms"] = max(totals[condition]["longest call ms"],
                                                   outcomes["ms"])
        totals[condition]["longest lock wait ms"] = max(
            totals[condition]["longest lock wait ms"], waits["longest_ms"])
        lock_share[condition].append(waits["lock"] / max(waits["active"], 1))
        print(f"round {r + 1} {condition}: {tps:.1f} tps, {latency:.2f} ms mean latency, "
              f"background {dict(outcomes)}, longest lock wait {waits['longest_ms']} ms",
              flush=True)

med = {c: (statistics.median(t for t, _ in results[c]),
           statistics.median(l for _, l in results[c])) for c in conditions}
for c in conditions:
    print(f"{c:10s} median {med[c][0]:6.1f} tps ({med[c][0] / med['alone'][0]:.3f} of alone), "
          f"{med[c][1]:7.2f} ms mean latency; workload waiting on a lock in "
          f"{100 * statistics.median(lock_share[c]):.2f}% of samples; {dict(totals[c])}")
with connect() as c:
    deadlocks = c.execute("SELECT deadlocks FROM pg_stat_database "
                          "WHERE datname = current_database()").fetchone()[0]
print(f"deadlocks counted in this database since its statistics were reset: {deadlocks}")
