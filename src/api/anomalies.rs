//! scan()'s anomaly step: tags recomputed from stored facts each scan (optidb.anomaly), each
//! with the evidence that raised it (optidb_core::anomaly holds the statistics):
//! - `latency_spike`: a statement's latest hour against its own earlier hours of the last 7
//!   days (mean from optidb's histograms; median and MAD, at least anomaly::MIN_SAMPLES hours);
//! - `family_outlier`: a statement far slower than its family's typical mean (7 days);
//! - `plan_change`: the shape of its latest plan differs from its previous capture's;
//! - `lock_contention`: the worker's wait-event samples caught it waiting for a lock at least
//!   LOCK_SAMPLES times in the last hour.

use crate::postgres::latency::history;
use crate::postgres::rows;
use optidb_core::anomaly;
use optidb_core::vocabulary::AnomalyKind;
use pgrx::prelude::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Wait samples (worker evaluations) in the last hour that must show a statement waiting for a
/// lock before contention is suspected.
const LOCK_SAMPLES: i64 = 3;

fn at(sql: &str) -> TimestampWithTimeZone {
    rows::value::<TimestampWithTimeZone>("anomaly window", sql, &[]).expect("never NULL")
}

/// Recompute every tag; returns how many there are.
pub fn detect(now: &TimestampWithTimeZone) -> usize {
    Spi::run("DELETE FROM optidb.anomaly").unwrap_or_else(|e| error!("{e}"));
    let week_ago = at("SELECT pg_catalog.now() - interval '7 days'");
    let mut tags: Vec<(i64, AnomalyKind, Value)> = Vec::new();
    tags.extend(spikes(&week_ago, now));
    tags.extend(family_outliers(&week_ago, now));
    tags.extend(plan_changes());
    tags.extend(lock_contention());
    for (query_id, kind, evidence) in &tags {
        Spi::run_with_args(
            "INSERT INTO optidb.anomaly (query_id, kind, detected_at, evidence) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (query_id, kind) DO NOTHING",
            &[
                (*query_id).into(),
                kind.as_str().into(),
                (*now).into(),
                pgrx::JsonB(evidence.clone()).into(),
            ],
        )
        .unwrap_or_else(|e| error!("storing an anomaly failed: {e}"));
    }
    tags.len()
}

fn text_of(at: &Option<TimestampWithTimeZone>) -> String {
    at.map(|t| t.to_string()).unwrap_or_default()
}

/// Hourly mean per statement; the latest hour (if it is the current or the previous one)
/// against the earlier ones.
fn spikes(
    week_ago: &TimestampWithTimeZone,
    now: &TimestampWithTimeZone,
) -> Vec<(i64, AnomalyKind, Value)> {
    let recent =
        at("SELECT pg_catalog.date_trunc('hour', pg_catalog.now(), 'UTC') - interval '1 hour'");
    let mut hours: BTreeMap<i64, Vec<(Option<TimestampWithTimeZone>, f64, u64)>> = BTreeMap::new();
    for ((query_id, period), merged) in
        history::merged(None, Some(*week_ago), Some(*now), Some("hour"))
    {
        if let Some(stats) = merged.stats {
            hours
                .entry(query_id)
                .or_default()
                .push((period, stats.mean_ms, stats.count));
        }
    }
    hours
        .into_iter()
        .filter_map(|(query_id, windows)| {
            let ((period, latest, calls), earlier) = windows.split_last()?;
            if period.is_none_or(|p| p < recent) {
                return None;
            }
            let history: Vec<f64> = earlier.iter().map(|w| w.1).collect();
            let s = anomaly::spike(&history, *latest, anomaly::MIN_SAMPLES)?;
            Some((
                query_id,
                AnomalyKind::LatencySpike,
                json!({
                    "window": text_of(period),
                    "latest_mean_ms": s.latest,
                    "calls_in_window": calls,
                    "median_mean_ms": s.median,
                    "mad_ms": s.mad,
                    "ratio": s.ratio,
                    "robust_z": s.robust_z,
                    "earlier_hours": s.samples,
                }),
            ))
        })
        .collect()
}

