//! `optidb.ask(question, query_id)`: plain-language answers that cite only stored facts.
//!
//! The question is matched to an intent (optidb_core::ask::parse: keywords, no model, no
//! network). Each fact an answer uses is read by a query over optidb's tables that is part of
//! the citation (`source`): its value is what that query returns, printed as it returns it, so
//! anyone can run the source and find the number. Sentences whose facts are missing are left
//! out (optidb_core::ask::AnswerBuilder); an unknown question gets the list of what ask() can
//! answer. ask() runs with the caller's rights: row-level security decides what it may cite.

use crate::postgres::guarded;
use crate::postgres::own_work;
use crate::postgres::rows;
use optidb_core::ask::{self, Answer, AnswerBuilder, Fact, Intent};
use optidb_core::vocabulary::AnomalyKind;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::json;

/// A fact read by `source` (one value, as text); None when it returns nothing or NULL.
fn fact(name: &str, source: String) -> Option<Fact> {
    let value = rows::value::<String>("ask fact", &source, &[])?;
    Some(Fact::new(name, value, &source))
}

/// Facts of one row of an optidb table (by id): `of_row("optidb.plan", 7)("cost", "total_cost")`.
fn of_row(table: &'static str, id: i64) -> impl Fn(&str, &str) -> Option<Fact> {
    move |name, expr| fact(name, format!("SELECT {expr} FROM {table} WHERE id = {id}"))
}

