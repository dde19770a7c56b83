//! SQL functions over optidb's execution-time statistics: `execution_time_stats()` over any
//! time range, the rollup behind the metric views, the current counters, and memory use.

use crate::postgres::errors::{raise, require_known_query};
use crate::postgres::latency::history::{merged, Merged};
use crate::postgres::latency::table;
use crate::postgres::own_work;
use crate::postgres::rows;
use optidb_core::histogram::Histogram;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use pgrx::JsonB;
use std::collections::HashMap;

/// Histogram history rolled up per statement (grain NULL) or per statement and UTC hour or day:
/// the source of the materialized metric views. Times in milliseconds. Parallel unsafe: it
/// reads through SPI, which cannot start in parallel mode, not even in the leader (a refresh
/// over a large history planned in parallel failed: "cannot start commands during a parallel
/// operation").
#[allow(clippy::type_complexity)] // pgrx needs the TableIterator spelled out
#[pg_extern(stable, parallel_unsafe)]
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
    source: default!(Option<&str>, "NULL"),
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
        let of_source = source.map(statements_of);
        let mut stats = merged(query_id, start_at, end_at, None);
        if let Some(ids) = of_source {
            stats.retain(|((id, _), _)| ids.contains(id));
        }
        stats
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

/// The statements of one source ('local': this server's own; src/api/sources.rs) the caller
/// may see.
fn statements_of(source: &str) -> std::collections::HashSet<i64> {
    rows::select(
        "statements of a source",
        "SELECT id FROM optidb.query WHERE source = $1",
        &[source.into()],
        |row| row.get::<i64>("id"),
    )
    .into_iter()
    .collect()
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
