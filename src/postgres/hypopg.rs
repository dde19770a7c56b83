//! hypopg. Hypothetical indexes live in backend memory, outside any transaction, so every one
//! optidb creates is dropped by oid whatever happens next (success, error, cancel), with
//! interrupts held while dropping (guarded::cleanup); no hypopg_reset(). optidb uses them only
//! in its replay workers (src/postgres/replay_worker.rs), never in a user's session.

use crate::postgres::errors::raise;
use crate::postgres::guarded::{self, Failure};
use crate::postgres::replay::Context;
use crate::postgres::rows;
use crate::postgres::vetting::Vetted;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::spi::quote_identifier;
use std::panic::UnwindSafe;

pub struct Hypopg {
    /// Quoted, for SQL text.
    schema: String,
    name: String,
}

/// hypopg's schema in this database, if the extension is installed.
pub fn locate() -> Option<Hypopg> {
    rows::first_kept(
        "hypopg schema",
        "SELECT n.nspname::pg_catalog.text AS schema FROM pg_catalog.pg_extension e \
         JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace \
         WHERE e.extname OPERATOR(pg_catalog.=) 'hypopg'",
        &[],
        |row| row.get::<String>("schema"),
    )
    .map(|schema| Hypopg::in_schema(&schema))
}

pub fn require() -> Hypopg {
    locate().unwrap_or_else(|| {
        raise(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "the hypopg extension is not installed in this database",
            Some("Install the hypopg package for your PostgreSQL version, then run CREATE EXTENSION hypopg;"),
        )
    })
}

impl Hypopg {
    /// hypopg installed in `schema` (as `locate` found it in the caller's database).
    pub fn in_schema(schema: &str) -> Hypopg {
        Hypopg {
            schema: quote_identifier(schema),
            name: schema.to_string(),
        }
    }

    /// The schema's name, unquoted (what a replay worker is told).
    pub fn schema_name(&self) -> String {
        self.name.clone()
    }

    /// Create the hypothetical index `index_sql` (a plain CREATE INDEX) in the statement's
    /// context (its expressions resolve as the statement's do), run `work` while it exists, and
    /// drop it again in every case.
    pub fn with_index<R>(
        &self,
        context: &Context,
        index_sql: &str,
        work: impl FnOnce() -> R + UnwindSafe,
    ) -> Result<R, Failure> {
        let create = format!(
            "SELECT indexrelid FROM {}.hypopg_create_index($1)",
            self.schema
        );
        let oid = guarded::run(None, || {
            Vetted::optidb_index(context).run(|| {
                Spi::get_one_with_args::<pg_sys::Oid>(&create, &[index_sql.into()])
                    .unwrap_or_else(|e| error!("{e}"))
            })
        })?
        .ok_or_else(|| Failure::Error {
            sqlstate: "XX000".into(),
            message: "hypopg_create_index returned no index".into(),
        })?;
        let drop = format!("SELECT {}.hypopg_drop_index($1)", self.schema);
        Ok(PgTryBuilder::new(work)
            .finally(|| {
                guarded::cleanup(|| {
                    Spi::run_with_args(&drop, &[oid.into()]).ok();
                })
            })
            .execute())
    }

    /// Create each of `index_sqls` as a hypothetical index (one that cannot be made, such as
    /// a column type without a B-tree operator class, is left out: None), run `work` with
    /// what was made (its oid and the name plans show), and drop them all again in every case.
    pub fn with_indexes<R>(
        &self,
        context: &Context,
        index_sqls: &[String],
        work: impl FnOnce(&[Option<Made>]) -> R + UnwindSafe,
    ) -> R {
        let create = format!(
            "SELECT indexrelid, indexname::text FROM {}.hypopg_create_index($1)",
            self.schema
        );
        let made: Vec<Option<Made>> = index_sqls
            .iter()
            .map(|sql| {
                guarded::run(None, || {
                    Vetted::optidb_index(context).run(|| {
                        rows::first(
                            "hypothetical index",
                            &create,
                            &[sql.as_str().into()],
                            |row| Made {
                                oid: row.get("indexrelid"),
                                name: row.get("indexname"),
                            },
                        )
                    })
                })
                .ok()
                .flatten()
            })
            .collect();
        let oids: Vec<pg_sys::Oid> = made.iter().flatten().map(|m| m.oid).collect();
        let drop = format!("SELECT {}.hypopg_drop_index($1)", self.schema);
        let made = std::panic::AssertUnwindSafe(made);
        PgTryBuilder::new(move || work(&made))
            .finally(|| {
                guarded::cleanup(|| {
                    for oid in &oids {
                        Spi::run_with_args(&drop, &[(*oid).into()]).ok();
                    }
                })
            })
            .execute()
    }

    /// The size hypopg estimates for a hypothetical index, in bytes.
    pub fn size(&self, oid: pg_sys::Oid) -> Option<i64> {
        let sql = format!("SELECT {}.hypopg_relation_size($1)", self.schema);
        rows::value::<i64>("hypothetical index size", &sql, &[oid.into()])
    }
}

/// A hypothetical index hypopg made.
#[derive(Clone, Debug)]
pub struct Made {
    pub oid: pg_sys::Oid,
    /// As plans name it ("<16390>btree_orders_customer_id").
    pub name: String,
}
