#!/usr/bin/env bash
# Fails if the built library defines PostgreSQL internals itself (libpg_query's copies leaking
# past the link wrapper): the backend would crash on its first SPI call.
# Usage: check-symbols.sh [LIBRARY...]   (default: the debug and release builds in target/)
set -euo pipefail
. "$(dirname "$0")/env.sh"
status=0
found=0
libraries=("$@")
[ $# -gt 0 ] || libraries=("$OPTIDB_ROOT"/target/{debug,release}/liboptidb.so)
for so in "${libraries[@]}"; do
    [ -f "$so" ] || continue
    found=1
    # nm output is kept in a variable: `nm | grep -q` would fail on SIGPIPE under pipefail.
    symbols=$(nm "$so")
    for sym in palloc errstart CurrentMemoryContext MemoryContextAlloc; do
        if grep -qE " [A-TV-Za-z] $sym\$" <<<"$symbols"; then
            echo "FAIL: $so defines $sym itself (libpg_query symbols not isolated)" >&2
            status=1
        fi
    done
    grep -qE " U palloc$" <<<"$symbols" || { echo "FAIL: $so does not import palloc from the server" >&2; status=1; }
done
[ $found = 1 ] || die "no liboptidb.so built yet"
[ $status = 0 ] && log "symbol check: palloc and friends come from the server"
exit $status
