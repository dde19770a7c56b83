//! scan()'s family step: every stored statement's normalized text reduced to shape features
//! and clustered (optidb_core::family), each family stored under a stable key with its label,
//! and each statement pointed at its family (optidb.query.family_id).

use crate::postgres::rows;
use optidb_core::family::{self, Features};
use pgrx::prelude::*;

/// Group every parsable statement into families; returns how many families there are.
pub fn assign(now: &TimestampWithTimeZone) -> usize {
    let docs: Vec<(i64, Features)> = rows::select(
        "statements to group",
        "SELECT id, coalesce(norm_sql, raw_sql) AS sql FROM optidb.query \
         WHERE parse_error IS NULL AND coalesce(norm_sql, raw_sql) IS NOT NULL",
        &[],
        |row| (row.get::<i64>("id"), row.get::<String>("sql")),
    )
    .into_iter()
    .filter_map(|(id, sql)| family::features(&sql).map(|f| (id, f)))
    .collect();
    let families = family::cluster(&docs, family::DEFAULT_MIN_SIMILARITY);
    let mut grouped: Vec<i64> = Vec::new();
    for f in &families {
        let Some((_, first)) = docs.iter().find(|(id, _)| f.members.first() == Some(id)) else {
            continue;
        };
        let family_id = rows::value::<i64>(
            "store family",
            "INSERT INTO optidb.family (key, label, verb, tables, statements, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (key) DO UPDATE SET label = excluded.label, verb = excluded.verb, \
                 tables = excluded.tables, statements = excluded.statements, \
                 updated_at = excluded.updated_at \
             RETURNING id",
            &[
                f.key.as_str().into(),
                f.label.as_str().into(),
                first.verb.as_str().into(),
                first.tables.clone().into(),
                (f.members.len() as i32).into(),
                (*now).into(),
            ],
        )
        .expect("INSERT ... RETURNING returns the id");
        Spi::run_with_args(
            "UPDATE optidb.query SET family_id = $1 \
             WHERE id = ANY ($2) AND family_id IS DISTINCT FROM $1",
            &[family_id.into(), f.members.clone().into()],
        )
        .unwrap_or_else(|e| error!("assigning family {} failed: {e}", f.label));
        grouped.extend(&f.members);
    }
    // Families no statement belongs to any more; statements that no longer parse.
    Spi::run_with_args(
        "UPDATE optidb.query SET family_id = NULL \
         WHERE family_id IS NOT NULL AND id <> ALL ($1)",
        &[grouped.into()],
    )
    .unwrap_or_else(|e| error!("clearing families failed: {e}"));
    Spi::run_with_args(
        "DELETE FROM optidb.family WHERE updated_at < $1",
        &[(*now).into()],
    )
    .unwrap_or_else(|e| error!("deleting empty families failed: {e}"));
    families.len()
}
