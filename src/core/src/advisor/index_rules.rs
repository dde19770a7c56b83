//! missing_index, composite_index and expression_index: a sequential scan of a large table whose
//! filter the planner itself expects to keep few rows. Column choice and order come from
//! pg_stats selectivity: the most selective equality columns first, as few as needed, then
//! either the ORDER BY keys of a `Sort` under `Limit`, or one range column. And a top-N query
//! (`ORDER BY ... LIMIT n` over a whole large table, no filter): an index on its sort keys,
//! with their direction.

use super::{Catalog, Kind, Recommendation, Statement, Table};
use crate::bottleneck::fmt_count;
use crate::plan_facts::{SeqScan, SortNode};
use crate::predicates::{self, Operator, Target};
use serde_json::json;

/// Below this a sequential scan is cheap whatever the filter.
pub(crate) const MIN_TABLE_ROWS: f64 = 10_000.0;
/// A filter keeping more than this fraction of the table is better served by a seq scan.
const MAX_SELECTIVITY: f64 = 0.05;
/// Stop adding index columns once the expected rows per lookup are this few.
const ENOUGH_ROWS: f64 = 100.0;
/// PostgreSQL's own guess for `expr = value` without statistics (DEFAULT_EQ_SEL).
const DEFAULT_EQ_SEL: f64 = 0.005;

pub(super) fn for_statement(stmt: &Statement, catalog: &Catalog) -> Vec<Recommendation> {
    let Some(plan) = &stmt.plan else {
        return Vec::new();
    };
    let limit_sort = plan.sorts.iter().find(|s| s.under_limit);
    plan.seq_scans
        .iter()
        .filter_map(|scan| match (&scan.filter, limit_sort) {
            // One relation read whole, sorted, cut by LIMIT: the sort keys are the index.
            (None, Some(sort)) if plan.relation_scans.len() == 1 => {
                top_n(stmt, scan, sort, catalog)
            }
            _ => candidate(stmt, scan, limit_sort, catalog),
        })
        .collect()
}

/// `SELECT ... FROM big ORDER BY k DESC LIMIT n`: the table is read whole and sorted to keep n
/// rows. An index on the sort keys, in their order and direction, returns the first n rows
/// directly.
fn top_n(
    stmt: &Statement,
    scan: &SeqScan,
    sort: &SortNode,
    catalog: &Catalog,
) -> Option<Recommendation> {
    let table = catalog.table(&scan.relation, scan.schema.as_deref())?;
    let rows = table.rows();
    if rows < MIN_TABLE_ROWS {
        return None;
    }
    let alias = scan.alias.as_deref().unwrap_or(&scan.relation);
    let keys = sort_columns(sort, alias)?;
    let chosen: Vec<Chosen> = keys
        .into_iter()
        .map(|(column, order)| Chosen {
            element: format!("{}{order}", predicates::quote_ident(&column)),
            label: format!("{column}{order}"),
            selectivity: None,
            role: "order by",
        })
        .collect();
    if chosen.is_empty() || already_indexed(catalog, table, &chosen) {
        return None;
    }
    let kind = if chosen.len() > 1 {
        Kind::CompositeIndex
    } else {
        Kind::MissingIndex
    };
    let labels: Vec<String> = chosen.iter().map(|c| c.label.clone()).collect();
    let rationale = format!(
        "{} (~{} rows) is read in full and sorted to return the first rows of ORDER BY {}; an \
         index on ({}) returns them already in that order, so LIMIT stops after reading a few.",
        table.name,
        fmt_count(rows),
        labels.join(", "),
        labels.join(", ")
    );
    Some(index_advice(
        stmt,
        table,
        kind,
        &chosen,
        rationale,
        json!({
            "table_rows": rows,
            "top_n": {"sort_keys": sort.keys, "sorted_rows_est": sort.est_rows},
            "seq_scan": {"est_rows": scan.est_rows, "total_cost": scan.total_cost},
        }),
    ))
}

/// One chosen index column and why.
struct Chosen {
    element: String,
    label: String,
    selectivity: Option<f64>,
    role: &'static str,
}

