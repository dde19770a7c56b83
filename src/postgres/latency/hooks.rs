//! Planner, executor and utility hooks that feed the latency table, counting exactly what
//! pg_stat_statements counts (its calls, whatever the order of the two libraries in
//! shared_preload_libraries):
//! - a statement that reaches the executor is timed from ExecutorStart to ExecutorEnd with the
//!   executor's own instrumentation (`queryDesc->totaltime`, allocated with INSTRUMENT_ALL as
//!   pg_stat_statements allocates it, and shared with it: it then records buffer and WAL usage
//!   whichever library allocated it). A portal fetched in several chunks is one execution;
//! - a utility statement is timed around its processing (optidb.track_utility, like
//!   pg_stat_statements.track_utility), except EXECUTE, PREPARE and DEALLOCATE: the statement an
//!   EXECUTE runs is timed by the executor hooks, as a top-level statement;
//! - only top-level statements, unless optidb.track_nested (like pg_stat_statements.track =
//!   all): nesting.rs keeps the levels; parallel workers and optidb's own work are never timed;
//! - failures are counted by failures.rs from transaction aborts, not from the server log.
//!
//! Installed through raw pg_sys hook pointers, each chaining to the hook that was there before
//! (pgrx's PgHooks is unsound). The statement hooks are deliberately not #[pg_guard]: an ERROR
//! from the code they call must pass through unchanged (see raw.rs), and optidb's own work runs
//! inside `contained`.

use super::samples::{self, Sample};
use super::table::{self, Key};
use super::{dump, failures, nesting, raw};
use crate::postgres::backend_local::BackendLocal;
use crate::postgres::gucs;
use crate::postgres::own_work;
use crate::postgres::settings;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::CStr;
use std::time::Instant;

// The previous hooks: written once in _PG_init, in the postmaster, before any backend exists;
// only read afterwards.
static mut PREV_PLANNER: pg_sys::planner_hook_type = None;
static mut PREV_START: pg_sys::ExecutorStart_hook_type = None;
static mut PREV_RUN: pg_sys::ExecutorRun_hook_type = None;
static mut PREV_FINISH: pg_sys::ExecutorFinish_hook_type = None;
static mut PREV_END: pg_sys::ExecutorEnd_hook_type = None;
static mut PREV_SHMEM_REQUEST: pg_sys::shmem_request_hook_type = None;
static mut PREV_SHMEM_STARTUP: pg_sys::shmem_startup_hook_type = None;
static mut PREV_UTILITY: pg_sys::ProcessUtility_hook_type = None;

/// Set when recording panicked once in this backend: it stops recording rather than risk it
/// again on every statement (a panic here is a bug; the statement itself is unaffected).
static BROKEN: BackendLocal<bool> = BackendLocal::new(false);

/// The top-level statement being timed (its QueryDesc): ExecutorRun and ExecutorFinish know
/// it with one comparison. Cleared at its ExecutorEnd; a later statement replaces it.
static TOP: BackendLocal<*mut pg_sys::QueryDesc> = BackendLocal::new(std::ptr::null_mut());

/// Whether pg_stat_statements is loaded in this backend (checked once).
static PGSS_LOADED: BackendLocal<Option<bool>> = BackendLocal::new(None);

/// Run optidb's own bookkeeping so that nothing in it can disturb the user's statement: a
/// panic is contained (and logged once), and `f` must not raise a PostgreSQL ERROR.
pub fn contained(f: impl FnOnce()) {
    if BROKEN.get() {
        return;
    }
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
        BROKEN.set(true);
        pgrx::log!("optidb: statement recording failed and is off in this session");
    }
}

