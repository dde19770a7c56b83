#!/usr/bin/env bash
# Load the demo shop into $OPTIDB_DB and run its query mix with pgbench: every statement once,
# then the weighted mix (see the `-- weight:` header of each tests/demo/workload/*.sql) for
# WORKLOAD_SECONDS seconds (default 20) on 2 clients.
set -euo pipefail
. "$(dirname "$0")/env.sh"
seconds=${WORKLOAD_SECONDS:-20}
demo="$OPTIDB_ROOT/tests/demo"

if [ "$(pg -d postgres -Atc "SELECT count(*) FROM pg_database WHERE datname = '$OPTIDB_DB'")" = 0 ]; then
    pg -d postgres -qc "CREATE DATABASE $OPTIDB_DB"
fi
if [ "${SKIP_DEMO_LOAD:-0}" != 1 ]; then
    log "loading the demo shop into $OPTIDB_DB (1M orders, about 20 s)"
    pg -d "$OPTIDB_DB" -q -f "$demo/schema.sql" >/dev/null
fi
pg -d "$OPTIDB_DB" -qc "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"
# hypopg: Debian's package on 15, built by test-major.sh on the other majors; optional.
if [ "$(pg -d "$OPTIDB_DB" -Atc "SELECT count(*) FROM pg_available_extensions WHERE name = 'hypopg'")" = 1 ]; then
    pg -d "$OPTIDB_DB" -qc "CREATE EXTENSION IF NOT EXISTS hypopg"
else
    log "hypopg is not installed: no simulations in $OPTIDB_DB"
fi
if [ "${SKIP_DEMO_LOAD:-0}" != 1 ]; then
    # Start the statistics with the workload, not the bulk load (optidb itself never resets).
    pg -d "$OPTIDB_DB" -qAtc "SELECT pg_stat_statements_reset()" >/dev/null
fi

demo_mix

pgbench() {
    as_postgres "$PGBIN/pgbench" -n -h "$OPTIDB_PGSOCKET" -p "$OPTIDB_PGPORT" "$@" "$OPTIDB_DB"
}
log "running every statement of the mix once"
for f in "$demo"/workload/*.sql; do
    pgbench -t 1 -f "$f" >/dev/null
done
log "running the weighted mix for ${seconds}s on 2 clients"
pgbench -c 2 -j 2 -T "$seconds" "${DEMO_MIX[@]}" | grep -E '^(number of transactions actually processed|tps)' || true
