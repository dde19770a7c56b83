#!/usr/bin/env bash
# Benchmark (prints figures, asserts nothing): wall time of one optidb.simulate() in hypopg mode
# (baseline EXPLAIN + hypothetical index + EXPLAIN + cleanup + storing the row) on the demo data,
# for each open index recommendation, with warm replay workers (optidb.replay_workers = 2,
# "after") and with a worker started per simulate() (optidb.replay_workers = 0, the 0.6.0 path,
# "before"), interleaved in the same run, and the mean CPU per call of the caller and of the warm
# workers (from /proc). Needs the demo (tests/scripts/demo.sh, or cluster.sh start +
# run-workload.sh + CREATE EXTENSION optidb + SELECT optidb.scan()).
#   RUNS=50 tests/bench/simulate_bench.sh
set -euo pipefail
. "$(dirname "$0")/../scripts/env.sh"
runs=${RUNS:-50}
PGOPTIONS="-c bench.runs=$runs" pg -d "$OPTIDB_DB" -q -P pager=off <<'SQL'
CREATE TEMP TABLE bench (path text, rec_id bigint, kind text, columns text[], ms double precision,
                         caller_cpu_ms double precision, worker_cpu_ms double precision);
-- CPU time (utime + stime, ms at 100 ticks/s) of these processes, from /proc: the caller's own
-- and the warm workers' (a per-call worker is gone before it could be read).
CREATE FUNCTION pg_temp.cpu_ms(pids int[]) RETURNS double precision LANGUAGE sql AS $f$
    SELECT coalesce(sum(((f)[12])::bigint + ((f)[13])::bigint), 0) * 10.0
    FROM unnest(pids) AS p(pid),
         LATERAL (SELECT string_to_array(split_part(
                      pg_read_file('/proc/' || p.pid || '/stat'), ') ', 2), ' ') AS f) s $f$;
CREATE FUNCTION pg_temp.warm_pids() RETURNS int[] LANGUAGE sql AS $f$
    SELECT pg_stat_clear_snapshot(); -- pg_stat_activity is read once per transaction otherwise
    SELECT coalesce(array_agg(pid), '{}') FROM pg_stat_activity
    WHERE backend_type = 'optidb warm replay' AND datname = current_database() $f$;
DO $$
DECLARE
    r record;
    t0 timestamptz;
    w int;
    c0 double precision;
    w0 double precision;
    warm int[];
BEGIN
    FOR r IN SELECT rec_id, kind, columns, query_ids[1] AS query_id FROM optidb.recommend()
             WHERE kind IN ('missing_index', 'composite_index', 'expression_index') LOOP
        FOR i IN 1 .. current_setting('bench.runs')::int LOOP
            FOREACH w IN ARRAY ARRAY[0, 2] LOOP
                PERFORM pg_catalog.set_config('optidb.replay_workers', w::text, false);
                warm := pg_temp.warm_pids();
                c0 := pg_temp.cpu_ms(ARRAY[pg_backend_pid()]);
                w0 := pg_temp.cpu_ms(warm);
                t0 := clock_timestamp();
                PERFORM * FROM optidb.simulate(r.query_id, r.rec_id);
                INSERT INTO bench VALUES (CASE w WHEN 0 THEN 'before' ELSE 'after' END,
                                          r.rec_id, r.kind, r.columns,
                                          extract(epoch FROM clock_timestamp() - t0) * 1000,
                                          pg_temp.cpu_ms(ARRAY[pg_backend_pid()]) - c0,
                                          CASE WHEN w > 0 AND warm = pg_temp.warm_pids()
                                               THEN pg_temp.cpu_ms(warm) - w0 END);
            END LOOP;
        END LOOP;
    END LOOP;
END $$;
-- The first simulation of each path starts its worker: left out as warm-up.
DELETE FROM bench b USING (SELECT path, min(ctid) AS first FROM bench GROUP BY path) f
WHERE b.path = f.path AND b.ctid = f.first;
SELECT rec_id, kind, columns, path, count(*) AS runs,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 2) AS median_ms,
       round(percentile_cont(0.95) WITHIN GROUP (ORDER BY ms)::numeric, 2) AS p95_ms
FROM bench GROUP BY rec_id, kind, columns, path ORDER BY rec_id, path DESC;
WITH m AS (
    SELECT path, count(*) AS runs,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS median_ms
    FROM bench GROUP BY path)
SELECT 'all simulations' AS what,
       (SELECT runs FROM m WHERE path = 'before') AS runs_each,
       round((SELECT median_ms FROM m WHERE path = 'before')::numeric, 2) AS before_median_ms,
       round((SELECT median_ms FROM m WHERE path = 'after')::numeric, 2) AS after_median_ms,
       round(((SELECT median_ms FROM m WHERE path = 'after')
              / (SELECT median_ms FROM m WHERE path = 'before'))::numeric, 2) AS after_over_before,
       '(target: after <= 5 ms)' AS target;
-- Mean CPU per call (10 ms ticks, so only a mean over many calls means anything).
SELECT path, count(*) AS runs, round(avg(caller_cpu_ms)::numeric, 2) AS caller_cpu_ms_per_call,
       round(avg(worker_cpu_ms)::numeric, 2) AS warm_worker_cpu_ms_per_call
FROM bench GROUP BY path ORDER BY path DESC;
SELECT count(*) AS hypothetical_indexes_left FROM hypopg_list_indexes;
SQL
