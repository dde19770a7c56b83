//! Generic-plan capture for a statement text with `$n` placeholders (PostgreSQL 15 has no
//! `EXPLAIN (GENERIC_PLAN)`): PREPARE it under a private name, force a generic plan, run
//! `EXPLAIN (FORMAT JSON) EXECUTE name(NULL, ...)`, and DEALLOCATE exactly that name. The
//! session's own prepared statements are never touched.
//!
//! Callers must pass text that `optidb_core::statement::analyze` accepted as one explainable
//! statement: that is what makes the PREPARE below unable to carry a second command.

use crate::guarded::{self, Failure};
use crate::gucs;
use optidb_core::plan_facts::{self, PlanFacts};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::CString;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct CapturedPlan {
    pub json: serde_json::Value,
    pub facts: PlanFacts,
}

impl CapturedPlan {
    /// "Execution Time" of an ANALYZEd plan, in ms.
    pub fn execution_ms(&self) -> Option<f64> {
        self.json
            .get(0)
            .and_then(|top| top.get("Execution Time"))
            .and_then(serde_json::Value::as_f64)
    }
}

/// EXPLAIN options: plain generic-plan costs, or ANALYZE (which runs the statement).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Costs,
    Analyze,
}

static NEXT_NAME: AtomicU64 = AtomicU64::new(1);

/// A prepared-statement name no one in this session uses.
fn private_statement_name() -> String {
    loop {
        let name = format!(
            "optidb_explain_{}",
            NEXT_NAME.fetch_add(1, Ordering::Relaxed)
        );
        let taken = Spi::get_one_with_args::<bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_prepared_statements WHERE name = $1)",
            &[name.clone().into()],
        );
        if let Ok(Some(false)) = taken {
            return name;
        }
    }
}

/// Capture the generic plan of `sql` (which has `param_count` placeholders), limited by
/// `optidb.statement_timeout`. Any failure (syntax this server rejects, missing table, no permission,
/// undeterminable parameter type, timeout) comes back as `Err` with the reason.
pub fn generic_plan(sql: &str, param_count: usize) -> Result<CapturedPlan, Failure> {
    plan(sql, param_count, Mode::Costs)
}

/// Like `generic_plan`, with the choice of running it (`Mode::Analyze`). Callers running
/// ANALYZE on a data-changing statement must roll it back themselves.
pub fn plan(sql: &str, param_count: usize, mode: Mode) -> Result<CapturedPlan, Failure> {
    let name = private_statement_name();
    let args = if param_count == 0 {
        String::new()
    } else {
        format!("({})", vec!["NULL"; param_count].join(", "))
    };
    let prepare = format!("PREPARE {name} AS {sql}");
    let options = match mode {
        Mode::Costs => "FORMAT JSON",
        Mode::Analyze => "ANALYZE, FORMAT JSON",
    };
    let explain = format!("EXPLAIN ({options}) EXECUTE {name}{args}");

    // plan_cache_mode is changed at a GUC nest level of our own and popped afterwards, the
    // same way a function's SET clause works, so the session setting is never altered.
    let nest = unsafe { pg_sys::NewGUCNestLevel() };
    set_local("plan_cache_mode", "force_generic_plan");
    // PREPARE is not transactional: the statement exists even after a rollback, and a user's
    // cancel re-raised from the guarded run must not leave it behind either.
    let deallocate = format!("DEALLOCATE {name}");
    let outcome = PgTryBuilder::new(|| {
        guarded::run(Some(gucs::statement_limit()), || {
            Spi::run(&prepare).unwrap_or_else(|e| error!("{e}"));
            Spi::get_one::<pgrx::Json>(&explain).unwrap_or_else(|e| error!("{e}"))
        })
    })
    .finally(|| {
        guarded::cleanup(|| {
            Spi::run(&deallocate).ok();
        })
    })
    .execute();
    unsafe { pg_sys::AtEOXact_GUC(true, nest) };

    let json = outcome?
        .map(|j| j.0)
        .ok_or_else(|| failure("EXPLAIN returned no plan"))?;
    let facts = plan_facts::from_explain_json(&json).map_err(|e| failure(&e.to_string()))?;
    Ok(CapturedPlan { json, facts })
}

fn failure(message: &str) -> Failure {
    Failure::Error {
        sqlstate: "XX000".into(),
        message: message.into(),
    }
}

fn set_local(name: &str, value: &str) {
    let name = CString::new(name).expect("GUC names have no NUL");
    let value = CString::new(value).expect("GUC values have no NUL");
    unsafe {
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
    }
}
