//! The optidb background worker: keeps history and metric views current with no manual call.
//!
//! Registered from `_PG_init` when optidb is preloaded. It connects to `optidb.database` and
//! runs, each in its own transaction, the same SQL functions pg_cron could run instead:
//! `optidb.snapshot()` and `optidb.record_health()` every `optidb.snapshot_interval`,
//! `optidb.check_alerts()` and `optidb.sample_waits()` every `optidb.alert_interval`,
//! `optidb.refresh()` and
//! `optidb.prune()` every `optidb.refresh_interval`, on a fixed grid (optidb_core::schedule: no
//! drift).
//!
//! - A failing job is rolled back, logged, and the worker carries on.
//! - SIGHUP reloads the configuration (new intervals apply at once). SIGTERM (pg_terminate_backend,
//!   `pg_ctl stop`) ends the worker promptly, in the middle of a job too: PostgreSQL's `die`
//!   handling (src/postgres/signals.rs), so a running job is interrupted at its next interrupt
//!   check (FATAL, its transaction rolled back) and an idle worker leaves its wait at once. It
//!   exits with code 1, so the postmaster starts it again after `RESTART_AFTER` unless the
//!   server is shutting down. After a backend crash the postmaster restarts it the same way.
//! - Nothing runs while the server is in recovery (a standby), while `optidb.enabled` is off,
//!   or while the database lacks the extension.
//! - It shows in pg_stat_activity as backend_type "optidb worker", its query being the job.

use crate::postgres::guarded;
use crate::postgres::gucs;
use crate::postgres::rows;
use crate::postgres::signals;
use optidb_core::schedule::Schedule;
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags,
};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::CString;
use std::time::{Duration, Instant};

const RESTART_AFTER: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Job {
    Snapshot,
    Health,
    Alerts,
    Waits,
    Refresh,
    Retention,
}

impl Job {
    fn sql(self) -> &'static str {
        match self {
            Job::Snapshot => "SELECT optidb.snapshot()",
            Job::Health => "SELECT optidb.record_health()",
            Job::Alerts => "SELECT optidb.check_alerts()",
            Job::Waits => "SELECT optidb.sample_waits()",
            Job::Refresh => "SELECT optidb.refresh()",
            Job::Retention => "SELECT optidb.prune()",
        }
    }

    fn interval(self) -> Duration {
        let secs = match self {
            Job::Snapshot | Job::Health => gucs::snapshot_interval_s(),
            Job::Alerts | Job::Waits => gucs::alert_interval_s(),
            Job::Refresh | Job::Retention => gucs::refresh_interval_s(),
        };
        Duration::from_secs(secs.max(1) as u64)
    }

    const ALL: [Job; 6] = [
        Job::Snapshot,
        Job::Health,
        Job::Alerts,
        Job::Waits,
        Job::Refresh,
        Job::Retention,
    ];
}