fn candidate(
    stmt: &Statement,
    scan: &SeqScan,
    limit_sort: Option<&SortNode>,
    catalog: &Catalog,
) -> Option<Recommendation> {
    let table = catalog.table(&scan.relation, scan.schema.as_deref())?;
    let rows = table.rows();
    if rows < MIN_TABLE_ROWS {
        return None;
    }
    let filter = scan.filter.as_deref()?;
    let alias = scan.alias.as_deref().unwrap_or(&scan.relation);
    // The planner's own estimate of how much of the table the filter keeps.
    let selectivity = scan.est_rows / table.rows_est.max(1.0);
    if selectivity > MAX_SELECTIVITY {
        return None;
    }
    let preds = predicates::on_relation(filter, alias);

    let mut equalities: Vec<(Target, f64)> = Vec::new();
    for p in preds.iter().filter(|p| p.op == Operator::Eq) {
        if !equalities.iter().any(|(t, _)| *t == p.target) && p.target.index_element().is_some() {
            equalities.push((p.target.clone(), eq_selectivity(catalog, table, &p.target)));
        }
    }
    equalities.sort_by(|a, b| a.1.total_cmp(&b.1));

    let mut chosen: Vec<Chosen> = Vec::new();
    let mut expected_rows = rows;
    for (target, sel) in &equalities {
        if !chosen.is_empty() && expected_rows <= ENOUGH_ROWS {
            break;
        }
        expected_rows *= sel;
        chosen.push(Chosen {
            element: target.index_element()?,
            label: target.label().to_string(),
            selectivity: Some(*sel),
            role: "equality",
        });
    }

    let sort_keys = limit_sort.and_then(|s| sort_columns(s, alias));
    let ranges: Vec<&Target> = preds
        .iter()
        .filter(|p| p.op == Operator::Range && p.target.index_element().is_some())
        .map(|p| &p.target)
        .filter(|t| !chosen.iter().any(|c| c.label == t.label()))
        .collect();
    match sort_keys {
        // Equality columns then the ORDER BY keys: rows come out in order, LIMIT stops early.
        Some(keys) if ranges.is_empty() || !chosen.is_empty() => {
            for (column, order) in keys {
                if chosen.iter().any(|c| c.label == column) {
                    continue;
                }
                chosen.push(Chosen {
                    element: format!("{}{order}", predicates::quote_ident(&column)),
                    label: format!("{column}{order}"),
                    selectivity: None,
                    role: "order by",
                });
            }
        }
        _ => {
            if let Some(range) = ranges.first().filter(|_| expected_rows > ENOUGH_ROWS) {
                chosen.push(Chosen {
                    element: range.index_element()?,
                    label: range.label().to_string(),
                    selectivity: None,
                    role: "range",
                });
            }
        }
    }
    if chosen.is_empty() || chosen.iter().all(|c| c.role == "order by") {
        return None; // only LIKE or nothing indexable: the rewrite rules speak to it
    }
    if already_indexed(catalog, table, &chosen) {
        return None;
    }

    let has_expression = preds.iter().any(|p| {
        matches!(p.target, Target::Expression(_))
            && chosen.iter().any(|c| c.label == p.target.label())
    });
    let kind = if has_expression {
        Kind::ExpressionIndex
    } else if chosen.len() > 1 {
        Kind::CompositeIndex
    } else {
        Kind::MissingIndex
    };
    let labels: Vec<String> = chosen.iter().map(|c| c.label.clone()).collect();
    let order_note = if chosen.iter().any(|c| c.role == "order by") {
        " and returns them already in ORDER BY order, so LIMIT stops early"
    } else {
        ""
    };
    let rationale = format!(
        "{} (~{} rows) is read by a sequential scan filtered by {}; the planner expects {} \
         rows ({:.3}% of the table). An index on ({}) reads only those rows{}.",
        table.name,
        fmt_count(rows),
        filter,
        fmt_count(scan.est_rows),
        selectivity * 100.0,
        labels.join(", "),
        order_note
    );
    Some(index_advice(
        stmt,
        table,
        kind,
        &chosen,
        rationale,
        json!({
            "table_rows": rows,
            "planner_rows_est": table.rows_est,
            "seq_scan": {"filter": filter, "est_rows": scan.est_rows, "total_cost": scan.total_cost},
            "filter_selectivity": selectivity,
        }),
    ))
}

