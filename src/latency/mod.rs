//! Execution-time statistics recorded by optidb itself: the shared-memory table (`table`) and
//! sample ring (`samples`), the hooks that feed them (`hooks`, with `nesting` and `failures`),
//! their persistence (`dump`), and the SQL surface over them and their history (`stats`).

mod dump;
mod failures;
pub mod hooks;
mod lwlock;
mod nesting;
mod raw;
pub mod sample_store;
pub mod samples;
pub mod stats;
pub mod table;