/// # Safety
/// From _PG_init while shared_preload_libraries is processed.
pub unsafe fn install() {
    // SAFETY: the postmaster is single-threaded while it loads libraries; each previous hook
    // is kept and called by ours.
    unsafe {
        PREV_SHMEM_REQUEST = pg_sys::shmem_request_hook;
        pg_sys::shmem_request_hook = Some(shmem_request);
        PREV_SHMEM_STARTUP = pg_sys::shmem_startup_hook;
        pg_sys::shmem_startup_hook = Some(shmem_startup);
        PREV_PLANNER = pg_sys::planner_hook;
        pg_sys::planner_hook = Some(planner);
        PREV_START = pg_sys::ExecutorStart_hook;
        pg_sys::ExecutorStart_hook = Some(executor_start);
        PREV_RUN = pg_sys::ExecutorRun_hook;
        pg_sys::ExecutorRun_hook = Some(executor_run);
        PREV_FINISH = pg_sys::ExecutorFinish_hook;
        pg_sys::ExecutorFinish_hook = Some(executor_finish);
        PREV_END = pg_sys::ExecutorEnd_hook;
        pg_sys::ExecutorEnd_hook = Some(executor_end);
        PREV_UTILITY = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(process_utility);
    }
    nesting::register();
}

#[pg_guard]
#[allow(
    ffi_unwind_calls,
    reason = "calls the previous shmem_request hook inside pg_guard_ffi_boundary: an ERROR comes \
              back as a Rust panic, which #[pg_guard] raises again as an ERROR"
)]
unsafe extern "C-unwind" fn shmem_request() {
    // SAFETY: the hook chain is set up once; the previous hook is a C function of the server
    // or another library, called as PostgreSQL would.
    unsafe {
        if let Some(prev) = PREV_SHMEM_REQUEST {
            pg_sys::ffi::pg_guard_ffi_boundary(|| prev());
        }
        let max = gucs::max_statements() as i64;
        table::request(max);
        samples::request(samples::slots_for(max));
        super::failed::request();
        crate::postgres::warm_replay::request();
    }
}

#[pg_guard]
#[allow(
    ffi_unwind_calls,
    reason = "calls the previous shmem_startup hook inside pg_guard_ffi_boundary: an ERROR comes \
              back as a Rust panic, which #[pg_guard] raises again as an ERROR"
)]
unsafe extern "C-unwind" fn shmem_startup() {
    // SAFETY: as shmem_request; attaching runs under AddinShmemInitLock (table::attach).
    unsafe {
        if let Some(prev) = PREV_SHMEM_STARTUP {
            pg_sys::ffi::pg_guard_ffi_boundary(|| prev());
        }
        let created = table::attach();
        crate::postgres::warm_replay::attach();
        if !pg_sys::IsUnderPostmaster {
            dump::register();
            if created {
                dump::load();
            }
        }
    }
}

/// Recording is possible and wanted in this process right now.
#[inline]
fn recording() -> bool {
    // SAFETY: ParallelWorkerNumber is a plain global of this process.
    !BROKEN.get()
        && gucs::enabled()
        && !own_work::active()
        && unsafe { pg_sys::ParallelWorkerNumber } < 0
        && table::attached()
}

/// Statements at this nesting level are timed.
#[inline]
fn tracking(level: i32) -> bool {
    (level == 0 || gucs::track_nested()) && recording()
}

#[inline]
#[allow(
    ffi_unwind_calls,
    reason = "GetUserId only returns a backend global and never raises"
)]
fn key(queryid: u64) -> Key {
    // SAFETY: both read the current backend's state and never raise.
    unsafe {
        Key {
            queryid,
            userid: raw::GetUserId().to_u32(),
            dbid: pg_sys::MyDatabaseId.to_u32(),
        }
    }
}

/// A queryid as optidb keys it: uint64 up to PostgreSQL 17, int64 (same bits) since 18.
#[cfg(not(feature = "pg18"))]
#[inline]
fn qid(id: u64) -> u64 {
    id
}
#[cfg(feature = "pg18")]
#[inline]
fn qid(id: i64) -> u64 {
    id as u64
}

#[inline]
unsafe fn query_id(query_desc: *mut pg_sys::QueryDesc) -> u64 {
    // SAFETY: the executor passes a valid QueryDesc with its PlannedStmt.
    unsafe { qid((*(*query_desc).plannedstmt).queryId) }
}

