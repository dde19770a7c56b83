#!/usr/bin/env bash
# The pg_cron tests on PostgreSQL 17 and 18 with Debian's real pg_cron (postgresql-17-cron in
# trixie, postgresql-18-cron in sid), on the optidb package that test-package.sh NN installed
# with dpkg in that release's chroot (tests/scripts/debian-chroot.sh). The clusters run inside
# the chroot; pytest runs on the host and reaches them through the sockets in /tmp, which both
# sides share (the chroot's /tmp is the host's). Every test marked pg_cron runs this way: they
# are the three of tests/e2e/test_worker.py (the worker with pg_cron driving optidb's jobs, the
# worker's health and alerts, the worker idle on a streaming standby: its pg_basebackup and
# pg_ctl run inside the chroot through OPTIDB_PG_RUN). The e2e cluster that the session
# fixture of tests/e2e/conftest.py needs is started inside the chroot too (empty: these tests
# use their own cluster, not the demo data).
# 16 has no pg_cron here at all (no Debian postgresql-16-cron on this mirror, and bookworm's
# pg_cron 1.4.2 supports 15 only).
#
# Usage: test-cron-major.sh 17|18 [pytest arguments]
# Settings: OPTIDB_E2E_PGPORT/OPTIDB_E2E_PGDATA (the e2e cluster, see e2e.sh),
#   OPTIDB_WORKER_TEST_PORT (test_worker.py's cluster and, +1, its standby; default 55436).
set -euo pipefail
. "$(dirname "$0")/env.sh"
major=${1:-}
shift || true
case "$major" in
17 | 18) ;;
*) die "usage: test-cron-major.sh 17|18 (no pg_cron for other majors here)" ;;
esac
chroot_sh="$OPTIDB_ROOT/tests/scripts/debian-chroot.sh"
package=optidb-postgresql-$major
majors_dir=${OPTIDB_MAJORS_DIR:-/tmp/optidb-majors}
log_file=/tmp/optidb-cron-$major.log

# Inside the chroot's namespace (see below): the e2e cluster with an empty database for the
# session fixture of conftest.py (these tests use no demo data: they start their own cluster),
# then pytest on the host side.
if [ "${1:-}" = --inside ]; then
    shift
    export OPTIDB_PGDATA=${OPTIDB_E2E_PGDATA:-/tmp/optidb-e2e/data}
    export OPTIDB_PGPORT=${OPTIDB_E2E_PGPORT:-55433} OPTIDB_DB=optidb_e2e_demo
    cluster="$OPTIDB_ROOT/tests/scripts/cluster.sh"
    "$cluster" stop
    rm -rf "$(dirname "$OPTIDB_PGDATA")"
    trap '"$cluster" stop' EXIT
    "$cluster" start
    pg -d postgres -qc "CREATE DATABASE $OPTIDB_DB"
    pg -d "$OPTIDB_DB" -qc "CREATE EXTENSION pg_stat_statements"
    "$OPTIDB_ROOT/target/venv/bin/pytest" -q -p no:cacheprovider -m pg_cron "$@"
    exit
fi

[ "$("$chroot_sh" root "$major" dpkg-query -W -f '${Status}' "$package" 2>/dev/null)" = \
    'install ok installed' ] || die "$package is not installed in the chroot: test-package.sh $major"
cron=$("$chroot_sh" root "$major" dpkg-query -W -f '${Version}' "postgresql-$major-cron")
log "PostgreSQL $major (Debian chroot): the pg_cron tests with Debian's pg_cron $cron"
started=$(date +%s)
"$chroot_sh" with "$major" env PG_MAJOR="$major" PGBIN="/usr/lib/postgresql/$major/bin" \
    "$0" "$major" --inside "${@:-$OPTIDB_ROOT/tests/e2e/test_worker.py}" 2>&1 | tee "$log_file"
result=$(grep -E '^[0-9]+ (passed|failed)|^=+ [0-9]+ passed' "$log_file" | tail -1 || true)
mkdir -p "$majors_dir"
echo "  pg_cron tests (Debian postgresql-$major-cron $cron in the chroot, on package $package):" \
    "$result ($(($(date +%s) - started)) s)" >"$majors_dir/cron$major.txt"
cat "$majors_dir/cron$major.txt" >&2
