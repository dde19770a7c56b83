//! `optidb.simulate(query_id, rec_id, mode)`: what a recommended index would do to a statement.
//! Every EXPLAIN runs as the statement's owner, restricted, and only over code its owner trusts
//! (src/postgres/replay.rs, src/postgres/vetting.rs).
//! - mode `hypopg`: cost before, hypothetical index, cost after, all in this backend.
//! - mode `real` (superuser or optidb_admin): EXPLAIN ANALYZE before and after building the
//!   real index, everything rolled back. Safe on a live server by construction:
//!   * only read-only statements (a SELECT that writes and locks nothing) are run, inside a
//!     read-only transaction state, so nothing they call can write either; others get 0A000;
//!   * the index is built as the table's owner (the only role allowed to), restricted, with
//!     search_path pg_catalog: its text names only pg_catalog built-ins
//!     (optidb_core::index_expression), so no one's code runs with the table owner's rights;
//!   * the build waits at most `optidb.lock_timeout` for its lock and the writer-blocking lock
//!     it takes is held at most `optidb.real_simulation_timeout` (build) plus
//!     `optidb.statement_timeout` (the measured run) before the rollback releases it;
//!   * at most `optidb.max_concurrent_simulations` run at once and
//!     `optidb.real_simulations_per_minute` start per minute (53400 otherwise);
//!   * tables above `optidb.real_simulation_max_bytes` are refused (54000).

use crate::api::visibility;
use crate::postgres::capture;
use crate::postgres::errors::raise;
use crate::postgres::explain::CapturedPlan;
use crate::postgres::guarded::Failure;
use crate::postgres::gucs;
use crate::postgres::hypopg::{self, Hypopg};
use crate::postgres::locks::{self, Lock};
use crate::postgres::own_work;
use crate::postgres::replay::{self, Stored};
use crate::postgres::replay_worker::{self, Answer, Job, Statement};
use crate::postgres::rows;
use crate::postgres::settings::{self, Setting};
use optidb_core::plan_diff;
use optidb_core::vocabulary::{SimulationBasis, SimulationMode};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::JsonB;

pub struct Outcome {
    pub before: CapturedPlan,
    pub after: CapturedPlan,
    pub improvement_pct: f64,
    pub node_changes: Vec<String>,
}

/// How a simulation compares plans: estimated costs, or measured times (real mode).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Measure {
    Cost,
    Time,
}

fn compare(answer: Answer, measure: Measure) -> Result<Outcome, Failure> {
    let Answer::Compared { before, after } = answer else {
        return Err(Failure::new("XX000", "expected a comparison"));
    };
    let (before, after) = (capture::captured(before)?, capture::captured(after)?);
    let (b, a) = match measure {
        Measure::Cost => (before.facts.total_cost, after.facts.total_cost),
        Measure::Time => (
            before.execution_ms().unwrap_or(0.0),
            after.execution_ms().unwrap_or(0.0),
        ),
    };
    Ok(Outcome {
        improvement_pct: plan_diff::improvement_pct(b, a),
        node_changes: plan_diff::node_changes(&before.facts, &after.facts),
        before,
        after,
    })
}

/// The sampled values a plan was made for (None: the generic plan; None inside: SQL NULL).
type SampledValues = Option<Vec<Option<String>>>;

/// One simulated plan: the generic one, or the one for the sampled values.
pub struct Run {
    pub plan_kind: SimulationBasis,
    pub values: SampledValues,
    pub outcome: Result<Outcome, Failure>,
}

/// A simulation of one recommendation on one statement: with the generic plan, and with the
/// sampled values when the statement has them; `basis` is the run advice rests on.
pub struct Simulated {
    pub runs: Vec<Run>,
    pub basis: usize,
}

impl Simulated {
    pub fn failed(failure: Failure) -> Simulated {
        Simulated {
            runs: vec![Run {
                plan_kind: SimulationBasis::Generic,
                values: None,
                outcome: Err(failure),
            }],
            basis: 0,
        }
    }

    pub fn basis(&self) -> &Run {
        &self.runs[self.basis]
    }

    fn run(&self, plan_kind: SimulationBasis) -> Option<&Run> {
        self.runs.iter().find(|r| r.plan_kind == plan_kind)
    }

    /// Store every run; returns the id of the basis row.
    pub fn store(&self, rec_id: i64, query_id: i64, mode: SimulationMode) -> i64 {
        let ids: Vec<i64> = self
            .runs
            .iter()
            .map(|r| store(rec_id, query_id, mode, r))
            .collect();
        ids[self.basis]
    }
}

