//! Failure counting that sees every failed top-level statement, whatever `log_min_messages`
//! says (emit_log_hook only runs for errors that go to the server log).
//!
//! - The top-level statement in flight (planned, started or run as a utility, not yet ended) is
//!   remembered with the subtransaction it started in.
//! - While optidb's hooks run such a statement, an error context callback is on
//!   `error_context_stack`: PostgreSQL calls it for every error raised inside, before unwinding,
//!   so it notes the SQLSTATE class (notices and warnings, classes 00 and 01, are ignored).
//! - When the transaction aborts, or the subtransaction the statement started in aborts, with
//!   an error noted, the statement failed: one failure of its class. An error caught inside the
//!   statement (a PL/pgSQL EXCEPTION block: the abort of a subtransaction started after it) is
//!   forgotten, so a ROLLBACK a procedure issues afterwards is not a failure.
//!
//! Not counted: errors before a statement is planned (syntax, unknown table: there is no
//! queryid yet), errors raised at commit of an implicit transaction after the statement ended,
//! and statements of a backend that is being terminated.

use super::raw;
use super::table::{self, Key};
use crate::postgres::backend_local::BackendLocal;
use pgrx::pg_sys;

#[derive(Clone, Copy)]
struct InFlight {
    key: Key,
    subtransaction: pg_sys::SubTransactionId,
}

static IN_FLIGHT: BackendLocal<Option<InFlight>> = BackendLocal::new(None);
/// SQLSTATE class of an error raised while the statement in flight ran, not caught inside.
static ERROR_CLASS: BackendLocal<Option<u32>> = BackendLocal::new(None);

/// The error context callback that notes errors. Static: it is on the stack at most once
/// (`watching` checks), and only ever while a top-level statement runs.
static mut CALLBACK: pg_sys::ErrorContextCallback = pg_sys::ErrorContextCallback {
    previous: std::ptr::null_mut(),
    callback: Some(on_error),
    arg: std::ptr::null_mut(),
};

/// `key` is now the statement in flight (a new one replaces an older one).
pub fn begin(key: Key) {
    let subtransaction = super::nesting::current_subtransaction();
    IN_FLIGHT.set(Some(InFlight {
        key,
        subtransaction,
    }));
    ERROR_CLASS.set(None);
}

/// `key` ended normally.
pub fn end(key: Key) {
    if IN_FLIGHT.get().is_some_and(|f| f.key == key) {
        IN_FLIGHT.set(None);
        ERROR_CLASS.set(None);
    }
}

/// The statement in flight with this queryid ended normally: its key (as `begin` got it).
pub fn finished(queryid: u64) -> Option<Key> {
    let f = IN_FLIGHT.get().filter(|f| f.key.queryid == queryid)?;
    IN_FLIGHT.set(None);
    ERROR_CLASS.set(None);
    Some(f.key)
}

/// Run `call` (a hook's call into PostgreSQL for the statement in flight) with the callback on
/// the error context stack.
///
/// # Safety
/// As `raw::with_finally`: `call` holds nothing that needs dropping when an ERROR longjmps out.
/// On a longjmp the catcher restores `error_context_stack` to its own saved value.
pub unsafe fn watching(call: impl FnOnce()) {
    // SAFETY: single-threaded backend; the callback struct is static and pushed at most once:
    // a watched call can run inside another (a function folded while planning plans its own
    // queries), so the whole stack is searched, not just its top.
    unsafe {
        let me = &raw mut CALLBACK;
        let mut link = pg_sys::error_context_stack;
        while !link.is_null() {
            if link == me {
                return call();
            }
            link = (*link).previous;
        }
        (*me).previous = pg_sys::error_context_stack;
        pg_sys::error_context_stack = me;
        call();
        pg_sys::error_context_stack = (*me).previous;
    }
}

/// Called by PostgreSQL for every message reported while `watching`; must not raise.
#[allow(
    ffi_unwind_calls,
    reason = "geterrcode only reads the error being reported; called from an error context \
              callback, with that error on the stack, it never raises"
)]
unsafe extern "C-unwind" fn on_error(_arg: *mut std::ffi::c_void) {
    // SAFETY: geterrcode is meant to be called from error context callbacks.
    let class = (unsafe { raw::geterrcode() } & 0xFFF) as u32;
    let (c1, c2) = (class & 0x3F, (class >> 6) & 0x3F);
    let success_or_warning = c1 == 0 && (c2 == 0 || c2 == 1); // "00", "01"
    if !success_or_warning && IN_FLIGHT.get().is_some() {
        ERROR_CLASS.set(Some(class));
    }
}

/// The transaction aborted (from the transaction callback).
pub fn transaction_aborted() {
    if let (Some(f), Some(class)) = (IN_FLIGHT.replace(None), ERROR_CLASS.replace(None)) {
        count(f.key, class);
    }
}

/// Subtransaction `id` aborted (from the subtransaction callback).
pub fn subtransaction_aborted(id: pg_sys::SubTransactionId) {
    let Some(f) = IN_FLIGHT.get() else { return };
    if id == f.subtransaction {
        // The statement ran in this subtransaction (after a SAVEPOINT) and it is rolled back.
        if let Some(class) = ERROR_CLASS.replace(None) {
            IN_FLIGHT.set(None);
            count(f.key, class);
        }
    } else if id > f.subtransaction {
        // Started inside the statement (an EXCEPTION block): the error was caught there.
        ERROR_CLASS.set(None);
    }
}

fn count(key: Key, class: u32) {
    // SAFETY: a flag PostgreSQL sets before running exit callbacks.
    if unsafe { pg_sys::proc_exit_inprogress } {
        return;
    }
    let class = if class == 0 {
        table::UNKNOWN_CLASS
    } else {
        class
    };
    super::hooks::contained(|| {
        table::record_failure(key, class);
    });
}
