//! Executor and error hooks that feed the latency table. Installed through raw pg_sys hook
//! pointers, each chaining to the hook that was there before (pgrx's PgHooks is unsound).
//!
//! Timing uses the executor's own instrumentation (queryDesc->totaltime, shared with
//! pg_stat_statements when both are loaded). A failed statement never reaches ExecutorEnd; it
//! is counted from emit_log_hook with the queryid PostgreSQL reports for the backend.

use super::table::{self, Key};
use crate::gucs;
use pgrx::pg_sys;
use pgrx::prelude::*;

static mut PREV_START: pg_sys::ExecutorStart_hook_type = None;
static mut PREV_RUN: pg_sys::ExecutorRun_hook_type = None;
static mut PREV_FINISH: pg_sys::ExecutorFinish_hook_type = None;
static mut PREV_END: pg_sys::ExecutorEnd_hook_type = None;
static mut PREV_EMIT_LOG: pg_sys::emit_log_hook_type = None;
static mut PREV_SHMEM_REQUEST: pg_sys::shmem_request_hook_type = None;
static mut PREV_SHMEM_STARTUP: pg_sys::shmem_startup_hook_type = None;

/// Executor nesting depth of this backend: 0 while running a top-level statement. Utility
/// statements count as a level too, so statements run by DO blocks, CALL or CREATE EXTENSION
/// scripts are nested, as in pg_stat_statements.
static mut NESTING: i32 = 0;
static mut PREV_UTILITY: pg_sys::ProcessUtility_hook_type = None;

/// The previous hooks are C functions: an ERROR inside them longjmps. Calling them through
/// pg_guard_ffi_boundary turns that into an unwind, so our `finally` blocks run.
macro_rules! guarded_call {
    ($e:expr) => {
        pg_sys::ffi::pg_guard_ffi_boundary(|| $e)
    };
}

/// Run `f` one nesting level deeper, restoring the level however `f` ends.
unsafe fn nested<R>(f: impl FnOnce() -> R + std::panic::UnwindSafe) -> R {
    NESTING += 1;
    PgTryBuilder::new(f).finally(|| NESTING -= 1).execute()
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
}

#[allow(clippy::too_many_arguments)]
#[pg_guard]
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
    nested(|| match PREV_UTILITY {
        Some(prev) => guarded_call!(prev(
            pstmt,
            query_string,
            read_only_tree,
            context,
            params,
            query_env,
            dest,
            qc
        )),
        None => pg_sys::standard_ProcessUtility(
            pstmt,
            query_string,
            read_only_tree,
            context,
            params,
            query_env,
            dest,
            qc,
        ),
    });
}

#[pg_guard]
unsafe extern "C-unwind" fn shmem_request() {
    if let Some(prev) = PREV_SHMEM_REQUEST {
        guarded_call!(prev());
    }
    table::request(gucs::max_statements() as i64);
}

#[pg_guard]
unsafe extern "C-unwind" fn shmem_startup() {
    if let Some(prev) = PREV_SHMEM_STARTUP {
        guarded_call!(prev());
    }
    table::attach();
}

unsafe fn tracking(level: i32) -> bool {
    gucs::enabled() && (level == 0 || gucs::track_nested()) && table::attached()
}

#[pg_guard]
unsafe extern "C-unwind" fn executor_start(query_desc: *mut pg_sys::QueryDesc, eflags: i32) {
    match PREV_START {
        Some(prev) => guarded_call!(prev(query_desc, eflags)),
        None => pg_sys::standard_ExecutorStart(query_desc, eflags),
    }
    if tracking(NESTING)
        && (*(*query_desc).plannedstmt).queryId != 0
        && (*query_desc).totaltime.is_null()
    {
        let old = pg_sys::MemoryContextSwitchTo((*(*query_desc).estate).es_query_cxt);
        (*query_desc).totaltime =
            pg_sys::InstrAlloc(1, pg_sys::InstrumentOption::INSTRUMENT_TIMER as i32, false);
        pg_sys::MemoryContextSwitchTo(old);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn executor_run(
    query_desc: *mut pg_sys::QueryDesc,
    direction: pg_sys::ScanDirection::Type,
    count: u64,
    execute_once: bool,
) {
    nested(|| match PREV_RUN {
        Some(prev) => guarded_call!(prev(query_desc, direction, count, execute_once)),
        None => pg_sys::standard_ExecutorRun(query_desc, direction, count, execute_once),
    });
}

#[pg_guard]
unsafe extern "C-unwind" fn executor_finish(query_desc: *mut pg_sys::QueryDesc) {
    nested(|| match PREV_FINISH {
        Some(prev) => guarded_call!(prev(query_desc)),
        None => pg_sys::standard_ExecutorFinish(query_desc),
    });
}

#[pg_guard]
unsafe extern "C-unwind" fn executor_end(query_desc: *mut pg_sys::QueryDesc) {
    let queryid = (*(*query_desc).plannedstmt).queryId;
    let timer = (*query_desc).totaltime;
    if queryid != 0 && !timer.is_null() && tracking(NESTING) {
        // Make sure the timer is stopped (as pg_stat_statements does).
        pg_sys::InstrEndLoop(timer);
        let ns = ((*timer).total * 1e9) as u64;
        table::record_success(
            Key {
                queryid,
                userid: pg_sys::GetUserId().to_u32(),
                dbid: pg_sys::MyDatabaseId.to_u32(),
            },
            ns,
            || statement_text(query_desc),
        );
    }
    match PREV_END {
        Some(prev) => guarded_call!(prev(query_desc)),
        None => pg_sys::standard_ExecutorEnd(query_desc),
    }
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
#[pg_guard]
unsafe extern "C-unwind" fn emit_log(edata: *mut pg_sys::ErrorData) {
    if !edata.is_null()
        && (*edata).elevel >= pg_sys::PGERROR as i32
        && !pg_sys::MyProc.is_null()
        && pg_sys::IsUnderPostmaster
        && gucs::enabled()
        && table::attached()
    {
        let queryid = pg_sys::pgstat_get_my_query_id();
        if queryid != 0 {
            table::record_failure(
                Key {
                    queryid,
                    userid: pg_sys::GetUserId().to_u32(),
                    dbid: pg_sys::MyDatabaseId.to_u32(),
                },
                ((*edata).sqlerrcode & 0xFFF) as u32,
            );
        }
    }
    if let Some(prev) = PREV_EMIT_LOG {
        guarded_call!(prev(edata));
    }
}
