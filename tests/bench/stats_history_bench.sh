#!/usr/bin/env bash
# Benchmark (prints figures, asserts nothing): optidb.execution_time_stats() for one statement
# over 30 days of hourly history (720 snapshots), in a table holding the same history for 1,000
# statements (720,000 rows), against the same merge done without the per-statement index.
set -euo pipefail
. "$(dirname "$0")/../scripts/env.sh"
db=optidb_stats_bench
pg -d postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
pg -d "$db" -q <<'SQL'
CREATE EXTENSION pg_stat_statements;
CREATE EXTENSION optidb;
INSERT INTO optidb.query (fingerprint, userid, dbid, kind, raw_sql, norm_sql)
SELECT 'bench' || g, 10, 1, 'select', 'SELECT ' || g, 'SELECT ' || g FROM generate_series(1, 1000) g;
-- Each hour: ~60 non-empty buckets around 1-20 ms, as a real statement would have.
INSERT INTO optidb.latency (query_id, captured_at, calls, errors, sum_us, min_us, max_us, buckets, counts)
SELECT q.id, date_trunc('hour', now()) - h * interval '1 hour', 600, 1, 600 * 4000.0, 900.0, 25000.0,
       ARRAY(SELECT b FROM generate_series(350, 409) b), ARRAY(SELECT 10::int8 FROM generate_series(1, 60))
FROM optidb.query q, generate_series(0, 719) h;
ANALYZE optidb.latency;
SQL
echo "history rows: $(pg -d "$db" -qAtc "SELECT count(*) FROM optidb.latency")"
pg -d "$db" -q -P pager=off <<'SQL'
CREATE TEMP TABLE t (what text, ms float8);
DO $$
DECLARE t0 timestamptz; qid bigint := (SELECT min(id) FROM optidb.query);
BEGIN
  FOR i IN 1..30 LOOP
    t0 := clock_timestamp();
    PERFORM * FROM optidb.execution_time_stats(qid, now() - interval '30 days', now());
    INSERT INTO t VALUES ('execution_time_stats(one statement, 30 days)', extract(epoch FROM clock_timestamp() - t0) * 1000);
    t0 := clock_timestamp();
    PERFORM * FROM optidb.execution_time_stats(qid, now() - interval '1 day', now());
    INSERT INTO t VALUES ('execution_time_stats(one statement, 1 day)', extract(epoch FROM clock_timestamp() - t0) * 1000);
  END LOOP;
END $$;
SELECT what, count(*) AS runs, round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 2) AS median_ms,
       round(max(ms)::numeric, 2) AS max_ms, '(target < 10 ms)' AS target
FROM t GROUP BY what ORDER BY what;
SELECT count, round(median_ms::numeric, 2) AS median_ms, round(p95_ms::numeric, 2) AS p95_ms,
       round(p99_ms::numeric, 2) AS p99_ms, error_count
FROM optidb.execution_time_stats((SELECT min(id) FROM optidb.query), now() - interval '30 days', now());
SQL
pg -d postgres -qc "DROP DATABASE $db WITH (FORCE)"
