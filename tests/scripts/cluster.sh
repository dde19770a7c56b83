#!/usr/bin/env bash
# Start or stop the project's own PostgreSQL cluster (run as user postgres, on its own port, with
# pg_stat_statements and optidb preloaded, or OPTIDB_PRELOAD's list). Usage:
# cluster.sh start|stop|restart|status
# OPTIDB_PRELOAD_ORDER picks the order of the default list (env.sh): pgss-first (default,
# 'pg_stat_statements,optidb') or optidb-first ('optidb,pg_stat_statements').
set -euo pipefail
. "$(dirname "$0")/env.sh"

init_cluster() {
    local preload
    preload=${OPTIDB_PRELOAD:-$(preload_list)}
    log "initdb $OPTIDB_PGDATA"
    mkdir -p "$(dirname "$OPTIDB_PGDATA")"
    chown postgres "$(dirname "$OPTIDB_PGDATA")"
    as_postgres "$PGBIN/initdb" -D "$OPTIDB_PGDATA" -A trust -U postgres --no-instructions >/dev/null
    cat >>"$OPTIDB_PGDATA/postgresql.conf" <<CONF
# optidb project cluster
port = $OPTIDB_PGPORT
listen_addresses = ''
unix_socket_directories = '$OPTIDB_PGSOCKET'
shared_preload_libraries = '$preload'
pg_stat_statements.max = 5000
pg_stat_statements.track = top
compute_query_id = on
shared_buffers = 256MB
max_connections = 50
fsync = off
logging_collector = off
log_min_messages = warning
CONF
}

case "${1:-}" in
start)
    [ -f "$OPTIDB_PGDATA/PG_VERSION" ] || init_cluster
    if as_postgres "$PGBIN/pg_ctl" -D "$OPTIDB_PGDATA" status >/dev/null 2>&1; then
        log "cluster already running on port $OPTIDB_PGPORT"
    else
        log "starting PostgreSQL $PG_MAJOR on port $OPTIDB_PGPORT"
        # Like a production server: no Rust backtraces appended to users' error messages.
        as_postgres env -u RUST_BACKTRACE -u RUST_LIB_BACKTRACE \
            "$PGBIN/pg_ctl" -D "$OPTIDB_PGDATA" -l "$OPTIDB_PGDATA/server.log" -w start >/dev/null
    fi
    ;;
stop)
    as_postgres "$PGBIN/pg_ctl" -D "$OPTIDB_PGDATA" -m fast -w stop >/dev/null 2>&1 || true
    ;;
restart)
    "$0" stop
    "$0" start
    ;;
status)
    as_postgres "$PGBIN/pg_ctl" -D "$OPTIDB_PGDATA" status
    ;;
*)
    echo "usage: $0 start|stop|restart|status" >&2
    exit 2
    ;;
esac
