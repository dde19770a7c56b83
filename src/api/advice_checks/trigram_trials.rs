//! Trigram (pg_trgm GIN) advice confirmed by a real build (issue 23, part 6). hypopg cannot
//! make a GIN index, so on a table below `optidb.trigram_trial_max_bytes` (with its indexes)
//! the scan builds the index for real, in the replay worker's subtransaction that is always
//! rolled back, and plans each statement the advice cites with and without it: the advice is
//! filed only when a plan reads the index and costs less, with the costs, the build's time
//! and the index's size in its evidence. Above the cap, without pg_trgm, or when no trial could
//! run, it stays unverified at a low confidence and its evidence's `trial` says why.
//!
//! The rules of every replay hold (docs/security-model.md): the statement is planned as its
//! owner with its search_path, only over code that owner trusts; the index is built as the
//! table's owner (CREATE INDEX needs ownership) in a security-restricted operation with
//! pg_catalog alone on the search_path, and only when every function of pg_trgm's operator
//! class belongs to a superuser, so no code of another role runs with either's rights. The
//! build takes a SHARE lock: it waits at most `optidb.lock_timeout`, runs at most
//! `optidb.real_simulation_timeout`, and the caller terminates the worker past that (as for
//! simulate(mode => 'real')); writers of the table wait for the build meanwhile.

use super::{basis, not_made};
use crate::postgres::gucs;
use crate::postgres::replay;
use crate::postgres::replay_worker::{self, Answer, Job, Tried};
use crate::postgres::rows;
use optidb_core::advisor::verdicts::{self, TrialReplay, Verdict};
use optidb_core::advisor::{Kind, Recommendation};
use optidb_core::predicates::quote_ident;
use serde_json::{json, Value};

/// Statements of one advice tried at most (each trial is a build).
const MAX_TRIALS_PER_ADVICE: usize = 3;

/// What the catalogs say about a trigram advice's table before any build.
struct TableFacts {
    bytes: i64,
    owner: u32,
    /// Schema of pg_trgm's gin_trgm_ops, when pg_trgm is installed in this database.
    opclass_schema: Option<String>,
    /// Every function of that operator class (and the class) belongs to a superuser.
    opclass_trusted: bool,
}

