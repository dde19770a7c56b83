#!/usr/bin/env bash
# Lint the installed extension script (bootstrap + generated functions + views + security) and
# the upgrade scripts with pgspot: unqualified references an attacker could capture through
# search_path, unsafe SECURITY DEFINER functions, CREATE OR REPLACE of objects a user could
# pre-create. Fails on any error or warning.
set -euo pipefail
. "$(dirname "$0")/env.sh"
version=$(grep -Po '^version = "\K[^"]+' "$OPTIDB_ROOT/Cargo.toml" | head -1)
pgspot=("$OPTIDB_ROOT/target/venv/bin/pgspot")
for script in "$("$PG_CONFIG" --sharedir)/extension/optidb--$version.sql" "$OPTIDB_ROOT"/sql/optidb--*--*.sql; do
    summary=$("${pgspot[@]}" --summary-only "$script")
    log "pgspot $(basename "$script"): $summary"
    case "$summary" in
    *"Errors: 0 Warnings: 0 Unknown: 0"*) ;;
    *) "${pgspot[@]}" "$script"; exit 1 ;;
    esac
done
