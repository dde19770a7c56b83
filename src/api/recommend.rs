//! `optidb.recommend(query_id)`: the open recommendations, most confident first, each with its
//! DDL, rationale, evidence, risk, the statements it serves and what simulation measured; for
//! indexes from the workload search also the time they save and cost per hour, the net and
//! their rank; `source` keeps the advice that serves statements of one source, and evidence
//! names the sources of the statements it serves. `optidb.advice_summary()`: what the whole advised set does to the workload.

use crate::postgres::errors::require_known_query;
use crate::postgres::own_work;
use crate::postgres::rows;
use optidb_core::vocabulary::Status;
use pgrx::prelude::*;
use pgrx::JsonB;

const RECOMMEND_SQL: &str = "
SELECT r.id AS rec_id, r.kind, r.schemaname::text || '.' || r.tablename::text AS table_name,
       r.columns, r.ddl,
       r.rationale, r.confidence, r.risk, r.query_ids, r.est_saved_ms, r.improvement_pct,
       s.node_changes,
       CASE WHEN r.simulable AND r.improvement_pct IS NULL
                 AND r.evidence #>> '{tenant_family,sampled}' = 'false'
                THEN 'simulated on a sample of its tenant family: see optidb.tenant_advice()'
            WHEN r.simulable AND r.improvement_pct IS NULL AND s.last_error IS NOT NULL
                THEN 'not proven: its simulations failed (' || s.last_error || ')'
            WHEN r.simulable AND r.improvement_pct IS NULL
                THEN 'not simulated yet: install hypopg (CREATE EXTENSION hypopg) and run optidb.scan()'
            WHEN NOT r.simulable THEN 'not simulable: ' || r.not_simulable_reason END AS note,
       r.evidence || pg_catalog.jsonb_build_object('sources', src.sources) AS evidence,
       r.saving_ms_per_hour, r.write_ms_per_hour,
       r.saving_ms_per_hour - r.write_ms_per_hour AS net_ms_per_hour, r.rank,
       r.index_bytes / 1048576.0::float8 AS index_mb
FROM optidb.recommendation r
LEFT JOIN LATERAL (
    SELECT (SELECT node_changes FROM optidb.simulation
            WHERE rec_id = r.id AND error IS NULL
            ORDER BY improvement_pct DESC NULLS LAST, ran_at DESC LIMIT 1) AS node_changes,
           (SELECT error FROM optidb.simulation
            WHERE rec_id = r.id AND error IS NOT NULL
            ORDER BY ran_at DESC LIMIT 1) AS last_error) s ON true
-- Where the served statements ran (of those the caller may see): 'local' and source names.
LEFT JOIN LATERAL (
    SELECT pg_catalog.jsonb_agg(DISTINCT q.source ORDER BY q.source) AS sources FROM optidb.query q
    WHERE q.id = ANY (r.query_ids)) src ON true
WHERE r.status = $2 AND ($1::int8 IS NULL OR $1 = ANY (r.query_ids))
  AND ($3::text IS NULL OR src.sources ? $3)
ORDER BY r.confidence DESC, r.rank NULLS LAST, r.est_saved_ms DESC NULLS LAST, r.id";

