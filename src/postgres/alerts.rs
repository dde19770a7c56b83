//! Evaluating the alert rules (optidb.alert_rule) against what is observed now: the database's
//! health figures, open recommendations and statements' p95 against their own history. The
//! state machine is optidb_core::alerting; this module reads and writes its tables, sends
//! `NOTIFY optidb_alerts` (delivered when the transaction commits) and logs a WARNING line per
//! fired alert.

use crate::postgres::health;
use crate::postgres::latency::history;
use crate::postgres::rows;
use optidb_core::alerting::{self, Rule, Step, Tracked};
use optidb_core::health::Metric;
use optidb_core::vocabulary::{Comparison, Severity};
use pgrx::pg_sys;
use pgrx::prelude::*;
use serde_json::{json, Value};
use std::collections::HashMap;

/// Details kept with an alert, at most (JSON text).
const MAX_DETAILS_BYTES: usize = 4000;

/// A value observed for one metric and subject ('' for the database as a whole).
pub struct Observation {
    pub metric: Metric,
    pub subject: String,
    pub value: Option<f64>,
    pub details: Value,
}

/// An enabled rule as stored.
pub struct StoredRule {
    pub id: i64,
    pub name: String,
    pub metric: Metric,
    pub severity: Severity,
    pub rule: Rule,
}

/// What one evaluation reports: an alert fired or resolved.
pub struct Event {
    pub step: Step,
    pub alert_id: i64,
    pub rule: String,
    pub severity: Severity,
    pub metric: Metric,
    pub subject: String,
    pub value: Option<f64>,
    pub details: Value,
}

pub fn enabled_rules() -> Vec<StoredRule> {
    rows::select(
        "alert rules",
        "SELECT id, name, metric, comparison, threshold, severity, \
                extract(epoch FROM hold)::float8 AS hold_s, \
                extract(epoch FROM clear_for)::float8 AS clear_for_s \
         FROM optidb.alert_rule WHERE enabled ORDER BY id",
        &[],
        |row| {
            let word = |column: &str| row.get::<String>(column);
            StoredRule {
                id: row.get("id"),
                name: row.get("name"),
                metric: Metric::parse(&word("metric")).expect("CHECK constraint"),
                severity: Severity::parse(&word("severity")).expect("CHECK constraint"),
                rule: Rule {
                    comparison: Comparison::parse(&word("comparison")).expect("CHECK constraint"),
                    threshold: row.get("threshold"),
                    hold_s: row.get("hold_s"),
                    clear_for_s: row.get("clear_for_s"),
                },
            }
        },
    )
}

/// The most severe enabled rule on `metric` whose condition holds for `value` right now.
pub fn worst_holding(rules: &[StoredRule], metric: Metric, value: Option<f64>) -> Option<Severity> {
    optidb_core::health::worst(
        rules
            .iter()
            .filter(|r| r.metric == metric && alerting::holds(&r.rule, value))
            .map(|r| r.severity),
    )
}

/// Everything the rules can watch, observed now.
fn observe(rules: &[StoredRule]) -> Vec<Observation> {
    let wanted = |m: Metric| rules.iter().any(|r| r.metric == m);
    let mut seen: Vec<Observation> = health::read()
        .into_iter()
        .map(|r| Observation {
            metric: r.metric,
            subject: String::new(),
            value: r.value,
            details: r.details,
        })
        .collect();
    if wanted(Metric::HighConfidenceRecommendation) {
        seen.extend(open_recommendations());
    }
    if wanted(Metric::StatementP95Ratio) {
        seen.extend(p95_ratios());
    }
    seen
}

fn open_recommendations() -> Vec<Observation> {
    rows::select(
        "open recommendations",
        "SELECT id, kind, ddl, confidence, query_ids, improvement_pct \
         FROM optidb.recommendation WHERE status = 'open'",
        &[],
        |row| {
            let id: i64 = row.get("id");
            Observation {
                metric: Metric::HighConfidenceRecommendation,
                subject: format!("recommendation {id}"),
                value: Some(row.get("confidence")),
                details: json!({
                    "recommendation_id": id,
                    "kind": row.get::<String>("kind"),
                    "ddl": row.get::<String>("ddl"),
                    "query_ids": row.get::<Vec<i64>>("query_ids"),
                    "improvement_pct": row.opt::<f64>("improvement_pct"),
                }),
            }
        },
    )
}

/// Calls a window needs before its p95 is compared: the last hour, the 7 days before it.
const RECENT_MIN_CALLS: u64 = 20;
const BASELINE_MIN_CALLS: u64 = 100;

