//! Failure counting that sees every failed top-level statement, whatever `log_min_messages`
//! says (emit_log_hook only runs for errors that go to the server log).
//!
//! - The top-level statement in flight (planned, started or run as a utility, not yet ended) is
//!   remembered with the subtransaction it started in.
//! - While optidb's hooks run such a statement, an error context callback is on
//!   `error_context_stack`: PostgreSQL calls it for every error raised inside, before unwinding,
//!   so it notes the SQLSTATE (notices and warnings, classes 00 and 01, are ignored) and, at
//!   the statement's first error, the schemas of its search_path.
//! - When the transaction aborts, or the subtransaction the statement started in aborts, with
//!   an error noted, the statement failed: one failure of its class in the latency table, and
//!   its text, search_path, SQLSTATE and time until failure in failed.rs (a cancel is
//!   statement_timeout's when that timeout fired). An error caught inside the
//!   statement (a PL/pgSQL EXCEPTION block: the abort of a subtransaction started after it) is
//!   forgotten, so a ROLLBACK a procedure issues afterwards is not a failure.
//!
//! Not counted: errors before a statement is planned (syntax, unknown table: there is no
//! queryid yet), errors raised at commit of an implicit transaction after the statement ended,
//! and statements of a backend that is being terminated.

use super::failed::{self, Failure, PATH_SCHEMAS};
use super::raw;
use super::table::{self, Key};
use crate::postgres::backend_local::BackendLocal;
use pgrx::pg_sys;

/// Where the statement's text is: PostgreSQL's source text and the statement's place in it.
/// Read only when the statement fails, while its source text is still alive (the abort runs
/// before the message's or portal's memory is released).
#[derive(Clone, Copy)]
pub struct Source {
    pub text: *const std::ffi::c_char,
    pub location: i32,
    pub len: i32,
}

#[derive(Clone, Copy)]
struct InFlight {
    key: Key,
    subtransaction: pg_sys::SubTransactionId,
    source: Source,
}

static IN_FLIGHT: BackendLocal<Option<InFlight>> = BackendLocal::new(None);
/// SQLSTATE (packed) of an error raised while the statement in flight ran, not caught inside.
static ERROR_CODE: BackendLocal<Option<i32>> = BackendLocal::new(None);
/// The search_path's schemas when that error was raised (count, OIDs).
static ERROR_PATH: BackendLocal<(usize, [u32; PATH_SCHEMAS])> =
    BackendLocal::new((0, [0; PATH_SCHEMAS]));
/// When statement_timeout started counting, if that error is its cancel.
static TIMED_OUT_SINCE: BackendLocal<Option<i64>> = BackendLocal::new(None);

/// The error context callback that notes errors. Static: it is on the stack at most once
/// (`watching` checks), and only ever while a top-level statement runs.
static mut CALLBACK: pg_sys::ErrorContextCallback = pg_sys::ErrorContextCallback {
    previous: std::ptr::null_mut(),
    callback: Some(on_error),
    arg: std::ptr::null_mut(),
};

/// `key` is now the statement in flight (a new one replaces an older one).
pub fn begin(key: Key, source: Source) {
    let subtransaction = super::nesting::current_subtransaction();
    IN_FLIGHT.set(Some(InFlight {
        key,
        subtransaction,
        source,
    }));
    ERROR_CODE.set(None);
    TIMED_OUT_SINCE.set(None);
}

/// `key` ended normally.
pub fn end(key: Key) {
    if IN_FLIGHT.get().is_some_and(|f| f.key == key) {
        IN_FLIGHT.set(None);
        ERROR_CODE.set(None);
    }
}

/// The statement in flight with this queryid ended normally: its key (as `begin` got it).
pub fn finished(queryid: u64) -> Option<Key> {
    let f = IN_FLIGHT.get().filter(|f| f.key.queryid == queryid)?;
    IN_FLIGHT.set(None);
    ERROR_CODE.set(None);
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
    let code = unsafe { raw::geterrcode() };
    let class = (code & 0xFFF) as u32;
    let (c1, c2) = (class & 0x3F, (class >> 6) & 0x3F);
    let success_or_warning = c1 == 0 && (c2 == 0 || c2 == 1); // "00", "01"
    if !success_or_warning && IN_FLIGHT.get().is_some() {
        if ERROR_CODE.get().is_none() {
            // The first error of the statement: the transaction is still usable, so the
            // search_path can be read now (not at abort).
            let mut oids = [0; PATH_SCHEMAS];
            let n = failed::current_path(&mut oids);
            ERROR_PATH.set((n, oids));
        }
        ERROR_CODE.set(Some(code));
        TIMED_OUT_SINCE.set(timed_out_since(code));
    }
}

