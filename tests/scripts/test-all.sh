#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what it needs, then runs
#   1. cargo fmt --check and clippy (no warnings),
#   2. core unit tests (plain `cargo test`, no server),
#   3. #[pg_test] SQL-surface tests inside a real backend (`cargo pgrx test`),
#   4. the Debian package: built, installed with dpkg, README quick start on a fresh cluster;
#      the Docker image built from it (private dockerd, local base image) and its container run,
#   5. the symbol-isolation check on the built library, pgspot on the installed extension script,
#   6. end-to-end tests (pytest) against a real cluster with the demo workload committed,
#   7. PostgreSQL 18 (from PyPI): #[pg_test] tests and the end-to-end tests without hypopg/pg_cron.
set -euo pipefail
. "$(dirname "$0")/env.sh"
cd "$OPTIDB_ROOT"

"$OPTIDB_ROOT/tests/scripts/setup-machine.sh"

log "1/7 cargo fmt --check and clippy"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

log "2/7 core unit tests"
cargo test -p optidb-core --quiet

log "3/7 #[pg_test] tests in a real backend"
pgrx_data=/tmp/optidb-pgrx-test
rm -rf "$pgrx_data"
mkdir -p "$pgrx_data"
chown postgres "$pgrx_data"
cargo pgrx test pg15 --runas postgres --pgdata "$pgrx_data/data"

log "4/7 the Debian package (dpkg -i, preloaded, README quick start)"
"$OPTIDB_ROOT/tests/scripts/test-package.sh"
log "4/7 the Docker image of that package: built offline, run, answering"
"$OPTIDB_ROOT/tests/scripts/docker-test.sh"

log "5/7 build, install, symbol check, pgspot"
"$OPTIDB_ROOT/tests/scripts/install-extension.sh"
"$OPTIDB_ROOT/tests/scripts/lint-sql.sh"

log "6/7 end-to-end tests against a real cluster"
"$OPTIDB_ROOT/tests/scripts/e2e.sh"

log "7/7 PostgreSQL 18: the same build, its #[pg_test] and end-to-end tests"
"$OPTIDB_ROOT/tests/scripts/test-major.sh" 18
