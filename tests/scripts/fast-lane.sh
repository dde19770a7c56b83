#!/usr/bin/env bash
# The fast lane, minutes warm: cargo fmt --check, clippy (no warnings), core unit tests, a debug
# build installed into $PG_CONFIG's server, then the golden-output layer: PostgreSQL's own
# pg_regress runs tests/regress/sql/*.sql against a throwaway cluster (own port, preloaded like
# the e2e cluster: cluster.sh) and compares each output with tests/regress/expected/*.out. A
# difference prints target/regress/regression.diffs and fails.
# Usage: fast-lane.sh [--bless] [--golden-only] [TEST...]
#   --bless        after a reviewed change: copy the outputs of the failing tests over
#                  tests/regress/expected/ (review `git diff tests/regress` before committing)
#   --golden-only  skip fmt, clippy and the core tests (the build and install still run)
#   TEST...        only these golden tests (names without .sql), in the order given
# OPTIDB_FAST_PGPORT / OPTIDB_FAST_PGDATA: the throwaway cluster (default 55450, /tmp/optidb-fast).
set -euo pipefail
. "$(dirname "$0")/env.sh"
cd "$OPTIDB_ROOT"

bless=false
checks=true
tests=()
for arg in "$@"; do
    case "$arg" in
    --bless) bless=true ;;
    --golden-only) checks=false ;;
    -*) die "unknown option $arg (usage: fast-lane.sh [--bless] [--golden-only] [TEST...])" ;;
    *) tests+=("$arg") ;;
    esac
done

if $checks; then
    log "fast lane: cargo fmt --check and clippy"
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --quiet -- -D warnings
    log "fast lane: core unit tests"
    cargo test -p optidb-core --quiet
fi

"$OPTIDB_ROOT/tests/scripts/install-extension.sh"

# A cluster of its own, started and stopped the way every other test cluster is.
export OPTIDB_PGDATA=${OPTIDB_FAST_PGDATA:-/tmp/optidb-fast/data}
export OPTIDB_PGPORT=${OPTIDB_FAST_PGPORT:-55450}
cluster="$OPTIDB_ROOT/tests/scripts/cluster.sh"
"$cluster" stop
rm -rf "$(dirname "$OPTIDB_PGDATA")"
trap '"$cluster" stop' EXIT
"$cluster" start

regress=$OPTIDB_ROOT/tests/regress
out=$OPTIDB_ROOT/target/regress
rm -rf "$out"
mkdir -p "$out"
# The tests in file-name order unless named; each is a self-contained script.
if [ ${#tests[@]} -eq 0 ]; then
    for f in "$regress"/sql/*.sql; do tests+=("$(basename "$f" .sql)"); done
fi

# pg_regress --use-existing creates no database: the tests' own, with both extensions.
pg -q -d postgres -c "CREATE DATABASE optidb_regress"
pg -q -d optidb_regress -c "CREATE EXTENSION pg_stat_statements" -c "CREATE EXTENSION optidb"
if $bless; then
    # A new test has no expected output yet: pg_regress needs a file to compare with.
    for t in "${tests[@]}"; do touch "$regress/expected/$t.out"; done
fi

log "fast lane: pg_regress over tests/regress (${#tests[@]} tests, port $OPTIDB_PGPORT)"
status=0
# pg_regress ships with the server (PGXS); it runs each test with psql and diffs the output.
"$(dirname "$("$PG_CONFIG" --pgxs)")/../test/regress/pg_regress" \
    --use-existing --host="$OPTIDB_PGSOCKET" --port="$OPTIDB_PGPORT" --user=postgres \
    --bindir="$PGBIN" --inputdir="$regress" --outputdir="$out" --dbname=optidb_regress \
    "${tests[@]}" || status=$?

if [ "$status" -ne 0 ]; then
    [ -f "$out/regression.diffs" ] && cat "$out/regression.diffs"
    if $bless; then
        for t in "${tests[@]}"; do
            cmp -s "$out/results/$t.out" "$regress/expected/$t.out" 2>/dev/null ||
                { cp "$out/results/$t.out" "$regress/expected/$t.out" && log "blessed $t"; }
        done
        log "expected output updated: review git diff tests/regress before committing"
        exit 0
    fi
    die "golden output differs (above; outputs in target/regress/results); after review, bless it with: tests/scripts/fast-lane.sh --golden-only --bless"
fi
log "fast lane: passed"
