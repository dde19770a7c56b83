//! `optidb.recommend(query_id)`: the open recommendations, most confident first, each with its
//! DDL, rationale, evidence, risk, the statements it serves and what simulation measured.

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
       CASE WHEN r.simulable AND r.improvement_pct IS NULL AND s.last_error IS NOT NULL
                THEN 'not proven: its simulations failed (' || s.last_error || ')'
            WHEN r.simulable AND r.improvement_pct IS NULL
                THEN 'not simulated yet: install hypopg (CREATE EXTENSION hypopg) and run optidb.scan()'
            WHEN NOT r.simulable THEN 'not simulable: ' || r.not_simulable_reason END AS note,
       r.evidence
FROM optidb.recommendation r
LEFT JOIN LATERAL (
    SELECT (SELECT node_changes FROM optidb.simulation
            WHERE rec_id = r.id AND error IS NULL
            ORDER BY improvement_pct DESC NULLS LAST, ran_at DESC LIMIT 1) AS node_changes,
           (SELECT error FROM optidb.simulation
            WHERE rec_id = r.id AND error IS NOT NULL
            ORDER BY ran_at DESC LIMIT 1) AS last_error) s ON true
WHERE r.status = $2 AND ($1::int8 IS NULL OR $1 = ANY (r.query_ids))
ORDER BY r.confidence DESC, r.est_saved_ms DESC NULLS LAST, r.id";

#[allow(clippy::type_complexity)] // pgrx needs the TableIterator spelled out
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn recommend(
    query_id: default!(Option<i64>, "NULL"),
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
            &[query_id.into(), Status::Open.as_str().into()],
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
                )
            },
        )
    });
    TableIterator::new(rows)
}
