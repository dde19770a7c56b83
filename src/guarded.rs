//! Run a piece of work so that its failure is a value, not an aborted transaction: the work runs
//! in an internal subtransaction (what a PL/pgSQL EXCEPTION block does) under an optional time
//! limit of its own. Used for every EXPLAIN optidb runs on a user's statement.
//!
//! The time limit is a private timeout (`RegisterTimeout(USER_TIMEOUT)`), not the
//! `statement_timeout` timer, so the caller's own statement_timeout keeps running untouched.
//! When it fires it raises a query cancel; a cancel that we did not cause (the user pressing
//! Ctrl-C, pg_cancel_backend) is re-raised, never swallowed.

use pgrx::pg_sys;
use pgrx::pg_sys::errcodes::PgSqlErrorCode;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::PgTryBuilder;
use std::panic::UnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// A time limit and the setting it comes from (named in the failure message).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Limit {
    pub ms: i32,
    pub setting: TimeoutSetting,
}

/// The settings a limit can come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TimeoutSetting {
    Statement,
    Refresh,
    RealSimulation,
    Lock,
}

impl TimeoutSetting {
    pub fn name(self) -> &'static str {
        match self {
            TimeoutSetting::Statement => "optidb.statement_timeout",
            TimeoutSetting::Refresh => "optidb.refresh_timeout",
            TimeoutSetting::RealSimulation => "optidb.real_simulation_timeout",
            TimeoutSetting::Lock => "optidb.lock_timeout",
        }
    }
}

/// Why the work did not complete. Serializable: replays report it from their own worker.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Failure {
    TimedOut {
        after_ms: i32,
        setting: TimeoutSetting,
    },
    Error {
        sqlstate: String,
        message: String,
    },
}

impl Failure {
    /// A failure optidb itself reports (not raised by PostgreSQL).
    pub fn new(sqlstate: &str, message: impl Into<String>) -> Failure {
        Failure::Error {
            sqlstate: sqlstate.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::TimedOut { after_ms, setting } => {
                write!(f, "timed out after {after_ms} ms ({})", setting.name())
            }
            Failure::Error { sqlstate, message } => write!(f, "{message} [{sqlstate}]"),
        }
    }
}

// First user-definable TimeoutId of utils/timeout.h (PG17 added TRANSACTION_TIMEOUT before it).
#[cfg(any(feature = "pg15", feature = "pg16"))]
const USER_TIMEOUT: i32 = 12;
#[cfg(feature = "pg17")]
const USER_TIMEOUT: i32 = 13;

// utils/timeout.h is not in pgrx's bindings. Calls go through pg_guard_ffi_boundary so an
// ERROR raised inside them unwinds as a Rust panic instead of longjmp-ing over Rust frames.
extern "C-unwind" {
    fn RegisterTimeout(id: i32, handler: Option<unsafe extern "C-unwind" fn()>) -> i32;
    fn enable_timeout_after(id: i32, delay_ms: i32);
    fn disable_timeout(id: i32, keep_indicator: bool);
}

/// Backend-local: each backend process registers its own timeout once.
static TIMEOUT_ID: AtomicI32 = AtomicI32::new(-1);
static FIRED: AtomicBool = AtomicBool::new(false);

/// Signal-handler context: only flag, set interrupt flags and wake the latch (like PostgreSQL's
/// StatementCancelHandler). The cancel is raised at the next CHECK_FOR_INTERRUPTS.
unsafe extern "C-unwind" fn on_timeout() {
    FIRED.store(true, Ordering::SeqCst);
    std::ptr::write_volatile(&raw mut pg_sys::InterruptPending, 1);
    std::ptr::write_volatile(&raw mut pg_sys::QueryCancelPending, 1);
    if !pg_sys::MyLatch.is_null() {
        pg_sys::SetLatch(pg_sys::MyLatch);
    }
}

fn timeout_id() -> i32 {
    let id = TIMEOUT_ID.load(Ordering::Relaxed);
    if id >= 0 {
        return id;
    }
    let id = unsafe {
        pg_sys::ffi::pg_guard_ffi_boundary(|| RegisterTimeout(USER_TIMEOUT, Some(on_timeout)))
    };
    TIMEOUT_ID.store(id, Ordering::Relaxed);
    id
}

