//! Replays that decide whether advice other than a B-tree index is made (issue 23, part 6):
//! a rewrite is made only when its rewritten statement, replayed beside the original, is
//! cheaper; statistics advice only when a fresh plan is estimated far off what the statement's
//! executions return (and a larger target could change it: the table is larger than ANALYZE's
//! sample and the column has values beyond its most-common-values list); trigram (GIN) index
//! advice only when a rolled-back build shows the plan using it
//! (advice_checks/trigram_trials.rs; beyond its size cap it stays unverified with a low
//! confidence). The verdicts are optidb_core::advisor::verdicts; this module runs the replays
//! and reads the catalog facts they need.
//!
//! Every plan is made by the existing replay path (src/postgres/replay.rs, replay_worker.rs
//! Job::Plan, explain.rs, vetting.rs): in a worker of its own, as the statement's owner, with
//! its search_path, only over code that owner trusts. The rewritten text is one statement that
//! optidb wrote from the original's parse tree and checked like any text it PREPAREs.
//! What is not made is said at DEBUG1 ("optidb advice check: ..."), never stored.

use crate::postgres::capture;
use crate::postgres::guarded::Failure;
use crate::postgres::replay::{self, Stored};
use crate::postgres::replay_worker::{self, Answer, Job, Statement};
use crate::postgres::rows;
use optidb_core::advisor::not_exists::{self, NotExists};
use optidb_core::advisor::verdicts::{
    self, EstimateReplay, RewriteReplay, StatsFix, TargetFacts, Verdict,
};
use optidb_core::advisor::{Kind, Recommendation};
use optidb_core::plan_facts::PlanFacts;
use serde_json::{json, Value};

mod trigram_trials;

/// Keep only the advice its replays confirm, with what they measured in its evidence.
pub fn verify(recs: &mut Vec<Recommendation>) {
    recs.retain(|r| {
        let replayable = !verdicts::unreplayable_rewrite(r);
        if !replayable {
            not_made(
                r,
                "optidb cannot write the rewritten statement, so no replay can show \
                         its effect",
            );
        }
        replayable
    });
    for r in recs.iter_mut().filter(|r| r.kind == Kind::TrigramIndex) {
        r.confidence = r.confidence.min(verdicts::UNVERIFIED_CONFIDENCE);
    }
    trigram_trials::verify(recs);
    let (items, asks) = replays_to_run(recs);
    let answers = replay_worker::run_batches(items);
    let mut outcomes: Vec<Vec<Outcome>> = vec![Vec::new(); recs.len()];
    for (ask, answers) in asks.into_iter().zip(answers) {
        outcomes[ask.rec].push(ask.read(answers));
    }
    let mut verdicts_of = outcomes.into_iter();
    recs.retain_mut(|r| {
        let outcomes = verdicts_of.next().unwrap_or_default();
        match StatsFix::of(r) {
            Some(fix) => judge_stats(r, fix, outcomes),
            None if r.kind == Kind::Rewrite => judge_rewrite(r, outcomes),
            None => true,
        }
    });
}

/// One replay asked for: which recommendation and statement, and how to read the answers.
struct Ask {
    rec: usize,
    query_id: i64,
    plan: &'static str,
    /// For a rewrite: the rewritten statement (its pg_stat_statements form, for the DDL).
    rewritten: Option<NotExists>,
}

#[derive(Clone)]
enum Outcome {
    Estimate(EstimateReplay),
    Rewrite {
        query_id: i64,
        verdict: Verdict,
        sql: String,
    },
    Failed {
        query_id: i64,
        why: String,
    },
}

impl Ask {
    fn read(self, answers: Vec<Result<Answer, Failure>>) -> Outcome {
        let failed = |why: String| Outcome::Failed {
            query_id: self.query_id,
            why,
        };
        let mut plans = Vec::new();
        for answer in answers {
            match answer.and_then(capture::plan_of) {
                Ok(p) => plans.push(p),
                Err(f) => return failed(f.to_string()),
            }
        }
        match (self.rewritten, plans.as_slice()) {
            (None, [p]) => Outcome::Estimate(EstimateReplay {
                query_id: self.query_id,
                root_node: p.facts.node_types.first().cloned().unwrap_or_default(),
                estimated_rows: p.facts.est_rows,
                actual_rows_per_call: rows_per_call(self.query_id),
                plan: self.plan.into(),
            }),
            (Some(rewritten), [original, after]) => {
                let replay = RewriteReplay {
                    original: &original.facts,
                    rewritten: &after.facts,
                    hashed_subplan: verdicts::has_hashed_subplan(&original.json),
                    key_not_null: keys_not_null(&original.facts, &rewritten.keys),
                    plan: self.plan,
                };
                Outcome::Rewrite {
                    query_id: self.query_id,
                    verdict: verdicts::not_in_rewrite(&replay),
                    sql: rewritten.sql,
                }
            }
            _ => failed("the replay answered wrongly".into()),
        }
    }
}

