#!/usr/bin/env bash
# Build the Debian package of the release build for one PostgreSQL major:
# target/optidb-postgresql-<major>_<version>_<arch>.deb (cargo pgrx package + dpkg-deb).
# It holds the library, the control file, the install and upgrade scripts, laid out as Debian's
# postgresql-<major> expects them (/usr/lib/postgresql/<major>/lib,
# /usr/share/postgresql/<major>/extension); it depends on postgresql-<major> and recommends
# hypopg. Prints the package's path.
#
# Usage: package.sh [16|17|18]
#   no argument: the major of $PG_CONFIG (Debian's PostgreSQL 15 here).
#   16, 17, 18: built against the PyPI build of that major that tests/scripts/test-major.sh
#   unpacked under $OPTIDB_MAJORS_DIR (`test-major.sh NN --prepare` makes it alone), with its
#   PGRX_HOME. test-major.sh installs the release build it tests, so here cargo has nothing
#   left to compile. The PyPI server is built on Debian 12 (glibc 2.36) like this machine: the
#   library needs no newer glibc symbol than bookworm's, and the package says so (libc6 >=).
set -euo pipefail
. "$(dirname "$0")/env.sh"
cd "$OPTIDB_ROOT"
if [ -n "${1:-}" ] && [ "$1" != 15 ]; then
    majors_dir=${OPTIDB_MAJORS_DIR:-/tmp/optidb-majors}
    PG_CONFIG=$majors_dir/pg$1/pginstall/bin/pg_config
    export PGRX_HOME="${OPTIDB_MAJORS_PGRX_DIR:-$majors_dir}/pgrx$1"
    [ -x "$PG_CONFIG" ] && grep -q "pg$1" "$PGRX_HOME/config.toml" 2>/dev/null ||
        die "no PostgreSQL $1 build prepared: run tests/scripts/test-major.sh $1 --prepare"
fi
major=$("$PG_CONFIG" --version | grep -oP 'PostgreSQL \K[0-9]+')
version=$(grep -Po '^version = "\K[^"]+' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
name=optidb-postgresql-$major
deb="$OPTIDB_ROOT/target/${name}_${version}_${arch}.deb"

log "cargo pgrx package (release build) against $PG_CONFIG"
cargo pgrx package --pg-config "$PG_CONFIG" >/dev/null
staged="$OPTIDB_ROOT/target/release/optidb-pg$major"
libdir=$staged$("$PG_CONFIG" --pkglibdir)
extdir=$staged$("$PG_CONFIG" --sharedir)/extension
"$OPTIDB_ROOT/tests/scripts/check-symbols.sh" "$libdir/optidb.so"
[ -f "$extdir/optidb--$version.sql" ] || die "no install script in $extdir"
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
# Debian's paths, whatever the build server's are (for 15 they are the same).
deb_lib=$root/usr/lib/postgresql/$major/lib
deb_ext=$root/usr/share/postgresql/$major/extension
mkdir -p "$deb_lib" "$deb_ext"
cp "$libdir/optidb.so" "$deb_lib/"
cp "$extdir"/optidb* "$deb_ext/"
strip --strip-debug "$deb_lib/optidb.so"
# Upgrade scripts from every earlier release (pgrx packages only the current install script).
cp sql/optidb--*--*.sql "$deb_ext/"
# The newest glibc symbol version the library needs (bookworm's 2.36 at most).
glibc=$(objdump -T "$deb_lib/optidb.so" | grep -oP 'GLIBC_\K[0-9.]+' | sort -V | tail -1)
doc="$root/usr/share/doc/$name"
mkdir -p "$doc" "$root/DEBIAN"
cp README.md "$doc/"
cat >"$doc/copyright" <<TXT
optidb: find, explain and fix slow queries from inside PostgreSQL.
License: PostgreSQL
TXT
cat >"$root/DEBIAN/control" <<CONTROL
Package: $name
Version: $version
Architecture: $arch
Maintainer: optidb maintainers <maintainers@optidb.invalid>
Section: database
Priority: optional
Depends: postgresql-$major, libc6 (>= $glibc)
Recommends: postgresql-$major-hypopg
Suggests: postgresql-$major-cron
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Description: find, explain and fix slow queries from inside PostgreSQL $major
 optidb reads pg_stat_statements, the catalog and EXPLAIN plans, records execution-time
 histograms with its own hooks, recommends indexes, statistics fixes and rewrites, proves
 them with hypopg, and keeps metric views current with a background worker.
 Add optidb to shared_preload_libraries, restart, then CREATE EXTENSION optidb.
CONTROL
find "$root" -type d -exec chmod 755 {} +
(cd "$root" && find usr -type f -exec md5sum {} + >DEBIAN/md5sums)
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
log "built $deb"
echo "$deb"