/// The plans a simulation compares, as (plan kind, values, statement): the generic plan, and
/// the plan for the statement's typical sampled execution when one was captured.
fn plans(stmt: &Stored) -> Vec<(SimulationBasis, SampledValues, Statement)> {
    let relations = &stmt.relations;
    let mut plans = vec![(
        SimulationBasis::Generic,
        None,
        capture::generic_statement(&stmt.info, relations),
    )];
    if let Some(s) = &stmt.sampled {
        let statement = s.statement(&stmt.info, relations);
        plans.push((SimulationBasis::Sampled, Some(s.values.clone()), statement));
    }
    plans
}

/// The plan advice rests on: the sampled values' when the statement's typical sampled plan is
/// the basis (src/postgres/replay.rs), else the generic one.
pub fn basis_statement(stmt: &Stored) -> Statement {
    let mut plans = plans(stmt);
    let at = if stmt.sampled_is_basis && plans.len() > 1 {
        1
    } else {
        0
    };
    plans.swap_remove(at).2
}

/// A simulation waiting for its worker: its jobs, and how to read their answers.
pub struct Pending {
    kinds: Vec<(SimulationBasis, SampledValues)>,
    sampled_is_basis: bool,
    measure: Measure,
}

impl Pending {
    pub fn finish(self, answers: Vec<Result<Answer, Failure>>) -> Simulated {
        let runs: Vec<Run> = self
            .kinds
            .into_iter()
            .zip(answers)
            .map(|((plan_kind, values), answer)| Run {
                plan_kind,
                values,
                outcome: answer.and_then(|a| compare(a, self.measure)),
            })
            .collect();
        let basis = if self.sampled_is_basis && runs.len() > 1 {
            1
        } else {
            0
        };
        Simulated { runs, basis }
    }
}

/// The jobs of a hypothetical-index simulation (generic plan, and sampled values when known).
pub fn hypothetical_jobs(hypopg: &Hypopg, stmt: &Stored, index_sql: &str) -> (Vec<Job>, Pending) {
    let mut jobs = Vec::new();
    let mut kinds = Vec::new();
    for (kind, values, statement) in plans(stmt) {
        jobs.push(Job::Hypothetical {
            statement,
            index_sql: index_sql.to_string(),
            hypopg_schema: hypopg.schema_name(),
        });
        kinds.push((kind, values));
    }
    let pending = Pending {
        kinds,
        sampled_is_basis: stmt.sampled_is_basis,
        measure: Measure::Cost,
    };
    (jobs, pending)
}

/// A hypothetical-index simulation of one statement, in its own replay worker.
pub fn with_hypothetical_index(hypopg: &Hypopg, stmt: &Stored, index_sql: &str) -> Simulated {
    let (jobs, pending) = hypothetical_jobs(hypopg, stmt, index_sql);
    pending.finish(replay_worker::run(&stmt.context, jobs))
}

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

fn store(rec_id: i64, query_id: i64, mode: SimulationMode, run: &Run) -> i64 {
    let f = Figures::of(&run.outcome);
    let plans = run
        .outcome
        .as_ref()
        .ok()
        .map(|o| (JsonB(o.before.json.clone()), JsonB(o.after.json.clone())));
    let (before_plan, after_plan) = plans.unzip();
    rows::value::<i64>(
        "store simulation",
        "INSERT INTO optidb.simulation (rec_id, query_id, mode, before_cost, after_cost, \
             improvement_pct, before_ms, after_ms, node_changes, before_plan, after_plan, error, \
             plan_kind, param_values) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id",
        &[
            rec_id.into(),
            query_id.into(),
            mode.as_str().into(),
            f.before_cost.into(),
            f.after_cost.into(),
            f.improvement_pct.into(),
            f.before_ms.into(),
            f.after_ms.into(),
            f.node_changes.into(),
            before_plan.into(),
            after_plan.into(),
            f.error.into(),
            run.plan_kind.as_str().into(),
            run.values.clone().into(),
        ],
    )
    .unwrap_or_else(|| error!("storing a simulation returned no id"))
}

/// The recommendation a simulation tries.
struct Rec {
    index_sql: String,
    schema: String,
    table: String,
}

fn load_recommendation(rec_id: i64) -> Rec {
    let row = rows::first_kept(
        "recommendation to simulate",
        "SELECT index_sql, simulable, \
                format('%s (%s): %s', kind, array_to_string(columns, ', '), \
                       coalesce(not_simulable_reason, '')) AS description, \
                schemaname::text, tablename::text \
         FROM optidb.recommendation WHERE id = $1",
        &[rec_id.into()],
        |row| {
            (
                row.opt::<String>("index_sql"),
                row.get::<bool>("simulable"),
                row.get::<String>("description"),
                row.get::<String>("schemaname"),
                row.get::<String>("tablename"),
            )
        },
    );
    let Some((index_sql, simulable, description, schema, table)) = row else {
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
    }
}

