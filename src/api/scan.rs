//! `optidb.scan()`: one ingest pass. Reads pg_stat_statements' entries of this database, files
//! them under their statements, chooses the `top` statements to record and stores their deltas
//! since they were last recorded, collects catalog facts and captures
//! plans for the slowest statements, each replayed as its owner (src/postgres/replay.rs). Every step is
//! set-based SQL except parsing (pg_query, in-process) and EXPLAIN (one guarded
//! subtransaction per statement).

use crate::api::advisor;
use crate::postgres::capture;
use crate::postgres::catalog;
use crate::postgres::errors::require_positive;
use crate::postgres::gucs;
use crate::postgres::ingest;
use crate::postgres::latency;
use crate::postgres::locks::{self, Lock};
use crate::postgres::own_work;
use crate::postgres::pgss::{self, Counters, PgssEntry};
use crate::postgres::replay;
use crate::postgres::rows;
use optidb_core::vocabulary::ScanKind;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use std::collections::HashMap;
use std::time::Instant;

/// SECURITY DEFINER, as snapshot() and prune(): the meta tables are written by optidb's
/// functions only (what they hold is replayed as other roles); EXECUTE admits the caller.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn scan(
    top: default!(i32, 100),
) -> TableIterator<
    'static,
    (
        name!(queries_seen, i32),
        name!(new_queries, i32),
        name!(plans_captured, i32),
        name!(explain_failures, i32),
        name!(recommendations, i32),
        name!(simulations, i32),
        name!(elapsed_ms, f64),
    ),
> {
    require_positive("top", top);
    let s = own_work::run(|| run(top as usize, ScanKind::Scan));
    TableIterator::once((
        s.queries_seen as i32,
        s.new_queries as i32,
        s.plans_captured as i32,
        s.explain_failures as i32,
        s.recommendations as i32,
        s.simulations as i32,
        s.elapsed_ms,
    ))
}

/// The light half of scan(), run by the background worker on every snapshot interval: store
/// pg_stat_statements and latency deltas and catalog facts; no EXPLAIN, no advice.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn snapshot(
    top: default!(i32, 100),
) -> TableIterator<
    'static,
    (
        name!(queries_seen, i32),
        name!(new_queries, i32),
        name!(elapsed_ms, f64),
    ),
> {
    require_positive("top", top);
    let s = own_work::run(|| run(top as usize, ScanKind::Snapshot));
    TableIterator::once((s.queries_seen as i32, s.new_queries as i32, s.elapsed_ms))
}

/// Delete history older than optidb.retention days; returns the rows deleted.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn prune() -> i64 {
    own_work::run(prune_history)
}

#[derive(Default)]
struct Summary {
    queries_seen: usize,
    new_queries: usize,
    plans_captured: usize,
    explain_failures: usize,
    recommendations: usize,
    simulations: usize,
    elapsed_ms: f64,
}

/// A statement chosen by this pass, in pg_stat_statements' total-time order.
struct Accepted {
    query_id: i64,
    userid: pg_sys::Oid,
    raw_sql: String,
}

