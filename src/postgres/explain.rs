//! EXPLAIN of a user's statement text, replayed in its owner's context (src/postgres/replay.rs).
//!
//! PostgreSQL 15 has no `EXPLAIN (GENERIC_PLAN)`, so every plan goes through a prepared
//! statement under a private name: PREPARE it (parse analysis only, as the owner), then
//! `EXPLAIN (FORMAT JSON) EXECUTE name(...)` with `plan_cache_mode` forced (as the owner,
//! restricted: planning may run the statement's functions), then DEALLOCATE exactly that name
//! (the session's own prepared statements are never touched):
//! - the generic plan: the pg_stat_statements text, NULL for every parameter, forced generic;
//! - a custom plan: the text of a sampled execution with its real parameter values (quoted
//!   literals, coerced to the parameter types like any EXECUTE argument), forced custom.
//!
//! Callers must pass text that `optidb_core::statement::analyze` accepted as one explainable
//! statement (its `text`, with its `param_types`): that is what makes the PREPARE below unable
//! to carry a second command. Declared types come from the user's own PREPARE, or are
//! built-in types named with their schema (samples.rs renders only those).

use crate::postgres::guarded::{self, Failure, Limit};
use crate::postgres::replay::{self, Context};
use crate::postgres::rows;
use crate::postgres::settings::{self, Setting};
use crate::postgres::vetting::{self, Vetted};
use optidb_core::plan_facts::{self, PlanFacts};
use optidb_core::statement;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::spi::quote_literal;
use std::panic::AssertUnwindSafe;
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

/// EXPLAIN options: plain costs, or ANALYZE (which runs the statement).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Costs,
    Analyze,
}

/// Which parameter values the plan is made for.
#[derive(Clone, Copy)]
pub enum Values<'a> {
    /// None known: NULL for each of `count` parameters, generic plan.
    Generic { count: usize },
    /// A sampled execution's values (None = SQL NULL), custom plan.
    Sampled(&'a [Option<String>]),
}

/// One statement to EXPLAIN: its text, the types to declare for its parameters (type names as
/// the statement's own PREPARE wrote them, or schema-qualified built-in names; may be fewer
/// than its parameters, or none: the rest are inferred), the values, the context it ran in,
/// and the time limit (read by the caller before any of the statement's code could run).
#[derive(Clone, Copy)]
pub struct Replay<'a> {
    pub context: &'a Context,
    pub sql: &'a str,
    pub param_types: &'a [String],
    /// The relations the statement names, and those it used when it ran (empty: unknown).
    pub tables: &'a [String],
    pub relations: &'a [u32],
    pub values: Values<'a>,
    pub limit: Limit,
}

static NEXT_NAME: AtomicU64 = AtomicU64::new(1);

/// A prepared-statement name no one in this session uses.
fn private_statement_name() -> String {
    loop {
        let name = format!(
            "optidb_explain_{}",
            NEXT_NAME.fetch_add(1, Ordering::Relaxed)
        );
        if !prepared_exists(&name) {
            return name;
        }
    }
}

/// Whether this session has a prepared statement of that name: looked up in the session's
/// own table (what pg_prepared_statements lists), no SQL run, no user code.
fn prepared_exists(name: &str) -> bool {
    let Ok(cname) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: a guarded call reading this session's prepared-statement hash table with a
    // NUL-terminated name; throwError = false returns NULL for an unknown name.
    !unsafe { pg_sys::FetchPreparedStatement(cname.as_ptr(), false) }.is_null()
}

/// DEALLOCATE exactly this name, if it exists (the session's other statements are untouched).
fn deallocate(name: &str) {
    let Ok(cname) = std::ffi::CString::new(name) else {
        return;
    };
    // SAFETY: a guarded call on this session's prepared-statement table, as DEALLOCATE makes
    // it; showError = false makes an unknown name (a PREPARE that failed) a no-op.
    unsafe { pg_sys::DropPreparedStatement(cname.as_ptr(), false) };
}

