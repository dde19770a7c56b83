"""Run a simple indexed SELECT as prepared top-level statements on one connection and print the
CPU time its server backend spent per statement, from /proc (only that backend is measured, so
background processes and this client do not count).

Statements are sent pipelined (psycopg's executemany: Bind/Execute per row, one Sync per
batch), so the backend is not woken once per statement: on a VM the socket round trip per
statement costs ~10x the statement itself in kernel time, and its noise would bury the
differences this benchmark is after. Every statement still runs as its own portal with its own
ExecutorStart/Run/Finish/End.

CPU time is read from /proc/PID/schedstat (nanoseconds on CPU, user and system together), not
from utime/stime, whose 10 ms ticks are too coarse for differences of a few percent.

Usage: backend_cpu.py PORT N   ->  prints the CPU ns per statement
       backend_cpu.py PORT N --pid  ->  prints the backend's pid instead (for valgrind runs)"""

import sys

import psycopg

port, n = int(sys.argv[1]), int(sys.argv[2])
SQL = "SELECT v FROM t WHERE id = %s"
# 1,000 fixed keys spread over the table: warmed up once, so every run does the same work.
KEYS = [((i * 7919) % 100000 + 1,) for i in range(1000)]


def cpu_ns(pid):
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


with psycopg.connect(host="/tmp", port=port, user="postgres", dbname="postgres",
                     autocommit=True, prepare_threshold=0) as conn:
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    cur = conn.cursor()
    cur.executemany(SQL, KEYS)  # warm up: plan cached, pages in shared buffers, entry created
    before = cpu_ns(pid)
    done = 0
    while done < n:
        batch = KEYS[: min(len(KEYS), n - done)]
        cur.executemany(SQL, batch)
        done += len(batch)
    used = cpu_ns(pid) - before
if "--pid" in sys.argv:
    print(pid)
else:
    print(used // n)
