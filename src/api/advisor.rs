//! Refreshing `optidb.recommendation` from stored facts: load statements and catalog facts,
//! run the rules (optidb_core::advisor), upsert the advice by key, and try every new index as a
//! hypothetical index (when hypopg is installed) so that only indexes that measurably help are
//! shown. Advice that no longer follows from the facts is marked stale, not deleted.

use crate::api::advice_checks;
use crate::api::simulate;
use crate::postgres::hypopg::{self, Hypopg};
use crate::postgres::replay;
use crate::postgres::replay_worker;
use crate::postgres::rows;
use optidb_core::advisor::{self, Catalog, Column, Index, Recommendation, Statement, Table};
use optidb_core::plan_facts::PlanFacts;
use optidb_core::vocabulary::{SimulationMode, Status};
use pgrx::prelude::*;
use pgrx::JsonB;
use std::collections::HashMap;

/// Statements the advisor looks at: the top by total time.
const STATEMENTS: i64 = 200;
/// Simulated improvement an index must reach on some affected statement to be shown.
const SHOW_THRESHOLD_PCT: f64 = 10.0;

pub struct Advised {
    pub open: usize,
    pub simulations: usize,
}

pub fn advise() -> Advised {
    let statements = load_statements();
    let catalog = load_catalog();
    let mut recs = advisor::advise(&statements, &catalog);
    advice_checks::verify(&mut recs);
    let keys: Vec<String> = recs.iter().map(Recommendation::key).collect();
    Spi::run_with_args(
        "UPDATE optidb.recommendation SET status = $2, updated_at = pg_catalog.now() \
         WHERE status <> $2 AND rec_key <> ALL ($1)",
        &[keys.into(), Status::Stale.as_str().into()],
    )
    .unwrap_or_else(|e| error!("{e}"));

    let ids: Vec<i64> = recs.iter().map(upsert).collect();
    let simulated = match hypopg::locate() {
        Some(h) => simulate_all(&h, &recs, &ids),
        None => HashMap::new(),
    };
    let total_ms: HashMap<i64, f64> = statements
        .iter()
        .map(|s| (s.query_id, s.total_ms))
        .collect();
    let (mut open, mut simulations) = (0, 0);
    for id in &ids {
        let status = if let Some(runs) = simulated.get(id) {
            // Shown only when a hypothetical index measurably helps some affected statement.
            // Simulations that could not run (no worker slot, a replay error) prove nothing
            // either way: without any that ran, the advice stays open, unproven.
            let (mut best, mut saved) = (None::<f64>, 0.0);
            for (query_id, s) in runs {
                simulations += s.runs.len();
                if let Ok(o) = &s.basis().outcome {
                    best = Some(best.unwrap_or(0.0).max(o.improvement_pct));
                    saved +=
                        total_ms.get(query_id).copied().unwrap_or(0.0) * o.improvement_pct / 100.0;
                }
            }
            Spi::run_with_args(
                "UPDATE optidb.recommendation SET improvement_pct = $2, est_saved_ms = $3 \
                 WHERE id = $1",
                &[(*id).into(), best.into(), best.map(|_| saved).into()],
            )
            .unwrap_or_else(|e| error!("{e}"));
            match best {
                Some(pct) if pct < SHOW_THRESHOLD_PCT => Status::Rejected,
                _ => Status::Open,
            }
        } else {
            Status::Open
        };
        Spi::run_with_args(
            "UPDATE optidb.recommendation SET status = $2 WHERE id = $1",
            &[(*id).into(), status.as_str().into()],
        )
        .unwrap_or_else(|e| error!("{e}"));
        if status == Status::Open {
            open += 1;
        }
    }
    Advised { open, simulations }
}

/// Try every simulable index on each statement it serves, as hypothetical indexes, in replay
/// workers (one per statement owner). Stores every simulation; returns them per recommendation.
fn simulate_all(
    hypopg: &Hypopg,
    recs: &[Recommendation],
    ids: &[i64],
) -> HashMap<i64, Vec<(i64, simulate::Simulated)>> {
    let mut waiting = Vec::new();
    let mut batches = Vec::new();
    let mut done: HashMap<i64, Vec<(i64, simulate::Simulated)>> = HashMap::new();
    for (rec, id) in recs.iter().zip(ids) {
        let Some(index_sql) = rec.index_sql.as_deref().filter(|_| rec.simulable) else {
            continue;
        };
        for query_id in &rec.query_ids {
            match replay::load(*query_id) {
                None => {}
                Some(Err(failure)) => done
                    .entry(*id)
                    .or_default()
                    .push((*query_id, simulate::Simulated::failed(failure))),
                Some(Ok(stmt)) => {
                    let (jobs, pending) = simulate::hypothetical_jobs(hypopg, &stmt, index_sql);
                    batches.push((stmt.context.clone(), jobs));
                    waiting.push((*id, *query_id, pending));
                }
            }
        }
    }
    let answers = replay_worker::run_batches(batches);
    for ((id, query_id, pending), answers) in waiting.into_iter().zip(answers) {
        done.entry(id)
            .or_default()
            .push((query_id, pending.finish(answers)));
    }
    for (id, runs) in &done {
        for (query_id, s) in runs {
            s.store(*id, *query_id, SimulationMode::Hypopg);
        }
    }
    done
}

