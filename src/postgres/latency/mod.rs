//! Execution-time statistics recorded by optidb itself: the shared-memory table (`table`) and
//! sample ring (`samples`), the statements that failed (`failed`), the hooks that feed them (`hooks`, with `nesting` and `failures`),
//! their persistence (`dump`), their history in optidb.latency (`history`) and the relations
//! each statement used (`relations`). The SQL
//! functions over them are in `crate::api::latency`.

mod dump;
pub mod failed;
mod failures;
pub mod history;
pub mod hooks;
mod lwlock;
mod nesting;
mod raw;
mod relations;
pub mod rollup;
pub mod sample_store;
pub mod samples;
pub mod table;
