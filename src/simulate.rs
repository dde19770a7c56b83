//! `optidb.simulate(query_id, rec_id, mode)`: what a recommended index would do to a statement.
//! Every EXPLAIN runs as the statement's owner, restricted (src/replay.rs).
//! - mode `hypopg`: cost before, hypothetical index, cost after, all in this backend.
//! - mode `real` (superuser or optidb_admin): EXPLAIN ANALYZE before and after building the
//!   real index, everything rolled back. Safe on a live server by construction:
//!   * only read-only statements (a SELECT that writes and locks nothing) are run, inside a
//!     read-only transaction state, so nothing they call can write either; others get 0A000;
//!   * the index is built as the table's owner (the only role allowed to), restricted; an
//!     expression index only when that owner is the statement's owner, so no one's expression
//!     runs with another role's rights;
//!   * the build waits at most `optidb.lock_timeout` for its lock and the writer-blocking lock
//!     it takes is held at most `optidb.real_simulation_timeout` (build) plus
//!     `optidb.statement_timeout` (the measured run) before the rollback releases it;
//!   * at most `optidb.max_concurrent_simulations` run at once and
//!     `optidb.real_simulations_per_minute` start per minute (53400 otherwise);
//!   * tables above `optidb.real_simulation_max_bytes` are refused (54000).

use crate::errors::raise;
use crate::explain::{self, CapturedPlan, Mode, Replay, Values};
use crate::guarded::{self, Failure};
use crate::hypopg::{self, Hypopg};
use crate::locks::{self, Lock};
use crate::replay::{self, Context, Stored};
use crate::settings::{self, Setting};
use crate::{gucs, own_work, visibility};
use optidb_core::plan_diff;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::JsonB;

pub struct Outcome {
    pub before: CapturedPlan,
    pub after: CapturedPlan,
    pub improvement_pct: f64,
    pub node_changes: Vec<String>,
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

fn generic(stmt: &Stored) -> Replay<'_> {
    Replay {
        context: &stmt.context,
        sql: &stmt.sql,
        values: Values::Generic {
            count: stmt.info.param_count,
        },
    }
}

/// Baseline EXPLAIN, hypothetical index, re-EXPLAIN, diff.
pub fn with_hypothetical_index(
    hypopg: &Hypopg,
    stmt: &Stored,
    index_sql: &str,
) -> Result<Outcome, Failure> {
    let replay = generic(stmt);
    let before = explain::plan(replay, Mode::Costs)?;
    let after = hypopg.with_index(&stmt.context, index_sql, || {
        explain::plan(replay, Mode::Costs)
    })??;
    Ok(compare(before, after, Mode::Costs))
}

/// Run `work` in a read-only transaction state: whatever the statement calls cannot write.
fn read_only<R>(work: impl FnOnce() -> R) -> R {
    settings::with(&[Setting::user("transaction_read_only", "on")], work)
}

