//! optidb.latency, the history of optidb's own execution-time histograms: each snapshot stores
//! what the shared-memory table counted since the previous one (and the new baselines), and
//! `merged` reads any time range of it back as statistics.

use super::failed::Failed;
use super::rollup;
use super::table::{self, EntryCopy};
use crate::postgres::pgss;
use crate::postgres::rows::{self, Row};
use crate::postgres::settings::{self, Setting};
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
    /// Of its failures (failed.rs): the time until failure in all, how many statement_timeout
    /// cancelled, and the latest SQLSTATE.
    failed_ms: f64,
    timeouts: u64,
    sqlstate: Option<String>,
}

fn baselines(dbid: u32) -> HashMap<(i64, u32), Baseline> {
    baselines_of(
        "SELECT queryid, userid::int8 AS userid, calls, errors, sum_ns, error_classes, buckets, \
                counts \
         FROM optidb.latency_state WHERE dbid = $1::int8::oid",
        (dbid as i64).into(),
    )
}

/// The baselines a query returns (one row per entry, latency_state's columns), by
/// (queryid, userid): this server's, or a source's (src/postgres/sources.rs).
fn baselines_of(
    sql: &str,
    arg: pgrx::datum::DatumWithOid<'static>,
) -> HashMap<(i64, u32), Baseline> {
    rows::select("latency baselines", sql, &[arg], |row| {
        let mut buckets = vec![0u64; BUCKETS];
        let idx: Vec<i32> = row.get("buckets");
        let counts: Vec<i64> = row.get("counts");
        for (b, c) in idx.iter().zip(&counts) {
            if let Some(slot) = usize::try_from(*b).ok().and_then(|b| buckets.get_mut(b)) {
                *slot = *c as u64;
            }
        }
        (
            (row.get("queryid"), row.get::<i64>("userid") as u32),
            Baseline {
                calls: row.get::<i64>("calls") as u64,
                errors: row.get::<i64>("errors") as u64,
                sum_ns: row.get::<i64>("sum_ns") as u64,
                classes: row.json("error_classes").unwrap_or_default(),
                buckets,
            },
        )
    })
    .into_iter()
    .collect()
}

/// Counters only grow between resets; if any went down (crash, eviction and re-insert) the
/// whole current value is new.
fn delta(now: &EntryCopy, base: Option<&Baseline>) -> Delta {
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
        ..Delta::default()
    }
}

/// Copy what happened since the previous snapshot into optidb.latency, for statements optidb
/// tracks (those in optidb.pgss_state: every statement that ran, src/postgres/ingest.rs), with the failures the pass drained (`failed`: time
/// until failure, timeouts, SQLSTATE). Returns the number of history rows written.
pub fn store_deltas(captured_at: &TimestampWithTimeZone, failed: &[Failed]) -> usize {
    // SAFETY: a plain global of this backend, set when it connected to its database, before
    // any statement runs.
    let dbid = unsafe { pg_sys::MyDatabaseId.to_u32() };
    let entries = table::read_all(Some(dbid), true);
    if entries.is_empty() && failed.is_empty() {
        return 0;
    }
    let base = baselines(dbid);
    let owners = pgss::owners(dbid);
    let mut per_query = accumulate(&entries, &base, &owners);
    add_failures(&mut per_query, failed, &owners);
    insert_history(&per_query, captured_at);
    store_baselines(&entries);
    super::relations::store(dbid, &owners, &per_query.keys().copied().collect());
    per_query.len()
}

/// Add the drained failures (time until failure, timeouts, SQLSTATE) to their statements'
/// deltas: a pass's own, or a source's (pulled from its standby).
fn add_failures(
    per_query: &mut HashMap<i64, Delta>,
    failed: &[Failed],
    owners: &HashMap<(i64, u32), i64>,
) {
    for f in failed {
        let Some(query_id) = owners.get(&(f.key.queryid as i64, f.key.userid)) else {
            continue;
        };
        let acc = per_query.entry(*query_id).or_default();
        // The latency table counted them too, unless its entry was evicted meanwhile.
        acc.errors = acc.errors.max(f.failures);
        acc.failed_ms += f.sum_us as f64 / 1000.0;
        acc.timeouts += f.timeouts;
        acc.sqlstate = Some(f.sqlstate.clone());
    }
}

