//! How deep this backend is in statements run by other statements, so that only top-level
//! statements are recorded (unless optidb.track_nested is on), exactly as pg_stat_statements
//! counts levels: every executor run and every utility statement is a level, except EXECUTE,
//! PREPARE and DEALLOCATE (the statement an EXECUTE runs is the top-level one).
//!
//! An ERROR can leave a level without returning through the hook that entered it, so every
//! level must be restored on error. pg_stat_statements wraps each executor call in
//! PG_TRY/PG_FINALLY; a sigsetjmp per ExecutorRun and ExecutorFinish was an eighth of
//! optidb's per-statement cost, so the two kinds of level are restored differently:
//! - utility levels (rare, expensive statements) with `raw::with_finally`;
//! - executor levels from transaction callbacks, at no cost per statement: an error inside the
//!   executor is either caught by a subtransaction (PL/pgSQL EXCEPTION blocks, savepoints), whose
//!   abort restores the level saved when it started, or ends the transaction, and no
//!   transaction ends inside the executor (COMMIT and ROLLBACK are only allowed in procedures
//!   and DO blocks, between statements), so the executor level is 0 at every transaction end.
//!
//! The same callbacks tell failures.rs when a statement in flight was aborted.

use super::{failures, raw};
use crate::postgres::backend_local::BackendLocal;
use pgrx::pg_sys::{self, SubTransactionId, SubXactEvent, XactEvent};
use pgrx::prelude::*;
use std::ffi::c_void;

static EXECUTOR: BackendLocal<i32> = BackendLocal::new(0);
static UTILITY: BackendLocal<i32> = BackendLocal::new(0);
/// The subtransaction statements run in now (TopSubTransactionId = 1 outside any), kept from
/// the callbacks so the hooks read it without a call into PostgreSQL.
static SUBTRANSACTION: BackendLocal<SubTransactionId> = BackendLocal::new(1);

/// The current subtransaction's id.
#[inline]
pub fn current_subtransaction() -> SubTransactionId {
    SUBTRANSACTION.get()
}

/// (subtransaction, executor level when it started), innermost last. Subtransactions nest
/// only a few deep in practice.
struct Saved(std::cell::RefCell<Vec<(SubTransactionId, i32)>>);
// SAFETY: as BackendLocal: a backend runs optidb's code on one thread.
unsafe impl Sync for Saved {}
static SAVED: Saved = Saved(std::cell::RefCell::new(Vec::new()));

/// 0 while running a top-level statement.
#[inline]
pub fn level() -> i32 {
    EXECUTOR.get() + UTILITY.get()
}

/// Run `f` (an executor call) one level deeper. Restored by the transaction callbacks when
/// an ERROR leaves it (see the module comment).
#[inline]
pub fn in_executor(f: impl FnOnce()) {
    EXECUTOR.set(EXECUTOR.get() + 1);
    f();
    EXECUTOR.set(EXECUTOR.get() - 1);
}

/// Run `f` (utility processing) one level deeper, restoring the level however it ends.
///
/// # Safety
/// As `raw::with_finally`.
pub unsafe fn in_utility(f: impl FnOnce()) {
    UTILITY.set(UTILITY.get() + 1);
    // SAFETY: forwarded to the caller.
    unsafe { raw::with_finally(f, || UTILITY.set(UTILITY.get() - 1)) };
}

/// From _PG_init: the callbacks are inherited by every backend.
pub fn register() {
    // SAFETY: plain registrations, done once per process.
    unsafe {
        pg_sys::RegisterXactCallback(Some(transaction_event), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(subtransaction_event), std::ptr::null_mut());
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn transaction_event(event: XactEvent::Type, _arg: *mut c_void) {
    match event {
        XactEvent::XACT_EVENT_ABORT | XactEvent::XACT_EVENT_PARALLEL_ABORT => {
            failures::transaction_aborted();
            ended();
        }
        XactEvent::XACT_EVENT_COMMIT
        | XactEvent::XACT_EVENT_PARALLEL_COMMIT
        | XactEvent::XACT_EVENT_PREPARE => ended(),
        _ => {}
    }
}

fn ended() {
    EXECUTOR.set(0);
    SUBTRANSACTION.set(1);
    SAVED.0.borrow_mut().clear();
}

#[pg_guard]
unsafe extern "C-unwind" fn subtransaction_event(
    event: SubXactEvent::Type,
    subid: SubTransactionId,
    parent: SubTransactionId,
    _arg: *mut c_void,
) {
    let mut saved = SAVED.0.borrow_mut();
    match event {
        SubXactEvent::SUBXACT_EVENT_START_SUB => {
            saved.push((subid, EXECUTOR.get()));
            SUBTRANSACTION.set(subid);
        }
        SubXactEvent::SUBXACT_EVENT_COMMIT_SUB | SubXactEvent::SUBXACT_EVENT_ABORT_SUB => {
            let abort = event == SubXactEvent::SUBXACT_EVENT_ABORT_SUB;
            while let Some(&(id, executor)) = saved.last() {
                if id < subid {
                    break;
                }
                if id == subid && abort {
                    EXECUTOR.set(executor);
                }
                saved.pop();
            }
            drop(saved);
            SUBTRANSACTION.set(parent);
            if abort {
                failures::subtransaction_aborted(subid);
            }
        }
        _ => {}
    }
}
