#!/usr/bin/env bash
# Benchmark (prints figures, asserts nothing): optidb.scan() over 100 distinct statements with
# generic plans for the top 20, warm, on the project cluster. Needs the cluster started
# (tests/scripts/cluster.sh start) and optidb installed (tests/scripts/install-extension.sh).
#   RUNS=15 tests/bench/scan_bench.sh
set -euo pipefail
. "$(dirname "$0")/../scripts/env.sh"
runs=${RUNS:-15}
db=optidb_bench

pg -d postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
pg -d "$db" -q <<'SQL'
CREATE EXTENSION pg_stat_statements;
CREATE EXTENSION optidb;
CREATE TABLE t1 AS SELECT g AS id, g % 100 AS a, md5(g::text) AS b FROM generate_series(1, 100000) g;
CREATE TABLE t2 AS SELECT g AS id, g % 7 AS a FROM generate_series(1, 50000) g;
ANALYZE t1, t2;
SELECT pg_stat_statements_reset();
SQL
# 100 statements with distinct shapes (an ARRAY of k columns), each run a few times.
{
    for k in $(seq 1 100); do
        cols=$(printf 't1.id,%.0s' $(seq 1 "$k"))
        echo "SELECT array_length(ARRAY[${cols%,}], 1) FROM t1 JOIN t2 USING (id) WHERE t1.a = $k AND t2.a = 3;"
    done
} >/tmp/optidb-bench-workload.sql
chmod a+r /tmp/optidb-bench-workload.sql
for _ in 1 2 3; do pg -d "$db" -q -o /dev/null -f /tmp/optidb-bench-workload.sql; done

pg -d "$db" -qAt -c "SELECT * FROM optidb.scan(100)" >/dev/null   # cold: first parse of each
echo "statements in pg_stat_statements: $(pg -d "$db" -qAt -c "SELECT count(*) FROM pg_stat_statements WHERE query LIKE 'SELECT array_length%'")"
times=$(for _ in $(seq 1 "$runs"); do
    pg -d "$db" -qAt -c "SET optidb.explain_top_k = 20" -c "SELECT round(elapsed_ms::numeric, 1) FROM optidb.scan(100)"
done | sort -n)
echo "scan(100) with explain_top_k = 20, warm, $runs runs (ms, sorted): $(echo $times)"
median=$(echo "$times" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
echo "median elapsed: ${median} ms (target < 500 ms)"
echo "last scan: $(pg -d "$db" -qAt -F ' ' -c "SELECT 'queries_seen=' || queries_seen, 'plans_captured=' || plans_captured, 'explain_failures=' || explain_failures FROM optidb.scan_log ORDER BY id DESC LIMIT 1")"
pg -d postgres -qc "DROP DATABASE $db WITH (FORCE)"
