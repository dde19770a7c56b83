//! Replays run in a backend of their own: a background worker that runs one statement owner's
//! batch of jobs (EXPLAIN, hypothetical-index and real-index simulations). Usually a warm one
//! (src/postgres/warm_replay.rs) that serves every owner's batches in turn and resets its
//! session after each (`reset_session`); else one started for the batch, which exits after it.
//!
//! Why not in the caller's backend: planning and running a statement runs its functions, and
//! even as their owner inside a security-restricted operation they would see and touch the
//! caller's session: its settings (a SET outlives the replay), prepared statements, cursors,
//! temporary schema (searched first for relations), session_user, custom settings, advisory
//! locks and hypothetical indexes. The worker shares none of that. It connects to the
//! database, becomes the owner (session and current user, so row-level security written with
//! session_user sees the owner too), and runs every job as the owner inside a
//! security-restricted operation with the statement's search_path (src/postgres/replay.rs), each job in
//! a subtransaction that is rolled back. Whatever the statement's code does to the worker's
//! session ends with the batch (`reset_session`) or with the worker.
//!
//! The request and the answer travel through a dynamic shared memory segment the caller
//! creates (JSON: the jobs, then the plans or failures). Limits are read by the caller before
//! any of the statement's code runs, and travel with the request. If the caller is canceled,
//! the worker is terminated (a warm one only while it still runs the caller's job). A one-shot
//! batch needs a free background worker slot (max_worker_processes); without one the batch
//! fails with a message that says so.

use crate::postgres::explain::{self, Mode, Replay, Values};
use crate::postgres::guarded::{self, Failure, Limit};
use crate::postgres::gucs;
use crate::postgres::hypopg::Hypopg;
use crate::postgres::own_work;
use crate::postgres::replay::{self, Context};
use crate::postgres::settings::{self, Setting};
use crate::postgres::signals;
use crate::postgres::vetting::Vetted;
use crate::postgres::warm_replay;
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime};
use pgrx::pg_sys;
use pgrx::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How long past the build's and the measured run's timeouts a real simulation may still hold
/// its lock before its worker is terminated (the caller polls every 100 ms).
const DEADLINE_SLACK_MS: u64 = 1000;

/// Room for the answer, per job (plans: a few kB to a few hundred kB each), and its bounds. The
/// segment takes that room from /dev/shm (posix shared memory is allocated when created), which
/// a container may keep small (Docker's default is 64 MB for the whole server): a simulation of a
/// few jobs asks for the minimum, a scan's batch of many statements for up to the maximum.
/// Allocating it is paid per batch (Linux zeroes every page at creation: 8 MB was 17% of the
/// caller's CPU samples in a 50-owner scan), so the room follows the jobs; a batch's jobs share
/// it, so one large plan still fits beside small ones.
const ANSWER_BYTES_PER_JOB: usize = 512 << 10;
const MIN_ANSWER_BYTES: usize = 1 << 20;
const MAX_ANSWER_BYTES: usize = 64 << 20;

fn answer_room(jobs: usize) -> usize {
    (jobs * ANSWER_BYTES_PER_JOB).clamp(MIN_ANSWER_BYTES, MAX_ANSWER_BYTES)
}

/// A statement to plan: its text, the types to declare, and its values (None: generic plan,
/// NULL for each of `placeholders` parameters).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Statement {
    pub sql: String,
    pub param_types: Vec<String>,
    pub values: Option<Vec<Option<String>>>,
    pub placeholders: usize,
    /// The relations it names (as written), and the ones it used when it ran (empty:
    /// unknown): a replay that resolves a name elsewhere is refused.
    pub tables: Vec<String>,
    pub relations: Vec<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Job {
    /// EXPLAIN (costs).
    Plan(Statement),
    /// EXPLAIN, hypothetical index, EXPLAIN (hypopg in `hypopg_schema`).
    Hypothetical {
        statement: Statement,
        index_sql: String,
        hypopg_schema: String,
    },
    /// The what-if search of one statement (src/api/index_search.rs): its cost with the single
    /// column candidates, then with the ones its plan used plus the column lists, then with
    /// each index of its best set alone.
    WhatIf {
        statement: Statement,
        singles: Vec<String>,
        multis: Vec<String>,
        hypopg_schema: String,
    },
    /// EXPLAIN ANALYZE, CREATE INDEX as `builder` (the table's owner), EXPLAIN ANALYZE; all
    /// rolled back. Read-only statements only (the caller checked).
    Real {
        statement: Statement,
        index_sql: String,
        builder: u32,
    },
    /// EXPLAIN, CREATE INDEX `index_name` as `builder` (the table's owner), EXPLAIN; all
    /// rolled back. For an index hypopg cannot make (a GIN trigram index, advice_checks): the
    /// build's time and the index's size come back with both costs.
    Trial {
        statement: Statement,
        index_sql: String,
        schema: String,
        index_name: String,
        builder: u32,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Answer {
    Plan(Value),
    Compared { before: Value, after: Value },
    WhatIf(WhatIf),
    Tried(Tried),
}

/// What a trial build measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Tried {
    pub before_cost: f64,
    pub after_cost: f64,
    /// The plan with the index reads it.
    pub used: bool,
    pub build_ms: f64,
    pub index_bytes: i64,
}

/// What a statement's what-if search measured. Candidates are numbered singles first, then
/// the column lists.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WhatIf {
    pub base_cost: f64,
    /// Planned cost with these candidates present (each set: the ones its plan used).
    pub configs: Vec<(Vec<usize>, f64)>,
    /// hypopg's size estimate of each candidate that a plan used.
    pub bytes: Vec<(usize, i64)>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Limits {
    statement: Limit,
    build: Limit,
    lock: Limit,
}

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    database: u32,
    owner: u32,
    search_path: String,
    limits: Limits,
    jobs: Vec<Job>,
}

