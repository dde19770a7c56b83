//! Rows of optidb's own queries read by column name, never by position with defaults.
//!
//! Why: a reordered SELECT list or a dropped cast used to come back as zeros (every positional
//! `get` fell back to a default), so a broken query looked like an idle database. Here a
//! missing column, a type that differs from what the Rust side reads, or a NULL where a value
//! is required raises an error that names the query, the column and both types: these are
//! bugs in optidb, and they must show as such.

use crate::postgres::errors::raise;
use crate::postgres::settings::{self, Setting};
use pgrx::datum::{FromDatum, IntoDatum, TryFromDatumError};
use pgrx::pg_sys::errcodes::PgSqlErrorCode;
use pgrx::prelude::*;
use pgrx::spi::{SpiError, SpiErrorCodes, SpiHeapTupleData};

const HINT: &str = "This is a bug in optidb: please report it with the statement that raised it.";

/// One row of a result, with the name of the query it came from (for errors).
pub struct Row<'a, 'conn> {
    tuple: &'a SpiHeapTupleData<'conn>,
    query: &'a str,
}

impl<'a, 'conn> Row<'a, 'conn> {
    /// A row of a result read some other way (a cursor's batch).
    pub fn new(tuple: &'a SpiHeapTupleData<'conn>, query: &'a str) -> Self {
        Row { tuple, query }
    }

    /// The value of `column`; NULL is an error.
    pub fn get<T: FromDatum + IntoDatum>(&self, column: &str) -> T {
        self.opt(column).unwrap_or_else(|| {
            raise(
                PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                format!(
                    "column \"{column}\" of optidb's query \"{}\" is NULL where a value is \
                     required",
                    self.query
                ),
                Some(HINT),
            )
        })
    }

    /// The value of `column`, None for NULL.
    pub fn opt<T: FromDatum + IntoDatum>(&self, column: &str) -> Option<T> {
        self.tuple
            .get_by_name::<T, _>(column)
            .unwrap_or_else(|e| self.mismatch(column, e))
    }

    /// A json or jsonb `column` read into `T`, None for NULL.
    pub fn json<T: serde::de::DeserializeOwned>(&self, column: &str) -> Option<T> {
        let value = self.opt::<pgrx::JsonB>(column)?.0;
        Some(serde_json::from_value(value).unwrap_or_else(|e| {
            raise(
                PgSqlErrorCode::ERRCODE_INVALID_TEXT_REPRESENTATION,
                format!(
                    "column \"{column}\" of optidb's query \"{}\" does not hold the JSON \
                     optidb expects: {e}",
                    self.query
                ),
                Some(HINT),
            )
        }))
    }

    fn mismatch(&self, column: &str, error: SpiError) -> ! {
        let query = self.query;
        match error {
            SpiError::SpiError(SpiErrorCodes::NoAttribute) => raise(
                PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
                format!("optidb's query \"{query}\" returns no column \"{column}\""),
                Some(HINT),
            ),
            SpiError::DatumError(TryFromDatumError::IncompatibleTypes {
                rust_type,
                datum_type,
                ..
            }) => raise(
                PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
                format!(
                    "column \"{column}\" of optidb's query \"{query}\" is of type \
                     {datum_type}, read as the Rust type {rust_type}"
                ),
                Some(HINT),
            ),
            other => raise(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                format!("reading column \"{column}\" of optidb's query \"{query}\": {other}"),
                Some(HINT),
            ),
        }
    }
}

/// Every row of `sql`, decoded by `decode`. `query` names the query in errors.
pub fn select<T>(
    query: &str,
    sql: &str,
    args: &[pgrx::datum::DatumWithOid],
    decode: impl Fn(&Row) -> T,
) -> Vec<T> {
    rows_of(query, sql, None, args, decode)
}

/// The first row of `sql`, decoded by `decode`; None when it returns no row.
pub fn first<T>(
    query: &str,
    sql: &str,
    args: &[pgrx::datum::DatumWithOid],
    decode: impl Fn(&Row) -> T,
) -> Option<T> {
    rows_of(query, sql, Some(1), args, decode).pop()
}

fn rows_of<T>(
    query: &str,
    sql: &str,
    limit: Option<i64>,
    args: &[pgrx::datum::DatumWithOid],
    decode: impl Fn(&Row) -> T,
) -> Vec<T> {
    Spi::connect(|client| {
        client
            .select(sql, limit.map(|l| l as _), args)
            .unwrap_or_else(|e| spi_failed(query, e))
            .map(|tuple| decode(&Row::new(&tuple, query)))
            .collect()
    })
}

