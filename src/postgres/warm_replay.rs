//! Warm replay workers: a background worker that stays connected to its database between
//! replays and runs the batches of many statement owners, one after another, so a scan over 50
//! owners or a simulate() does not pay a worker start (about 20 ms) per batch.
//!
//! Why one process may serve many owners: it is what PostgreSQL itself does when it runs other
//! roles' code (autovacuum's ANALYZE of every owner's tables, REFRESH MATERIALIZED VIEW):
//! switch identity per object inside a security-restricted operation, keep the settings at a
//! GUC nest level that is popped, and share nothing else. Each batch here runs exactly as in a
//! one-shot worker (replay_worker::serve: session and current user the owner, every job
//! vetted, restricted, in a rolled-back subtransaction, in a transaction of its own), and
//! afterwards `reset_session` puts back what a fresh worker would have, as DISCARD ALL does
//! (identity, settings, prepared statements, portals, LISTEN, session advisory locks,
//! temporary objects, sequence state) plus hypopg's hypothetical indexes; cached plans are reset
//! before a batch of another owner than the last (replay_worker.rs). Whatever goes
//! wrong past a job's own rollback (an error escaping a batch, a reset that fails) ends the
//! process instead: the next batch gets a fresh one. See docs/security-model.md.
//!
//! Shared memory: `SLOTS` slots, one warm worker each, taken without a lock, with
//! compare-and-swap on `state` (who owns a slot at each step is written next to the state):
//! - EMPTY: no worker. A caller claims it (EMPTY -> STARTING, new `ticket`) and starts one;
//!   the worker checks its ticket and goes IDLE.
//! - IDLE: the worker waits on its latch, for at most the idle timeout the last caller sent
//!   (then IDLE -> EXITING and it exits).
//! - a caller of the same database claims it (IDLE -> CLAIMED), writes its request (DSM handle,
//!   its latch, a new `job` number) and publishes it (-> SUBMITTED), then sets the worker's
//!   latch; the worker takes it (SUBMITTED -> RUNNING), answers into the caller's segment
//!   (the same layout as a one-shot worker's, with its DONE mark), resets its session, goes
//!   IDLE and sets the caller's latch.
//! - a worker that exits, however (idle, FATAL on SIGTERM), empties its slot in a
//!   before_shmem_exit callback, if the slot is still its own (same ticket).
//!
//! A caller that finds no idle worker of its database and no empty slot uses a one-shot
//! worker (replay_worker.rs), as does every caller when optidb is not preloaded or
//! optidb.replay_workers is 0.

use crate::postgres::gucs;
use crate::postgres::rows;
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags,
};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Most warm workers (optidb.replay_workers is bounded by it).
pub const SLOTS: usize = 8;

/// The backend_type of a warm worker (a one-shot one is `optidb replay`).
pub const BACKEND_TYPE: &str = "optidb warm replay";

const EMPTY: u32 = 0;
const STARTING: u32 = 1;
const IDLE: u32 = 2;
const CLAIMED: u32 = 3;
const SUBMITTED: u32 = 4;
const RUNNING: u32 = 5;
const EXITING: u32 = 6;

/// How long a caller waits for a warm worker it started to come up before it uses a one-shot
/// worker instead (the warm one then still goes IDLE for the next caller).
const START_WAIT_MS: u128 = 5_000;

#[repr(C)]
struct Slot {
    state: AtomicU32,
    database: AtomicU32,
    /// Identifies the worker started for this slot (a worker whose ticket is stale leaves it).
    ticket: AtomicU64,
    /// Identifies the request being served (a cancel kills the worker only while it is ours).
    job: AtomicU64,
    worker_pid: AtomicI32,
    worker_latch: AtomicUsize,
    caller_latch: AtomicUsize,
    request: AtomicU32,
    keep_ms: AtomicU32,
    /// `settings_fingerprint()` when the worker connected.
    settings: AtomicU64,
}

#[repr(C)]
struct Slots {
    slots: [Slot; SLOTS],
    next: AtomicU64,
}

static mut SHARED: *mut Slots = std::ptr::null_mut();

fn shared() -> Option<&'static Slots> {
    // SAFETY: set once per process at startup (shmem_startup); shared memory lives as long
    // as the process. The fields are atomics: any process may read and write them.
    unsafe { SHARED.as_ref() }
}

/// # Safety
/// Only in the postmaster's shmem_request hook.
pub unsafe fn request() {
    // SAFETY: the postmaster is single-threaded while it loads libraries.
    unsafe { pg_sys::RequestAddinShmemSpace(size_of::<Slots>()) };
}

