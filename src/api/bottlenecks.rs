//! `optidb.bottlenecks()` and `optidb.query(id)`: what is slow and why, from stored facts only
//! (metric deltas, failed executions from optidb's latency history, the latest captured plan,
//! catalog sizes). The reasoning itself lives in
//! `optidb_core::bottleneck`.

use crate::postgres::errors::{raise, require_positive};
use crate::postgres::own_work;
use crate::postgres::rows;
use optidb_core::bottleneck::{self, Diagnosis, StatementMetrics, TableSize};
use optidb_core::plan_facts::PlanFacts;
use optidb_core::vocabulary::Status;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::json;

/// One statement's totals over all stored snapshots, with its latest plan facts.
struct Observed {
    query_id: i64,
    fingerprint: String,
    query: Option<String>,
    metrics: StatementMetrics,
    plan: Option<PlanFacts>,
    plan_captured_at: Option<String>,
    /// DDL of the most confident open recommendation for this statement.
    ddl: Option<String>,
    /// Which plan the facts come from (generic, or typical: a sampled execution's values) and
    /// why, with the values.
    plan_basis: serde_json::Value,
    /// Its family (id, label) and anomaly tags (kind, evidence), as scan() stored them.
    family: serde_json::Value,
    anomalies: serde_json::Value,
    /// Where it ran: 'local' (this server) or a registered source (src/api/sources.rs).
    source: String,
}

// Completed executions come from pg_stat_statements' deltas (optidb.metric), failed ones from
// optidb's own history (optidb.latency): a statement that never completes has only the latter.
const OBSERVED_SQL: &str = "
WITH completed AS (
    SELECT query_id, sum(calls)::int8 AS calls, sum(total_ms) AS total_ms, sum(rows)::int8 AS rows,
           sum(shared_blks_hit)::int8 AS hit, sum(shared_blks_read)::int8 AS read,
           sum(temp_blks_written)::int8 AS twritten
    FROM optidb.metric GROUP BY query_id
), failed AS (
    SELECT query_id, sum(errors)::int8 AS failures, sum(timeouts)::int8 AS timeouts,
           sum(failed_ms) AS failed_ms,
           (pg_catalog.array_agg(sqlstate ORDER BY captured_at DESC)
                FILTER (WHERE sqlstate IS NOT NULL))[1] AS sqlstate
    FROM optidb.latency WHERE errors > 0 GROUP BY query_id
), totals AS (
    SELECT COALESCE(c.query_id, f.query_id) AS query_id, COALESCE(c.calls, 0) AS calls,
           COALESCE(c.total_ms, 0) AS total_ms, COALESCE(c.rows, 0) AS rows,
           COALESCE(c.hit, 0) AS hit, COALESCE(c.read, 0) AS read,
           COALESCE(c.twritten, 0) AS twritten, COALESCE(f.failures, 0) AS failures,
           COALESCE(f.timeouts, 0) AS timeouts, COALESCE(f.failed_ms, 0) AS failed_ms,
           f.sqlstate
    FROM completed c FULL JOIN failed f ON f.query_id = c.query_id
), grand AS (SELECT sum(total_ms + failed_ms) AS total FROM totals)
SELECT q.id AS query_id, q.fingerprint, COALESCE(q.norm_sql, q.raw_sql) AS query, t.calls,
       q.source,
       t.total_ms, t.rows, t.hit, t.read, t.twritten, t.failures, t.timeouts, t.failed_ms,
       t.sqlstate,
       COALESCE((t.total_ms + t.failed_ms) / NULLIF(g.total, 0), 0) AS share_of_total,
       p.facts, p.captured_at::text AS plan_captured_at, r.ddl, p.plan_kind, p.param_values,
       (SELECT pg_catalog.jsonb_build_object('id', f.id, 'label', f.label)
        FROM optidb.family f WHERE f.id = q.family_id) AS family,
       (SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('kind', a.kind,
                                    'detected_at', a.detected_at, 'evidence', a.evidence)
                                    ORDER BY a.kind)
        FROM optidb.anomaly a WHERE a.query_id = q.id) AS anomalies
