//! SIGTERM in optidb's background workers, handled as PostgreSQL handles it in a backend
//! (`die`): the handler only sets ProcDiePending and wakes the latch, and the process ends
//! (FATAL) at its next CHECK_FOR_INTERRUPTS, whatever it is doing (planning, executing, waiting
//! for a lock or a latch), with its transaction aborted. Used by the main worker (src/postgres/
//! worker.rs: a job ends at once instead of running to its end) and by the replay workers
//! (src/postgres/replay_worker.rs: the budget, the real-mode deadline and a canceled caller end
//! them).
//!
//! Neither alternative will do: pgrx's flag handler is only looked at where the worker's own
//! loop checks it, between jobs; PostgreSQL's default handler for background workers
//! (bgworker_die) raises FATAL inside the signal handler, which a statement caught in a
//! critical section (writing WAL) turns into a PANIC that restarts the whole server.

use pgrx::pg_sys;

/// Install `die` as this process's SIGTERM handler.
///
/// # Safety
/// At worker start, before signals are unblocked (BackgroundWorkerUnblockSignals).
pub unsafe fn set_sigterm_handler() {
    const SIGTERM: std::ffi::c_int = 15;
    // The handler itself, not pgrx's guarded wrapper of it: a signal handler must be the C one.
    unsafe extern "C-unwind" {
        fn die(signal: std::ffi::c_int);
    }
    // SAFETY: installs PostgreSQL's own handler for this process's SIGTERM.
    unsafe {
        #[cfg(not(feature = "pg18"))]
        pg_sys::pqsignal(SIGTERM, Some(die));
        #[cfg(feature = "pg18")]
        pg_sys::pqsignal_be(SIGTERM, Some(die));
    }
}

/// A SIGTERM arrived and was not acted on yet (`die` set ProcDiePending).
pub fn termination_pending() -> bool {
    // SAFETY: ProcDiePending is this backend's volatile sig_atomic_t flag, which `die` sets from
    // the signal handler; a volatile read on the backend's only thread is what
    // CHECK_FOR_INTERRUPTS does.
    unsafe { std::ptr::read_volatile(&raw const pg_sys::ProcDiePending) != 0 }
}
