//! PostgreSQL plumbing under the SQL surface: executor hooks and shared memory (`latency`), SPI
//! rows read by name (`rows`), errors, settings (`gucs`, `settings`), locks, the background
//! worker, and replaying statements as their owners (`replay`, `replay_worker`, `explain`,
//! `capture`, `hypopg`), statements' roles by name across clusters (`identity`), and the
//! readers of pg_stat_statements and the catalog.

pub mod alerts;
pub mod backend_local;
pub mod capture;
pub mod catalog;
pub mod compaction;
pub mod errors;
pub mod explain;
pub mod failing;
pub mod guarded;
pub mod gucs;
pub mod health;
pub mod hypopg;
pub mod identity;
pub mod ingest;
pub mod latency;
pub mod locks;
pub mod own_work;
pub mod pgss;
pub mod replay;
pub mod replay_worker;
pub mod rows;
pub mod settings;
pub mod signals;
pub mod vetting;
mod vetting_catalog;
pub mod warm_replay;
pub mod worker;
