//! stats: planner statistics that mislead it. Stale statistics (many rows changed since the
//! last ANALYZE, or far more live rows than the planner believes) and estimates far from what
//! executions return (pg_stat_statements rows per call versus the plan's estimate), which for
//! several equality filters on one table points at correlated columns (CREATE STATISTICS).

use super::index_rules::MIN_TABLE_ROWS;
use super::{Catalog, Kind, Recommendation, Statement, Table};
use crate::bottleneck::fmt_count;
use crate::plan_facts::estimate_ratio;
use crate::predicates::{self, Operator, Target};
use serde_json::json;

/// Changed rows since the last ANALYZE, as a fraction of the table, that make stats stale
/// (autovacuum's default analyze threshold is 10% + 50 rows).
const STALE_FRACTION: f64 = 0.2;
/// Estimates off by this factor or more are worth fixing.
const SKEW: f64 = 10.0;
/// Root nodes whose estimate is not comparable with rows returned (aggregates, LIMIT).
pub(super) const NOT_COMPARABLE_ROOTS: &[&str] = &[
    "Aggregate",
    "Limit",
    "Group",
    "WindowAgg",
    "ModifyTable",
    "Result",
];

pub(super) fn for_statements(statements: &[Statement], catalog: &Catalog) -> Vec<Recommendation> {
    let mut recs = Vec::new();
    let mut stale_tables: Vec<(String, String)> = Vec::new();
    for table in catalog.tables.iter().filter(|t| is_stale(t)) {
        let readers: Vec<i64> = statements
            .iter()
            .filter(|s| reads(s, &table.name))
            .map(|s| s.query_id)
            .collect();
        if readers.is_empty() {
            continue;
        }
        stale_tables.push((table.schema.clone(), table.name.clone()));
        recs.push(Recommendation {
            kind: Kind::Stats,
            schema: table.schema.clone(),
            table: table.name.clone(),
            columns: Vec::new(),
            ddl: format!("ANALYZE {};", table.qualified()),
            index_sql: None,
            rationale: format!(
                "statistics of {} are stale: the planner believes ~{} rows, the table holds ~{} \
                 live rows and {} rows changed since the last ANALYZE ({}). Plans built on \
                 them can pick the wrong scan or join.",
                table.name,
                fmt_count(table.rows_est),
                fmt_count(table.live_rows),
                fmt_count(table.mod_since_analyze as f64),
                table.last_analyze.as_deref().unwrap_or("never")
            ),
            evidence: json!({
                "planner_rows_est": table.rows_est,
                "live_rows": table.live_rows,
                "mod_since_analyze": table.mod_since_analyze,
                "last_analyze": table.last_analyze,
            }),
            confidence: Kind::Stats.base_confidence(),
            risk: "low: ANALYZE reads a sample and takes no lock that blocks reads or writes"
                .into(),
            query_ids: readers,
            simulable: false,
            not_simulable_reason: Some(
                "hypopg simulates indexes only; the effect of fresh statistics shows after ANALYZE"
                    .into(),
            ),
        });
    }
    for stmt in statements {
        if let Some(rec) = estimate_skew(stmt, catalog, &stale_tables) {
            recs.push(rec);
        }
    }
    recs
}

fn is_stale(t: &Table) -> bool {
    if t.rows() < MIN_TABLE_ROWS / 10.0 {
        return false;
    }
    t.last_analyze.is_none()
        || t.mod_since_analyze as f64 > STALE_FRACTION * t.rows_est.max(1.0) + 1000.0
        || t.live_rows > 2.0 * t.rows_est + 1000.0
}

fn reads(stmt: &Statement, table: &str) -> bool {
    stmt.plan
        .as_ref()
        .is_some_and(|p| p.relation_scans.iter().any(|r| r.relation == table))
}

fn estimate_skew(
    stmt: &Statement,
    catalog: &Catalog,
    stale: &[(String, String)],
) -> Option<Recommendation> {
    let plan = stmt.plan.as_ref()?;
    if stmt.calls == 0 || NOT_COMPARABLE_ROOTS.contains(&plan.node_types.first()?.as_str()) {
        return None;
    }
    let actual = stmt.rows as f64 / stmt.calls as f64;
    let ratio = estimate_ratio(plan.est_rows, actual);
    if ratio < SKEW {
        return None;
    }
    // Attribute it to a filtered scan of a table whose statistics are not already flagged.
    for scan in &plan.seq_scans {
        let table = catalog.table(&scan.relation, scan.schema.as_deref())?;
        if stale
            .iter()
            .any(|(s, n)| *s == table.schema && *n == table.name)
        {
            return None;
        }
        let alias = scan.alias.as_deref().unwrap_or(&scan.relation);
        let columns: Vec<String> = scan
            .filter
            .as_deref()
            .map(|f| predicates::on_relation(f, alias))
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p.op == Operator::Eq)
            .filter_map(|p| match p.target {
                Target::Column(c) => Some(c),
                Target::Expression(_) => None,
            })
            .collect();
        if columns.is_empty() {
            continue;
        }
        let quoted: Vec<String> = columns.iter().map(|c| predicates::quote_ident(c)).collect();
        let (ddl, fix) = if columns.len() >= 2 {
            (
                format!(
                    "CREATE STATISTICS ON {} FROM {}; ANALYZE {};",
                    quoted.join(", "),
                    table.qualified(),
                    table.qualified()
                ),
                "the filtered columns are probably correlated: extended statistics teach the \
                 planner how they combine",
            )
        } else {
            (
                format!(
                    "ALTER TABLE {} ALTER COLUMN {} SET STATISTICS 1000; ANALYZE {};",
                    table.qualified(),
                    quoted[0],
                    table.qualified()
                ),
                "a larger statistics target gives the planner a finer histogram and more common \
                 values",
            )
        };
        return Some(Recommendation {
            kind: Kind::Stats,
            schema: table.schema.clone(),
            table: table.name.clone(),
            columns,
            ddl,
            index_sql: None,
            rationale: format!(
                "the plan expects ~{} rows but executions return ~{} rows per call ({ratio:.0}x \
                 off); {fix}.",
                fmt_count(plan.est_rows),
                fmt_count(actual)
            ),
            evidence: json!({
                "plan_est_rows": plan.est_rows,
                "actual_rows_per_call": actual,
                "ratio": ratio,
                "filter": scan.filter,
            }),
            confidence: Kind::Stats.base_confidence() - 0.05,
            risk: "low: statistics only change plans, never results".into(),
            query_ids: vec![stmt.query_id],
            simulable: false,
            not_simulable_reason: Some(
                "hypopg simulates indexes only; statistics take effect after ANALYZE".into(),
            ),
        });
    }
    None
}
