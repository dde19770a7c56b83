//! `optidb.scan()`: one ingest pass. Reads pg_stat_statements' entries of this database, files
//! them under their statements, stores the deltas of every statement that ran since it was last
//! recorded (history.rs compacts the older ones), chooses the `top` statements, collects catalog
//! facts and captures
//! plans for the slowest statements, each replayed as its owner (src/postgres/replay.rs). Every step is
//! set-based SQL except parsing (pg_query, in-process) and EXPLAIN (one guarded
//! subtransaction per statement). After the ingest, a scan's stages (prune, plans, advice,
//! families, anomalies) each run in a subtransaction of their own (`analyse`).

use crate::api::advisor;
use crate::api::sources;
use crate::postgres::capture;
use crate::postgres::catalog;
use crate::postgres::compaction;
use crate::postgres::errors::require_positive;
use crate::postgres::guarded::{self, Failure};
use crate::postgres::gucs::{self, Fault};
use crate::postgres::identity;
use crate::postgres::ingest;
use crate::postgres::latency;
use crate::postgres::locks::{self, Lock};
use crate::postgres::own_work;
use crate::postgres::pgss::{self, Counters, PgssEntry};
use crate::postgres::rows;
use optidb_core::vocabulary::{ScanKind, ScanStage, Status};
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use pgrx::JsonB;
use std::collections::HashMap;
use std::panic::UnwindSafe;
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

/// Delete what optidb.retention and the row caps no longer keep (prune_history); returns the
/// rows deleted.
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
    // Older history merged per hour and day (src/postgres/compaction.rs) before the snapshot
    // lock is taken: a concurrent pass waits for this one's snapshot, never for its compaction.
    compaction::compact_unless_running();
    locks::acquire_or_raise(
        Lock::Snapshot,
        "optidb.scan() or optidb.snapshot() is running in this database",
    );
    // Rows restored from another cluster or database name this one's roles and database
    // before any statement is matched against them (src/postgres/identity.rs).
    identity::reconcile();
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
    // Every statement that ran has its deltas stored; the `top` are planned.
    let mut accepted: Vec<Accepted> = selection
        .chosen
        .iter()
        .filter(|s| s.top)
        .map(|s| Accepted {
            query_id: s.query_id,
            userid: pg_sys::Oid::from(s.userid as u32),
            raw_sql: s.raw_sql.clone(),
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
    crate::postgres::latency::history::store_deltas(&captured_at, &selection.failed);
    latency::sample_store::store(&selection.failed);
    // Each registered standby's work since the previous pass, as statements of that source
    // (src/api/sources.rs); they are planned here like local ones.
    let pulled = sources::pull_all(&view, &captured_at);
    summary.queries_seen += pulled.len();
    accepted.extend(pulled.into_iter().map(|p| Accepted {
        query_id: p.query_id,
        userid: pg_sys::Oid::from(p.userid as u32),
        raw_sql: p.raw_sql,
    }));
    // Still under the snapshot lock, after every row of the pass is stored.
    latency::rollup::start_if_empty();
    catalog::collect();
    let mut failed = Vec::new();
    if pass == ScanKind::Scan {
        analyse(&accepted, &captured_at, &mut summary, &mut failed);
    }

    summary.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    let dropped = crate::postgres::failing::drain_dropped();
    Spi::run_with_args(
        "INSERT INTO optidb.scan_log (kind, started_at, finished_at, queries_seen, new_queries, \
             plans_captured, explain_failures, recommendations, simulations, \
             pgss_reset_detected, pgss_stats_reset, elapsed_ms, stage_errors, advice, \
             failures_dropped) \
         VALUES ($11, $1, pg_catalog.clock_timestamp(), $2, $3, $4, $5, $6, $7, $8, \
                 $9::timestamptz, $10, $12, $13, $14)",
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
            JsonB(serde_json::Value::Array(failed)).into(),
            advisor::take_summary().map(JsonB).into(),
            JsonB(dropped).into(),
        ],
    )
    .unwrap_or_else(|e| error!("writing optidb.scan_log failed: {e}"));
    summary
}

/// The stages of a scan after its ingest (deltas, latency, samples, catalog facts), in order.
/// Each runs in a subtransaction of its own: one that fails is rolled back alone, with a
/// WARNING and an entry in `failed` (what optidb.scan_log.stage_errors keeps), and the ingest
/// and the other stages are kept. A later stage then works from what the earlier ones left
/// (advice from the previous plans when plan capture failed, and so on). A cancel (Ctrl-C,
/// statement_timeout) is not a stage failure: it still ends the whole scan.
fn analyse(
    accepted: &[Accepted],
    captured_at: &TimestampWithTimeZone,
    summary: &mut Summary,
    failed: &mut Vec<serde_json::Value>,
) {
    let captured_at = *captured_at;
    stage(ScanStage::Prune, failed, prune_history);
    (summary.plans_captured, summary.explain_failures) = stage(ScanStage::Plans, failed, || {
        capture_plans(accepted, &captured_at)
    });
    (summary.recommendations, summary.simulations) = stage(ScanStage::Advice, failed, || {
        let advice = advisor::advise();
        (advice.open, advice.simulations)
    });
    stage(ScanStage::Families, failed, || {
        super::families::assign(&captured_at);
    });
    stage(ScanStage::Anomalies, failed, || {
        super::anomalies::detect(&captured_at);
    });
}

