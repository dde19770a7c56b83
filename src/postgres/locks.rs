//! optidb's job locks: row locks on `optidb.job_lock`, held until the transaction ends.
//!
//! Row locks rather than advisory locks: any role may take any advisory lock key, so a reader
//! could stall every scan and refresh, or use up the real-simulation slots, by holding
//! optidb's keys. Locking a row of optidb.job_lock needs UPDATE on it, which only its owner
//! has: optidb's SECURITY DEFINER functions (and superusers). Waits are bounded by
//! optidb.lock_timeout.

use crate::postgres::guarded::{self, Failure};
use crate::postgres::gucs;
use crate::postgres::settings::{self, Setting};
use pgrx::prelude::*;

#[derive(Clone, Copy)]
pub enum Lock {
    /// One optidb.refresh() at a time.
    Refresh,
    /// One snapshot or scan per database at a time: two concurrent ones would both compute
    /// deltas from the same baseline and count the same executions twice.
    Snapshot,
    /// One of optidb.max_concurrent_simulations slots for real simulations.
    RealSimulation(i32),
    /// One alert evaluation at a time: two would both fire the same incident.
    Alerts,
    /// One history compaction at a time (src/postgres/compaction.rs); taken with try_acquire,
    /// apart from Snapshot, so a snapshot never waits for another pass's compaction.
    Compaction,
}

impl Lock {
    fn name(self) -> String {
        match self {
            Lock::Refresh => "refresh".into(),
            Lock::Snapshot => "snapshot".into(),
            Lock::Alerts => "alerts".into(),
            Lock::Compaction => "compaction".into(),
            Lock::RealSimulation(slot) => format!("real_simulation_{slot}"),
        }
    }
}

/// Wait for `lock`, at most optidb.lock_timeout. The wait runs in a subtransaction so a
/// timeout is a value, not an aborted transaction; the lock stays with the transaction.
pub fn acquire(lock: Lock) -> Result<(), Failure> {
    let name = lock.name();
    let timeout = format!("{}ms", gucs::lock_timeout_ms());
    guarded::run(None, || {
        settings::with(&[Setting::user("lock_timeout", &timeout)], || {
            ensure_row(&name);
            Spi::run_with_args(
                "SELECT 1 FROM optidb.job_lock WHERE name = $1 FOR UPDATE",
                &[name.as_str().into()],
            )
            .unwrap_or_else(|e| error!("{e}"));
        })
    })
}

/// `acquire`, or raise 55P03 saying `another {busy} (...)`, e.g. busy = "optidb.refresh() is
/// running": what the SQL functions that take a job lock say when they time out.
pub fn acquire_or_raise(lock: Lock, busy: &str) {
    if let Err(failure) = acquire(lock) {
        crate::postgres::errors::raise(
            PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE,
            format!("another {busy} ({failure})"),
            Some("Retry when it has finished, or raise optidb.lock_timeout to wait longer."),
        );
    }
}

/// Take `lock` if nobody holds it; held until the transaction ends.
pub fn try_acquire(lock: Lock) -> bool {
    let name = lock.name();
    ensure_row(&name);
    Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM optidb.job_lock WHERE name = $1 FOR UPDATE SKIP LOCKED)",
        &[name.as_str().into()],
    )
    .unwrap_or_else(|e| error!("{e}"))
    .unwrap_or(false)
}

fn ensure_row(name: &str) {
    Spi::run_with_args(
        "INSERT INTO optidb.job_lock (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
        &[name.into()],
    )
    .unwrap_or_else(|e| error!("{e}"));
}