/// EXPLAIN ANALYZE, CREATE INDEX (as the table's owner), EXPLAIN ANALYZE; all rolled back.
fn with_real_index(stmt: &Stored, builder: &Context, index_sql: &str) -> Result<Outcome, Failure> {
    let replay = generic(stmt);
    let lock_timeout = format!("{}ms", gucs::lock_timeout_ms());
    guarded::run_rolled_back(None, || {
        let before = read_only(|| explain::plan(replay, Mode::Analyze))?;
        guarded::run(Some(gucs::real_simulation_limit()), || {
            replay::as_owner(builder, || {
                settings::with(&[Setting::user("lock_timeout", &lock_timeout)], || {
                    Spi::run(index_sql).unwrap_or_else(|e| error!("{e}"))
                })
            })
        })?;
        let after = read_only(|| explain::plan(replay, Mode::Analyze))?;
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

/// The recommendation a simulation tries.
struct Rec {
    index_sql: String,
    schema: String,
    table: String,
    has_expression: bool,
}

fn load_recommendation(rec_id: i64) -> Rec {
    let row = Spi::connect(|client| {
        client
            .select(
                "SELECT index_sql, simulable, \
                        format('%s (%s): %s', kind, array_to_string(columns, ', '), \
                               coalesce(not_simulable_reason, '')), \
                        schemaname::text, tablename::text, kind = 'expression_index' \
                 FROM optidb.recommendation WHERE id = $1",
                None,
                &[rec_id.into()],
            )
            .unwrap_or_else(|e| error!("{e}"))
            .first()
            .get_heap_tuple()
            .ok()
            .flatten()
            .map(|row| {
                (
                    row.get::<String>(1).ok().flatten(),
                    row.get::<bool>(2).ok().flatten().unwrap_or(false),
                    row.get::<String>(3).ok().flatten().unwrap_or_default(),
                    row.get::<String>(4).ok().flatten().unwrap_or_default(),
                    row.get::<String>(5).ok().flatten().unwrap_or_default(),
                    row.get::<bool>(6).ok().flatten().unwrap_or(false),
                )
            })
    });
    let Some((index_sql, simulable, description, schema, table, has_expression)) = row else {
        raise(
            PgSqlErrorCode::ERRCODE_NO_DATA_FOUND,
            format!("optidb has no recommendation with id {rec_id}"),
            Some("List recommendations with SELECT * FROM optidb.recommend();"),
        )
    };
    let Some(index_sql) = index_sql.filter(|_| simulable) else {
        raise(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("recommendation {rec_id} cannot be simulated: {description}"),
            None,
        );
    };
    Rec {
        index_sql,
        schema,
        table,
        has_expression,
    }
}

fn require_admin() {
    if !visibility::is_admin() {
        raise(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            "mode 'real' builds a real index and runs the statement: only superusers and members of optidb_admin may use it",
            Some("Use mode 'hypopg' (the default), or ask an administrator to GRANT optidb_admin to you."),
        );
    }
}

/// Size, owner and oid of the recommendation's table; raises when it is gone or too large.
fn real_target(rec: &Rec) -> pg_sys::Oid {
    let row = Spi::get_two_with_args::<i64, pg_sys::Oid>(
        "SELECT pg_catalog.pg_total_relation_size(c.oid), c.relowner \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relname = $2",
        &[rec.schema.as_str().into(), rec.table.as_str().into()],
    );
    let Ok((Some(bytes), Some(owner))) = row else {
        raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            format!("{}.{} no longer exists", rec.schema, rec.table),
            Some("Run optidb.scan() to refresh the recommendations."),
        )
    };
    let limit = gucs::real_simulation_max_bytes();
    if bytes > limit {
        raise(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!(
                "{}.{} is {bytes} bytes, above optidb.real_simulation_max_bytes ({limit}): building a real index on it here would take too long",
                rec.schema, rec.table
            ),
            Some("Use mode 'hypopg', or raise optidb.real_simulation_max_bytes for this session."),
        );
    }
    owner
}

/// One of `optidb.max_concurrent_simulations` slots until the transaction ends, and the
/// per-minute budget; 53400 when either is used up.
fn take_real_simulation_slot() {
    let per_minute = gucs::real_simulations_per_minute();
    let recent = Spi::get_one::<i64>(
        "SELECT count(*) FROM optidb.simulation \
         WHERE mode = 'real' AND ran_at > pg_catalog.clock_timestamp() - interval '1 minute'",
    )
    .ok()
    .flatten()
    .unwrap_or(0);
    if recent >= per_minute as i64 {
        raise(
            PgSqlErrorCode::ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
            format!("{recent} real simulations started in the last minute (optidb.real_simulations_per_minute = {per_minute})"),
            Some("Wait a minute, use mode 'hypopg', or raise optidb.real_simulations_per_minute."),
        );
    }
    let slots = gucs::max_concurrent_simulations();
    if !(0..slots).any(|slot| locks::try_acquire(Lock::RealSimulation, slot)) {
        raise(
            PgSqlErrorCode::ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
            format!(
                "{slots} real simulations are already running (optidb.max_concurrent_simulations)"
            ),
            Some("Retry when one has finished, or use mode 'hypopg'."),
        );
    }
}

/// Real mode: every check that refuses it comes before anything runs.
fn simulate_real(stmt: &Stored, rec: &Rec) -> Result<Outcome, Failure> {
    if !stmt.info.read_only {
        raise(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!(
                "mode 'real' only runs plain queries, and this is a {} statement (or a SELECT that writes or locks rows)",
                stmt.info.kind.as_str()
            ),
            Some("Use mode 'hypopg': it plans the statement without running it."),
        );
    }
    let owner = real_target(rec);
    if rec.has_expression && owner != stmt.context.owner.oid {
        raise(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!(
                "the index evaluates an expression, and {}.{} is not owned by {}, the role that ran the statement: building it would run that expression with the table owner's rights",
                rec.schema, rec.table, stmt.context.owner.name
            ),
            Some("Use mode 'hypopg' for expression indexes on tables of other roles."),
        );
    }
    take_real_simulation_slot();
    let builder = Context {
        owner: replay::owner(owner).unwrap_or_else(|| error!("the owner of the table vanished")),
        ..stmt.context.clone()
    };
    with_real_index(stmt, &builder, &rec.index_sql)
}

#[allow(clippy::type_complexity)] // pgrx needs the TableIterator spelled out
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
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
    let row = own_work::run(|| {
        let rec = load_recommendation(rec_id);
        let stmt = replay::load(query_id).unwrap_or_else(|| {
            raise(
                PgSqlErrorCode::ERRCODE_NO_DATA_FOUND,
                format!("optidb has no statement with id {query_id}"),
                Some("Pick a query_id from optidb.bottlenecks() or from the recommendation's query_ids."),
            )
        });
        let outcome = match (&stmt, mode) {
            (Ok(stmt), "real") => simulate_real(stmt, &rec),
            (Ok(stmt), _) => with_hypothetical_index(&hypopg::require(), stmt, &rec.index_sql),
            (Err(failure), _) => Err(failure.clone()),
        };
        let id = store(rec_id, query_id, mode, &outcome);
        let f = Figures::of(&outcome);
        (
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
        )
    });
    TableIterator::once(row)
}
