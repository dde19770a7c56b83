#!/usr/bin/env bash
# Benchmark (prints figures, asserts nothing): optidb.snapshot() and optidb.scan() over about
# 2,000 pg_stat_statements entries (every entry is read and filed under its statement before
# the top ones are chosen), on the project cluster. Needs the cluster started
# (tests/scripts/cluster.sh start) and optidb installed (tests/scripts/install-extension.sh).
#   RUNS=9 tests/bench/snapshot_bench.sh
set -euo pipefail
. "$(dirname "$0")/../scripts/env.sh"
. "$(dirname "$0")/lib.sh"
runs=${RUNS:-9}
db=optidb_snapshot_bench
workload=/tmp/optidb-snapshot-bench-workload.sql

pg -d postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
pg -d "$db" -q -c "CREATE EXTENSION pg_stat_statements" -c "CREATE EXTENSION optidb"
make_column_tables "$db" 50 100
# 2,000 distinct statements: one column of one table each.
write_column_workload 50 "$workload"
pg -d "$db" -qAt -c "SELECT pg_stat_statements_reset()" >/dev/null
pg -d "$db" -q -o /dev/null -f "$workload"
echo "entries in pg_stat_statements: $(pg -d "$db" -qAt -c "SELECT count(*) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database()")"

# Cold: every entry is new (parsed and filed once).
echo "snapshot() cold: $(pg -d "$db" -qAt -c "SELECT round(elapsed_ms::numeric, 1) FROM optidb.snapshot()") ms"
# Warm: a tenth of the statements ran again since the previous pass.
head -200 "$workload" >"$workload.part"
chmod a+r "$workload.part"
snap=$(for _ in $(seq 1 "$runs"); do
    pg -d "$db" -q -o /dev/null -f "$workload.part"
    pg -d "$db" -qAt -c "SELECT round(elapsed_ms::numeric, 1) FROM optidb.snapshot()"
done)
echo "snapshot() warm, $runs runs (ms, sorted): $(echo $(echo "$snap" | sort -n)); median $(echo "$snap" | median)"
scan=$(for _ in $(seq 1 "$runs"); do
    pg -d "$db" -q -o /dev/null -f "$workload.part"
    pg -d "$db" -qAt -c "SELECT round(elapsed_ms::numeric, 1) FROM optidb.scan()"
done)
echo "scan() warm, $runs runs (ms, sorted): $(echo $(echo "$scan" | sort -n)); median $(echo "$scan" | median)"
echo "statements filed: $(pg -d "$db" -qAt -c "SELECT count(*) FROM optidb.query")"
echo "last pass: $(pg -d "$db" -qAt -F ' ' -c "SELECT 'queries_seen=' || queries_seen, 'plans_captured=' || plans_captured FROM optidb.scan_log ORDER BY id DESC LIMIT 1")"
pg -d postgres -qc "DROP DATABASE $db WITH (FORCE)"
rm -f "$workload" "$workload.part"