#[allow(
    ffi_unwind_calls,
    reason = "calls the previous planner hook or standard_planner: an ERROR must longjmp through \
              unchanged, and this frame holds nothing to drop (see raw.rs)"
)]
unsafe extern "C-unwind" fn planner(
    parse: *mut pg_sys::Query,
    query_string: *const std::ffi::c_char,
    cursor_options: i32,
    bound_params: pg_sys::ParamListInfo,
) -> *mut pg_sys::PlannedStmt {
    // SAFETY: PREV_PLANNER is only written in _PG_init; `parse` is the Query being planned.
    unsafe {
        let plan = PREV_PLANNER.unwrap_or(raw::standard_planner);
        let queryid = qid((*parse).queryId);
        if queryid == 0 || nesting::level() != 0 || !recording() {
            return plan(parse, query_string, cursor_options, bound_params);
        }
        // A top-level statement can fail while it is planned (constant folding).
        failures::begin(
            key(queryid),
            failures::Source {
                text: query_string,
                location: (*parse).stmt_location,
                len: (*parse).stmt_len,
            },
        );
        let mut planned = std::ptr::null_mut();
        failures::watching(|| {
            planned = plan(parse, query_string, cursor_options, bound_params);
        });
        planned
    }
}

#[allow(
    ffi_unwind_calls,
    reason = "calls the previous ExecutorStart hook and InstrAlloc: an ERROR must longjmp \
              through unchanged, and this frame holds nothing to drop (see raw.rs)"
)]
unsafe extern "C-unwind" fn executor_start(query_desc: *mut pg_sys::QueryDesc, eflags: i32) {
    // SAFETY: the executor's arguments, passed on unchanged; PREV_START only written in
    // _PG_init. totaltime is allocated in the query's own memory context.
    unsafe {
        let start = PREV_START.unwrap_or(raw::standard_ExecutorStart);
        let queryid = query_id(query_desc);
        let level = nesting::level();
        let tracked = queryid != 0 && tracking(level);
        if level == 0 {
            // Replaced at every top-level start, so a stale pointer (its statement failed
            // before ExecutorEnd) never outlives the next statement.
            TOP.set(if tracked {
                query_desc
            } else {
                std::ptr::null_mut()
            });
        }
        if !tracked {
            return start(query_desc, eflags);
        }
        if level == 0 {
            let stmt = (*query_desc).plannedstmt;
            failures::begin(
                key(queryid),
                failures::Source {
                    text: (*query_desc).sourceText,
                    location: (*stmt).stmt_location,
                    len: (*stmt).stmt_len,
                },
            );
            failures::watching(|| start(query_desc, eflags));
        } else {
            start(query_desc, eflags);
        }
        if (*query_desc).totaltime.is_null() {
            // INSTRUMENT_ALL, as pg_stat_statements allocates it: whichever of us allocates
            // it, the other finds buffer and WAL usage in it too.
            let old = pg_sys::CurrentMemoryContext;
            pg_sys::CurrentMemoryContext = (*(*query_desc).estate).es_query_cxt;
            (*query_desc).totaltime =
                raw::InstrAlloc(1, pg_sys::InstrumentOption::INSTRUMENT_ALL as i32, false);
            pg_sys::CurrentMemoryContext = old;
        }
    }
}

/// Whether this executor call belongs to the top-level statement being recorded.
#[inline]
fn top_level(query_desc: *mut pg_sys::QueryDesc) -> bool {
    nesting::level() == 0 && TOP.get() == query_desc
}

#[allow(
    ffi_unwind_calls,
    reason = "calls the previous ExecutorRun hook: an ERROR must longjmp through unchanged, and \
              this frame holds nothing to drop (see raw.rs)"
)]
#[cfg(not(feature = "pg18"))]
unsafe extern "C-unwind" fn executor_run(
    query_desc: *mut pg_sys::QueryDesc,
    direction: pg_sys::ScanDirection::Type,
    count: u64,
    execute_once: bool,
) {
    // SAFETY: the executor's arguments, passed on unchanged.
    unsafe {
        let run = PREV_RUN.unwrap_or(raw::standard_ExecutorRun);
        let top = top_level(query_desc);
        nesting::in_executor(|| {
            if top {
                failures::watching(|| run(query_desc, direction, count, execute_once));
            } else {
                run(query_desc, direction, count, execute_once);
            }
        });
    }
}