/// Index advice on `chosen` columns of `table` for `stmt`, with `facts` as its evidence.
fn index_advice(
    stmt: &Statement,
    table: &Table,
    kind: Kind,
    chosen: &[Chosen],
    rationale: String,
    mut facts: serde_json::Value,
) -> Recommendation {
    let elements: Vec<String> = chosen.iter().map(|c| c.element.clone()).collect();
    let labels: Vec<String> = chosen.iter().map(|c| c.label.clone()).collect();
    facts["columns"] = json!(chosen
        .iter()
        .map(|c| json!({"column": c.label, "role": c.role, "selectivity": c.selectivity}))
        .collect::<Vec<_>>());
    facts["statement_total_ms"] = json!(stmt.total_ms);
    facts["statement_calls"] = json!(stmt.calls);
    Recommendation {
        kind,
        schema: table.schema.clone(),
        table: table.name.clone(),
        columns: labels,
        ddl: format!(
            "CREATE INDEX CONCURRENTLY ON {} ({});",
            table.qualified(),
            elements.join(", ")
        ),
        index_sql: Some(format!(
            "CREATE INDEX ON {} ({})",
            table.qualified(),
            elements.join(", ")
        )),
        rationale,
        evidence: facts,
        confidence: kind.base_confidence(),
        risk: format!(
            "low: built CONCURRENTLY (no write lock); adds disk space and a little write cost \
             on {}",
            table.name
        ),
        query_ids: vec![stmt.query_id],
        simulable: true,
        not_simulable_reason: None,
    }
}

/// Fraction of rows an equality on this target keeps, from pg_stats when it has the column.
pub(super) fn eq_selectivity(catalog: &Catalog, table: &Table, target: &Target) -> f64 {
    let Target::Column(name) = target else {
        return DEFAULT_EQ_SEL;
    };
    match catalog.column(table, name).and_then(|c| c.n_distinct) {
        Some(nd) if nd > 0.0 => 1.0 / nd,
        Some(nd) if nd < 0.0 => 1.0 / (-nd * table.rows().max(1.0)),
        _ => DEFAULT_EQ_SEL,
    }
}

/// ORDER BY keys of a sort, when every key is a plain column of this relation: the column and
/// its order as an index element needs it (" DESC", " NULLS LAST", ...: the part of EXPLAIN's
/// sort key after the column; an ascending index serves a descending order too, but not a
/// different NULLS placement).
pub(super) fn sort_columns(sort: &SortNode, alias: &str) -> Option<Vec<(String, String)>> {
    sort.keys
        .iter()
        .map(|key| {
            let mut words = key.split_whitespace();
            let column = words.next()?;
            let column = column.strip_prefix(&format!("{alias}.")).unwrap_or(column);
            if column.contains('.') || column.contains('(') {
                return None;
            }
            let order: Vec<&str> = words.collect();
            let known = ["DESC", "ASC", "NULLS", "FIRST", "LAST"];
            if !order.iter().all(|w| known.contains(w)) {
                return None; // USING an operator, COLLATE...: not a plain index element
            }
            let order = match order.as_slice() {
                [] | ["ASC"] => String::new(),
                words => format!(" {}", words.join(" ")),
            };
            Some((column.trim_matches('"').to_string(), order))
        })
        .collect()
}

/// True when a valid, unconditional B-tree index already starts with these columns.
fn already_indexed(catalog: &Catalog, table: &Table, chosen: &[Chosen]) -> bool {
    let labels: Vec<String> = chosen.iter().map(|c| c.label.clone()).collect();
    super::candidates::already_indexed(catalog, table, &labels)
}