/// Run each item's jobs as its context's owner; items with the same owner and search_path
/// share one worker. Answers come back per item, one per job, in order.
pub fn run_batches(items: Vec<(Context, Vec<Job>)>) -> Vec<Vec<Result<Answer, Failure>>> {
    let mut groups: Vec<(Context, Vec<usize>)> = Vec::new();
    for (i, (context, _)) in items.iter().enumerate() {
        let same =
            |c: &Context| c.owner.oid == context.owner.oid && c.search_path == context.search_path;
        match groups.iter_mut().find(|(c, _)| same(c)) {
            Some((_, members)) => members.push(i),
            None => groups.push((context.clone(), vec![i])),
        }
    }
    let sizes: Vec<usize> = items.iter().map(|(_, jobs)| jobs.len()).collect();
    let mut jobs: Vec<Option<Vec<Job>>> = items.into_iter().map(|(_, j)| Some(j)).collect();
    let mut answers: Vec<Vec<Result<Answer, Failure>>> = vec![Vec::new(); sizes.len()];
    for (context, members) in groups {
        let batch: Vec<Job> = members
            .iter()
            .flat_map(|i| jobs[*i].take().unwrap_or_default())
            .collect();
        let mut results = run(&context, batch).into_iter();
        for i in members {
            answers[i] = results.by_ref().take(sizes[i]).collect();
        }
    }
    answers
}

/// Run `jobs` as `context`'s owner in a worker of their own; one answer per job.
pub fn run(context: &Context, jobs: Vec<Job>) -> Vec<Result<Answer, Failure>> {
    if jobs.is_empty() {
        return Vec::new();
    }
    let count = jobs.len();
    let request = Request {
        // SAFETY: the current database's oid, set at connection.
        database: unsafe { pg_sys::MyDatabaseId }.to_u32(),
        owner: context.owner.oid.to_u32(),
        search_path: context.search_path.clone(),
        limits: Limits {
            statement: gucs::statement_limit(),
            build: gucs::real_simulation_limit(),
            lock: gucs::lock_limit(),
        },
        jobs,
    };
    match in_worker(&request) {
        Ok(answers) if answers.len() == count => answers,
        Ok(_) => vec![Err(Failure::new("XX000", "the replay worker answered wrongly")); count],
        Err(failure) => vec![Err(failure); count],
    }
}

/// The shared segment: [request length][request][answer state][answer length][deadline]
/// [answer]. The deadline (milliseconds since the epoch, 0: none) is set by the worker while a
/// real simulation holds a lock that blocks writers of the owner's table; the caller terminates
/// the worker once it passes, whatever the replayed code does with cancels. Detached when
/// dropped, on every path (a failure returned, not raised, would otherwise leave the mapping to
/// the transaction's resource owner, which warns of a leak at commit).
struct Segment {
    seg: *mut pg_sys::dsm_segment,
    base: *mut u8,
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: our own mapping, attached or created once and detached only here.
        unsafe { pg_sys::dsm_detach(self.seg) };
    }
}

const DONE: u64 = 0x6f70_7469_646f_6e65; // "optidone"

impl Segment {
    fn answer_at(request_len: usize) -> usize {
        (8 + request_len).next_multiple_of(8)
    }

    fn deadline_at(request_len: usize) -> usize {
        Self::answer_at(request_len) + 16
    }

    fn answer_bytes_at(request_len: usize) -> usize {
        Self::answer_at(request_len) + 24
    }

    fn read_u64(&self, at: usize) -> u64 {
        // SAFETY: `at` is inside the segment (callers use offsets of the layout above).
        unsafe { std::ptr::read_unaligned(self.base.add(at).cast::<u64>()) }
    }

    fn write_u64(&self, at: usize, v: u64) {
        // SAFETY: as read_u64.
        unsafe { std::ptr::write_unaligned(self.base.add(at).cast::<u64>(), v) }
    }

    fn bytes(&self, at: usize, len: usize) -> &[u8] {
        // SAFETY: callers stay inside the segment's size.
        unsafe { std::slice::from_raw_parts(self.base.add(at), len) }
    }

