//! `optidb.metrics()`: the key figures in Prometheus text exposition format, for scrapers of
//! the postgres_exporter kind (its custom queries, or a sidecar that serves the text). Low
//! cardinality: the database-wide health figures, open alerts per severity, the metric views'
//! age, and only the top `top` statements by total time (of one source, or of all), labelled
//! by id, a 60-character query snippet and the source they ran on.

use crate::postgres::health;
use crate::postgres::own_work;
use crate::postgres::rows;
use optidb_core::health::Kind as MetricKind;
use optidb_core::prometheus::{self, bounded_label, Family, Kind, Sample};
use pgrx::prelude::*;

/// Statements exported at most, whatever `top` asks for.
const MAX_TOP: i32 = 100;
const SNIPPET_CHARS: usize = 60;

fn family(name: &str, help: &str, kind: Kind, samples: Vec<Sample>) -> Family {
    Family {
        name: name.to_string(),
        help: help.to_string(),
        kind,
        samples,
    }
}

fn health_families(database: &str) -> Vec<Family> {
    health::read()
        .into_iter()
        .map(|r| {
            let about = r.metric.about();
            let kind = match about.kind {
                MetricKind::Counter => Kind::Counter,
                MetricKind::Gauge => Kind::Gauge,
            };
            let samples = r
                .value
                .map(|value| Sample {
                    labels: vec![("database".into(), database.to_string())],
                    value,
                })
                .into_iter()
                .collect();
            family(
                &format!("optidb_{}", r.metric.as_str()),
                &format!("{} ({}; {})", about.meaning, about.unit, about.source),
                kind,
                samples,
            )
        })
        .collect()
}

fn alert_family() -> Family {
    let samples = rows::select(
        "open alerts",
        "SELECT severity, open::float8 AS open FROM optidb.monitor_alerts ORDER BY severity",
        &[],
        |row| Sample {
            labels: vec![("severity".into(), row.get("severity"))],
            value: row.get("open"),
        },
    );
    family(
        "optidb_alerts_open",
        "alerts open now, per severity (optidb.alert)",
        Kind::Gauge,
        samples,
    )
}

fn view_age_family() -> Family {
    // One row per view (the latest successful refresh), not the whole log.
    let samples = super::refresh::last_refreshed()
        .into_iter()
        .filter_map(|(view, _, age)| {
            age.map(|value| Sample {
                labels: vec![("view".into(), view)],
                value,
            })
        })
        .collect();
    family(
        "optidb_metric_view_age_seconds",
        "seconds since each materialized metric view was last refreshed successfully (latest successful refresh per view in optidb.refresh_log)",
        Kind::Gauge,
        samples,
    )
}

/// The top statements' figures: one family per figure, one sample per statement.
fn statement_families(top: i32, source: Option<&str>) -> Vec<Family> {
    let stats = rows::select(
        "top statements",
        "SELECT query_id, query, execution_count::float8 AS calls, total_ms, mean_ms, p95_ms, \
                failure_rate, source \
         FROM optidb.monitor_statements WHERE $2::text IS NULL OR source = $2 \
         ORDER BY total_ms DESC NULLS LAST, query_id LIMIT $1",
        &[top.into(), source.into()],
        |row| {
            let labels = vec![
                (
                    "query_id".to_string(),
                    row.get::<i64>("query_id").to_string(),
                ),
                (
                    "query".to_string(),
                    bounded_label(&row.get::<String>("query"), SNIPPET_CHARS),
                ),
                ("source".to_string(), row.get::<String>("source")),
            ];
            let figures: [Option<f64>; 5] = [
                row.opt("calls"),
                row.opt("total_ms").map(|ms: f64| ms / 1000.0),
                row.opt("mean_ms").map(|ms: f64| ms / 1000.0),
                row.opt("p95_ms").map(|ms: f64| ms / 1000.0),
                row.opt("failure_rate"),
            ];
            (labels, figures)
        },
    );
    let names: [(&str, &str, Kind); 5] = [
        (
            "optidb_statement_calls_total",
            "executions of a top statement",
            Kind::Counter,
        ),
        (
            "optidb_statement_seconds_total",
            "total execution time of a top statement",
            Kind::Counter,
        ),
        (
            "optidb_statement_mean_seconds",
            "mean execution time of a top statement",
            Kind::Gauge,
        ),
        (
            "optidb_statement_p95_seconds",
            "95th percentile execution time of a top statement (optidb's histograms)",
            Kind::Gauge,
        ),
        (
            "optidb_statement_failure_ratio",
            "share of a top statement's executions that raised an error",
            Kind::Gauge,
        ),
    ];
    names
        .iter()
        .enumerate()
        .map(|(i, (name, help, kind))| {
            let samples = stats
                .iter()
                .filter_map(|(labels, figures)| {
                    figures[i].map(|value| Sample {
                        labels: labels.clone(),
                        value,
                    })
                })
                .collect();
            family(name, help, *kind, samples)
        })
        .collect()
}

/// optidb's key figures in Prometheus text exposition format (version 0.0.4); `source` keeps
/// the statements of one source (NULL: all).
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn metrics(
    top: default!(Option<i32>, 10),
    source: default!(Option<&str>, "NULL"),
) -> Option<String> {
    // NULL top: NULL, as when the function was STRICT (before its source argument).
    let top = top?;
    crate::postgres::errors::require_positive("top", top);
    own_work::run(|| {
        let database = rows::value::<String>(
            "database",
            "SELECT pg_catalog.current_database()::text",
            &[],
        )
        .unwrap_or_default();
        let mut families = health_families(&database);
        families.push(alert_family());
        families.push(view_age_family());
        families.extend(statement_families(top.min(MAX_TOP), source));
        Some(prometheus::render(&families))
    })
}
