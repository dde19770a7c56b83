//! optidb's settings (all `optidb.*`). Each is private to this module and read through an
//! accessor, so the rest of the code never touches GUC plumbing.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};

static EXPLAIN_TOP_K: GucSetting<i32> = GucSetting::<i32>::new(20);
static STATEMENT_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(2_000);
static ENABLED: GucSetting<bool> = GucSetting::<bool>::new(true);
static TRACK_NESTED: GucSetting<bool> = GucSetting::<bool>::new(false);
static MAX_STATEMENTS: GucSetting<i32> = GucSetting::<i32>::new(1000);
static RETENTION_DAYS: GucSetting<i32> = GucSetting::<i32>::new(30);
static REAL_SIMULATION_MAX_MB: GucSetting<i32> = GucSetting::<i32>::new(1024);

pub fn init() {
    GucRegistry::define_bool_guc(
        c"optidb.enabled",
        c"Record execution times and failures of statements.",
        c"Off stops recording; stored history and the SQL functions are unaffected.",
        &ENABLED,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"optidb.track_nested",
        c"Also time statements run inside functions (nested statements).",
        c"Off: only top-level statements are timed, like pg_stat_statements.track = top.",
        &TRACK_NESTED,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"optidb.max_statements",
        c"Statements the shared latency table holds (each about 4.6 kB).",
        c"When full, the least used entry is evicted and counted in optidb.memory.",
        &MAX_STATEMENTS,
        100,
        100_000,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"optidb.retention",
        c"Days of history (metric deltas, latency histograms) scan() keeps.",
        c"Older rows are deleted in batches by each scan().",
        &RETENTION_DAYS,
        1,
        3650,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"optidb.explain_top_k",
        c"How many of the slowest statements scan() captures a generic plan for.",
        c"Each capture is one PREPARE plus EXPLAIN in the calling backend; 0 disables plans.",
        &EXPLAIN_TOP_K,
        0,
        1_000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"optidb.statement_timeout",
        c"Time limit for each statement optidb runs on its own behalf (EXPLAIN captures).",
        c"A capture that takes longer is recorded as timed out and skipped; the scan goes on.",
        &STATEMENT_TIMEOUT_MS,
        1,
        3_600_000,
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"optidb.real_simulation_max_bytes",
        c"Largest table (with its indexes) simulate(mode => 'real') builds a real index on.",
        c"Building an index takes a lock that blocks writes to the table until the simulation ends.",
        &REAL_SIMULATION_MAX_MB,
        1,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_MB,
    );
}

pub fn enabled() -> bool {
    ENABLED.get()
}

pub fn track_nested() -> bool {
    TRACK_NESTED.get()
}

pub fn max_statements() -> i32 {
    MAX_STATEMENTS.get()
}

pub fn retention_days() -> i32 {
    RETENTION_DAYS.get()
}

pub fn real_simulation_max_bytes() -> i64 {
    REAL_SIMULATION_MAX_MB.get() as i64 * 1024 * 1024
}

pub fn explain_top_k() -> i32 {
    EXPLAIN_TOP_K.get()
}

pub fn statement_timeout_ms() -> i32 {
    STATEMENT_TIMEOUT_MS.get()
}