FROM totals t
JOIN optidb.query q ON q.id = t.query_id
CROSS JOIN grand g
LEFT JOIN LATERAL (
    SELECT facts, captured_at, plan_kind, param_values FROM optidb.plan
    WHERE query_id = q.id AND plan_json IS NOT NULL AND basis
    ORDER BY captured_at DESC, id DESC LIMIT 1) p ON true
LEFT JOIN LATERAL (
    SELECT ddl FROM optidb.recommendation
    WHERE status = $3 AND q.id = ANY (query_ids)
    ORDER BY confidence DESC, est_saved_ms DESC NULLS LAST LIMIT 1) r ON true
WHERE (t.calls > 0 OR t.failures > 0) AND ($1::int8 IS NULL OR q.id = $1)
  AND ($4::text IS NULL OR q.source = $4)
ORDER BY t.total_ms + t.failed_ms DESC, q.id
LIMIT $2";

fn observed(only: Option<i64>, limit: i64, source: Option<&str>) -> Vec<Observed> {
    rows::select(
        "observed statements",
        OBSERVED_SQL,
        &[
            only.into(),
            limit.into(),
            Status::Open.as_str().into(),
            source.into(),
        ],
        |row| {
            let facts = row.opt::<JsonB>("facts").map(|j| j.0);
            Observed {
                query_id: row.get("query_id"),
                fingerprint: row.get("fingerprint"),
                query: row.opt("query"),
                metrics: StatementMetrics {
                    calls: row.get("calls"),
                    total_ms: row.get("total_ms"),
                    rows: row.get("rows"),
                    shared_blks_hit: row.get("hit"),
                    shared_blks_read: row.get("read"),
                    temp_blks_written: row.get("twritten"),
                    share_of_total: row.get("share_of_total"),
                    failures: row.get("failures"),
                    timeouts: row.get("timeouts"),
                    failed_ms: row.get("failed_ms"),
                    sqlstate: row.opt("sqlstate"),
                },
                plan: row.json("facts"),
                plan_captured_at: row.opt("plan_captured_at"),
                ddl: row.opt("ddl"),
                plan_basis: json!({
                    "plan": row.opt::<String>("plan_kind"),
                    "values": row.opt::<Vec<Option<String>>>("param_values"),
                    "reason": facts.and_then(|f| f.pointer("/basis/reason").cloned()),
                }),
                family: row.opt::<JsonB>("family").map_or(json!(null), |j| j.0),
                anomalies: row.opt::<JsonB>("anomalies").map_or(json!([]), |j| j.0),
                source: row.get("source"),
            }
        },
    )
}

/// Estimated rows of every user table, as of the last scan.
fn table_sizes() -> Vec<TableSize> {
    rows::select(
        "table sizes",
        // Live tuples count too: a table whose statistics are stale may hold far more rows
        // than the planner's estimate says (NULL: never analyzed nor counted).
        "SELECT relname::text, GREATEST(rows_est, n_live_tup) AS rows_est \
         FROM optidb.schema_table",
        &[],
        |row| TableSize {
            relation: row.get("relname"),
            rows_est: row.opt("rows_est").unwrap_or(0.0),
        },
    )
}

fn evidence(o: &Observed, d: &Diagnosis) -> serde_json::Value {
    json!({
        "reasons": d.reasons,
        "metrics": {
            "calls": o.metrics.calls,
            "total_ms": o.metrics.total_ms,
            "mean_ms": o.metrics.mean_ms(),
            "rows": o.metrics.rows,
            "shared_blks_hit": o.metrics.shared_blks_hit,
            "shared_blks_read": o.metrics.shared_blks_read,
            "temp_blks_written": o.metrics.temp_blks_written,
            "share_of_total": o.metrics.share_of_total,
        },
        "failures": failures(&o.metrics),
        "plan_captured_at": o.plan_captured_at,
        "plan_basis": o.plan_basis,
        "seq_scans": o.plan.as_ref().map(|p| &p.seq_scans),
        "family": o.family,
        "anomalies": o.anomalies,
        "source": o.source,
    })
}

/// The failed executions: how many, of how many, how many statement_timeout cancelled, the
/// time until failure and the latest SQLSTATE (null without failures).
fn failures(m: &StatementMetrics) -> serde_json::Value {
    if m.failures == 0 {
        return serde_json::Value::Null;
    }
    json!({
        "count": m.failures,
        "executions": m.calls + m.failures,
        "timeouts": m.timeouts,
        "mean_time_until_failure_ms": m.mean_failed_ms(),
        "total_failed_ms": m.failed_ms,
        "sqlstate": m.sqlstate,
    })
}

