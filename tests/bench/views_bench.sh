#!/usr/bin/env bash
# Benchmark (prints figures, asserts nothing), on the project cluster (tests/scripts/cluster.sh
# start, extension installed):
#   1. reading optidb.query_metrics for 5,000 statements while refreshes run back to back in
#      another session, against computing the same rows live from the history tables (the
#      materialized view's own defining query);
#   2. pgbench select-only throughput with refreshes running vs with a plain busy loop instead
#      (same CPU pressure), interleaved;
#   3. history storage per statement per day.
#   STATEMENTS=5000 HOURS=24 READS=30 PGBENCH_SECONDS=15 tests/bench/views_bench.sh
set -euo pipefail
. "$(dirname "$0")/../scripts/env.sh"
statements=${STATEMENTS:-5000}
hours=${HOURS:-24}
reads=${READS:-30}
pgbench_seconds=${PGBENCH_SECONDS:-15}
db=optidb_views_bench

pg -d postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
pg -d "$db" -q -v n="$statements" -v h="$hours" <<'SQL'
CREATE EXTENSION pg_stat_statements;
CREATE EXTENSION optidb;
INSERT INTO optidb.query (fingerprint, userid, dbid, kind, raw_sql, norm_sql)
SELECT 'bench' || g, 10, 1, 'select', 'SELECT ' || g, 'SELECT ' || g FROM generate_series(1, :n) g;
-- Hourly history per statement: ~30 non-empty buckets around 1-5 ms, and pgss deltas.
INSERT INTO optidb.latency (query_id, captured_at, calls, errors, sum_us, min_us, max_us, buckets, counts)
SELECT q.id, date_trunc('hour', now()) - h * interval '1 hour', 300, 1, 300 * 2500.0, 900.0, 6000.0,
       ARRAY(SELECT b FROM generate_series(350, 379) b), ARRAY(SELECT 10::int8 FROM generate_series(1, 30))
FROM optidb.query q, generate_series(0, :h - 1) h;
INSERT INTO optidb.metric (query_id, captured_at, calls, total_ms, mean_ms, rows, shared_blks_hit,
                           shared_blks_read, temp_blks_read, temp_blks_written)
SELECT q.id, date_trunc('hour', now()) - h * interval '1 hour', 300, 750.0, 2.5, 300, 3000, 30, 0, 0
FROM optidb.query q, generate_series(0, :h - 1) h;
ANALYZE optidb.latency, optidb.metric, optidb.query;
SELECT * FROM optidb.refresh();
SQL
echo "history: $(pg -d "$db" -qAtc "SELECT count(*) FROM optidb.latency") latency rows, $statements statements x $hours hours"

# Refreshes back to back (of one view, or all) in the background until killed.
refresher() {
    local view=${1:-NULL}
    while :; do pg -d "$db" -qAtc "SELECT count(*) FROM optidb.refresh($view)" >/dev/null 2>&1 || true; done
}

echo "1. reading all $statements rows of optidb.query_metrics ($reads reads, 50 ms apart) while it is refreshed concurrently, back to back:"
refresher "'mv_query_metrics'" &
bg=$!
sleep 1
pg -d "$db" -q -P pager=off -v reads="$reads" <<'SQL'
CREATE TEMP TABLE t (what text, ms float8);
SET bench.reads = :'reads';
DO $$
DECLARE t0 timestamptz; live text := pg_get_viewdef('optidb.mv_query_metrics');
BEGIN
  FOR i IN 1..current_setting('bench.reads', true)::int LOOP
    t0 := clock_timestamp();
    PERFORM * FROM optidb.query_metrics;
    INSERT INTO t VALUES ('query_metrics (materialized)', extract(epoch FROM clock_timestamp() - t0) * 1000);
    PERFORM pg_sleep(0.05);
  END LOOP;
  FOR i IN 1..5 LOOP
    t0 := clock_timestamp();
    EXECUTE 'SELECT count(*) FROM (' || rtrim(live, ';') || ') s';
    INSERT INTO t VALUES ('same rows computed live from history', extract(epoch FROM clock_timestamp() - t0) * 1000);
  END LOOP;
END $$;
SELECT what, count(*) AS runs, round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 2) AS median_ms,
       round(max(ms)::numeric, 2) AS max_ms
FROM t GROUP BY what ORDER BY what;
SELECT round((SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) FROM t WHERE what LIKE 'same%')::numeric
           / (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) FROM t WHERE what LIKE 'query%')::numeric, 1)
       AS speedup_x, '(target: materialized read < 10 ms)' AS note;
SELECT count(*) AS refreshes_of_query_metrics_meanwhile, round(avg(duration_ms)::numeric) AS avg_refresh_ms
FROM optidb.refresh_log WHERE view_name = 'mv_query_metrics' AND concurrent;
SQL
kill "$bg" 2>/dev/null || true
wait "$bg" 2>/dev/null || true

echo "2. pgbench -S throughput (1 client, ${pgbench_seconds}s per run), runs without and with refreshes alternating:"
as_postgres "$PGBIN/pgbench" -i -q -s 5 -h "$OPTIDB_PGSOCKET" -p "$OPTIDB_PGPORT" "$db" >/dev/null 2>&1
tps() {
    as_postgres "$PGBIN/pgbench" -n -S -M prepared -c 1 -T "$pgbench_seconds" -h "$OPTIDB_PGSOCKET" \
        -p "$OPTIDB_PGPORT" "$db" 2>/dev/null | awk '/^tps/ {print int($3)}'
}
tps >/dev/null # warm the cache
ratios=()
# A busy process runs during the runs without refreshes too: on these VMs an idle second core
# changes pgbench's wake-up latency more than any refresh does.
spinner() { while :; do :; done; }
for round in 1 2 3 4; do
    spinner &
    bg=$!
    off=$(tps)
    kill "$bg" 2>/dev/null || true
    wait "$bg" 2>/dev/null || true
    refresher &
    bg=$!
    on=$(tps)
    kill "$bg" 2>/dev/null || true
    wait "$bg" 2>/dev/null || true
    ratio=$(awk -v a="$on" -v b="$off" 'BEGIN { printf "%.3f", a / b }')
    echo "   round $round: $off tps without refreshes, $on tps with refreshes running (ratio $ratio)"
    ratios+=("$ratio")
done
printf '%s\n' "${ratios[@]}" | sort -n | awk '{ r[NR] = $1 } END {
    printf "   median throughput ratio with/without refreshes: %.3f\n", (r[2] + r[3]) / 2 }'

echo "3. storage per statement per day (history rows as stored here, indexes included):"
pg -d "$db" -q -P pager=off <<'SQL'
SELECT t AS table_name, n AS rows,
       round(pg_total_relation_size(('optidb.' || t)::regclass)::numeric / n) AS bytes_per_row,
       pg_size_pretty(round(pg_total_relation_size(('optidb.' || t)::regclass)::numeric / n * 1440)) AS per_statement_day_at_60s_snapshots,
       pg_size_pretty(round(pg_total_relation_size(('optidb.' || t)::regclass)::numeric / n * 24)) AS per_statement_day_hourly
FROM (VALUES ('latency', (SELECT count(*) FROM optidb.latency)), ('metric', (SELECT count(*) FROM optidb.metric))) v(t, n);
SQL
pg -d postgres -qc "DROP DATABASE $db WITH (FORCE)"
