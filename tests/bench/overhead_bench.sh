#!/usr/bin/env bash
# Benchmark (prints figures, asserts nothing): what recording execution times costs a statement.
# A simple indexed SELECT (prepared, by primary key) runs under three configurations of one
# cluster: no extension, pg_stat_statements only, pg_stat_statements + optidb.
#  1. CPU time: user+system time of the backend running the statements (/proc/PID/schedstat),
#     per statement, in ROUNDS interleaved rounds of STATEMENTS statements per configuration
#     (the order rotates each round); the added cost is the median of per-round differences.
#  2. Instructions (when valgrind is installed): the backend's instructions per statement,
#     counted by cachegrind as the difference between a 1,000 and an 11,000 statement session,
#     so connection costs cancel. Deterministic, unlike time on a shared VM.
#  3. Contention: CLIENTS backends on one hot statement; wait events sampled every 10 ms.
#   STATEMENTS=150000 ROUNDS=12 CLIENTS=16 PARTS="cpu instructions contention" \
#       tests/bench/overhead_bench.sh
set -euo pipefail
. "$(dirname "$0")/../scripts/env.sh"
statements=${STATEMENTS:-150000}
rounds=${ROUNDS:-12}
parts=${PARTS:-cpu instructions contention}
clients=${CLIENTS:-16}
python="$OPTIDB_ROOT/target/venv/bin/python"
client="$OPTIDB_ROOT/tests/bench/backend_cpu.py"
"$OPTIDB_ROOT/tests/scripts/install-extension.sh" --release
export OPTIDB_PGDATA=/tmp/optidb-bench/data OPTIDB_PGPORT=55435
cluster="$OPTIDB_ROOT/tests/scripts/cluster.sh"
"$cluster" stop
rm -rf /tmp/optidb-bench
work=$(mktemp -d /tmp/optidb-overhead.XXXXXX)
chmod 777 "$work"
trap '"$cluster" stop; rm -rf "$work"' EXIT
"$cluster" start >/dev/null
pg -d postgres -q -c "CREATE TABLE t AS SELECT g AS id, g AS v FROM generate_series(1, 100000) g" \
    -c "ALTER TABLE t ADD PRIMARY KEY (id)" -c "ANALYZE t"
"$cluster" stop

configs=(none pgss optidb)
libraries() {
    case $1 in
    none) echo "" ;;
    pgss) echo "pg_stat_statements" ;;
    optidb) echo "pg_stat_statements,optidb" ;;
    esac
}
configure() {
    sed -i "s/^shared_preload_libraries = .*/shared_preload_libraries = '$(libraries "$1")'/" \
        "$OPTIDB_PGDATA/postgresql.conf"
}

want() { [[ " $parts " == *" $1 "* ]]; }

want cpu && echo "== CPU time: $rounds rounds x $statements statements per configuration, interleaved"
want cpu && for round in $(seq 1 "$rounds"); do
    for i in 0 1 2; do
        config=${configs[$(((round + i) % 3))]}
        configure "$config"
        "$cluster" start >/dev/null 2>&1
        ns=$("$python" "$client" "$OPTIDB_PGPORT" "$statements")
        "$cluster" stop
        echo "round $round $config: $ns ns of backend CPU per statement"
        echo "$round $config $ns" >>"$work/cpu"
    done
done

if ! want instructions; then
    :
elif command -v valgrind >/dev/null; then
    echo "== instructions per statement (cachegrind)"
    for config in "${configs[@]}"; do
        configure "$config"
        as_postgres valgrind --tool=cachegrind --cache-sim=no \
            --cachegrind-out-file="$work/cg.%p" --log-file="$work/valgrind.%p" \
            "$PGBIN/postgres" -D "$OPTIDB_PGDATA" >"$work/postmaster.log" 2>&1 &
        for _ in $(seq 120); do
            "$PGBIN/pg_isready" -q -h "$OPTIDB_PGSOCKET" -p "$OPTIDB_PGPORT" && break
            sleep 1
        done
        "$python" "$client" "$OPTIDB_PGPORT" 1000 >/dev/null # first session: caches, init file
        for n in 1000 11000; do
            pid=$("$python" "$client" "$OPTIDB_PGPORT" "$n" --pid)
            # cachegrind writes the file as the backend exits: wait for its last line.
            for _ in $(seq 240); do grep -q '^summary:' "$work/cg.$pid" 2>/dev/null && break; sleep 0.5; done
            echo "$config $n $(awk '/^summary:/ {print $2}' "$work/cg.$pid")" >>"$work/instructions"
        done
        as_postgres "$PGBIN/pg_ctl" -D "$OPTIDB_PGDATA" -m fast -w stop >/dev/null
    done
