//! SQL surface of the latency table: the snapshot job that copies deltas into optidb.latency,
//! `execution_time_stats()` over any time range, the current counters, and memory use.

use super::table::{self, Snapshot};
use crate::errors::{raise, require_known_query};
use crate::own_work;
use optidb_core::histogram::{Histogram, Stats, BUCKETS};
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use pgrx::JsonB;
use std::collections::HashMap;

/// Cumulative counters stored at the previous snapshot.
struct Baseline {
    calls: u64,
    errors: u64,
    sum_ns: u64,
    classes: HashMap<String, u64>,
    buckets: Vec<u64>,
}

/// What happened to one statement between two snapshots.
#[derive(Default)]
struct Delta {
    calls: u64,
    errors: u64,
    classes: HashMap<String, u64>,
    hist: Histogram,
}

fn baselines(dbid: u32) -> HashMap<(i64, u32), Baseline> {
    Spi::connect(|client| {
        client
            .select(
                "SELECT queryid, userid::int8, calls, errors, sum_ns, error_classes, buckets, counts \
                 FROM optidb.latency_state WHERE dbid = $1::int8::oid",
                None,
                &[(dbid as i64).into()],
            )
            .unwrap_or_else(|e| error!("{e}"))
            .map(|row| {
                let i = |n| row.get::<i64>(n).ok().flatten().unwrap_or(0);
                let mut buckets = vec![0u64; BUCKETS];
                let idx = row.get::<Vec<i32>>(7).ok().flatten().unwrap_or_default();
                let counts = row.get::<Vec<i64>>(8).ok().flatten().unwrap_or_default();
                for (b, c) in idx.iter().zip(&counts) {
                    if let Some(slot) = usize::try_from(*b).ok().and_then(|b| buckets.get_mut(b)) {
                        *slot = *c as u64;
                    }
                }
                let classes = row
                    .get::<JsonB>(6)
                    .ok()
                    .flatten()
                    .and_then(|j| serde_json::from_value(j.0).ok())
                    .unwrap_or_default();
                (
                    (i(1), i(2) as u32),
                    Baseline {
                        calls: i(3) as u64,
                        errors: i(4) as u64,
                        sum_ns: i(5) as u64,
                        classes,
                        buckets,
                    },
                )
            })
            .collect()
    })
}

