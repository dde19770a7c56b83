//! Executor and error hooks that feed the latency table. Installed through raw pg_sys hook
//! pointers, each chaining to the hook that was there before (pgrx's PgHooks is unsound).
//!
//! Timing uses the executor's own instrumentation (queryDesc->totaltime, shared with
//! pg_stat_statements when both are loaded). A failed statement never reaches ExecutorEnd; it
//! is counted from emit_log_hook with the queryid PostgreSQL reports for the backend.

use super::table::{self, Key};
use super::{nesting, raw};
use crate::{gucs, own_work};
use pgrx::pg_sys;
use pgrx::prelude::*;

static mut PREV_START: pg_sys::ExecutorStart_hook_type = None;
static mut PREV_RUN: pg_sys::ExecutorRun_hook_type = None;
static mut PREV_FINISH: pg_sys::ExecutorFinish_hook_type = None;
static mut PREV_END: pg_sys::ExecutorEnd_hook_type = None;
static mut PREV_EMIT_LOG: pg_sys::emit_log_hook_type = None;
static mut PREV_SHMEM_REQUEST: pg_sys::shmem_request_hook_type = None;
static mut PREV_SHMEM_STARTUP: pg_sys::shmem_startup_hook_type = None;
static mut PREV_UTILITY: pg_sys::ProcessUtility_hook_type = None;

/// Set when recording panicked once in this backend: it stops recording rather than risk it
/// again on every statement (a panic here is a bug; the statement itself is unaffected).
static mut BROKEN: bool = false;

/// Run optidb's own bookkeeping so that nothing in it can disturb the user's statement: a
/// panic is contained (and logged once), and `f` must not raise a PostgreSQL ERROR.
unsafe fn contained(f: impl FnOnce()) {
    if BROKEN {
        return;
    }
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
        BROKEN = true;
        pgrx::log!("optidb: statement recording failed and is off in this session");
    }
}

pub unsafe fn install() {
    PREV_SHMEM_REQUEST = pg_sys::shmem_request_hook;
    pg_sys::shmem_request_hook = Some(shmem_request);
    PREV_SHMEM_STARTUP = pg_sys::shmem_startup_hook;
    pg_sys::shmem_startup_hook = Some(shmem_startup);
    PREV_START = pg_sys::ExecutorStart_hook;
    pg_sys::ExecutorStart_hook = Some(executor_start);
    PREV_RUN = pg_sys::ExecutorRun_hook;
    pg_sys::ExecutorRun_hook = Some(executor_run);
    PREV_FINISH = pg_sys::ExecutorFinish_hook;
    pg_sys::ExecutorFinish_hook = Some(executor_finish);
    PREV_END = pg_sys::ExecutorEnd_hook;
    pg_sys::ExecutorEnd_hook = Some(executor_end);
    PREV_EMIT_LOG = pg_sys::emit_log_hook;
    pg_sys::emit_log_hook = Some(emit_log);
    PREV_UTILITY = pg_sys::ProcessUtility_hook;
    pg_sys::ProcessUtility_hook = Some(process_utility);
    nesting::register();
}

// The statement hooks below are deliberately not #[pg_guard]: an ERROR from the code they call
// must pass through unchanged (see raw.rs), and their own work runs inside `contained`.

#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn process_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const std::ffi::c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    let run = PREV_UTILITY.unwrap_or(raw::standard_ProcessUtility);
    nesting::in_utility(|| {
        run(
            pstmt,
            query_string,
            read_only_tree,
            context,
            params,
            query_env,
            dest,
            qc,
        )
    });
}

#[pg_guard]
unsafe extern "C-unwind" fn shmem_request() {
    if let Some(prev) = PREV_SHMEM_REQUEST {
        pg_sys::ffi::pg_guard_ffi_boundary(|| prev());
    }
    table::request(gucs::max_statements() as i64);
}

#[pg_guard]
unsafe extern "C-unwind" fn shmem_startup() {
    if let Some(prev) = PREV_SHMEM_STARTUP {
        pg_sys::ffi::pg_guard_ffi_boundary(|| prev());
    }
    table::attach();
}

/// Parallel workers run parts of a statement their leader records; optidb's own work is not
/// workload.
unsafe fn tracking() -> bool {
    !BROKEN
        && gucs::enabled()
        && !own_work::active()
        && (nesting::level() == 0 || gucs::track_nested())
        && pg_sys::ParallelWorkerNumber < 0
        && table::attached()
}