/// Store what a source's latency table (pulled by src/api/sources.rs: `entries`, keyed by
/// this server's role OIDs) counted since its previous pull, with the failures drained there
/// (`failed`), under the source's statements (`owners`), and its new baselines. Returns the
/// number of history rows written.
pub fn store_source_deltas(
    source: &str,
    entries: &[EntryCopy],
    failed: &[Failed],
    owners: &HashMap<(i64, u32), i64>,
    captured_at: &TimestampWithTimeZone,
) -> usize {
    let base = baselines_of(
        "SELECT queryid, userid::int8 AS userid, calls, errors, sum_ns, error_classes, buckets, \
                counts \
         FROM optidb.source_latency_state WHERE source = $1",
        source.into(),
    );
    let mut per_query = accumulate(entries, &base, owners);
    add_failures(&mut per_query, failed, owners);
    insert_history(&per_query, captured_at);
    for e in entries {
        let (idx, counts, classes) = baseline_arrays(e);
        Spi::run_with_args(
            "INSERT INTO optidb.source_latency_state AS s (source, queryid, userid, calls, \
                 errors, error_classes, sum_ns, buckets, counts) \
             VALUES ($1, $2, $3::int8::oid, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (source, queryid, userid) DO UPDATE SET calls = excluded.calls, \
                 errors = excluded.errors, error_classes = excluded.error_classes, \
                 sum_ns = excluded.sum_ns, buckets = excluded.buckets, counts = excluded.counts",
            &[
                source.into(),
                (e.key.queryid as i64).into(),
                (e.key.userid as i64).into(),
                (e.calls as i64).into(),
                (e.errors as i64).into(),
                classes.into(),
                (e.sum_ns as i64).into(),
                idx.into(),
                counts.into(),
            ],
        )
        .unwrap_or_else(|e| error!("storing a source's latency baselines failed: {e}"));
    }
    per_query.len()
}

/// Each statement's delta since the baselines (entries of statements not in `owners` are
/// left out), and the slowest execution text kept on its statement.
fn accumulate(
    entries: &[EntryCopy],
    base: &HashMap<(i64, u32), Baseline>,
    owners: &HashMap<(i64, u32), i64>,
) -> HashMap<i64, Delta> {
    let mut per_query: HashMap<i64, Delta> = HashMap::new();
    for e in entries {
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
    per_query
}

/// One optidb.latency row per statement of `per_query`, in one round trip (a snapshot stores
/// a row for every statement that ran: thousands). The one writer of history rows, for this
/// server's snapshots and for sources' pulls.
fn insert_history(per_query: &HashMap<i64, Delta>, captured_at: &TimestampWithTimeZone) {
    if per_query.is_empty() {
        return;
    }
    let rows: Vec<serde_json::Value> = per_query
        .iter()
        .map(|(query_id, d)| {
            let (idx, counts) = d.hist.sparse();
            // Extremes are only known when a call of this interval recorded them.
            let has_extremes = d.calls > 0 && d.hist.min_us <= d.hist.max_us;
            serde_json::json!({
                "query_id": query_id, "calls": d.calls, "errors": d.errors,
                "error_classes": d.classes, "sum_us": d.hist.sum_us,
                "min_us": has_extremes.then_some(d.hist.min_us),
                "max_us": has_extremes.then_some(d.hist.max_us),
                "buckets": idx, "counts": counts, "failed_ms": d.failed_ms,
                "timeouts": d.timeouts, "sqlstate": d.sqlstate,
            })
        })
        .collect();
    // The rows inserted are added to their day's rollup in the same statement (rollup.rs).
    Spi::run_with_args(
        &format!(
            "WITH added AS ( \
                 INSERT INTO optidb.latency (query_id, captured_at, calls, errors, \
                     error_classes, sum_us, min_us, max_us, buckets, counts, failed_ms, \
                     timeouts, sqlstate) \
                 SELECT r.query_id, $2, r.calls, r.errors, r.error_classes, r.sum_us, r.min_us, \
                        r.max_us, r.buckets, r.counts, r.failed_ms, r.timeouts, r.sqlstate \
                 FROM pg_catalog.jsonb_to_recordset($1) AS r(query_id int8, calls int8, \
                      errors int8, error_classes jsonb, sum_us float8, min_us float8, \
                      max_us float8, buckets int4[], counts int8[], failed_ms float8, \
                      timeouts int8, sqlstate text) \
                 ON CONFLICT (query_id, captured_at) DO NOTHING \
                 RETURNING *) \
             {}",
            rollup::ADD_TO_DAY
        ),
        &[
            JsonB(serde_json::Value::Array(rows)).into(),
            (*captured_at).into(),
        ],
    )
    .unwrap_or_else(|e| error!("storing latency history failed: {e}"));
}

/// An entry's cumulative histogram as sparse (bucket, count) arrays, and its failures per
/// SQLSTATE class: how baselines store them.
fn baseline_arrays(e: &EntryCopy) -> (Vec<i32>, Vec<i64>, JsonB) {
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
    (
        idx,
        counts,
        JsonB(serde_json::to_value(classes).unwrap_or_default()),
    )
}

/// Every entry's cumulative counters as this server's new baselines, in one round trip (one
/// upsert per entry cost seconds a pass with thousands of entries).
fn store_baselines(entries: &[EntryCopy]) {
    if entries.is_empty() {
        return;
    }
    let rows: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| {
            let (idx, counts, classes) = baseline_arrays(e);
            serde_json::json!({
                "queryid": e.key.queryid as i64, "userid": e.key.userid as i64,
                "dbid": e.key.dbid as i64, "calls": e.calls as i64, "errors": e.errors as i64,
                "error_classes": classes.0, "sum_ns": e.sum_ns as i64,
                "buckets": idx, "counts": counts,
            })
        })
        .collect();
    Spi::run_with_args(
        "INSERT INTO optidb.latency_state AS s (queryid, userid, dbid, calls, errors, \
             error_classes, sum_ns, buckets, counts) \
         SELECT r.queryid, r.userid::oid, r.dbid::oid, r.calls, r.errors, r.error_classes, \
                r.sum_ns, r.buckets, r.counts \
         FROM pg_catalog.jsonb_to_recordset($1) AS r(queryid int8, userid int8, dbid int8, \
              calls int8, errors int8, error_classes jsonb, sum_ns int8, buckets int4[], \
              counts int8[]) \
         ON CONFLICT (queryid, userid, dbid) DO UPDATE SET calls = excluded.calls, \
             errors = excluded.errors, error_classes = excluded.error_classes, \
             sum_ns = excluded.sum_ns, buckets = excluded.buckets, counts = excluded.counts",
        &[JsonB(serde_json::Value::Array(rows)).into()],
    )
    .unwrap_or_else(|e| error!("storing latency baselines failed: {e}"));
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
    let sort_memory = [Setting::user("work_mem", rollup::READ_WORK_MEM)];
    settings::with(&sort_memory, || merge_rows(query_id, start, end, grain))
}

