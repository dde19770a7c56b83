//! How deep this backend is in statements run by other statements, so that only top-level
//! statements are recorded (unless optidb.track_nested is on). Utility statements count as a
//! level too, so statements run by DO blocks, CALL or CREATE EXTENSION scripts are nested, as
//! in pg_stat_statements.
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

use super::raw;
use pgrx::pg_sys::{self, SubTransactionId, SubXactEvent, XactEvent};
use pgrx::prelude::*;
use std::ffi::c_void;

static mut EXECUTOR: i32 = 0;
static mut UTILITY: i32 = 0;
/// (subtransaction, executor level when it started), innermost last.
static mut SAVED: Vec<(SubTransactionId, i32)> = Vec::new();

/// The backend's one thread is the only user of SAVED.
fn saved() -> &'static mut Vec<(SubTransactionId, i32)> {
    unsafe { &mut *std::ptr::addr_of_mut!(SAVED) }
}

/// 0 while running a top-level statement.
pub fn level() -> i32 {
    unsafe { EXECUTOR + UTILITY }
}

/// Run `f` (an executor call) one level deeper.
pub unsafe fn in_executor(f: impl FnOnce()) {
    EXECUTOR += 1;
    f();
    EXECUTOR -= 1;
}

/// Run `f` (utility processing) one level deeper, restoring the level however it ends.
///
/// # Safety
/// As `raw::with_finally`.
pub unsafe fn in_utility(f: impl FnOnce()) {
    UTILITY += 1;
    raw::with_finally(f, || UTILITY -= 1);
}

/// From _PG_init: the callbacks are inherited by every backend.
pub unsafe fn register() {
    pg_sys::RegisterXactCallback(Some(transaction_ended), std::ptr::null_mut());
    pg_sys::RegisterSubXactCallback(Some(subtransaction_event), std::ptr::null_mut());
}

#[pg_guard]
unsafe extern "C-unwind" fn transaction_ended(event: XactEvent::Type, _arg: *mut c_void) {
    if matches!(
        event,
        XactEvent::XACT_EVENT_COMMIT
            | XactEvent::XACT_EVENT_PARALLEL_COMMIT
            | XactEvent::XACT_EVENT_ABORT
            | XactEvent::XACT_EVENT_PARALLEL_ABORT
            | XactEvent::XACT_EVENT_PREPARE
    ) {
        EXECUTOR = 0;
        saved().clear();
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn subtransaction_event(
    event: SubXactEvent::Type,
    subid: SubTransactionId,
    _parent: SubTransactionId,
    _arg: *mut c_void,
) {
    let saved = saved();
    match event {
        SubXactEvent::SUBXACT_EVENT_START_SUB => saved.push((subid, EXECUTOR)),
        SubXactEvent::SUBXACT_EVENT_COMMIT_SUB | SubXactEvent::SUBXACT_EVENT_ABORT_SUB => {
            while let Some(&(id, executor)) = saved.last() {
                if id < subid {
                    break;
                }
                if id == subid && event == SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
                    EXECUTOR = executor;
                }
                saved.pop();
            }
        }
        _ => {}
    }
}
