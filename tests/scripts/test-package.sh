#!/usr/bin/env bash
# The path a DBA takes: build the Debian package of one PostgreSQL major, install it with dpkg
# (no cargo involved) on that major's PostgreSQL, start a fresh cluster with optidb preloaded,
# and run the README's quick-start block as written (a small workload runs where it says the
# application runs). Fails unless the quick start found the missing index, proved it with
# hypopg and recorded execution times.
#
# Usage: test-package.sh [15|16|17|18]   (default 15). Where the package is installed:
#   15      this machine's Debian 12 PostgreSQL 15 (dpkg -i on the host).
#   17, 18  Debian's own postgresql-17 (trixie) / postgresql-18 (sid) with the distribution's
#           hypopg and pg_cron, in a chroot (tests/scripts/debian-chroot.sh): dpkg -i inside
#           it, then the cluster runs inside it. This checks the bookworm-built library on that
#           release's newer glibc with a real load.
#   16      Debian has no postgresql-16 on this mirror (bookworm stops at 15, trixie has 17).
#           The server is the PyPI build of 16 that tests/scripts/test-major.sh unpacked, with
#           the hypopg it built: that install is copied into a private dpkg root laid out as
#           Debian's postgresql-16 is (bin and lib in usr/lib/postgresql/16, share in
#           usr/share/postgresql/16, the PyPI tree's own share path a symlink to it), without
#           any optidb file; then `dpkg --root=<that root> --force-depends -i` installs the
#           package there. --force-depends, because the dependency postgresql-16 is not a
#           Debian package in that root (its files are). The PyPI server then loads optidb
#           from where dpkg put it (its pkglibdir is usr/lib/postgresql/16/lib).
# Settings: OPTIDB_PACKAGE_PGPORT (default 55436), the cluster's data under
#   /tmp/optidb-package-<major>.
set -euo pipefail
. "$(dirname "$0")/env.sh"
major=${1:-15}
export OPTIDB_PGDATA=/tmp/optidb-package-$major/data OPTIDB_PGPORT=${OPTIDB_PACKAGE_PGPORT:-55436}
cluster="$OPTIDB_ROOT/tests/scripts/cluster.sh"
chroot_sh="$OPTIDB_ROOT/tests/scripts/debian-chroot.sh"
db=shop

# dpkg -i "$1" (the .deb) for this major; exports PGBIN for the quick start.
install_package() {
    local deb=$1 package
    package=$(dpkg-deb -f "$deb" Package)
    case "$major" in
    15)
        log "dpkg -i $(basename "$deb")"
        dpkg -i "$deb" >/dev/null 2>&1 || die "dpkg -i $deb failed"
        dpkg-query -W -f '${Status}\n' "$package" | grep -qx 'install ok installed' ||
            die "$package not installed"
        [ -z "$(dpkg --verify "$package")" ] || die "installed files differ from the package"
        ;;
    17 | 18)
        local dir
        dir=$("$chroot_sh" prepare "$major" | tail -1)
        mkdir -p "$dir/var/cache/optidb"
        cp "$deb" "$dir/var/cache/optidb/"
        log "dpkg -i $(basename "$deb") in the $(basename "$dir") chroot"
        "$chroot_sh" root "$major" dpkg -i "/var/cache/optidb/$(basename "$deb")" >/dev/null ||
            die "dpkg -i $deb failed in $dir"
        [ "$("$chroot_sh" root "$major" dpkg-query -W -f '${Status}' "$package")" = \
            'install ok installed' ] || die "$package not installed in $dir"
        [ -z "$("$chroot_sh" root "$major" dpkg --verify "$package")" ] ||
            die "installed files differ from the package in $dir"
        export PGBIN=/usr/lib/postgresql/$major/bin # a path inside the chroot
        ;;
    16)
        local root=/tmp/optidb-package-16-root
        local pyinst=${OPTIDB_MAJORS_DIR:-/tmp/optidb-majors}/pg16/pginstall share
        [ -x "$pyinst/bin/postgres" ] || die "no PyPI PostgreSQL 16: test-major.sh 16 --prepare"
        rm -rf "$root"
        mkdir -p "$root/usr/lib/postgresql" "$root/usr/share/postgresql" \
            "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates"
        touch "$root/var/lib/dpkg/status"
        cp -a "$pyinst" "$root/usr/lib/postgresql/16"
        share=$("$pyinst/bin/pg_config" --sharedir)
        share=$root/usr/lib/postgresql/16${share#"$pyinst"}
        mv "$share" "$root/usr/share/postgresql/16"
        ln -s "$root/usr/share/postgresql/16" "$share"
        [ "$("$root/usr/lib/postgresql/16/bin/pg_config" --pkglibdir)" = \
            "$root/usr/lib/postgresql/16/lib" ] || die "the PyPI 16 tree is not laid out as Debian's"
        rm -f "$root"/usr/lib/postgresql/16/lib/optidb* "$root"/usr/share/postgresql/16/extension/optidb*
        log "dpkg --root=$root --force-depends -i $(basename "$deb") (PyPI PostgreSQL 16 in it)"
        dpkg --root="$root" --force-depends -i "$deb" >/dev/null ||
            die "dpkg --root=$root -i $deb failed"
        dpkg --root="$root" -s "$package" | grep -qx 'Status: install ok installed' ||
            die "$package not installed in $root"
        [ -z "$(dpkg --root="$root" --verify "$package")" ] ||
            die "installed files differ from the package in $root"
        chmod -R a+rX "$root"
        export PGBIN=$root/usr/lib/postgresql/16/bin
        ;;
    *) die "usage: test-package.sh [15|16|17|18]" ;;
    esac
}