    fn write_bytes(&self, at: usize, bytes: &[u8]) {
        // SAFETY: callers stay inside the segment's size.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.base.add(at), bytes.len()) }
    }
}

fn in_worker(request: &Request) -> Result<Vec<Result<Answer, Failure>>, Failure> {
    let bytes = serde_json::to_vec(request).expect("a request serializes");
    let answer_at = Segment::answer_at(bytes.len());
    let room = answer_room(request.jobs.len());
    let size = Segment::answer_bytes_at(bytes.len()) + room;
    // SAFETY: a new segment owned by the current resource owner (detached at transaction end,
    // also on error); its handle is what the worker attaches to.
    let segment = unsafe {
        let seg = pg_sys::dsm_create(size, 0);
        Segment {
            seg,
            base: pg_sys::dsm_segment_address(seg).cast(),
        }
    };
    segment.write_u64(0, bytes.len() as u64);
    segment.write_bytes(8, &bytes);
    segment.write_u64(answer_at, 0);
    let deadline_at = Segment::deadline_at(bytes.len());
    segment.write_u64(deadline_at, 0);
    // SAFETY: reads the segment's handle.
    let handle = unsafe { pg_sys::dsm_segment_handle(segment.seg) };
    let budget = budget_ms(request);
    let deadline = || segment.read_u64(deadline_at);
    let done = || segment.read_u64(answer_at) == DONE;
    if let Some(warm) = warm_replay::submit(handle) {
        // A cancel while waiting must not leave the warm worker running our job.
        let terminate = TerminateWarmOnDrop(&warm);
        let finished = wait_for_warm(&warm, budget, deadline, &done);
        std::mem::forget(terminate);
        finished?;
    } else {
        one_shot(handle, budget, deadline)?;
    }
    let answer = if done() {
        // Pairs with the worker's Release fence before its DONE mark.
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        let len = segment.read_u64(answer_at + 8) as usize;
        let at = Segment::answer_bytes_at(bytes.len());
        serde_json::from_slice(segment.bytes(at, len.min(room)))
            .map_err(|e| Failure::new("XX000", format!("unreadable replay answer: {e}")))
    } else {
        Err(Failure::new(
            "58000",
            "the replay worker ended without an answer (it was terminated or failed: see the \
             server log)",
        ))
    };
    answer
}

/// Start a worker for this one request and wait until it exits.
fn one_shot(
    handle: pg_sys::dsm_handle,
    budget: i64,
    deadline: impl Fn() -> u64,
) -> Result<(), Failure> {
    let worker = BackgroundWorkerBuilder::new("optidb replay")
        .set_type("optidb replay")
        .set_library("optidb")
        .set_function("optidb_replay_main")
        .set_argument(Some(pg_sys::Datum::from(handle)))
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::ConsistentState)
        .set_restart_time(None)
        // SAFETY: this backend's pid.
        .set_notify_pid(unsafe { pg_sys::MyProcPid })
        .load_dynamic()
        .map_err(|_| {
            Failure::new(
                "53400",
                "no background worker slot is free to replay the statement (every one of \
                 max_worker_processes is in use): retry, or raise max_worker_processes",
            )
        })?;
    let pid = worker.wait_for_startup().map_err(|status| {
        Failure::new(
            "58000",
            format!("the replay worker did not start ({status:?}); see the server log"),
        )
    })?;
    // A cancel while waiting must not leave the worker running on its own.
    let terminate = TerminateOnDrop(pid);
    let finished = wait_or_terminate(&worker, pid, budget, deadline);
    std::mem::forget(terminate);
    finished
}

/// Wait until the warm worker has left our job (answered and reset, or ended), terminating it
/// past the budget or the deadline it announced. Interruptible: a cancel of the
/// caller raises here, and TerminateWarmOnDrop ends the worker if it still runs our job.
fn wait_for_warm(
    warm: &warm_replay::Submitted,
    budget_ms: i64,
    deadline: impl Fn() -> u64,
    done: &dyn Fn() -> bool,
) -> Result<(), Failure> {
    let started = std::time::Instant::now();
    let mut terminated = false;
    loop {
        // The worker leaves our job once its session is reset (or when it ends): the DONE mark
        // then tells whether it answered.
        if !warm.serving() {
            break;
        }
        let announced = deadline();
        let past_deadline = announced != 0 && epoch_ms() > announced;
        if !terminated && (past_deadline || started.elapsed().as_millis() as i64 > budget_ms) {
            warm.terminate();
            terminated = true;
        }
        warm_replay::wait(100);
    }
    if terminated && !done() {
        return Err(Failure::TimedOut {
            after_ms: budget_ms as i32,
            setting: crate::postgres::guarded::TimeoutSetting::Statement,
        });
    }
    Ok(())
}

/// Terminates the warm worker while a cancel of the caller unwinds, if it still runs our job.
struct TerminateWarmOnDrop<'a>(&'a warm_replay::Submitted);

