#!/usr/bin/env bash
# Lint the installed extension script (bootstrap + generated functions + views + security) with
# pgspot: unqualified references an attacker could capture through search_path, unsafe
# SECURITY DEFINER functions, CREATE OR REPLACE of objects a user could pre-create. Fails on
# any error or warning.
set -euo pipefail
. "$(dirname "$0")/env.sh"
version=$(grep -Po '^version = "\K[^"]+' "$OPTIDB_ROOT/Cargo.toml" | head -1)
script="$("$PG_CONFIG" --sharedir)/extension/optidb--$version.sql"
log "pgspot $script"
"$OPTIDB_ROOT/target/venv/bin/pgspot" --summary-only "$script" | tee /tmp/optidb-pgspot.txt
grep -q "Errors: 0 Warnings: 0 Unknown: 0" /tmp/optidb-pgspot.txt || {
    "$OPTIDB_ROOT/target/venv/bin/pgspot" "$script"
    exit 1
}
