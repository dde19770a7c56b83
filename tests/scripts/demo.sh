#!/usr/bin/env bash
# The main job, from a fresh machine: install the toolchain, build and install optidb, start a
# local PostgreSQL 15 cluster (as user postgres), load the demo shop, run its workload, then ask
# optidb what is slow.
set -euo pipefail
. "$(dirname "$0")/env.sh"

"$OPTIDB_ROOT/tests/scripts/setup-machine.sh"
# The release build: the speed the demo shows is the speed a server gets. A running cluster is
# restarted, since a preloaded library is only read at server start.
"$OPTIDB_ROOT/tests/scripts/install-extension.sh" --release
"$OPTIDB_ROOT/tests/scripts/cluster.sh" restart
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
log "SELECT rec_id, kind, table_name, columns, improvement_pct, query_ids, ddl FROM optidb.recommend();"
pg -d "$OPTIDB_DB" -P pager=off -c "
SELECT rec_id, kind, table_name, columns, round(confidence::numeric, 2) AS confidence,
       round(improvement_pct::numeric, 1) AS improvement_pct, round(est_saved_ms::numeric) AS est_saved_ms,
       query_ids, ddl
FROM optidb.recommend()"
log "why: SELECT rationale, note FROM optidb.recommend();"
pg -d "$OPTIDB_DB" -P pager=off -c "SELECT rec_id, kind, rationale, note FROM optidb.recommend()"
log "simulate the top index recommendation on its first statement: SELECT * FROM optidb.simulate(query_id, rec_id);"
pg -d "$OPTIDB_DB" -P pager=off -x -c "
SELECT s.* FROM (SELECT rec_id, query_ids[1] AS query_id FROM optidb.recommend()
                 WHERE kind LIKE '%index' AND kind NOT IN ('redundant_index', 'unused_index')
                 LIMIT 1) r,
     LATERAL optidb.simulate(r.query_id, r.rec_id) s"
log "metric views: SELECT * FROM optidb.refresh(); then the top of optidb.query_metrics"
pg -d "$OPTIDB_DB" -P pager=off -c "SELECT view_name, concurrent, rows, round(duration_ms::numeric, 1) AS ms, error FROM optidb.refresh()"
pg -d "$OPTIDB_DB" -P pager=off -c "
SELECT query_id, execution_count, round(mean_ms::numeric, 2) AS mean_ms, round(p95_ms::numeric, 2) AS p95_ms,
       round(p99_ms::numeric, 2) AS p99_ms, round(failure_rate::numeric, 3) AS failure_rate, left(query, 70) AS query
FROM optidb.query_metrics ORDER BY total_ms DESC NULLS LAST LIMIT 5"
log "families: SELECT label, statements, execution_count, mean_ms FROM optidb.family_metrics"
pg -d "$OPTIDB_DB" -P pager=off -c "
SELECT label, statements, execution_count, round(mean_ms::numeric, 2) AS mean_ms, anomalies
FROM optidb.family_metrics ORDER BY total_ms DESC NULLS LAST LIMIT 8"
top=$(pg -d "$OPTIDB_DB" -qAtc "SELECT query_id FROM optidb.bottlenecks(1)")
log "SELECT answer FROM optidb.ask('why is query $top slow?');"
pg -d "$OPTIDB_DB" -P pager=off -Atc "SELECT answer FROM optidb.ask('why is query $top slow?')"
log "health: SELECT item, value, unit, status FROM optidb.health() WHERE status <> 'ok' (none: all ok)"
pg -d "$OPTIDB_DB" -P pager=off -c "SELECT item, round(value::numeric, 2) AS value, unit, status FROM optidb.health() WHERE status <> 'ok'"
report="$OPTIDB_ROOT/target/demo-report.html"
pg -d "$OPTIDB_DB" -qAtc "SELECT optidb.report()" > "$report"
log "HTML report: $report"
log "done. Connect with: psql -h $OPTIDB_PGSOCKET -p $OPTIDB_PGPORT -U postgres $OPTIDB_DB"
