//! optidb's settings (all `optidb.*`). Each is private to this module and read through an
//! accessor, so the rest of the code never touches GUC plumbing.

use crate::postgres::guarded::{Limit, TimeoutSetting};
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting, PostgresGucEnum};
use std::ffi::CString;

static EXPLAIN_TOP_K: GucSetting<i32> = GucSetting::<i32>::new(200);
static STATEMENT_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(2_000);
static ENABLED: GucSetting<bool> = GucSetting::<bool>::new(true);
static TRACK_NESTED: GucSetting<bool> = GucSetting::<bool>::new(false);
static TRACK_UTILITY: GucSetting<bool> = GucSetting::<bool>::new(true);
static FAULT_INJECTION: GucSetting<Fault> = GucSetting::<Fault>::new(Fault::None);

/// A fault injected for tests (superusers only: the setting is PGC_SUSET).
#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum Fault {
    None,
    /// The statement hooks panic inside their bookkeeping, while they hold the latency table's
    /// lock: for tests that prove a panic there leaves no lock held.
    Panic,
    /// As Panic, with an ERROR.
    Error,
    /// scan()'s families stage raises an ERROR (division by zero, SQLSTATE 22012) after its
    /// writes: for tests that prove a failing stage is rolled back alone and recorded
    /// (src/api/scan.rs). The statement hooks ignore it.
    Families,
}
static SAMPLE_INTERVAL_S: GucSetting<i32> = GucSetting::<i32>::new(60);
static MAX_STATEMENTS: GucSetting<i32> = GucSetting::<i32>::new(1000);
static RETENTION_DAYS: GucSetting<i32> = GucSetting::<i32>::new(30);
static REAL_SIMULATION_MAX_MB: GucSetting<i32> = GucSetting::<i32>::new(1024);
static TRIGRAM_TRIAL_MAX_MB: GucSetting<i32> = GucSetting::<i32>::new(16);
static DATABASE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"postgres"));
static SNAPSHOT_INTERVAL_S: GucSetting<i32> = GucSetting::<i32>::new(60);
static REFRESH_INTERVAL_S: GucSetting<i32> = GucSetting::<i32>::new(300);
static ALERT_INTERVAL_S: GucSetting<i32> = GucSetting::<i32>::new(10);
static LOCK_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(5_000);
static REFRESH_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(300_000);
static REAL_SIMULATION_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(10_000);
static MAX_CONCURRENT_SIMULATIONS: GucSetting<i32> = GucSetting::<i32>::new(2);
static INDEX_BUDGET_MB: GucSetting<i32> = GucSetting::<i32>::new(-1);
static STORAGE_PRICE: GucSetting<f64> = GucSetting::<f64>::new(1.0);
static REAL_SIMULATIONS_PER_MINUTE: GucSetting<i32> = GucSetting::<i32>::new(10);
static TRUSTED_ROLES: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static REPLAY_WORKERS: GucSetting<i32> = GucSetting::<i32>::new(2);
static REPLAY_IDLE_TIMEOUT_S: GucSetting<i32> = GucSetting::<i32>::new(60);

