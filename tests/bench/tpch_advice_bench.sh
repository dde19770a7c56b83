#!/usr/bin/env bash
# Benchmark (prints figures, asserts nothing): TPC-H index advice, every tool on the same data in
# one run: no indexes, optidb, a Dexter-style hypopg search, supabase index_advisor (when
# INDEX_ADVISOR_SRC points at its checkout). See tests/bench/tpch_advice_bench.py and the TPC-H
# section of docs/benchmarks.md. Starts its own cluster (cluster.sh, with pg_stat_statements and
# optidb preloaded) on TPCH_PGPORT, in TPCH_DIR, and stops it at the end. Needs optidb and hypopg
# installed in $PG_CONFIG's server (tests/scripts/install-extension.sh --release).
#   TPCH_SCALE=0.1 TPCH_TIMEOUT=30 TPCH_PGPORT=55802 tests/bench/tpch_advice_bench.sh
# Exits non-zero only when it cannot run (no data, no cluster, a tool missing).
set -euo pipefail
. "$(dirname "$0")/../scripts/env.sh"

scale=${TPCH_SCALE:-0.1}          # 0.1: ~100 MB of CSV, ~1 min to load on 2 cores
timeout=${TPCH_TIMEOUT:-30}       # statement_timeout (s): a run takes at most 66 x this
sets=${TPCH_SETS:-3}
parallel=${TPCH_PARALLEL:-0}      # max_parallel_workers_per_gather of the database (0: CPU time is all its work)
seed=${TPCH_SEED:-1}
dir=${TPCH_DIR:-/tmp/optidb-tpch-bench}
venv=${TPCH_VENV:-$OPTIDB_ROOT/target/tpch-venv}
export OPTIDB_PGPORT=${TPCH_PGPORT:-${OPTIDB_PGPORT}}
export OPTIDB_PGDATA=$dir/data
export OPTIDB_PRELOAD=pg_stat_statements,optidb

[ -x "$PG_CONFIG" ] || die "no pg_config at $PG_CONFIG"
[ -f "$("$PG_CONFIG" --pkglibdir)/optidb.so" ] || die "optidb is not installed (install-extension.sh)"
[ -f "$("$PG_CONFIG" --sharedir)/extension/hypopg.control" ] || die "hypopg is not installed"

if [ ! -x "$venv/bin/tpchgen-cli" ] || ! "$venv/bin/python" -c 'import psycopg' 2>/dev/null; then
    log "venv $venv: tpchgen-cli, psycopg"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q tpchgen-cli 'psycopg[binary]' || die "pip install failed"
fi

data=$dir/sf$scale
if [ ! -f "$data/lineitem.csv" ]; then
    log "tpchgen-cli: scale factor $scale into $data"
    mkdir -p "$data"
    "$venv/bin/tpchgen-cli" csv -s "$scale" -o "$data" -q -n 1 || die "tpchgen-cli failed"
fi

ia=()
if [ -n "${INDEX_ADVISOR_SRC:-}" ]; then
    [ -f "$INDEX_ADVISOR_SRC/index_advisor.control" ] || die "no index_advisor.control in $INDEX_ADVISOR_SRC"
    # Pure SQL: its control and script files go into this server's extension directory.
    cp "$INDEX_ADVISOR_SRC"/index_advisor.control "$INDEX_ADVISOR_SRC"/index_advisor--*.sql \
        "$("$PG_CONFIG" --sharedir)/extension/"
    ia=(--index-advisor)
fi

# A fresh cluster each run: the bench's own directory, never the project cluster's.
"$OPTIDB_ROOT/tests/scripts/cluster.sh" stop
rm -rf "$OPTIDB_PGDATA"
"$OPTIDB_ROOT/tests/scripts/cluster.sh" start
trap '"$OPTIDB_ROOT/tests/scripts/cluster.sh" stop' EXIT

start=$(date +%s)
"$venv/bin/python" "$OPTIDB_ROOT/tests/bench/tpch_advice_bench.py" --host "$OPTIDB_PGSOCKET" \
    --port "$OPTIDB_PGPORT" --data "$data" --scale "$scale" --timeout "$timeout" --sets "$sets" \
    --parallel "$parallel" \
    --seed "$seed" --json "$dir/results.json" "${ia[@]}"
log "benchmark finished in $(($(date +%s) - start)) s (results: $dir/results.json)"
