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
#      without pg_cron on these servers; the e2e tests run on the release build; 16 and 17 with
#      the other preload order (optidb first), 15 and 18 with pg_stat_statements first,
#   8. the package of each other major, optidb-postgresql-16/17/18, from the release build step
#      7 tested (no new compile), installed with dpkg and quick-started as README says: 17 on
#      Debian trixie's postgresql-17 and 18 on sid's postgresql-18 (debootstrap chroots, cached
#      as tarballs under /tmp/optidb-chroots), 16 on the PyPI build in a private dpkg root (no
#      Debian postgresql-16 exists here); then the pg_cron tests on 17 and 18 against Debian's
#      own pg_cron in those chroots (16: no pg_cron exists here); per major summary at the end,
#   9. pg_upgrade from 15 to 18 keeps optidb's history and advice, and optidb keeps working.
set -euo pipefail
. "$(dirname "$0")/env.sh"
cd "$OPTIDB_ROOT"

"$OPTIDB_ROOT/tests/scripts/setup-machine.sh"

log "1/9 the fast lane: fmt, clippy, core unit tests, build + install, golden files"
"$OPTIDB_ROOT/tests/scripts/fast-lane.sh"

log "2/9 pgspot on the installed extension script"
"$OPTIDB_ROOT/tests/scripts/lint-sql.sh"

log "3/9 end-to-end tests against a real cluster"
"$OPTIDB_ROOT/tests/scripts/e2e.sh"

log "4/9 #[pg_test] tests in a real backend"
pgrx_data=/tmp/optidb-pgrx-test
rm -rf "$pgrx_data"
mkdir -p "$pgrx_data"
chown postgres "$pgrx_data"
cargo pgrx test pg15 --runas postgres --pgdata "$pgrx_data/data"

log "5/9 the Debian package (dpkg -i, preloaded, README quick start)"
"$OPTIDB_ROOT/tests/scripts/test-package.sh" 15

log "6/9 the Docker image of that package: built offline, run, answering"
"$OPTIDB_ROOT/tests/scripts/docker-test.sh"

# The newest major runs every end-to-end test; 16 and 17 run this subset (the CI budget: the
# whole suite takes about 12 minutes on 18 here, the subset under 3): scans and plans, the
# statement hooks and their exact counts, recommendations and hypopg simulations, the SQL API
# and the metric views.
MAJOR_SUBSET=(tests/e2e/test_scan.py tests/e2e/test_api.py tests/e2e/test_latency.py
    tests/e2e/test_hooks_exact.py tests/e2e/test_recommend.py tests/e2e/test_sampled_plans.py
    tests/e2e/test_views.py)
# Step 8's Debian chroots (debootstrap + apt: network and dpkg, little CPU), made or found
# cached while step 7 compiles and tests.
chroots_log=/tmp/optidb-chroots-cache.log
("$OPTIDB_ROOT/tests/scripts/debian-chroot.sh" cache 17 &&
    "$OPTIDB_ROOT/tests/scripts/debian-chroot.sh" cache 18) >"$chroots_log" 2>&1 &
chroots_pid=$!
log "7/9 PostgreSQL 18, 16, 17: the same code, its #[pg_test] and end-to-end tests with hypopg"
"$OPTIDB_ROOT/tests/scripts/test-major.sh" 18
# Every capability under both preload orders (hooks chained before or after
# pg_stat_statements'): 15 and 18 run 'pg_stat_statements,optidb', 16 and 17
# 'optidb,pg_stat_statements' (OPTIDB_PRELOAD_ORDER: the e2e cluster and every cluster a test
# starts without an order of its own), so the reversed order costs no extra run.
OPTIDB_PRELOAD_ORDER=optidb-first "$OPTIDB_ROOT/tests/scripts/test-major.sh" 16 "${MAJOR_SUBSET[@]}"
OPTIDB_PRELOAD_ORDER=optidb-first "$OPTIDB_ROOT/tests/scripts/test-major.sh" 17 "${MAJOR_SUBSET[@]}"

log "8/9 the packages of 16, 17, 18: dpkg on each major's PostgreSQL, quick start; pg_cron"
wait "$chroots_pid" || { cat "$chroots_log" >&2; die "the trixie/sid chroots (log above)"; }
majors_dir=${OPTIDB_MAJORS_DIR:-/tmp/optidb-majors}
for major in 16 17 18; do
    started=$(date +%s)
    "$OPTIDB_ROOT/tests/scripts/test-package.sh" "$major"
    case "$major" in
    16) where="PyPI 16.15 in a private dpkg root (--force-depends: no Debian postgresql-16 here)" ;;
    17) where="Debian trixie's postgresql-17 (chroot)" ;;
    18) where="Debian sid's postgresql-18 (chroot)" ;;
    esac
    echo "  package optidb-postgresql-$major: dpkg-installed on $where, README quick start ok" \
        "($(($(date +%s) - started)) s)" >"$majors_dir/package$major.txt"
done
echo "  pg_cron: none exists for 16 here (no Debian postgresql-16-cron; bookworm's supports 15)" \
    >"$majors_dir/cron16.txt"
"$OPTIDB_ROOT/tests/scripts/test-cron-major.sh" 17
"$OPTIDB_ROOT/tests/scripts/test-cron-major.sh" 18

log "9/9 pg_upgrade from 15 to 18 keeps optidb"
"$OPTIDB_ROOT/tests/scripts/pg-upgrade-test.sh"

log "PostgreSQL 15: steps 3 to 5 above (whole e2e, #[pg_test], package optidb-postgresql-15 on"
log "this machine's Debian postgresql-15 with its pg_cron); other majors:"
for major in 18 16 17; do
    cat "$majors_dir/pg$major/summary.txt" "$majors_dir/package$major.txt" \
        "$majors_dir/cron$major.txt" >&2
done