impl Drop for TerminateWarmOnDrop<'_> {
    fn drop(&mut self) {
        self.0.terminate();
    }
}

/// The longest a batch may take: each job's own limits, plus time to start. The statement's
/// code can catch the cancel that enforces a limit inside the worker (a PL/pgSQL EXCEPTION WHEN
/// query_canceled); it cannot catch being terminated, which is what happens past this budget.
fn budget_ms(request: &Request) -> i64 {
    let l = &request.limits;
    let (statement, build, lock) = (l.statement.ms as i64, l.build.ms as i64, l.lock.ms as i64);
    let jobs: i64 = request
        .jobs
        .iter()
        .map(|job| match job {
            Job::Plan(_) => statement,
            Job::Hypothetical { .. } => 3 * statement,
            Job::WhatIf { .. } => WHAT_IF_PLANS * statement,
            Job::Real { .. } | Job::Trial { .. } => 2 * statement + build + lock,
        })
        .sum();
    jobs + 10_000
}

/// Wait until the worker exits, terminating it once `budget_ms` have passed or the deadline it
/// announced (`deadline()`, epoch milliseconds, 0: none) is behind. Interruptible: a cancel of
/// the caller raises here (and TerminateOnDrop ends the worker).
fn wait_or_terminate(
    worker: &pgrx::bgworkers::DynamicBackgroundWorker,
    pid: pg_sys::pid_t,
    budget_ms: i64,
    deadline: impl Fn() -> u64,
) -> Result<(), Failure> {
    use pgrx::bgworkers::BackgroundWorkerStatus;
    let started = std::time::Instant::now();
    let mut terminated = false;
    loop {
        match worker.pid() {
            Err(BackgroundWorkerStatus::Stopped) => break,
            Err(BackgroundWorkerStatus::PostmasterDied) => {
                return Err(Failure::new("58000", "the postmaster died during a replay"))
            }
            _ => {}
        }
        let announced = deadline();
        let past_deadline = announced != 0 && epoch_ms() > announced;
        if !terminated && (past_deadline || started.elapsed().as_millis() as i64 > budget_ms) {
            drop(TerminateOnDrop(pid)); // SIGTERM
            terminated = true;
        }
        // SAFETY: this backend's latch (set by the postmaster when the worker's state changes,
        // since we are its notify_pid); the calls are guarded and only wait.
        unsafe {
            pg_sys::WaitLatch(
                pg_sys::MyLatch,
                (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
                100,
                pg_sys::PG_WAIT_EXTENSION,
            );
            pg_sys::ResetLatch(pg_sys::MyLatch);
        }
        pgrx::check_for_interrupts!();
    }
    if terminated {
        return Err(Failure::TimedOut {
            after_ms: budget_ms as i32,
            setting: crate::postgres::guarded::TimeoutSetting::Statement,
        });
    }
    Ok(())
}

fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Terminates the worker with this pid when dropped, i.e. while a cancel of the caller unwinds
/// (the worker is still running then: its pid cannot have been reused).
struct TerminateOnDrop(pg_sys::pid_t);

impl Drop for TerminateOnDrop {
    fn drop(&mut self) {
        unsafe extern "C" {
            fn kill(pid: pg_sys::pid_t, sig: std::ffi::c_int) -> std::ffi::c_int;
        }
        // SAFETY: SIGTERM to our own worker, which ends it (FATAL); kill never raises.
        unsafe { kill(self.0, 15) };
    }
}

/// The one-shot worker: attach the segment, connect, serve its one request, exit.
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn optidb_replay_main(arg: pg_sys::Datum) {
    // SAFETY: standard background worker start-up: a resource owner for the segment mapping,
    // then the segment the caller created (it outlives us: the caller waits for our exit).
    let segment = unsafe {
        // SIGTERM (the budget, the real-mode deadline, a canceled caller) must end the worker at
        // its next interrupt check, as in a backend: PostgreSQL's default handler for background
        // workers raises FATAL inside the signal handler, which a replayed statement caught in a
        // critical section (writing WAL) turned into a PANIC that restarted the whole server.
        signals::set_sigterm_handler();
        pg_sys::BackgroundWorkerUnblockSignals();
        pg_sys::CurrentResourceOwner =
            pg_sys::ResourceOwnerCreate(std::ptr::null_mut(), c"optidb replay".as_ptr());
        let Some(segment) = Segment::attach(arg.value() as pg_sys::dsm_handle) else {
            return;
        };
        segment
    };
    let Some(request) = segment.request() else {
        return;
    };
    BackgroundWorker::connect_worker_to_spi_by_oid(
        Some(request.database.into()),
        Some(pg_sys::BOOTSTRAP_SUPERUSERID.into()),
    );
    serve(&segment, &request);
}

/// A warm worker's request (src/postgres/warm_replay.rs): serve it as a one-shot worker would,
/// then put the session back as a fresh worker's. False when that cannot be vouched for (an
/// error escaped the batch or the reset): the worker must exit rather than serve again.
pub fn serve_warm(handle: pg_sys::dsm_handle) -> bool {
    let clean = PgTryBuilder::new(|| {
        // SAFETY: the caller's segment (it waits for our answer, so it is still there; if it
        // gave up, attach fails and there is nothing to do).
        if let Some(segment) = unsafe { Segment::attach(handle) } {
            if let Some(request) = segment.request() {
                forget_plans_of_another_owner(request.owner);
                serve(&segment, &request);
            }
        }
        BackgroundWorker::transaction(reset_session);
        true
    })
    .catch_others(|caught| {
        let report = match &caught {
            pgrx::pg_sys::panic::CaughtError::PostgresError(r)
            | pgrx::pg_sys::panic::CaughtError::ErrorReport(r) => r.message().to_string(),
            pgrx::pg_sys::panic::CaughtError::RustPanic { ereport, .. } => {
                ereport.message().to_string()
            }
        };
        pgrx::warning!("optidb warm replay: a batch failed, the worker exits: {report}");
        false
    })
    .execute();
    clean
}

impl Segment {
    /// # Safety
    /// `handle` names a segment laid out as above (or none: then None).
    unsafe fn attach(handle: pg_sys::dsm_handle) -> Option<Segment> {
        // SAFETY: as the caller promises.
        unsafe {
            let seg = pg_sys::dsm_attach(handle);
            (!seg.is_null()).then(|| Segment {
                seg,
                base: pg_sys::dsm_segment_address(seg).cast(),
            })
        }
    }

    fn request(&self) -> Option<Request> {
        let len = self.read_u64(0) as usize;
        serde_json::from_slice::<Request>(self.bytes(8, len)).ok()
    }
}

/// Run the request's jobs as its owner, in a transaction of their own, and write the answers.
fn serve(segment: &Segment, request: &Request) {
    let len = segment.read_u64(0) as usize;
    let answers = BackgroundWorker::transaction(|| {
        let owner = pg_sys::Oid::from(request.owner);
        let Some(owner) = own_work::run(|| replay::owner(owner)) else {
            let gone = Failure::new("42704", "the statement's role no longer exists");
            return vec![Err(gone); request.jobs.len()];
        };
        // The owner is the session user too, as in a session of its own. It cannot change
        // back: every job runs in a security-restricted operation.
        // SAFETY: a role that exists; sets this session's identity.
        unsafe { pg_sys::SetSessionAuthorization(owner.oid, false) };
        let context = Context {
            owner,
            search_path: request.search_path.clone(),
            path_source: optidb_core::vocabulary::PathSource::Recorded,
        };
        let deadline_at = Segment::deadline_at(len);
        let announce = |deadline: u64| segment.write_u64(deadline_at, deadline);
        // optidb's own SQL here (catalog reads, vetting) resolves names in pg_catalog only;
        // each replay sets the statement's search_path for itself.
        settings::with(
            &[Setting::user("search_path", "pg_catalog, pg_temp")],
            || {
                own_work::run(|| {
                    request
                        .jobs
                        .iter()
                        .map(|job| {
                            let answer = execute(&context, &request.limits, job, &announce);
                            // The job's subtransaction is rolled back: its locks are gone.
                            announce(0);
                            answer
                        })
                        .collect::<Vec<_>>()
                })
            },
        )
    });
    let room = answer_room(request.jobs.len());
    let mut bytes = serde_json::to_vec(&answers).expect("answers serialize");
    if bytes.len() > room {
        // Every job's answer is lost then: each says why, rather than no answer at all.
        let too_large = Failure::new(
            "54000",
            format!(
                "the replay's answer ({} bytes) exceeds its room in shared memory ({room} bytes)",
                bytes.len()
            ),
        );
        let failures: Vec<Result<Answer, Failure>> = vec![Err(too_large); answers.len()];
        bytes = serde_json::to_vec(&failures).expect("answers serialize");
    }
    let answer_at = Segment::answer_at(len);
    segment.write_u64(answer_at + 8, bytes.len() as u64);
    segment.write_bytes(Segment::answer_bytes_at(len), &bytes);
    std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
    segment.write_u64(answer_at, DONE);
}

/// The owner whose code the warm worker's plan cache may hold plans of (0: nobody's yet).
static mut PLANS_OF: u32 = 0;

/// DISCARD PLANS before a batch of another owner than the last one: every cached plan (the
/// PL/pgSQL functions' plans of the last owner's replays, and optidb's own kept catalog plans)
/// is marked for re-analysis and re-planning. Why not only the setting-dependent parts: a
/// generic plan keeps what was folded while it was made (an IMMUTABLE function that reads
/// current_user or a setting is folded as the owner who planned it), and the plan cache
/// revalidates on search_path and row-level security role only. Batches of the same owner
/// keep them: what they hold is that owner's own (a simulate() repeated on one statement
/// re-plans nothing of optidb's). Called outside any transaction, before the batch's.
fn forget_plans_of_another_owner(owner: u32) {
    // SAFETY: PLANS_OF is read and written only here, on the worker's only thread.
    let last = unsafe { PLANS_OF };
    if last != owner {
        // SAFETY: a guarded call that only marks this session's cached plans invalid, as
        // DISCARD PLANS does; allowed outside a transaction.
        unsafe { pg_sys::ResetPlanCache() };
        // SAFETY: as above.
        unsafe { PLANS_OF = owner };
    }
}

/// Put a warm worker's session back as a new worker's, as DISCARD ALL does (which cannot run
/// inside a function), plus hypopg's hypothetical indexes: the bootstrap superuser's identity
/// and every setting's default; no prepared statement, portal, LISTEN, session advisory lock,
/// temporary object or sequence state left by the batch's code (cached plans: before the next
/// batch, if it is another owner's). Settings and
/// identity are already restored by the batch itself (GUC nest levels, the restricted
/// operation); this is the second line, for what outlives a rolled-back subtransaction.
#[allow(
    ffi_unwind_calls,
    reason = "Async_UnlistenAll and ResetSequenceCaches are called inside pg_guard_ffi_boundary: \
              an ERROR they raise comes back as a Rust panic"
)]
fn reset_session() {
    // SAFETY: guarded calls on this worker's own session state, inside a transaction, as
    // PostgreSQL's DiscardAll makes them; the worker connected as the bootstrap superuser, so
    // it may take that identity back.
    unsafe {
        pg_sys::SetSessionAuthorization(pg_sys::BOOTSTRAP_SUPERUSERID.into(), true);
        pg_sys::ResetAllOptions();
        pg_sys::DropAllPreparedStatements();
        pg_sys::PortalHashTableDeleteAll();
        pg_sys::ffi::pg_guard_ffi_boundary(|| Async_UnlistenAll());
        pg_sys::LockReleaseAll(USER_LOCKMETHOD, true);
        // Cached plans: reset before the next batch when it is another owner's
        // (forget_plans_of_another_owner), not here.
        pg_sys::ResetTempTableNamespace();
        pg_sys::ffi::pg_guard_ffi_boundary(|| ResetSequenceCaches());
    }
    // hypopg's reset, called by OID (no name is resolved), when hypopg is installed here. Its
    // lookup is optidb's own work (a worker's SQL is top-level to pg_stat_statements); not the
    // resets above, which own_work's GUC level would undo.
    let reset = own_work::run(|| {
        crate::postgres::rows::select_kept(
            "hypopg reset function",
            "SELECT p.oid AS reset FROM pg_catalog.pg_proc p \
         JOIN pg_catalog.pg_depend d \
           ON d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass \
          AND d.objid OPERATOR(pg_catalog.=) p.oid AND d.deptype OPERATOR(pg_catalog.=) 'e' \
         JOIN pg_catalog.pg_extension e ON e.oid OPERATOR(pg_catalog.=) d.refobjid \
         WHERE e.extname OPERATOR(pg_catalog.=) 'hypopg' \
           AND p.proname OPERATOR(pg_catalog.=) 'hypopg_reset' \
           AND p.pronargs OPERATOR(pg_catalog.=) 0",
            &[],
            |row| row.get::<pg_sys::Oid>("reset"),
        )
        .pop()
    });
    if let Some(reset) = reset {
        // SAFETY: hypopg's own hypopg_reset(), a C function of no arguments.
        unsafe { pg_sys::OidFunctionCall0Coll(reset, pg_sys::InvalidOid) };
    }
}

