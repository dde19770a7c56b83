//! Plan capture, each statement replayed as its owner in a replay worker
//! (src/postgres/replay_worker.rs): the generic plan (parameters unknown) and custom plans for the
//! values of sampled executions (a typical one, the one whose time is closest to the
//! statement's median, and the slowest one), then the choice of the plan advice rests on
//! (optidb_core::plan_choice). All rows of one capture share `captured_at`; the chosen one has
//! `basis`. Statements of one owner and search_path share one worker.

use crate::postgres::explain::CapturedPlan;
use crate::postgres::guarded::Failure;
use crate::postgres::replay::{self, Context, Sampled};
use crate::postgres::replay_worker::{self, Answer, Job, Statement};
use optidb_core::plan_choice;
use optidb_core::plan_facts;
use optidb_core::statement::StatementInfo;
use optidb_core::vocabulary::PlanKind;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::JsonB;

/// A statement to capture.
pub struct Target {
    pub query_id: i64,
    pub userid: pg_sys::Oid,
    pub raw_sql: String,
}

/// One plan (or failure) of a capture, ready to store.
struct Row {
    kind: PlanKind,
    sample: Option<Sampled>,
    outcome: Result<CapturedPlan, Failure>,
    basis: bool,
}

/// What one statement needs captured: its context and the plans to ask for.
struct Pending {
    query_id: i64,
    context: Context,
    plans: Vec<(PlanKind, Option<Sampled>, Statement)>,
}

/// Capture the plans of these statements (skipping those that cannot be EXPLAINed). Returns
/// (statements whose generic plan was captured, statements that failed).
pub fn capture_all(targets: &[Target], captured_at: &TimestampWithTimeZone) -> (usize, usize) {
    let (mut captured, mut failed) = (0, 0);
    let mut pending = Vec::new();
    for t in targets {
        // The text handed to PREPARE is the text checked here: one explainable statement.
        let Ok((_, info)) = replay::preparable(&t.raw_sql) else {
            continue;
        };
        let (path, relations) = replay::recorded(t.query_id)
            .map(|r| (r.path, r.relations))
            .unzip();
        match replay::resolve(t.userid, path, &info.tables) {
            Ok(context) => pending.push(Pending {
                query_id: t.query_id,
                context,
                plans: plans_for(t.query_id, &info, &relations.unwrap_or_default()),
            }),
            Err(failure) => {
                failed += 1;
                let row = Row {
                    kind: PlanKind::Generic,
                    sample: None,
                    outcome: Err(failure),
                    basis: true,
                };
                store(t.query_id, captured_at, None, &[row], None);
            }
        }
    }
    let batches = pending
        .iter()
        .map(|p| {
            let jobs = p
                .plans
                .iter()
                .map(|(_, _, s)| Job::Plan(s.clone()))
                .collect();
            (p.context.clone(), jobs)
        })
        .collect();
    let answers = replay_worker::run_batches(batches);
    for (p, answers) in pending.into_iter().zip(answers) {
        let mut rows: Vec<Row> = p
            .plans
            .into_iter()
            .zip(answers)
            .map(|((kind, sample, _), answer)| Row {
                kind,
                sample,
                outcome: answer.and_then(plan_of),
                basis: false,
            })
            .collect();
        if rows.first().is_some_and(|r| r.outcome.is_ok()) {
            captured += 1;
        } else {
            failed += 1;
        }
        let choice = choose_basis(p.query_id, &mut rows);
        store(
            p.query_id,
            captured_at,
            Some(&p.context),
            &rows,
            Some(&choice),
        );
    }
    (captured, failed)
}

/// The generic plan, then the typical and the slowest sampled executions' plans.
/// `relations`: the ones the statement used when it ran (empty: unknown).
fn plans_for(
    query_id: i64,
    info: &StatementInfo,
    relations: &[u32],
) -> Vec<(PlanKind, Option<Sampled>, Statement)> {
    let mut plans = vec![(PlanKind::Generic, None, generic_statement(info, relations))];
    let typical = replay::typical_sample(query_id);
    let slowest = replay::slowest_sample(query_id).filter(|s| Some(s) != typical.as_ref());
    for (kind, sample) in [(PlanKind::Typical, typical), (PlanKind::Slowest, slowest)] {
        if let Some(s) = sample {
            let statement = s.statement(info, relations);
            plans.push((kind, Some(s), statement));
        }
    }
    plans
}

/// A plan answer as facts.
pub fn plan_of(answer: Answer) -> Result<CapturedPlan, Failure> {
    match answer {
        Answer::Plan(json) => captured(json),
        _ => Err(Failure::new("XX000", "expected a plan")),
    }
}

/// Facts of an EXPLAIN (FORMAT JSON) output.
pub fn captured(json: serde_json::Value) -> Result<CapturedPlan, Failure> {
    let facts =
        plan_facts::from_explain_json(&json).map_err(|e| Failure::new("XX000", e.to_string()))?;
    Ok(CapturedPlan { json, facts })
}

/// The generic plan of a statement: its pg_stat_statements text, NULL for every parameter.
/// `relations`: the ones it used when it ran (empty: unknown).
pub fn generic_statement(info: &StatementInfo, relations: &[u32]) -> Statement {
    Statement {
        sql: info.text.clone(),
        param_types: info.param_types.clone(),
        values: None,
        placeholders: info.placeholders,
        tables: info.tables.clone(),
        relations: relations.to_vec(),
    }
}

