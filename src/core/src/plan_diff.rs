//! What changed between two plans of the same statement, in the words a DBA uses:
//! "Seq Scan -> Index Scan on orders", "Hash Join -> Nested Loop".

use crate::plan_facts::PlanFacts;

/// Labels for every relation whose access method changed, then for join methods that changed
/// (compared position by position), then relations that appear in only one plan.
pub fn node_changes(before: &PlanFacts, after: &PlanFacts) -> Vec<String> {
    let mut labels = Vec::new();
    let mut unmatched_after: Vec<bool> = vec![true; after.relation_scans.len()];
    for b in &before.relation_scans {
        let found = after
            .relation_scans
            .iter()
            .enumerate()
            .find(|(i, a)| unmatched_after[*i] && a.relation == b.relation);
        match found {
            Some((i, a)) => {
                unmatched_after[i] = false;
                if a.node_type != b.node_type {
                    labels.push(format!(
                        "{} -> {} on {}",
                        b.node_type, a.node_type, b.relation
                    ));
                }
            }
            None => labels.push(format!("{} on {} removed", b.node_type, b.relation)),
        }
    }
    for (i, a) in after.relation_scans.iter().enumerate() {
        if unmatched_after[i] {
            labels.push(format!("{} on {} added", a.node_type, a.relation));
        }
    }
    for (b, a) in before.joins.iter().zip(after.joins.iter()) {
        if a != b {
            labels.push(format!("{b} -> {a}"));
        }
    }
    let had_sort = before.node_types.iter().any(|n| n == "Sort");
    let has_sort = after.node_types.iter().any(|n| n == "Sort");
    if had_sort && !has_sort {
        labels.push("Sort removed".into());
    }
    labels
}

/// Cost differences below these are planner noise, not gains.
pub const MIN_COST_DELTA: f64 = 1.0;
pub const MIN_IMPROVEMENT_PCT: f64 = 1.0;

/// Percent by which `after` is cheaper than `before`; 0 when the difference is not measurable
/// (below both noise floors) or the plan got more expensive.
pub fn improvement_pct(before: f64, after: f64) -> f64 {
    if before <= 0.0 {
        return 0.0;
    }
    let delta = before - after;
    let pct = delta / before * 100.0;
    if delta < MIN_COST_DELTA || pct < MIN_IMPROVEMENT_PCT {
        0.0
    } else {
        pct
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan_facts::from_explain_json;
    use serde_json::json;

    #[test]
    fn seq_scan_to_index_scan_and_sort_removed() {
        let before = from_explain_json(&json!([{"Plan": {
            "Node Type": "Limit", "Plan Rows": 10, "Total Cost": 100.0,
            "Plans": [{"Node Type": "Sort", "Plan Rows": 10, "Sort Key": ["created_at DESC"],
                "Plans": [{"Node Type": "Seq Scan", "Relation Name": "orders",
                           "Plan Rows": 10, "Filter": "(customer_id = $1)"}]}]}}]))
        .unwrap();
        let after = from_explain_json(&json!([{"Plan": {
            "Node Type": "Limit", "Plan Rows": 10, "Total Cost": 5.0,
            "Plans": [{"Node Type": "Index Scan", "Relation Name": "orders",
                       "Index Name": "<13245>btree_orders_customer_id_created_at",
                       "Plan Rows": 10}]}}]))
        .unwrap();
        assert_eq!(
            node_changes(&before, &after),
            vec!["Seq Scan -> Index Scan on orders", "Sort removed"]
        );
    }

    #[test]
    fn improvement_ignores_noise_and_regressions() {
        assert_eq!(improvement_pct(1000.0, 10.0), 99.0);
        assert_eq!(
            improvement_pct(1000.0, 999.5),
            0.0,
            "below the absolute floor"
        );
        assert_eq!(
            improvement_pct(1_000_000.0, 995_000.0),
            0.0,
            "below 1 percent"
        );
        assert_eq!(improvement_pct(100.0, 150.0), 0.0);
        assert_eq!(improvement_pct(0.0, 0.0), 0.0);
    }

    #[test]
    fn join_method_change_is_labelled() {
        let plan = |join: &str, inner: &str| {
            from_explain_json(&json!({"Plan": {
                "Node Type": join, "Join Type": "Inner", "Plan Rows": 1,
                "Plans": [
                    {"Node Type": "Seq Scan", "Relation Name": "a", "Plan Rows": 1},
                    {"Node Type": inner, "Relation Name": "b", "Plan Rows": 1}]}}))
            .unwrap()
        };
        let labels = node_changes(
            &plan("Hash Join", "Seq Scan"),
            &plan("Nested Loop", "Index Scan"),
        );
        assert_eq!(
            labels,
            vec!["Seq Scan -> Index Scan on b", "Hash Join -> Nested Loop"]
        );
        assert!(node_changes(
            &plan("Hash Join", "Seq Scan"),
            &plan("Hash Join", "Seq Scan")
        )
        .is_empty());
    }
}
