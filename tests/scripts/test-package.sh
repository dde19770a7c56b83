#!/usr/bin/env bash
# The path a DBA takes: build the Debian package, install it with dpkg (no cargo involved),
# start a fresh cluster with optidb preloaded, and run the README's quick-start block as written
# (a small workload runs where it says the application runs). Fails unless the quick start
# found the missing index, proved it with hypopg and recorded execution times.
set -euo pipefail
. "$(dirname "$0")/env.sh"
export OPTIDB_PGDATA=/tmp/optidb-package/data OPTIDB_PGPORT=55436
cluster="$OPTIDB_ROOT/tests/scripts/cluster.sh"
db=shop

deb=$("$OPTIDB_ROOT/tests/scripts/package.sh" | tail -1)
log "dpkg -i $(basename "$deb")"
dpkg -i "$deb" >/dev/null 2>&1 || die "dpkg -i $deb failed"
package=$(dpkg-deb -f "$deb" Package)
dpkg-query -W -f '${Status}\n' "$package" | grep -qx 'install ok installed' || die "$package not installed"
[ -z "$(dpkg --verify "$package")" ] || die "installed files differ from the package"

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
pg -d "$db" -P pager=off <<<"$rest" >/tmp/optidb-package/quick-start.out

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
log "package: dpkg, preloaded, README quick start, removal as in docs/install.md: ok"
