#!/usr/bin/env bash
# End-to-end layer alone: a fresh cluster on its own port, the demo shop and its workload, then
# pytest (extra arguments go to pytest; given test files, only those run). Needs an installed extension (install-extension.sh).
set -euo pipefail
. "$(dirname "$0")/env.sh"
# OPTIDB_E2E_PGDATA/OPTIDB_E2E_PGPORT: a second e2e cluster beside this one (another worktree).
export OPTIDB_PGDATA=${OPTIDB_E2E_PGDATA:-/tmp/optidb-e2e/data} OPTIDB_PGPORT=${OPTIDB_E2E_PGPORT:-55433}
export OPTIDB_DB=optidb_e2e_demo
"$OPTIDB_ROOT/tests/scripts/cluster.sh" stop
rm -rf "$(dirname "$OPTIDB_PGDATA")"
trap '"$OPTIDB_ROOT/tests/scripts/cluster.sh" stop' EXIT
"$OPTIDB_ROOT/tests/scripts/cluster.sh" start
WORKLOAD_SECONDS=${WORKLOAD_SECONDS:-10} "$OPTIDB_ROOT/tests/scripts/run-workload.sh"
# Test files or node ids among the arguments run alone; otherwise the whole directory.
targets=("$OPTIDB_ROOT/tests/e2e")
for arg in "$@"; do
    case "$arg" in *.py | *.py::*) targets=() ;; esac
done
"$OPTIDB_ROOT/target/venv/bin/pytest" -q -p no:cacheprovider "${targets[@]}" "$@"