fn family_outliers(
    week_ago: &TimestampWithTimeZone,
    now: &TimestampWithTimeZone,
) -> Vec<(i64, AnomalyKind, Value)> {
    let families: BTreeMap<i64, (i64, String)> = rows::select(
        "statement families",
        "SELECT q.id, f.id AS family_id, f.label FROM optidb.query q \
         JOIN optidb.family f ON f.id = q.family_id",
        &[],
        |row| {
            (
                row.get::<i64>("id"),
                (row.get::<i64>("family_id"), row.get::<String>("label")),
            )
        },
    )
    .into_iter()
    .collect();
    let mut members: BTreeMap<i64, Vec<(i64, f64)>> = BTreeMap::new();
    for ((query_id, _), merged) in history::merged(None, Some(*week_ago), Some(*now), None) {
        if let (Some((family_id, _)), Some(stats)) = (families.get(&query_id), merged.stats) {
            members
                .entry(*family_id)
                .or_default()
                .push((query_id, stats.mean_ms));
        }
    }
    members
        .into_iter()
        .flat_map(|(family_id, statements)| {
            let size = statements.len();
            anomaly::family_outliers(&statements, anomaly::MIN_FAMILY_MEMBERS)
                .into_iter()
                .map(move |o| (family_id, size, o))
        })
        .map(|(family_id, size, o)| {
            let label = families.get(&o.id).map(|f| f.1.clone()).unwrap_or_default();
            (
                o.id,
                AnomalyKind::FamilyOutlier,
                json!({
                    "family_id": family_id,
                    "family": label,
                    "mean_ms": o.value,
                    "family_median_ms": o.family_median,
                    "robust_z": o.robust_z,
                    "family_statements": size,
                }),
            )
        })
        .collect()
}

/// The latest basis plan of each statement against its previous capture's basis plan of the
/// same kind (generic against generic, custom against custom).
fn plan_changes() -> Vec<(i64, AnomalyKind, Value)> {
    rows::select(
        "plan history",
        "SELECT query_id, plan_kind, captured_at::text AS captured_at, total_cost, plan_json \
         FROM (SELECT p.*, row_number() OVER (PARTITION BY query_id, plan_kind \
                                              ORDER BY captured_at DESC, id DESC) AS n \
               FROM optidb.plan p WHERE basis AND plan_json IS NOT NULL) r \
         WHERE n <= 2 ORDER BY query_id, plan_kind, n",
        &[],
        |row| {
            (
                row.get::<i64>("query_id"),
                row.get::<String>("plan_kind"),
                row.get::<String>("captured_at"),
                row.opt::<f64>("total_cost"),
                row.json::<Value>("plan_json")
                    .and_then(|p| anomaly::plan_shape(&p)),
            )
        },
    )
    .chunk_by(|a, b| a.0 == b.0 && a.1 == b.1)
    .filter_map(|pair| {
        let [after, before] = pair else { return None };
        let (Some(shape_after), Some(shape_before)) = (&after.4, &before.4) else {
            return None;
        };
        anomaly::plan_changed(shape_before, shape_after).then(|| {
            (
                after.0,
                AnomalyKind::PlanChange,
                json!({
                    "plan_kind": after.1,
                    "before": shape_before,
                    "after": shape_after,
                    "before_captured_at": before.2,
                    "after_captured_at": after.2,
                    "before_cost": before.3,
                    "after_cost": after.3,
                }),
            )
        })
    })
    .collect()
}

fn lock_contention() -> Vec<(i64, AnomalyKind, Value)> {
    rows::select(
        "lock waits",
        "SELECT q.id AS query_id, count(DISTINCT w.captured_at)::int8 AS samples, \
                max(w.sessions)::int8 AS most_sessions, \
                pg_catalog.jsonb_object_agg(w.wait_event, w.sessions) AS events \
         FROM optidb.wait_sample w \
         JOIN optidb.query q ON w.queryid = ANY (q.queryids) AND q.userid = w.userid \
         WHERE w.wait_event_type = 'Lock' \
           AND w.captured_at > pg_catalog.now() - interval '1 hour' \
         GROUP BY q.id HAVING count(DISTINCT w.captured_at) >= $1",
        &[LOCK_SAMPLES.into()],
        |row| {
            (
                row.get::<i64>("query_id"),
                AnomalyKind::LockContention,
                json!({
                    "samples_waiting": row.get::<i64>("samples"),
                    "most_sessions_waiting": row.get::<i64>("most_sessions"),
                    "lock_events": row.json::<Value>("events"),
                    "window": "1 hour",
                }),
            )
        },
    )
}