fn disarm() -> bool {
    if let Some(id) = Some(TIMEOUT_ID.load(Ordering::Relaxed)).filter(|id| *id >= 0) {
        unsafe { pg_sys::ffi::pg_guard_ffi_boundary(|| disable_timeout(id, false)) };
    }
    let fired = FIRED.swap(false, Ordering::SeqCst);
    if fired {
        // The work may have finished before the cancel was serviced: drop our pending cancel so
        // it cannot hit whatever the caller does next.
        unsafe { std::ptr::write_volatile(&raw mut pg_sys::QueryCancelPending, 0) };
    }
    fired
}

/// Run `work` in a subtransaction, limited by `limit` when given. Errors raised inside are
/// rolled back and returned; a cancel not caused by our timeout is re-raised.
pub fn run<R>(limit: Option<Limit>, work: impl FnOnce() -> R + UnwindSafe) -> Result<R, Failure> {
    run_in_subtransaction(limit, true, work)
}

/// Like `run`, but the subtransaction is rolled back even when `work` succeeds: whatever it
/// changed (a real index built to measure it, rows an EXPLAIN ANALYZE wrote) never persists.
pub fn run_rolled_back<R>(
    limit: Option<Limit>,
    work: impl FnOnce() -> R + UnwindSafe,
) -> Result<R, Failure> {
    run_in_subtransaction(limit, false, work)
}

fn run_in_subtransaction<R>(
    limit: Option<Limit>,
    keep: bool,
    work: impl FnOnce() -> R + UnwindSafe,
) -> Result<R, Failure> {
    let (caller_cxt, caller_owner) =
        unsafe { (pg_sys::CurrentMemoryContext, pg_sys::CurrentResourceOwner) };
    unsafe {
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(caller_cxt);
    }
    if let Some(limit) = limit {
        FIRED.store(false, Ordering::SeqCst);
        let id = timeout_id();
        unsafe { pg_sys::ffi::pg_guard_ffi_boundary(|| enable_timeout_after(id, limit.ms)) };
    }

    let outcome: Result<R, Box<CaughtError>> = PgTryBuilder::new(move || Ok(work()))
        .catch_others(|caught| Err(Box::new(caught)))
        .execute();
    let fired = disarm();

    match outcome {
        Ok(value) => {
            unsafe {
                if keep {
                    pg_sys::ReleaseCurrentSubTransaction();
                } else {
                    pg_sys::RollbackAndReleaseCurrentSubTransaction();
                }
                pg_sys::MemoryContextSwitchTo(caller_cxt);
                pg_sys::CurrentResourceOwner = caller_owner;
            }
            Ok(value)
        }
        Err(caught) => {
            unsafe {
                pg_sys::MemoryContextSwitchTo(caller_cxt);
                pg_sys::RollbackAndReleaseCurrentSubTransaction();
                pg_sys::MemoryContextSwitchTo(caller_cxt);
                pg_sys::CurrentResourceOwner = caller_owner;
            }
            let report = match caught.as_ref() {
                CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => r,
                CaughtError::RustPanic { ereport, .. } => ereport,
            };
            let code = report.sql_error_code();
            if code == PgSqlErrorCode::ERRCODE_QUERY_CANCELED {
                if let (true, Some(limit)) = (fired, limit) {
                    return Err(Failure::TimedOut {
                        after_ms: limit.ms,
                        setting: limit.setting,
                    });
                }
                caught.rethrow();
            }
            Err(Failure::Error {
                sqlstate: sqlstate_text(code),
                message: report.message().to_string(),
            })
        }
    }
}

/// Run a short cleanup step that must happen even while a cancel is being raised: interrupts
/// are held (HOLD_INTERRUPTS) so a second cancel cannot cut it short, and its own failure (the
/// thing to clean up is already gone) is ignored.
pub fn cleanup(step: impl FnOnce() + UnwindSafe) {
    // Restore rather than decrement: an ERROR inside the step resets the count to zero.
    let held = unsafe { pg_sys::InterruptHoldoffCount };
    unsafe { pg_sys::InterruptHoldoffCount = held + 1 };
    let _ = run(None, step);
    unsafe { pg_sys::InterruptHoldoffCount = held };
}

/// The five-character SQLSTATE ("57014") of an error code, as PostgreSQL's unpack_sql_state does.
fn sqlstate_text(code: PgSqlErrorCode) -> String {
    let packed = code as i32;
    (0..5)
        .map(|i| (((packed >> (6 * i)) & 0x3F) as u8 + b'0') as char)
        .collect()
}