/// Counters only grow between resets; if any went down (crash, eviction and re-insert) the
/// whole current value is new.
fn delta(now: &Snapshot, base: Option<&Baseline>) -> Delta {
    let grew = |b: &Baseline| {
        now.calls >= b.calls
            && now.errors >= b.errors
            && now.sum_ns >= b.sum_ns
            && now
                .buckets
                .iter()
                .zip(&b.buckets)
                .all(|(n, o)| *n as u64 >= *o)
    };
    let base = base.filter(|b| grew(b));
    let mut hist = Histogram::default();
    for (i, n) in now.buckets.iter().enumerate() {
        hist.counts[i] = *n as u64 - base.map_or(0, |b| b.buckets[i]);
    }
    let calls = now.calls - base.map_or(0, |b| b.calls);
    hist.count = calls;
    hist.sum_us = (now.sum_ns - base.map_or(0, |b| b.sum_ns)) as f64 / 1000.0;
    hist.min_us = now.interval_min_ns as f64 / 1000.0;
    hist.max_us = now.interval_max_ns as f64 / 1000.0;
    let classes = now
        .error_classes
        .iter()
        .map(|(c, n)| {
            let before = base.and_then(|b| b.classes.get(c)).copied().unwrap_or(0);
            (c.clone(), n.saturating_sub(before))
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    Delta {
        calls,
        errors: now.errors - base.map_or(0, |b| b.errors),
        classes,
        hist,
    }
}

/// The statement (optidb.query id) each (queryid, userid) of database `dbid` belongs to, for
/// the statements optidb tracks (those in optidb.pgss_state).
pub fn owners(dbid: u32) -> HashMap<(i64, u32), i64> {
    Spi::connect(|client| {
        client
            .select(
                "SELECT DISTINCT ON (queryid, userid) queryid, userid::int8, query_id \
                 FROM optidb.pgss_state WHERE dbid = $1::int8::oid",
                None,
                &[(dbid as i64).into()],
            )
            .unwrap_or_else(|e| error!("{e}"))
            .map(|row| {
                let i = |n| row.get::<i64>(n).ok().flatten().unwrap_or(0);
                ((i(1), i(2) as u32), i(3))
            })
            .collect()
    })
}

/// Copy what happened since the previous snapshot into optidb.latency, for statements optidb
/// tracks (those in optidb.pgss_state). Returns the number of history rows written.
pub fn snapshot(captured_at: &TimestampWithTimeZone) -> usize {
    // SAFETY: a plain global of this backend, set when it connected to its database, before
    // any statement runs.
    let dbid = unsafe { pg_sys::MyDatabaseId.to_u32() };
    let entries = table::read_all(Some(dbid), true);
    if entries.is_empty() {
        return 0;
    }
    let base = baselines(dbid);
    let owners = owners(dbid);

    let mut per_query: HashMap<i64, Delta> = HashMap::new();
    for e in &entries {
        let key = (e.key.queryid as i64, e.key.userid);
        if let (Some(query_id), Some((ns, text))) = (owners.get(&key), &e.slowest) {
            Spi::run_with_args(
                "UPDATE optidb.query SET slowest_sql = $2, slowest_ms = $3 \
                 WHERE id = $1 AND (slowest_ms IS NULL OR slowest_ms < $3)",
                &[
                    (*query_id).into(),
                    text.clone().into(),
                    (*ns as f64 / 1e6).into(),
                ],
            )
            .unwrap_or_else(|e| error!("{e}"));
        }
        let d = delta(e, base.get(&key));
        if d.calls + d.errors == 0 {
            continue;
        }
        let Some(query_id) = owners.get(&key) else {
            continue;
        };
        let acc = per_query.entry(*query_id).or_default();
        acc.calls += d.calls;
        acc.errors += d.errors;
        for (c, n) in d.classes {
            *acc.classes.entry(c).or_default() += n;
        }
        if d.calls > 0 {
            acc.hist.merge(&d.hist);
        }
    }
    for (query_id, d) in &per_query {
        let (idx, counts) = d.hist.sparse();
        // Extremes are only known when a call of this interval recorded them.
        let has_extremes = d.calls > 0 && d.hist.min_us <= d.hist.max_us;
        Spi::run_with_args(
            "INSERT INTO optidb.latency (query_id, captured_at, calls, errors, error_classes, \
                 sum_us, min_us, max_us, buckets, counts) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (query_id, captured_at) DO NOTHING",
            &[
                (*query_id).into(),
                (*captured_at).into(),
                (d.calls as i64).into(),
                (d.errors as i64).into(),
                JsonB(serde_json::to_value(&d.classes).unwrap_or_default()).into(),
                d.hist.sum_us.into(),
                has_extremes.then_some(d.hist.min_us).into(),
                has_extremes.then_some(d.hist.max_us).into(),
                idx.into(),
                counts.into(),
            ],
        )
        .unwrap_or_else(|e| error!("storing latency history failed: {e}"));
    }
    store_baselines(&entries);
    per_query.len()
}

fn store_baselines(entries: &[Snapshot]) {
    for e in entries {
        let (idx, counts): (Vec<i32>, Vec<i64>) = e
            .buckets
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, c)| (i as i32, *c as i64))
            .unzip();
        let classes: HashMap<&str, u64> = e
            .error_classes
            .iter()
            .map(|(c, n)| (c.as_str(), *n))
            .collect();
        Spi::run_with_args(
            "INSERT INTO optidb.latency_state AS s (queryid, userid, dbid, calls, errors, \
                 error_classes, sum_ns, buckets, counts) \
             VALUES ($1, $2::int8::oid, $3::int8::oid, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (queryid, userid, dbid) DO UPDATE SET calls = excluded.calls, \
                 errors = excluded.errors, error_classes = excluded.error_classes, \
                 sum_ns = excluded.sum_ns, buckets = excluded.buckets, counts = excluded.counts",
            &[
                (e.key.queryid as i64).into(),
                (e.key.userid as i64).into(),
                (e.key.dbid as i64).into(),
                (e.calls as i64).into(),
                (e.errors as i64).into(),
                JsonB(serde_json::to_value(classes).unwrap_or_default()).into(),
                (e.sum_ns as i64).into(),
                idx.into(),
                counts.into(),
            ],
        )
        .unwrap_or_else(|e| error!("storing latency baselines failed: {e}"));
    }
}

/// Merged statistics of one statement over a time range (or one period of it).
pub struct Merged {
    pub stats: Option<Stats>,
    pub errors: i64,
}

/// One group of history rows: a statement, and the start of its period when rolled up by
/// hour or day.
pub type GroupKey = (i64, Option<TimestampWithTimeZone>);

/// History rows fetched per round trip: bounds memory for any length of history.
const FETCH_BATCH: i64 = 10_000;