/// The single value `sql` returns: None for no row or NULL. Run like Spi::get_one (it may
/// modify data: `DELETE ... RETURNING`).
pub fn value<T: FromDatum + IntoDatum>(
    query: &str,
    sql: &str,
    args: &[pgrx::datum::DatumWithOid],
) -> Option<T> {
    Spi::connect_mut(|client| {
        let mut table = client
            .update(sql, Some(1), args)
            .unwrap_or_else(|e| spi_failed(query, e));
        let tuple = table.next()?;
        let row = Row::new(&tuple, query);
        row.tuple
            .get::<T>(1)
            .unwrap_or_else(|e| row.mismatch("(its only column)", e))
    })
}

/// SPI refused to run one of optidb's queries (errors raised by the query itself, with their
/// own SQLSTATE, never come here: they propagate unchanged).
fn spi_failed(query: &str, error: SpiError) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        format!("optidb's query \"{query}\" could not be run: {error}"),
        Some(HINT),
    )
}

/// As `select`, for a fixed catalog query run many times by one process (the replay worker's
/// vetting, once or twice per replayed statement): its plan is prepared on first use and kept
/// for the process's lifetime (SPI_keepplan), so later runs skip parsing, analysis and, once
/// the plan cache settles on a generic plan, planning. Only results are ever fresh: nothing is
/// cached but the plan, which PostgreSQL's plan cache revalidates itself when a catalog it
/// depends on changes (and a warm replay worker's ResetPlanCache, before a batch of another
/// owner, marks it for re-analysis).
///
/// `sql` must name its relations and functions schema-qualified (pg_catalog's, optidb's own):
/// the plan outlives any search_path (the plan cache re-analyzes it when the path changes).
pub fn select_kept<T>(
    query: &str,
    sql: &'static str,
    args: &[pgrx::datum::DatumWithOid],
    decode: impl Fn(&Row) -> T,
) -> Vec<T> {
    use pgrx::spi::OwnedPreparedStatement;
    use std::cell::RefCell;
    use std::collections::HashMap;
    thread_local! {
        // Keyed by the address of the query's text: each is a distinct constant.
        static KEPT: RefCell<HashMap<usize, OwnedPreparedStatement>> =
            RefCell::new(HashMap::new());
    }
    let key = sql.as_ptr() as usize;
    Spi::connect(|client| {
        let known = KEPT.with(|kept| kept.borrow().contains_key(&key));
        if !known {
            let types: Vec<pgrx::PgOid> = args.iter().map(|a| pgrx::PgOid::from(a.oid())).collect();
            let plan = client
                .prepare(sql, &types)
                .unwrap_or_else(|e| spi_failed(query, e))
                .keep();
            KEPT.with(|kept| kept.borrow_mut().insert(key, plan));
        }
        // A generic plan: made once (per invalidation), not re-planned for every call as
        // custom plans would be; these queries' plans do not depend on the values.
        let generic = [Setting::user("plan_cache_mode", "force_generic_plan")];
        settings::with(&generic, || {
            KEPT.with(|kept| {
                let kept = kept.borrow();
                let plan = kept.get(&key).expect("prepared above");
                client
                    .select(plan, None, args)
                    .unwrap_or_else(|e| spi_failed(query, e))
                    .map(|tuple| decode(&Row::new(&tuple, query)))
                    .collect()
            })
        })
    })
}

/// The first row of a kept-plan query (`select_kept`); None when it returns no row. For
/// optidb's fixed per-call lookups (simulate()'s statement, sample and recommendation).
pub fn first_kept<T>(
    query: &str,
    sql: &'static str,
    args: &[pgrx::datum::DatumWithOid],
    decode: impl Fn(&Row) -> T,
) -> Option<T> {
    select_kept(query, sql, args, decode).into_iter().next()
}

/// As `select_kept`, planned with nested loops over index reads only (no hash or merge joins,
/// no hash aggregation). For catalog queries over a handful of rows whose generic plan
/// estimates thousands (recursive CTEs, unnest of a parameter): the hash tables sized for those
/// estimates (zeroed at each run) and full catalog scans made the old vetting query cost 3-8 ms
/// a run instead of 0.5 (docs/benchmarks.md). The answer is the same either way.
pub fn select_kept_few<T>(
    query: &str,
    sql: &'static str,
    args: &[pgrx::datum::DatumWithOid],
    decode: impl Fn(&Row) -> T,
) -> Vec<T> {
    let nested_loops = [
        Setting::user("enable_hashagg", "off"),
        Setting::user("enable_hashjoin", "off"),
        Setting::user("enable_mergejoin", "off"),
    ];
    settings::with(&nested_loops, || select_kept(query, sql, args, decode))
}
