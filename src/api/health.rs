//! Health and alerts at the SQL surface: `optidb.health()` (the picture now), `record_health()`
//! (history, run by the worker), `check_alerts()` (evaluate the rules, run by the worker and on
//! demand) and `sample_waits()` (wait events of running statements, for lock contention).

use crate::postgres::alerts::{self, Event};
use crate::postgres::health;
use crate::postgres::locks::{self, Lock};
use crate::postgres::own_work;
use optidb_core::alerting::Step;
use optidb_core::health::status;
use pgrx::prelude::*;
use pgrx::JsonB;

/// A health figure read now, with its status from the enabled alert rules.
pub(crate) struct Figure {
    pub reading: health::Reading,
    pub status: &'static str,
}

/// Every database-wide figure now, each with the status the rules give it.
pub(crate) fn figures() -> Vec<Figure> {
    let rules = alerts::enabled_rules();
    health::read()
        .into_iter()
        .map(|reading| Figure {
            status: status(alerts::worst_holding(&rules, reading.metric, reading.value)),
            reading,
        })
        .collect()
}

/// A figure of optidb.health(): value, unit, status from the alert rules, details, meaning.
type HealthRow = (String, Option<f64>, String, String, JsonB, String);

fn current() -> Vec<HealthRow> {
    figures()
        .into_iter()
        .map(|f| {
            let about = f.reading.metric.about();
            (
                f.reading.metric.as_str().to_string(),
                f.reading.value,
                about.unit.to_string(),
                f.status.to_string(),
                JsonB(f.reading.details),
                about.meaning.to_string(),
            )
        })
        .collect()
}

/// The database's health now: one row per figure, with a status from the enabled alert rules
/// on it (the most severe whose condition holds now, ignoring `hold`; 'ok' if none).
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)] // pgrx needs the TableIterator spelled out
fn health() -> TableIterator<
    'static,
    (
        name!(item, String),
        name!(value, Option<f64>),
        name!(unit, String),
        name!(status, String),
        name!(details, JsonB),
        name!(meaning, String),
    ),
> {
    TableIterator::new(own_work::run(current))
}

/// Store the current health figures in optidb.health_history; returns the rows stored.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn record_health() -> i64 {
    own_work::run(|| {
        let figures = current();
        for (item, value, _, status, details, _) in &figures {
            Spi::run_with_args(
                "INSERT INTO optidb.health_history (captured_at, item, value, status, details) \
                 VALUES (pg_catalog.now(), $1, $2, $3, $4) \
                 ON CONFLICT (item, captured_at) DO NOTHING",
                &[
                    item.as_str().into(),
                    (*value).into(),
                    status.as_str().into(),
                    JsonB(details.0.clone()).into(),
                ],
            )
            .unwrap_or_else(|e| error!("storing health history failed: {e}"));
        }
        figures.len() as i64
    })
}

/// Evaluate the alert rules now; returns the alerts that fired or resolved. Firing writes
/// optidb.alert, sends NOTIFY optidb_alerts (on commit) and logs a WARNING.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)] // pgrx needs the TableIterator spelled out
fn check_alerts() -> TableIterator<
    'static,
    (
        name!(event, String),
        name!(alert_id, i64),
        name!(rule, String),
        name!(severity, String),
        name!(metric, String),
        name!(subject, String),
        name!(value, Option<f64>),
        name!(details, JsonB),
    ),
> {
    let events = own_work::run(|| {
        locks::acquire_or_raise(
            Lock::Alerts,
            "optidb.check_alerts() is running in this database",
        );
        alerts::evaluate()
    });
    TableIterator::new(events.into_iter().map(|e: Event| {
        (
            if e.step == Step::Fire {
                "fired"
            } else {
                "resolved"
            }
            .to_string(),
            e.alert_id,
            e.rule,
            e.severity.as_str().to_string(),
            e.metric.as_str().to_string(),
            e.subject,
            e.value,
            JsonB(e.details),
        )
    }))
}

/// Store the wait events of statements running now (client sessions with a query id, waiting
/// on anything but the client or idleness): the worker runs it every optidb.alert_interval,
/// and scan() suspects lock contention from it. Returns the rows stored.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn sample_waits() -> i64 {
    own_work::run(|| {
        crate::postgres::rows::value::<i64>(
            "sample waits",
            "WITH stored AS ( \
                 INSERT INTO optidb.wait_sample (captured_at, queryid, userid, wait_event_type, \
                                                 wait_event, sessions) \
                 SELECT pg_catalog.now(), query_id, usesysid, wait_event_type, wait_event, \
                        count(*) \
                 FROM pg_catalog.pg_stat_activity \
                 WHERE state = 'active' AND query_id IS NOT NULL AND usesysid IS NOT NULL \
                   AND datname = pg_catalog.current_database() \
                   AND wait_event_type NOT IN ('Client', 'Activity') \
                   AND pid <> pg_catalog.pg_backend_pid() \
                 GROUP BY 1, 2, 3, 4, 5 \
                 ON CONFLICT DO NOTHING RETURNING 1) \
             SELECT count(*) FROM stored",
            &[],
        )
        .unwrap_or(0)
    })
}