/// PostgreSQL 18 dropped ExecutorRun's execute_once argument.
#[cfg(feature = "pg18")]
#[allow(
    ffi_unwind_calls,
    reason = "calls the previous ExecutorRun hook: an ERROR must longjmp through unchanged, and \
              this frame holds nothing to drop (see raw.rs)"
)]
unsafe extern "C-unwind" fn executor_run(
    query_desc: *mut pg_sys::QueryDesc,
    direction: pg_sys::ScanDirection::Type,
    count: u64,
) {
    // SAFETY: the executor's arguments, passed on unchanged.
    unsafe {
        let run = PREV_RUN.unwrap_or(raw::standard_ExecutorRun);
        let top = top_level(query_desc);
        nesting::in_executor(|| {
            if top {
                failures::watching(|| run(query_desc, direction, count));
            } else {
                run(query_desc, direction, count);
            }
        });
    }
}

#[allow(
    ffi_unwind_calls,
    reason = "calls the previous ExecutorFinish hook: an ERROR must longjmp through unchanged, \
              and this frame holds nothing to drop (see raw.rs)"
)]
unsafe extern "C-unwind" fn executor_finish(query_desc: *mut pg_sys::QueryDesc) {
    // SAFETY: as executor_run.
    unsafe {
        let finish = PREV_FINISH.unwrap_or(raw::standard_ExecutorFinish);
        // A plain SELECT has nothing left to run here (no AFTER triggers of its own, no
        // modifying WITH; functions it called ran their queries during ExecutorRun): no
        // statement can start inside, and no error of its own can occur.
        let stmt = (*query_desc).plannedstmt;
        if (*stmt).commandType == pg_sys::CmdType::CMD_SELECT && !(*stmt).hasModifyingCTE {
            return finish(query_desc);
        }
        let top = top_level(query_desc);
        nesting::in_executor(|| {
            if top {
                failures::watching(|| finish(query_desc));
            } else {
                finish(query_desc);
            }
        });
    }
}

#[allow(
    ffi_unwind_calls,
    reason = "calls InstrEndLoop (which cannot raise once the run ended) and the previous \
              ExecutorEnd hook: an ERROR must longjmp through unchanged, and this frame holds \
              nothing to drop when either is called (see raw.rs)"
)]
unsafe extern "C-unwind" fn executor_end(query_desc: *mut pg_sys::QueryDesc) {
    // SAFETY: as executor_run; the timer was allocated at ExecutorStart by us or by
    // pg_stat_statements and is still alive (ExecutorEnd frees the query's context).
    unsafe {
        let queryid = query_id(query_desc);
        let timer = (*query_desc).totaltime;
        let level = nesting::level();
        // The top-level statement was checked for tracking when it started.
        let top = level == 0 && TOP.get() == query_desc;
        if queryid != 0 && !timer.is_null() && (top || tracking(level)) {
            // Stop the timer (as pg_stat_statements does; it cannot raise once the run ended).
            raw::InstrEndLoop(timer);
            let ns = nanoseconds((*timer).total);
            // The top-level statement's key was made when it started.
            let k = match top {
                true => failures::finished(queryid).unwrap_or_else(|| key(queryid)),
                false => key(queryid),
            };
            contained(|| {
                let text = || statement_text((*query_desc).sourceText, (*query_desc).plannedstmt);
                let executed = Executed {
                    params: (*query_desc).params,
                    stmt: (*query_desc).plannedstmt,
                };
                recorded(k, ns, text, Some(executed));
            });
            if top {
                TOP.set(std::ptr::null_mut());
            }
        }
        PREV_END.unwrap_or(raw::standard_ExecutorEnd)(query_desc);
    }
}

/// Seconds as whole nanoseconds (0 for anything outside 0..292 years), with one conversion
/// instruction where `as u64` needs a dozen (it runs for every statement).
#[inline]
fn nanoseconds(seconds: f64) -> u64 {
    let ns = seconds * 1e9;
    if (0.0..9.2e18).contains(&ns) {
        // SAFETY: finite and within i64 (NaN fails the range check).
        unsafe { ns.to_int_unchecked::<i64>() as u64 }
    } else {
        0
    }
}

/// What a sample of an executor statement is taken from.
#[derive(Clone, Copy)]
struct Executed {
    params: pg_sys::ParamListInfo,
    stmt: *const pg_sys::PlannedStmt,
}

