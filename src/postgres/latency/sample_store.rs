//! Samples drained from shared memory (samples.rs) into optidb.sample, for the statements
//! optidb tracks; per statement the slowest one and the latest KEEP_TYPICAL typical ones stay.
//! A failed statement (failed.rs) gives a typical sample too: its latest failed execution,
//! with its text and search_path, so it can be replayed in the context it ran in.

use super::failed::Failed;
use super::samples::{self, Sample, SearchPath};
use crate::postgres::pgss;
use crate::postgres::rows;
use optidb_core::vocabulary::SampleKind;
use pgrx::prelude::*;
use std::collections::HashMap;

const KEEP_TYPICAL: i64 = 5;

/// Store this database's new samples, and one for each statement of `failed`. Returns how
/// many statements got samples.
pub fn store(failed: &[Failed]) -> usize {
    // SAFETY: the current database's oid, set at connection.
    let dbid = unsafe { pg_sys::MyDatabaseId.to_u32() };
    let mut drained = samples::drain(dbid);
    drained.extend(failed.iter().filter_map(failed_sample));
    if drained.is_empty() {
        return 0;
    }
    store_for(&drained, &pgss::owners(dbid))
}

/// Store `drained` (this server's samples, or a source's pulled from its standby) under the
/// statements `owners` maps their (queryid, role) to, and a sample for each of `failed`.
/// Returns how many statements got samples.
pub fn store_pulled(
    drained: Vec<Sample>,
    failed: &[Failed],
    owners: &HashMap<(i64, u32), i64>,
) -> usize {
    let mut drained = drained;
    drained.extend(failed.iter().filter_map(failed_sample));
    store_for(&drained, owners)
}

fn store_for(drained: &[Sample], owners: &HashMap<(i64, u32), i64>) -> usize {
    let mut touched = Vec::new();
    for s in drained {
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

/// The latest failed execution of a failed statement as a typical sample (no parameter values:
/// they are not rendered while an error is raised). None when nothing of it is known.
fn failed_sample(f: &Failed) -> Option<Sample> {
    let search_path = path_names(&f.path_oids).map(|text| SearchPath {
        text,
        oids: f.path_oids.clone(),
    });
    let text = f.text.clone().filter(|_| f.replayable);
    if search_path.is_none() && text.is_none() {
        return None;
    }
    Some(Sample {
        key: f.key,
        elapsed_ns: f.max_us.max(0) as u64 * 1000,
        started_us: f.started_us,
        slowest: false,
        typical: true,
        search_path,
        text,
        params: Vec::new(),
        relations: Vec::new(),
    })
}

/// The search_path setting naming these schemas (quoted, in order); None when one no longer
/// exists (a replay uses a name only while it denotes the schema the statement found).
fn path_names(oids: &[u32]) -> Option<String> {
    if oids.is_empty() {
        return None;
    }
    let oids: Vec<pg_sys::Oid> = oids.iter().map(|o| (*o).into()).collect();
    rows::value::<String>(
        "search_path of a failed statement",
        "SELECT pg_catalog.string_agg(pg_catalog.quote_ident(n.nspname::text), ', ' \
                                      ORDER BY u.i) \
         FROM unnest($1::oid[]) WITH ORDINALITY AS u(oid, i) \
         JOIN pg_catalog.pg_namespace n ON n.oid = u.oid \
         HAVING count(*) = pg_catalog.cardinality($1::oid[])",
        &[oids.into()],
    )
}
