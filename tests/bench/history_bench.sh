#!/usr/bin/env bash
# Benchmark (prints figures, asserts nothing): history for every statement (issue 27, part 3).
# 5,000 statements, each run every minute for 30 days, with the history stored the 0.7.0 way
# (every statement that ran, compacted: src/postgres/compaction.rs) against a baseline in
# the same run: the layout the earlier report() figures were measured on
# (tests/bench/report_bench.sh: the metric deltas of all 5,000 every hour, latency histograms
# every hour for the 100 busiest and daily for the others).
#
# How the 30 days are made: the 5,000 statements really run and a real snapshot() files them;
# their 30 days of history are then inserted as compaction leaves them just before its hourly
# pass (synthetic rows, each statement ran every minute): one row a minute since the start of
# the hour before the last complete one (2-3 hours), one row an hour back to 7 days, one a day
# back to 30 days. Latency histograms of all 5,000 need optidb.max_statements >= 5000 (default
# 1000: the least used are evicted); the script prints the setting. The snapshot
# figures are real passes over the 5,000 entries of pg_stat_statements: every statement ran
# again (worst case), or 100 of them (what a top-100 pass recorded); and the one pass an hour
# that also compacts the hour just passed (300,000 rows of each table into 5,000).
#
# Needs the project's cluster (tests/scripts/cluster.sh start) and optidb installed
# (tests/scripts/install-extension.sh --release for figures to compare).
#   RUNS=5 tests/bench/history_bench.sh
set -euo pipefail
. "$(dirname "$0")/../scripts/env.sh"
. "$(dirname "$0")/lib.sh"
runs=${RUNS:-5}
db=optidb_history_bench
base=optidb_history_bench_baseline
workload=/tmp/optidb-history-bench-workload.sql

for d in "$db" "$base"; do
    pg -d postgres -qc "DROP DATABASE IF EXISTS $d WITH (FORCE)" -c "CREATE DATABASE $d"
    pg -d "$d" -q -c "CREATE EXTENSION pg_stat_statements" -c "CREATE EXTENSION optidb"
done
make_column_tables "$db" 125 10
# 5,000 distinct statements: one column of one table each (names differ in letters:
# fingerprints ignore digits of names).
write_column_workload 125 "$workload"
head -100 "$workload" >"$workload.100"
chmod a+r "$workload" "$workload.100"
pg -d "$db" -qAt -c "SELECT pg_stat_statements_reset()" >/dev/null
pg -d "$db" -q -o /dev/null -f "$workload"
echo "optidb.max_statements: $(pg -d "$db" -qAt -c "SHOW optidb.max_statements")"
echo "snapshot() cold (5,000 statements filed): $(pg -d "$db" -qAt -c "SELECT round(elapsed_ms::numeric, 1) FROM optidb.snapshot()") ms"
echo "statements with history after it: $(pg -d "$db" -qAt -c "SELECT count(DISTINCT query_id) FROM optidb.latency")"

log "generating 30 days of compacted history (a few minutes)"
pg -d "$db" -q <<'SQL'
-- Stamps as compaction leaves them (src/postgres/compaction.rs): per minute since the start of
-- the hour before the last one, per hour back to 7 days, per day back to 30 days.
CREATE TEMP TABLE stamps AS
WITH h AS (SELECT date_trunc('hour', now() - interval '1 hour', 'UTC') AS h,
                  date_trunc('day', now() - interval '7 days', 'UTC') AS d)
SELECT t AS at, 1 AS minutes FROM h, generate_series(h.h - interval '1 hour',
                                                      now() - interval '1 minute',
                                                      interval '1 minute') t
UNION ALL
SELECT t, 60 FROM h, generate_series(h.d, h.h - interval '2 hours', interval '1 hour') t
UNION ALL
SELECT t, 1440 FROM h, generate_series(h.d - interval '23 days', h.d - interval '1 day',
                                       interval '1 day') t;
DELETE FROM optidb.metric;
DELETE FROM optidb.latency;
-- Rows written by hand: the per-day rollup is built again by the next passes (rollup.rs).
DELETE FROM optidb.latency_day;
INSERT INTO optidb.metric (query_id, captured_at, calls, total_ms, mean_ms, rows, shared_blks_hit,
                           shared_blks_read, temp_blks_read, temp_blks_written)
