//! rewrite: query shapes no index fixes well, each with a sketch of the better form.
//! Correlated subqueries (plan: a SubPlan run per outer row), NOT IN (subquery), functions
//! wrapped around indexed columns, and OFFSET paging; and LIKE on a large sequential scan
//! (leading wildcards need pg_trgm: kind trigram_index). Only NOT IN can be written out and
//! replayed, so only it is filed, and only when the replay confirms it (advisor::verdicts).

use super::index_rules::MIN_TABLE_ROWS;
use super::verdicts::UNVERIFIED_SENTENCE;
use super::{comparable, Catalog, Kind, Recommendation, Statement};
use crate::predicates::{self, Operator, Target};
use serde_json::json;

pub(super) fn for_statement(stmt: &Statement, catalog: &Catalog) -> Vec<Recommendation> {
    let mut recs = Vec::new();
    let text = stmt.norm_sql.as_deref().unwrap_or_default();
    let plan = stmt.plan.as_ref();
    let first_table = plan
        .and_then(|p| p.relation_scans.first())
        .and_then(|r| catalog.table(&r.relation, r.schema.as_deref()));
    let (schema, table) = first_table
        .map(|t| (t.schema.clone(), t.name.clone()))
        .unwrap_or_default();
    let mut push = |title: &str,
                    rationale: String,
                    sketch: &str,
                    evidence: serde_json::Value,
                    schema: String,
                    table: String| {
        recs.push(Recommendation {
            kind: Kind::Rewrite,
            schema,
            table,
            columns: vec![title.to_string()],
            ddl: sketch.to_string(),
            index_sql: None,
            rationale,
            evidence,
            confidence: Kind::Rewrite.base_confidence(),
            risk: "medium: a rewrite changes application code; check results match".into(),
            query_ids: vec![stmt.query_id],
            simulable: false,
            not_simulable_reason: Some(
                "hypopg simulates indexes, not a different query text".into(),
            ),
        });
    };

    // A NOT IN subquery also runs as a per-row SubPlan; its own advice below covers it.
    let not_in = not_in_subquery(text);
    if let Some(p) = plan.filter(|p| !p.correlated_subplans.is_empty() && !not_in) {
        push(
            "correlated subquery",
            format!(
                "a correlated subquery ({}) runs once for every outer row. Compute it once \
                 for all rows with a JOIN on a grouped subquery.",
                p.correlated_subplans.join(", ")
            ),
            "-- instead of SELECT c.id, (SELECT max(o.x) FROM o WHERE o.k = c.id) FROM c ...\n\
             SELECT c.id, agg.max_x FROM c\n\
             LEFT JOIN (SELECT k, max(x) AS max_x FROM o GROUP BY k) agg ON agg.k = c.id ...",
            json!({"subplans": p.correlated_subplans}),
            schema.clone(),
            table.clone(),
        );
    }
    if not_in {
        push(
            super::verdicts::NOT_IN_TITLE,
            "NOT IN (SELECT ...) cannot be planned as an anti-join and returns no rows at all \
             if the subquery yields a NULL. NOT EXISTS is planned as an anti-join and means \
             what is usually intended."
                .into(),
            "-- instead of WHERE t.id NOT IN (SELECT s.t_id FROM s WHERE ...)\n\
             WHERE NOT EXISTS (SELECT 1 FROM s WHERE s.t_id = t.id AND ...)",
            json!({"text": text}),
            schema.clone(),
            table.clone(),
        );
    }
    if let Some(offset) = offset_paging(text) {
        push(
            "OFFSET paging",
            format!(
                "OFFSET {offset} makes the server read and discard every skipped row, so deep \
                 pages get slower and slower. Keyset pagination seeks straight to the page."
            ),
            "-- instead of ORDER BY id LIMIT 20 OFFSET $n\n\
             WHERE id > $last_seen_id ORDER BY id LIMIT 20",
            json!({"text": text}),
            schema.clone(),
            table.clone(),
        );
    }
    for scan in plan.map(|p| p.seq_scans.as_slice()).unwrap_or_default() {
        let Some(t) = catalog.table(&scan.relation, scan.schema.as_deref()) else {
            continue;
        };
        if t.rows() < MIN_TABLE_ROWS {
            continue;
        }
        let alias = scan.alias.as_deref().unwrap_or(&scan.relation);
        let preds = scan
            .filter
            .as_deref()
            .map(|f| predicates::on_relation(f, alias))
            .unwrap_or_default();
        for p in preds.iter().filter(|p| p.op == Operator::Like) {
            let Some(element) = p.target.index_element() else {
                continue; // an expression optidb does not trust is never indexed
            };
            let column = p.target.label().to_string();
            recs.push(Recommendation {
                kind: Kind::TrigramIndex,
                schema: t.schema.clone(),
                table: t.name.clone(),
                columns: vec![column.clone()],
                ddl: format!(
                    "CREATE EXTENSION IF NOT EXISTS pg_trgm;\n\
                     CREATE INDEX CONCURRENTLY ON {} USING gin ({} gin_trgm_ops);",
                    t.qualified(),
                    element
                ),
                index_sql: None,
                rationale: format!(
                    "{} (~{} rows) is scanned sequentially for a LIKE/ILIKE pattern on {column}. \
                     A B-tree index only helps patterns anchored at the start ('abc%'); for \
                     patterns starting with a wildcard ('%abc%') use a trigram index, or \
                     anchor the pattern. {UNVERIFIED_SENTENCE}",
                    t.name,
                    crate::bottleneck::fmt_count(t.rows())
                ),
                // index_element: what a trial build (src/api/advice_checks.rs) indexes.
                evidence: json!({"filter": scan.filter, "table_rows": t.rows(), "verified": false,
                                 "index_element": element}),
                confidence: Kind::TrigramIndex.base_confidence(),
                risk: "low: GIN indexes are larger and slower to update than B-trees".into(),
                query_ids: vec![stmt.query_id],
                simulable: false,
                not_simulable_reason: Some(
                    "hypopg cannot create hypothetical GIN indexes (pg_trgm operator classes)"
                        .into(),
                ),
            });
        }
        for p in &preds {
            let Target::Expression(expr) = &p.target else {
                continue;
            };
            let wrapped = catalog.indexes_of(t).find(|i| {
                i.columns.first().is_some_and(|c| {
                    expr.contains(&format!("({c})")) || expr.contains(&format!("({c}::"))
                })
            });
            if let Some(index) = wrapped {
                let column = index.columns[0].clone();
                recs.push(Recommendation {
                    kind: Kind::Rewrite,
                    schema: t.schema.clone(),
                    table: t.name.clone(),
                    columns: vec![comparable(expr)],
                    ddl: format!(
                        "-- compare the bare column so {} can be used, e.g.\n\
                         -- WHERE {column} = $1   (store values already normalized)",
                        index.name
                    ),
                    index_sql: None,
                    rationale: format!(
                        "the filter applies {expr} to {column}, so the index {} on {column} \
                         cannot be used; compare the bare column, or index the expression.",
                        index.name
                    ),
                    evidence: json!({"filter": scan.filter, "index": index.definition}),
                    confidence: Kind::Rewrite.base_confidence(),
                    risk: "medium: a rewrite changes application code".into(),
                    query_ids: vec![stmt.query_id],
                    simulable: false,
                    not_simulable_reason: Some(
                        "hypopg simulates indexes, not a different query text".into(),
                    ),
                });
            }
        }
    }
    recs
}

/// `x NOT IN (SELECT ...)`, which the deparser prints as `NOT x IN (SELECT ...)`.
fn not_in_subquery(text: &str) -> bool {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        regex::Regex::new(r"\bNOT\s+(\S+|\([^()]*\))\s+IN\s+\(SELECT\b|\bNOT IN \(SELECT\b")
            .expect("valid")
    })
    .is_match(text)
}

/// The OFFSET operand of a canonical statement text, if it pages with OFFSET.
fn offset_paging(text: &str) -> Option<&str> {
    let at = text.find(" OFFSET ")?;
    text[at + " OFFSET ".len()..].split_whitespace().next()
}