// commands/async.h and commands/sequence.h are not in pgrx's bindings. Called inside
// pg_guard_ffi_boundary, so an ERROR comes back as a Rust panic.
unsafe extern "C-unwind" {
    fn Async_UnlistenAll();
    fn ResetSequenceCaches();
}

/// lock.h's USER_LOCKMETHOD: advisory locks.
const USER_LOCKMETHOD: pg_sys::LOCKMETHODID = 2;

/// One job, in a subtransaction that is always rolled back: nothing it did stays, even in
/// this worker's own session.
fn execute(
    context: &Context,
    limits: &Limits,
    job: &Job,
    announce: &(dyn Fn(u64) + std::panic::RefUnwindSafe),
) -> Result<Answer, Failure> {
    let lock = format!("{}ms", limits.lock.ms);
    guarded::run_rolled_back(None, || {
        // A lock held by anyone (the caller included) is waited for at most this long.
        settings::with(&[Setting::user("lock_timeout", &lock)], || match job {
            Job::Plan(s) => explain::plan(replay_of(context, s, limits.statement), Mode::Costs)
                .map(|p| Answer::Plan(p.json)),
            Job::Hypothetical {
                statement,
                index_sql,
                hypopg_schema,
            } => {
                let replay = replay_of(context, statement, limits.statement);
                let before = explain::plan(replay, Mode::Costs)?;
                let hypopg = Hypopg::in_schema(hypopg_schema);
                let after = hypopg.with_index(&builder_context(context), index_sql, || {
                    explain::plan(replay, Mode::Costs)
                })??;
                Ok(Answer::Compared {
                    before: before.json,
                    after: after.json,
                })
            }
            Job::WhatIf {
                statement,
                singles,
                multis,
                hypopg_schema,
            } => {
                let replay = replay_of(context, statement, limits.statement);
                let hypopg = Hypopg::in_schema(hypopg_schema);
                what_if(replay, &builder_context(context), &hypopg, singles, multis)
                    .map(Answer::WhatIf)
            }
            Job::Real {
                statement,
                index_sql,
                builder,
            } => {
                let replay = replay_of(context, statement, limits.statement);
                let builder = table_owner_context(context, *builder)?;
                real(replay, &builder, index_sql, limits, announce)
            }
            Job::Trial {
                statement,
                index_sql,
                schema,
                index_name,
                builder,
            } => {
                let replay = replay_of(context, statement, limits.statement);
                let builder = table_owner_context(context, *builder)?;
                let index = (schema.as_str(), index_name.as_str());
                trial(replay, &builder, index_sql, index, limits, announce).map(Answer::Tried)
            }
        })
    })?
}

