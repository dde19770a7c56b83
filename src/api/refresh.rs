//! `optidb.refresh(view)`: refresh the materialized metric views (sql/views.sql).
//!
//! - One refresh at a time: a transaction-level advisory lock, waited for at most
//!   `optidb.lock_timeout`; a second caller gets SQLSTATE 55P03 instead of queueing forever.
//! - CONCURRENTLY once a view is populated, so readers are never blocked.
//! - Each view refreshes in its own subtransaction under `optidb.refresh_timeout`: a failure or
//!   timeout rolls that view back to its previous contents, is logged in optidb.refresh_log with
//!   its error, and the other views still refresh.
//! - SECURITY DEFINER with a pinned search_path: optidb_admin members may refresh views they do
//!   not own, and the refresh runs with the owner's rights, never the caller's (PostgreSQL runs
//!   the view query as its owner too; CVE-2024-0985). The argument only selects a name from a
//!   fixed list, so it never reaches SQL text.

use crate::postgres::errors::raise;
use crate::postgres::guarded;
use crate::postgres::gucs;
use crate::postgres::identity;
use crate::postgres::locks::{self, Lock};
use crate::postgres::own_work;
use crate::postgres::rows;
use pgrx::prelude::*;

/// The materialized views, in refresh order (one list: the surface registry's).
const VIEWS: [&str; 4] = super::surface::MATERIALIZED_VIEWS;

#[allow(clippy::type_complexity)] // pgrx needs the TableIterator spelled out
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn refresh(
    view: default!(Option<&str>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(view_name, String),
        name!(concurrent, bool),
        name!(rows, Option<i64>),
        name!(duration_ms, f64),
        name!(error, Option<String>),
    ),
> {
    let targets = resolve(view);
    let rows: Vec<_> = own_work::run(|| {
        take_lock();
        // The views copy optidb.query's role OIDs: restored ones must name this cluster's roles.
        identity::reconcile_before_copying_oids();
        targets.into_iter().map(refresh_one).collect()
    });
    TableIterator::new(rows)
}

/// The views to refresh: all, or the one named (with or without the `optidb.` prefix).
fn resolve(view: Option<&str>) -> Vec<&'static str> {
    let Some(name) = view else {
        return VIEWS.to_vec();
    };
    let bare = name.strip_prefix("optidb.").unwrap_or(name);
    match VIEWS.iter().find(|v| **v == bare) {
        Some(v) => vec![*v],
        None => raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("optidb has no materialized view named \"{name}\""),
            Some(&format!(
                "Pass one of {}, or NULL for all.",
                VIEWS.join(", ")
            )),
        ),
    }
}

/// When each metric view was last refreshed successfully: (view, finished_at as text, seconds
/// since), NULLs for a view never refreshed, by view name. What metrics() and report() show.
/// Reads one row of optidb.refresh_log per view, however long the log: the latest successful
/// refresh through the partial index refresh_log_success (view_name, finished_at DESC WHERE
/// error IS NULL); prune() keeps that row whatever its age.
pub fn last_refreshed() -> Vec<(String, Option<String>, Option<f64>)> {
    rows::select(
        "metric view ages",
        "SELECT v.name AS view_name, l.finished_at::text AS refreshed_at, \
                extract(epoch FROM pg_catalog.now() - l.finished_at)::float8 AS age_s \
         FROM pg_catalog.unnest($1::text[]) AS v(name) \
         LEFT JOIN LATERAL (SELECT finished_at FROM optidb.refresh_log \
                            WHERE view_name = v.name AND error IS NULL \
                            ORDER BY finished_at DESC LIMIT 1) l ON true \
         ORDER BY v.name",
        &[VIEWS.to_vec().into()],
        |row| {
            (
                row.get("view_name"),
                row.opt("refreshed_at"),
                row.opt("age_s"),
            )
        },
    )
}

/// Hold the refresh lock until the end of the transaction, waiting at most optidb.lock_timeout.
fn take_lock() {
    locks::acquire_or_raise(Lock::Refresh, "optidb.refresh() is running");
}

fn refresh_one(view: &'static str) -> (String, bool, Option<i64>, f64, Option<String>) {
    let started = rows::value::<pgrx::datum::TimestampWithTimeZone>(
        "clock",
        "SELECT pg_catalog.clock_timestamp()",
        &[],
    );
    let clock = std::time::Instant::now();
    let qualified = format!("optidb.{view}");
    let populated = rows::value::<bool>(
        "view is populated",
        "SELECT relispopulated FROM pg_catalog.pg_class WHERE oid = $1::regclass",
        &[qualified.as_str().into()],
    )
    .unwrap_or(false);
    // CONCURRENTLY needs existing contents; the very first refresh of an empty view cannot use it.
    let sql = format!(
        "REFRESH MATERIALIZED VIEW {} {qualified}",
        if populated { "CONCURRENTLY" } else { "" }
    );
    let count_sql = format!("SELECT pg_catalog.count(*) FROM {qualified}");
    let outcome = guarded::run(Some(gucs::refresh_limit()), move || {
        Spi::run(&sql).unwrap_or_else(|e| error!("{e}"));
        rows::value::<i64>("view rows", &count_sql, &[]).unwrap_or(0)
    });
    let duration_ms = clock.elapsed().as_secs_f64() * 1000.0;
    let (rows, error) = match outcome {
        Ok(rows) => (Some(rows), None),
        Err(failure) => (None, Some(failure.to_string())),
    };
    Spi::run_with_args(
        "INSERT INTO optidb.refresh_log \
             (view_name, started_at, finished_at, duration_ms, rows, concurrent, error) \
         VALUES ($1, $2, pg_catalog.clock_timestamp(), $3, $4, $5, $6)",
        &[
            view.into(),
            started.into(),
            duration_ms.into(),
            rows.into(),
            populated.into(),
            error.clone().into(),
        ],
    )
    .unwrap_or_else(|e| error!("writing optidb.refresh_log failed: {e}"));
    if let Some(e) = &error {
        warning!("optidb.refresh(): {view} kept its previous contents: {e}");
    }
    (view.to_string(), populated, rows, duration_ms, error)
}