/// The row of `table` a group of sentences cites, as `pick` (labelled `label` in errors)
/// finds it: its id and its facts; None, after saying nothing is known of `missing`, when
/// there is none.
fn cited_row(
    b: &mut AnswerBuilder,
    (label, table): (&str, &'static str),
    pick: &str,
    args: &[pgrx::datum::DatumWithOid],
    missing: &str,
) -> Option<(i64, impl Fn(&str, &str) -> Option<Fact>)> {
    let Some(id) = rows::value::<i64>(label, pick, args) else {
        b.unknown(missing);
        return None;
    };
    Some((id, of_row(table, id)))
}

/// The latest plan advice rests on, of statement $1.
const LATEST_PLAN: &str = "SELECT id FROM optidb.plan \
    WHERE query_id = $1 AND plan_json IS NOT NULL AND basis \
    ORDER BY captured_at DESC, id DESC LIMIT 1";
/// The most confident open advice serving statement $1.
const TOP_ADVICE: &str = "SELECT id FROM optidb.recommendation \
    WHERE status = 'open' AND $1 = ANY (query_ids) ORDER BY confidence DESC, id LIMIT 1";
/// The latest successful simulation of advice $1 for statement $2.
const LATEST_SIMULATION: &str = "SELECT id FROM optidb.simulation \
    WHERE rec_id = $1 AND query_id = $2 AND error IS NULL ORDER BY ran_at DESC LIMIT 1";

/// Facts that exist, for one sentence.
fn facts(list: Vec<Option<Fact>>) -> Vec<Fact> {
    list.into_iter().flatten().collect()
}

fn visible(query_id: i64) -> bool {
    rows::value::<bool>(
        "ask: statement visible",
        "SELECT EXISTS (SELECT FROM optidb.query WHERE id = $1)",
        &[query_id.into()],
    )
    .unwrap_or(false)
}

fn id_fact(query_id: i64) -> Option<Fact> {
    fact(
        "query_id",
        format!("SELECT id::text FROM optidb.query WHERE id = {query_id}"),
    )
}

/// The statement the question is about, or a sentence saying why there is none.
fn subject(b: &mut AnswerBuilder, query_id: Option<i64>) -> Option<i64> {
    match query_id {
        Some(id) if visible(id) => Some(id),
        Some(_) => {
            b.unknown(
                "that statement: optidb has not stored it, or you may not see it \
                 (see optidb.bottlenecks() for the ids you can ask about)",
            );
            None
        }
        None => {
            b.unknown(
                // No digits here: a number no fact carries drops the sentence (finish()).
                "which statement you mean: name its id in the question, as in \
                 ask('why is query N slow?'), or pass it, as in ask('why is it slow?', N)",
            );
            None
        }
    }
}

fn metrics_sentence(b: &mut AnswerBuilder, id: i64) {
    let m = |name: &str, expr: &str| {
        fact(
            name,
            format!("SELECT {expr} FROM optidb.metric WHERE query_id = {id} HAVING count(*) > 0"),
        )
    };
    b.say(
        "Statement {query_id} ran {calls} times for {total_ms} ms in all, {mean_ms} ms per call \
         on average (pg_stat_statements deltas up to {last_capture}).",
        facts(vec![
            id_fact(id),
            m("calls", "sum(calls)::text"),
            m("total_ms", "round(sum(total_ms)::numeric, 2)::text"),
            m(
                "mean_ms",
                "round((sum(total_ms) / NULLIF(sum(calls), 0))::numeric, 2)::text",
            ),
            m("last_capture", "max(captured_at)::text"),
        ]),
    );
    b.say(
        "Its p95 by optidb's own histograms: {p95_ms} ms.",
        facts(vec![fact(
            "p95_ms",
            format!(
                "SELECT round(p95_ms::numeric, 2)::text \
                 FROM optidb.execution_time_stats({id})"
            ),
        )]),
    );
}

/// The latest plan advice rests on: its facts.
fn plan_sentences(b: &mut AnswerBuilder, id: i64) {
    let missing = "its plan: none was captured (run optidb.scan())";
    let plan = ("ask: latest plan", "optidb.plan");
    let Some((plan_id, p)) = cited_row(b, plan, LATEST_PLAN, &[id.into()], missing) else {
        return;
    };
    b.say(
        "Its latest {plan_kind} plan (captured {plan_captured_at}) costs {total_cost}.",
        facts(vec![
            p("plan_kind", "plan_kind"),
            p("plan_captured_at", "captured_at::text"),
            p("total_cost", "round(total_cost::numeric, 2)::text"),
        ]),
    );
    b.say(
        "It reads {seq_scan_table} with a sequential scan (had_seq_scan = {had_seq_scan}).",
        facts(vec![
            fact(
                "seq_scan_table",
                format!(
                    "SELECT facts->'seq_scans'->0->>'relation' FROM optidb.plan \
                     WHERE id = {plan_id} AND had_seq_scan"
                ),
            ),
            p("had_seq_scan", "had_seq_scan::text"),
        ]),
    );
    b.say(
        "That scan keeps the rows where {seq_scan_filter}.",
        facts(vec![p(
            "seq_scan_filter",
            "facts->'seq_scans'->0->>'filter'",
        )]),
    );
}

fn advice_sentences(b: &mut AnswerBuilder, id: i64) {
    let missing = "advice for it: scan() made no open recommendation that serves it";
    let advice = ("ask: advice", "optidb.recommendation");
    let Some((rec, r)) = cited_row(b, advice, TOP_ADVICE, &[id.into()], missing) else {
        return;
    };
    b.say(
        "Recommendation {recommendation_id} ({kind}, confidence {confidence}): {ddl}",
        facts(vec![
            r("recommendation_id", "id::text"),
            r("kind", "kind"),
            r("confidence", "round(confidence::numeric, 2)::text"),
            r("ddl", "ddl"),
        ]),
    );
    simulation_sentence(b, id, rec);
}

fn simulation_sentence(b: &mut AnswerBuilder, id: i64, rec: i64) {
    let missing = "its simulated gain: it was not simulated yet";
    let simulation = ("ask: simulation", "optidb.simulation");
    let args = [rec.into(), id.into()];
    let Some((_, s)) = cited_row(b, simulation, LATEST_SIMULATION, &args, missing) else {
        return;
    };
    b.say(
        "Simulated ({mode}, {basis} plan, {ran_at}): cost {before_cost} -> {after_cost}, \
         {improvement_pct}% better.",
        facts(vec![
            s("mode", "mode"),
            s("basis", "plan_kind"),
            s("ran_at", "ran_at::text"),
            s("before_cost", "round(before_cost::numeric, 2)::text"),
            s("after_cost", "round(after_cost::numeric, 2)::text"),
            s(
                "improvement_pct",
                "round(improvement_pct::numeric, 1)::text",
            ),
        ]),
    );
}

fn anomaly_sentences(b: &mut AnswerBuilder, id: i64) -> usize {
    let tags = rows::select(
        "ask: anomalies",
        "SELECT id, kind FROM optidb.anomaly WHERE query_id = $1 ORDER BY kind",
        &[id.into()],
        |row| (row.get::<i64>("id"), row.get::<String>("kind")),
    );
    for (tag, kind) in &tags {
        let e = of_row("optidb.anomaly", *tag);
        let num = |key: &str| format!("round((evidence->>'{key}')::numeric, 2)::text");
        match AnomalyKind::parse(kind) {
            Some(AnomalyKind::LatencySpike) => b.say(
                "Latency spike: its mean in the hour from {window} was {latest_mean_ms} ms, \
                 {ratio} times the median {median_mean_ms} ms of its earlier hours.",
                facts(vec![
                    e("window", "evidence->>'window'"),
                    e("latest_mean_ms", &num("latest_mean_ms")),
                    e("ratio", &num("ratio")),
                    e("median_mean_ms", &num("median_mean_ms")),
                ]),
            ),
            Some(AnomalyKind::FamilyOutlier) => b.say(
                "It is far slower than its family {family}: mean {mean_ms} ms against the \
                 family's median {family_median_ms} ms.",
                facts(vec![
                    e("family", "evidence->>'family'"),
                    e("mean_ms", &num("mean_ms")),
                    e("family_median_ms", &num("family_median_ms")),
                ]),
            ),
            Some(AnomalyKind::PlanChange) => b.say(
                "Its plan changed between {before_captured_at} and {after_captured_at}: \
                 {plan_before} became {plan_after}.",
                facts(vec![
                    e("before_captured_at", "evidence->>'before_captured_at'"),
                    e("after_captured_at", "evidence->>'after_captured_at'"),
                    e("plan_before", "evidence->>'before'"),
                    e("plan_after", "evidence->>'after'"),
                ]),
            ),
            Some(AnomalyKind::LockContention) => b.say(
                "Lock contention suspected: the worker saw it waiting for a lock in \
                 {samples_waiting} samples of the last hour.",
                facts(vec![e("samples_waiting", "evidence->>'samples_waiting'")]),
            ),
            None => {} // the CHECK constraint allows no other kind
        }
    }
    tags.len()
}

fn why_slow(b: &mut AnswerBuilder, query_id: Option<i64>) {
    let Some(id) = subject(b, query_id) else {
        return;
    };
    metrics_sentence(b, id);
    b.say(
        "It belongs to the family {family}.",
        facts(vec![fact(
            "family",
            format!(
                "SELECT f.label FROM optidb.family f JOIN optidb.query q \
                 ON q.family_id = f.id WHERE q.id = {id}"
            ),
        )]),
    );
    plan_sentences(b, id);
    anomaly_sentences(b, id);
    advice_sentences(b, id);
}

fn what_index(b: &mut AnswerBuilder, query_id: Option<i64>) {
    if let Some(id) = query_id {
        if subject(b, Some(id)).is_some() {
            advice_sentences(b, id);
        }
        return;
    }
    let recs = rows::select(
        "ask: index advice",
        "SELECT id FROM optidb.recommendation WHERE status = 'open' \
         AND kind IN ('missing_index', 'composite_index', 'expression_index') \
         ORDER BY confidence DESC, est_saved_ms DESC NULLS LAST, id LIMIT 3",
        &[],
        |row| row.get::<i64>("id"),
    );
    if recs.is_empty() {
        b.unknown("an index to add: scan() made no open index recommendation you may see");
    }
    for rec in recs {
        let r = of_row("optidb.recommendation", rec);
        b.say(
            "Recommendation {recommendation_id} (confidence {confidence}, statements \
             {query_ids}): {ddl}",
            facts(vec![
                r("recommendation_id", "id::text"),
                r("confidence", "round(confidence::numeric, 2)::text"),
                r("query_ids", "array_to_string(query_ids, ', ')"),
                r("ddl", "ddl"),
            ]),
        );
        b.say(
            "Its best simulated gain so far: {improvement_pct}%.",
            facts(vec![r(
                "improvement_pct",
                "round(improvement_pct::numeric, 1)::text",
            )]),
        );
    }
}

fn show_impact(b: &mut AnswerBuilder, query_id: Option<i64>) {
    let Some(id) = subject(b, query_id) else {
        return;
    };
    let Some(rec) = rows::value::<i64>(
        "ask: advice to simulate",
        "SELECT id FROM optidb.recommendation WHERE status = 'open' AND simulable \
         AND $1 = ANY (query_ids) ORDER BY confidence DESC, id LIMIT 1",
        &[id.into()],
    ) else {
        b.unknown("an impact: no open recommendation that can be simulated serves it");
        return;
    };
    let simulated = rows::value::<bool>(
        "ask: simulated",
        "SELECT EXISTS (SELECT FROM optidb.simulation WHERE rec_id = $1 AND query_id = $2)",
        &[rec.into(), id.into()],
    )
    .unwrap_or(false);
    let may_simulate = rows::value::<bool>(
        "ask: may simulate",
        "SELECT pg_catalog.has_function_privilege('optidb.simulate(bigint, bigint, text)', \
                                                  'EXECUTE')",
        &[],
    )
    .unwrap_or(false);
    if !simulated && may_simulate {
        simulate(b, id, rec);
    }
    advice_sentences(b, id);
}

/// Run the hypothetical simulation ask() reuses afterwards; a failure is said, not raised.
fn simulate(b: &mut AnswerBuilder, id: i64, rec: i64) {
    let hypopg = rows::value::<bool>(
        "ask: hypopg installed",
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'hypopg')",
        &[],
    )
    .unwrap_or(false);
    if !hypopg {
        b.unknown(
            "a new simulation: the hypopg extension is not installed in this database \
             (CREATE EXTENSION hypopg)",
        );
        return;
    }
    let ran = guarded::run(None, || {
        Spi::run_with_args(
            "SELECT * FROM optidb.simulate($1, $2)",
            &[id.into(), rec.into()],
        )
        .unwrap_or_else(|e| error!("{e}"));
    });
    if ran.is_err() {
        b.unknown("a new simulation: optidb.simulate() failed; run it to see why");
    }
}