/// The context an index is built in: as the table's owner (`builder`), which must still exist.
fn table_owner_context(context: &Context, builder: u32) -> Result<Context, Failure> {
    Ok(Context {
        owner: replay::owner(pg_sys::Oid::from(builder))
            .ok_or_else(|| Failure::new("42704", "the table's owner no longer exists"))?,
        ..builder_context(context)
    })
}

/// The context an index is made in: the same role, but only pg_catalog on the search_path.
/// optidb's index text names every function, type and operator with its schema and the table
/// with its own (optidb_core::index_expression), so nothing else needs resolving, and nothing a
/// statement's search_path holds can stand in for a built-in.
fn builder_context(context: &Context) -> Context {
    Context {
        search_path: "pg_catalog, pg_temp".into(),
        ..context.clone()
    }
}

fn replay_of<'a>(context: &'a Context, s: &'a Statement, limit: Limit) -> Replay<'a> {
    Replay {
        context,
        sql: &s.sql,
        param_types: &s.param_types,
        tables: &s.tables,
        relations: &s.relations,
        values: match &s.values {
            Some(v) => Values::Sampled(v),
            None => Values::Generic {
                count: s.placeholders,
            },
        },
        limit,
    }
}

/// Most plans one what-if job makes: the base, two passes, each index of the best sets alone
/// and each pass's set without each of them.
const WHAT_IF_PLANS: i64 = 3 + 3 * MAX_ALONE as i64;
/// Indexes of a statement's best sets tried alone (and left out).
const MAX_ALONE: usize = 6;

