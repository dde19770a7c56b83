//! Facts read off an `EXPLAIN (FORMAT JSON)` plan: which nodes ran, which relations were read
//! sequentially and with what filter, which indexes were used, how far row estimates were from
//! actual rows (when the plan was ANALYZEd). Rules and answers cite these facts, so they are
//! stored as they are derived here.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A sequential scan and what it filtered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeqScan {
    pub relation: String,
    pub schema: Option<String>,
    pub alias: Option<String>,
    pub est_rows: f64,
    pub total_cost: f64,
    pub filter: Option<String>,
}

/// An index the plan uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexUse {
    pub node_type: String,
    pub relation: Option<String>,
    pub index: String,
    pub cond: Option<String>,
}

/// A sort node; `on_disk` is only known for ANALYZEd plans. `under_limit` marks the
/// "ORDER BY ... LIMIT n" shape an index in sort order can answer without sorting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SortNode {
    pub keys: Vec<String>,
    pub est_rows: f64,
    pub on_disk: bool,
    #[serde(default)]
    pub under_limit: bool,
}

/// How one relation is read (any node with a "Relation Name").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelationScan {
    pub relation: String,
    /// Its schema (plans EXPLAINed with VERBOSE name it).
    #[serde(default)]
    pub schema: Option<String>,
    pub node_type: String,
    /// The name the plan's conditions call it by (VERBOSE plans qualify columns with it).
    #[serde(default)]
    pub alias: Option<String>,
}

/// A condition a scan applies to its relation's rows (Filter, Index Cond, Recheck Cond), as
/// EXPLAIN prints it: the columns an index on that relation could serve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScanCondition {
    pub relation: String,
    pub schema: Option<String>,
    pub alias: Option<String>,
    pub condition: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PlanFacts {
    pub total_cost: f64,
    /// Rows the planner expects the top node to return.
    pub est_rows: f64,
    /// Rows the top node returned (ANALYZEd plans only).
    pub act_rows: Option<f64>,
    /// Largest over/under-estimate factor of any executed node (ANALYZEd plans only), >= 1.
    pub worst_estimate_ratio: Option<f64>,
    pub node_types: Vec<String>,
    pub join_types: Vec<String>,
    /// Every filter-like condition, prefixed by the relation it applies to when known.
    pub filters: Vec<String>,
    pub seq_scans: Vec<SeqScan>,
    pub index_uses: Vec<IndexUse>,
    pub sorts: Vec<SortNode>,
    /// Every relation read, with the node type reading it, in plan order.
    #[serde(default)]
    pub relation_scans: Vec<RelationScan>,
    /// Join node types in plan order ("Nested Loop", "Hash Join", "Merge Join").
    #[serde(default)]
    pub joins: Vec<String>,
    /// Subplans executed per outer row (correlated subqueries), by name ("SubPlan 1").
    #[serde(default)]
    pub correlated_subplans: Vec<String>,
    /// Every scan's conditions on its relation, whatever the scan method.
    #[serde(default)]
    pub scan_conditions: Vec<ScanCondition>,
    /// Join conditions of every join method (Hash Cond, Merge Cond, Join Filter), columns
    /// qualified by their relations' aliases.
    #[serde(default)]
    pub join_conditions: Vec<String>,
    /// GROUP BY keys of each Aggregate or Group node that has them.
    #[serde(default)]
    pub group_keys: Vec<Vec<String>>,
    pub node_count: usize,
}

impl PlanFacts {
    pub fn had_seq_scan(&self) -> bool {
        !self.seq_scans.is_empty()
    }
}

/// Why a plan could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanShapeError(pub String);

