//! optidb.statement_relation: the tables (schema and name) each statement's plan used, kept
//! for good. A tenant family (src/api/tenant_advice.rs) lists every schema where its
//! statements ran; samples say so only for the few the sample ring keeps (416 of 10,000
//! statements in a burst of 1,000 tenants), while the latency table records each entry's
//! relations (table::keep_relations: once, or on PostgreSQL 18, whose queryid spans same-named
//! tables of several schemas, each new one). Names, not OIDs, so the record means the same after
//! pg_dump and restore; one row per statement and relation (at most ENTRY_RELATIONS per
//! pg_stat_statements entry and pass; in a schema per tenant, one per tenant and table).

use super::table;
use pgrx::prelude::*;
use std::collections::{HashMap, HashSet};

/// Record the relations used by the statements that ran since the previous pass (`ran`, by
/// optidb.query id; `owners` maps entries to them): tables, views, materialized views and
/// foreign tables outside the system and temporary schemas. Rows already there stay as
/// they are.
pub fn store(dbid: u32, owners: &HashMap<(i64, u32), i64>, ran: &HashSet<i64>) {
    let stored = |key: &table::Key| {
        owners
            .get(&(key.queryid as i64, key.userid))
            .filter(|id| ran.contains(id))
            .copied()
    };
    let (mut ids, mut rels): (Vec<i64>, Vec<i64>) = (Vec::new(), Vec::new());
    for (key, oids) in table::read_relations(dbid) {
        let Some(query_id) = stored(&key) else {
            continue;
        };
        for oid in oids {
            ids.push(query_id);
            rels.push(oid as i64);
        }
    }
    if ids.is_empty() {
        return;
    }
    Spi::run_with_args(
        "INSERT INTO optidb.statement_relation (query_id, schema_name, table_name) \
         SELECT DISTINCT x.query_id, n.nspname::text, c.relname::text \
         FROM ROWS FROM (pg_catalog.unnest($1::int8[]), pg_catalog.unnest($2::int8[])) \
              AS x(query_id, rel) \
         JOIN pg_catalog.pg_class c ON c.oid = x.rel::oid \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') \
           AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
           AND n.nspname !~ '^pg_(toast_)?temp_' \
         ON CONFLICT DO NOTHING",
        &[ids.into(), rels.into()],
    )
    .unwrap_or_else(|e| error!("storing the relations statements used failed: {e}"));
    table::reopen_full_relations(dbid, |key| stored(key).is_some());
}