/// From `_PG_init`, while shared_preload_libraries is being processed.
pub fn register() {
    BackgroundWorkerBuilder::new("optidb worker")
        .set_type("optidb worker")
        .set_library("optidb")
        .set_function("optidb_worker_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(RESTART_AFTER))
        .load();
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn optidb_worker_main(_arg: pg_sys::Datum) {
    // SAFETY: at worker start, before attach_signal_handlers unblocks signals.
    unsafe { signals::set_sigterm_handler() };
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP);
    let database = gucs::database();
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    log!("optidb worker started in database \"{database}\"");

    let started = Instant::now();
    let jobs: Vec<(Job, Duration)> = Job::ALL.iter().map(|j| (*j, j.interval())).collect();
    let mut schedule = Schedule::new(&jobs, started.elapsed());
    let mut idle_reason: Option<&'static str> = None;
    'serve: while sleep(schedule.wait(started.elapsed())) {
        if BackgroundWorker::sighup_received() {
            // SAFETY: a guarded call on the worker's only thread, between jobs and outside any
            // transaction: where PostgreSQL's own processes reload the configuration on SIGHUP.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
            for job in Job::ALL {
                schedule.set_interval(job, job.interval());
            }
        }
        for job in schedule.take_due(started.elapsed()) {
            // A SIGTERM that came as a job ended: stop before starting another (the latch it
            // set may have been reset by then, so waiting first could take a whole interval).
            if signals::termination_pending() {
                break 'serve;
            }
            let reason = run_job(job);
            if reason != idle_reason {
                if let Some(why) = reason {
                    log!("optidb worker is idle: {why}");
                }
                idle_reason = reason;
            }
        }
    }
    log!("optidb worker stopping");
    // Non-zero: the postmaster restarts us after RESTART_AFTER, unless it is shutting down.
    // SAFETY: a guarded call that ends the process, outside any transaction; it runs
    // PostgreSQL's exit callbacks and never returns, so the locals of this frame are never
    // dropped, which only leaves memory the exiting process gives back anyway.
    unsafe { pg_sys::proc_exit(1) };
}

/// Wait on the latch until `timeout` has passed or a signal sets it. False when the worker is
/// to stop: a SIGTERM arrived (idle, there is nothing to interrupt: the caller exits
/// quietly instead of the FATAL a CHECK_FOR_INTERRUPTS would raise) or the postmaster died.
fn sleep(timeout: Duration) -> bool {
    let events = (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_POSTMASTER_DEATH) as i32;
    let ms = timeout.as_millis().min(i32::MAX as u128) as std::ffi::c_long;
    // SAFETY: guarded calls on the worker's only thread, outside any transaction, on this
    // process's own latch (MyLatch is set up for every background worker). Resetting after the
    // wait and checking the flags after the reset is the latch protocol: a signal that arrives
    // later sets the latch again, so the next wait returns at once.
    let happened = unsafe {
        let happened = pg_sys::WaitLatch(pg_sys::MyLatch, events, ms, pg_sys::PG_WAIT_EXTENSION);
        pg_sys::ResetLatch(pg_sys::MyLatch);
        happened
    };
    if happened & pg_sys::WL_POSTMASTER_DEATH as i32 != 0 || signals::termination_pending() {
        return false;
    }
    // Any other interrupt (a barrier, a log-memory-context request), as every process does.
    pg_sys::check_for_interrupts!();
    true
}

/// Run one job in its own transaction. Returns why nothing ran, if nothing could.
fn run_job(job: Job) -> Option<&'static str> {
    let sql = job.sql();
    let reason = BackgroundWorker::transaction(|| {
        // SAFETY: a guarded call inside the job's transaction; it only reads shared state.
        if unsafe { pg_sys::RecoveryInProgress() } {
            return Some("the server is in recovery (standby)");
        }
        if !gucs::enabled() {
            return Some("optidb.enabled is off");
        }
        let installed = rows::value::<bool>(
            "optidb installed",
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'optidb')",
            &[],
        )
        .unwrap_or(false);
        if !installed {
            return Some("optidb is not installed in optidb.database (CREATE EXTENSION optidb)");
        }
        report_activity(pg_sys::BackendState::STATE_RUNNING, sql);
        if let Err(failure) = guarded::run(None, || {
            Spi::run(sql).unwrap_or_else(|e| error!("{e}"));
        }) {
            log!("optidb worker: {sql} failed, will retry next interval: {failure}");
        }
        None
    });
    report_activity(pg_sys::BackendState::STATE_IDLE, "");
    reason
}

fn report_activity(state: pg_sys::BackendState::Type, what: &str) {
    let text = CString::new(what).unwrap_or_default();
    // SAFETY: a guarded call with a NUL-terminated string that outlives it (PostgreSQL copies
    // it into this backend's status entry); the worker is connected, so that entry exists.
    unsafe { pg_sys::pgstat_report_activity(state, text.as_ptr()) };
}
