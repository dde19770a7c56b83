#!/bin/sh
# Entrypoint of the optidb image (runs as user postgres). On the first start (no PG_VERSION in
# $PGDATA) it initialises the cluster: pg_stat_statements, optidb and pg_cron preloaded in its
# postgresql.conf, optidb's worker and pg_cron in database postgres, where it creates the
# extensions. Then it runs PostgreSQL in the foreground on $PGPORT, listening on every address.
# Remote logins need a password: set POSTGRES_PASSWORD on the first start (the postgres role
# gets it; without it only `docker exec ... psql` logs in). Extra arguments go to postgres
# (e.g. `-c work_mem=64MB`).
set -eu
bin=/usr/lib/postgresql/15/bin

init_cluster() {
    pwfile=
    if [ -n "${POSTGRES_PASSWORD:-}" ]; then
        pwfile=$(mktemp)
        printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    fi
    "$bin/initdb" -D "$PGDATA" -U postgres --auth-local=peer --auth-host=scram-sha-256 \
        --no-instructions ${pwfile:+--pwfile="$pwfile"}
    [ -z "$pwfile" ] || rm -f "$pwfile"
    cat >>"$PGDATA/postgresql.conf" <<CONF

# optidb image (docker/entrypoint.sh)
listen_addresses = '*'
shared_preload_libraries = 'pg_stat_statements,optidb,pg_cron'
optidb.database = 'postgres'
cron.database_name = 'postgres'
CONF
    echo 'host all all all scram-sha-256' >>"$PGDATA/pg_hba.conf"

    # Local socket only while the extensions are created.
    "$bin/pg_ctl" -D "$PGDATA" -o "-c listen_addresses='' -p $PGPORT" -w start
    "$bin/psql" -X -v ON_ERROR_STOP=1 -p "$PGPORT" -d postgres \
        -c 'CREATE EXTENSION pg_stat_statements' -c 'CREATE EXTENSION hypopg' \
        -c 'CREATE EXTENSION pg_cron' -c 'CREATE EXTENSION optidb'
    "$bin/pg_ctl" -D "$PGDATA" -m fast -w stop
}

# optidb's simulations hand their results back in a 64 MB dynamic shared memory segment, which
# Docker's default /dev/shm (64 MB in all) cannot hold: say so where the user looks first.
shm_kb=$(df -Pk /dev/shm | awk 'NR == 2 {print $2}')
if [ "${shm_kb:-0}" -lt 262144 ]; then
    echo "optidb: /dev/shm has $((shm_kb / 1024)) MB; simulations need more:" \
        "run the container with --shm-size=256m or more" >&2
fi

[ -s "$PGDATA/PG_VERSION" ] || init_cluster
exec "$bin/postgres" -D "$PGDATA" -p "$PGPORT" "$@"