/// The what-if search of one statement, as Dexter and the what-if literature do it: plan it
/// with every single-column candidate present and keep the ones the plan uses; plan it again
/// with those plus every column list and keep what that plan uses (its best set); then plan
/// it with each index of the best sets alone, so the workload selection knows what each buys
/// by itself, and each pass's set of three or more without each of its indexes, so one that
/// adds little to the others is seen to (TPC-H Q8: a set of three where one saved 1.5%, kept
/// because without that plan the set looked all or nothing). The first pass's sets matter too:
/// when storage gives a column list of the best set up for its leading column, the set with
/// that column is then a measured one. Every hypothetical index is dropped after each plan.
fn what_if(
    replay: Replay,
    builder: &Context,
    hypopg: &Hypopg,
    singles: &[String],
    multis: &[String],
) -> Result<WhatIf, Failure> {
    let base = explain::plan(replay, Mode::Costs)?.facts.total_cost;
    let mut out = WhatIf {
        base_cost: base,
        ..WhatIf::default()
    };
    let numbered: Vec<(usize, &String)> = singles.iter().chain(multis).enumerate().collect();
    let try_set = |members: Vec<usize>, out: &mut WhatIf| -> Result<Vec<usize>, Failure> {
        let sqls: Vec<String> = members.iter().map(|i| numbered[*i].1.clone()).collect();
        let (cost, used, sizes) = hypopg.with_indexes(builder, &sqls, |made| {
            let plan = explain::plan(replay, Mode::Costs)?;
            let names = used_index_names(&plan.json);
            let used: Vec<(usize, pgrx::pg_sys::Oid)> = members
                .iter()
                .zip(made)
                .filter_map(|(i, m)| m.as_ref().map(|m| (*i, m)))
                .filter(|(_, m)| names.contains(&m.name))
                .map(|(i, m)| (i, m.oid))
                .collect();
            let sizes: Vec<(usize, i64)> = used
                .iter()
                .filter_map(|(i, oid)| hypopg.size(*oid).map(|b| (*i, b)))
                .collect();
            Ok::<_, Failure>((
                plan.facts.total_cost,
                used.into_iter().map(|(i, _)| i).collect::<Vec<_>>(),
                sizes,
            ))
        })?;
        for (i, b) in sizes {
            if !out.bytes.iter().any(|(j, _)| *j == i) {
                out.bytes.push((i, b));
            }
        }
        if !used.is_empty() && !out.configs.iter().any(|(set, _)| *set == used) {
            out.configs.push((used.clone(), cost));
        }
        Ok(used)
    };
    let first = try_set((0..singles.len()).collect(), &mut out)?;
    let second: Vec<usize> = first
        .iter()
        .copied()
        .chain(singles.len()..singles.len() + multis.len())
        .collect();
    let best = if multis.is_empty() {
        first.clone()
    } else {
        try_set(second, &mut out)?
    };
    let mut alone: Vec<usize> = Vec::new();
    for i in best.iter().chain(&first) {
        if !alone.contains(i) {
            alone.push(*i);
        }
    }
    for i in alone.into_iter().take(MAX_ALONE) {
        if !out.configs.iter().any(|(set, _)| *set == [i]) {
            try_set(vec![i], &mut out)?;
        }
    }
    let passes = if best == first {
        vec![&best]
    } else {
        vec![&best, &first]
    };
    for set in passes.into_iter().filter(|set| set.len() >= 3) {
        for left_out in set.iter().take(MAX_ALONE) {
            let rest: Vec<usize> = set.iter().copied().filter(|i| i != left_out).collect();
            if !out.configs.iter().any(|(tried, _)| *tried == rest) {
                try_set(rest, &mut out)?;
            }
        }
    }
    Ok(out)
}

