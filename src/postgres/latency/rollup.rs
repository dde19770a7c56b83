//! optidb.latency_day: per statement and UTC day, the merge of its optidb.latency rows of that
//! day (issue 27), so execution_time_stats() over days reads one row per statement and day
//! instead of every snapshot's, hour's and day's row (5,000 statements x 30 days: 150,000
//! rows instead of 1.6 million).
//!
//! The rule readers rely on: **from its earliest day on, the rollup holds every history row**.
//! What keeps it:
//! - a pass's new history rows are added to their day in the statement that inserts them
//!   (history.rs), once the rollup has started;
//! - the first pass that finds it empty starts it with the rows of today, under the snapshot
//!   lock (no pass inserts meanwhile): `start_if_empty`;
//! - each pass's compaction, under the compaction lock, builds the days before its earliest one
//!   from their rows, newest first, back to optidb.retention (`build_older_days`);
//! - compaction merges rows within a day (totals unchanged: nothing to do); retention deletes
//!   the rollup of a day as soon as it prunes any of its rows (src/api/scan.rs), and a
//!   statement's deletion cascades.
//!
//! Rows written into optidb.latency by anything else (a restore of the rows without this
//! table, a hand-made history) need `DELETE FROM optidb.latency_day`: the next passes build it
//! again. Readers under row-level security see the earliest day of their own statements,
//! which is never before the rollup's: they read the rollup where it is complete for them.

use crate::postgres::compaction::latency_merge;
use crate::postgres::gucs;
use crate::postgres::rows;
use pgrx::datum::TimestampWithTimeZone;

/// The statement history.rs appends to its INSERT of a pass's rows (the CTE `added`: the rows
/// inserted): adds them to their day's rollup row, once the rollup has started.
pub const ADD_TO_DAY: &str = "INSERT INTO optidb.latency_day AS d (query_id, day, calls, errors, \
         error_classes, sum_us, min_us, max_us, buckets, counts, failed_ms, timeouts, sqlstate) \
     SELECT a.query_id, pg_catalog.date_trunc('day', a.captured_at, 'UTC'), a.calls, a.errors, \
            a.error_classes, a.sum_us, a.min_us, a.max_us, a.buckets, a.counts, a.failed_ms, \
            a.timeouts, a.sqlstate \
     FROM added a WHERE EXISTS (SELECT FROM optidb.latency_day) \
     ON CONFLICT (query_id, day) DO UPDATE SET \
         calls = d.calls + excluded.calls, \
         errors = d.errors + excluded.errors, \
         error_classes = COALESCE((SELECT pg_catalog.jsonb_object_agg(c.key, c.n) \
             FROM (SELECT e.key, sum(e.value::int8) AS n \
                   FROM (SELECT * FROM pg_catalog.jsonb_each_text(d.error_classes) \
                         UNION ALL \
                         SELECT * FROM pg_catalog.jsonb_each_text(excluded.error_classes)) e \
                   GROUP BY 1) c), '{}'), \
         sum_us = d.sum_us + excluded.sum_us, \
         min_us = LEAST(d.min_us, excluded.min_us), \
         max_us = GREATEST(d.max_us, excluded.max_us), \
         (buckets, counts) = (SELECT COALESCE(pg_catalog.array_agg(h.b ORDER BY h.b), '{}'), \
                                     COALESCE(pg_catalog.array_agg(h.n ORDER BY h.b), '{}') \
             FROM (SELECT u.b, sum(u.n)::int8 AS n \
                   FROM (SELECT * FROM ROWS FROM (pg_catalog.unnest(d.buckets), \
                                             pg_catalog.unnest(d.counts)) \
                         UNION ALL \
                         SELECT * FROM ROWS FROM (pg_catalog.unnest(excluded.buckets), \
                                             pg_catalog.unnest(excluded.counts))) \
                        AS u(b, n) \
                   GROUP BY 1) h), \
         failed_ms = d.failed_ms + excluded.failed_ms, \
         timeouts = d.timeouts + excluded.timeouts, \
         sqlstate = COALESCE(excluded.sqlstate, d.sqlstate)";

/// The rollup rows of the history rows in [lo, hi) (hi NULL: no end), merged per day. Returns
/// the rows written.
fn build(lo: TimestampWithTimeZone, hi: Option<TimestampWithTimeZone>) -> i64 {
    rows::value::<i64>(
        "latency rollup",
        &format!(
            "WITH picked AS ( \
                 SELECT h.*, pg_catalog.date_trunc('day', h.captured_at, 'UTC') AS period \
                 FROM optidb.latency h \
                 WHERE h.captured_at >= $1 AND ($2::timestamptz IS NULL OR h.captured_at < $2)), \
             {}",
            latency_merge("picked", "optidb.latency_day", "day")
        ),
        &[lo.into(), hi.into()],
    )
    .unwrap_or(0)
}

