#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what it needs, then runs
#   1. the fast lane (fast-lane.sh): cargo fmt --check, clippy (no warnings), core unit tests,
#      the debug build installed and its symbol check, the golden files (pg_regress) -- first,
#      so a broken build, lint or changed answer fails in minutes, not after the e2e tests,
#   2. pgspot on the installed extension script and every upgrade script,
#   3. end-to-end tests (pytest) against a real cluster with the demo workload committed, on the
#      fast lane's install,
#   4. #[pg_test] SQL-surface tests inside a real backend (`cargo pgrx test`; after the e2e
#      tests, since it installs a build with the test functions over the fast lane's),
#   5. the Debian package: built, installed with dpkg, README quick start on a fresh cluster,
#   6. the Docker image built from that package (private dockerd, local base image), run and
#      answering,
#   7. PostgreSQL 18 (from PyPI): #[pg_test] tests and the end-to-end tests without hypopg/pg_cron.
set -euo pipefail
. "$(dirname "$0")/env.sh"
cd "$OPTIDB_ROOT"

"$OPTIDB_ROOT/tests/scripts/setup-machine.sh"

log "1/7 the fast lane: fmt, clippy, core unit tests, build + install, golden files"
"$OPTIDB_ROOT/tests/scripts/fast-lane.sh"

log "2/7 pgspot on the installed extension script"
"$OPTIDB_ROOT/tests/scripts/lint-sql.sh"

log "3/7 end-to-end tests against a real cluster"
"$OPTIDB_ROOT/tests/scripts/e2e.sh"

log "4/7 #[pg_test] tests in a real backend"
pgrx_data=/tmp/optidb-pgrx-test
rm -rf "$pgrx_data"
mkdir -p "$pgrx_data"
chown postgres "$pgrx_data"
cargo pgrx test pg15 --runas postgres --pgdata "$pgrx_data/data"

log "5/7 the Debian package (dpkg -i, preloaded, README quick start)"
"$OPTIDB_ROOT/tests/scripts/test-package.sh"

log "6/7 the Docker image of that package: built offline, run, answering"
"$OPTIDB_ROOT/tests/scripts/docker-test.sh"

log "7/7 PostgreSQL 18: the same build, its #[pg_test] and end-to-end tests"
"$OPTIDB_ROOT/tests/scripts/test-major.sh" 18
