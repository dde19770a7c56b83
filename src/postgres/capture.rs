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
use optidb_core::plan_targets;
use optidb_core::statement::{self, StatementInfo};
use optidb_core::vocabulary::PlanKind;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::spi;
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
    /// Why the generic plan is not asked for (its normalized text does not parse).
    generic_failure: Option<Failure>,
}

/// What a statement is planned from: its normalized text's analysis, or, when that text
/// cannot be prepared (pg_stat_statements turned a keyword into a parameter:
/// `extract($1 FROM d)`), a sampled execution's (its text as it ran), with the reason the
/// generic plan cannot be made. None: nothing of it can be planned.
fn planned_text(t: &Target) -> Option<(StatementInfo, Option<Failure>)> {
    match replay::preparable(&t.raw_sql) {
        Ok((_, info)) => Some((info, None)),
        // Text that parses but cannot be EXPLAINed (a utility statement) has no plan at all.
        Err(_) if !unparsed(&t.raw_sql) => None,
        Err(failure) => {
            let sample = replay::typical_sample(t.query_id, &[])
                .or_else(|| replay::slowest_sample(t.query_id, &[]))?;
            let (_, info) = replay::preparable(&sample.sql).ok()?;
            Some((info, Some(failure)))
        }
    }
}

/// Whether the normalized text does not even parse (as repaired for PREPARE).
fn unparsed(raw_sql: &str) -> bool {
    statement::repair_typed_params(raw_sql)
        .and_then(|text| statement::analyze(&text))
        .is_err()
}

/// Whether statement `query_id` (normalized text `raw_sql`) can be planned: its text
/// prepares, or a sampled execution of it does.
pub fn plannable(query_id: i64, raw_sql: &str) -> bool {
    let target = Target {
        query_id,
        userid: pg_sys::InvalidOid,
        raw_sql: raw_sql.to_string(),
    };
    planned_text(&target).is_some()
}

/// Which of these statements (query_id, plannable) to plan, at most `budget` targets (a tenant
/// family is one, planned on a sample of its tenants), most important first: indexes into
/// `statements` (optidb_core::plan_targets). Their loads come from the
/// stored history (optidb.metric for completed executions, optidb.latency for failures), so
/// a statement counts with everything optidb kept of it, not only this scan's interval.
pub fn worth_planning(statements: &[(i64, bool)], budget: usize) -> Vec<usize> {
    if budget == 0 || statements.is_empty() {
        return Vec::new();
    }
    let ids: Vec<i64> = statements.iter().map(|(id, _)| *id).collect();
    let mut loads: std::collections::HashMap<i64, (f64, i64, i64)> = crate::postgres::rows::select(
        "statement loads",
        "SELECT i.id, coalesce(m.ms, 0) AS ms, coalesce(m.calls, 0) AS calls, \
                coalesce(l.errors, 0) AS errors \
         FROM pg_catalog.unnest($1::int8[]) AS i(id) \
         LEFT JOIN (SELECT query_id, sum(total_ms)::float8 AS ms, sum(calls)::int8 AS calls \
                    FROM optidb.metric WHERE query_id = ANY ($1) GROUP BY query_id) m \
                ON m.query_id = i.id \
         LEFT JOIN (SELECT query_id, sum(errors)::int8 AS errors \
                    FROM optidb.latency WHERE query_id = ANY ($1) GROUP BY query_id) l \
                ON l.query_id = i.id",
        &[ids.clone().into()],
        |row| {
            (
                row.get::<i64>("id"),
                (row.get("ms"), row.get("calls"), row.get("errors")),
            )
        },
    )
    .into_iter()
    .collect();
    let loads: Vec<plan_targets::Load> = statements
        .iter()
        .map(|(id, plannable)| {
            let (time_ms, calls, failures) = loads.remove(id).unwrap_or((0.0, 0, 0));
            plan_targets::Load {
                time_ms,
                calls: calls + failures,
                failures,
                plannable: *plannable,
            }
        })
        .collect();
    let mut tenants = tenants_of(&ids);
    let tenants: Vec<Option<(String, Option<String>)>> =
        ids.iter().map(|id| tenants.remove(id)).collect();
    let members: Vec<plan_targets::Member> = tenants
        .iter()
        .map(|t| t.as_ref().map(|(k, s)| (k.as_str(), s.as_deref())))
        .collect();
    plan_targets::choose_with_families(&loads, &members, budget)
}

/// The tenant family of each of these statements that has one: (key, tenant). A family is the
/// same text in the same database (so each of its statements is another role's) whose latest
/// samples resolved in two or more search_paths; a tenant is named by its search_path (None
/// when no sample says where it ran).
fn tenants_of(ids: &[i64]) -> std::collections::HashMap<i64, (String, Option<String>)> {
    crate::postgres::rows::select(
        "tenant families",
        "WITH s AS ( \
             SELECT q.id, q.fingerprint || ':' || q.dbid::text AS key, \
                    (SELECT x.search_path FROM optidb.sample x \
                     WHERE x.query_id = q.id AND x.search_path IS NOT NULL \
                     ORDER BY x.started_at DESC LIMIT 1) AS path \
             FROM optidb.query q WHERE q.id = ANY ($1)) \
         SELECT id, key, path FROM s \
         WHERE key IN (SELECT key FROM s GROUP BY key HAVING count(DISTINCT path) > 1)",
        &[ids.to_vec().into()],
        |row| {
            (
                row.get::<i64>("id"),
                (row.get::<String>("key"), row.opt::<String>("path")),
            )
        },
    )
    .into_iter()
    .collect()
}