SELECT q.id, s.at, s.minutes, s.minutes * (1 + q.id % 50) * 0.1, (1 + q.id % 50) * 0.1,
       s.minutes, 10 * s.minutes, s.minutes / 10, 0, 0
FROM optidb.query q, stamps s;
INSERT INTO optidb.latency (query_id, captured_at, calls, errors, sum_us, min_us, max_us,
                            buckets, counts)
SELECT q.id, s.at, 10 * s.minutes, 0, 10 * s.minutes * (100.0 + q.id % 50 * 10), 50.0, 9000.0,
       ARRAY(SELECT b FROM generate_series(300 + q.id % 20, 359 + q.id % 20, 6) b),
       array_fill(s.minutes::int8, ARRAY[10])
FROM optidb.query q, stamps s;
ANALYZE optidb.metric;
ANALYZE optidb.latency;
SELECT count(*) FROM optidb.refresh();
SQL

# The per-day rollup (src/postgres/latency/rollup.rs), as an upgrade builds it: the first pass
# starts it with today's rows (under the snapshot lock), the next one builds the older days
# (under the compaction lock only).
echo "rollup: first pass (today's rows) $(pg -d "$db" -qAt -c "SELECT round(elapsed_ms::numeric, 1) FROM optidb.snapshot()") ms, second pass (the 29 older days) $(pg -d "$db" -qAt -c "SELECT round(elapsed_ms::numeric, 1) FROM optidb.snapshot()") ms; $(pg -d "$db" -qAt -c "SELECT count(*) || ' rows, ' || round(pg_total_relation_size('optidb.latency_day') / 1048576.0, 1) || ' MB' FROM optidb.latency_day")"
pg -d "$db" -q -c "ANALYZE optidb.latency_day"

log "generating the baseline (report_bench.sh's layout)"
insert_report_history "$base"
pg -d "$base" -q <<'SQL'
ANALYZE optidb.metric;
ANALYZE optidb.latency;
SELECT count(*) FROM optidb.refresh();
SQL

for d in "$base" "$db"; do
    echo "$d: $(pg -d "$d" -qAt -c "SELECT (SELECT count(DISTINCT query_id) FROM optidb.latency) || ' statements with latency history, ' || (SELECT count(*) FROM optidb.metric) || ' metric rows, ' || (SELECT count(*) FROM optidb.latency) || ' latency rows, ' || (SELECT count(*) FROM optidb.latency_day) || ' latency_day rows, ' || round((pg_total_relation_size('optidb.metric') + pg_total_relation_size('optidb.latency') + pg_total_relation_size('optidb.latency_day')) / 1048576.0, 1) || ' MB (the three tables with indexes)'")"
done

# Readers: the median of $runs runs each, in each database.
for d in "$base" "$db"; do
    pg -d "$d" -q -P pager=off -v runs="$runs" -v label="$d" <<'SQL'
SET bench.runs = :'runs';
CREATE TEMP TABLE t (what text, ms float8);
DO $$
DECLARE t0 timestamptz; one bigint := (SELECT min(query_id) FROM optidb.latency);
BEGIN
  FOR i IN 1..current_setting('bench.runs', true)::int LOOP
    t0 := clock_timestamp();
    PERFORM length(optidb.report());
    INSERT INTO t VALUES ('report() (7 days)', extract(epoch FROM clock_timestamp() - t0) * 1000);
    t0 := clock_timestamp();
    PERFORM length(optidb.report(days => 30));
    INSERT INTO t VALUES ('report(days => 30)', extract(epoch FROM clock_timestamp() - t0) * 1000);
    t0 := clock_timestamp();
    PERFORM * FROM optidb.execution_time_stats(one);
    INSERT INTO t VALUES ('execution_time_stats(one statement, 30 days)', extract(epoch FROM clock_timestamp() - t0) * 1000);
    t0 := clock_timestamp();
    PERFORM * FROM optidb.execution_time_stats(one, now() - interval '2 hours', now() - interval '1 hour');
    INSERT INTO t VALUES ('execution_time_stats(one statement, one hour)', extract(epoch FROM clock_timestamp() - t0) * 1000);
    t0 := clock_timestamp();
    PERFORM count(*) FROM optidb.execution_time_stats();
    INSERT INTO t VALUES ('execution_time_stats() (every statement, 30 days)', extract(epoch FROM clock_timestamp() - t0) * 1000);
  END LOOP;
END $$;
SELECT :'label' AS db, what, count(*) AS runs,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1) AS median_ms,
       round(max(ms)::numeric, 1) AS max_ms
