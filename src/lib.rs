//! optidb: the PostgreSQL-facing layer, in two parts. `api`: the SQL functions users call (one
//! module per surface). `postgres`: the plumbing they run on (hooks and shared memory, SPI rows,
//! the background and replay workers, settings, replays as statement owners). The logic both
//! call lives in the server-independent `optidb-core` crate (src/core).

use pgrx::prelude::*;

mod api;
mod postgres;

::pgrx::pg_module_magic!(name, version);

// Meta tables and roles first; the generated function definitions follow.
pgrx::extension_sql_file!("../sql/bootstrap.sql", name = "bootstrap", bootstrap);

// Materialized metric views over the history tables (they call optidb.latency_rollup).
pgrx::extension_sql_file!(
    "../sql/views.sql",
    name = "views",
    requires = [latency_rollup, can_see, "bootstrap"]
);

// Row-level security, grants and least privilege, once every object exists.
pgrx::extension_sql_file!("../sql/security.sql", name = "security", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    postgres::gucs::init();
    // Timing needs shared memory and hooks in every backend: only possible when preloaded.
    // Without it the SQL functions still work; optidb.memory() says what to change.
    // SAFETY: a plain global of this process that PostgreSQL sets while it loads
    // shared_preload_libraries; _PG_init runs on the process's only thread.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        postgres::gucs::init_preloaded();
        // SAFETY: install's precondition holds: this is _PG_init while shared_preload_libraries
        // is processed (checked just above), in the postmaster (or a single-user backend),
        // which is single-threaded and has run no statement yet.
        unsafe { postgres::latency::hooks::install() };
        postgres::worker::register();
    }
    // Once every setting is defined: any other optidb.* setting is a typo, which PostgreSQL
    // then reports and refuses (it removes placeholders made before this call).
    // SAFETY: a guarded call with a NUL-terminated static name, from _PG_init on the process's
    // only thread, after every optidb.* setting has been defined.
    unsafe { pg_sys::MarkGUCPrefixReserved(c"optidb".as_ptr()) };
}

#[cfg(any(test, feature = "pg_test"))]
mod pg_tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec!["shared_preload_libraries = 'pg_stat_statements,optidb'"]
    }
}
