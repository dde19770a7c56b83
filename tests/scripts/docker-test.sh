#!/usr/bin/env bash
# The Docker image, built and run as the suite can: offline but for the package registries.
# It installs docker.io and debootstrap if missing, starts a private dockerd (data, socket and
# state under $OPTIDB_DOCKER_ROOT; no bridge, no iptables, no forwarding: the host's network
# settings stay as they are, which it checks at the end), makes the Dockerfile's base image
# debian:bookworm with debootstrap + docker import when absent (kept for later runs), builds the
# image from the repository's Dockerfile with the Debian package of tests/scripts/package.sh
# (the one the suite built already, when it is current), runs the container on the host
# network and checks, from the host through psql: the libraries preloaded, optidb's worker and
# pg_cron's launcher running, CREATE EXTENSION in a new database, a workload with bottlenecks, a
# simulation with before/after cost, an HTML report, and a restart of the container.
# It stops the container and the dockerd it started.
set -euo pipefail
. "$(dirname "$0")/env.sh"
cd "$OPTIDB_ROOT"

root=${OPTIDB_DOCKER_ROOT:-/tmp/optidb-docker}
port=${OPTIDB_DOCKER_PORT:-55480}
image=optidb:test
container=optidb-test-$port
debian_pg=/usr/lib/postgresql/$PG_MAJOR/bin # the image has Debian's paths: so must the package
password=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
version=$(grep -Po '^version = "\K[^"]+' Cargo.toml | head -1)
deb=target/optidb-postgresql-${PG_MAJOR}_${version}_$(dpkg --print-architecture).deb
dockerd_pid=

dk() { DOCKER_HOST="unix://$root/docker.sock" DOCKER_BUILDKIT=0 /usr/bin/docker "$@"; }
# psql from the host to the container, over TCP, as a remote client would.
dpsql() {
    PGPASSWORD=$password "$debian_pg/psql" -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" \
        -U postgres "$@"
}
check() {
    [ "$(dpsql -d "$2" -Atc "$3")" = t ] || die "docker image: $1"
}
# What dockerd must leave alone: forwarding, links, firewall rules.
network_state() {
    sysctl -n net.ipv4.ip_forward
    ip -o link | awk '{print $2}'
    iptables -S 2>/dev/null || true
    iptables -t nat -S 2>/dev/null || true
}

