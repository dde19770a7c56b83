//! `optidb.report()`: one self-contained HTML page (optidb_core::report renders it) from what
//! optidb stores: top bottlenecks with their recommendations and simulated gains, latency
//! percentile trends per top statement, a latency histogram, error rates, health panels and
//! trends, alert history and the metric views' freshness.

use crate::postgres::latency::history;
use crate::postgres::own_work;
use crate::postgres::rows;
use optidb_core::histogram::bucket_value;
use optidb_core::report::{
    AlertRow, Bottleneck, Bucket, ErrorRate, Freshness, HealthItem, Histogram, Recommendation,
    ReportData, Series, Trend, TrendPoint,
};
use pgrx::prelude::*;

/// Statements with a trend chart (the top ones by total time).
const TRENDS: usize = 5;
/// Health figures drawn over time.
const HEALTH_SERIES: [&str; 6] = [
    "connections",
    "cache_hit_pct",
    "lock_waits",
    "longest_transaction_s",
    "dead_tuples",
    "database_bytes",
];
const ALERTS_SHOWN: i64 = 50;
/// Points per health chart at most.
const SERIES_POINTS: f64 = 240.0;

/// Statement text as the report shows it: one line, cut long.
fn label(query_id: i64, text: &str) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let cut: String = flat.chars().take(80).collect();
    format!("#{query_id} {cut}")
}

fn bottlenecks(top: i32, source: Option<&str>) -> Vec<Bottleneck> {
    let mut found = rows::select(
        "report bottlenecks",
        "SELECT query_id, coalesce(query, fingerprint) AS query, calls, total_ms, mean_ms, \
                p95_ms, reason, confidence FROM optidb.bottlenecks($1, $2)",
        &[top.into(), source.into()],
        |row| Bottleneck {
            query_id: row.get("query_id"),
            query: row.get("query"),
            calls: row.get("calls"),
            total_ms: row.get("total_ms"),
            mean_ms: row.get("mean_ms"),
            p95_ms: row.opt("p95_ms"),
            reason: row.get("reason"),
            confidence: format!("{:.2}", row.get::<f64>("confidence")),
            recommendations: Vec::new(),
        },
    );
    for b in &mut found {
        b.recommendations = rows::select(
            "report recommendations",
            "SELECT r.id, r.kind, r.ddl, r.confidence, s.improvement_pct, s.before_cost, \
                    s.after_cost \
             FROM optidb.recommendation r \
             LEFT JOIN LATERAL (SELECT improvement_pct, before_cost, after_cost \
                                FROM optidb.simulation \
                                WHERE rec_id = r.id AND query_id = $1 AND error IS NULL \
                                ORDER BY ran_at DESC LIMIT 1) s ON true \
             WHERE r.status = 'open' AND $1 = ANY (r.query_ids) \
             ORDER BY r.confidence DESC, r.id",
            &[b.query_id.into()],
            |row| Recommendation {
                id: row.get("id"),
                kind: row.get("kind"),
                ddl: row.get("ddl"),
                confidence: format!("{:.2}", row.get::<f64>("confidence")),
                gain_pct: row.opt("improvement_pct"),
                cost_before: row.opt("before_cost"),
                cost_after: row.opt("after_cost"),
            },
        );
    }
    found
}

fn trends(
    top: &[Bottleneck],
    start: &TimestampWithTimeZone,
    end: &TimestampWithTimeZone,
) -> Vec<Trend> {
    top.iter()
        .take(TRENDS)
        .map(|b| {
            let points = history::merged(Some(b.query_id), Some(*start), Some(*end), Some("hour"))
                .into_iter()
                .filter_map(|((_, period), m)| {
                    let s = m.stats?;
                    let at = epoch_s(&period?);
                    Some(TrendPoint {
                        at_epoch_s: at,
                        p50_ms: s.median_ms,
                        p95_ms: s.p95_ms,
                        p99_ms: s.p99_ms,
                    })
                })
                .collect();
            Trend {
                query_id: b.query_id,
                label: label(b.query_id, &b.query),
                points,
            }
        })
        .collect()
}