/// Each statement's p95 over the last hour against its p95 over the 7 days before, from
/// optidb's own histograms.
fn p95_ratios() -> Vec<Observation> {
    let at = |sql: &str| rows::value::<TimestampWithTimeZone>("alert window", sql, &[]);
    let (Some(now), Some(hour_ago), Some(week_before)) = (
        at("SELECT pg_catalog.now()"),
        at("SELECT pg_catalog.now() - interval '1 hour'"),
        at("SELECT pg_catalog.now() - interval '8 days'"),
    ) else {
        return Vec::new();
    };
    let baseline: HashMap<i64, f64> =
        history::merged(None, Some(week_before), Some(hour_ago), None)
            .into_iter()
            .filter_map(|((id, _), m)| {
                let s = m.stats?;
                (s.count >= BASELINE_MIN_CALLS && s.p95_ms > 0.0).then_some((id, s.p95_ms))
            })
            .collect();
    history::merged(None, Some(hour_ago), Some(now), None)
        .into_iter()
        .filter_map(|((id, _), m)| {
            let s = m.stats?;
            let base = *baseline.get(&id)?;
            (s.count >= RECENT_MIN_CALLS).then(|| Observation {
                metric: Metric::StatementP95Ratio,
                subject: format!("statement {id}"),
                value: Some(s.p95_ms / base),
                details: json!({
                    "query_id": id,
                    "p95_ms_last_hour": s.p95_ms,
                    "p95_ms_7_days_before": base,
                    "calls_last_hour": s.count,
                }),
            })
        })
        .collect()
}

/// Tracked state of every (rule, subject) with something to remember.
fn tracked() -> HashMap<(i64, String), (Tracked, Option<i64>)> {
    rows::select(
        "alert state",
        "SELECT s.rule_id, s.subject, \
                extract(epoch FROM s.holding_since)::float8 AS holding_since, \
                extract(epoch FROM s.clear_since)::float8 AS clear_since, a.id AS alert_id \
         FROM optidb.alert_state s \
         LEFT JOIN optidb.alert a ON a.id = s.alert_id AND a.resolved_at IS NULL",
        &[],
        |row| {
            let alert_id = row.opt::<i64>("alert_id");
            (
                (row.get::<i64>("rule_id"), row.get::<String>("subject")),
                (
                    Tracked {
                        holding_since: row.opt("holding_since"),
                        clear_since: row.opt("clear_since"),
                        open: alert_id.is_some(),
                    },
                    alert_id,
                ),
            )
        },
    )
    .into_iter()
    .collect()
}

/// Evaluate every enabled rule once; returns the alerts that fired or resolved.
pub fn evaluate() -> Vec<Event> {
    let rules = enabled_rules();
    let now_s = rows::value::<f64>(
        "clock",
        "SELECT extract(epoch FROM pg_catalog.now())::float8",
        &[],
    )
    .expect("now() is never NULL");
    let observed = observe(&rules);
    let mut states = tracked();
    let mut events = Vec::new();
    for r in &rules {
        let mine: Vec<&Observation> = observed.iter().filter(|o| o.metric == r.metric).collect();
        // Subjects tracked but no longer observed count as clear.
        let mut subjects: Vec<String> = mine.iter().map(|o| o.subject.clone()).collect();
        subjects.extend(
            states
                .keys()
                .filter(|(id, s)| *id == r.id && !subjects.contains(s))
                .map(|(_, s)| s.clone())
                .collect::<Vec<_>>(),
        );
        for subject in subjects {
            let o = mine.iter().find(|o| o.subject == subject);
            let value = o.and_then(|o| o.value);
            let details = o.map_or(Value::Null, |o| o.details.clone());
            let (mut state, alert_id) = states.remove(&(r.id, subject.clone())).unwrap_or_default();
            let step = alerting::step(&r.rule, &mut state, alerting::holds(&r.rule, value), now_s);
            // The alert this step is about, and the one left open after it.
            let (concerned, open) = match step {
                Step::Fire => {
                    let id = open_alert(r, &subject, value, &details);
                    (Some(id), Some(id))
                }
                Step::Resolve => {
                    let id = alert_id.expect("an open alert resolves");
                    resolve_alert(id);
                    (Some(id), None)
                }
                Step::StillFiring => {
                    update_alert(alert_id.expect("a firing alert is open"), value, &details);
                    (None, alert_id)
                }
                Step::Quiet => (None, alert_id),
            };
            store_state(r.id, &subject, &state, open);
            if let (Some(alert_id), Step::Fire | Step::Resolve) = (concerned, step) {
                let event = Event {
                    step,
                    alert_id,
                    rule: r.name.clone(),
                    severity: r.severity,
                    metric: r.metric,
                    subject,
                    value,
                    details,
                };
                announce(&event, r);
                events.push(event);
            }
        }
    }
    events
}

fn bounded(details: &Value) -> Value {
    let text = details.to_string();
    if text.len() <= MAX_DETAILS_BYTES {
        details.clone()
    } else {
        let mut cut = MAX_DETAILS_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        json!({ "truncated": &text[..cut] })
    }
}

