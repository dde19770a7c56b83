//! optidb's own statements are not workload. While an optidb function runs its SQL (catalog
//! reads, the EXPLAINs it replays, view refreshes), two things are switched off by construction:
//! - pg_stat_statements' tracking (`pg_stat_statements.track = none` at a GUC level of our own),
//!   so with `track = all` none of it lands in pg_stat_statements, hence never in optidb.query;
//! - optidb's own statement hooks (`active()`), so `optidb.track_nested` does not time it.
//!
//! A top-level statement that calls optidb (`SELECT * FROM optidb.scan()`) is recognised from
//! its parse tree instead (optidb_core::statement: `touches_optidb`).

use crate::postgres::settings::{self, Setting};
use pgrx::prelude::*;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU32, Ordering};

const PGSS_TRACK: &str = "pg_stat_statements.track";

/// How many optidb functions are running in this backend (they can nest: scan() runs advice).
static DEPTH: AtomicU32 = AtomicU32::new(0);

/// True while optidb runs its own work in this backend. Read by the statement hooks on every
/// statement: one relaxed load.
pub fn active() -> bool {
    DEPTH.load(Ordering::Relaxed) > 0
}

/// Run `work` (the body of an optidb SQL function) as optidb's own work.
pub fn run<R>(work: impl FnOnce() -> R) -> R {
    DEPTH.fetch_add(1, Ordering::Relaxed);
    PgTryBuilder::new(AssertUnwindSafe(|| {
        if settings::exists(PGSS_TRACK) {
            settings::with(&[Setting::internal(PGSS_TRACK, "none")], work)
        } else {
            work()
        }
    }))
    .finally(|| {
        DEPTH.fetch_sub(1, Ordering::Relaxed);
    })
    .execute()
}