/// Seconds since 1970 (PostgreSQL counts microseconds from 2000-01-01).
fn epoch_s(at: &TimestampWithTimeZone) -> f64 {
    const UNIX_AT_POSTGRES_EPOCH_S: f64 = 946_684_800.0;
    let us: i64 = pgrx::pg_sys::TimestampTz::from(*at);
    us as f64 / 1e6 + UNIX_AT_POSTGRES_EPOCH_S
}

/// 1-2-5 buckets (under 0.1 ms, 0.2 ms, 0.5 ms, 1 ms, ... 50 s, and above) from optidb's fine
/// histogram.
fn histogram(
    top: Option<&Bottleneck>,
    start: &TimestampWithTimeZone,
    end: &TimestampWithTimeZone,
) -> Histogram {
    let Some(b) = top else {
        return Histogram::default();
    };
    let fine: Vec<(i32, i64)> = rows::select(
        "report histogram",
        "SELECT u.bucket, sum(u.n)::int8 AS n \
         FROM optidb.latency l, unnest(l.buckets, l.counts) AS u(bucket, n) \
         WHERE l.query_id = $1 AND l.captured_at BETWEEN $2 AND $3 GROUP BY u.bucket",
        &[b.query_id.into(), (*start).into(), (*end).into()],
        |row| (row.get("bucket"), row.get("n")),
    );
    let uppers_ms: Vec<f64> = (-1..5)
        .flat_map(|exp| [1.0, 2.0, 5.0].map(|m| m * 10f64.powi(exp)))
        .chain([f64::INFINITY])
        .collect();
    let mut buckets: Vec<Bucket> = uppers_ms
        .iter()
        .map(|&upper_ms| Bucket { upper_ms, count: 0 })
        .collect();
    for (bucket, n) in fine {
        let ms = bucket_value(bucket.max(0) as usize) / 1000.0;
        let slot = uppers_ms
            .iter()
            .position(|&u| ms < u)
            .unwrap_or(uppers_ms.len() - 1);
        buckets[slot].count += n.max(0) as u64;
    }
    Histogram {
        title: format!("Execution times of {}", label(b.query_id, &b.query)),
        buckets,
    }
}

fn error_rates(
    start: &TimestampWithTimeZone,
    end: &TimestampWithTimeZone,
    source: Option<&str>,
) -> Vec<ErrorRate> {
    rows::select(
        "report errors",
        // The statements that failed first (index latency_errors), then the calls of those
        // shown: the history of every statement is not read.
        "WITH failing AS ( \
             SELECT query_id, sum(errors)::int8 AS errors FROM optidb.latency \
             WHERE errors > 0 AND captured_at BETWEEN $1 AND $2 GROUP BY query_id) \
         SELECT f.query_id, coalesce(q.norm_sql, q.fingerprint) AS query, f.errors, \
                (SELECT sum(l.calls + l.errors) FROM optidb.latency l \
                 WHERE l.query_id = f.query_id \
                   AND l.captured_at BETWEEN $1 AND $2)::int8 AS calls \
         FROM failing f JOIN optidb.query q ON q.id = f.query_id \
         WHERE $3::text IS NULL OR q.source = $3 \
         ORDER BY f.errors DESC, f.query_id LIMIT 10",
        &[(*start).into(), (*end).into(), source.into()],
        |row| {
            let query_id: i64 = row.get("query_id");
            ErrorRate {
                query_id,
                label: label(query_id, &row.get::<String>("query")),
                calls: row.get("calls"),
                errors: row.get("errors"),
            }
        },
    )
}

fn health_now() -> Vec<HealthItem> {
    super::health::figures()
        .into_iter()
        .map(|f| {
            let r = f.reading;
            HealthItem {
                item: r.metric.as_str().to_string(),
                value: r.value,
                unit: r.metric.about().unit.to_string(),
                status: f.status.to_string(),
                details: if r.details.as_object().is_some_and(|o| o.is_empty()) {
                    String::new()
                } else {
                    r.details.to_string()
                },
            }
        })
        .collect()
}

