//! optidb's logic, free of any PostgreSQL server dependency so `cargo test` can drive it alone.
//! The extension crate (`src/`) gathers inputs over SPI and calls into these modules.

pub mod advisor;
pub mod alerting;
pub mod anomaly;
pub mod ask;
pub mod bottleneck;
pub mod family;
pub mod health;
pub mod histogram;
pub mod index_expression;
pub mod parser;
pub mod plan_choice;
pub mod plan_diff;
pub mod plan_facts;
pub mod plan_targets;
pub mod predicates;
pub mod prometheus;
pub mod redact;
pub mod report;
pub mod schedule;
pub mod search_path;
pub mod selection;
pub mod slot_share;
pub mod statement;
pub mod tenant;
pub mod vocabulary;