/// Run one stage in a subtransaction (guarded::run). Returns what it returned, or the default
/// when it failed, after recording the failure in `failed`: {stage, sqlstate, message}.
fn stage<R: Default>(
    which: ScanStage,
    failed: &mut Vec<serde_json::Value>,
    work: impl FnOnce() -> R + UnwindSafe,
) -> R {
    let outcome = guarded::run(None, || {
        // pgrx runs an SPI read read-only, with the snapshot the scan() call started with,
        // while the current (sub)transaction has no xid yet: a new subtransaction has none, so
        // the stage would not see what the ingest and the earlier stages wrote. Taking one
        // first makes every read of the stage see them, as when the scan was one transaction.
        // SAFETY: a guarded call inside the stage's subtransaction (a scan always writes).
        unsafe { pg_sys::GetCurrentTransactionId() };
        let done = work();
        if which == ScanStage::Families && gucs::fault_injection() == Fault::Families {
            // Tests (optidb.fault_injection = families): a real error of the SQL kind, raised
            // after the stage's writes, which its subtransaction must take back.
            Spi::run("SELECT 1 / 0").unwrap_or_else(|e| error!("{e}"));
        }
        done
    });
    outcome.unwrap_or_else(|failure| {
        let (sqlstate, message) = match &failure {
            Failure::Error { sqlstate, message } => (sqlstate.clone(), message.clone()),
            // No limit is set on stages; a time limit would be a cancel.
            Failure::TimedOut { .. } => ("57014".to_string(), failure.to_string()),
        };
        warning!(
            "optidb.scan(): its {} stage failed and was rolled back; the ingest and the other \
             stages are kept: {failure}",
            which.as_str()
        );
        failed.push(serde_json::json!({
            "stage": which.as_str(),
            "sqlstate": sqlstate,
            "message": message,
        }));
        R::default()
    })
}

/// Rows one DELETE removes at most: no single statement holds many row locks or a long
/// snapshot.
const PRUNE_BATCH: i64 = 10_000;

/// Delete what optidb.retention and the caps below say is no longer kept, in batches; returns
/// the rows deleted (rows their deletion cascades to are not counted). Run by every scan()
/// (its prune stage) and by prune() (the worker's retention job).
fn prune_history() -> i64 {
    dated().iter().map(prune_dated).sum::<i64>()
        + HISTORIES.iter().map(prune_history_of).sum::<i64>()
}

/// Tables pruned by age alone: (table, time column, which rows): a row goes once its time is
/// older than optidb.retention days. Their size follows from the retention and the workload.
fn dated() -> [(&'static str, &'static str, String); 7] {
    let all = || "true".to_string();
    [
        ("optidb.metric", "captured_at", all()),
        ("optidb.latency", "captured_at", all()),
        // A day's rollup goes with the first of its rows (src/postgres/latency/rollup.rs).
        ("optidb.latency_day", "day", all()),
        ("optidb.health_history", "captured_at", all()),
        ("optidb.wait_sample", "captured_at", all()),
        // Open alerts stay whatever their age (resolved_at is NULL).
        ("optidb.alert", "resolved_at", all()),
        // Advice no longer derived (stale since updated_at), with its simulations (cascade).
        // Advice that is derived again later comes back under a new id.
        (
            "optidb.recommendation",
            "updated_at",
            format!("status = {}", spi::quote_literal(Status::Stale.as_str())),
        ),
    ]
}

fn prune_dated((table, column, which): &(&'static str, &'static str, String)) -> i64 {
    let sql = format!(
        "WITH old AS (SELECT ctid FROM {table} \
                      WHERE {column} < pg_catalog.now() - pg_catalog.make_interval(days => $1) \
                        AND {which} \
                      LIMIT $2), \
              gone AS (DELETE FROM {table} t USING old WHERE t.ctid = old.ctid RETURNING 1) \
         SELECT count(*) FROM gone"
    );
    let mut total = 0;
    loop {
        let deleted = rows::value::<i64>(
            "prune",
            &sql,
            &[gucs::retention_days().into(), PRUNE_BATCH.into()],
        )
        .unwrap_or(0);
        total += deleted;
        if deleted < PRUNE_BATCH {
            return total;
        }
    }
}

/// A table whose rows are histories of the same thing over time, one row per scan (or run) at
/// worst. A row goes once it is older than optidb.retention days or beyond the latest `cap`
/// rows of its history, except the latest KEEP rows of its history and the latest KEEP of
/// those readers look for (`wanted`), which stay whatever their age. So per history at most
/// `cap` + KEEP rows, and at most 2 * KEEP older than the retention.
struct History {
    table: &'static str,
    /// What makes one history: the columns its rows share.
    per: &'static str,
    /// Its time column (NOT NULL).
    at: &'static str,
    /// The rows readers look for; "false" for none.
    wanted: &'static str,
    cap: i64,
}

