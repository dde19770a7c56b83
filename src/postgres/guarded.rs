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
#[cfg(any(feature = "pg17", feature = "pg18"))]
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
    // SAFETY: runs on the backend's only thread, from PostgreSQL's SIGALRM handler.
    // InterruptPending and QueryCancelPending are this backend's volatile sig_atomic_t flags,
    // which PostgreSQL's own handlers (StatementCancelHandler) write from signal handlers the
    // same way. MyLatch is a plain global of this backend pointing to its latch (null only
    // before it is set up, which is checked), and SetLatch is meant to be called from signal
    // handlers: it is called directly, not through pgrx's guarded wrapper (whose thread check
    // and sigsetjmp have no place in a signal handler).
    unsafe {
        std::ptr::write_volatile(&raw mut pg_sys::InterruptPending, 1);
        std::ptr::write_volatile(&raw mut pg_sys::QueryCancelPending, 1);
        if !pg_sys::MyLatch.is_null() {
            SetLatch(pg_sys::MyLatch);
        }
    }
}

unsafe extern "C" {
    /// Async-signal-safe: sets the latch and wakes its owner; never raises.
    fn SetLatch(latch: *mut pg_sys::Latch);
}

#[allow(
    ffi_unwind_calls,
    reason = "RegisterTimeout is called inside pg_guard_ffi_boundary: an ERROR it raises comes \
              back as a Rust panic instead of longjmp-ing over Rust frames"
)]
fn timeout_id() -> i32 {
    let id = TIMEOUT_ID.load(Ordering::Relaxed);
    if id >= 0 {
        return id;
    }
    // SAFETY: on the backend's main thread (pg_guard_ffi_boundary checks it), once per backend
    // (TIMEOUT_ID caches the id), with a handler that only sets flags and the latch; the
    // closure holds nothing that needs dropping when the boundary catches an ERROR.
    let id = unsafe {
        pg_sys::ffi::pg_guard_ffi_boundary(|| RegisterTimeout(USER_TIMEOUT, Some(on_timeout)))
    };
    TIMEOUT_ID.store(id, Ordering::Relaxed);
    id
}

#[allow(
    ffi_unwind_calls,
    reason = "disable_timeout is called inside pg_guard_ffi_boundary: an ERROR it raises comes \
              back as a Rust panic instead of longjmp-ing over Rust frames"
)]
fn disarm() -> bool {
    if let Some(id) = Some(TIMEOUT_ID.load(Ordering::Relaxed)).filter(|id| *id >= 0) {
        // SAFETY: on the backend's main thread (the boundary checks it); `id` was registered
        // by this backend (timeout_id), and disabling a timeout that is not armed is a no-op.
        unsafe { pg_sys::ffi::pg_guard_ffi_boundary(|| disable_timeout(id, false)) };
    }
    let fired = FIRED.swap(false, Ordering::SeqCst);
    if fired {
        // The work may have finished before the cancel was serviced: drop our pending cancel so
        // it cannot hit whatever the caller does next.
        // SAFETY: QueryCancelPending is this backend's volatile sig_atomic_t flag; clearing it
        // with a volatile write on the backend's thread is what PostgreSQL itself does.
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

#[allow(
    ffi_unwind_calls,
    reason = "enable_timeout_after is called inside pg_guard_ffi_boundary: an ERROR it raises \
              comes back as a Rust panic instead of longjmp-ing over Rust frames"
)]
fn run_in_subtransaction<R>(
    limit: Option<Limit>,
    keep: bool,
    work: impl FnOnce() -> R + UnwindSafe,
) -> Result<R, Failure> {
    // SAFETY: plain globals of this backend, read on its only thread.
    let (caller_cxt, caller_owner) =
        unsafe { (pg_sys::CurrentMemoryContext, pg_sys::CurrentResourceOwner) };
    // SAFETY: called inside a transaction (an optidb SQL function, or a job of one of the
    // background workers, each in a transaction of its own); both calls are guarded, so an
    // ERROR becomes a Rust panic. Switching
    // back to the caller's context after BeginInternalSubTransaction (which leaves the
    // subtransaction's CurTransactionContext current) is what PL/pgSQL's exec_stmt_block does.
    unsafe {
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(caller_cxt);
    }
    if let Some(limit) = limit {
        FIRED.store(false, Ordering::SeqCst);
        let id = timeout_id();
        // SAFETY: on the backend's main thread (the boundary checks it); `id` is this
        // backend's registered timeout and `limit.ms` a delay in milliseconds.
        unsafe { pg_sys::ffi::pg_guard_ffi_boundary(|| enable_timeout_after(id, limit.ms)) };
    }

    let outcome: Result<R, Box<CaughtError>> = PgTryBuilder::new(move || Ok(work()))
        .catch_others(|caught| Err(Box::new(caught)))
        .execute();
    let fired = disarm();

    match outcome {
        Ok(value) => {
            // SAFETY: `work` returned normally, so the subtransaction begun above is the
            // current one again (anything it opened inside was closed); releasing or rolling it
            // back and then restoring the caller's memory context and resource owner is what
            // PL/pgSQL does at the end of a block with an EXCEPTION clause. Guarded calls.
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
            // SAFETY: the ERROR was caught (pgrx copied and flushed it), so the subtransaction
            // begun above is the one to abort; switching to the caller's context, rolling back
            // and then restoring the caller's memory context and resource owner is PL/pgSQL's
            // exception path. Guarded calls.
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
    // SAFETY: InterruptHoldoffCount is a plain global of this backend, only read and written
    // on its one thread (signal handlers never touch it).
    let held = unsafe { pg_sys::InterruptHoldoffCount };
    // SAFETY: as above; this is HOLD_INTERRUPTS().
    unsafe { pg_sys::InterruptHoldoffCount = held + 1 };
    let _ = run(None, step);
    // SAFETY: as above; puts back the count saved before HOLD_INTERRUPTS().
    unsafe { pg_sys::InterruptHoldoffCount = held };
}

/// The five-character SQLSTATE ("57014") of an error code, as PostgreSQL's unpack_sql_state does.
fn sqlstate_text(code: PgSqlErrorCode) -> String {
    let packed = code as i32;
    (0..5)
        .map(|i| (((packed >> (6 * i)) & 0x3F) as u8 + b'0') as char)
        .collect()
}
