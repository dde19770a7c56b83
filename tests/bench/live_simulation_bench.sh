#!/usr/bin/env bash
# Benchmark (prints figures, asserts nothing): what three real simulations in parallel plus a
# looping scan() cost the demo workload, against the workload alone and against a control of
# equal CPU competition (see live_simulation.py). Needs the demo (tests/scripts/demo.sh, or
# cluster.sh start + run-workload.sh + CREATE EXTENSION optidb).
#   SECONDS_PER_RUN=20 ROUNDS=3 tests/bench/live_simulation_bench.sh
set -euo pipefail
. "$(dirname "$0")/../scripts/env.sh"
demo_mix
pg -d "$OPTIDB_DB" -qc "CREATE EXTENSION IF NOT EXISTS optidb"
"$OPTIDB_ROOT/target/venv/bin/python" "$OPTIDB_ROOT/tests/bench/live_simulation.py" \
    "$OPTIDB_PGPORT" "$OPTIDB_DB" "${SECONDS_PER_RUN:-20}" "${ROUNDS:-3}" \
    runuser -u postgres -- "$PGBIN/pgbench" -n -h "$OPTIDB_PGSOCKET" -p "$OPTIDB_PGPORT" \
    -c 2 -j 2 "${DEMO_MIX[@]}" "$OPTIDB_DB"
