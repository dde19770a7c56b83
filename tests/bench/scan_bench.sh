#!/usr/bin/env bash
# Benchmark (prints figures, asserts nothing): optidb.scan() over 100 distinct statements with
# generic plans for the top 20, warm, on the project cluster, run by one role and by 50 roles
# (two statements each), with warm replay workers (optidb.replay_workers = 2, "after") and with
# a worker started per replay batch (optidb.replay_workers = 0, the 0.6.0 path, "before"), all
# in the same run. Needs the cluster started (tests/scripts/cluster.sh start) and optidb
# installed (tests/scripts/install-extension.sh --release for figures to quote).
#   RUNS=15 tests/bench/scan_bench.sh
set -euo pipefail
. "$(dirname "$0")/../scripts/env.sh"
. "$(dirname "$0")/lib.sh"
runs=${RUNS:-15}
owners=50

# 100 statements with distinct shapes (an ARRAY of k columns), statement k in file k.
mkdir -p /tmp/optidb-bench-workload
for k in $(seq 1 100); do
    cols=$(printf 't1.id,%.0s' $(seq 1 "$k"))
    echo "SELECT array_length(ARRAY[${cols%,}], 1) FROM t1 JOIN t2 USING (id) WHERE t1.a = $k AND t2.a = 3;"
done | split -l 1 -d -a 3 - /tmp/optidb-bench-workload/q
chmod -R a+rX /tmp/optidb-bench-workload
cat /tmp/optidb-bench-workload/q* >/tmp/optidb-bench-workload.sql
chmod a+r /tmp/optidb-bench-workload.sql

for i in $(seq 1 $owners); do
    pg -d postgres -qc "DO \$\$ BEGIN CREATE ROLE bench_owner_$i LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END \$\$"
done

# setup DB OWNERS: the tables, and the 100 statements run 3 times by OWNERS roles (1: postgres).
setup() {
    local db=$1 n=$2
    pg -d postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
    pg -d "$db" -q <<'SQL'
CREATE EXTENSION pg_stat_statements;
CREATE EXTENSION optidb;
CREATE TABLE t1 AS SELECT g AS id, g % 100 AS a, md5(g::text) AS b FROM generate_series(1, 100000) g;
CREATE TABLE t2 AS SELECT g AS id, g % 7 AS a FROM generate_series(1, 50000) g;
ANALYZE t1, t2;
GRANT SELECT ON t1, t2 TO PUBLIC;
-- This database's entries only: a reset of all would empty the other benchmark database's.
SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database WHERE datname = current_database()), 0);
SQL
    for _ in 1 2 3; do
        if [ "$n" = 1 ]; then
            pg -d "$db" -q -o /dev/null -f /tmp/optidb-bench-workload.sql
        else
            # Role i runs statements 2i-1 and 2i.
            for i in $(seq 1 "$n"); do
                cat /tmp/optidb-bench-workload/q"$(printf %03d $((2 * i - 2)))" \
                    /tmp/optidb-bench-workload/q"$(printf %03d $((2 * i - 1)))" |
                    pg -d "$db" -U "bench_owner_$i" -q -o /dev/null
            done
        fi
    done
    pg -d "$db" -qAt -c "SELECT * FROM optidb.scan(100)" >/dev/null # cold: first parse of each
    echo "$db: statements in pg_stat_statements: $(pg -d "$db" -qAt -c "SELECT count(*) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database() AND query LIKE 'SELECT array_length%'"), roles: $(pg -d "$db" -qAt -c "SELECT count(DISTINCT userid) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database() AND query LIKE 'SELECT array_length%'")"
}

# median DB WORKERS: the median elapsed ms of RUNS warm scans (interleaved by the caller).
declare -A samples
measure() {
    local db=$1 workers=$2
    # One scan to warm the replay workers (or not) at this setting.
    pg -d "$db" -qAt -c "SET optidb.replay_workers = $workers" -c "SELECT 1 FROM optidb.scan(100)" >/dev/null
    samples[$db/$workers]+=" $(pg -d "$db" -qAt -c "SET optidb.replay_workers = $workers" \
        -c "SET optidb.explain_top_k = 20" -c "SELECT round(elapsed_ms::numeric, 1) FROM optidb.scan(100)")"
}

setup optidb_bench 1
setup optidb_bench50 $owners
for _ in $(seq 1 "$runs"); do
    for db in optidb_bench optidb_bench50; do
        for workers in 0 2; do measure "$db" "$workers"; done
    done
done
for db in optidb_bench optidb_bench50; do
    for workers in 0 2; do
        echo "$db replay_workers=$workers scan(100) ms, $runs runs: $(echo ${samples[$db/$workers]} | tr ' ' '\n' | sort -n | tr '\n' ' ')"
    done
done
b1=$(echo "${samples[optidb_bench/0]}" | median)
b50=$(echo "${samples[optidb_bench50/0]}" | median)
a1=$(echo "${samples[optidb_bench/2]}" | median)
a50=$(echo "${samples[optidb_bench50/2]}" | median)
echo "median scan(100), explain_top_k = 20:"
echo "  before (a worker per batch, replay_workers = 0): 1 owner ${b1} ms, $owners owners ${b50} ms, ratio $(echo "scale=2; $b50 / $b1" | bc)"
echo "  after  (warm workers,       replay_workers = 2): 1 owner ${a1} ms, $owners owners ${a50} ms, ratio $(echo "scale=2; $a50 / $a1" | bc) (target <= 1.5)"
echo "  $owners owners, after / before: $(echo "scale=2; $a50 / $b50" | bc)"
for db in optidb_bench optidb_bench50; do
    echo "$db last scan: $(pg -d "$db" -qAt -F ' ' -c "SELECT 'queries_seen=' || queries_seen, 'plans_captured=' || plans_captured, 'explain_failures=' || explain_failures FROM optidb.scan_log ORDER BY id DESC LIMIT 1")"
done
pg -d postgres -qc "DROP DATABASE optidb_bench WITH (FORCE)" -c "DROP DATABASE optidb_bench50 WITH (FORCE)"
for i in $(seq 1 $owners); do pg -d postgres -qc "DROP ROLE IF EXISTS bench_owner_$i"; done
