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
}

/// Wait for `lock` (bounded only by the session's lock_timeout / statement_timeout).
pub fn acquire(lock: Lock) {
    pgrx::Spi::run_with_args(
        "SELECT pg_catalog.pg_advisory_xact_lock($1, $2)",
        &[NAMESPACE.into(), (lock as i32).into()],
    )
    .unwrap_or_else(|e| pgrx::error!("{e}"));
}