FROM t GROUP BY what ORDER BY what;
SQL
done

# Snapshots over the 5,000 entries of pg_stat_statements, on the 30 days of history.
snap() { pg -d "$db" -qAt -c "SELECT round(elapsed_ms::numeric, 1) FROM optidb.snapshot()"; }
all=$(for _ in $(seq 1 "$runs"); do pg -d "$db" -q -o /dev/null -f "$workload"; snap; done)
echo "snapshot(), every statement ran again, $runs runs (ms, sorted): $(echo $(echo "$all" | sort -n)); median $(echo "$all" | median)"
some=$(for _ in $(seq 1 "$runs"); do pg -d "$db" -q -o /dev/null -f "$workload.100"; snap; done)
echo "baseline: snapshot(), 100 statements ran, $runs runs (ms, sorted): $(echo $(echo "$some" | sort -n)); median $(echo "$some" | median)"
# The pass an hour that compacts the hour just passed: the passes above compacted it already
# (each pass looks one hour further back than the previous pass), so that hour gets its rows a
# minute again (every statement, as the snapshots of that hour would have left them), and the
# previous pass is made to look as if it ran in the hour before (this one crosses the boundary).
pg -d "$db" -q <<'SQL'
INSERT INTO optidb.latency (query_id, captured_at, calls, errors, sum_us, min_us, max_us,
                            buckets, counts)
SELECT q.id, date_trunc('hour', now() - interval '2 hours', 'UTC') + m * interval '1 minute',
       10, 0, 10 * (100.0 + q.id % 50 * 10), 50.0, 9000.0,
       ARRAY(SELECT b FROM generate_series(300 + q.id % 20, 359 + q.id % 20, 6) b),
       array_fill(1::int8, ARRAY[10])
FROM optidb.query q, generate_series(1, 59) m;
INSERT INTO optidb.metric (query_id, captured_at, calls, total_ms, mean_ms, rows, shared_blks_hit,
                           shared_blks_read, temp_blks_read, temp_blks_written)
SELECT q.id, date_trunc('hour', now() - interval '2 hours', 'UTC') + m * interval '1 minute',
       1, (1 + q.id % 50) * 0.1, (1 + q.id % 50) * 0.1, 1, 10, 0, 0, 0
FROM optidb.query q, generate_series(1, 59) m;
SQL
pg -d "$db" -q -o /dev/null -f "$workload"
pg -d "$db" -qAt -c "UPDATE optidb.scan_log SET started_at = date_trunc('hour', now() - interval '1 hour', 'UTC') + interval '1 minute' WHERE id = (SELECT max(id) FROM optidb.scan_log)" >/dev/null
before=$(pg -d "$db" -qAt -c "SELECT count(*) FROM optidb.latency")
# While it runs, another session waits for the snapshot lock as a concurrent snapshot() would
# (its first wait), again and again: the longest wait it sees.
probe() {
    pg -d "$db" -qAt <<'SQL' | grep -E '^[0-9.]+$'
BEGIN;
SET LOCAL lock_timeout = '600s';
SELECT clock_timestamp() AS t0 \gset
SELECT 1 AS locked FROM optidb.job_lock WHERE name = 'snapshot' FOR UPDATE \gset
SELECT round((extract(epoch FROM clock_timestamp() - :'t0'::timestamptz) * 1000)::numeric, 1);
ROLLBACK;
SQL
}
snap >/tmp/optidb-history-bench-pass &
pass=$!
waits=""
sleep 0.2
while kill -0 "$pass" 2>/dev/null; do waits="$waits $(probe)"; sleep 0.1; done
wait "$pass"
echo "snapshot() that compacts an hour (every statement ran): $(cat /tmp/optidb-history-bench-pass) ms; latency rows $before -> $(pg -d "$db" -qAt -c "SELECT count(*) FROM optidb.latency")"
echo "snapshot lock waits seen meanwhile ($(echo $waits | wc -w) tries, ms, sorted): $(echo $(echo $waits | tr ' ' '\n' | sort -n)); longest $(echo $waits | tr ' ' '\n' | sort -n | tail -1)"
rm -f /tmp/optidb-history-bench-pass
pg -d postgres -qc "DROP DATABASE $db WITH (FORCE)" -c "DROP DATABASE $base WITH (FORCE)"
rm -f "$workload" "$workload.100"