/// The replays the rewrite and statistics advice needs, one item per statement it cites.
fn replays_to_run(recs: &[Recommendation]) -> (Vec<(replay::Context, Vec<Job>)>, Vec<Ask>) {
    let (mut items, mut asks) = (Vec::new(), Vec::new());
    for (i, rec) in recs.iter().enumerate() {
        let rewrite = rec.kind == Kind::Rewrite;
        if !rewrite && StatsFix::of(rec).is_none() {
            continue;
        }
        for query_id in &rec.query_ids {
            let Some(Ok(stmt)) = replay::load(*query_id) else {
                continue; // gone, or not replayable: it confirms nothing
            };
            let (original, plan) = basis(&stmt);
            let (jobs, rewritten) = if rewrite {
                let Some((after, rewritten)) = rewritten(&stmt) else {
                    continue;
                };
                (vec![Job::Plan(original), Job::Plan(after)], Some(rewritten))
            } else {
                (vec![Job::Plan(original)], None)
            };
            items.push((stmt.context.clone(), jobs));
            asks.push(Ask {
                rec: i,
                query_id: *query_id,
                plan,
                rewritten,
            });
        }
    }
    (items, asks)
}

/// The plan advice rests on: the custom plan of the typical sampled execution when that is the
/// basis, else the generic plan.
fn basis(stmt: &Stored) -> (Statement, &'static str) {
    match stmt.sampled.as_ref().filter(|_| stmt.sampled_is_basis) {
        Some(s) => (s.statement(&stmt.info, &stmt.relations), "sampled"),
        None => (
            capture::generic_statement(&stmt.info, &stmt.relations),
            "generic",
        ),
    }
}

/// The NOT EXISTS form of the statement, for the same plan as `basis`; None when there is none
/// or it is not one statement that names the same relations with the same placeholders.
fn rewritten(stmt: &Stored) -> Option<(Statement, NotExists)> {
    let generic = not_exists::rewrite(&stmt.info.text)?;
    let (_, mut info) = replay::preparable(&generic.sql).ok()?;
    if info.placeholders != stmt.info.placeholders || info.tables != stmt.info.tables {
        return None;
    }
    info.param_types = stmt.info.param_types.clone();
    let statement = match stmt.sampled.as_ref().filter(|_| stmt.sampled_is_basis) {
        Some(s) => {
            let (_, sampled) = replay::preparable(&not_exists::rewrite(&s.sql)?.sql).ok()?;
            if sampled.placeholders != s.values.len() {
                return None;
            }
            let s = replay::Sampled {
                sql: sampled.text,
                ..s.clone()
            };
            s.statement(&info, &stmt.relations)
        }
        None => capture::generic_statement(&info, &stmt.relations),
    };
    Some((statement, generic))
}

