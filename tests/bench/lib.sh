# Shared pieces of the benchmark scripts (sourced after tests/scripts/env.sh, which defines pg).

# The median of numbers given one per line or separated by spaces.
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# make_column_tables DB TABLES ROWS: tables b_aa, b_ab ... of 40 int columns c0..c39 each.
# Names differ in letters, not digits: fingerprints ignore the digits of names (partitions),
# so b1 and b2 would be one statement.
make_column_tables() {
    pg -d "$1" -q -v tables="$2" -v rows="$3" <<'SQL'
SELECT format('CREATE TABLE b_%s AS SELECT %s FROM generate_series(1, %s) g',
              chr(97 + t / 26) || chr(97 + t % 26),
              (SELECT string_agg(format('g AS c%s', c), ', ') FROM generate_series(0, 39) c),
              :rows)
FROM generate_series(0, :tables - 1) t
\gexec
SQL
}

# write_column_workload TABLES FILE: one distinct statement per column of each table.
write_column_workload() {
    local letters=({a..z}) t c
    for t in $(seq 0 $(($1 - 1))); do
        for c in $(seq 0 39); do
            echo "SELECT c$c FROM b_${letters[t / 26]}${letters[t % 26]} WHERE c$c = $((t + c));"
        done
    done >"$2"
    chmod a+r "$2"
}

# insert_report_history DB: 5,000 statements with 30 days of history in the layout report()
# was first measured on: pg_stat_statements deltas every hour for all of them, latency
# histograms every hour for the 100 busiest and daily for the others.
insert_report_history() {
    pg -d "$1" -q <<'SQL'
INSERT INTO optidb.query (fingerprint, userid, dbid, kind, raw_sql, norm_sql)
SELECT 'bench' || g, 10, 1, 'select', 'SELECT * FROM t' || g || ' WHERE id = 1',
       'SELECT * FROM t' || g || ' WHERE id = $1' FROM generate_series(1, 5000) g;
INSERT INTO optidb.metric (query_id, captured_at, calls, total_ms, mean_ms, rows, shared_blks_hit,
                           shared_blks_read, temp_blks_read, temp_blks_written)
SELECT q.id, date_trunc('hour', now()) - h * interval '1 hour', 60, 60 * (1 + q.id % 50),
       1 + q.id % 50, 60, 600, 6, 0, 0
FROM optidb.query q, generate_series(0, 719) h;
INSERT INTO optidb.latency (query_id, captured_at, calls, errors, sum_us, min_us, max_us, buckets, counts)
SELECT q.id, date_trunc('hour', now()) - h * interval '1 hour', 60, q.id % 2, 60 * 4000.0, 900.0,
       25000.0, ARRAY(SELECT b FROM generate_series(350, 409, 6) b),
       ARRAY(SELECT 6::int8 FROM generate_series(1, 10))
FROM optidb.query q, generate_series(0, 719) h WHERE q.id % 50 = 49;
INSERT INTO optidb.latency (query_id, captured_at, calls, errors, sum_us, min_us, max_us, buckets, counts)
SELECT q.id, date_trunc('day', now()) - d * interval '1 day' + interval '1 minute', 1440, 0,
       1440 * 2000.0, 500.0, 9000.0, ARRAY(SELECT b FROM generate_series(300, 359, 6) b),
       ARRAY(SELECT 144::int8 FROM generate_series(1, 10))
FROM optidb.query q, generate_series(0, 29) d WHERE q.id % 50 <> 49;
SQL
}