impl Sampled {
    /// The custom plan of this sampled execution of the statement `info` describes.
    pub fn statement(&self, info: &StatementInfo, relations: &[u32]) -> Statement {
        Statement {
            sql: self.sql.clone(),
            param_types: self.param_types.clone(),
            values: Some(self.values.clone()),
            placeholders: self.values.len(),
            tables: info.tables.clone(),
            relations: relations.to_vec(),
        }
    }
}

/// Mark the basis row: the typical custom plan or the generic plan, whichever predicts the rows
/// executions return (pg_stat_statements' rows per call) better.
fn choose_basis(query_id: i64, rows: &mut [Row]) -> plan_choice::Choice {
    let rows_of = |r: &Row| r.outcome.as_ref().ok().map(|p| p.facts.est_rows);
    let generic = rows.first().and_then(rows_of);
    let typical = rows
        .iter()
        .find(|r| r.kind == PlanKind::Typical)
        .and_then(rows_of);
    let observed = crate::postgres::rows::value::<f64>(
        "rows per call",
        "SELECT sum(rows)::float8 / NULLIF(sum(calls), 0) FROM optidb.metric WHERE query_id = $1",
        &[query_id.into()],
    );
    let choice = match generic {
        Some(g) => plan_choice::choose(g, typical, observed),
        None if typical.is_some() => plan_choice::Choice {
            custom: true,
            reason: "the generic plan failed; the custom plan for a typical sampled execution is \
                     used"
                .into(),
        },
        None => plan_choice::choose(0.0, None, observed),
    };
    for r in rows.iter_mut() {
        r.basis = if choice.custom {
            r.kind == PlanKind::Typical
        } else {
            r.kind == PlanKind::Generic
        };
    }
    choice
}

/// Store the rows of one capture. A row identical to the latest stored row of its kind (same
/// plan or error, context and values) only moves that row's captured_at forward: history
/// records changes, not repetitions.
fn store(
    query_id: i64,
    captured_at: &TimestampWithTimeZone,
    context: Option<&Context>,
    rows: &[Row],
    choice: Option<&plan_choice::Choice>,
) {
    for row in rows {
        let (plan_json, error, facts) = match &row.outcome {
            Ok(p) => (Some(JsonB(p.json.clone())), None, Some(&p.facts)),
            Err(f) => (None, Some(f.to_string()), None),
        };
        let mut facts_json = facts.map(|f| serde_json::to_value(f).expect("facts serialize"));
        if let (Some(serde_json::Value::Object(map)), Some(choice), true) =
            (facts_json.as_mut(), choice, row.basis)
        {
            // Why this plan: cited by bottlenecks() and query().
            map.insert(
                "basis".into(),
                serde_json::json!({"plan": row.kind.as_str(), "reason": choice.reason}),
            );
        }
        let sample = row.sample.as_ref();
        Spi::run_with_args(
            "WITH latest AS ( \
                 SELECT id, plan_json, explain_error, search_path, path_source, param_values \
                 FROM optidb.plan WHERE query_id = $1 AND plan_kind = $16 \
                 ORDER BY captured_at DESC, id DESC LIMIT 1), \
             same AS ( \
                 UPDATE optidb.plan p SET captured_at = $2, basis = $20, facts = $13 FROM latest \
                 WHERE p.id = latest.id AND latest.plan_json IS NOT DISTINCT FROM $3 \
                   AND latest.explain_error IS NOT DISTINCT FROM $4 \
                   AND latest.search_path IS NOT DISTINCT FROM $14 \
                   AND latest.path_source IS NOT DISTINCT FROM $15 \
                   AND latest.param_values IS NOT DISTINCT FROM $19 \
                 RETURNING p.id) \
             INSERT INTO optidb.plan (query_id, captured_at, plan_json, explain_error, \
                 total_cost, had_seq_scan, est_rows, act_rows, worst_estimate_ratio, node_types, \
                 join_types, filters, facts, search_path, path_source, plan_kind, sample_id, \
                 sql_text, param_types, param_values, basis) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
                    $21, $18, $19, $20 \
             WHERE NOT EXISTS (SELECT 1 FROM same)",
            &[
                query_id.into(),
                (*captured_at).into(),
                plan_json.into(),
                error.into(),
                facts.map(|f| f.total_cost).into(),
                facts.map(|f| f.had_seq_scan()).into(),
                facts.map(|f| f.est_rows).into(),
                facts.and_then(|f| f.act_rows).into(),
                facts.and_then(|f| f.worst_estimate_ratio).into(),
                facts.map(|f| f.node_types.clone()).into(),
                facts.map(|f| f.join_types.clone()).into(),
                facts.map(|f| f.filters.clone()).into(),
                facts_json.map(JsonB).into(),
                context.map(|c| c.search_path.clone()).into(),
                context.map(|c| c.path_source.as_str()).into(),
                row.kind.as_str().into(),
                sample.and_then(|s| s.sample_id).into(),
                sample.map(|s| s.param_types.clone()).into(),
                sample.map(|s| s.values.clone()).into(),
                row.basis.into(),
                sample.map(|s| s.sql.clone()).into(),
            ],
        )
        .unwrap_or_else(|e| error!("storing a plan failed: {e}"));
    }
}