install_docker() {
    local missing=() p
    for p in docker.io debootstrap; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$p")
    done
    [ ${#missing[@]} -gt 0 ] || return 0
    log "installing ${missing[*]}"
    # docker.io's maintainer scripts would start the system dockerd (bridge, iptables rules):
    # forbid service starts while it installs, unless a policy already does.
    local policy=/usr/sbin/policy-rc.d own_policy=
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod +x "$policy"
        own_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    [ -z "$own_policy" ] || rm -f "$policy"
}

start_dockerd() {
    mkdir -p "$root"
    log "starting a private dockerd (data in $root, no bridge, no iptables)"
    dockerd --data-root "$root/data" --exec-root "$root/exec" --pidfile "$root/dockerd.pid" \
        -H "unix://$root/docker.sock" --bridge=none --iptables=false --ip-forward=false \
        --ip-masq=false >"$root/dockerd.log" 2>&1 &
    dockerd_pid=$!
    local i
    for i in $(seq 60); do
        dk info >/dev/null 2>&1 && return 0
        kill -0 "$dockerd_pid" 2>/dev/null || break
        sleep 1
    done
    tail -20 "$root/dockerd.log" >&2
    die "dockerd did not start (log: $root/dockerd.log)"
}

stop_all() {
    dk rm -f "$container" >/dev/null 2>&1 || true
    if [ -n "$dockerd_pid" ]; then
        kill "$dockerd_pid" 2>/dev/null || true
        wait "$dockerd_pid" 2>/dev/null || true
        dockerd_pid=
        # dockerd leaves its network namespace mounted (exec/netns/default) when it exits.
        awk -v r="$root/" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r | xargs -r umount
    fi
}

# The Dockerfile's FROM, made from the Debian mirror this machine's apt uses.
base_image() {
    dk image inspect debian:bookworm >/dev/null 2>&1 && return 0
    local mirror rootfs=$root/rootfs
    mirror=$(debian_mirror)
    log "making the base image debian:bookworm (debootstrap from $mirror, about a minute)"
    rm -rf "$rootfs"
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$root/debootstrap.log" 2>&1 \
        || die "debootstrap failed (log: $root/debootstrap.log)"
    tar -C "$rootfs" -c . | dk import - debian:bookworm >/dev/null
    rm -rf "$rootfs"
}

# The package test-package.sh built in this run if it is current and has Debian's paths;
# otherwise build it (against Debian's PostgreSQL, whatever PG_CONFIG says).
package() {
    local so=" \./usr/lib/postgresql/$PG_MAJOR/lib/optidb\.so$"
    # (grep without -q: it reads to the end, so dpkg-deb is not killed by SIGPIPE under pipefail)
    if [ -f "$deb" ] && dpkg-deb -c "$deb" | grep "$so" >/dev/null \
            && [ -z "$(find src sql Cargo.toml Cargo.lock optidb.control -newer "$deb")" ]; then
        log "reusing $deb"
        return 0
    fi
    PG_CONFIG=$debian_pg/pg_config PGBIN=$debian_pg "$OPTIDB_ROOT/tests/scripts/package.sh" \
        >/dev/null
}

wait_ready() {
    local i
    for i in $(seq 120); do
        "$debian_pg/pg_isready" -q -h 127.0.0.1 -p "$port" && return 0
        [ "$(dk inspect -f '{{.State.Running}}' "$container")" = true ] || break
        sleep 1
    done
    dk logs "$container" 2>&1 | tail -30 >&2
    die "the container's PostgreSQL did not come up on port $port"
}

# Backends show up a moment after the postmaster accepts connections.
wait_backend() {
    local i
    for i in $(seq 30); do
        [ "$(dpsql -d postgres -Atc "SELECT count(*) FROM pg_catalog.pg_stat_activity
                                      WHERE backend_type = '$1' AND datname = 'postgres'")" = 1 ] \
            && return 0
        sleep 1
    done
    dk logs "$container" 2>&1 | tail -30 >&2
    die "docker image: no '$1' running in database postgres"
}

install_docker
before=$(network_state)
package
trap stop_all EXIT
start_dockerd
base_image
log "docker build (host network, base image local)"
dk build --network host -t "$image" . >"$root/build.log" 2>&1 \
    || { tail -30 "$root/build.log" >&2; die "docker build failed (log: $root/build.log)"; }
# The previous run's image (its package layer) is kept by nothing now.
dk image prune -f >/dev/null

log "docker run on port $port"
dk rm -f "$container" >/dev/null 2>&1 || true
# --shm-size: as README says (optidb's simulations need a 64 MB shared memory segment).
dk run -d --name "$container" --network host --shm-size=256m -e PGPORT="$port" \
    -e POSTGRES_PASSWORD="$password" "$image" -c work_mem=12MB >/dev/null
wait_ready
check "pg_stat_statements, optidb and pg_cron preloaded" postgres \
    "SELECT pg_catalog.current_setting('shared_preload_libraries')
            = 'pg_stat_statements,optidb,pg_cron'"
check "docker run's arguments reach postgres" postgres \
    "SELECT pg_catalog.current_setting('work_mem') = '12MB'"
wait_backend "optidb worker"
wait_backend "pg_cron launcher"
[ -n "$(dk exec "$container" psql -X -Atc "SELECT optidb.metrics()")" ] \
    || die "docker image: docker exec ... psql (peer, inside) does not answer as README says"
check "the extensions created in database postgres, optidb at version $version" postgres \
    "SELECT pg_catalog.string_agg(extname, ',' ORDER BY extname)
            = 'hypopg,optidb,pg_cron,pg_stat_statements'
        AND pg_catalog.bool_or(extname = 'optidb' AND extversion = '$version')
     FROM pg_catalog.pg_extension WHERE extname <> 'plpgsql'"

log "a new database: CREATE EXTENSION; the application's role, its schema, a workload"
dpsql -d postgres -qc "CREATE DATABASE shop" -c "CREATE ROLE shop_app LOGIN PASSWORD '$password'"
dpsql -d shop -q -c "CREATE EXTENSION pg_stat_statements" -c "CREATE EXTENSION hypopg" \
    -c "CREATE EXTENSION optidb" -c "CREATE SCHEMA app AUTHORIZATION shop_app" \
    -c "CREATE TABLE app.orders AS SELECT g AS id, g % 5000 AS customer_id,
                                          now() - g * interval '1 minute' AS created_at
                                   FROM pg_catalog.generate_series(1, 200000) g" \
    -c "ALTER TABLE app.orders OWNER TO shop_app" -c "ANALYZE app.orders"
workload=$(mktemp)
printf '%s\n' '\set c random(1, 5000)' \
    'SELECT id, created_at FROM orders WHERE customer_id = :c;' >"$workload"
PGPASSWORD=$password PGOPTIONS='-c search_path=app' "$debian_pg/pgbench" -n -M extended -t 300 \
    -f "$workload" -h 127.0.0.1 -p "$port" -U shop_app shop >/dev/null
rm -f "$workload"
dpsql -d shop -qc "SELECT * FROM optidb.scan()" >/dev/null
check "bottlenecks() finds the lookups by customer_id" shop \
    "SELECT bool_or(q.raw_sql LIKE '%customer_id = \$1%') FROM optidb.bottlenecks(10) b
     JOIN optidb.query q ON q.id = b.query_id"
check "a simulation of the index advice gives before and after cost, after lower" shop \
    "SELECT s.before_cost > s.after_cost AND s.error IS NULL
     FROM (SELECT rec_id, query_ids[1] AS query_id FROM optidb.recommend()
           WHERE kind IN ('missing_index', 'composite_index') AND table_name = 'app.orders'
           LIMIT 1) r, LATERAL optidb.simulate(r.query_id, r.rec_id) s"
check "report() is an HTML page naming the table" shop \
    "SELECT r LIKE '<!DOCTYPE html>%</html>%' AND r LIKE '%orders%' FROM optidb.report() r"

log "docker restart: the initialised cluster starts again, preloaded, its data kept"
dk restart "$container" >/dev/null
wait_ready
wait_backend "optidb worker"
check "the workload's history survives the restart" shop \
    "SELECT count(*) > 0 FROM optidb.recommendation
     WHERE schemaname = 'app' AND tablename = 'orders'"

# Two fast shutdowns: the entrypoint's after creating the extensions, docker restart's.
[ "$(dk logs "$container" 2>&1 | grep -c 'received fast shutdown request')" = 2 ] \
    || die "docker image: docker stop did not ask for a fast shutdown (STOPSIGNAL SIGINT)"
if dk logs "$container" 2>&1 | grep -E 'PANIC|terminated by signal|optidb: /dev/shm' >&2; then
    die "docker image: the container's log shows a crash or a warning (above)"
fi

stop_all
trap - EXIT
[ "$(network_state)" = "$before" ] || die "the host's network settings changed"
log "docker image: built offline, preloaded, worker running, bottlenecks, simulation, report: ok"