unsafe extern "C-unwind" fn executor_start(query_desc: *mut pg_sys::QueryDesc, eflags: i32) {
    PREV_START.unwrap_or(raw::standard_ExecutorStart)(query_desc, eflags);
    if tracking() && (*(*query_desc).plannedstmt).queryId != 0 && (*query_desc).totaltime.is_null()
    {
        // Allocated in the query's own context, like pg_stat_statements does (shared with it
        // when both are loaded).
        let old = pg_sys::CurrentMemoryContext;
        pg_sys::CurrentMemoryContext = (*(*query_desc).estate).es_query_cxt;
        (*query_desc).totaltime =
            raw::InstrAlloc(1, pg_sys::InstrumentOption::INSTRUMENT_TIMER as i32, false);
        pg_sys::CurrentMemoryContext = old;
    }
}

unsafe extern "C-unwind" fn executor_run(
    query_desc: *mut pg_sys::QueryDesc,
    direction: pg_sys::ScanDirection::Type,
    count: u64,
    execute_once: bool,
) {
    let run = PREV_RUN.unwrap_or(raw::standard_ExecutorRun);
    nesting::in_executor(|| run(query_desc, direction, count, execute_once));
}

unsafe extern "C-unwind" fn executor_finish(query_desc: *mut pg_sys::QueryDesc) {
    let finish = PREV_FINISH.unwrap_or(raw::standard_ExecutorFinish);
    nesting::in_executor(|| finish(query_desc));
}

unsafe extern "C-unwind" fn executor_end(query_desc: *mut pg_sys::QueryDesc) {
    let queryid = (*(*query_desc).plannedstmt).queryId;
    let timer = (*query_desc).totaltime;
    if queryid != 0 && !timer.is_null() && tracking() {
        // Stop the timer (as pg_stat_statements does; it cannot raise once the run finished).
        raw::InstrEndLoop(timer);
        let ns = ((*timer).total * 1e9) as u64;
        let key = Key {
            queryid,
            userid: raw::GetUserId().to_u32(),
            dbid: pg_sys::MyDatabaseId.to_u32(),
        };
        contained(|| table::record_success(key, ns, || statement_text(query_desc)));
    }
    PREV_END.unwrap_or(raw::standard_ExecutorEnd)(query_desc);
}

/// This statement's own text with its literals (cut out of a multi-statement string), secrets
/// redacted. Only called for a new slowest execution.
unsafe fn statement_text(query_desc: *mut pg_sys::QueryDesc) -> Option<String> {
    let source = (*query_desc).sourceText;
    if source.is_null() {
        return None;
    }
    let full = std::ffi::CStr::from_ptr(source).to_string_lossy();
    let stmt = (*query_desc).plannedstmt;
    let (start, len) = ((*stmt).stmt_location, (*stmt).stmt_len);
    let text = if start >= 0 && (start as usize) < full.len() {
        let start = start as usize;
        let end = if len > 0 {
            (start + len as usize).min(full.len())
        } else {
            full.len()
        };
        full.get(start..end).unwrap_or(&full)
    } else {
        &full
    };
    Some(optidb_core::redact::redact_secrets(text.trim()))
}

/// Runs while an error is being reported: must not raise anything itself, so it only touches
/// shared memory (no allocation, no SQL) and skips processes without the table.
unsafe extern "C-unwind" fn emit_log(edata: *mut pg_sys::ErrorData) {
    if !edata.is_null()
        && (*edata).elevel >= pg_sys::PGERROR as i32
        && !pg_sys::MyProc.is_null()
        && pg_sys::IsUnderPostmaster
        && !BROKEN
        && gucs::enabled()
        && table::attached()
    {
        let queryid = raw::pgstat_get_my_query_id();
        if queryid != 0 {
            let key = Key {
                queryid,
                userid: raw::GetUserId().to_u32(),
                dbid: pg_sys::MyDatabaseId.to_u32(),
            };
            let class = ((*edata).sqlerrcode & 0xFFF) as u32;
            contained(|| table::record_failure(key, class));
        }
    }
    if let Some(prev) = PREV_EMIT_LOG {
        prev(edata);
    }
}
