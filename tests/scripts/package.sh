#!/usr/bin/env bash
# Build the Debian package of the release build for the local PostgreSQL major:
# target/optidb-postgresql-<major>_<version>_<arch>.deb (cargo pgrx package + dpkg-deb).
# It holds the library, the control file, the install and upgrade scripts; it depends on
# postgresql-<major> and recommends hypopg. Prints the package's path.
set -euo pipefail
. "$(dirname "$0")/env.sh"
cd "$OPTIDB_ROOT"
version=$(grep -Po '^version = "\K[^"]+' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
name=optidb-postgresql-$PG_MAJOR
deb="$OPTIDB_ROOT/target/${name}_${version}_${arch}.deb"

log "cargo pgrx package (release build) against $PG_CONFIG"
cargo pgrx package --pg-config "$PG_CONFIG" >/dev/null
staged="$OPTIDB_ROOT/target/release/optidb-pg$PG_MAJOR"
libdir=$("$PG_CONFIG" --pkglibdir)
sharedir=$("$PG_CONFIG" --sharedir)
"$OPTIDB_ROOT/tests/scripts/check-symbols.sh" "$staged$libdir/optidb.so"
[ -f "$staged$sharedir/extension/optidb--$version.sql" ] || die "no install script in $staged"

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
cp -a "$staged/." "$root/"
strip --strip-debug "$root$libdir/optidb.so"
# Upgrade scripts from every earlier release (pgrx packages only the current install script).
cp sql/optidb--*--*.sql "$root$sharedir/extension/"
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
Depends: postgresql-$PG_MAJOR, libc6
Recommends: postgresql-$PG_MAJOR-hypopg
Suggests: postgresql-$PG_MAJOR-cron
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Description: find, explain and fix slow queries from inside PostgreSQL $PG_MAJOR
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
