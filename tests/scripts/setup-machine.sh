#!/usr/bin/env bash
# Install what building and testing optidb needs on a fresh Debian 12 machine (idempotent):
# PostgreSQL 15 with server headers, pg_stat_statements (contrib), hypopg, pg_cron, clang for
# bindgen, sudo for `cargo pgrx test --runas`, headless Chromium (the HTML report test),
# Prometheus and its postgres_exporter (the monitoring test), make and gcc (hypopg is built
# with PGXS against the other majors, tests/scripts/test-major.sh),
# cargo-pgrx 0.18.0, and a Python venv for the
# end-to-end tests.
set -euo pipefail
. "$(dirname "$0")/env.sh"

packages=(postgresql-15 postgresql-server-dev-15 postgresql-contrib postgresql-15-hypopg
          postgresql-15-cron clang libclang-dev sudo python3-venv binutils
          make gcc libc6-dev chromium fonts-dejavu-core prometheus prometheus-postgres-exporter)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! cargo pgrx --version 2>/dev/null | grep -q '0.18.0'; then
    log "installing cargo-pgrx 0.18.0 (about 5 minutes)"
    cargo install cargo-pgrx --version 0.18.0 --locked
fi
if ! grep -q "pg15" "${PGRX_HOME:-$HOME/.pgrx}/config.toml" 2>/dev/null; then
    log "pointing cargo-pgrx at the Debian PostgreSQL $PG_MAJOR"
    cargo pgrx init --pg15 "$PG_CONFIG" >/dev/null
fi

venv="$OPTIDB_ROOT/target/venv"
# asyncpg: the one client at hand that fetches a portal in chunks (protocol-level Execute with
# a row limit), for the hook tests.
if [ ! -x "$venv/bin/pytest" ] || [ ! -x "$venv/bin/pgspot" ] \
        || ! "$venv/bin/python" -c "import asyncpg" 2>/dev/null; then
    log "creating the Python venv for end-to-end tests and the SQL linter"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check pytest 'psycopg[binary]' pgspot \
        asyncpg
fi
