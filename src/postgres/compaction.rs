//! Compaction of the per-statement history (optidb.metric and optidb.latency), so every
//! statement that ran can keep its history (issue 27) in bounded space: each snapshot stores a
//! row per statement that ran, and older rows are merged per statement and period, in the
//! same tables, as PoWA coalesces its snapshots:
//!
//! - the last `RAW_FOR` (up to twice that, until its hour is complete) keep one row per
//!   snapshot: the alerts' "last hour" windows stay exact;
//! - from `RAW_FOR` to `HOURLY_FOR` old: one row per statement and UTC hour;
//! - older (until optidb.retention prunes them): one row per statement and UTC day.
//!
//! A merged row is stamped with the start of its period and holds the sums (calls, times,
//! blocks, failures by SQLSTATE class), the extremes and the merged histogram of the rows it
//! replaces: every reader (execution_time_stats(), report(), bottlenecks(), the alerts) reads
//! it as it reads a snapshot's row, and totals and percentiles over whole periods are unchanged.
//! The source of a statement (local or a replica) is its optidb.query row's, so rows of
//! different sources are never merged together.
//!
//! Each pass compacts only the periods that crossed a boundary since the previous pass (the
//! previous row of optidb.scan_log), and one period before in case a pass skipped it:
//! usually nothing, once an hour one hour's rows, once a day one day's. Rows a pass of an
//! older version left behind stay as they are until pruned.
//!
//! Locking and failures: a pass compacts before it takes the snapshot lock, under a lock of
//! its own that it only tries (another pass compacting: this one skips it), so a concurrent
//! snapshot() waits for the other's snapshot, never for seconds of compaction. Each table's
//! merge is one statement (delete the rows, insert their merged rows) in the pass's
//! transaction: a pass cancelled or failing halfway rolls back whole, so no row is lost or
//! counted twice, and the next pass compacts the same periods again.

use crate::postgres::locks::{self, Lock};
use crate::postgres::rows;
use pgrx::datum::TimestampWithTimeZone;

/// Compact from where the previous pass left off, unless another pass is compacting now
/// (then it does). Returns the rows written.
pub fn compact_unless_running() -> i64 {
    if !locks::try_acquire(Lock::Compaction) {
        return 0;
    }
    let written = compact(rows::value::<TimestampWithTimeZone>(
        "previous pass",
        "SELECT started_at FROM optidb.scan_log ORDER BY id DESC LIMIT 1",
        &[],
    ));
    // Under the same lock: days the per-day rollup does not hold yet, built from these rows.
    written + crate::postgres::latency::rollup::build_older_days()
}

/// How long rows keep the resolution of the snapshots.
const RAW_FOR: &str = "1 hour";
/// Until what age rows are kept per hour (then per day).
const HOURLY_FOR: &str = "7 days";

/// Compact what crossed a boundary between the previous pass (`previous`: its start; None:
/// no pass before, compact everything old enough) and now. Returns the rows written.
fn compact(previous: Option<TimestampWithTimeZone>) -> i64 {
    [("hour", RAW_FOR), ("day", HOURLY_FOR)]
        .iter()
        .map(|(grain, age)| {
            tables_sql()
                .iter()
                .map(|(table, merge)| compact_table(table, merge, grain, age, previous))
                .sum::<i64>()
        })
        .sum()
}

/// The rows of `table` in [lo, hi) merged per statement and `grain` by `merge`, where hi is
/// the start of the period `age` ago and lo the period before the previous pass's; returns the rows
/// written. Only periods with something to merge are rewritten (more than one row, or one not
/// stamped with its period's start), so a second run changes nothing.
fn compact_table(
    table: &str,
    merge: &str,
    grain: &str,
    age: &str,
    previous: Option<TimestampWithTimeZone>,
) -> i64 {
    rows::value::<i64>(
        "history compaction",
        &format!(
            "WITH bounds AS ( \
                 SELECT pg_catalog.date_trunc($1, $3::timestamptz - $2::interval, 'UTC') \
                            - ('1 ' || $1)::interval AS lo, \
                        pg_catalog.date_trunc($1, pg_catalog.now() - $2::interval, 'UTC') AS hi), \
             groups AS ( \
                 SELECT h.query_id, pg_catalog.date_trunc($1, h.captured_at, 'UTC') AS period \
                 FROM optidb.{table} h, bounds b \
                 WHERE (b.lo IS NULL OR h.captured_at >= b.lo) AND h.captured_at < b.hi \
                 GROUP BY 1, 2 \
                 HAVING count(*) > 1 \
                     OR bool_or(h.captured_at <> pg_catalog.date_trunc($1, h.captured_at, 'UTC'))), \
             gone AS ( \
                 DELETE FROM optidb.{table} h USING groups g, bounds b \
                 WHERE h.query_id = g.query_id \
                   AND (b.lo IS NULL OR h.captured_at >= b.lo) AND h.captured_at < b.hi \
                   AND pg_catalog.date_trunc($1, h.captured_at, 'UTC') = g.period \
                 RETURNING h.*, g.period), \
             {merge}"
        ),
        &[grain.into(), age.into(), previous.into()],
    )
    .unwrap_or(0)
}

