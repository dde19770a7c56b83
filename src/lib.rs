//! optidb: the PostgreSQL-facing layer. Each module is one concern; the logic they call lives in
//! the server-independent `optidb-core` crate (src/core).

use pgrx::prelude::*;

mod advisor;
mod bottlenecks;
mod catalog;
mod errors;
mod explain;
mod guarded;
mod gucs;
mod hypopg;
mod latency;
mod pgss;
mod recommend;
mod scan;
mod simulate;

::pgrx::pg_module_magic!(name, version);

// Meta tables first; the generated function definitions follow.
pgrx::extension_sql_file!("../sql/bootstrap.sql", name = "bootstrap", bootstrap);

// Least privilege: scan() writes history and reads every role's statements, so only the owner
// (and roles it grants) may run it. The readers' grants arrive with the roles feature.
pgrx::extension_sql!(
    "REVOKE EXECUTE ON FUNCTION optidb.scan(integer) FROM PUBLIC;\n\
     REVOKE EXECUTE ON FUNCTION optidb.bottlenecks(integer) FROM PUBLIC;\n\
     REVOKE EXECUTE ON FUNCTION optidb.query(bigint) FROM PUBLIC;\n\
     REVOKE EXECUTE ON FUNCTION optidb.recommend(bigint) FROM PUBLIC;\n\
     REVOKE EXECUTE ON FUNCTION optidb.simulate(bigint, bigint, text) FROM PUBLIC;\n\
     REVOKE EXECUTE ON FUNCTION optidb.execution_time_stats(bigint, timestamptz, timestamptz) FROM PUBLIC;\n\
     REVOKE EXECUTE ON FUNCTION optidb.latency_counters() FROM PUBLIC;\n\
     REVOKE EXECUTE ON FUNCTION optidb.memory() FROM PUBLIC;",
    name = "privileges",
    finalize
);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::init();
    // Timing needs shared memory and hooks in every backend: only possible when preloaded.
    // Without it the SQL functions still work; optidb.memory() says what to change.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        unsafe { latency::hooks::install() };
    }
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