impl std::fmt::Display for PlanShapeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Accepts what `EXPLAIN (FORMAT JSON)` prints: `[{"Plan": {...}, ...}]`, or the inner object,
/// or a bare plan node.
pub fn from_explain_json(explain: &Value) -> Result<PlanFacts, PlanShapeError> {
    let top = match explain {
        Value::Array(items) => items
            .first()
            .ok_or_else(|| PlanShapeError("empty EXPLAIN output".into()))?,
        other => other,
    };
    let root = top.get("Plan").unwrap_or(top);
    if root.get("Node Type").is_none() {
        return Err(PlanShapeError(
            "no \"Node Type\" in the plan's top node".into(),
        ));
    }
    let mut facts = PlanFacts {
        total_cost: num(root, "Total Cost").unwrap_or(0.0),
        est_rows: num(root, "Plan Rows").unwrap_or(0.0),
        act_rows: num(root, "Actual Rows"),
        ..PlanFacts::default()
    };
    walk(root, false, 1.0, &mut facts);
    Ok(facts)
}

/// How many processes share a parallel plan's rows (PostgreSQL's get_parallel_divisor: the
/// workers, plus the leader's share, which shrinks as workers are added).
fn parallel_divisor(workers: f64) -> f64 {
    let leader = 1.0 - 0.3 * workers;
    workers + leader.max(0.0)
}

/// `parallel`: the divisor of the Gather above, when this node runs in parallel workers. A
/// parallel-aware node's "Plan Rows" are per process; rows are scaled back to the whole.
fn walk(node: &Value, parent_is_limit: bool, parallel: f64, facts: &mut PlanFacts) {
    let per_process = if node.get("Parallel Aware").and_then(Value::as_bool) == Some(true) {
        parallel
    } else {
        1.0
    };
    facts.node_count += 1;
    let node_type = text(node, "Node Type").unwrap_or_default();
    push_distinct(&mut facts.node_types, &node_type);
    if let Some(join) = text(node, "Join Type") {
        push_distinct(&mut facts.join_types, &join);
    }
    if matches!(
        node_type.as_str(),
        "Nested Loop" | "Hash Join" | "Merge Join"
    ) {
        facts.joins.push(node_type.clone());
    }
    if text(node, "Parent Relationship").as_deref() == Some("SubPlan") {
        if let Some(name) = text(node, "Subplan Name") {
            push_distinct(&mut facts.correlated_subplans, &name);
        }
    }

    let relation = text(node, "Relation Name");
    if let Some(rel) = &relation {
        facts.relation_scans.push(RelationScan {
            relation: rel.clone(),
            schema: text(node, "Schema"),
            node_type: node_type.clone(),
            alias: text(node, "Alias"),
        });
        for key in ["Filter", "Index Cond", "Recheck Cond"] {
            if let Some(condition) = text(node, key) {
                facts.scan_conditions.push(ScanCondition {
                    relation: rel.clone(),
                    schema: text(node, "Schema"),
                    alias: text(node, "Alias"),
                    condition,
                });
            }
        }
    }
    for key in ["Hash Cond", "Merge Cond", "Join Filter"] {
        if let Some(cond) = text(node, key) {
            push_distinct(&mut facts.join_conditions, &cond);
        }
    }
    if let Some(keys) = strings(node, "Group Key").filter(|k| !k.is_empty()) {
        facts.group_keys.push(keys);
    }
    let label = relation.clone().or_else(|| text(node, "Alias"));
    for key in [
        "Filter",
        "Index Cond",
        "Recheck Cond",
        "Hash Cond",
        "Merge Cond",
        "Join Filter",
    ] {
        if let Some(cond) = text(node, key) {
            let entry = match &label {
                Some(rel) => format!("{rel}: {cond}"),
                None => cond,
            };
            push_distinct(&mut facts.filters, &entry);
        }
    }

    match node_type.as_str() {
        "Seq Scan" => facts.seq_scans.push(SeqScan {
            relation: relation.clone().unwrap_or_default(),
            schema: text(node, "Schema"),
            alias: text(node, "Alias"),
            est_rows: num(node, "Plan Rows").unwrap_or(0.0) * per_process,
            total_cost: num(node, "Total Cost").unwrap_or(0.0),
            filter: text(node, "Filter"),
        }),
        "Index Scan" | "Index Only Scan" | "Bitmap Index Scan" => {
            if let Some(index) = text(node, "Index Name") {
                facts.index_uses.push(IndexUse {
                    node_type: node_type.clone(),
                    relation: relation.clone(),
                    index,
                    cond: text(node, "Index Cond"),
                });
            }
        }
        "Sort" | "Incremental Sort" => facts.sorts.push(SortNode {
            keys: strings(node, "Sort Key").unwrap_or_default(),
            est_rows: num(node, "Plan Rows").unwrap_or(0.0),
            on_disk: text(node, "Sort Space Type").as_deref() == Some("Disk"),
            under_limit: parent_is_limit,
        }),
        _ => {}
    }

    if let (Some(est), Some(act), Some(loops)) = (
        num(node, "Plan Rows"),
        num(node, "Actual Rows"),
        num(node, "Actual Loops"),
    ) {
        if loops > 0.0 {
            let ratio = estimate_ratio(est, act);
            facts.worst_estimate_ratio =
                Some(facts.worst_estimate_ratio.map_or(ratio, |w| w.max(ratio)));
        }
    }

    if let Some(children) = node.get("Plans").and_then(Value::as_array) {
        // Parallel plans put Gather (Merge) between the Limit and its Sort.
        let gather = matches!(node_type.as_str(), "Gather Merge" | "Gather");
        let is_limit = node_type == "Limit" || (parent_is_limit && gather);
        let parallel = match num(node, "Workers Planned") {
            Some(workers) if gather => parallel_divisor(workers),
            _ => parallel,
        };
        for child in children {
            walk(child, is_limit, parallel, facts);
        }
    }
}

