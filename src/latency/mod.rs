//! Execution-time statistics recorded by optidb itself: the shared-memory table (`table`), the
//! hooks that feed it (`hooks`), and the SQL surface over it and its history (`stats`).

pub mod hooks;
mod nesting;
mod raw;
pub mod stats;
pub mod table;
