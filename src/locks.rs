//! optidb's advisory locks: two-int keys under one namespace, held until the transaction ends.

/// "opti": the first key of every optidb advisory lock.
const NAMESPACE: i32 = 0x6f70_7469;

#[derive(Clone, Copy)]
pub enum Lock {
    /// One optidb.refresh() at a time.
    Refresh = 1,
    /// One snapshot or scan per database at a time: two concurrent ones would both compute
    /// deltas from the same baseline and count the same executions twice.
    Snapshot = 2,
    /// Slots of optidb.max_concurrent_simulations: keys from 1000 on, one per slot.
    RealSimulation = 1000,
}

/// Wait for `lock` (bounded only by the session's lock_timeout / statement_timeout).
pub fn acquire(lock: Lock) {
    pgrx::Spi::run_with_args(
        "SELECT pg_catalog.pg_advisory_xact_lock($1, $2)",
        &[NAMESPACE.into(), (lock as i32).into()],
    )
    .unwrap_or_else(|e| pgrx::error!("{e}"));
}

/// Take `lock`'s `slot` (added to its key) if nobody holds it; held until the transaction ends.
pub fn try_acquire(lock: Lock, slot: i32) -> bool {
    pgrx::Spi::get_one_with_args::<bool>(
        "SELECT pg_catalog.pg_try_advisory_xact_lock($1, $2)",
        &[NAMESPACE.into(), (lock as i32 + slot).into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false)
}
