//! redundant_index and unused_index, from catalog facts alone. An index is redundant when
//! another valid B-tree index on the same table has the same leading columns (a duplicate, or
//! a longer index it is a prefix of); unused when it was never scanned while its table was in
//! use. Indexes that back a constraint (primary key, unique, exclusion) are never advised away.

use super::{Catalog, Index, Kind, Recommendation};
use crate::bottleneck::fmt_count;
use crate::predicates::quote_ident;
use serde_json::json;

pub(super) fn redundant_and_unused(catalog: &Catalog) -> Vec<Recommendation> {
    let mut recs = Vec::new();
    for index in catalog.indexes.iter().filter(|i| removable(i)) {
        if let Some(wider) = catalog.indexes.iter().find(|other| covers(other, index)) {
            recs.push(drop_rec(
                Kind::RedundantIndex,
                index,
                format!(
                    "{} on ({}) is {} {} on ({}): every lookup it serves, {} serves too, and \
                     each write maintains both.",
                    index.name,
                    index.columns.join(", "),
                    if wider.columns.len() == index.columns.len() {
                        "a duplicate of"
                    } else {
                        "a prefix of"
                    },
                    wider.name,
                    wider.columns.join(", "),
                    wider.name
                ),
                json!({"index": index.definition, "covered_by": wider.definition,
                       "idx_scan": index.idx_scan, "bytes": index.bytes}),
            ));
        } else if index.idx_scan == 0 {
            recs.push(drop_rec(
                Kind::UnusedIndex,
                index,
                format!(
                    "{} has not been used by any scan since statistics were reset ({}), yet \
                     costs {} bytes of disk and work on every write.",
                    index.name,
                    catalog.stats_since.as_deref().unwrap_or("server start"),
                    fmt_count(index.bytes as f64)
                ),
                json!({"index": index.definition, "idx_scan": 0, "bytes": index.bytes,
                       "observed_since": catalog.stats_since}),
            ));
        }
    }
    recs
}

fn removable(i: &Index) -> bool {
    i.is_valid && !i.is_unique && !i.is_primary && !i.backs_constraint
}

/// `other` serves every lookup `index` serves.
fn covers(other: &Index, index: &Index) -> bool {
    other.name != index.name
        && other.schema == index.schema
        && other.table == index.table
        && other.is_valid
        && other.access_method == "btree"
        && index.access_method == "btree"
        && other.predicate == index.predicate
        && other.columns.len() >= index.columns.len()
        && other.columns.starts_with(&index.columns)
        // Of two exact duplicates, advise dropping only one: the later name.
        && (other.columns.len() > index.columns.len() || other.name < index.name || !removable(other))
}

fn drop_rec(
    kind: Kind,
    index: &Index,
    rationale: String,
    evidence: serde_json::Value,
) -> Recommendation {
    Recommendation {
        kind,
        schema: index.schema.clone(),
        table: index.table.clone(),
        columns: vec![index.name.clone()],
        ddl: format!(
            "DROP INDEX CONCURRENTLY {}.{};",
            quote_ident(&index.schema),
            quote_ident(&index.name)
        ),
        index_sql: None,
        rationale,
        evidence,
        confidence: kind.base_confidence(),
        risk: "medium: statements that use this index will switch plans; keep its definition \
               to recreate it if needed"
            .into(),
        query_ids: Vec::new(),
        simulable: false,
        not_simulable_reason: Some(
            "hypopg hides existing indexes only on newer versions; dropping is judged from \
             usage statistics"
                .into(),
        ),
    }
}