# The package test-major.sh NN built in this run when it is current (cargo would compile again
# after another major's build: pgrx's bindings follow the last pg_config); otherwise build it.
package() {
    local version deb
    version=$(grep -Po '^version = "\K[^"]+' "$OPTIDB_ROOT/Cargo.toml" | head -1)
    deb=$OPTIDB_ROOT/target/optidb-postgresql-${major}_${version}_$(dpkg --print-architecture).deb
    if [ "$major" != 15 ] && [ -f "$deb" ] && [ -z "$(cd "$OPTIDB_ROOT" &&
        find src sql Cargo.toml Cargo.lock optidb.control -newer "$deb")" ]; then
        log "reusing $deb"
        echo "$deb"
    elif [ "$major" = 15 ]; then
        "$OPTIDB_ROOT/tests/scripts/package.sh" | tail -1
    else
        "$OPTIDB_ROOT/tests/scripts/package.sh" "$major" | tail -1
    fi
}

if [ "${2:-}" != --quick-start ]; then
    deb=$(package)
    install_package "$deb"
    case "$major" in
    17 | 18) exec "$chroot_sh" with "$major" env PG_MAJOR="$major" PGBIN="$PGBIN" "$0" "$major" --quick-start ;;
    *) exec env PG_MAJOR="$major" PGBIN="$PGBIN" "$0" "$major" --quick-start ;;
    esac
fi

# The quick start, with PGBIN (and OPTIDB_PG_RUN in a chroot) set by the part above.
"$cluster" stop
rm -rf "$(dirname "$OPTIDB_PGDATA")"
trap '"$cluster" stop' EXIT
"$cluster" start
pg -d postgres -qc "CREATE DATABASE $db"

# The README block, split where the application is to run.
block=$(awk '/<!-- quick-start/ {on = 1; next} /<!-- \/quick-start/ {on = 0} on && !/^```/' \
    "$OPTIDB_ROOT/README.md")
[ -n "$block" ] || die "no quick-start block in README.md"
setup=$(sed '/the application runs/,$d' <<<"$block")
rest=$(sed '1,/the application runs/d' <<<"$block")

log "quick start: CREATE EXTENSION ..."
pg -d "$db" -q <<<"$setup"
log "the application: 500 lookups by customer through the extended protocol"
pg -d "$db" -q -c "CREATE TABLE orders AS SELECT g AS id, g % 5000 AS customer_id,
                   now() - g * interval '1 minute' AS created_at
                   FROM generate_series(1, 200000) g" -c "ANALYZE orders"
workload=$(mktemp)
chmod a+r "$workload"
printf '\\set c random(1, 5000)\nSELECT id, created_at FROM orders WHERE customer_id = :c;\n' >"$workload"
as_postgres "$PGBIN/pgbench" -n -M extended -t 500 -f "$workload" \
    -h "$OPTIDB_PGSOCKET" -p "$OPTIDB_PGPORT" "$db" >/dev/null
rm -f "$workload"
log "quick start: scan, bottlenecks, recommend, simulate, stats, query, refresh, metrics"
pg -d "$db" -P pager=off <<<"$rest" >"$(dirname "$OPTIDB_PGDATA")/quick-start.out"

check() {
    [ "$(pg -d "$db" -Atc "$2")" = t ] || die "package quick start: $1"
}
check "the index on orders (customer_id) is advised" \
    "SELECT count(*) = 1 FROM optidb.recommendation
     WHERE status = 'open' AND tablename = 'orders' AND columns = '{customer_id}'"
check "its simulation shows the gain" \
    "SELECT bool_or(improvement_pct > 50) FROM optidb.simulation WHERE error IS NULL"
check "execution times were recorded by the preloaded hooks" \
    "SELECT count > 0 FROM optidb.execution_time_stats() s JOIN optidb.query q ON q.id = s.query_id
     WHERE q.raw_sql LIKE '%customer_id = \$1%'"
log "removal as docs/install.md says: DROP EXTENSION optidb; DROP SCHEMA optidb;"
pg -d "$db" -qc "DROP EXTENSION optidb" -c "DROP SCHEMA optidb"
check "nothing of optidb is left in the database" \
    "SELECT NOT EXISTS (SELECT FROM pg_namespace WHERE nspname = 'optidb')
        AND NOT EXISTS (SELECT FROM pg_shdepend d JOIN pg_roles r ON r.oid = d.refobjid
                        WHERE r.rolname LIKE 'optidb%' AND d.dbid = (SELECT oid FROM pg_database
                                                                      WHERE datname = '$db'))"
log "package $major: dpkg, preloaded, README quick start, removal as in docs/install.md: ok"
