//! Refreshing `optidb.recommendation` from stored facts: load statements and catalog facts,
//! run the rules (optidb_core::advisor), upsert the advice by key. Index advice comes from the
//! workload-level what-if search (src/api/index_search.rs) when hypopg is installed, and from
//! the plan rules otherwise (shown unproven). Every advised index is then simulated on each
//! statement it serves and the simulations stored. Advice that no longer follows from the
//! facts is marked stale, not deleted.

use crate::api::advice_checks;
use crate::api::index_search::{self, Figures};
use crate::api::simulate;
use crate::api::tenant_advice;
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

/// Statements the advisor looks at: the top by total time (failed executions' time included),
/// planned ones first (a tenant family's sample is planned for the family, whatever each
/// tenant's own time).
const STATEMENTS: i64 = 200;
/// Simulated improvement an index must reach on some affected statement to be shown.
const SHOW_THRESHOLD_PCT: f64 = 10.0;

pub struct Advised {
    pub open: usize,
    pub simulations: usize,
}

pub fn advise() -> Advised {
    take_summary();
    let statements = load_statements();
    let catalog = load_catalog();
    let mut recs = advisor::advise(&statements, &catalog);
    // Advice beyond B-tree indexes only when a replay shows its effect.
    advice_checks::verify(&mut recs);
    let hypopg = hypopg::locate();
    // Index advice from the search replaces the rules' (which judge one plan at a time).
    let mut searched: HashMap<String, (Figures, bool)> = HashMap::new();
    let mut summary = None;
    if let Some(h) = &hypopg {
        let search = index_search::search(h, &statements, &catalog);
        // The plan rules' index advice stays only for statements the search could not measure
        // (its replays found no worker slot, or failed): shown unproven, never dropped because
        // someone kept the worker slots busy.
        recs.retain(|r| {
            !r.kind.creates_index() || r.query_ids.iter().any(|q| search.unmeasured.contains(q))
        });
        for advice in search.advice {
            searched.insert(advice.rec.key(), (advice.figures, advice.open));
            recs.push(advice.rec);
        }
        summary = Some(search.summary);
        advisor::fold_partition_indexes(&mut recs, &catalog, |r| {
            searched.get(&r.key()).is_none_or(|(_, open)| *open)
        });
    }
    // The same advice in many tenant schemas: one family, simulated on a sample of tenants.
    tenant_advice::tag(&mut recs);
    let keys: Vec<String> = recs.iter().map(Recommendation::key).collect();
    Spi::run_with_args(
        "UPDATE optidb.recommendation SET status = $2, updated_at = pg_catalog.now() \
         WHERE status <> $2 AND rec_key <> ALL ($1)",
        &[keys.into(), Status::Stale.as_str().into()],
    )
    .unwrap_or_else(|e| error!("{e}"));

    let ids: Vec<i64> = recs.iter().map(upsert).collect();
    for (rec, id) in recs.iter().zip(&ids) {
        store_figures(*id, searched.get(&rec.key()).map(|(f, _)| f));
    }
    let simulated = match &hypopg {
        Some(h) => {
            // Advice the search did not advise (net negative) is not simulated again.
            let advised = |r: &Recommendation| {
                searched.get(&r.key()).is_none_or(|(_, open)| *open)
                    && tenant_advice::simulated_here(r)
            };
            simulate_all(h, &recs, &ids, advised)
        }
        None => HashMap::new(),
    };

    let total_ms: HashMap<i64, f64> = statements
        .iter()
        .map(|s| (s.query_id, s.total_ms))
        .collect();
    let (mut open, mut simulations) = (0, 0);
    for (rec, id) in recs.iter().zip(&ids) {
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
        // The search's verdict stands: it weighed the index on every statement with the rest
        // of the set (an index a join needs with another may do little alone), and net
        // negative advice is never open.
        let status = match searched.get(&rec.key()) {
            Some((_, true)) => Status::Open,
            Some((_, false)) => Status::Rejected,
            None => status,
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
    if let Some(summary) = summary {
        store_summary(summary);
    }
    Advised { open, simulations }
}

/// Try every simulable index on each statement it serves, as hypothetical indexes, in replay
/// workers (one per statement owner). Stores every simulation; returns them per recommendation.
fn simulate_all(
    hypopg: &Hypopg,
    recs: &[Recommendation],
    ids: &[i64],
    advised: impl Fn(&Recommendation) -> bool,
) -> HashMap<i64, Vec<(i64, simulate::Simulated)>> {
    let mut waiting = Vec::new();
    let mut batches = Vec::new();
    let mut done: HashMap<i64, Vec<(i64, simulate::Simulated)>> = HashMap::new();
    for (rec, id) in recs.iter().zip(ids).filter(|(r, _)| advised(r)) {
        let Some(index_sql) = rec.index_sql.as_deref().filter(|_| rec.simulable) else {
            continue;
        };
        // Replayed where the statement ran against the index's table (the same text may run
        // in several schemas).
        let touching = replay::Which::Touching {
            schema: &rec.schema,
            table: &rec.table,
        };
        for query_id in &rec.query_ids {
            match replay::load_in(*query_id, touching) {
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

/// The search's figures of an index (NULL for advice the search did not make).
fn store_figures(id: i64, figures: Option<&Figures>) {
    Spi::run_with_args(
        "UPDATE optidb.recommendation SET saving_ms_per_hour = $2, write_ms_per_hour = $3, \
             rank = $4, index_bytes = $5 WHERE id = $1",
        &[
            id.into(),
            figures.map(|f| f.saving_ms_per_hour).into(),
            figures.map(|f| f.write_ms_per_hour).into(),
            figures.and_then(|f| f.rank).into(),
            figures.map(|f| f.index_bytes).into(),
        ],
    )
    .unwrap_or_else(|e| error!("{e}"));
}

/// What the whole advised set does to the workload, kept with this scan's log row (written
/// after the advice: the scan's own row is inserted when it ends, so it goes in a pending
/// setting read there).
fn store_summary(summary: serde_json::Value) {
    ADVICE_SUMMARY.with(|s| *s.borrow_mut() = Some(summary));
}

thread_local! {
    static ADVICE_SUMMARY: std::cell::RefCell<Option<serde_json::Value>> =
        const { std::cell::RefCell::new(None) };
}

/// The summary of the search this scan ran, once (None: no search ran).
pub fn take_summary() -> Option<serde_json::Value> {
    ADVICE_SUMMARY.with(|s| s.borrow_mut().take())
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
        // A statement's time includes the time its failed executions ran until they failed
        // (optidb's hooks): a statement that always times out has no pg_stat_statements time
        // at all, and an index that lets it complete saves all of that.
        "SELECT q.id AS query_id, q.norm_sql, t.calls, t.total_ms, t.rows, p.facts \
         FROM (SELECT query_id, sum(calls)::int8 AS calls, sum(total_ms) AS total_ms, \
                      sum(rows)::int8 AS rows \
               FROM (SELECT query_id, calls, total_ms, rows FROM optidb.metric \
                     UNION ALL \
                     SELECT query_id, errors, failed_ms, 0 FROM optidb.latency \
                     WHERE failed_ms > 0) u \
               GROUP BY query_id) t \
         JOIN optidb.query q ON q.id = t.query_id \
         LEFT JOIN LATERAL (SELECT facts FROM optidb.plan \
                            WHERE query_id = q.id AND plan_json IS NOT NULL AND basis \
                            ORDER BY captured_at DESC, id DESC LIMIT 1) p ON true \
         ORDER BY p.facts IS NOT NULL DESC, t.total_ms DESC LIMIT $1",
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
        // The partition tree and the update counters are read live: they only place and
        // price index advice made now.
        "SELECT t.schemaname::text, t.relname::text, t.rows_est, t.n_live_tup, \
                t.n_mod_since_analyze, t.last_analyze::text, \
                rn.nspname::text AS root_schema, rc.relname::text AS root_name, \
                s.n_tup_upd, s.n_tup_hot_upd \
         FROM optidb.schema_table t \
         LEFT JOIN pg_catalog.pg_stat_user_tables s ON s.relid = t.relid \
         LEFT JOIN pg_catalog.pg_class c ON c.oid = t.relid \
         LEFT JOIN pg_catalog.pg_class rc \
                ON c.relispartition AND rc.oid = pg_catalog.pg_partition_root(t.relid) \
         LEFT JOIN pg_catalog.pg_namespace rn ON rn.oid = rc.relnamespace",
        &[],
        |row| Table {
            schema: row.get("schemaname"),
            name: row.get("relname"),
            rows_est: row.opt("rows_est").unwrap_or(0.0),
            live_rows: row.opt::<i64>("n_live_tup").unwrap_or(0) as f64,
            mod_since_analyze: row.opt("n_mod_since_analyze").unwrap_or(0),
            last_analyze: row.opt("last_analyze"),
            root: row
                .opt::<String>("root_schema")
                .zip(row.opt::<String>("root_name")),
            updated_rows: row.opt("n_tup_upd").unwrap_or(0),
            hot_updated_rows: row.opt("n_tup_hot_upd").unwrap_or(0),
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
                c.n_distinct::float8, c.null_frac::float8, c.type \
         FROM optidb.schema_column c JOIN optidb.schema_table t USING (relid)",
        &[],
        |row| Column {
            schema: row.get("schemaname"),
            table: row.get("relname"),
            name: row.get("attname"),
            n_distinct: row.opt("n_distinct"),
            null_frac: row.opt("null_frac"),
            type_name: row.opt("type"),
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
