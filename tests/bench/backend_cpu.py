"""Run one simple indexed SELECT `n` times as prepared top-level statements on one connection
and print the CPU time (utime+stime from /proc) its server backend spent per statement, in ns.
Only that backend is measured, so background processes and the client do not count.
Usage: backend_cpu.py PORT N"""

import os
import random
import sys

import psycopg

port, n = int(sys.argv[1]), int(sys.argv[2])
hz = os.sysconf("SC_CLK_TCK")


def ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


with psycopg.connect(host="/tmp", port=port, user="postgres", dbname="postgres",
                     autocommit=True, prepare_threshold=0) as conn:
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    ids = [random.randint(1, 100000) for _ in range(1000)]
    for i in range(1000):  # warm up: plan cached, entry created
        conn.execute("SELECT v FROM t WHERE id = %s", (ids[i],))
    before = ticks(pid)
    for i in range(n):
        conn.execute("SELECT v FROM t WHERE id = %s", (ids[i % 1000],))
    used = ticks(pid) - before
print(used * 1_000_000_000 // hz // n)
