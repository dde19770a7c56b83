#!/usr/bin/env bash
# Benchmark (prints figures, asserts nothing): index advice of optidb, pg_qualstats and supabase
# index_advisor on the peers' own test cases (tests/bench/peer_cases.py), all in one run on the
# same data, scored for recall and precision against what the peers' tests expect.
#
# Needs optidb installed into $PG_CONFIG's server (tests/scripts/install-extension.sh --release)
# and hypopg there. Installs pg_qualstats when missing: `apt-get install -y
# postgresql-15-pg-qualstats` puts it under /usr/lib/postgresql and /usr/share/postgresql; when
# $PG_CONFIG is another installation (a copy under /opt), its .so, .control and .sql files are
# copied into that installation's pkglibdir and share/extension.
# index_advisor (pure SQL) is installed from a checkout of github.com/supabase/index_advisor
# named by INDEX_ADVISOR_SRC (how to get one: docs/benchmarks.md, "How to run"); without it
# that tool is skipped.
#
# Starts its own cluster (tests/scripts/cluster.sh) on $OPTIDB_PGPORT with data in
# $PEER_BENCH_PGDATA (default /tmp/optidb-peer-bench-$OPTIDB_PGPORT/data, removed and recreated),
# preloading pg_stat_statements, optidb and pg_qualstats, and stops it at the end (not with
# KEEP_CLUSTER=1: then look at database optidb_peer_bench, and stop it with cluster.sh stop).
#   INDEX_ADVISOR_SRC=/path/to/index_advisor RUNS=5 tests/bench/peer_advice_bench.sh
set -euo pipefail
. "$(dirname "$0")/../scripts/env.sh"

PYTHON=${PYTHON:-$OPTIDB_ROOT/target/venv/bin/python}
pkglibdir=$("$PG_CONFIG" --pkglibdir)
extdir=$("$PG_CONFIG" --sharedir)/extension
[ -x "$PYTHON" ] || die "no Python venv at $PYTHON (python3 -m venv target/venv && target/venv/bin/pip install 'psycopg[binary]')"
[ -f "$extdir/optidb.control" ] || die "optidb is not installed in $extdir: run tests/scripts/install-extension.sh --release"
[ -f "$extdir/hypopg.control" ] || die "hypopg is not installed in $extdir"

# pg_qualstats: the Debian package, copied into this installation when it is another one.
debian_lib=/usr/lib/postgresql/$PG_MAJOR/lib
debian_ext=/usr/share/postgresql/$PG_MAJOR/extension
if [ ! -f "$pkglibdir/pg_qualstats.so" ]; then
    if [ ! -f "$debian_lib/pg_qualstats.so" ]; then
        log "installing postgresql-$PG_MAJOR-pg-qualstats"
        DEBIAN_FRONTEND=noninteractive apt-get install -y "postgresql-$PG_MAJOR-pg-qualstats" >/dev/null
    fi
    if [ "$pkglibdir" != "$debian_lib" ]; then
        log "copying pg_qualstats into $pkglibdir and $extdir"
        cp "$debian_lib/pg_qualstats.so" "$pkglibdir/"
        cp "$debian_ext"/pg_qualstats.control "$debian_ext"/pg_qualstats--*.sql "$extdir/"
    fi
fi

# index_advisor: its control file and scripts, with one fix. It builds each hypothetical index
# as format('create index on %I.%I(%I)', relnamespace::regnamespace::text, ...): the schema
# name is already quoted by regnamespace::text, so %I quotes it twice and every table of a
# mixed-case schema fails. The installed copy takes that schema name as it is (%s).
have_ia=0
if [ -n "${INDEX_ADVISOR_SRC:-}" ]; then
    [ -f "$INDEX_ADVISOR_SRC/index_advisor.control" ] || die "no index_advisor.control in $INDEX_ADVISOR_SRC"
    cp "$INDEX_ADVISOR_SRC/index_advisor.control" "$extdir/"
    for f in "$INDEX_ADVISOR_SRC"/index_advisor--*.sql; do
        sed 's/create index on %I\.%I(%I)/create index on %s.%I(%I)/' "$f" >"$extdir/$(basename "$f")"
    done
    grep -q 'create index on %s\.%I(%I)' "$extdir"/index_advisor--*.sql \
        || die "index_advisor: the schema quoting workaround did not apply (its source changed)"
    have_ia=1
fi

# The scoring on known answers first (no database).
"$PYTHON" "$OPTIDB_ROOT/tests/bench/peer_advice_bench.py" --self-check

# Our own cluster, fresh.
export OPTIDB_PGDATA=${PEER_BENCH_PGDATA:-/tmp/optidb-peer-bench-$OPTIDB_PGPORT/data}
export OPTIDB_PRELOAD=pg_stat_statements,optidb,pg_qualstats
"$OPTIDB_ROOT/tests/scripts/cluster.sh" stop
rm -rf "$OPTIDB_PGDATA"
[ -n "${KEEP_CLUSTER:-}" ] || trap '"$OPTIDB_ROOT/tests/scripts/cluster.sh" stop' EXIT
"$OPTIDB_ROOT/tests/scripts/cluster.sh" start
# pg_qualstats samples 1/max_connections of the statements by default: sample them all, as
# optidb's hooks and pg_stat_statements see them all.
pg -d postgres -qc "ALTER SYSTEM SET pg_qualstats.sample_rate = 1" -c "SELECT pg_reload_conf()" >/dev/null

log "running the peer cases (commit $(git -C "$OPTIDB_ROOT" rev-parse --short HEAD), $(date -u '+%Y-%m-%d %H:%M UTC'))"
PGHOST=$OPTIDB_PGSOCKET PGPORT=$OPTIDB_PGPORT PGUSER=postgres HAVE_INDEX_ADVISOR=$have_ia \
    "$PYTHON" "$OPTIDB_ROOT/tests/bench/peer_advice_bench.py"