/// Try each trigram advice on its table; drop the ones a trial shows useless, confirm the ones
/// it shows used and cheaper, and say in the others' evidence why no trial ran.
pub fn verify(recs: &mut Vec<Recommendation>) {
    let cap = gucs::trigram_trial_max_bytes();
    let mut items = Vec::new();
    let mut asks: Vec<(usize, i64, &'static str)> = Vec::new();
    for (i, rec) in recs.iter_mut().enumerate() {
        if rec.kind != Kind::TrigramIndex {
            continue;
        }
        match trial_jobs(rec, cap) {
            Ok(jobs) => {
                for (query_id, plan, context, job) in jobs {
                    items.push((context, vec![job]));
                    asks.push((i, query_id, plan));
                }
            }
            Err(why) => unverified(rec, &why),
        }
    }
    if items.is_empty() {
        return;
    }
    let answers = replay_worker::run_batches(items);
    let mut outcomes: Vec<Vec<Outcome>> = vec![Vec::new(); recs.len()];
    for ((rec, query_id, plan), answer) in asks.into_iter().zip(answers) {
        let tried = match answer.into_iter().next() {
            Some(Ok(Answer::Tried(t))) => Ok(t),
            Some(Err(f)) => Err(f.to_string()),
            _ => Err("the replay answered wrongly".into()),
        };
        outcomes[rec].push((query_id, plan, tried));
    }
    let mut outcomes = outcomes.into_iter();
    recs.retain_mut(|rec| {
        let tried = outcomes.next().unwrap_or_default();
        tried.is_empty() || judge(rec, tried)
    });
}

/// A statement's trial: its id, the plan it was made from (sampled/generic), what it measured.
type Outcome = (i64, &'static str, Result<Tried, String>);

/// One trial job per statement the advice cites (up to MAX_TRIALS_PER_ADVICE), with the plan
/// it replays; Err: why none may run.
fn trial_jobs(
    rec: &Recommendation,
    cap: i64,
) -> Result<Vec<(i64, &'static str, replay::Context, Job)>, String> {
    let facts = table_facts(rec).ok_or("the table no longer exists")?;
    let Some(opclass_schema) = facts.opclass_schema else {
        return Err("pg_trgm is not installed in this database: no trial build".into());
    };
    if !facts.opclass_trusted {
        return Err(
            "a function of pg_trgm's gin_trgm_ops belongs to a role that is not a \
                    superuser: optidb builds no index that runs it"
                .into(),
        );
    }
    if facts.bytes > cap {
        return Err(format!(
            "the table is {:.1} MB with its indexes, above optidb.trigram_trial_max_bytes \
             ({} MB): not built for a trial, since the build blocks the table's writers",
            facts.bytes as f64 / 1_048_576.0,
            cap / 1_048_576
        ));
    }
    let element = rec.evidence["index_element"]
        .as_str()
        .ok_or("no index element recorded")?;
    let index_name = format!("optidb_trigram_trial_{}", std::process::id());
    let index_sql = format!(
        "CREATE INDEX {} ON {}.{} USING gin ({element} {}.gin_trgm_ops)",
        quote_ident(&index_name),
        quote_ident(&rec.schema),
        quote_ident(&rec.table),
        quote_ident(&opclass_schema)
    );
    let mut jobs = Vec::new();
    for query_id in rec.query_ids.iter().take(MAX_TRIALS_PER_ADVICE) {
        let Some(Ok(stmt)) = replay::load(*query_id) else {
            continue; // gone, or not replayable: it confirms nothing
        };
        let (statement, plan) = basis(&stmt);
        jobs.push((
            *query_id,
            plan,
            stmt.context.clone(),
            Job::Trial {
                statement,
                index_sql: index_sql.clone(),
                schema: rec.schema.clone(),
                index_name: index_name.clone(),
                builder: facts.owner,
            },
        ));
    }
    if jobs.is_empty() {
        return Err("no statement it cites could be replayed".into());
    }
    Ok(jobs)
}

/// Keep the advice when a trial confirmed it (its measurement in the evidence, a higher
/// confidence); drop it when every trial that ran says the plan does not gain; keep it
/// unverified when no trial ran to the end.
fn judge(rec: &mut Recommendation, tried: Vec<Outcome>) -> bool {
    let (mut kept, mut refuted, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    for (query_id, plan, t) in tried {
        let t = match t {
            Ok(t) => t,
            Err(why) => {
                failed.push(format!("query {query_id}: {why}"));
                continue;
            }
        };
        let replay = TrialReplay {
            before_cost: t.before_cost,
            after_cost: t.after_cost,
            used: t.used,
            build_ms: t.build_ms,
            index_bytes: t.index_bytes,
            plan: plan.into(),
        };
        match verdicts::trigram_trial(&replay) {
            Verdict::Keep(mut e) => {
                e["query_id"] = json!(query_id);
                kept.push(e);
            }
            Verdict::Drop(why) => refuted.push(format!("query {query_id}: {why}")),
        }
    }
    if kept.is_empty() && failed.is_empty() {
        not_made(rec, &refuted.join("; "));
        return false;
    }
    if kept.is_empty() {
        unverified(
            rec,
            &format!("the trial build failed: {}", failed.join("; ")),
        );
        return true;
    }
    let first = &kept[0];
    rec.confidence = verdicts::TRIAL_CONFIDENCE;
    rec.query_ids = kept.iter().filter_map(|e| e["query_id"].as_i64()).collect();
    rec.rationale = format!(
        "{} Verified: built for real in a rolled-back transaction ({:.0} ms, {} MB), the \
         index is used by the statement's plan, cost {:.0} -> {:.0}.",
        rec.rationale
            .split(" Unverified:")
            .next()
            .unwrap_or_default(),
        first["build_ms"].as_f64().unwrap_or_default(),
        first["index_mb"],
        first["before_cost"].as_f64().unwrap_or_default(),
        first["after_cost"].as_f64().unwrap_or_default(),
    );
    rec.evidence["verified"] = json!(true);
    rec.evidence["trial"] = json!({"replays": kept, "not_confirmed": refuted, "failed": failed});
    true
}

fn unverified(rec: &mut Recommendation, why: &str) {
    rec.evidence["verified"] = json!(false);
    rec.evidence["trial"] = Value::String(why.into());
}

fn table_facts(rec: &Recommendation) -> Option<TableFacts> {
    rows::first(
        "trigram trial facts",
        "SELECT pg_catalog.pg_total_relation_size(c.oid) AS bytes, c.relowner AS owner, \
                o.nspname AS opclass_schema, coalesce(o.trusted, false) AS trusted \
         FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         LEFT JOIN LATERAL ( \
             SELECT on_.nspname::pg_catalog.text AS nspname, \
                    pg_catalog.bool_and(pr.rolsuper AND cr.rolsuper) AS trusted \
             FROM pg_catalog.pg_extension e \
             JOIN pg_catalog.pg_opclass oc ON oc.opcnamespace = e.extnamespace \
                  AND oc.opcname = 'gin_trgm_ops' \
             JOIN pg_catalog.pg_am am ON am.oid = oc.opcmethod AND am.amname = 'gin' \
             JOIN pg_catalog.pg_namespace on_ ON on_.oid = oc.opcnamespace \
             JOIN pg_catalog.pg_roles cr ON cr.oid = oc.opcowner \
             JOIN pg_catalog.pg_amproc ap ON ap.amprocfamily = oc.opcfamily \
             JOIN pg_catalog.pg_proc p ON p.oid = ap.amproc \
             JOIN pg_catalog.pg_roles pr ON pr.oid = p.proowner \
             WHERE e.extname = 'pg_trgm' \
             GROUP BY on_.nspname) o ON true \
         WHERE n.nspname = $1 AND c.relname = $2",
        &[rec.schema.as_str().into(), rec.table.as_str().into()],
        |row| TableFacts {
            bytes: row.get("bytes"),
            owner: row.get::<pgrx::pg_sys::Oid>("owner").to_u32(),
            opclass_schema: row.opt("opclass_schema"),
            opclass_trusted: row.get("trusted"),
        },
    )
}