/// One pass: a snapshot only, or a whole scan (snapshot, prune, plans, advice).
fn run(top: usize, pass: ScanKind) -> Summary {
    let started = Instant::now();
    let view = pgss::locate();
    locks::acquire_or_raise(
        Lock::Snapshot,
        "optidb.scan() or optidb.snapshot() is running in this database",
    );
    let captured_at =
        rows::value::<TimestampWithTimeZone>("clock", "SELECT pg_catalog.clock_timestamp()", &[])
            .expect("clock_timestamp() is never NULL");

    // Snapshots and scans share one baseline, so both log their pgss stats_reset here.
    let stats_reset = pgss::stats_reset(&view);
    let previous_reset = rows::value::<String>(
        "previous pg_stat_statements reset",
        "SELECT pgss_stats_reset::text FROM optidb.scan_log ORDER BY id DESC LIMIT 1",
        &[],
    );
    let reset_detected = previous_reset.is_some() && previous_reset != stats_reset;

    if reset_detected {
        pgss::forget_baselines();
    }
    // Every entry is grouped into its statement before any is chosen, with a share for each
    // role (src/postgres/ingest.rs): no role can push the others' statements out of optidb.
    let entries = pgss::read_all(&view);
    let selection = ingest::select(&entries, top, &captured_at);
    let accepted: Vec<Accepted> = selection
        .chosen
        .iter()
        .map(|s| Accepted {
            query_id: s.query_id,
            userid: pg_sys::Oid::from(s.userid as u32),
            raw_sql: s.entries[0].text.clone(),
        })
        .collect();
    let kept_entries: Vec<(&PgssEntry, i64)> = selection
        .chosen
        .iter()
        .flat_map(|s| s.entries.iter().map(|e| (*e, s.query_id)))
        .collect();
    let mut summary = Summary {
        queries_seen: accepted.len(),
        new_queries: selection.new_queries,
        ..Summary::default()
    };

    store_deltas(&kept_entries, &captured_at);
    crate::postgres::latency::history::store_deltas(&captured_at);
    latency::sample_store::store();
    catalog::collect();
    if pass == ScanKind::Scan {
        prune_history();
        (summary.plans_captured, summary.explain_failures) = capture_plans(&accepted, &captured_at);
        let advice = advisor::advise();
        summary.recommendations = advice.open;
        summary.simulations = advice.simulations;
        super::families::assign(&captured_at);
        super::anomalies::detect(&captured_at);
    }

    summary.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    Spi::run_with_args(
        "INSERT INTO optidb.scan_log (kind, started_at, finished_at, queries_seen, new_queries, \
             plans_captured, explain_failures, recommendations, simulations, \
             pgss_reset_detected, pgss_stats_reset, elapsed_ms) \
         VALUES ($11, $1, pg_catalog.clock_timestamp(), $2, $3, $4, $5, $6, $7, $8, \
                 $9::timestamptz, $10)",
        &[
            captured_at.into(),
            (summary.queries_seen as i32).into(),
            (summary.new_queries as i32).into(),
            (summary.plans_captured as i32).into(),
            (summary.explain_failures as i32).into(),
            (summary.recommendations as i32).into(),
            (summary.simulations as i32).into(),
            reset_detected.into(),
            stats_reset.into(),
            summary.elapsed_ms.into(),
            pass.as_str().into(),
        ],
    )
    .unwrap_or_else(|e| error!("writing optidb.scan_log failed: {e}"));
    summary
}

/// Delete history older than optidb.retention days, in batches so no single statement holds
/// many row locks or a long snapshot. Returns the rows deleted.
fn prune_history() -> i64 {
    const BATCH: i64 = 10_000;
    let mut total = 0;
    // Open alerts stay whatever their age (resolved_at is NULL).
    let dated = [
        ("optidb.metric", "captured_at"),
        ("optidb.latency", "captured_at"),
        ("optidb.health_history", "captured_at"),
        ("optidb.wait_sample", "captured_at"),
        ("optidb.alert", "resolved_at"),
    ];
    for (table, column) in dated {
        let sql = format!(
            "WITH old AS (SELECT ctid FROM {table} \
                          WHERE {column} < pg_catalog.now() - pg_catalog.make_interval(days => $1) \
                          LIMIT $2), \
                  gone AS (DELETE FROM {table} t USING old WHERE t.ctid = old.ctid RETURNING 1) \
             SELECT count(*) FROM gone"
        );
        loop {
            let deleted = rows::value::<i64>(
                "prune",
                &sql,
                &[gucs::retention_days().into(), BATCH.into()],
            )
            .unwrap_or(0);
            total += deleted;
            if deleted < BATCH {
                break;
            }
        }
    }
    total
}

