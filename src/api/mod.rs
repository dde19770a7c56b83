//! The SQL surface: every function a user (or optidb's own SQL) calls, one module per concern.
//! `advisor` is scan()'s advice step (it stores and simulates recommendations).
//! Who may call each one, and what it says in `\df+`, is declared in `surface`.

pub mod advice_checks;
pub mod advisor;
pub mod anomalies;
pub mod ask;
pub mod bottlenecks;
pub mod families;
pub mod health;
pub mod index_search;
pub mod latency;
pub mod metrics;
pub mod recommend;
pub mod refresh;
pub mod report;
pub mod scan;
pub mod simulate;
pub mod source_samples;
pub mod sources;
pub mod surface;
pub mod tenant_advice;
pub mod visibility;