/// How many times off an estimate is, in either direction; rows below 1 count as 1 so an
/// empty result estimated at 1 row is not flagged.
pub fn estimate_ratio(estimated: f64, actual: f64) -> f64 {
    let e = estimated.max(1.0);
    let a = actual.max(1.0);
    if e > a {
        e / a
    } else {
        a / e
    }
}

fn push_distinct(list: &mut Vec<String>, item: &str) {
    if !item.is_empty() && !list.iter().any(|x| x == item) {
        list.push(item.to_string());
    }
}

fn text(node: &Value, key: &str) -> Option<String> {
    node.get(key).and_then(Value::as_str).map(str::to_string)
}

fn strings(node: &Value, key: &str) -> Option<Vec<String>> {
    node.get(key).and_then(Value::as_array).map(|items| {
        items
            .iter()
            .filter_map(|k| k.as_str().map(str::to_string))
            .collect()
    })
}

fn num(node: &Value, key: &str) -> Option<f64> {
    node.get(key).and_then(Value::as_f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parallel_scans_rows_are_counted_for_all_its_processes() {
        let plan = serde_json::json!([{"Plan": {
            "Node Type": "Aggregate", "Plan Rows": 1, "Total Cost": 5000.0, "Plans": [
            {"Node Type": "Gather", "Workers Planned": 2, "Plan Rows": 2, "Plans": [
                {"Node Type": "Seq Scan", "Parallel Aware": true, "Relation Name": "t",
                 "Alias": "t", "Plan Rows": 1000, "Total Cost": 4000.0,
                 "Filter": "(a = $1)"}]}]}}]);
        let facts = from_explain_json(&plan).unwrap();
        // 2 workers and a leader doing 40% of a worker's share: 2.4 processes.
        assert!((facts.seq_scans[0].est_rows - 2400.0).abs() < 1e-6);
    }
    use serde_json::json;

    fn generic_plan() -> Value {
        json!([{
            "Plan": {
                "Node Type": "Limit", "Startup Cost": 100.0, "Total Cost": 2000.5,
                "Plan Rows": 10, "Plan Width": 40,
                "Plans": [{
                    "Node Type": "Sort", "Parent Relationship": "Outer",
                    "Total Cost": 2000.0, "Plan Rows": 500, "Sort Key": ["o.created_at DESC"],
                    "Plans": [{
                        "Node Type": "Hash Join", "Join Type": "Inner", "Total Cost": 1900.0,
                        "Plan Rows": 500, "Hash Cond": "(o.customer_id = c.id)",
                        "Plans": [
                            {"Node Type": "Seq Scan", "Relation Name": "orders", "Alias": "o",
                             "Total Cost": 1500.0, "Plan Rows": 500,
                             "Filter": "(status = $1)"},
                            {"Node Type": "Hash", "Total Cost": 8.0, "Plan Rows": 1,
                             "Plans": [{"Node Type": "Index Scan", "Relation Name": "customers",
                                        "Alias": "c", "Index Name": "customers_pkey",
                                        "Total Cost": 8.0, "Plan Rows": 1,
                                        "Index Cond": "(id = $2)"}]}
                        ]
                    }]
                }]
            }
        }])
    }

    #[test]
    fn generic_plan_facts() {
        let f = from_explain_json(&generic_plan()).unwrap();
        assert_eq!(f.total_cost, 2000.5);
        assert_eq!(f.est_rows, 10.0);
        assert_eq!(f.act_rows, None);
        assert_eq!(f.worst_estimate_ratio, None);
        assert_eq!(
            f.node_types,
            vec![
                "Limit",
                "Sort",
                "Hash Join",
                "Seq Scan",
                "Hash",
                "Index Scan"
            ]
        );
        assert_eq!(f.join_types, vec!["Inner"]);
        assert!(f.had_seq_scan());
        assert_eq!(f.seq_scans[0].relation, "orders");
        assert_eq!(f.seq_scans[0].filter.as_deref(), Some("(status = $1)"));
        assert_eq!(f.index_uses[0].index, "customers_pkey");
        assert_eq!(f.sorts[0].keys, vec!["o.created_at DESC"]);
        assert!(f.sorts[0].under_limit);
        assert_eq!(f.joins, vec!["Hash Join"]);
        assert_eq!(
            f.relation_scans
                .iter()
                .map(|r| format!("{} {}", r.node_type, r.relation))
                .collect::<Vec<_>>(),
            vec!["Seq Scan orders", "Index Scan customers"]
        );
        assert!(f.filters.contains(&"orders: (status = $1)".to_string()));
        assert!(f.filters.contains(&"customers: (id = $2)".to_string()));
        assert_eq!(f.node_count, 6);
    }

    #[test]
    fn sort_under_gather_merge_under_limit_counts_as_under_limit() {
        let plan = json!({"Plan": {"Node Type": "Limit", "Plan Rows": 10, "Plans": [
            {"Node Type": "Gather Merge", "Plan Rows": 10, "Plans": [
                {"Node Type": "Sort", "Plan Rows": 5, "Sort Key": ["created_at DESC"],
                 "Plans": [{"Node Type": "Seq Scan", "Relation Name": "orders",
                            "Parallel Aware": true, "Plan Rows": 5}]}]}]}});
        let f = from_explain_json(&plan).unwrap();
        assert!(f.sorts[0].under_limit);
    }

    #[test]
    fn analyzed_plan_gives_estimate_ratio() {
        let plan = json!([{"Plan": {
        "Node Type": "Nested Loop", "Join Type": "Inner", "Total Cost": 10.0,
        "Plan Rows": 5, "Actual Rows": 5000, "Actual Loops": 1,
        "Plans": [
            {"Node Type": "Seq Scan", "Relation Name": "a", "Plan Rows": 1,
             "Actual Rows": 1, "Actual Loops": 1, "Total Cost": 1.0},
            {"Node Type": "Index Scan", "Relation Name": "b", "Index Name": "b_idx",
             "Plan Rows": 1, "Actual Rows": 0, "Actual Loops": 0, "Total Cost": 1.0}
        ]}}]);
        let f = from_explain_json(&plan).unwrap();
        assert_eq!(f.act_rows, Some(5000.0));
        assert_eq!(f.worst_estimate_ratio, Some(1000.0));
    }

    #[test]
    fn estimate_ratio_is_symmetric_and_floors_at_one_row() {
        assert_eq!(estimate_ratio(10.0, 1000.0), 100.0);
        assert_eq!(estimate_ratio(1000.0, 10.0), 100.0);
        assert_eq!(estimate_ratio(1.0, 0.0), 1.0);
    }

    #[test]
    fn bad_shapes_are_errors_not_panics() {
        assert!(from_explain_json(&json!([])).is_err());
        assert!(from_explain_json(&json!({"foo": 1})).is_err());
        assert!(from_explain_json(&json!("text")).is_err());
    }
}