fn judge_rewrite(rec: &mut Recommendation, outcomes: Vec<Outcome>) -> bool {
    let (mut kept, mut why) = (Vec::new(), Vec::new());
    for o in outcomes {
        match o {
            Outcome::Rewrite {
                query_id,
                verdict: Verdict::Keep(evidence),
                sql,
            } => kept.push((query_id, evidence, sql)),
            Outcome::Rewrite {
                query_id,
                verdict: Verdict::Drop(reason),
                ..
            }
            | Outcome::Failed {
                query_id,
                why: reason,
            } => why.push(format!("query {query_id}: {reason}")),
            Outcome::Estimate(_) => {}
        }
    }
    if kept.is_empty() {
        not_made(rec, &none_confirmed(&why));
        return false;
    }
    rec.query_ids = kept.iter().map(|(q, _, _)| *q).collect();
    rec.ddl = kept
        .iter()
        .map(|(q, e, sql)| {
            format!(
                "-- statement {q} as NOT EXISTS (replayed: cost {:.0} -> {:.0}); check no \
                 compared column can be NULL, or the results differ\n{sql};",
                e["original_cost"].as_f64().unwrap_or_default(),
                e["rewritten_cost"].as_f64().unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    let replays: Vec<Value> = kept
        .into_iter()
        .map(|(q, mut e, _)| {
            e["query_id"] = json!(q);
            e
        })
        .collect();
    rec.rationale = format!(
        "{} Replayed as the statement's owner, the NOT EXISTS form costs {:.0} against {:.0}.",
        rec.rationale,
        replays[0]["rewritten_cost"].as_f64().unwrap_or_default(),
        replays[0]["original_cost"].as_f64().unwrap_or_default()
    );
    rec.evidence = json!({"rule": rec.evidence.take(), "replays": replays, "not_confirmed": why});
    true
}

fn judge_stats(rec: &mut Recommendation, fix: StatsFix, outcomes: Vec<Outcome>) -> bool {
    let mut replays = Vec::new();
    let mut failed = Vec::new();
    for o in outcomes {
        match o {
            Outcome::Estimate(e) => replays.push(e),
            Outcome::Failed { query_id, why } => failed.push(format!("query {query_id}: {why}")),
            Outcome::Rewrite { .. } => {}
        }
    }
    let target = (fix == StatsFix::Target)
        .then(|| target_facts(rec))
        .flatten();
    match verdicts::stats(fix, &replays, target) {
        Verdict::Keep(mut evidence) => {
            evidence["not_replayed"] = json!(failed);
            rec.evidence["replay"] = evidence;
            true
        }
        Verdict::Drop(reason) => {
            failed.insert(0, reason);
            not_made(rec, &failed.join("; "));
            false
        }
    }
}

fn none_confirmed(why: &[String]) -> String {
    if why.is_empty() {
        "no statement it cites could be replayed".into()
    } else {
        why.join("; ")
    }
}

fn not_made(rec: &Recommendation, why: &str) {
    pgrx::debug1!("optidb advice check: {} not advised: {why}", rec.key());
}

/// Rows per call the statement's executions returned, over optidb's history.
fn rows_per_call(query_id: i64) -> Option<f64> {
    rows::value::<f64>(
        "rows per call",
        "SELECT sum(rows)::float8 / NULLIF(sum(calls), 0) FROM optidb.metric WHERE query_id = $1",
        &[query_id.into()],
    )
}

/// Are both columns NOT IN compares declared NOT NULL in every relation of the plan that has a
/// column of that name? (Which relation an unqualified name denotes does not matter then.)
fn keys_not_null(plan: &PlanFacts, keys: &[String]) -> bool {
    let (schemas, relations): (Vec<String>, Vec<String>) = plan
        .relation_scans
        .iter()
        .filter_map(|r| Some((r.schema.clone()?, r.relation.clone())))
        .unzip();
    !keys.is_empty()
        && keys.iter().all(|key| {
            rows::value::<bool>(
                "NOT IN key nullability",
                "SELECT coalesce(bool_and(a.attnotnull), false) \
                 FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), \
                                 pg_catalog.unnest($2::pg_catalog.text[])) AS r(nsp, rel) \
                 JOIN pg_catalog.pg_namespace n ON n.nspname = r.nsp \
                 JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = r.rel \
                 JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attname = $3 \
                      AND a.attnum > 0 AND NOT a.attisdropped",
                &[
                    schemas.clone().into(),
                    relations.clone().into(),
                    key.as_str().into(),
                ],
            )
            .unwrap_or(false)
        })
}

/// The table's rows (the larger of the planner's and the live count), the column's
/// statistics target (its own, else default_statistics_target), and whether ANALYZE kept every
/// value it sampled as a most common value (a list and no histogram; pg_stats, so a column the
/// scanning role may not read counts as not described).
fn target_facts(rec: &Recommendation) -> Option<TargetFacts> {
    rows::first(
        "statistics target",
        "SELECT greatest(c.reltuples, pg_catalog.pg_stat_get_live_tuples(c.oid))::float8 AS rows, \
                coalesce(nullif(a.attstattarget, -1)::int4, \
                         pg_catalog.current_setting('default_statistics_target')::int4)::float8 \
                  AS target, \
                coalesce((SELECT s.most_common_vals IS NOT NULL AND s.histogram_bounds IS NULL \
                          FROM pg_catalog.pg_stats s \
                          WHERE s.schemaname = n.nspname AND s.tablename = c.relname \
                            AND s.attname = a.attname AND NOT s.inherited), false) \
                  AS every_value_common \
         FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attname = $3 \
         WHERE n.nspname = $1 AND c.relname = $2",
        &[
            rec.schema.as_str().into(),
            rec.table.as_str().into(),
            rec.columns.first()?.as_str().into(),
        ],
        |row| TargetFacts {
            table_rows: row.get("rows"),
            target: row.get("target"),
            every_value_common: row.get("every_value_common"),
        },
    )
}