/// For a cancel (57014) raised by statement_timeout, when the timeout started counting. Read
/// while the error is raised: the error recovery disarms every timeout before the abort. A
/// cancel with the timeout still armed is someone else's (pg_cancel_backend, a client).
#[allow(
    ffi_unwind_calls,
    reason = "get_timeout_active and get_timeout_start_time only read the timeout table"
)]
fn timed_out_since(code: i32) -> Option<i64> {
    // SAFETY: the setting's variable and plain reads of this backend's timeout table.
    unsafe {
        (code == failed::QUERY_CANCELED
            && pg_sys::StatementTimeout > 0
            && !raw::get_timeout_active(raw::STATEMENT_TIMEOUT))
        .then(|| raw::get_timeout_start_time(raw::STATEMENT_TIMEOUT))
    }
}

/// The transaction aborted (from the transaction callback).
pub fn transaction_aborted() {
    if let (Some(f), Some(code)) = (IN_FLIGHT.replace(None), ERROR_CODE.replace(None)) {
        count(f, code);
    }
}

/// Subtransaction `id` aborted (from the subtransaction callback).
pub fn subtransaction_aborted(id: pg_sys::SubTransactionId) {
    let Some(f) = IN_FLIGHT.get() else { return };
    if id == f.subtransaction {
        // The statement ran in this subtransaction (after a SAVEPOINT) and it is rolled back.
        if let Some(code) = ERROR_CODE.replace(None) {
            IN_FLIGHT.set(None);
            count(f, code);
        }
    } else if id > f.subtransaction {
        // Started inside the statement (an EXCEPTION block): the error was caught there.
        ERROR_CODE.set(None);
    }
}

fn count(f: InFlight, code: i32) {
    // SAFETY: a flag PostgreSQL sets before running exit callbacks.
    if unsafe { pg_sys::proc_exit_inprogress } {
        return;
    }
    let class = match (code & 0xFFF) as u32 {
        0 => table::UNKNOWN_CLASS,
        class => class,
    };
    let (path_len, path) = ERROR_PATH.replace((0, [0; PATH_SCHEMAS]));
    super::hooks::contained(|| {
        table::record_failure(f.key, class);
        keep_failed(f, code, &path[..path_len]);
    });
}

/// Keep what is needed to show and replay the failed statement (failed.rs).
#[allow(
    ffi_unwind_calls,
    reason = "GetCurrentTimestamp and GetCurrentStatementStartTimestamp only read the clock and \
              a backend global; neither raises"
)]
fn keep_failed(f: InFlight, code: i32, path: &[u32]) {
    // SAFETY: plain reads of the clock and of the current statement's start; the source text
    // is alive until the aborted statement's memory is released, after this callback.
    let (now, started, text) = unsafe {
        (
            raw::GetCurrentTimestamp(),
            raw::GetCurrentStatementStartTimestamp(),
            super::hooks::source_text(f.source.text, f.source.location, f.source.len),
        )
    };
    // A statement_timeout counts from the first message of an extended-protocol execution
    // (Parse or Bind), the statement's start from its Execute.
    let timed_out = TIMED_OUT_SINCE.replace(None);
    let since = timed_out.map_or(started, |t| t.min(started));
    let elapsed_us = (now - since).max(0);
    let replayable = text
        .as_ref()
        .is_some_and(|t| t.replayable && super::samples::standard_strings());
    failed::record(
        f.key,
        &Failure {
            sqlstate: code,
            elapsed_us,
            timed_out: timed_out.is_some(),
            started_us: started,
            text: text.as_ref().map(|t| t.shown.as_str()),
            replayable,
            path_oids: path,
        },
    );
}