/// The EXECUTE argument list for these values.
fn arguments(values: Values) -> String {
    let args: Vec<String> = match values {
        Values::Generic { count } => vec!["NULL".to_string(); count],
        Values::Sampled(values) => values
            .iter()
            .map(|v| {
                v.as_deref()
                    .map_or_else(|| "NULL".to_string(), quote_literal)
            })
            .collect(),
    };
    if args.is_empty() {
        String::new()
    } else {
        format!("({})", args.join(", "))
    }
}

/// EXPLAIN the statement in its owner's context, limited by `optidb.statement_timeout`: the one
/// entry point of every replay (plans, hypothetical and real simulations). Nothing is planned
/// unless everything the resolved statement would run belongs to a role its owner trusts
/// (src/postgres/vetting.rs). Any failure (syntax this server rejects, missing table, no
/// permission, untrusted code, undeterminable parameter type, timeout) comes back as `Err`
/// with the reason, raised in the owner's context. Callers
/// running ANALYZE must make sure nothing it does persists (simulate's real mode).
pub fn plan(replay: Replay, mode: Mode) -> Result<CapturedPlan, Failure> {
    let options = match mode {
        // VERBOSE: plans name each relation's schema (advice must not confuse app1.orders
        // with app2.orders) and qualify columns with their relation's alias.
        Mode::Costs => "VERBOSE, FORMAT JSON",
        Mode::Analyze => "ANALYZE, VERBOSE, FORMAT JSON",
    };
    let plan_cache_mode = match replay.values {
        Values::Generic { .. } => "force_generic_plan",
        Values::Sampled(_) => "force_custom_plan",
    };
    // PREPARE is not transactional: the statements exist even after a rollback, and a user's
    // cancel re-raised from the guarded run must not leave them behind either. They are
    // deallocated once the guarded run is over (its subtransaction gone, no error in flight).
    let shape_name = private_statement_name();
    let name = private_statement_name();
    let outcome = PgTryBuilder::new(AssertUnwindSafe(|| {
        guarded::run(Some(replay.limit), || {
            vetting::parse_as_owner(replay.context, || {
                same_relations(replay.context.owner.oid, replay.tables, replay.relations)
            });
            literals_vetted(&replay, &shape_name)?;
            prepare(&replay, &name, replay.sql);
            // Nothing of the statement has run yet: planning is the first thing that may.
            let vetted = Vetted::prepared(replay.context, &name)?;
            let explain = format!(
                "EXPLAIN ({options}) EXECUTE {name}{}",
                arguments(replay.values)
            );
            Ok(vetted.run(|| {
                settings::with(&[Setting::user("plan_cache_mode", plan_cache_mode)], || {
                    Spi::get_one::<pgrx::Json>(&explain).unwrap_or_else(|e| error!("{e}"))
                })
            }))
        })
        .and_then(|vetted| vetted)
    }))
    .finally(|| {
        for prepared in [&shape_name, &name] {
            // The shape is prepared only for a text with literals, and a PREPARE can fail.
            if prepared_exists(prepared) {
                guarded::cleanup(|| deallocate(prepared));
            }
        }
    })
    .execute();

    let json = outcome?
        .map(|j| j.0)
        .ok_or_else(|| failure("EXPLAIN returned no plan"))?;
    let facts = plan_facts::from_explain_json(&json).map_err(|e| failure(&e.to_string()))?;
    Ok(CapturedPlan { json, facts })
}

/// PREPARE `sql` (with the replay's declared types) as the owner, as `name`: parse analysis
/// only, no code of the statement runs (except what its literals convert: `literals_vetted`).
fn prepare(replay: &Replay, name: &str, sql: &str) {
    vetting::parse_as_owner(replay.context, || {
        let prepare = format!(
            "PREPARE {name}{} AS {sql}",
            declared_types(replay.param_types)
        );
        Spi::run(&prepare).unwrap_or_else(|e| error!("{e}"))
    })
}