/// Record one successful execution; the text (and, when `executed` is given, a sample) is only
/// built when it is needed, outside the table lock.
fn recorded(
    k: Key,
    ns: u64,
    text: impl FnOnce() -> Option<StatementText>,
    executed: Option<Executed>,
) {
    let every_us = executed.map_or(0, |_| gucs::sample_interval_us());
    // Where one entry spans schemas, each execution says which tables it used (no allocation).
    let mut used = [0u32; table::ENTRY_RELATIONS];
    let n_used = match executed {
        // SAFETY: the statement's own plan.
        Some(e) if table::QUERYID_SPANS_SCHEMAS => unsafe {
            samples::first_relations(e.stmt, &mut used)
        },
        _ => 0,
    };
    let r = table::record_success(
        k,
        ns,
        every_us,
        gucs::fault_injection(),
        samples::statement_started_us,
        &used[..n_used],
    );
    if r.relations_due {
        if let Some(executed) = executed {
            // Once per entry before 18 (its plan's relations not read yet), once per new
            // table on 18 (read above).
            let n = match table::QUERYID_SPANS_SCHEMAS {
                true => n_used,
                // SAFETY: as above.
                false => unsafe { samples::first_relations(executed.stmt, &mut used) },
            };
            table::keep_relations(k, &used[..n]);
        }
    }
    if r.slowest || r.sample_due {
        keep_text_and_sample(k, ns, r, text(), executed);
    }
    if r.found.evicted > 0 {
        table::log_evictions(samples::statement_started_us());
    }
}

/// The rare part of recording (a new slowest execution, or a sample due), out of line so the
/// common path stays short.
#[cold]
#[inline(never)]
fn keep_text_and_sample(
    k: Key,
    ns: u64,
    r: table::Recorded,
    text: Option<StatementText>,
    executed: Option<Executed>,
) {
    let started_us = samples::statement_started_us();
    if r.slowest {
        if let Some(t) = &text {
            table::keep_slowest(k, ns, &t.shown);
        }
    }
    let Some(executed) = executed else { return };
    // Literal text read under standard_conforming_strings = off would be read differently by
    // a replay: not kept then.
    let replayable = text
        .as_ref()
        .filter(|t| t.replayable && samples::standard_strings());
    // Parameter values of a statement about secrets are not kept.
    let values = replayable.is_some_and(|t| !optidb_core::redact::mentions_secret(&t.shown));
    // SAFETY: the statement's own ParamListInfo and plan, outside any lock.
    let (rendered, relations) = unsafe {
        (
            samples::render(executed.params, values),
            samples::relations(executed.stmt),
        )
    };
    samples::push(&Sample {
        key: k,
        elapsed_ns: ns,
        started_us,
        slowest: r.slowest,
        typical: r.sample_due,
        // SAFETY: in a backend, where the setting exists.
        search_path: unsafe { samples::current_search_path() },
        text: replayable.map(|t| t.shown.clone()),
        params: rendered,
        relations,
    });
}

#[allow(clippy::too_many_arguments)]
#[allow(
    ffi_unwind_calls,
    reason = "calls the previous ProcessUtility hook: an ERROR must longjmp through unchanged, \
              and this frame holds nothing to drop (see raw.rs)"
)]
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
    // SAFETY: the arguments are passed on unchanged; PREV_UTILITY only written in _PG_init.
    unsafe {
        let process = PREV_UTILITY.unwrap_or(raw::standard_ProcessUtility);
        let run = || {
            process(
                pstmt,
                query_string,
                read_only_tree,
                context,
                params,
                query_env,
                dest,
                qc,
            )
        };
        let tag = (*(*pstmt).utilityStmt).type_;
        if matches!(
            tag,
            pg_sys::NodeTag::T_DropdbStmt
                | pg_sys::NodeTag::T_CreatedbStmt
                | pg_sys::NodeTag::T_AlterDatabaseStmt
        ) {
            // These wait for (and then refuse) other sessions of the database concerned.
            crate::postgres::warm_replay::release_idle();
        }
        if matches!(
            tag,
            pg_sys::NodeTag::T_ExecuteStmt
                | pg_sys::NodeTag::T_PrepareStmt
                | pg_sys::NodeTag::T_DeallocateStmt
        ) {
            // Not a level of its own: the statement an EXECUTE runs is the top-level one.
            return run();
        }
        let level = nesting::level();
        let queryid = if gucs::track_utility() && tracking(level) {
            utility_query_id(pstmt, query_string)
        } else {
            0
        };
        if queryid == 0 {
            return nesting::in_utility(run);
        }
        if level == 0 {
            failures::begin(
                key(queryid),
                failures::Source {
                    text: query_string,
                    location: (*pstmt).stmt_location,
                    len: (*pstmt).stmt_len,
                },
            );
        }
        let started = Instant::now();
        nesting::in_utility(|| {
            if level == 0 {
                failures::watching(run);
            } else {
                run();
            }
        });
        let ns = started.elapsed().as_nanos() as u64;
        // pg_stat_statements files a utility under the user at its end (SET ROLE changes it).
        let k = key(queryid);
        contained(|| recorded(k, ns, || statement_text(query_string, pstmt), None));
        if level == 0 {
            failures::end(key(queryid));
        }
    }
}

