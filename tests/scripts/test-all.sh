#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what it needs, then runs
#   1. cargo fmt --check and clippy (no warnings),
#   2. core unit tests (plain `cargo test`, no server),
#   3. #[pg_test] SQL-surface tests inside a real backend (`cargo pgrx test`),
#   4. the symbol-isolation check on the built library,
#   5. end-to-end tests (pytest) against a real cluster with the demo workload committed.
set -euo pipefail
. "$(dirname "$0")/env.sh"
cd "$OPTIDB_ROOT"

"$OPTIDB_ROOT/tests/scripts/setup-machine.sh"

log "1/5 cargo fmt --check and clippy"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

log "2/5 core unit tests"
cargo test -p optidb-core --quiet

log "3/5 #[pg_test] tests in a real backend"
pgrx_data=/tmp/optidb-pgrx-test
rm -rf "$pgrx_data"
mkdir -p "$pgrx_data"
chown postgres "$pgrx_data"
cargo pgrx test pg15 --runas postgres --pgdata "$pgrx_data/data"

log "4/5 build, install, symbol check"
"$OPTIDB_ROOT/tests/scripts/install-extension.sh"

log "5/5 end-to-end tests against a real cluster"
export OPTIDB_PGDATA=/tmp/optidb-e2e/data OPTIDB_PGPORT=55433 OPTIDB_DB=optidb_e2e_demo
"$OPTIDB_ROOT/tests/scripts/cluster.sh" stop
rm -rf "$(dirname "$OPTIDB_PGDATA")"
trap '"$OPTIDB_ROOT/tests/scripts/cluster.sh" stop' EXIT
"$OPTIDB_ROOT/tests/scripts/cluster.sh" start
WORKLOAD_SECONDS=${WORKLOAD_SECONDS:-10} "$OPTIDB_ROOT/tests/scripts/run-workload.sh"
"$OPTIDB_ROOT/target/venv/bin/pytest" -q -p no:cacheprovider "$OPTIDB_ROOT/tests/e2e"