/// Each history table and how its rows are merged: after `bounds` (lo, hi; lo NULL:
/// unbounded) and `gone` (the rows to merge, deleted, with their period), the merged rows per
/// statement and period (inserted) and the count of rows inserted.
fn tables_sql() -> [(&'static str, String); 2] {
    [
        (
            "latency",
            latency_merge("gone", "optidb.latency", "captured_at"),
        ),
        (
            "metric",
            "merged AS ( \
             INSERT INTO optidb.metric (query_id, captured_at, calls, total_ms, mean_ms, rows, \
                 shared_blks_hit, shared_blks_read, temp_blks_read, temp_blks_written) \
             SELECT query_id, period, sum(calls), sum(total_ms), \
                    COALESCE(sum(total_ms) / NULLIF(sum(calls), 0)::float8, 0), sum(rows), \
                    sum(shared_blks_hit), sum(shared_blks_read), sum(temp_blks_read), \
                    sum(temp_blks_written) \
             FROM gone GROUP BY query_id, period \
             RETURNING 1) \
         SELECT count(*) FROM merged"
                .to_string(),
        ),
    ]
}

/// The CTEs that merge the optidb.latency rows of the CTE `rows` (with their `period`) per
/// statement and period into `into` (keyed by query_id and its time column `at`): sums, the
/// extremes, failures per SQLSTATE class, the latest SQLSTATE and the merged histogram; then
/// the count of rows written. Shared by compaction and the per-day rollup
/// (src/postgres/latency/rollup.rs), so both merge alike.
pub fn latency_merge(rows: &str, into: &str, at: &str) -> String {
    format!(
        "totals AS ( \
         SELECT query_id, period, sum(calls)::int8 AS calls, sum(errors)::int8 AS errors, \
                sum(sum_us) AS sum_us, min(min_us) AS min_us, max(max_us) AS max_us, \
                sum(failed_ms) AS failed_ms, sum(timeouts)::int8 AS timeouts, \
                (pg_catalog.array_agg(sqlstate ORDER BY captured_at DESC) \
                     FILTER (WHERE sqlstate IS NOT NULL))[1] AS sqlstate \
         FROM {rows} GROUP BY 1, 2), \
     classes AS ( \
         SELECT query_id, period, pg_catalog.jsonb_object_agg(class, n) AS error_classes \
         FROM (SELECT g.query_id, g.period, e.key AS class, sum(e.value::int8) AS n \
               FROM {rows} g, pg_catalog.jsonb_each_text(g.error_classes) AS e \
               GROUP BY 1, 2, 3) c \
         GROUP BY 1, 2), \
     hist AS ( \
         SELECT query_id, period, pg_catalog.array_agg(bucket ORDER BY bucket) AS buckets, \
                pg_catalog.array_agg(n ORDER BY bucket) AS counts \
         FROM (SELECT g.query_id, g.period, u.bucket, sum(u.n)::int8 AS n \
               FROM {rows} g, ROWS FROM (pg_catalog.unnest(g.buckets), pg_catalog.unnest(g.counts)) \
                   AS u(bucket, n) \
               GROUP BY 1, 2, 3) h \
         GROUP BY 1, 2), \
     merged AS ( \
         INSERT INTO {into} (query_id, {at}, calls, errors, error_classes, \
             sum_us, min_us, max_us, buckets, counts, failed_ms, timeouts, sqlstate) \
         SELECT t.query_id, t.period, t.calls, t.errors, \
                COALESCE(c.error_classes, '{{}}'), t.sum_us, t.min_us, t.max_us, \
                COALESCE(h.buckets, '{{}}'), COALESCE(h.counts, '{{}}'), t.failed_ms, t.timeouts, \
                t.sqlstate \
         FROM totals t LEFT JOIN classes c USING (query_id, period) \
              LEFT JOIN hist h USING (query_id, period) \
         RETURNING 1) \
     SELECT count(*) FROM merged"
    )
}