/// The statements with the largest total execution time, each with the reasons it is slow.
// pgrx must see the TableIterator spelled out (a type alias does not resolve to SQL columns).
#[allow(clippy::type_complexity)]
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn bottlenecks(
    lim: default!(Option<i32>, 20),
    source: default!(Option<&str>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(query_id, i64),
        name!(fingerprint, String),
        name!(query, Option<String>),
        name!(calls, i64),
        name!(mean_ms, f64),
        name!(p95_ms, Option<f64>),
        name!(p99_ms, Option<f64>),
        name!(total_ms, f64),
        name!(share_pct, f64),
        name!(reason, String),
        name!(evidence, JsonB),
        name!(ddl, Option<String>),
        name!(confidence, f64),
        name!(family_id, Option<i64>),
        name!(family_label, Option<String>),
        name!(anomalies, Vec<String>),
        name!(source, String),
    ),
> {
    // NULL lim: no rows, as when the function was STRICT (before its source argument).
    let Some(lim) = lim else {
        return TableIterator::new(Vec::new());
    };
    require_positive("lim", lim);
    TableIterator::new(own_work::run(|| rows(lim, source)))
}

type BottleneckRow = (
    i64,
    String,
    Option<String>,
    i64,
    f64,
    Option<f64>,
    Option<f64>,
    f64,
    f64,
    String,
    JsonB,
    Option<String>,
    f64,
    Option<i64>,
    Option<String>,
    Vec<String>,
    String,
);

fn rows(lim: i32, source: Option<&str>) -> Vec<BottleneckRow> {
    let tables = table_sizes();
    observed(None, lim as i64, source)
        .into_iter()
        .map(|o| {
            let d = bottleneck::diagnose(&o.metrics, o.plan.as_ref(), &tables);
            let latency = latency_stats(o.query_id);
            (
                o.query_id,
                o.fingerprint.clone(),
                o.query.clone(),
                o.metrics.calls,
                o.metrics.mean_ms(),
                latency.as_ref().map(|s| s.p95_ms),
                latency.as_ref().map(|s| s.p99_ms),
                o.metrics.time_ms(),
                o.metrics.share_of_total * 100.0,
                d.summary(),
                JsonB(evidence(&o, &d)),
                o.ddl.clone(),
                d.confidence,
                o.family["id"].as_i64(),
                o.family["label"].as_str().map(str::to_owned),
                anomaly_kinds(&o.anomalies),
                o.source.clone(),
            )
        })
        .collect()
}

/// The kinds of a statement's anomaly tags (the `anomalies` column: chips in the list; the
/// evidence of each stays in `evidence -> 'anomalies'`), sorted as the query orders them.
fn anomaly_kinds(anomalies: &serde_json::Value) -> Vec<String> {
    anomalies
        .as_array()
        .map(|tags| {
            tags.iter()
                .filter_map(|t| t["kind"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Percentiles from optidb's own histograms over all stored history, when it has any.
fn latency_stats(query_id: i64) -> Option<optidb_core::histogram::Stats> {
    crate::postgres::latency::history::merged(Some(query_id), None, None, None)
        .into_iter()
        .next()
        .and_then(|(_, m)| m.stats)
}

const DETAIL_SQL: &str = "
SELECT pg_catalog.jsonb_build_object(
    'query_id', q.id, 'fingerprint', q.fingerprint, 'queryids', q.queryids, 'kind', q.kind,
    'query', q.norm_sql, 'raw_sql', q.raw_sql, 'parse_error', q.parse_error, 'tables', q.tables,
    'slowest_sql', q.slowest_sql, 'slowest_ms', q.slowest_ms,
    'first_seen', q.first_seen, 'last_seen', q.last_seen,
    'metrics', (SELECT pg_catalog.jsonb_build_object(
                    'calls', sum(calls), 'total_ms', sum(total_ms),
                    'mean_ms', sum(total_ms) / NULLIF(sum(calls), 0), 'rows', sum(rows),
                    'shared_blks_hit', sum(shared_blks_hit),
                    'shared_blks_read', sum(shared_blks_read),
                    'temp_blks_written', sum(temp_blks_written), 'snapshots', count(*),
                    'first_capture', min(captured_at), 'last_capture', max(captured_at))
                FROM optidb.metric m WHERE m.query_id = q.id),
    'failures', (SELECT pg_catalog.jsonb_build_object(
                    'count', sum(errors), 'timeouts', sum(timeouts),
                    'total_failed_ms', sum(failed_ms),
                    'mean_time_until_failure_ms', sum(failed_ms) / NULLIF(sum(errors), 0),
                    'sqlstate', (pg_catalog.array_agg(sqlstate ORDER BY captured_at DESC)
                                 FILTER (WHERE sqlstate IS NOT NULL))[1],
                    'last_failure_at', max(captured_at))
                 FROM optidb.latency l WHERE l.query_id = q.id AND l.errors > 0
                 HAVING count(*) > 0),
    'history', (SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                    'captured_at', h.captured_at, 'calls', h.calls, 'total_ms', h.total_ms,
                    'mean_ms', h.mean_ms) ORDER BY h.captured_at DESC)
                FROM (SELECT * FROM optidb.metric m WHERE m.query_id = q.id
                      ORDER BY captured_at DESC LIMIT 50) h),
    'plan', (SELECT pg_catalog.jsonb_build_object(
                 'captured_at', p.captured_at, 'explain_error', p.explain_error,
                 'search_path', p.search_path, 'path_source', p.path_source,
                 'plan_kind', p.plan_kind, 'param_values', p.param_values,
                 'total_cost', p.total_cost, 'facts', p.facts, 'plan', p.plan_json)
             FROM optidb.plan p WHERE p.query_id = q.id
             ORDER BY p.captured_at DESC, p.basis DESC, p.id DESC LIMIT 1),
    'plans', (SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                  'plan_kind', p.plan_kind, 'basis', p.basis, 'param_values', p.param_values,
                  'total_cost', p.total_cost, 'est_rows', p.est_rows,
                  'had_seq_scan', p.had_seq_scan, 'explain_error', p.explain_error)
                  ORDER BY p.basis DESC, p.plan_kind)
              FROM optidb.plan p WHERE p.query_id = q.id
                AND p.captured_at = (SELECT max(captured_at) FROM optidb.plan
                                     WHERE query_id = q.id)),
    'samples', (SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                    'kind', s.kind, 'started_at', s.started_at, 'elapsed_ms', s.elapsed_ms,
                    'search_path', s.search_path, 'sql_text', s.sql_text,
                    'param_values', s.param_values, 'values_known', s.values_known)
                    ORDER BY s.started_at DESC)
                FROM optidb.sample s WHERE s.query_id = q.id),
    'family', (SELECT pg_catalog.jsonb_build_object('id', f.id, 'label', f.label,
                                                    'statements', f.statements)
               FROM optidb.family f WHERE f.id = q.family_id),
    'anomalies', (SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                      'kind', a.kind, 'detected_at', a.detected_at, 'evidence', a.evidence)
                      ORDER BY a.kind)
                  FROM optidb.anomaly a WHERE a.query_id = q.id))
FROM optidb.query q WHERE q.id = $1";

/// Everything optidb stored about one statement, as jsonb.
#[pg_extern(name = "query", stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn query_detail(id: i64) -> JsonB {
    own_work::run(|| detail(id))
}

fn detail(id: i64) -> JsonB {
    let detail =
        rows::value::<JsonB>("statement detail", DETAIL_SQL, &[id.into()]).unwrap_or_else(|| {
            raise(
                PgSqlErrorCode::ERRCODE_NO_DATA_FOUND,
                format!("optidb has no statement with id {id}"),
                Some("Run SELECT optidb.scan(); then pick a query_id from optidb.bottlenecks()."),
            )
        });
    let mut value = detail.0;
    let diagnosis = observed(Some(id), 1, None)
        .first()
        .map(|o| bottleneck::diagnose(&o.metrics, o.plan.as_ref(), &table_sizes()));
    value["diagnosis"] = serde_json::to_value(diagnosis).unwrap_or_default();
    value["latency"] = serde_json::to_value(latency_stats(id)).unwrap_or_default();
    JsonB(value)
}
