//! Unguarded declarations of the PostgreSQL functions the per-statement hooks call, and a
//! PG_TRY/PG_FINALLY equivalent.
//!
//! pgrx wraps every `pg_sys` function in `pg_guard_ffi_boundary`, which catches an ERROR, copies
//! part of it, flushes it and re-raises the copy from Rust later. In a hook every statement
//! passes through, that is wrong twice: the copy drops fields clients rely on (schema, table and
//! constraint names of a unique violation, the error context), and the sigsetjmp plus thread
//! check per call is most of optidb's per-statement cost. The hooks therefore call these
//! declarations directly, so an ERROR raised below them travels exactly as PostgreSQL raised it.
//!
//! Rule for every Rust frame an ERROR may longjmp over (a hook calling one of these): it holds
//! nothing that needs dropping and is not inside `catch_unwind`, like a C frame.
//!
//! The functions used inside a hold of optidb's LWLocks (hash_*, LWLock*) report failure by
//! return value and never raise.

use pgrx::pg_sys::{
    self, DestReceiver, Instrumentation, LWLock, LWLockMode, Oid, ParamListInfo, PlannedStmt,
    ProcessUtilityContext, Query, QueryCompletion, QueryDesc, QueryEnvironment, ScanDirection,
    HASHACTION, HASH_SEQ_STATUS, HTAB,
};
use std::ffi::{c_char, c_int, c_long, c_void};

unsafe extern "C-unwind" {
    pub fn standard_planner(
        parse: *mut Query,
        query_string: *const c_char,
        cursor_options: c_int,
        bound_params: ParamListInfo,
    ) -> *mut PlannedStmt;
    pub fn standard_ExecutorStart(query_desc: *mut QueryDesc, eflags: c_int);
    #[cfg(not(feature = "pg18"))]
    pub fn standard_ExecutorRun(
        query_desc: *mut QueryDesc,
        direction: ScanDirection::Type,
        count: u64,
        execute_once: bool,
    );
    #[cfg(feature = "pg18")]
    pub fn standard_ExecutorRun(
        query_desc: *mut QueryDesc,
        direction: ScanDirection::Type,
        count: u64,
    );
    pub fn standard_ExecutorFinish(query_desc: *mut QueryDesc);
    pub fn standard_ExecutorEnd(query_desc: *mut QueryDesc);
    #[allow(clippy::too_many_arguments)]
    pub fn standard_ProcessUtility(
        pstmt: *mut PlannedStmt,
        query_string: *const c_char,
        read_only_tree: bool,
        context: ProcessUtilityContext::Type,
        params: ParamListInfo,
        query_env: *mut QueryEnvironment,
        dest: *mut DestReceiver,
        qc: *mut QueryCompletion,
    );
    pub fn InstrAlloc(
        n: c_int,
        instrument_options: c_int,
        async_mode: bool,
    ) -> *mut Instrumentation;
    pub fn InstrEndLoop(instr: *mut Instrumentation);
    pub fn GetUserId() -> Oid;
    pub fn GetCurrentStatementStartTimestamp() -> i64;
    pub fn GetCurrentTimestamp() -> i64;
    /// Whether a timeout (utils/timeout.h's TimeoutId, an enum passed as int) is armed.
    pub fn get_timeout_active(id: c_int) -> bool;
    /// When a timeout was last armed.
    pub fn get_timeout_start_time(id: c_int) -> i64;
    /// The schemas of the search path (computed when the statement looked its names up).
    pub fn fetch_search_path_array(sarray: *mut Oid, sarray_len: c_int) -> c_int;
    /// The SQLSTATE of the error being reported; only valid inside an error context callback.
    pub fn geterrcode() -> c_int;
    #[cfg(feature = "pg15")]
    /// What PostgreSQL 15 hashes a utility statement's text with to make its queryid.
    pub fn hash_bytes_extended(k: *const u8, keylen: c_int, seed: u64) -> u64;
    #[cfg(feature = "pg15")]
    pub fn CleanQuerytext(
        query: *const c_char,
        location: *mut c_int,
        len: *mut c_int,
    ) -> *const c_char;
    pub fn LWLockAcquire(lock: *mut LWLock, mode: LWLockMode::Type) -> bool;
    pub fn LWLockRelease(lock: *mut LWLock);
    /// With HASH_FIND or HASH_REMOVE, or HASH_ENTER_NULL on a shared table, it reports failure
    /// by returning NULL instead of raising.
    pub fn hash_search(
        hashp: *mut HTAB,
        key: *const c_void,
        action: HASHACTION::Type,
        found: *mut bool,
    ) -> *mut c_void;
    pub fn hash_seq_init(status: *mut HASH_SEQ_STATUS, hashp: *mut HTAB);
    pub fn hash_seq_search(status: *mut HASH_SEQ_STATUS) -> *mut c_void;
    pub fn hash_get_num_entries(hashp: *mut HTAB) -> c_long;
    fn pg_re_throw() -> !;
}

/// utils/timeout.h: STATEMENT_TIMEOUT's place in TimeoutId (the same in PostgreSQL 15 to 18).
pub const STATEMENT_TIMEOUT: c_int = 3;

/// Run `call` (a call into PostgreSQL) and then `always`, however `call` ends: an ERROR raised
/// inside is caught, `always` runs, and the very same error is re-thrown (PG_TRY/PG_FINALLY).
///
/// # Safety
/// `call` must hold nothing that needs dropping when an ERROR longjmps out of it.
#[allow(
    ffi_unwind_calls,
    reason = "pg_re_throw re-raises the caught ERROR unchanged, as PG_FINALLY does: it longjmps \
              over this frame, which by then holds nothing to drop (`call` and `always` were \
              consumed, the rest are raw pointers and integers)"
)]
pub unsafe fn with_finally(call: impl FnOnce(), always: impl FnOnce()) {
    // SAFETY: the jump buffer lives in this frame for the whole call; PostgreSQL's exception
    // stack and error context are restored before anything else runs, as PG_TRY does.
    unsafe {
        let saved_stack = pg_sys::PG_exception_stack;
        let saved_context = pg_sys::error_context_stack;
        let jumped = cee_scape::call_with_sigsetjmp(false, |jump_buffer| {
            pg_sys::PG_exception_stack = std::ptr::from_ref(jump_buffer).cast_mut().cast();
            call();
            0
        });
        pg_sys::PG_exception_stack = saved_stack;
        pg_sys::error_context_stack = saved_context;
        always();
        if jumped != 0 {
            pg_re_throw();
        }
    }
}