fn upsert(rec: &Recommendation) -> i64 {
    rows::value::<i64>(
        "store recommendation",
        "INSERT INTO optidb.recommendation AS r (rec_key, kind, schemaname, tablename, columns, \
             ddl, index_sql, rationale, evidence, confidence, risk, query_ids, simulable, \
             not_simulable_reason) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
         ON CONFLICT (rec_key) DO UPDATE SET ddl = excluded.ddl, index_sql = excluded.index_sql, \
             rationale = excluded.rationale, evidence = excluded.evidence, \
             confidence = excluded.confidence, risk = excluded.risk, \
             query_ids = excluded.query_ids, simulable = excluded.simulable, \
             not_simulable_reason = excluded.not_simulable_reason, \
             updated_at = pg_catalog.now() \
         RETURNING id",
        &[
            rec.key().into(),
            rec.kind.as_str().into(),
            rec.schema.clone().into(),
            rec.table.clone().into(),
            rec.columns.clone().into(),
            rec.ddl.clone().into(),
            rec.index_sql.clone().into(),
            rec.rationale.clone().into(),
            JsonB(rec.evidence.clone()).into(),
            rec.confidence.into(),
            rec.risk.clone().into(),
            rec.query_ids.clone().into(),
            rec.simulable.into(),
            rec.not_simulable_reason.clone().into(),
        ],
    )
    .unwrap_or_else(|| error!("storing a recommendation returned no id"))
}

fn load_statements() -> Vec<Statement> {
    rows::select(
        "advisor statements",
        "SELECT q.id AS query_id, q.norm_sql, t.calls, t.total_ms, t.rows, p.facts \
         FROM (SELECT query_id, sum(calls)::int8 AS calls, sum(total_ms) AS total_ms, \
                      sum(rows)::int8 AS rows \
               FROM optidb.metric GROUP BY query_id) t \
         JOIN optidb.query q ON q.id = t.query_id \
         LEFT JOIN LATERAL (SELECT facts FROM optidb.plan \
                            WHERE query_id = q.id AND plan_json IS NOT NULL AND basis \
                            ORDER BY captured_at DESC, id DESC LIMIT 1) p ON true \
         ORDER BY t.total_ms DESC LIMIT $1",
        &[STATEMENTS.into()],
        |row| Statement {
            query_id: row.get("query_id"),
            norm_sql: row.opt("norm_sql"),
            calls: row.get("calls"),
            total_ms: row.get("total_ms"),
            rows: row.get("rows"),
            plan: row.json::<PlanFacts>("facts"),
        },
    )
}

/// The catalog facts catalog::collect() stored (NULL statistics: a table never analyzed or vacuumed).
fn load_catalog() -> Catalog {
    let tables = rows::select(
        "advisor tables",
        "SELECT schemaname::text, relname::text, rows_est, n_live_tup, n_mod_since_analyze, \
                last_analyze::text FROM optidb.schema_table",
        &[],
        |row| Table {
            schema: row.get("schemaname"),
            name: row.get("relname"),
            rows_est: row.opt("rows_est").unwrap_or(0.0),
            live_rows: row.opt::<i64>("n_live_tup").unwrap_or(0) as f64,
            mod_since_analyze: row.opt("n_mod_since_analyze").unwrap_or(0),
            last_analyze: row.opt("last_analyze"),
        },
    );
    let indexes = rows::select(
        "advisor indexes",
        "SELECT schemaname::text, tablename::text, indexname::text, columns, is_unique, \
                is_primary, is_valid, backs_constraint, access_method::text, predicate, \
                idx_scan, bytes, definition FROM optidb.schema_index",
        &[],
        |row| Index {
            schema: row.get("schemaname"),
            table: row.get("tablename"),
            name: row.get("indexname"),
            columns: row.get("columns"),
            is_unique: row.get("is_unique"),
            is_primary: row.get("is_primary"),
            is_valid: row.get("is_valid"),
            backs_constraint: row.get("backs_constraint"),
            access_method: row.get("access_method"),
            predicate: row.opt("predicate"),
            idx_scan: row.opt("idx_scan").unwrap_or(0),
            bytes: row.opt("bytes").unwrap_or(0),
            definition: row.get("definition"),
        },
    );
    let columns = rows::select(
        "advisor columns",
        "SELECT t.schemaname::text, t.relname::text, c.attname::text, \
                c.n_distinct::float8, c.null_frac::float8 \
         FROM optidb.schema_column c JOIN optidb.schema_table t USING (relid)",
        &[],
        |row| Column {
            schema: row.get("schemaname"),
            table: row.get("relname"),
            name: row.get("attname"),
            n_distinct: row.opt("n_distinct"),
            null_frac: row.opt("null_frac"),
        },
    );
    let stats_since = rows::first(
        "statistics reset",
        "SELECT stats_reset::text FROM pg_catalog.pg_stat_database \
         WHERE datname = pg_catalog.current_database()",
        &[],
        |row| row.opt::<String>("stats_reset"),
    )
    .flatten();
    Catalog {
        tables,
        indexes,
        columns,
        stats_since,
    }
}