/// Names of the indexes a plan reads ("Index Name" of any node).
fn used_index_names(json: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![json];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(name)) = map.get("Index Name") {
                    out.push(name.clone());
                }
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    out
}

/// EXPLAIN ANALYZE in a read-only transaction state: nothing the statement calls can write.
fn analyzed(replay: Replay) -> Result<explain::CapturedPlan, Failure> {
    settings::read_only(|| explain::plan(replay, Mode::Analyze))
}

/// EXPLAIN ANALYZE, CREATE INDEX (as the table's owner), EXPLAIN ANALYZE. The job runs in a
/// rolled-back subtransaction: the index and everything else go away with it.
///
/// From the build on, the job holds a lock that blocks writers of the table until the
/// subtransaction ends. Both steps have their own timeout, but replayed code can catch the
/// cancel that enforces one (EXCEPTION WHEN query_canceled), so the job announces the latest
/// moment it may still hold the lock (`announce`) and the caller terminates the worker past it:
/// writers wait at most the build's timeout plus the statement's, plus DEADLINE_SLACK_MS.
fn real(
    replay: Replay,
    builder: &Context,
    index_sql: &str,
    limits: &Limits,
    announce: &(dyn Fn(u64) + std::panic::RefUnwindSafe),
) -> Result<Answer, Failure> {
    let before = analyzed(replay)?;
    announce(epoch_ms() + limits.build.ms as u64 + limits.statement.ms as u64 + DEADLINE_SLACK_MS);
    guarded::run(Some(limits.build), || {
        Vetted::optidb_index(builder).run(|| Spi::run(index_sql).unwrap_or_else(|e| error!("{e}")))
    })?;
    let after = analyzed(replay)?;
    Ok(Answer::Compared {
        before: before.json,
        after: after.json,
    })
}

/// EXPLAIN, CREATE INDEX (as the table's owner, restricted), EXPLAIN: the costs, whether the
/// second plan reads the index, the build's time and the index's size. Rolled back with the
/// job's subtransaction; the lock the build takes is bounded as in `real`.
fn trial(
    replay: Replay,
    builder: &Context,
    index_sql: &str,
    (schema, name): (&str, &str),
    limits: &Limits,
    announce: &(dyn Fn(u64) + std::panic::RefUnwindSafe),
) -> Result<Tried, Failure> {
    let before = explain::plan(replay, Mode::Costs)?;
    announce(epoch_ms() + limits.build.ms as u64 + limits.statement.ms as u64 + DEADLINE_SLACK_MS);
    let started = std::time::Instant::now();
    guarded::run(Some(limits.build), || {
        Vetted::optidb_index(builder).run(|| Spi::run(index_sql).unwrap_or_else(|e| error!("{e}")))
    })?;
    let build_ms = started.elapsed().as_secs_f64() * 1000.0;
    let index_bytes = crate::postgres::rows::value::<i64>(
        "trial index size",
        "SELECT pg_catalog.pg_relation_size(c.oid) FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relname = $2",
        &[schema.into(), name.into()],
    )
    .unwrap_or_default();
    let after = explain::plan(replay, Mode::Costs)?;
    Ok(Tried {
        before_cost: before.facts.total_cost,
        after_cost: after.facts.total_cost,
        used: used_index_names(&after.json).iter().any(|n| n == name),
        build_ms,
        index_bytes,
    })
}
