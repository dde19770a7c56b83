#!/usr/bin/env bash
# Benchmark (prints figures, asserts nothing): wall time of one optidb.simulate() in hypopg mode
# (baseline EXPLAIN + hypothetical index + EXPLAIN + cleanup + storing the row) on the demo data,
# for each open index recommendation. Needs the demo (tests/scripts/demo.sh, or cluster.sh start +
# run-workload.sh + CREATE EXTENSION optidb + SELECT optidb.scan()).
#   RUNS=50 tests/bench/simulate_bench.sh
set -euo pipefail
. "$(dirname "$0")/../scripts/env.sh"
runs=${RUNS:-50}
PGOPTIONS="-c bench.runs=$runs" pg -d "$OPTIDB_DB" -q -P pager=off <<'SQL'
CREATE TEMP TABLE bench (rec_id bigint, kind text, columns text[], ms double precision);
DO $$
DECLARE
    r record;
    t0 timestamptz;
BEGIN
    FOR r IN SELECT rec_id, kind, columns, query_ids[1] AS query_id FROM optidb.recommend()
             WHERE kind IN ('missing_index', 'composite_index', 'expression_index') LOOP
        FOR i IN 1 .. current_setting('bench.runs')::int LOOP
            t0 := clock_timestamp();
            PERFORM * FROM optidb.simulate(r.query_id, r.rec_id);
            INSERT INTO bench VALUES (r.rec_id, r.kind, r.columns,
                                      extract(epoch FROM clock_timestamp() - t0) * 1000);
        END LOOP;
    END LOOP;
END $$;
SELECT rec_id, kind, columns, count(*) AS runs,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 2) AS median_ms,
       round(percentile_cont(0.95) WITHIN GROUP (ORDER BY ms)::numeric, 2) AS p95_ms
FROM bench GROUP BY rec_id, kind, columns ORDER BY rec_id;
SELECT 'all simulations' AS what, count(*) AS runs,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 2) AS median_ms,
       '(target < 100 ms)' AS target
FROM bench;
SELECT count(*) AS hypothetical_indexes_left FROM hypopg_list_indexes;
SQL
