//! `optidb.recommend(query_id)`: the open recommendations, most confident first, each with its
//! DDL, rationale, evidence, risk, the statements it serves and what simulation measured.

use crate::errors::require_known_query;
use crate::own_work;
use pgrx::prelude::*;
use pgrx::JsonB;

const RECOMMEND_SQL: &str = "
SELECT r.id, r.kind, r.schemaname::text || '.' || r.tablename::text, r.columns, r.ddl,
       r.rationale, r.confidence, r.risk, r.query_ids, r.est_saved_ms, r.improvement_pct,
       s.node_changes,
       CASE WHEN r.simulable AND r.improvement_pct IS NULL AND s.last_error IS NOT NULL
                THEN 'not proven: its simulations failed (' || s.last_error || ')'
            WHEN r.simulable AND r.improvement_pct IS NULL
                THEN 'not simulated yet: install hypopg (CREATE EXTENSION hypopg) and run optidb.scan()'
            WHEN NOT r.simulable THEN 'not simulable: ' || r.not_simulable_reason END,
       r.evidence
FROM optidb.recommendation r
LEFT JOIN LATERAL (
    SELECT (SELECT node_changes FROM optidb.simulation
            WHERE rec_id = r.id AND error IS NULL
            ORDER BY improvement_pct DESC NULLS LAST, ran_at DESC LIMIT 1) AS node_changes,
           (SELECT error FROM optidb.simulation
            WHERE rec_id = r.id AND error IS NOT NULL
            ORDER BY ran_at DESC LIMIT 1) AS last_error) s ON true
WHERE r.status = 'open' AND ($1::int8 IS NULL OR $1 = ANY (r.query_ids))
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
        Spi::connect(|client| {
            client
                .select(RECOMMEND_SQL, None, &[query_id.into()])
                .unwrap_or_else(|e| error!("{e}"))
                .map(|row| {
                    let s = |i| row.get::<String>(i).ok().flatten().unwrap_or_default();
                    (
                        row.get::<i64>(1).ok().flatten().unwrap_or(0),
                        s(2),
                        s(3),
                        row.get::<Vec<String>>(4).ok().flatten().unwrap_or_default(),
                        s(5),
                        s(6),
                        row.get::<f64>(7).ok().flatten().unwrap_or(0.0),
                        s(8),
                        row.get::<Vec<i64>>(9).ok().flatten().unwrap_or_default(),
                        row.get::<f64>(10).ok().flatten(),
                        row.get::<f64>(11).ok().flatten(),
                        row.get::<Vec<String>>(12).ok().flatten(),
                        row.get::<String>(13).ok().flatten(),
                        row.get::<JsonB>(14)
                            .ok()
                            .flatten()
                            .unwrap_or(JsonB(serde_json::Value::Null)),
                    )
                })
                .collect::<Vec<_>>()
        })
    });
    TableIterator::new(rows)
}
