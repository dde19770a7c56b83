//! `optidb.simulate(query_id, rec_id, mode)`: what a recommended index would do to a statement.
//! mode `hypopg` (anyone allowed to call it): generic-plan cost before, hypothetical index,
//! cost after, all in this backend. mode `real` (superuser or optidb_admin): EXPLAIN ANALYZE
//! before and after building the real index, inside a subtransaction that is always rolled
//! back, refused above `optidb.real_simulation_max_bytes`.

use crate::errors::raise;
use crate::explain::{self, CapturedPlan, Mode};
use crate::guarded::{self, Failure};
use crate::gucs;
use crate::hypopg::{self, Hypopg};
use optidb_core::plan_diff;
use optidb_core::statement;
use pgrx::prelude::*;
use pgrx::JsonB;

pub struct Outcome {
    pub before: CapturedPlan,
    pub after: CapturedPlan,
    pub improvement_pct: f64,
    pub node_changes: Vec<String>,
}

fn failure(message: String) -> Failure {
    Failure::Error {
        sqlstate: "0A000".into(),
        message,
    }
}

/// The statement text as it can be PREPAREd, with its parameter count.
fn preparable(raw_sql: &str) -> Result<(String, usize), Failure> {
    let text = statement::repair_typed_params(raw_sql).map_err(|e| failure(e.0))?;
    let info = statement::analyze(&text).map_err(|e| failure(e.0))?;
    if !info.explainable {
        return Err(failure(format!(
            "a {} statement cannot be EXPLAINed",
            info.kind.as_str()
        )));
    }
    Ok((text, info.param_count))
}

fn compare(before: CapturedPlan, after: CapturedPlan, mode: Mode) -> Outcome {
    let (b, a) = match mode {
        Mode::Costs => (before.facts.total_cost, after.facts.total_cost),
        Mode::Analyze => (
            before.execution_ms().unwrap_or(0.0),
            after.execution_ms().unwrap_or(0.0),
        ),
    };
    Outcome {
        improvement_pct: plan_diff::improvement_pct(b, a),
        node_changes: plan_diff::node_changes(&before.facts, &after.facts),
        before,
        after,
    }
}

/// Baseline EXPLAIN, hypothetical index, re-EXPLAIN, diff.
pub fn with_hypothetical_index(
    hypopg: &Hypopg,
    raw_sql: &str,
    index_sql: &str,
) -> Result<Outcome, Failure> {
    let (text, params) = preparable(raw_sql)?;
    let before = explain::generic_plan(&text, params)?;
    let after = hypopg.with_index(index_sql, || explain::generic_plan(&text, params))??;
    Ok(compare(before, after, Mode::Costs))
}

/// EXPLAIN ANALYZE, CREATE INDEX, EXPLAIN ANALYZE, all rolled back.
fn with_real_index(raw_sql: &str, index_sql: &str) -> Result<Outcome, Failure> {
    let (text, params) = preparable(raw_sql)?;
    guarded::run_rolled_back(None, || {
        let before = explain::plan(&text, params, Mode::Analyze)?;
        Spi::run(index_sql).unwrap_or_else(|e| error!("{e}"));
        let after = explain::plan(&text, params, Mode::Analyze)?;
        Ok(compare(before, after, Mode::Analyze))
    })?
}

/// Store one simulation (or its failure); returns its id.
/// The figures of one simulation, or its error: what is stored and what simulate() returns.
struct Figures {
    before_cost: Option<f64>,
    after_cost: Option<f64>,
    improvement_pct: Option<f64>,
    before_ms: Option<f64>,
    after_ms: Option<f64>,
    node_changes: Vec<String>,
    error: Option<String>,
}

impl Figures {
    fn of(outcome: &Result<Outcome, Failure>) -> Self {
        match outcome {
            Ok(o) => Figures {
                before_cost: Some(o.before.facts.total_cost),
                after_cost: Some(o.after.facts.total_cost),
                improvement_pct: Some(o.improvement_pct),
                before_ms: o.before.execution_ms(),
                after_ms: o.after.execution_ms(),
                node_changes: o.node_changes.clone(),
                error: None,
            },
            Err(f) => Figures {
                before_cost: None,
                after_cost: None,
                improvement_pct: None,
                before_ms: None,
                after_ms: None,
                node_changes: Vec::new(),
                error: Some(f.to_string()),
            },
        }
    }
}

pub fn store(rec_id: i64, query_id: i64, mode: &str, outcome: &Result<Outcome, Failure>) -> i64 {
    let f = Figures::of(outcome);
    let plans = outcome
        .as_ref()
        .ok()
        .map(|o| (JsonB(o.before.json.clone()), JsonB(o.after.json.clone())));
    let (before_plan, after_plan) = plans.unzip();
    Spi::get_one_with_args::<i64>(
        "INSERT INTO optidb.simulation (rec_id, query_id, mode, before_cost, after_cost, \
             improvement_pct, before_ms, after_ms, node_changes, before_plan, after_plan, error) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
        &[
            rec_id.into(),
            query_id.into(),
            mode.into(),
            f.before_cost.into(),
            f.after_cost.into(),
            f.improvement_pct.into(),
            f.before_ms.into(),
            f.after_ms.into(),
            f.node_changes.into(),
            before_plan.into(),
            after_plan.into(),
            f.error.into(),
        ],
    )
    .ok()
    .flatten()
    .unwrap_or_else(|| error!("storing a simulation failed"))
}

