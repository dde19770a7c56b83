# Shared settings for the project's scripts (sourced, not run). Everything can be overridden
# from the environment, so the tests can run a second cluster beside the demo.
OPTIDB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PG_MAJOR=${PG_MAJOR:-15}
PGBIN=${PGBIN:-/usr/lib/postgresql/$PG_MAJOR/bin}
PG_CONFIG=${PG_CONFIG:-$PGBIN/pg_config}
OPTIDB_PGDATA=${OPTIDB_PGDATA:-/tmp/optidb-cluster/data}
OPTIDB_PGPORT=${OPTIDB_PGPORT:-55432}
OPTIDB_PGSOCKET=${OPTIDB_PGSOCKET:-/tmp}
OPTIDB_DB=${OPTIDB_DB:-optidb_demo}
export PATH="$HOME/.cargo/bin:$PATH"

# The two preload orders every capability is tested under (README, Tests): OPTIDB_PRELOAD_ORDER
# pgss-first (default) or optidb-first. optidb's hooks run before or after pg_stat_statements'
# depending on it; tests/e2e/conftest.py reads the same variable for the clusters tests start.
preload_list() {
    case "${OPTIDB_PRELOAD_ORDER:-pgss-first}" in
    pgss-first) echo "pg_stat_statements,optidb" ;;
    optidb-first) echo "optidb,pg_stat_statements" ;;
    *) die "OPTIDB_PRELOAD_ORDER: pgss-first or optidb-first, not '$OPTIDB_PRELOAD_ORDER'" ;;
    esac
}

log() { printf '\033[1;34m==> %s\033[0m\n' "$*" >&2; }
die() { printf '\033[1;31merror: %s\033[0m\n' "$*" >&2; exit 1; }

# PostgreSQL refuses to run as root: every server-side command runs as user postgres.
# OPTIDB_PG_RUN, when set, is the command prefix that does it instead (debian-chroot.sh sets it
# to run the programs of a Debian chroot: PGBIN is then a path inside the chroot).
as_postgres() {
    if [ -n "${OPTIDB_PG_RUN:-}" ]; then
        # shellcheck disable=SC2086 # a command prefix: split into words on purpose
        $OPTIDB_PG_RUN "$@"
    elif [ "$(id -un)" = postgres ]; then "$@"; else runuser -u postgres -- "$@"; fi
}

# psql against the project's cluster as the postgres superuser.
pg() {
    as_postgres "$PGBIN/psql" -X -v ON_ERROR_STOP=1 -h "$OPTIDB_PGSOCKET" -p "$OPTIDB_PGPORT" "$@"
}

# The demo query mix as pgbench arguments (-f file@weight, from each file's `-- weight:`
# header), in the array DEMO_MIX; the files are made readable for pgbench (run as postgres).
demo_mix() {
    DEMO_MIX=()
    local f weight
    for f in "$OPTIDB_ROOT"/tests/demo/workload/*.sql; do
        weight=$(sed -n 's/^-- weight: *\([0-9]*\).*/\1/p' "$f")
        DEMO_MIX+=(-f "$f@${weight:-1}")
    done
    chmod -R a+rX "$OPTIDB_ROOT/tests/demo"
}

# The Debian mirror this machine's apt uses (or OPTIDB_DEBIAN_MIRROR): debootstrap's source for
# the Docker base image and the trixie/sid chroots.
debian_mirror() {
    local m
    m=$(grep -rhoP '^(URIs:\s*|deb\s+(\[[^]]*\]\s*)?)\Khttps?://\S+/debian/?$' \
        /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null | head -1 || true)
    echo "${OPTIDB_DEBIAN_MIRROR:-${m:-http://deb.debian.org/debian}}"
}
