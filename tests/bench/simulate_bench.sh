#!/usr/bin/env bash
# Benchmark (prints figures, asserts nothing): wall time of one optidb.simulate() in hypopg mode
# (baseline EXPLAIN + hypothetical index + EXPLAIN + cleanup + storing the row) on the demo data,
# for each open index recommendation, with warm replay workers (optidb.replay_workers = 2,
# "after") and with a worker started per simulate() (optidb.replay_workers = 0, the 0.6.0 path,
# "before"), interleaved in the same run. Needs the demo (tests/scripts/demo.sh, or cluster.sh start +
# run-workload.sh + CREATE EXTENSION optidb + SELECT optidb.scan()).
#   RUNS=50 tests/bench/simulate_bench.sh
set -euo pipefail
. "$(dirname "$0")/../scripts/env.sh"
runs=${RUNS:-50}
PGOPTIONS="-c bench.runs=$runs" pg -d "$OPTIDB_DB" -q -P pager=off <<'SQL'
CREATE TEMP TABLE bench (path text, rec_id bigint, kind text, columns text[], ms double precision);
DO $$
DECLARE
    r record;
    t0 timestamptz;
    w int;
BEGIN
    FOR r IN SELECT rec_id, kind, columns, query_ids[1] AS query_id FROM optidb.recommend()
             WHERE kind IN ('missing_index', 'composite_index', 'expression_index') LOOP
        FOR i IN 1 .. current_setting('bench.runs')::int LOOP
            FOREACH w IN ARRAY ARRAY[0, 2] LOOP
                PERFORM pg_catalog.set_config('optidb.replay_workers', w::text, false);
                t0 := clock_timestamp();
                PERFORM * FROM optidb.simulate(r.query_id, r.rec_id);
                INSERT INTO bench VALUES (CASE w WHEN 0 THEN 'before' ELSE 'after' END,
                                          r.rec_id, r.kind, r.columns,
                                          extract(epoch FROM clock_timestamp() - t0) * 1000);
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
SELECT count(*) AS hypothetical_indexes_left FROM hypopg_list_indexes;
SQL