/// Under the snapshot lock, after the pass stored its rows: an empty rollup starts with
/// today's rows (UTC). Returns the rows written.
pub fn start_if_empty() -> i64 {
    let empty = rows::value::<bool>(
        "latency rollup started",
        "SELECT NOT EXISTS (SELECT FROM optidb.latency_day)",
        &[],
    )
    .unwrap_or(false);
    if !empty {
        return 0;
    }
    let today = rows::value::<TimestampWithTimeZone>(
        "today",
        "SELECT pg_catalog.date_trunc('day', pg_catalog.now(), 'UTC')",
        &[],
    )
    .expect("now() is never NULL");
    build(today, None)
}

/// Under the compaction lock: build the days before the rollup's earliest that have history
/// rows, newest first, back to the first day optidb.retention has not started pruning (a
/// day retention prunes would be built again by every pass). Days at or after the earliest
/// are never touched here, so the passes' additions never race with it. Returns the rows
/// written.
pub fn build_older_days() -> i64 {
    let mut written = 0;
    loop {
        let day = rows::value::<TimestampWithTimeZone>(
            "latency rollup: next day to build",
            "SELECT pg_catalog.date_trunc('day', max(h.captured_at), 'UTC') \
             FROM optidb.latency h \
             WHERE h.captured_at < (SELECT min(day) FROM optidb.latency_day) \
               AND h.captured_at >= pg_catalog.date_trunc('day', \
                       pg_catalog.now() - pg_catalog.make_interval(days => $1), 'UTC') \
                   + interval '1 day'",
            &[gucs::retention_days().into()],
        );
        let Some(day) = day else {
            return written;
        };
        let next = rows::value::<TimestampWithTimeZone>(
            "next day",
            "SELECT $1 + interval '1 day'",
            &[day.into()],
        );
        written += build(day, next);
    }
}

/// Whether the rollup table exists (an upgrade script older than it may read the history).
pub fn exists() -> bool {
    rows::value::<bool>(
        "latency rollup exists",
        "SELECT pg_catalog.to_regclass('optidb.latency_day') IS NOT NULL",
        &[],
    )
    .unwrap_or(false)
}

/// The days [lo, hi) a read of [start, end] (NULL: open) takes from the rollup: the whole UTC
/// days inside the range from the rollup's earliest on (lo >= hi: none). Computed before the
/// read, so its plan knows them: the rows outside come through the captured_at index.
pub fn days_for(
    start: Option<TimestampWithTimeZone>,
    end: Option<TimestampWithTimeZone>,
) -> (TimestampWithTimeZone, TimestampWithTimeZone) {
    let row = rows::select(
        "latency rollup days",
        "SELECT GREATEST(COALESCE((SELECT min(day) FROM optidb.latency_day), 'infinity'), \
                         CASE WHEN $1::timestamptz IS NULL THEN '-infinity' \
                              WHEN pg_catalog.date_trunc('day', $1, 'UTC') = $1 THEN $1 \
                              ELSE pg_catalog.date_trunc('day', $1, 'UTC') + interval '1 day' \
                         END) AS lo, \
                COALESCE(pg_catalog.date_trunc('day', $2::timestamptz, 'UTC'), 'infinity') AS hi",
        &[start.into(), end.into()],
        |row| (row.get("lo"), row.get("hi")),
    );
    row.into_iter().next().expect("one row")
}

/// The history rows `merged` (history.rs) reads for a whole-range statistic (no grain): the
/// rollup rows of the days [$4, $5) (`days_for`) and the history rows of the rest of [$2, $3]
/// (NULL: open), of statement $1 (NULL: all), ordered by statement.
pub const READ_SQL: &str = "SELECT query_id, NULL::timestamptz AS period, errors, sum_us, min_us, \
            max_us, buckets, counts \
     FROM optidb.latency_day \
     WHERE ($1::int8 IS NULL OR query_id = $1) AND day >= $4 AND day < $5 \
     UNION ALL \
     SELECT query_id, NULL, errors, sum_us, min_us, max_us, buckets, counts \
     FROM optidb.latency \
     WHERE ($1::int8 IS NULL OR query_id = $1) \
       AND ($2::timestamptz IS NULL OR captured_at >= $2) \
       AND ($3::timestamptz IS NULL OR captured_at <= $3) \
       AND (captured_at < $4 OR captured_at >= $5) \
     ORDER BY 1";

/// Memory for sorting what READ_SQL returns (a row per statement and day: 5,000 statements x
/// 30 days is about 30 MB): in memory rather than on disk, 5x faster.
pub const READ_WORK_MEM: &str = "64MB";
