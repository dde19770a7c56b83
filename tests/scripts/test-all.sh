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
#   7. PostgreSQL 18, 16 and 17 (PyPI builds, hypopg built against each): clippy, #[pg_test]
#      tests and end-to-end tests with hypopg: all of them on 18, a stated subset on 16 and 17,
#      without pg_cron (none is installable for 16+ here); per major counts at the end,
#   8. pg_upgrade from 15 to 18 keeps optidb's history and advice, and optidb keeps working.
set -euo pipefail
. "$(dirname "$0")/env.sh"
cd "$OPTIDB_ROOT"

"$OPTIDB_ROOT/tests/scripts/setup-machine.sh"

log "1/8 the fast lane: fmt, clippy, core unit tests, build + install, golden files"
"$OPTIDB_ROOT/tests/scripts/fast-lane.sh"

log "2/8 pgspot on the installed extension script"
"$OPTIDB_ROOT/tests/scripts/lint-sql.sh"

log "3/8 end-to-end tests against a real cluster"
"$OPTIDB_ROOT/tests/scripts/e2e.sh"

log "4/8 #[pg_test] tests in a real backend"
pgrx_data=/tmp/optidb-pgrx-test
rm -rf "$pgrx_data"
mkdir -p "$pgrx_data"
chown postgres "$pgrx_data"
cargo pgrx test pg15 --runas postgres --pgdata "$pgrx_data/data"

log "5/8 the Debian package (dpkg -i, preloaded, README quick start)"
"$OPTIDB_ROOT/tests/scripts/test-package.sh"

log "6/8 the Docker image of that package: built offline, run, answering"
"$OPTIDB_ROOT/tests/scripts/docker-test.sh"

# The newest major runs every end-to-end test; 16 and 17 run this subset (the CI budget: the
# whole suite takes about 12 minutes on 18 here, the subset under 3): scans and plans, the
# statement hooks and their exact counts, recommendations and hypopg simulations, the SQL API
# and the metric views.
MAJOR_SUBSET=(tests/e2e/test_scan.py tests/e2e/test_api.py tests/e2e/test_latency.py
    tests/e2e/test_hooks_exact.py tests/e2e/test_recommend.py tests/e2e/test_sampled_plans.py
    tests/e2e/test_views.py)
log "7/8 PostgreSQL 18, 16, 17: the same code, its #[pg_test] and end-to-end tests with hypopg"
"$OPTIDB_ROOT/tests/scripts/test-major.sh" 18
"$OPTIDB_ROOT/tests/scripts/test-major.sh" 16 "${MAJOR_SUBSET[@]}"
"$OPTIDB_ROOT/tests/scripts/test-major.sh" 17 "${MAJOR_SUBSET[@]}"

log "8/8 pg_upgrade from 15 to 18 keeps optidb"
"$OPTIDB_ROOT/tests/scripts/pg-upgrade-test.sh"

log "other majors:"
cat "${OPTIDB_MAJORS_DIR:-/tmp/optidb-majors}"/pg{18,16,17}/summary.txt >&2