else
    echo "== instructions per statement: skipped (valgrind not installed)"
fi

"$python" - "$work" <<'PY'
import os, statistics, sys
work = sys.argv[1]
if os.path.exists(f"{work}/cpu"):
    cpu = {}
    for line in open(f"{work}/cpu"):
        r, config, ns = line.split()
        cpu.setdefault(config, {})[int(r)] = int(ns)
    rounds = sorted(cpu["none"])
    med = {c: statistics.median(cpu[c].values()) for c in cpu}
    print(f"median backend CPU per statement: none {med['none']:.0f} ns, "
          f"pg_stat_statements {med['pgss']:.0f} ns, pg_stat_statements+optidb {med['optidb']:.0f} ns")
    print(f"ratios vs none: pg_stat_statements {med['pgss'] / med['none']:.3f}, "
          f"pg_stat_statements+optidb {med['optidb'] / med['none']:.3f}")
    d_pgss = [cpu["pgss"][r] - cpu["none"][r] for r in rounds]
    d_opt = [cpu["optidb"][r] - cpu["pgss"][r] for r in rounds]
    print("added per statement (median of per-round differences, range): "
          f"pg_stat_statements {statistics.median(d_pgss):+.0f} ns ({min(d_pgss):+d}..{max(d_pgss):+d}), "
          f"optidb on top {statistics.median(d_opt):+.0f} ns ({min(d_opt):+d}..{max(d_opt):+d})")
    print("target: optidb adds <= 150 ns and less than pg_stat_statements adds")
if os.path.exists(f"{work}/instructions"):
    counts = {}
    for line in open(f"{work}/instructions"):
        config, n, total = line.split()
        counts.setdefault(config, {})[int(n)] = int(total)
    per = {c: (v[11000] - v[1000]) / 10000 for c, v in counts.items()}
    print(f"instructions per statement: none {per['none']:.0f}, pg_stat_statements {per['pgss']:.0f}, "
          f"pg_stat_statements+optidb {per['optidb']:.0f} -> pg_stat_statements adds "
          f"{per['pgss'] - per['none']:+.0f}, optidb on top {per['optidb'] - per['pgss']:+.0f}")
PY

want contention || exit 0
echo "== contention: $clients clients on one hot statement for 15 s, wait events sampled every 10 ms"
configure optidb
"$cluster" start >/dev/null
echo '\set id random(1, 100000)
SELECT v FROM t WHERE id = :id;' >"$work/select.sql"
chmod a+r "$work/select.sql"
as_postgres "$PGBIN/pgbench" -n -h "$OPTIDB_PGSOCKET" -p "$OPTIDB_PGPORT" -c "$clients" -j 2 -M prepared \
    -T 15 -f "$work/select.sql" postgres >"$work/pgbench.log" 2>&1 &
bench=$!
sleep 1
pg -d postgres -q -c "CREATE TEMP TABLE waits (ev text)" -c "
DO \$\$ BEGIN
  FOR i IN 1..1200 LOOP
    PERFORM pg_stat_clear_snapshot();  -- else one transaction sees one snapshot throughout
    INSERT INTO waits SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU')
    FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
      AND state = 'active';
    PERFORM pg_sleep(0.01);
  END LOOP; END \$\$" -c "SELECT ev AS wait_event, count(*) AS samples,
       round(100.0 * count(*) / sum(count(*)) OVER (), 1) AS pct
FROM waits GROUP BY ev ORDER BY samples DESC LIMIT 8"
wait $bench || true
grep -E "^tps|error|FATAL" "$work/pgbench.log" || cat "$work/pgbench.log"