/// A text with literals (a sampled execution's, say) runs code while it is merely parsed: a
/// literal of an array, composite or range type is converted by its input function, which runs
/// the domain checks of its elements. So the same statement with its literals as parameters is
/// prepared and vetted first (its parse converts nothing); only then is the text itself parsed.
fn literals_vetted(replay: &Replay, shape_name: &str) -> Result<(), Failure> {
    let cannot = |why: String| {
        Failure::new(
            "0A000",
            format!(
                "the statement's literals cannot be checked before PostgreSQL converts them \
                 ({why}): it is not replayed"
            ),
        )
    };
    let shape = statement::literals_as_parameters(replay.sql).map_err(|e| cannot(e.0))?;
    if shape == replay.sql {
        return Ok(());
    }
    guarded::run(
        None,
        AssertUnwindSafe(|| {
            prepare(replay, shape_name, &shape);
            Vetted::prepared(replay.context, shape_name).map(|_| ())
        }),
    )
    .map_err(|f| {
        cannot(format!(
            "with its literals as parameters it does not prepare: {f}"
        ))
    })?
}

/// Raise unless every relation the statement names resolves, in this context, to one it used
/// when it ran. A temporary table that is gone, or a look-alike created since in a schema of the
/// recorded search_path, must not be planned in its place. Without a record, every relation must
/// belong to roles the owner trusts (see `replay::untrusted_relations`).
fn same_relations(owner: pg_sys::Oid, tables: &[String], relations: &[u32]) {
    let names: Vec<String> = tables
        .iter()
        .map(|table| {
            table
                .split('.')
                .map(pgrx::spi::quote_identifier)
                .collect::<Vec<_>>()
                .join(".")
        })
        .collect();
    if relations.is_empty() {
        // Nothing recorded what the statement used: only relations of roles its owner trusts.
        if let Some(found) = replay::untrusted_relations(owner, &names).first() {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!(
                    "relation {found} belongs to a role the statement's role does not trust, \
                     and no sample recorded which relations the statement used: it is not \
                     replayed"
                )
            );
        }
        return;
    }
    for (table, name) in tables.iter().zip(names) {
        let resolved = rows::select_kept(
            "relation a name resolves to",
            "SELECT pg_catalog.to_regclass($1)::pg_catalog.oid AS resolved",
            &[name.into()],
            |row| row.opt::<pg_sys::Oid>("resolved"),
        )
        .pop()
        .flatten();
        if let Some(oid) = resolved.filter(|oid| !relations.contains(&oid.to_u32())) {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
                format!(
                    "relation \"{table}\" now resolves to a relation (oid {}) that the statement \
                     did not use when it ran (a temporary table that is gone, or one created \
                     since): it is not replayed",
                    oid.to_u32()
                )
            );
        }
    }
}

/// `(type, ...)` for PREPARE: each name resolved to a type by PostgreSQL (to_regtype, in the
/// owner's search_path) and printed back from its oid, so no text of the statement's own is
/// pasted into the command.
fn declared_types(types: &[String]) -> String {
    if types.is_empty() {
        return String::new();
    }
    let names = rows::select_kept(
        "declared parameter types",
        "SELECT pg_catalog.array_agg(pg_catalog.format_type(pg_catalog.to_regtype(u.t), NULL) \
                                     ORDER BY u.n) AS names \
         FROM pg_catalog.unnest($1::pg_catalog.text[]) WITH ORDINALITY AS u(t, n)",
        &[types.to_vec().into()],
        |row| row.opt::<Vec<Option<String>>>("names"),
    )
    .pop()
    .flatten()
    .unwrap_or_default();
    let names: Vec<String> = names
        .into_iter()
        .zip(types)
        .map(|(n, t)| n.unwrap_or_else(|| error!("type \"{t}\" of a parameter does not exist")))
        .collect();
    format!("({})", names.join(", "))
}

fn failure(message: &str) -> Failure {
    Failure::Error {
        sqlstate: "XX000".into(),
        message: message.into(),
    }
}