/// # Safety
/// Only in the shmem_startup hook.
pub unsafe fn attach() {
    // SAFETY: AddinShmemInitLock serializes creation against every other process attaching; a
    // new table is zeroed (every slot EMPTY: all-zero bytes are valid atomics) before anyone
    // sees it.
    unsafe {
        let init_lock = &raw mut (*pg_sys::MainLWLockArray.add(21)).lock; // AddinShmemInitLock
        pg_sys::LWLockAcquire(init_lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        let mut found = false;
        let slots: *mut Slots = pg_sys::ShmemInitStruct(
            c"optidb warm replays".as_ptr(),
            size_of::<Slots>(),
            &mut found,
        )
        .cast();
        if !found {
            std::ptr::write_bytes(slots.cast::<u8>(), 0, size_of::<Slots>());
        }
        SHARED = slots;
        pg_sys::LWLockRelease(init_lock);
    }
}

unsafe extern "C" {
    /// Async-signal-safe and never raises: sets a (shared) latch and wakes its owner.
    fn SetLatch(latch: *mut pg_sys::Latch);
    fn kill(pid: pg_sys::pid_t, sig: std::ffi::c_int) -> std::ffi::c_int;
}

fn set_latch(latch: usize) {
    if latch != 0 {
        // SAFETY: the address of a PGPROC's procLatch in shared memory, mapped at the same
        // address in every backend; a stale one (its process gone) only wakes whoever uses
        // that PGPROC now, which every latch waiter tolerates.
        unsafe { SetLatch(latch as *mut pg_sys::Latch) };
    }
}

fn my_latch() -> usize {
    // SAFETY: this backend's latch, its PGPROC's shared procLatch once the backend is up.
    unsafe { pg_sys::MyLatch as usize }
}

/// A request handed to a warm worker, being waited for.
pub struct Submitted {
    slot: usize,
    job: u64,
    pub pid: pg_sys::pid_t,
}

impl Submitted {
    /// The worker is still serving this request (neither done with it nor gone).
    pub fn serving(&self) -> bool {
        let Some(shared) = shared() else { return false };
        let slot = &shared.slots[self.slot];
        slot.job.load(Ordering::Acquire) == self.job
            && matches!(slot.state.load(Ordering::Acquire), SUBMITTED | RUNNING)
            && slot.worker_pid.load(Ordering::Acquire) == self.pid
            // SAFETY: signal 0 only checks that the process exists.
            && unsafe { kill(self.pid, 0) } == 0
    }

    /// SIGTERM the worker if it is still serving this request (a canceled caller, a budget
    /// passed): it ends at its next interrupt check and empties its slot; the next request
    /// starts a fresh worker. Never a worker that has moved on to someone else's request.
    pub fn terminate(&self) {
        if self.serving() {
            // SAFETY: SIGTERM to a replay worker of ours; kill never raises.
            unsafe { kill(self.pid, 15) };
        }
    }
}

/// Hand the request in DSM segment `handle` to a warm worker of this database, starting one
/// if a slot is free. None: no warm worker can take it (use a one-shot worker).
pub fn submit(handle: pg_sys::dsm_handle) -> Option<Submitted> {
    let shared = shared()?;
    let wanted = gucs::replay_workers() as usize;
    if wanted == 0 {
        return None;
    }
    // SAFETY: the current database's oid, set at connection.
    let database = unsafe { pg_sys::MyDatabaseId }.to_u32();
    let slots = &shared.slots[..wanted.min(SLOTS)];
    let settings = settings_fingerprint();
    let idle = |slot: &Slot| {
        if slot.database.load(Ordering::Acquire) != database {
            return false;
        }
        if slot.settings.load(Ordering::Acquire) != settings {
            // Connected before an ALTER DATABASE/ROLE ... SET: its settings (the planner's,
            // optidb.trusted_roles) are not what a new session gets. Let it go.
            if slot
                .state
                .compare_exchange(IDLE, EXITING, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                set_latch(slot.worker_latch.load(Ordering::Acquire));
            }
            return false;
        }
        slot.state
            .compare_exchange(IDLE, CLAIMED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    };
    let index = match slots.iter().position(idle) {
        Some(i) => i,
        None => start(shared, slots, database)?,
    };
    let slot = &shared.slots[index];
    let job = shared.next.fetch_add(1, Ordering::AcqRel) + 1;
    slot.job.store(job, Ordering::Release);
    slot.request.store(handle, Ordering::Release);
    slot.caller_latch.store(my_latch(), Ordering::Release);
    slot.keep_ms
        .store(gucs::replay_idle_timeout_ms(), Ordering::Release);
    let pid = slot.worker_pid.load(Ordering::Acquire);
    // A worker killed while we claimed it has emptied the slot: leave it so.
    slot.state
        .compare_exchange(CLAIMED, SUBMITTED, Ordering::AcqRel, Ordering::Acquire)
        .ok()?;
    set_latch(slot.worker_latch.load(Ordering::Acquire));
    Some(Submitted {
        slot: index,
        job,
        pid,
    })
}

/// What a new worker session of this database starts with besides the server's configuration
/// (which a warm worker reloads on SIGHUP): the ALTER DATABASE/ROLE ... SET rows that apply to
/// it, as a hash. A warm worker whose session started with other rows is not reused.
fn settings_fingerprint() -> u64 {
    rows::select_kept(
        "replay settings",
        "SELECT pg_catalog.hashtextextended(COALESCE(pg_catalog.string_agg( \
             s.setdatabase::text || '/' || s.setrole::text || '=' \
             || pg_catalog.array_to_string(s.setconfig, ','), ';' \
             ORDER BY s.setdatabase, s.setrole), ''), 0) AS fingerprint \
         FROM pg_catalog.pg_db_role_setting s \
         WHERE s.setdatabase IN (0, $1) AND s.setrole IN (0, $2)",
        &[
            // SAFETY: the current database's oid, set at connection.
            unsafe { pg_sys::MyDatabaseId }.into(),
            pg_sys::Oid::from(pg_sys::BOOTSTRAP_SUPERUSERID).into(),
        ],
        |row| row.opt::<i64>("fingerprint"),
    )
    .pop()
    .flatten()
    .unwrap_or(0) as u64
}

/// Start a warm worker in an empty slot and wait until it is idle; it is then CLAIMED for this
/// caller. None when no slot is empty or the worker does not come up.
fn start(shared: &Slots, slots: &[Slot], database: u32) -> Option<usize> {
    let index = slots.iter().position(|slot| {
        slot.state
            .compare_exchange(EMPTY, STARTING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    })?;
    let slot = &shared.slots[index];
    let ticket = shared.next.fetch_add(1, Ordering::AcqRel) + 1;
    slot.ticket.store(ticket, Ordering::Release);
    slot.database.store(database, Ordering::Release);
    slot.worker_pid.store(0, Ordering::Release);
    slot.caller_latch.store(my_latch(), Ordering::Release);
    slot.keep_ms
        .store(gucs::replay_idle_timeout_ms(), Ordering::Release);
    let argument = (ticket << 8) | index as u64;
    let started = BackgroundWorkerBuilder::new("optidb warm replay")
        .set_type(BACKEND_TYPE)
        .set_library("optidb")
        .set_function("optidb_warm_replay_main")
        .set_argument(Some(pg_sys::Datum::from(argument)))
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::ConsistentState)
        .set_restart_time(None)
        // SAFETY: this backend's pid.
        .set_notify_pid(unsafe { pg_sys::MyProcPid })
        .load_dynamic();
    let Ok(worker) = started else {
        slot.state.store(EMPTY, Ordering::Release);
        return None;
    };
    let begun = std::time::Instant::now();
    loop {
        // The worker goes IDLE when ready; claim it before anyone else does.
        if slot.ticket.load(Ordering::Acquire) == ticket
            && slot
                .state
                .compare_exchange(IDLE, CLAIMED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            return Some(index);
        }
        let stopped = matches!(
            worker.pid(),
            Err(pgrx::bgworkers::BackgroundWorkerStatus::Stopped)
                | Err(pgrx::bgworkers::BackgroundWorkerStatus::PostmasterDied)
        );
        if stopped || begun.elapsed().as_millis() > START_WAIT_MS {
            // A worker that never ran cannot empty its slot: do it for it (only while the
            // slot still waits for that worker).
            if stopped {
                let _ = slot.state.compare_exchange(
                    STARTING,
                    EMPTY,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
            }
            return None;
        }
        wait(10);
    }
}

/// Wait on this backend's latch for at most `ms`; a cancel of the caller raises here.
pub fn wait(ms: i64) {
    // SAFETY: this backend's own latch; guarded calls that only wait.
    unsafe {
        pg_sys::WaitLatch(
            pg_sys::MyLatch,
            (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
            ms,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
    }
    pgrx::check_for_interrupts!();
}

/// Ask every idle warm worker to exit now. Called before DROP DATABASE, CREATE DATABASE and
/// ALTER DATABASE, which refuse to run while other sessions (ours included) are connected to
/// the database concerned; a busy worker exits when its idle timeout passes.
pub fn release_idle() {
    let Some(shared) = shared() else { return };
    for slot in &shared.slots {
        if slot
            .state
            .compare_exchange(IDLE, EXITING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            set_latch(slot.worker_latch.load(Ordering::Acquire));
        }
    }
}

/// Which slot and ticket this worker serves (from its start argument).
static mut MINE: (usize, u64) = (usize::MAX, 0);

/// At exit, however it happens: empty the slot if it is still this worker's.
#[pg_guard]
unsafe extern "C-unwind" fn release_slot(_code: i32, _arg: pg_sys::Datum) {
    // SAFETY: MINE is written once at start, on this process's only thread.
    let (index, ticket) = unsafe { MINE };
    let Some(shared) = shared() else { return };
    if let Some(slot) = shared.slots.get(index) {
        if slot.ticket.load(Ordering::Acquire) == ticket {
            slot.worker_pid.store(0, Ordering::Release);
            slot.worker_latch.store(0, Ordering::Release);
            slot.state.store(EMPTY, Ordering::Release);
            // A caller waiting for this worker notices at once.
            set_latch(slot.caller_latch.load(Ordering::Acquire));
        }
    }
}

/// The warm worker: connect, go IDLE, serve requests until idle for the timeout.
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn optidb_warm_replay_main(arg: pg_sys::Datum) {
    let argument = arg.value() as u64;
    let (index, ticket) = ((argument & 0xff) as usize, argument >> 8);
    let Some(shared) = shared() else { return };
    let Some(slot) = shared.slots.get(index) else {
        return;
    };
    // SAFETY: standard background worker start-up, before anything else runs: our SIGTERM
    // handler (see signals.rs), the exit callback that empties the slot, a resource owner for
    // the segments we attach.
    unsafe {
        MINE = (index, ticket);
        crate::postgres::signals::set_sigterm_handler();
        pg_sys::before_shmem_exit(Some(release_slot), pg_sys::Datum::from(0));
        pg_sys::CurrentResourceOwner =
            pg_sys::ResourceOwnerCreate(std::ptr::null_mut(), c"optidb warm replay".as_ptr());
    }
    // A reload (SIGHUP) is applied before the next batch, as a new worker would read it.
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP);
    if slot.ticket.load(Ordering::Acquire) != ticket {
        return;
    }
    BackgroundWorker::connect_worker_to_spi_by_oid(
        Some(slot.database.load(Ordering::Acquire).into()),
        Some(pg_sys::BOOTSTRAP_SUPERUSERID.into()),
    );
    // optidb's own work: a worker's SQL is top-level to pg_stat_statements.
    let settings =
        BackgroundWorker::transaction(|| crate::postgres::own_work::run(settings_fingerprint));
    slot.settings.store(settings, Ordering::Release);
    // SAFETY: this process's pid and latch.
    slot.worker_pid
        .store(unsafe { pg_sys::MyProcPid }, Ordering::Release);
    slot.worker_latch.store(my_latch(), Ordering::Release);
    if slot
        .state
        .compare_exchange(STARTING, IDLE, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return;
    }
    set_latch(slot.caller_latch.load(Ordering::Acquire));
    let mut idle_since = std::time::Instant::now();
    loop {
        if slot.state.load(Ordering::Acquire) == EXITING {
            return; // release_idle: its database is being dropped or copied
        }
        if slot
            .state
            .compare_exchange(SUBMITTED, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            if BackgroundWorker::sighup_received() {
                // SAFETY: a guarded call outside any transaction, between batches: where
                // PostgreSQL's own processes reload the configuration.
                unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
            }
            let handle = slot.request.load(Ordering::Acquire);
            let caller = slot.caller_latch.load(Ordering::Acquire);
            let clean = crate::postgres::replay_worker::serve_warm(handle);
            // Something escaped a job's rollback: this session is not reused, and nobody may
            // claim the slot before the exit callback empties it.
            slot.state
                .store(if clean { IDLE } else { EXITING }, Ordering::Release);
            set_latch(caller);
            if !clean {
                return;
            }
            idle_since = std::time::Instant::now();
            continue;
        }
        let keep = slot.keep_ms.load(Ordering::Acquire) as u128;
        if idle_since.elapsed().as_millis() >= keep
            && slot
                .state
                .compare_exchange(IDLE, EXITING, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            return;
        }
        let left = keep.saturating_sub(idle_since.elapsed().as_millis()).max(1);
        // SAFETY: this worker's latch; a SIGTERM sets ProcDiePending and ends the process at
        // the interrupt check that follows.
        unsafe {
            pg_sys::WaitLatch(
                pg_sys::MyLatch,
                (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
                left.min(60_000) as i64,
                pg_sys::PG_WAIT_EXTENSION,
            );
            pg_sys::ResetLatch(pg_sys::MyLatch);
        }
        pgrx::check_for_interrupts!();
    }
}