/// Store every entry's new baseline and, per statement, the sum of its entries' deltas.
fn store_deltas(entries: &[(&PgssEntry, i64)], captured_at: &TimestampWithTimeZone) {
    let mut per_query: HashMap<i64, Counters> = HashMap::new();
    let mut order: Vec<i64> = Vec::new();
    for (entry, query_id) in entries {
        let delta = entry.current.since(entry.baseline.as_ref());
        per_query
            .entry(*query_id)
            .or_insert_with(|| {
                order.push(*query_id);
                Counters::default()
            })
            .add(&delta);
    }

    let col = |f: &dyn Fn(&PgssEntry) -> i64| entries.iter().map(|(e, _)| f(e)).collect::<Vec<_>>();
    Spi::run_with_args(
        "INSERT INTO optidb.pgss_state AS s (queryid, userid, dbid, toplevel, query_id, calls, \
             total_exec_time, rows, shared_blks_hit, shared_blks_read, temp_blks_read, \
             temp_blks_written, seen_at) \
         SELECT u.queryid, u.userid::oid, u.dbid::oid, u.toplevel, u.query_id, u.calls, \
                u.total, u.rows, u.hit, u.read, u.tread, u.twritten, $13 \
         FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::bool[], $5::int8[], $6::int8[], \
                     $7::float8[], $8::int8[], $9::int8[], $10::int8[], $11::int8[], \
                     $12::int8[]) \
              AS u(queryid, userid, dbid, toplevel, query_id, calls, total, rows, hit, read, \
                   tread, twritten) \
         ON CONFLICT (queryid, userid, dbid, toplevel) DO UPDATE SET \
             query_id = excluded.query_id, calls = excluded.calls, \
             total_exec_time = excluded.total_exec_time, rows = excluded.rows, \
             shared_blks_hit = excluded.shared_blks_hit, \
             shared_blks_read = excluded.shared_blks_read, \
             temp_blks_read = excluded.temp_blks_read, \
             temp_blks_written = excluded.temp_blks_written, seen_at = excluded.seen_at",
        &[
            col(&|e| e.queryid).into(),
            col(&|e| e.userid).into(),
            col(&|e| e.dbid).into(),
            entries
                .iter()
                .map(|(e, _)| e.toplevel)
                .collect::<Vec<_>>()
                .into(),
            entries.iter().map(|(_, q)| *q).collect::<Vec<_>>().into(),
            col(&|e| e.current.calls).into(),
            entries
                .iter()
                .map(|(e, _)| e.current.total_ms)
                .collect::<Vec<_>>()
                .into(),
            col(&|e| e.current.rows).into(),
            col(&|e| e.current.shared_blks_hit).into(),
            col(&|e| e.current.shared_blks_read).into(),
            col(&|e| e.current.temp_blks_read).into(),
            col(&|e| e.current.temp_blks_written).into(),
            (*captured_at).into(),
        ],
    )
    .unwrap_or_else(|e| error!("storing pg_stat_statements baselines failed: {e}"));

    let deltas: Vec<(i64, Counters)> = order
        .iter()
        .map(|q| (*q, per_query[q]))
        .filter(|(_, d)| d.calls > 0)
        .collect();
    let dcol = |f: &dyn Fn(&Counters) -> i64| deltas.iter().map(|(_, d)| f(d)).collect::<Vec<_>>();
    Spi::run_with_args(
        "WITH d AS ( \
             SELECT * FROM unnest($1::int8[], $2::int8[], $3::float8[], $4::int8[], $5::int8[], \
                                  $6::int8[], $7::int8[], $8::int8[]) \
                 AS u(query_id, calls, total, rows, hit, read, tread, twritten)), \
         seen AS ( \
             UPDATE optidb.query q SET last_seen = $9 FROM d WHERE q.id = d.query_id) \
         INSERT INTO optidb.metric (query_id, captured_at, calls, total_ms, mean_ms, rows, \
             shared_blks_hit, shared_blks_read, temp_blks_read, temp_blks_written) \
         SELECT query_id, $9, calls, total, total / calls, rows, hit, read, tread, twritten \
         FROM d \
         ON CONFLICT (query_id, captured_at) DO UPDATE SET \
             calls = optidb.metric.calls + excluded.calls, \
             total_ms = optidb.metric.total_ms + excluded.total_ms, \
             mean_ms = (optidb.metric.total_ms + excluded.total_ms) \
                       / (optidb.metric.calls + excluded.calls), \
             rows = optidb.metric.rows + excluded.rows, \
             shared_blks_hit = optidb.metric.shared_blks_hit + excluded.shared_blks_hit, \
             shared_blks_read = optidb.metric.shared_blks_read + excluded.shared_blks_read, \
             temp_blks_read = optidb.metric.temp_blks_read + excluded.temp_blks_read, \
             temp_blks_written = optidb.metric.temp_blks_written + excluded.temp_blks_written",
        &[
            deltas.iter().map(|(q, _)| *q).collect::<Vec<_>>().into(),
            dcol(&|d| d.calls).into(),
            deltas
                .iter()
                .map(|(_, d)| d.total_ms)
                .collect::<Vec<_>>()
                .into(),
            dcol(&|d| d.rows).into(),
            dcol(&|d| d.shared_blks_hit).into(),
            dcol(&|d| d.shared_blks_read).into(),
            dcol(&|d| d.temp_blks_read).into(),
            dcol(&|d| d.temp_blks_written).into(),
            (*captured_at).into(),
        ],
    )
    .unwrap_or_else(|e| error!("storing metric deltas failed: {e}"));
}

/// Capture the plans of the first `optidb.explain_top_k` statements (src/postgres/capture.rs).
/// Returns (captured, failed).
fn capture_plans(accepted: &[Accepted], captured_at: &TimestampWithTimeZone) -> (usize, usize) {
    let top_k = gucs::explain_top_k().max(0) as usize;
    let targets: Vec<capture::Target> = accepted
        .iter()
        .filter(|a| replay::preparable(&a.raw_sql).is_ok())
        .take(top_k)
        .map(|a| capture::Target {
            query_id: a.query_id,
            userid: a.userid,
            raw_sql: a.raw_sql.clone(),
        })
        .collect();
    capture::capture_all(&targets, captured_at)
}