fn open_alert(r: &StoredRule, subject: &str, value: Option<f64>, details: &Value) -> i64 {
    rows::value::<i64>(
        "fire alert",
        "INSERT INTO optidb.alert (rule_id, rule_name, metric, subject, severity, fired_at, \
                                   value, last_value, peak, details) \
         VALUES ($1, $2, $3, $4, $5, pg_catalog.now(), $6, $6, $6, $7) RETURNING id",
        &[
            r.id.into(),
            r.name.as_str().into(),
            r.metric.as_str().into(),
            subject.into(),
            r.severity.as_str().into(),
            value.into(),
            pgrx::JsonB(bounded(details)).into(),
        ],
    )
    .expect("INSERT ... RETURNING returns the id")
}

fn update_alert(alert_id: i64, value: Option<f64>, details: &Value) {
    Spi::run_with_args(
        "UPDATE optidb.alert a SET last_value = $2, \
                peak = CASE WHEN r.comparison IN ('<', '<=') THEN least(a.peak, $2) \
                            ELSE greatest(a.peak, $2) END, \
                details = CASE WHEN $3::jsonb = 'null' THEN a.details ELSE $3 END \
         FROM optidb.alert_rule r WHERE a.id = $1 AND r.id = a.rule_id",
        &[
            alert_id.into(),
            value.into(),
            pgrx::JsonB(bounded(details)).into(),
        ],
    )
    .unwrap_or_else(|e| error!("updating alert {alert_id} failed: {e}"));
}

fn resolve_alert(alert_id: i64) {
    Spi::run_with_args(
        "UPDATE optidb.alert SET resolved_at = pg_catalog.now() WHERE id = $1",
        &[alert_id.into()],
    )
    .unwrap_or_else(|e| error!("resolving alert {alert_id} failed: {e}"));
}

fn store_state(rule_id: i64, subject: &str, state: &Tracked, alert_id: Option<i64>) {
    if alerting::forgettable(state) {
        Spi::run_with_args(
            "DELETE FROM optidb.alert_state WHERE rule_id = $1 AND subject = $2",
            &[rule_id.into(), subject.into()],
        )
    } else {
        Spi::run_with_args(
            "INSERT INTO optidb.alert_state (rule_id, subject, holding_since, clear_since, alert_id) \
             VALUES ($1, $2, pg_catalog.to_timestamp($3), pg_catalog.to_timestamp($4), $5) \
             ON CONFLICT (rule_id, subject) DO UPDATE SET holding_since = excluded.holding_since, \
                 clear_since = excluded.clear_since, alert_id = excluded.alert_id",
            &[
                rule_id.into(),
                subject.into(),
                state.holding_since.into(),
                state.clear_since.into(),
                alert_id.into(),
            ],
        )
    }
    .unwrap_or_else(|e| error!("storing alert state failed: {e}"));
}

/// NOTIFY optidb_alerts with a JSON payload; a WARNING line for a fired alert. The payload
/// carries no details: any role connected to the database may LISTEN on any channel, and
/// details name other sessions' statements. Admins read them in optidb.alert by alert_id.
fn announce(e: &Event, r: &StoredRule) {
    let event = if e.step == Step::Fire {
        "fired"
    } else {
        "resolved"
    };
    let payload = json!({
        "event": event,
        "alert_id": e.alert_id,
        "rule": e.rule,
        "severity": e.severity.as_str(),
        "metric": e.metric.as_str(),
        "subject": e.subject,
        "value": e.value,
        "comparison": r.rule.comparison.as_str(),
        "threshold": r.rule.threshold,
    });
    Spi::run_with_args(
        "SELECT pg_catalog.pg_notify('optidb_alerts', $1)",
        &[payload.to_string().into()],
    )
    .unwrap_or_else(|err| error!("NOTIFY optidb_alerts failed: {err}"));
    if e.step == Step::Fire {
        let value = e.value.map_or("none".to_string(), |v| format!("{v:.2}"));
        let subject = if e.subject.is_empty() {
            String::new()
        } else {
            format!(" ({})", e.subject)
        };
        let line = format!(
            "optidb alert {} fired: {} {}{subject} = {value} {} {} [{}]",
            e.alert_id,
            e.rule,
            e.metric.as_str(),
            r.rule.comparison.as_str(),
            r.rule.threshold,
            e.severity.as_str()
        );
        warning!("{line}");
        if !warnings_reach_server_log() {
            log!("{line}");
        }
    }
}

/// Whether log_min_messages lets WARNING into the server log. Set to `error` or `log` it does
/// not, but LOG lines still go (LOG ranks between ERROR and FATAL there): the alert is then
/// logged at LOG as well, so a server log never misses it.
fn warnings_reach_server_log() -> bool {
    // SAFETY: a plain global of this backend, read on its only thread.
    let min = unsafe { pg_sys::log_min_messages } as u32;
    min != pg_sys::LOG && min <= pg_sys::WARNING
}