/// Merge stored histograms per statement over [start, end] (NULL bounds are open), and per
/// UTC `grain` ("hour" or "day") when given. Rows stream through a cursor in key order, so
/// only one group is held in memory at a time.
pub fn merged(
    query_id: Option<i64>,
    start: Option<TimestampWithTimeZone>,
    end: Option<TimestampWithTimeZone>,
    grain: Option<&str>,
) -> Vec<(GroupKey, Merged)> {
    Spi::connect(|client| {
        let mut out: Vec<(GroupKey, Merged)> = Vec::new();
        let mut current: Option<(GroupKey, Histogram, i64)> = None;
        let finish = |group: Option<(GroupKey, Histogram, i64)>, out: &mut Vec<_>| {
            if let Some((key, hist, errors)) = group {
                out.push((
                    key,
                    Merged {
                        stats: hist.stats(),
                        errors,
                    },
                ));
            }
        };
        let mut cursor = client.open_cursor(
            "SELECT query_id, \
                    CASE WHEN $4::text IS NOT NULL \
                         THEN pg_catalog.date_trunc($4, captured_at, 'UTC') END AS period, \
                    errors, sum_us, min_us, max_us, buckets, counts \
             FROM optidb.latency \
             WHERE ($1::int8 IS NULL OR query_id = $1) \
               AND ($2::timestamptz IS NULL OR captured_at >= $2) \
               AND ($3::timestamptz IS NULL OR captured_at <= $3) \
             ORDER BY 1, 2",
            &[query_id.into(), start.into(), end.into(), grain.into()],
        );
        loop {
            let batch = cursor.fetch(FETCH_BATCH).unwrap_or_else(|e| error!("{e}"));
            let fetched = batch.len();
            for row in batch {
                let key: GroupKey = (
                    row.get::<i64>(1).ok().flatten().unwrap_or(0),
                    row.get::<TimestampWithTimeZone>(2).ok().flatten(),
                );
                if current.as_ref().is_none_or(|(k, _, _)| *k != key) {
                    finish(current.take(), &mut out);
                    current = Some((key, Histogram::default(), 0));
                }
                let (_, hist, errors) = current.as_mut().expect("set above");
                *errors += row.get::<i64>(3).ok().flatten().unwrap_or(0);
                let idx = row.get::<Vec<i32>>(7).ok().flatten().unwrap_or_default();
                let counts = row.get::<Vec<i64>>(8).ok().flatten().unwrap_or_default();
                hist.add_sparse(
                    &idx,
                    &counts,
                    row.get::<f64>(4).ok().flatten().unwrap_or(0.0),
                    row.get::<f64>(5).ok().flatten().unwrap_or(f64::INFINITY),
                    row.get::<f64>(6).ok().flatten().unwrap_or(0.0),
                );
            }
            if fetched < FETCH_BATCH as usize {
                break;
            }
        }
        finish(current.take(), &mut out);
        out
    })
}

/// Histogram history rolled up per statement (grain NULL) or per statement and UTC hour or day:
/// the source of the materialized metric views. Times in milliseconds.
#[allow(clippy::type_complexity)] // pgrx needs the TableIterator spelled out
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn latency_rollup(
    grain: Option<&str>,
) -> TableIterator<
    'static,
    (
        name!(query_id, i64),
        name!(period, Option<TimestampWithTimeZone>),
        name!(calls, i64),
        name!(errors, i64),
        name!(mean_ms, Option<f64>),
        name!(median_ms, Option<f64>),
        name!(min_ms, Option<f64>),
        name!(max_ms, Option<f64>),
        name!(p95_ms, Option<f64>),
        name!(p99_ms, Option<f64>),
        name!(total_ms, Option<f64>),
    ),
> {
    if let Some(g) = grain {
        if g != "hour" && g != "day" {
            raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("unknown grain \"{g}\""),
                Some("Use 'hour', 'day', or NULL for the whole history."),
            );
        }
    }
    let rows: Vec<_> = own_work::run(|| merged(None, None, None, grain))
        .into_iter()
        .map(|((id, period), m)| {
            let s = m.stats.as_ref();
            (
                id,
                period,
                s.map_or(0, |s| s.count as i64),
                m.errors,
                s.map(|s| s.mean_ms),
                s.map(|s| s.median_ms),
                s.map(|s| s.min_ms),
                s.map(|s| s.max_ms),
                s.map(|s| s.p95_ms),
                s.map(|s| s.p99_ms),
                s.map(|s| s.mean_ms * s.count as f64),
            )
        })
        .collect();
    TableIterator::new(rows)
}