fn merge_rows(
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
        // Whole ranges read the per-day rollup where it holds the rows (rollup.rs); not
        // while an upgrade script from before it refreshes a view over this (no table yet).
        let mut cursor = match grain {
            None if rollup::exists() => {
                let (lo, hi) = rollup::days_for(start, end);
                client.open_cursor(
                    rollup::READ_SQL,
                    &[
                        query_id.into(),
                        start.into(),
                        end.into(),
                        lo.into(),
                        hi.into(),
                    ],
                )
            }
            _ => client.open_cursor(
                "SELECT query_id, pg_catalog.date_trunc($4, captured_at, 'UTC') AS period, \
                        errors, sum_us, min_us, max_us, buckets, counts \
                 FROM optidb.latency \
                 WHERE ($1::int8 IS NULL OR query_id = $1) \
                   AND ($2::timestamptz IS NULL OR captured_at >= $2) \
                   AND ($3::timestamptz IS NULL OR captured_at <= $3) \
                 ORDER BY 1, 2",
                &[query_id.into(), start.into(), end.into(), grain.into()],
            ),
        };
        loop {
            let batch = cursor.fetch(FETCH_BATCH).unwrap_or_else(|e| error!("{e}"));
            let fetched = batch.len();
            for tuple in batch {
                let row = Row::new(&tuple, "latency history");
                let key: GroupKey = (row.get("query_id"), row.opt("period"));
                if current.as_ref().is_none_or(|(k, _, _)| *k != key) {
                    finish(current.take(), &mut out);
                    current = Some((key, Histogram::default(), 0));
                }
                let (_, hist, errors) = current.as_mut().expect("set above");
                *errors += row.get::<i64>("errors");
                hist.add_sparse(
                    &row.get::<Vec<i32>>("buckets"),
                    &row.get::<Vec<i64>>("counts"),
                    row.get("sum_us"),
                    // NULL: no execution in the interval had its time measured.
                    row.opt("min_us").unwrap_or(f64::INFINITY),
                    row.opt("max_us").unwrap_or(0.0),
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
