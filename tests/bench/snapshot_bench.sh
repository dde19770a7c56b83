#!/usr/bin/env bash
# Benchmark (prints figures, asserts nothing): optidb.snapshot() and optidb.scan() over about
# 2,000 pg_stat_statements entries (every entry is read and filed under its statement before
# the top ones are chosen), on the project cluster. Needs the cluster started
# (tests/scripts/cluster.sh start) and optidb installed (tests/scripts/install-extension.sh).
#   RUNS=9 tests/bench/snapshot_bench.sh
set -euo pipefail
. "$(dirname "$0")/../scripts/env.sh"
runs=${RUNS:-9}
db=optidb_snapshot_bench
workload=/tmp/optidb-snapshot-bench-workload.sql

pg -d postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
pg -d "$db" -q <<'SQL'
CREATE EXTENSION pg_stat_statements;
CREATE EXTENSION optidb;
DO $$
BEGIN
    FOR t IN 0..49 LOOP
        EXECUTE format('CREATE TABLE b_%s AS SELECT %s FROM generate_series(1, 100) g',
                       chr(97 + t / 26) || chr(97 + t % 26),
                       (SELECT string_agg(format('g AS c%s', c), ', ') FROM generate_series(0, 39) c));
    END LOOP;
END $$;
SQL
# 2,000 distinct statements: one column of one table each. Table names differ in letters:
# fingerprints ignore the digits of names (partitions), so b1 and b2 would be one statement.
letters=({a..z})
for t in $(seq 0 49); do
    for c in $(seq 0 39); do
        echo "SELECT c$c FROM b_${letters[t / 26]}${letters[t % 26]} WHERE c$c = $((t + c));"
    done
done >"$workload"
chmod a+r "$workload"
pg -d "$db" -qAt -c "SELECT pg_stat_statements_reset()" >/dev/null
pg -d "$db" -q -o /dev/null -f "$workload"
echo "entries in pg_stat_statements: $(pg -d "$db" -qAt -c "SELECT count(*) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database()")"

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
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