/// The queryid of a utility statement. pg_stat_statements, when its hook runs before ours,
/// zeroes it (so the executor hooks of EXPLAIN ANALYZE and the like do not count it twice);
/// PostgreSQL 15 made it by hashing the statement's text, so it is made again the same way.
#[allow(
    ffi_unwind_calls,
    reason = "PostgreSQL 15: CleanQuerytext and hash_bytes_extended only scan and hash the \
              statement's text and never raise"
)]
unsafe fn utility_query_id(pstmt: *mut pg_sys::PlannedStmt, query_string: *const i8) -> u64 {
    // SAFETY: the utility's own PlannedStmt and source text.
    unsafe {
        let id = qid((*pstmt).queryId);
        if id != 0 || query_string.is_null() || !pgss_loaded() {
            return id;
        }
        #[cfg(feature = "pg15")]
        {
            let (mut location, mut len) = ((*pstmt).stmt_location, (*pstmt).stmt_len);
            let sql = raw::CleanQuerytext(query_string, &mut location, &mut len);
            match raw::hash_bytes_extended(sql.cast(), len, 0) {
                0 => 2,
                hash => hash,
            }
        }
        #[cfg(not(feature = "pg15"))]
        {
            // Utilities are jumbled from their parse tree since PostgreSQL 16: use the id the
            // backend reported for its top-level statement.
            if nesting::level() == 0 {
                qid(pg_sys::pgstat_get_my_query_id())
            } else {
                0
            }
        }
    }
}

fn pgss_loaded() -> bool {
    match PGSS_LOADED.get() {
        Some(loaded) => loaded,
        None => {
            let loaded = settings::exists("pg_stat_statements.track");
            PGSS_LOADED.set(Some(loaded));
            loaded
        }
    }
}

/// A statement's own text as executed.
pub(super) struct StatementText {
    /// Literals kept, secrets redacted: what optidb shows.
    pub shown: String,
    /// Nothing was redacted, so it can be run again.
    pub replayable: bool,
}

/// This statement's own text (cut out of a multi-statement string), secrets redacted. Only
/// built for a new slowest execution or a sample.
unsafe fn statement_text(
    source: *const std::ffi::c_char,
    stmt: *const pg_sys::PlannedStmt,
) -> Option<StatementText> {
    // SAFETY: the statement's PlannedStmt; the source text as the caller guarantees.
    unsafe { source_text(source, (*stmt).stmt_location, (*stmt).stmt_len) }
}

/// The statement at `start` (`len` bytes, 0: to the end) of a source text, secrets redacted.
///
/// # Safety
/// `source` is null or PostgreSQL's NUL-terminated source text of the statement.
pub(super) unsafe fn source_text(
    source: *const std::ffi::c_char,
    start: i32,
    len: i32,
) -> Option<StatementText> {
    if source.is_null() {
        return None;
    }
    // SAFETY: as the caller guarantees.
    let full = unsafe { CStr::from_ptr(source).to_string_lossy() };
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
    let text = text.trim();
    let shown = optidb_core::redact::redact_secrets(text);
    Some(StatementText {
        replayable: shown == text,
        shown,
    })
}
