#!/usr/bin/env bash
# Fails if the built library defines PostgreSQL internals itself (libpg_query's copies leaking
# past the link wrapper): the backend would crash on its first SPI call.
set -euo pipefail
. "$(dirname "$0")/env.sh"
status=0
found=0
for so in "$OPTIDB_ROOT"/target/{debug,release}/liboptidb.so; do
    [ -f "$so" ] || continue
    found=1
    for sym in palloc errstart CurrentMemoryContext MemoryContextAlloc; do
        if nm "$so" | grep -qE " [A-Za-z] $sym\$" && ! nm "$so" | grep -qE " U $sym\$"; then
            echo "FAIL: $so defines $sym itself (libpg_query symbols not isolated)" >&2
            status=1
        fi
    done
    nm "$so" | grep -qE " U palloc$" || { echo "FAIL: $so does not import palloc from the server" >&2; status=1; }
done
[ $found = 1 ] || die "no liboptidb.so built yet"
[ $status = 0 ] && log "symbol check: palloc and friends come from the server"
exit $status
