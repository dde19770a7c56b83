#!/usr/bin/env bash
# Benchmark (prints figures, asserts nothing): optidb.report() on a database with 5,000
# statements and 30 days of history, and optidb.health(), each the median of several runs, with
# baselines measured in the same run (bottlenecks(10) alone, which the report starts with; a
# bare SELECT against pg_stat_activity for health()).
#
# History: pg_stat_statements deltas every hour for 30 days for all 5,000 statements (3.6M
# rows); latency histograms every hour for the 100 busiest and daily for the others; health
# figures every 5 minutes (216k rows); 300 alerts; metric views refreshed. Needs the project's cluster
# (tests/scripts/cluster.sh start) and an installed release build.
set -euo pipefail
. "$(dirname "$0")/../scripts/env.sh"
. "$(dirname "$0")/lib.sh"
db=optidb_report_bench
runs=${RUNS:-7}
pg -d postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
log "generating history (a few minutes)"
pg -d "$db" -q -c "CREATE EXTENSION pg_stat_statements" -c "CREATE EXTENSION optidb"
insert_report_history "$db"
pg -d "$db" -q <<'SQL'
INSERT INTO optidb.health_history (captured_at, item, value, status)
SELECT now() - m * interval '5 minutes', i.item, random() * 100, 'ok'
FROM generate_series(0, 8639) m,
     (SELECT unnest(string_to_array(description, ',')) AS item FROM optidb.surface()
      WHERE name = 'optidb.alert_rule.metric') i
WHERE i.item NOT IN ('high_confidence_recommendation', 'statement_p95_ratio');
INSERT INTO optidb.alert (rule_id, rule_name, metric, severity, fired_at, resolved_at, value, details)
SELECT r.id, r.name, r.metric, r.severity, now() - g * interval '2 hours',
       now() - g * interval '2 hours' + interval '5 minutes', 6, '{}'
FROM generate_series(1, 300) g, optidb.alert_rule r WHERE r.name = 'lock_wait';
ANALYZE;
SELECT count(*) FROM optidb.refresh();  -- metrics() reads the refreshed views
SQL
log "history: $(pg -d "$db" -qAtc "SELECT (SELECT count(*) FROM optidb.metric) || ' metric rows, ' ||
  (SELECT count(*) FROM optidb.latency) || ' latency rows, ' ||
  (SELECT count(*) FROM optidb.health_history) || ' health rows'")"
pg -d "$db" -q -P pager=off -v runs="$runs" <<'SQL'
SET bench.runs = :'runs';
CREATE TEMP TABLE t (what text, ms float8);
DO $$
DECLARE t0 timestamptz; size int;
BEGIN
  FOR i IN 1..current_setting('bench.runs', true)::int LOOP
    t0 := clock_timestamp();
    size := length(optidb.report());
    INSERT INTO t VALUES ('report() (7 days, top 10)', extract(epoch FROM clock_timestamp() - t0) * 1000);
    t0 := clock_timestamp();
    PERFORM length(optidb.report(days => 30));
    INSERT INTO t VALUES ('report(days => 30)', extract(epoch FROM clock_timestamp() - t0) * 1000);
    t0 := clock_timestamp();
    PERFORM * FROM optidb.bottlenecks(10);
    INSERT INTO t VALUES ('baseline: bottlenecks(10)', extract(epoch FROM clock_timestamp() - t0) * 1000);
    t0 := clock_timestamp();
    PERFORM * FROM optidb.health();
    INSERT INTO t VALUES ('health()', extract(epoch FROM clock_timestamp() - t0) * 1000);
    t0 := clock_timestamp();
    PERFORM count(*) FROM pg_stat_activity;
    INSERT INTO t VALUES ('baseline: count(*) FROM pg_stat_activity', extract(epoch FROM clock_timestamp() - t0) * 1000);
    t0 := clock_timestamp();
    PERFORM length(optidb.metrics());
    INSERT INTO t VALUES ('metrics()', extract(epoch FROM clock_timestamp() - t0) * 1000);
  END LOOP;
  RAISE NOTICE 'report size: % bytes', size;
END $$;
SELECT what, count(*) AS runs,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1) AS median_ms,
       round(max(ms)::numeric, 1) AS max_ms,
       CASE WHEN what LIKE 'report%' THEN '< 1000 ms' WHEN what = 'health()' THEN '< 50 ms' END AS target
FROM t GROUP BY what ORDER BY what;
SQL
pg -d postgres -qc "DROP DATABASE $db WITH (FORCE)"