fn what_changed(b: &mut AnswerBuilder, query_id: Option<i64>) {
    if let Some(id) = query_id {
        if subject(b, Some(id)).is_some() && anomaly_sentences(b, id) == 0 {
            b.say(
                "No anomaly is tagged on statement {query_id} (latency spike, family outlier, \
                 plan change or lock contention) as of the last scan.",
                facts(vec![id_fact(id)]),
            );
        }
        return;
    }
    let tagged = rows::select(
        "ask: anomalies",
        "SELECT DISTINCT query_id FROM optidb.anomaly ORDER BY query_id LIMIT 5",
        &[],
        |row| row.get::<i64>("query_id"),
    );
    if tagged.is_empty() {
        b.unknown("a change: no anomaly you may see is tagged as of the last scan");
    }
    for id in tagged {
        b.say("Statement {query_id}:", facts(vec![id_fact(id)]));
        anomaly_sentences(b, id);
    }
}

fn top_bottlenecks(b: &mut AnswerBuilder) {
    let top = rows::select(
        "ask: top statements",
        "SELECT query_id FROM optidb.metric GROUP BY query_id \
         ORDER BY sum(total_ms) DESC, query_id LIMIT 5",
        &[],
        |row| row.get::<i64>("query_id"),
    );
    if top.is_empty() {
        b.unknown("bottlenecks: no statement history is stored yet (run optidb.scan())");
    }
    for id in top {
        b.say(
            "Statement {query_id}: {total_ms} ms in all over {calls} calls, {share_pct}% of \
             the time recorded.",
            facts(vec![
                id_fact(id),
                fact(
                    "total_ms",
                    format!(
                        "SELECT round(sum(total_ms)::numeric, 2)::text FROM optidb.metric \
                         WHERE query_id = {id}"
                    ),
                ),
                fact(
                    "calls",
                    format!("SELECT sum(calls)::text FROM optidb.metric WHERE query_id = {id}"),
                ),
                fact(
                    "share_pct",
                    format!(
                        "SELECT round((100 * sum(total_ms) FILTER (WHERE query_id = {id}) \
                         / NULLIF(sum(total_ms), 0))::numeric, 1)::text FROM optidb.metric"
                    ),
                ),
            ]),
        );
    }
}

