#!/usr/bin/env bash
# Build optidb and install it into the Debian PostgreSQL (needs root for the install step).
# Usage: install-extension.sh [--release]
set -euo pipefail
. "$(dirname "$0")/env.sh"
cd "$OPTIDB_ROOT"
log "building and installing optidb ${1:-(debug)}"
cargo pgrx install --pg-config "$PG_CONFIG" "$@" >/dev/null
"$OPTIDB_ROOT/tests/scripts/check-symbols.sh"
