#!/usr/bin/env bash
# Benchmark (prints figures, asserts nothing): CPU time per statement of a simple indexed
# SELECT, as the utime+stime (from /proc) of the backend running it, divided by statements, for
# three configurations measured interleaved in one run: no extension, pg_stat_statements only,
# pg_stat_statements + optidb. Then a contention run: many clients on one hot statement,
# sampling wait events. Builds and installs the release library first.
#   STATEMENTS=500000 ROUNDS=2 CLIENTS=16 tests/bench/overhead_bench.sh
set -euo pipefail
. "$(dirname "$0")/../scripts/env.sh"
statements=${STATEMENTS:-500000}
rounds=${ROUNDS:-2}
clients=${CLIENTS:-16}
"$OPTIDB_ROOT/tests/scripts/install-extension.sh" --release
export OPTIDB_PGDATA=/tmp/optidb-bench/data OPTIDB_PGPORT=55435
cluster="$OPTIDB_ROOT/tests/scripts/cluster.sh"
"$cluster" stop
rm -rf /tmp/optidb-bench
trap '"$cluster" stop' EXIT
"$cluster" start >/dev/null
pg -d postgres -q -c "CREATE TABLE t AS SELECT g AS id, g AS v FROM generate_series(1, 100000) g" \
    -c "ALTER TABLE t ADD PRIMARY KEY (id)" -c "ANALYZE t"
echo '\set id random(1, 100000)
SELECT v FROM t WHERE id = :id;' >/tmp/optidb-bench-select.sql
chmod a+r /tmp/optidb-bench-select.sql

configure() {
    sed -i "s/^shared_preload_libraries = .*/shared_preload_libraries = '$1'/" "$OPTIDB_PGDATA/postgresql.conf"
    "$cluster" restart >/dev/null 2>&1
}

declare -A ns
for config in none pgss optidb; do ns[$config]=0; done
for round in $(seq 1 "$rounds"); do
    for config in none pgss optidb; do
        case $config in
        none) configure "" ;;
        pgss) configure "pg_stat_statements" ;;
        optidb) configure "pg_stat_statements,optidb" ;;
        esac
        per=$("$OPTIDB_ROOT/target/venv/bin/python" "$OPTIDB_ROOT/tests/bench/backend_cpu.py" \
            "$OPTIDB_PGPORT" "$statements")
        echo "round $round $config: $per ns of backend CPU per statement"
        ns[$config]=$(( ${ns[$config]} + per ))
    done
done
none=$(( ${ns[none]} / rounds )); pgss=$(( ${ns[pgss]} / rounds )); opt=$(( ${ns[optidb]} / rounds ))
echo "mean backend CPU per statement: none=${none} ns, pg_stat_statements=${pgss} ns, pg_stat_statements+optidb=${opt} ns"
awk -v n="$none" -v p="$pgss" -v o="$opt" 'BEGIN {
    printf "ratios vs none: pg_stat_statements %.3f, pg_stat_statements+optidb %.3f\n", p / n, o / n;
    printf "added per statement: pg_stat_statements %+d ns, optidb on top %+d ns (target: <= 150 ns and < pg_stat_statements)\n", p - n, o - p }'

echo "contention: $clients clients on one hot statement for 15 s, wait events sampled every 10 ms"
as_postgres "$PGBIN/pgbench" -n -h "$OPTIDB_PGSOCKET" -p "$OPTIDB_PGPORT" -c "$clients" -j 2 -M prepared \
    -T 15 -f /tmp/optidb-bench-select.sql postgres >/dev/null &
bench=$!
sleep 1
pg -d postgres -q -c "CREATE TEMP TABLE waits (ev text)" -c "
DO \$\$ BEGIN
  FOR i IN 1..1200 LOOP
    INSERT INTO waits SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU')
    FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
      AND state = 'active';
    PERFORM pg_sleep(0.01);
  END LOOP; END \$\$" -c "SELECT ev AS wait_event, count(*) AS samples,
       round(100.0 * count(*) / sum(count(*)) OVER (), 1) AS pct
FROM waits GROUP BY ev ORDER BY samples DESC LIMIT 8"
wait $bench || true