/// The latest rows of each history kept whatever their age, and as many wanted ones.
const KEEP: i64 = 2;

const HISTORIES: [History; 4] = [
    // Per statement and plan kind: a new row when a capture differs from the latest of its
    // kind (an identical one moves that row's captured_at). Read: the latest of each kind
    // (capture compares with it; query(id) shows the latest capture; a replay's latest typical
    // plan), the latest plan advice rested on (advisor, bottlenecks, query, ask), and the two
    // latest of those per kind (anomalies: plan_change).
    History {
        table: "optidb.plan",
        per: "query_id, plan_kind",
        at: "captured_at",
        wanted: "basis AND plan_json IS NOT NULL",
        cap: 100,
    },
    // Per recommendation, statement, mode and plan kind: every scan simulates each simulable
    // advice on each statement it serves. Read: the latest successful one (ask, report), the
    // latest error and the best gain (recommend), real ones of the last minute (rate limit).
    History {
        table: "optidb.simulation",
        per: "rec_id, query_id, mode, plan_kind",
        at: "ran_at",
        wanted: "error IS NULL",
        cap: 100,
    },
    // Per kind: the worker's snapshots write a row a minute (43,200 in the default 30 days).
    // The latest row holds the pg_stat_statements reset the next scan compares with.
    History {
        table: "optidb.scan_log",
        per: "kind",
        at: "started_at",
        wanted: "false",
        cap: 50_000,
    },
    // Per view: a row per refresh (the worker's: 288 a day at the default 5 min). Read: the
    // latest successful refresh of each view (metrics(), report()).
    History {
        table: "optidb.refresh_log",
        per: "view_name",
        at: "started_at",
        wanted: "error IS NULL",
        cap: 10_000,
    },
];

/// Prune one history table: find up to ROUND rows to go (one pass over the table, ranked per
/// history), delete them by id in batches, again until a round comes back short. By id: a row
/// only ever moves up its history's ranking (new rows come after it), so a row found to go
/// still goes when it is deleted.
fn prune_history_of(h: &History) -> i64 {
    const ROUND: i64 = 100_000;
    let History {
        table,
        per,
        at,
        wanted,
        cap,
    } = h;
    let find = format!(
        "SELECT id FROM ( \
             SELECT id, {at} < pg_catalog.now() - pg_catalog.make_interval(days => $1) AS old, \
                    ({wanted}) IS TRUE AS wanted, \
                    row_number() OVER (PARTITION BY {per} ORDER BY {at} DESC, id DESC) AS nth, \
                    row_number() OVER (PARTITION BY {per}, ({wanted}) IS TRUE \
                                       ORDER BY {at} DESC, id DESC) AS nth_alike \
             FROM {table}) h \
         WHERE (old OR nth > $2) AND nth > $3 AND NOT (wanted AND nth_alike <= $3) \
         ORDER BY id LIMIT $4"
    );
    let delete = format!("DELETE FROM {table} WHERE id = ANY ($1)");
    let mut total = 0;
    loop {
        let ids: Vec<i64> = rows::select(
            "history to prune",
            &find,
            &[
                gucs::retention_days().into(),
                (*cap).into(),
                KEEP.into(),
                ROUND.into(),
            ],
            |row| row.get("id"),
        );
        for batch in ids.chunks(PRUNE_BATCH as usize) {
            Spi::run_with_args(&delete, &[batch.to_vec().into()])
                .unwrap_or_else(|e| error!("pruning {table} failed: {e}"));
        }
        total += ids.len() as i64;
        if (ids.len() as i64) < ROUND {
            return total;
        }
    }
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
    let [queryid, userid, dbid, toplevel] = pgss::key_arrays(entries.iter().map(|(e, _)| *e));
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
            queryid,
            userid,
            dbid,
            toplevel,
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
    store_metric_deltas(&deltas, captured_at);
}

/// One optidb.metric row per statement's delta (added to a row of the same time), and the
/// statements' last_seen. Also what a source's pull stores (src/api/sources.rs).
pub(crate) fn store_metric_deltas(deltas: &[(i64, Counters)], captured_at: &TimestampWithTimeZone) {
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

/// Capture the plans of every statement that matters to the workload, up to the
/// `optidb.explain_top_k` budget (optidb_core::plan_targets says which and why;
/// src/postgres/capture.rs captures them). Returns (captured, failed).
fn capture_plans(accepted: &[Accepted], captured_at: &TimestampWithTimeZone) -> (usize, usize) {
    let budget = gucs::explain_top_k().max(0) as usize;
    let statements: Vec<(i64, bool)> = accepted
        .iter()
        .map(|a| (a.query_id, capture::plannable(a.query_id, &a.raw_sql)))
        .collect();
    let targets: Vec<capture::Target> = capture::worth_planning(&statements, budget)
        .into_iter()
        .map(|i| &accepted[i])
        .map(|a| capture::Target {
            query_id: a.query_id,
            userid: a.userid,
            raw_sql: a.raw_sql.clone(),
        })
        .collect();
    capture::capture_all(&targets, captured_at)
}