/// Settings every backend has, whether or not optidb is preloaded.
pub fn init() {
    GucRegistry::define_bool_guc(
        c"optidb.enabled",
        c"Record execution times and failures of statements.",
        c"Off stops recording and idles the worker; stored history and the SQL functions are unaffected.",
        &ENABLED,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"optidb.track_nested",
        c"Also time statements run inside functions (nested statements).",
        c"Like pg_stat_statements.track = all; off times top-level statements only.",
        &TRACK_NESTED,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"optidb.track_utility",
        c"Also time utility statements (DDL, COPY, EXPLAIN, CALL, DO, ...).",
        c"Like pg_stat_statements.track_utility. EXECUTE, PREPARE and DEALLOCATE are never timed themselves.",
        &TRACK_UTILITY,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"optidb.sample_interval",
        c"Seconds between sampled executions of one statement (search_path, parameter values).",
        c"A statement's first execution and every new slowest one are sampled too; 0: only new slowest ones.",
        &SAMPLE_INTERVAL_S,
        0,
        86_400,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_enum_guc(
        c"optidb.fault_injection",
        c"Tests only: make recording panic or raise an ERROR, or scan()'s families stage fail.",
        c"none (default), panic, error or families.",
        &FAULT_INJECTION,
        GucContext::Suset,
        GucFlags::NO_SHOW_ALL,
    );
    GucRegistry::define_int_guc(
        c"optidb.retention",
        c"Days of history scan() and prune() keep.",
        c"Plans, simulations and logs are also capped in rows; the rows advice and metrics rest on stay (docs/reference/prune.md).",
        &RETENTION_DAYS,
        1,
        3650,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"optidb.explain_top_k",
        c"At most how many statements scan() captures plans for.",
        c"Planned: every statement with at least 0.2% of the workload's time or 1% of its calls, or with failures (optidb_core::plan_targets), largest share first, up to this budget; one owner's replays share one replay worker. 0 disables plans.",
        &EXPLAIN_TOP_K,
        0,
        1_000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"optidb.trusted_roles",
        c"Roles (comma-separated) whose functions, views and rules every replay may run.",
        c"Besides superusers and the statement's own role. Read from the server and database settings.",
        &TRUSTED_ROLES,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"optidb.statement_timeout",
        c"Time limit for each statement optidb replays (EXPLAIN, a real simulation's measured run).",
        c"A private timer: the session's statement_timeout is untouched. A capture that takes longer is stored as failed.",
        &STATEMENT_TIMEOUT_MS,
        1,
        3_600_000,
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"optidb.real_simulation_max_bytes",
        c"Largest table (with its indexes) simulate(mode => 'real') builds an index on, in MB.",
        c"Larger tables are refused (SQLSTATE 54000).",
        &REAL_SIMULATION_MAX_MB,
        1,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_MB,
    );
    GucRegistry::define_int_guc(
        c"optidb.trigram_trial_max_bytes",
        c"Largest table (with its indexes) a scan builds a trial GIN trigram index on, in MB.",
        c"The build, rolled back, blocks the table's writers while it runs; 0: no trial builds.",
        &TRIGRAM_TRIAL_MAX_MB,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_MB,
    );
    GucRegistry::define_int_guc(
        c"optidb.real_simulation_timeout",
        c"Time limit for the index build of simulate(mode => 'real').",
        c"Writers to the table wait for the build.",
        &REAL_SIMULATION_TIMEOUT_MS,
        1,
        3_600_000,
        GucContext::Suset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"optidb.max_concurrent_simulations",
        c"simulate(mode => 'real') running at once per database.",
        c"A further one fails with SQLSTATE 53400.",
        &MAX_CONCURRENT_SIMULATIONS,
        1,
        100,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"optidb.real_simulations_per_minute",
        c"simulate(mode => 'real') started per minute per database.",
        c"A further one fails with SQLSTATE 53400.",
        &REAL_SIMULATIONS_PER_MINUTE,
        1,
        10_000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"optidb.snapshot_interval",
        c"How often the background worker runs snapshot() and record_health().",
        c"Reload to change.",
        &SNAPSHOT_INTERVAL_S,
        1,
        86_400,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"optidb.alert_interval",
        c"How often the background worker runs check_alerts() and sample_waits().",
        c"Reload to change. A rule's hold and clear_for are measured in evaluations this far apart.",
        &ALERT_INTERVAL_S,
        1,
        86_400,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"optidb.refresh_interval",
        c"How often the background worker runs refresh() and prune().",
        c"Reload to change. Readers see metrics as of the last refresh.",
        &REFRESH_INTERVAL_S,
        1,
        86_400,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"optidb.lock_timeout",
        c"Longest wait for a lock optidb takes (job locks, real simulation builds, replays).",
        c"scan()/snapshot(), refresh() and check_alerts() that cannot get their job lock in time fail with SQLSTATE 55P03.",
        &LOCK_TIMEOUT_MS,
        1,
        3_600_000,
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"optidb.refresh_timeout",
        c"Time limit for refreshing one materialized view.",
        c"Past it the view keeps its previous contents and the failure is logged.",
        &REFRESH_TIMEOUT_MS,
        1,
        i32::MAX,
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"optidb.replay_workers",
        c"Warm replay workers kept per server: each serves many owners' replays in turn (0: a new worker per replay batch).",
        c"Needs optidb in shared_preload_libraries; each takes a max_worker_processes slot while alive.",
        &REPLAY_WORKERS,
        0,
        crate::postgres::warm_replay::SLOTS as i32,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"optidb.replay_idle_timeout",
        c"Seconds a warm replay worker stays connected without work before it exits.",
        c"Sent with each replay; the worker exits once idle this long.",
        &REPLAY_IDLE_TIMEOUT_S,
        1,
        86_400,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"optidb.index_budget_mb",
        c"Storage all advised indexes may take together, in MB (-1: the database's size, at least 1 GB).",
        c"The workload index search picks indexes by time saved net of write cost until this is used up.",
        &INDEX_BUDGET_MB,
        -1,
        i32::MAX,
        GucContext::Userset,
        GucFlags::UNIT_MB,
    );
    GucRegistry::define_float_guc(
        c"optidb.storage_price",
        c"What an advised index's extra MB must save, as a multiple of the advised set's saving per MB (0: storage weighs only through optidb.index_budget_mb).",
        c"A wider index whose extra MB over a narrower stand-in save less than this is advised narrower, or dropped when another advised index serves its prefix.",
        &STORAGE_PRICE,
        0.0,
        1000.0,
        GucContext::Userset,
        GucFlags::default(),
    );
}

/// Settings that only make sense at server start (PGC_POSTMASTER): PostgreSQL refuses to define
/// them once the server runs, so they exist only when optidb is in shared_preload_libraries.
/// Without preloading, their defaults apply (nothing reads them then).
pub fn init_preloaded() {
    GucRegistry::define_int_guc(
        c"optidb.max_statements",
        c"Entries of the shared latency table (restart to change).",
        c"Shared memory per entry: entry_bytes of optidb.memory(). When full, the 5% least used entries are evicted.",
        &MAX_STATEMENTS,
        100,
        100_000,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"optidb.database",
        c"Database the optidb background worker connects to (restart to change).",
        c"optidb must be installed there (CREATE EXTENSION optidb); the worker idles otherwise.",
        &DATABASE,
        GucContext::Postmaster,
        GucFlags::default(),
    );
}

pub fn database() -> String {
    DATABASE
        .get()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "postgres".into())
}