fn health_series(start: &TimestampWithTimeZone, end: &TimestampWithTimeZone) -> Vec<Series> {
    HEALTH_SERIES
        .iter()
        .map(|item| {
            // Averaged into at most SERIES_POINTS time slots: a month of one-minute
            // recordings would otherwise be 43,200 points per chart.
            let points = rows::select(
                "report health series",
                "SELECT avg(extract(epoch FROM captured_at))::float8 AS at, avg(value) AS value \
                 FROM optidb.health_history \
                 WHERE item = $1 AND captured_at BETWEEN $2 AND $3 AND value IS NOT NULL \
                 GROUP BY pg_catalog.floor(extract(epoch FROM captured_at - $2) \
                                           / greatest(extract(epoch FROM $3 - $2) / $4, 1)) \
                 ORDER BY 1",
                &[
                    (*item).into(),
                    (*start).into(),
                    (*end).into(),
                    SERIES_POINTS.into(),
                ],
                |row| (row.get::<f64>("at"), row.get::<f64>("value")),
            );
            let unit = optidb_core::health::Metric::parse(item).map_or("", |m| m.about().unit);
            Series {
                name: item.to_string(),
                unit: unit.to_string(),
                points,
            }
        })
        .collect()
}

fn alerts(start: &TimestampWithTimeZone) -> Vec<AlertRow> {
    rows::select(
        "report alerts",
        "SELECT rule_name || CASE WHEN subject <> '' THEN ' (' || subject || ')' ELSE '' END AS rule, \
                severity, fired_at::text AS fired_at, resolved_at::text AS resolved_at, \
                coalesce(peak, value) AS value, details::text AS details \
         FROM optidb.alert WHERE fired_at >= $1 OR resolved_at IS NULL \
         ORDER BY fired_at DESC, id DESC LIMIT $2",
        &[(*start).into(), ALERTS_SHOWN.into()],
        |row| AlertRow {
            rule: row.get("rule"),
            severity: row.get("severity"),
            fired_at: row.get("fired_at"),
            resolved_at: row.opt("resolved_at"),
            value: row.opt("value"),
            details: row.get("details"),
        },
    )
}

fn freshness() -> Vec<Freshness> {
    super::refresh::last_refreshed()
        .into_iter()
        .map(|(view, refreshed_at, age_s)| Freshness {
            view,
            refreshed_at,
            age_s,
        })
        .collect()
}

/// One self-contained HTML page (inline CSS and SVG, no JavaScript, every text escaped) about
/// the last `days` days and the `top` statements by total time; with `source`, the statements
/// (and their errors) of that source only. From psql:
/// `psql -Atc "select optidb.report()" > report.html`.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn report(
    days: default!(Option<i32>, 7),
    top: default!(Option<i32>, 10),
    source: default!(Option<&str>, "NULL"),
) -> Option<String> {
    // A NULL days or top: NULL, as when the function was STRICT (before its source argument).
    let (days, top) = (days?, top?);
    crate::postgres::errors::require_positive("days", days);
    crate::postgres::errors::require_positive("top", top);
    own_work::run(|| {
        let (database, generated_at, start, end) = rows::first(
            "report range",
            "SELECT pg_catalog.current_database()::text AS database, \
                    pg_catalog.to_char(pg_catalog.now(), 'YYYY-MM-DD HH24:MI:SS TZ') AS generated_at, \
                    pg_catalog.now() - pg_catalog.make_interval(days => $1) AS start_at, \
                    pg_catalog.now() AS end_at",
            &[days.into()],
            |row| {
                (
                    row.get::<String>("database"),
                    row.get::<String>("generated_at"),
                    row.get::<TimestampWithTimeZone>("start_at"),
                    row.get::<TimestampWithTimeZone>("end_at"),
                )
            },
        )
        .expect("one row");
        let bottlenecks = bottlenecks(top, source);
        let days_text = format!("last {days} day{}", if days == 1 { "" } else { "s" });
        let data = ReportData {
            database,
            generated_at,
            range: match source {
                Some(s) => format!("{days_text}, statements of source {s}"),
                None => days_text,
            },
            trends: trends(&bottlenecks, &start, &end),
            histogram: histogram(bottlenecks.first(), &start, &end),
            errors: error_rates(&start, &end, source),
            health: health_now(),
            health_series: health_series(&start, &end),
            alerts: alerts(&start),
            freshness: freshness(),
            bottlenecks,
        };
        Some(optidb_core::report::render(&data))
    })
}