fn health(b: &mut AnswerBuilder) {
    let readable = rows::value::<bool>(
        "ask: may read health",
        "SELECT pg_catalog.has_table_privilege('optidb.health_history', 'SELECT') \
            AND pg_catalog.has_table_privilege('optidb.alert', 'SELECT')",
        &[],
    )
    .unwrap_or(false);
    let at = if readable {
        rows::value::<String>(
            "ask: latest health",
            "SELECT max(captured_at)::text FROM optidb.health_history",
            &[],
        )
    } else {
        None
    };
    let Some(at) = at else {
        b.unknown(
            "the database's health: none is recorded that you may read (optidb_admin; the \
             worker or optidb.record_health() records it)",
        );
        return;
    };
    let latest = format!("captured_at = {}", spi::quote_literal(&at));
    let h = |name: &str, expr: &str, filter: &str| {
        fact(
            name,
            format!("SELECT {expr} FROM optidb.health_history WHERE {latest} {filter}"),
        )
    };
    b.say(
        "As recorded at {recorded_at}: {not_ok} figure(s) out of {figures} were not ok.",
        facts(vec![
            h("recorded_at", "max(captured_at)::text", ""),
            h("not_ok", "count(*)::text", "AND status <> 'ok'"),
            h("figures", "count(*)::text", ""),
        ]),
    );
    let flagged = rows::select(
        "ask: flagged health",
        "SELECT item FROM optidb.health_history WHERE captured_at = $1::timestamptz \
         AND status <> 'ok' ORDER BY item",
        &[at.as_str().into()],
        |row| row.get::<String>("item"),
    );
    for item in flagged {
        let filter = format!("AND item = {}", spi::quote_literal(&item));
        b.say(
            "{item} = {value} ({status}).",
            facts(vec![
                h("item", "item", &filter),
                h("value", "round(value::numeric, 2)::text", &filter),
                h("status", "status", &filter),
            ]),
        );
    }
    b.say(
        "Open alerts: {open_alerts}.",
        facts(vec![fact(
            "open_alerts",
            "SELECT count(*)::text FROM optidb.alert WHERE resolved_at IS NULL".to_string(),
        )]),
    );
}