fn require_admin() {
    let allowed = Spi::get_one::<bool>(
        "SELECT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) \
             OR (EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'optidb_admin') \
                 AND pg_catalog.pg_has_role('optidb_admin', 'MEMBER'))",
    )
    .ok()
    .flatten()
    .unwrap_or(false);
    if !allowed {
        raise(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            "mode 'real' builds a real index and runs the statement: only superusers and members of optidb_admin may use it",
            Some("Use mode 'hypopg' (the default), or ask an administrator to GRANT optidb_admin to you."),
        );
    }
}

fn check_size_limit(schema: &str, table: &str) {
    let bytes = Spi::get_one_with_args::<i64>(
        "SELECT pg_catalog.pg_total_relation_size(c.oid) FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relname = $2",
        &[schema.into(), table.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(0);
    let limit = gucs::real_simulation_max_bytes();
    if bytes > limit {
        raise(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!(
                "{schema}.{table} is {bytes} bytes, above optidb.real_simulation_max_bytes ({limit}): building a real index on it here would take too long"
            ),
            Some("Use mode 'hypopg', or raise optidb.real_simulation_max_bytes for this session."),
        );
    }
}

#[allow(clippy::type_complexity)] // pgrx needs the TableIterator spelled out
#[pg_extern(volatile, parallel_unsafe)]
fn simulate(
    query_id: i64,
    rec_id: i64,
    mode: default!(&str, "'hypopg'"),
) -> TableIterator<
    'static,
    (
        name!(simulation_id, i64),
        name!(rec_id, i64),
        name!(query_id, i64),
        name!(mode, String),
        name!(before_cost, Option<f64>),
        name!(after_cost, Option<f64>),
        name!(improvement_pct, Option<f64>),
        name!(before_ms, Option<f64>),
        name!(after_ms, Option<f64>),
        name!(node_changes, Vec<String>),
        name!(error, Option<String>),
    ),
> {
    if mode != "hypopg" && mode != "real" {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("unknown simulation mode \"{mode}\""),
            Some("Use mode => 'hypopg' (hypothetical index, costs) or 'real' (admins only)."),
        );
    }
    // Authorization before any lookup: a refused caller learns nothing about the ids.
    if mode == "real" {
        require_admin();
    }
    let rec = Spi::get_three_with_args::<String, bool, String>(
        "SELECT index_sql, simulable, \
                format('%s (%s): %s', kind, array_to_string(columns, ', '), \
                       coalesce(not_simulable_reason, '')) \
         FROM optidb.recommendation WHERE id = $1",
        &[rec_id.into()],
    );
    let (index_sql, simulable, description) = match rec {
        Ok((index_sql, Some(simulable), description)) => (index_sql, simulable, description),
        _ => raise(
            PgSqlErrorCode::ERRCODE_NO_DATA_FOUND,
            format!("optidb has no recommendation with id {rec_id}"),
            Some("List recommendations with SELECT * FROM optidb.recommend();"),
        ),
    };
    let raw_sql = Spi::get_one_with_args::<String>(
        "SELECT raw_sql FROM optidb.query WHERE id = $1",
        &[query_id.into()],
    )
    .ok()
    .flatten()
    .unwrap_or_else(|| {
        raise(
            PgSqlErrorCode::ERRCODE_NO_DATA_FOUND,
            format!("optidb has no statement with id {query_id}"),
            Some(
                "Pick a query_id from optidb.bottlenecks() or from the recommendation's query_ids.",
            ),
        )
    });
    let Some(index_sql) = index_sql.filter(|_| simulable) else {
        raise(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!(
                "recommendation {rec_id} cannot be simulated: {}",
                description.unwrap_or_default()
            ),
            None,
        );
    };

    let outcome = if mode == "real" {
        let (schema, table) = Spi::get_two_with_args::<String, String>(
            "SELECT schemaname::text, tablename::text FROM optidb.recommendation WHERE id = $1",
            &[rec_id.into()],
        )
        .unwrap_or_else(|e| error!("{e}"));
        check_size_limit(&schema.unwrap_or_default(), &table.unwrap_or_default());
        with_real_index(&raw_sql, &index_sql)
    } else {
        with_hypothetical_index(&hypopg::require(), &raw_sql, &index_sql)
    };
    let id = store(rec_id, query_id, mode, &outcome);
    let f = Figures::of(&outcome);
    let row = (
        id,
        rec_id,
        query_id,
        mode.to_string(),
        f.before_cost,
        f.after_cost,
        f.improvement_pct,
        f.before_ms,
        f.after_ms,
        f.node_changes,
        f.error,
    );
    TableIterator::once(row)
}
