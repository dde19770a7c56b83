#!/usr/bin/env bash
# The main job, from a fresh machine: install the toolchain, build and install optidb, start a
# local PostgreSQL 15 cluster (as user postgres), load the demo shop, run its workload, then ask
# optidb what is slow.
set -euo pipefail
. "$(dirname "$0")/env.sh"

"$OPTIDB_ROOT/tests/scripts/setup-machine.sh"
"$OPTIDB_ROOT/tests/scripts/install-extension.sh"
"$OPTIDB_ROOT/tests/scripts/cluster.sh" start
"$OPTIDB_ROOT/tests/scripts/run-workload.sh"

pg -d "$OPTIDB_DB" -qc "DROP EXTENSION IF EXISTS optidb CASCADE" -c "CREATE EXTENSION optidb"
log "SELECT * FROM optidb.scan();"
pg -d "$OPTIDB_DB" -c "SELECT * FROM optidb.scan()"
log "SELECT query_id, calls, mean_ms, total_ms, share_pct, confidence, reason, query FROM optidb.bottlenecks(10);"
pg -d "$OPTIDB_DB" -P pager=off -c "
SELECT query_id, calls, round(mean_ms::numeric, 2) AS mean_ms, round(total_ms::numeric) AS total_ms,
       round(share_pct::numeric, 1) AS share_pct, round(confidence::numeric, 2) AS confidence,
       reason, left(query, 90) AS query
FROM optidb.bottlenecks(10)"
log "detail of the top statement: SELECT optidb.query(<query_id>) -> 'diagnosis';"
pg -d "$OPTIDB_DB" -P pager=off -c "
SELECT jsonb_pretty(optidb.query(query_id) -> 'diagnosis') FROM optidb.bottlenecks(1)"
log "done. Connect with: psql -h $OPTIDB_PGSOCKET -p $OPTIDB_PGPORT -U postgres $OPTIDB_DB"