/// Capture the plans of these statements (skipping those that cannot be EXPLAINed). Returns
/// (statements whose generic plan was captured, statements that failed).
pub fn capture_all(targets: &[Target], captured_at: &TimestampWithTimeZone) -> (usize, usize) {
    let (mut captured, mut failed) = (0, 0);
    let mut pending = Vec::new();
    for t in targets {
        let Some((info, generic_failure)) = planned_text(t) else {
            continue;
        };
        let (path, relations) = replay::recorded(t.query_id, replay::Which::Latest)
            .map(|r| (r.path, r.relations))
            .unzip();
        match replay::resolve(t.userid, path, &info.tables) {
            Ok(context) => pending.push(Pending {
                query_id: t.query_id,
                context,
                plans: plans_for(
                    t.query_id,
                    &info,
                    &relations.unwrap_or_default(),
                    generic_failure.is_none(),
                ),
                generic_failure,
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
        // A generic plan that could not even be asked for is stored as the failure it is.
        let unasked = p.generic_failure.map(|failure| Row {
            kind: PlanKind::Generic,
            sample: None,
            outcome: Err(failure),
            basis: false,
        });
        let mut rows: Vec<Row> = unasked
            .into_iter()
            .chain(
                p.plans
                    .into_iter()
                    .zip(answers)
                    .map(|((kind, sample, _), answer)| Row {
                        kind,
                        sample,
                        outcome: answer.and_then(plan_of),
                        basis: false,
                    }),
            )
            .collect();
        // Captured: some plan advice can rest on (the generic one, or a sampled one when the
        // generic plan failed).
        if rows.iter().any(|r| r.outcome.is_ok()) {
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

/// The generic plan (when `generic`), then the typical and the slowest sampled executions'
/// plans. `relations`: the ones the statement used when it ran (empty: unknown).
fn plans_for(
    query_id: i64,
    info: &StatementInfo,
    relations: &[u32],
    generic: bool,
) -> Vec<(PlanKind, Option<Sampled>, Statement)> {
    let mut plans = Vec::new();
    if generic {
        plans.push((PlanKind::Generic, None, generic_statement(info, relations)));
    }
    let typical = replay::typical_sample(query_id, relations);
    let slowest =
        replay::slowest_sample(query_id, relations).filter(|s| Some(s) != typical.as_ref());
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

/// Mark the basis row: the typical custom plan or the generic plan (optidb_core::plan_choice:
/// a generic plan that failed is never the basis while a sampled plan exists; one whose scans
/// rest on PostgreSQL's default selectivity guesses, where the sampled plan's estimates differ,
/// neither; otherwise whichever predicts the rows executions return, pg_stat_statements' rows
/// per call, better).
fn choose_basis(query_id: i64, rows: &mut [Row]) -> plan_choice::Choice {
    let plan_of_kind = |kind: PlanKind| {
        rows.iter()
            .find(|r| r.kind == kind)
            .and_then(|r| r.outcome.as_ref().ok())
    };
    let generic = plan_of_kind(PlanKind::Generic);
    // The sampled plan: the typical execution's; when the generic plan failed and there is
    // no typical one, the slowest one's (anything but the failure).
    let fallback = if generic.is_some() {
        &[PlanKind::Typical][..]
    } else {
        &[PlanKind::Typical, PlanKind::Slowest][..]
    };
    let (sampled_kind, typical) = fallback
        .iter()
        .find_map(|&k| plan_of_kind(k).map(|p| (k, Some(p))))
        .unwrap_or((PlanKind::Typical, None));
    let observed = crate::postgres::rows::value::<f64>(
        "rows per call",
        "SELECT sum(rows)::float8 / NULLIF(sum(calls), 0) FROM optidb.metric WHERE query_id = $1",
        &[query_id.into()],
    );
    let typical_rows = typical.map(|p| p.facts.est_rows);
    let choice = match generic {
        Some(g) => plan_choice::choose_with_scans(
            g.facts.est_rows,
            typical_rows,
            observed,
            &typical.map_or_else(Vec::new, |t| scan_estimates(&g.facts, &t.facts)),
        ),
        None if typical.is_some() => plan_choice::Choice {
            custom: true,
            reason: format!(
                "the generic plan failed; the custom plan for the {} sampled execution is used",
                sampled_kind.as_str()
            ),
        },
        None => plan_choice::choose(0.0, None, observed),
    };
    for r in rows.iter_mut() {
        r.basis = if choice.custom {
            r.kind == sampled_kind
        } else {
            r.kind == PlanKind::Generic
        };
    }
    choice
}

/// The sequential scans both plans make of the same relation (same schema, name and alias),
/// with the table's rows from the catalog (pg_class.reltuples; unknown tables are left out).
fn scan_estimates(
    generic: &plan_facts::PlanFacts,
    custom: &plan_facts::PlanFacts,
) -> Vec<plan_choice::ScanEstimates> {
    generic
        .seq_scans
        .iter()
        .filter_map(|g| {
            let c = custom.seq_scans.iter().find(|c| {
                (&c.schema, &c.relation, &c.alias) == (&g.schema, &g.relation, &g.alias)
            })?;
            let name = match &g.schema {
                Some(schema) => format!(
                    "{}.{}",
                    spi::quote_identifier(schema),
                    spi::quote_identifier(&g.relation)
                ),
                None => spi::quote_identifier(&g.relation),
            };
            let table_rows = crate::postgres::rows::value::<f64>(
                "table rows",
                "SELECT reltuples::float8 FROM pg_catalog.pg_class \
                 WHERE oid = pg_catalog.to_regclass($1)",
                &[name.clone().into()],
            )?;
            Some(plan_choice::ScanEstimates {
                relation: name,
                generic_rows: g.est_rows,
                custom_rows: c.est_rows,
                table_rows,
            })
        })
        .collect()
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