fn answer(question: &str, query_id: Option<i64>) -> (Answer, Intent) {
    let intent = ask::parse(question, query_id);
    let mut b = AnswerBuilder::new(intent.name());
    match intent {
        Intent::WhySlow(id) => why_slow(&mut b, id),
        Intent::WhatIndex(id) => what_index(&mut b, id),
        Intent::ShowImpact(id) => show_impact(&mut b, id),
        Intent::WhatChanged(id) => what_changed(&mut b, id),
        Intent::TopBottlenecks => top_bottlenecks(&mut b),
        Intent::Health => health(&mut b),
        Intent::Help => {}
    }
    (b.finish(), intent)
}

/// Answer a question about the workload from stored facts only; each fact with the query that
/// reads it. Unknown questions get the list of what can be answered.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn ask(
    question: Option<&str>,
    query_id: default!(Option<i64>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(answer, String),
        name!(intent, String),
        name!(facts, JsonB),
    ),
> {
    let Some(question) = question else {
        crate::postgres::errors::raise(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            "optidb.ask() needs a question, got NULL",
            Some("Try SELECT * FROM optidb.ask('top bottlenecks');"),
        )
    };
    let (a, intent) = own_work::run(|| answer(question, query_id));
    let text = if intent == Intent::Help {
        ask::help_text()
    } else {
        a.text
    };
    let facts: Vec<_> = a
        .facts
        .iter()
        .map(|f| json!({"name": f.name, "value": f.value, "source": f.source}))
        .collect();
    TableIterator::once((text, a.intent, JsonB(json!(facts))))
}