#[allow(clippy::type_complexity)] // pgrx needs the TableIterator spelled out
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn recommend(
    query_id: default!(Option<i64>, "NULL"),
    source: default!(Option<&str>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(rec_id, i64),
        name!(kind, String),
        name!(table_name, String),
        name!(columns, Vec<String>),
        name!(ddl, String),
        name!(rationale, String),
        name!(confidence, f64),
        name!(risk, String),
        name!(query_ids, Vec<i64>),
        name!(est_saved_ms, Option<f64>),
        name!(improvement_pct, Option<f64>),
        name!(node_changes, Option<Vec<String>>),
        name!(note, Option<String>),
        name!(evidence, JsonB),
        name!(saving_ms_per_hour, Option<f64>),
        name!(write_ms_per_hour, Option<f64>),
        name!(net_ms_per_hour, Option<f64>),
        name!(rank, Option<i32>),
        name!(index_mb, Option<f64>),
    ),
> {
    let rows = own_work::run(|| {
        if let Some(id) = query_id {
            require_known_query(
                id,
                "Pick a query_id from optidb.bottlenecks(), or call optidb.recommend() for all.",
            );
        }
        rows::select(
            "open recommendations",
            RECOMMEND_SQL,
            &[query_id.into(), Status::Open.as_str().into(), source.into()],
            |row| {
                (
                    row.get("rec_id"),
                    row.get("kind"),
                    row.get("table_name"),
                    row.get("columns"),
                    row.get("ddl"),
                    row.get("rationale"),
                    row.get("confidence"),
                    row.get("risk"),
                    row.get("query_ids"),
                    row.opt("est_saved_ms"),
                    row.opt("improvement_pct"),
                    row.opt("node_changes"),
                    row.opt("note"),
                    row.get("evidence"),
                    row.opt("saving_ms_per_hour"),
                    row.opt("write_ms_per_hour"),
                    row.opt("net_ms_per_hour"),
                    row.opt("rank"),
                    row.opt("index_mb"),
                )
            },
        )
    });
    TableIterator::new(rows)
}

const SUMMARY_SQL: &str = "
SELECT l.started_at, (a->>'statements_searched')::int AS statements_searched,
       (a->>'candidates')::int AS candidates, (a->>'indexes')::int AS indexes,
       (a->>'index_bytes')::float8 / 1048576 AS index_mb,
       (a->>'budget_bytes')::float8 / 1048576 AS budget_mb,
       (a->>'workload_cost_before')::float8 AS workload_cost_before,
       (a->>'workload_cost_after')::float8 AS workload_cost_after,
       (a->>'saving_ms_per_hour')::float8 AS saving_ms_per_hour,
       (a->>'write_ms_per_hour')::float8 AS write_ms_per_hour,
       (a->>'net_negative')::int AS net_negative, (a->>'elapsed_ms')::float8 AS search_ms
FROM optidb.scan_log l, LATERAL (SELECT l.advice AS a) x
WHERE l.advice IS NOT NULL
ORDER BY l.id DESC LIMIT 1";

/// The latest scan's workload search: statements searched, candidates tried, indexes advised
/// and their size against the budget, the workload's planned cost (calls x cost) without and
/// with them, time saved and write cost per hour, indexes left out as net negative. No row
/// before a scan has searched (hypopg installed).
#[allow(clippy::type_complexity)] // pgrx needs the TableIterator spelled out
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn advice_summary() -> TableIterator<
    'static,
    (
        name!(scanned_at, pgrx::datum::TimestampWithTimeZone),
        name!(statements_searched, Option<i32>),
        name!(candidates, Option<i32>),
        name!(indexes, Option<i32>),
        name!(index_mb, Option<f64>),
        name!(budget_mb, Option<f64>),
        name!(workload_cost_before, Option<f64>),
        name!(workload_cost_after, Option<f64>),
        name!(saving_ms_per_hour, Option<f64>),
        name!(write_ms_per_hour, Option<f64>),
        name!(net_negative, Option<i32>),
        name!(search_ms, Option<f64>),
    ),
> {
    let rows = own_work::run(|| {
        rows::select("advice summary", SUMMARY_SQL, &[], |row| {
            (
                row.get("started_at"),
                row.opt("statements_searched"),
                row.opt("candidates"),
                row.opt("indexes"),
                row.opt("index_mb"),
                row.opt("budget_mb"),
                row.opt("workload_cost_before"),
                row.opt("workload_cost_after"),
                row.opt("saving_ms_per_hour"),
                row.opt("write_ms_per_hour"),
                row.opt("net_negative"),
                row.opt("search_ms"),
            )
        })
    });
    TableIterator::new(rows)
}