/// The owner of the recommendation's table (who builds the index); raises when the table is
/// gone or too large.
fn real_target(rec: &Rec) -> pg_sys::Oid {
    // The size needs a lock on the table: waited for at most optidb.lock_timeout.
    let timeout = format!("{}ms", gucs::lock_timeout_ms());
    let row = settings::with(&[Setting::user("lock_timeout", &timeout)], || {
        Spi::get_two_with_args::<i64, pg_sys::Oid>(
            "SELECT pg_catalog.pg_total_relation_size(c.oid), c.relowner \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2",
            &[rec.schema.as_str().into(), rec.table.as_str().into()],
        )
    });
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
    let recent = rows::value::<i64>(
        "real simulations in the last minute",
        "SELECT count(*) FROM optidb.simulation \
         WHERE mode = $1 AND ran_at > pg_catalog.clock_timestamp() - interval '1 minute'",
        &[SimulationMode::Real.as_str().into()],
    )
    .unwrap_or(0);
    if recent >= per_minute as i64 {
        raise(
            PgSqlErrorCode::ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
            format!("{recent} real simulations started in the last minute (optidb.real_simulations_per_minute = {per_minute})"),
            Some("Wait a minute, use mode 'hypopg', or raise optidb.real_simulations_per_minute."),
        );
    }
    let slots = gucs::max_concurrent_simulations();
    if !(0..slots).any(|slot| locks::try_acquire(Lock::RealSimulation(slot))) {
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
fn simulate_real(stmt: &Stored, rec: &Rec) -> Simulated {
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
    let builder = real_target(rec);
    take_real_simulation_slot();
    // One real run: with the sampled values when there are any (a typical execution), else
    // with NULL parameters.
    let (kind, values, statement) = plans(stmt).pop().expect("the generic plan at least");
    let pending = Pending {
        kinds: vec![(kind, values)],
        sampled_is_basis: false,
        measure: Measure::Time,
    };
    let job = Job::Real {
        statement,
        index_sql: rec.index_sql.clone(),
        builder: builder.to_u32(),
    };
    pending.finish(replay_worker::run(&stmt.context, vec![job]))
}

/// SECURITY DEFINER: it stores simulations, and the tables it reads what to replay from are
/// writable by optidb's functions only. EXECUTE (granted to optidb_admin) admits the caller,
/// for both modes.
#[allow(clippy::type_complexity)] // pgrx needs the TableIterator spelled out
#[pg_extern(volatile, parallel_unsafe, security_definer)]
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
        name!(plan_basis, String),
        name!(generic_improvement_pct, Option<f64>),
        name!(sampled_improvement_pct, Option<f64>),
        name!(sampled_values, Option<Vec<Option<String>>>),
    ),
> {
    let Some(mode) = SimulationMode::parse(mode) else {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("unknown simulation mode \"{mode}\""),
            Some("Use mode => 'hypopg' (hypothetical index, costs) or 'real' (admins only)."),
        );
    };
    // Authorization before any lookup: a refused caller learns nothing about the ids.
    if mode == SimulationMode::Real && !visibility::caller_is_admin() {
        raise(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            "mode 'real' builds a real index and runs the statement: only superusers and members of optidb_admin may use it",
            Some("Use mode 'hypopg' (the default), or ask an administrator to GRANT optidb_admin to you."),
        );
    }
    let row = own_work::run(|| {
        let rec = load_recommendation(rec_id);
        let touching = replay::Which::Touching {
            schema: &rec.schema,
            table: &rec.table,
        };
        let stmt = replay::load_in(query_id, touching).unwrap_or_else(|| {
            raise(
                PgSqlErrorCode::ERRCODE_NO_DATA_FOUND,
                format!("optidb has no statement with id {query_id}"),
                Some("Pick a query_id from optidb.bottlenecks() or from the recommendation's query_ids."),
            )
        });
        let simulated = match (&stmt, mode) {
            (Ok(stmt), SimulationMode::Real) => simulate_real(stmt, &rec),
            (Ok(stmt), _) => with_hypothetical_index(&hypopg::require(), stmt, &rec.index_sql),
            (Err(failure), _) => Simulated::failed(failure.clone()),
        };
        let id = simulated.store(rec_id, query_id, mode);
        let basis = simulated.basis();
        let f = Figures::of(&basis.outcome);
        let pct = |kind| {
            simulated
                .run(kind)
                .and_then(|r| r.outcome.as_ref().ok())
                .map(|o| o.improvement_pct)
        };
        (
            id,
            rec_id,
            query_id,
            mode.as_str().to_string(),
            f.before_cost,
            f.after_cost,
            f.improvement_pct,
            f.before_ms,
            f.after_ms,
            f.node_changes,
            f.error,
            basis.plan_kind.as_str().to_string(),
            pct(SimulationBasis::Generic),
            pct(SimulationBasis::Sampled),
            simulated
                .run(SimulationBasis::Sampled)
                .and_then(|r| r.values.clone()),
        )
    });
    TableIterator::once(row)
}