pub fn snapshot_interval_s() -> i32 {
    SNAPSHOT_INTERVAL_S.get()
}

pub fn refresh_interval_s() -> i32 {
    REFRESH_INTERVAL_S.get()
}

pub fn alert_interval_s() -> i32 {
    ALERT_INTERVAL_S.get()
}

pub fn lock_timeout_ms() -> i32 {
    LOCK_TIMEOUT_MS.get()
}

/// The longest wait for a lock optidb takes (refresh, replays, real simulations).
pub fn lock_limit() -> Limit {
    Limit {
        ms: LOCK_TIMEOUT_MS.get(),
        setting: TimeoutSetting::Lock,
    }
}

pub fn refresh_limit() -> Limit {
    Limit {
        ms: REFRESH_TIMEOUT_MS.get(),
        setting: TimeoutSetting::Refresh,
    }
}

// These two are read by the statement hooks on every statement. `get()` re-checks that it runs
// on the backend's main thread each time; the hooks only ever run there, so read the value
// PostgreSQL maintains directly.
pub fn enabled() -> bool {
    // SAFETY: the variable PostgreSQL's GUC machinery writes for this setting (registered in
    // `init`), a plain bool of this backend. It is only read or written on the backend's
    // main thread, which is the only thread optidb's code runs on.
    unsafe { *ENABLED.as_ptr() }
}

pub fn track_nested() -> bool {
    // SAFETY: as in `enabled`.
    unsafe { *TRACK_NESTED.as_ptr() }
}

/// Read on every recorded statement: without pgrx's per-read thread check, as `enabled`.
pub fn fault_injection() -> Fault {
    // SAFETY: as in `enabled`; for an enum setting the variable holds the ordinal, an i32.
    match unsafe { *FAULT_INJECTION.as_ptr() } {
        0 => Fault::None,
        1 => Fault::Panic,
        2 => Fault::Error,
        _ => Fault::Families,
    }
}

pub fn track_utility() -> bool {
    // SAFETY: as in `enabled`.
    unsafe { *TRACK_UTILITY.as_ptr() }
}

/// Microseconds between samples of one statement; 0 when sampling is off.
pub fn sample_interval_us() -> i64 {
    // SAFETY: as in `enabled` (an i32 setting).
    unsafe { *SAMPLE_INTERVAL_S.as_ptr() as i64 * 1_000_000 }
}

pub fn max_statements() -> i32 {
    MAX_STATEMENTS.get()
}

pub fn retention_days() -> i32 {
    RETENTION_DAYS.get()
}

pub fn trigram_trial_max_bytes() -> i64 {
    TRIGRAM_TRIAL_MAX_MB.get() as i64 * 1024 * 1024
}

pub fn real_simulation_max_bytes() -> i64 {
    REAL_SIMULATION_MAX_MB.get() as i64 * 1024 * 1024
}

/// `optidb.trusted_roles` as role names, split as PostgreSQL splits an identifier list (quoted
/// names keep commas and case); empty when unset or not a valid list (trust no one more).
pub fn trusted_roles() -> Vec<String> {
    TRUSTED_ROLES
        .get()
        .and_then(|s| optidb_core::search_path::identifiers(&s.to_string_lossy()))
        .unwrap_or_default()
}

pub fn explain_top_k() -> i32 {
    EXPLAIN_TOP_K.get()
}

/// The time limit of a real simulation's index build.
pub fn real_simulation_limit() -> Limit {
    Limit {
        ms: REAL_SIMULATION_TIMEOUT_MS.get(),
        setting: TimeoutSetting::RealSimulation,
    }
}

pub fn max_concurrent_simulations() -> i32 {
    MAX_CONCURRENT_SIMULATIONS.get()
}

pub fn real_simulations_per_minute() -> i32 {
    REAL_SIMULATIONS_PER_MINUTE.get()
}

/// The time limit of each statement optidb runs on its own behalf (EXPLAIN captures).
/// How many warm replay workers may exist (src/postgres/warm_replay.rs).
pub fn replay_workers() -> i32 {
    REPLAY_WORKERS.get()
}

pub fn replay_idle_timeout_ms() -> u32 {
    REPLAY_IDLE_TIMEOUT_S.get() as u32 * 1000
}

pub fn statement_limit() -> Limit {
    Limit {
        ms: STATEMENT_TIMEOUT_MS.get(),
        setting: TimeoutSetting::Statement,
    }
}

/// What an advised index's extra bytes must save, as a multiple of the set's saving per byte.
pub fn storage_price() -> f64 {
    STORAGE_PRICE.get()
}

/// The storage budget of advised indexes in MB; None: the default (a share of the database).
pub fn index_budget_mb() -> Option<i64> {
    let mb = INDEX_BUDGET_MB.get();
    (mb >= 0).then_some(mb as i64)
}
