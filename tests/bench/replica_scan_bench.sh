#!/usr/bin/env bash
# Benchmark (prints figures, asserts nothing): the extra cost of a pass per registered read
# replica (issue 26). Starts its own primary and a streaming standby of it (pg_basebackup -R,
# optidb and pg_stat_statements preloaded on both), runs 100 distinct statements on each, then
# times optidb.snapshot() (what the worker runs every interval) with 0, 1 and 2 sources
# registered (the second is the same standby under another foreign server), interleaved in the
# same run; figures are ratios against the no-source pass of that run (this machine's speed
# swings too much for absolute times). Needs optidb installed (tests/scripts/install-extension.sh).
#   RUNS=15 BENCH_PORT=56160 tests/bench/replica_scan_bench.sh
set -euo pipefail
. "$(dirname "$0")/../scripts/env.sh"
. "$(dirname "$0")/lib.sh"
runs=${RUNS:-15}
port=${BENCH_PORT:-56160}
sport=$((port + 1))
base=/tmp/optidb-replica-bench
db=bench

export OPTIDB_PGDATA=$base/primary/data OPTIDB_PGPORT=$port
stop_all() {
    as_postgres "$PGBIN/pg_ctl" -D "$base/standby/data" -m fast -w stop >/dev/null 2>&1 || true
    "$OPTIDB_ROOT/tests/scripts/cluster.sh" stop
    rm -rf "$base"
}
stop_all
trap stop_all EXIT
"$OPTIDB_ROOT/tests/scripts/cluster.sh" start >/dev/null
printf 'wal_level = replica\nmax_wal_senders = 4\nhot_standby = on\n' >>"$OPTIDB_PGDATA/postgresql.conf"
"$OPTIDB_ROOT/tests/scripts/cluster.sh" restart >/dev/null
psql_p() { as_postgres "$PGBIN/psql" -X -v ON_ERROR_STOP=1 -h "$OPTIDB_PGSOCKET" -p "$1" "${@:2}"; }
psql_p "$port" -d postgres -qc "CREATE DATABASE $db"
psql_p "$port" -d "$db" -q <<SQL
CREATE EXTENSION pg_stat_statements; CREATE EXTENSION optidb; CREATE EXTENSION dblink;
CREATE TABLE t1 AS SELECT g AS id, g % 100 AS a FROM generate_series(1, 20000) g;
ANALYZE t1;
CREATE SERVER s1 FOREIGN DATA WRAPPER dblink_fdw OPTIONS (host '$OPTIDB_PGSOCKET', port '$sport', dbname '$db');
CREATE SERVER s2 FOREIGN DATA WRAPPER dblink_fdw OPTIONS (host '$OPTIDB_PGSOCKET', port '$sport', dbname '$db');
CREATE USER MAPPING FOR PUBLIC SERVER s1 OPTIONS (user 'postgres');
CREATE USER MAPPING FOR PUBLIC SERVER s2 OPTIONS (user 'postgres');
SQL
mkdir -p "$base/standby" && chown postgres "$base/standby"
as_postgres "$PGBIN/pg_basebackup" -h "$OPTIDB_PGSOCKET" -p "$port" -U postgres -D "$base/standby/data" -R -X stream -c fast
echo "port = $sport" >>"$base/standby/data/postgresql.conf"
as_postgres "$PGBIN/pg_ctl" -D "$base/standby/data" -l "$base/standby/server.log" -w start >/dev/null

{
    for k in $(seq 1 100); do
        cols=$(printf 'id,%.0s' $(seq 1 "$k"))
        echo "SELECT array_length(ARRAY[${cols%,}], 1) FROM t1 WHERE a = $k;"
    done
} >"$base/workload.sql"
chmod a+r "$base/workload.sql"
for p in "$port" "$sport"; do psql_p "$p" -d "$db" -q -o /dev/null -f "$base/workload.sql"; done

# The pass with n sources registered, after a little new work on each server.
pass() {
    local n=$1
    psql_p "$port" -d "$db" -qAt -o /dev/null \
        -c "DELETE FROM optidb.source" \
        -c "SELECT optidb.add_source('s' || i, 's' || i) FROM generate_series(1, $n) i" \
        -c "SELECT * FROM optidb.snapshot(100)"   # first pull of each: parse and file
    for p in "$port" "$sport"; do psql_p "$p" -d "$db" -q -o /dev/null -f "$base/workload.sql"; done
    psql_p "$port" -d "$db" -qAt -c "SELECT round(elapsed_ms::numeric, 2) FROM optidb.snapshot(100)"
}
psql_p "$port" -d "$db" -qAt -o /dev/null -c "SELECT * FROM optidb.snapshot(100)"
declare -A times
for _ in $(seq 1 "$runs"); do
    for n in 0 1 2; do times[$n]+="$(pass "$n") "; done
done
m0=$(echo "${times[0]}" | median)
echo "snapshot(100), 100 statements per server, warm, $runs interleaved runs each"
for n in 0 1 2; do
    m=$(echo "${times[$n]}" | median)
    echo "sources=$n: median ${m} ms, ratio to no source $(awk -v a="$m" -v b="$m0" 'BEGIN {printf "%.2f", a / b}') (runs: ${times[$n]})"
done
echo "source state: $(psql_p "$port" -d "$db" -qAt -F ' ' -c "SELECT name, state FROM optidb.source")"
