//! Samples drained from shared memory (samples.rs) into optidb.sample, for the statements
//! optidb tracks; per statement the slowest one and the latest KEEP_TYPICAL typical ones stay.

use super::samples;
use crate::postgres::pgss;
use optidb_core::vocabulary::SampleKind;
use pgrx::prelude::*;

const KEEP_TYPICAL: i64 = 5;

/// Store this database's new samples. Returns how many were stored.
pub fn store() -> usize {
    // SAFETY: the current database's oid, set at connection.
    let dbid = unsafe { pg_sys::MyDatabaseId.to_u32() };
    let drained = samples::drain(dbid);
    if drained.is_empty() {
        return 0;
    }
    let owners = pgss::owners(dbid);
    let mut touched = Vec::new();
    for s in &drained {
        let Some(query_id) = owners.get(&(s.key.queryid as i64, s.key.userid)) else {
            continue;
        };
        let values: Vec<Option<String>> = s
            .params
            .iter()
            .map(|p| match &p.value {
                samples::Value::Text(t) => Some(t.clone()),
                _ => None,
            })
            .collect();
        let known = s
            .params
            .iter()
            .all(|p| !matches!(p.value, samples::Value::Unknown));
        let types: Vec<pg_sys::Oid> = s.params.iter().map(|p| p.type_oid.into()).collect();
        let relations: Vec<pg_sys::Oid> = s.relations.iter().map(|r| (*r).into()).collect();
        let path = s.search_path.as_ref().map(|p| p.text.clone());
        let path_oids: Option<Vec<pg_sys::Oid>> = s
            .search_path
            .as_ref()
            .map(|p| p.oids.iter().map(|o| (*o).into()).collect());
        // A sample can be both the slowest so far and a typical one (the first execution).
        let kinds = [
            (SampleKind::Typical, s.typical),
            (SampleKind::Slowest, s.slowest),
        ];
        for (kind, _) in kinds.into_iter().filter(|(_, is)| *is) {
            Spi::run_with_args(
                "INSERT INTO optidb.sample (query_id, started_at, kind, elapsed_ms, search_path, \
                     sql_text, param_types, param_values, values_known, relation_oids, \
                     search_path_oids) \
                 VALUES ($1, timestamptz '2000-01-01 00:00:00+00' \
                             + pg_catalog.make_interval(secs => $2), \
                         $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                &[
                    (*query_id).into(),
                    (s.started_us as f64 / 1e6).into(),
                    kind.as_str().into(),
                    (s.elapsed_ns as f64 / 1e6).into(),
                    path.clone().into(),
                    s.text.clone().into(),
                    types.clone().into(),
                    values.clone().into(),
                    (known && s.text.is_some()).into(),
                    relations.clone().into(),
                    path_oids.clone().into(),
                ],
            )
            .unwrap_or_else(|e| error!("storing a sample failed: {e}"));
        }
        touched.push(*query_id);
    }
    Spi::run_with_args(
        "DELETE FROM optidb.sample s USING ( \
             SELECT id, row_number() OVER ( \
                 PARTITION BY query_id, kind \
                 ORDER BY CASE WHEN kind = 'slowest' THEN elapsed_ms END DESC NULLS LAST, \
                          started_at DESC, id DESC) AS n, kind \
             FROM optidb.sample WHERE query_id = ANY ($1)) r \
         WHERE s.id = r.id AND r.n > CASE WHEN r.kind = 'slowest' THEN 1 ELSE $2 END",
        &[touched.clone().into(), KEEP_TYPICAL.into()],
    )
    .unwrap_or_else(|e| error!("pruning samples failed: {e}"));
    touched.len()
}