#[allow(clippy::type_complexity)] // pgrx needs the TableIterator spelled out
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn execution_time_stats(
    query_id: default!(Option<i64>, "NULL"),
    start_at: default!(Option<TimestampWithTimeZone>, "NULL"),
    end_at: default!(Option<TimestampWithTimeZone>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(query_id, i64),
        name!(count, i64),
        name!(mean_ms, Option<f64>),
        name!(median_ms, Option<f64>),
        name!(min_ms, Option<f64>),
        name!(max_ms, Option<f64>),
        name!(p95_ms, Option<f64>),
        name!(p99_ms, Option<f64>),
        name!(error_count, i64),
        name!(error_rate, Option<f64>),
    ),
> {
    if let (Some(s), Some(e)) = (start_at, end_at) {
        if s > e {
            raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                "start_at is after end_at",
                Some("Pass the earlier time as start_at."),
            );
        }
    }
    let mut rows: Vec<_> = own_work::run(|| {
        if let Some(id) = query_id {
            require_known_query(id, "Pick a query_id from optidb.bottlenecks().");
        }
        merged(query_id, start_at, end_at, None)
    })
    .into_iter()
    .map(|((id, _), m)| row(id, &m))
    .collect();
    if let (Some(id), true) = (query_id, rows.is_empty()) {
        rows.push(row(
            id,
            &Merged {
                stats: None,
                errors: 0,
            },
        ));
    }
    TableIterator::new(rows)
}

type StatsRow = (
    i64,
    i64,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    i64,
    Option<f64>,
);

fn row(id: i64, m: &Merged) -> StatsRow {
    let s = m.stats.as_ref();
    let count = s.map_or(0, |s| s.count as i64);
    let attempts = count + m.errors;
    (
        id,
        count,
        s.map(|s| s.mean_ms),
        s.map(|s| s.median_ms),
        s.map(|s| s.min_ms),
        s.map(|s| s.max_ms),
        s.map(|s| s.p95_ms),
        s.map(|s| s.p99_ms),
        m.errors,
        (attempts > 0).then(|| m.errors as f64 / attempts as f64),
    )
}

/// The live shared-memory counters of this database (no history): what the hooks recorded.
#[allow(clippy::type_complexity)] // pgrx needs the TableIterator spelled out
#[pg_extern(volatile, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn latency_counters() -> TableIterator<
    'static,
    (
        name!(queryid, i64),
        name!(userid, i64),
        name!(calls, i64),
        name!(errors, i64),
        name!(error_classes, JsonB),
        name!(mean_ms, Option<f64>),
        name!(p95_ms, Option<f64>),
        name!(max_ms, Option<f64>),
    ),
> {
    // SAFETY: a plain global of this backend, set when it connected to its database, before
    // any statement runs.
    let dbid = unsafe { pg_sys::MyDatabaseId.to_u32() };
    let rows: Vec<_> = table::read_all(Some(dbid), false)
        .into_iter()
        .map(|e| {
            let mut h = Histogram::default();
            for (i, n) in e.buckets.iter().enumerate() {
                h.counts[i] = *n as u64;
            }
            h.count = e.calls;
            h.sum_us = e.sum_ns as f64 / 1000.0;
            h.min_us = e.min_ns as f64 / 1000.0;
            h.max_us = e.max_ns as f64 / 1000.0;
            let s = h.stats();
            let classes: HashMap<String, u64> = e.error_classes.into_iter().collect();
            (
                e.key.queryid as i64,
                e.key.userid as i64,
                e.calls as i64,
                e.errors as i64,
                JsonB(serde_json::to_value(classes).unwrap_or_default()),
                s.as_ref().map(|s| s.mean_ms),
                s.as_ref().map(|s| s.p95_ms),
                s.as_ref().map(|s| s.max_ms),
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// optidb's own shared memory: entries used, capacity, bytes, evictions. Raises when optidb is
/// not preloaded, saying how to fix it.
#[pg_extern(volatile, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn memory() -> TableIterator<
    'static,
    (
        name!(entries, i64),
        name!(max_entries, i64),
        name!(entry_bytes, i64),
        name!(shmem_bytes, i64),
        name!(evictions, i64),
    ),
> {
    let u = table::usage().unwrap_or_else(|| {
        raise(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "optidb is not loaded at server start, so it records no execution times",
            Some("Set shared_preload_libraries = 'pg_stat_statements,optidb' in postgresql.conf and restart PostgreSQL."),
        )
    });
    TableIterator::once((
        u.entries,
        u.max_entries,
        u.entry_bytes,
        u.shmem_bytes,
        u.evictions,
    ))
}
