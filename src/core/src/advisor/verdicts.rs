//! Whether advice that is not a B-tree index stands, judged from replays (src/api/advice_checks.rs
//! runs them as the statement's owner through the vetted replay path): a rewrite only when its
//! rewritten plan is measurably cheaper, statistics only when a fresh plan's estimate is far
//! from what executions return and the fix can change it, a trigram index only when a real,
//! rolled-back build shows its plan reading the index at a lower cost (hypopg cannot make GIN
//! indexes; without such a build it stays at a low, unverified confidence). Pure: figures in,
//! verdict out.

use super::stats_rules::NOT_COMPARABLE_ROOTS;
use super::{Kind, Recommendation};
use crate::plan_facts::{estimate_ratio, PlanFacts};
use serde_json::{json, Value};

/// The rewritten plan must cost at most this fraction of the original's: a rewrite changes
/// application code, so a few percent of estimated cost (within the planner's noise) is not
/// worth it.
pub const REWRITE_MAX_COST_RATIO: f64 = 0.8;
/// Stale statistics are worth an ANALYZE when a statement reading the table is estimated at
/// least this many times off what its executions return.
pub const STALE_CONFIRM_RATIO: f64 = 3.0;
/// A larger statistics target or extended statistics: the estimate must be this far off (the
/// rule's own threshold, re-checked on a fresh plan).
pub const SKEW_CONFIRM_RATIO: f64 = 10.0;
/// ANALYZE samples 300 x the statistics target rows (PostgreSQL's std_typanalyze): a table
/// with fewer rows is read whole already, and a larger target changes nothing it can see.
pub const SAMPLE_ROWS_PER_TARGET: f64 = 300.0;
/// Confidence of advice no replay could measure (a GIN trigram index): shown, never high.
pub const UNVERIFIED_CONFIDENCE: f64 = 0.3;
/// The last sentence of trigram advice no trial build confirmed (its evidence's `trial` says
/// why there was none); a confirmed one replaces it with the measurement.
pub const UNVERIFIED_SENTENCE: &str = "Unverified: hypopg cannot try a GIN index and no trial \
    build confirmed it (see the evidence), so no plan has shown that the planner would use it; \
    try it on a copy before relying on it.";

/// The rewrite rule whose rewritten SQL optidb can produce (advisor::not_exists).
pub const NOT_IN_TITLE: &str = "NOT IN (subquery)";

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The advice stands; this evidence goes with it.
    Keep(Value),
    /// The advice is not made, for this reason.
    Drop(String),
}

/// What a rewrite's replay measured: the original and the rewritten plan, with their costs.
pub struct RewriteReplay<'a> {
    pub original: &'a PlanFacts,
    pub rewritten: &'a PlanFacts,
    /// The original plan runs the subquery once into a hash table ("hashed SubPlan").
    pub hashed_subplan: bool,
    /// Both columns NOT IN compares are declared NOT NULL (so NOT EXISTS means the same).
    pub key_not_null: bool,
    pub plan: &'a str,
}

/// NOT IN -> NOT EXISTS: kept only when the rewritten plan is cheaper by a real margin, and
/// never when the planner already hashes the subquery over a NOT NULL key (the anti-join then
/// buys nothing and the results are the same either way).
pub fn not_in_rewrite(r: &RewriteReplay) -> Verdict {
    let (before, after) = (r.original.total_cost, r.rewritten.total_cost);
    if r.hashed_subplan && r.key_not_null {
        return Verdict::Drop(format!(
            "the planner already hashes the subquery (hashed SubPlan) and the key is NOT NULL: \
             cost {before:.0} as NOT IN, {after:.0} as NOT EXISTS"
        ));
    }
    if before <= 0.0 || after > REWRITE_MAX_COST_RATIO * before {
        return Verdict::Drop(format!(
            "NOT EXISTS is not cheaper by {:.0}% or more: cost {before:.0} as NOT IN, \
             {after:.0} as NOT EXISTS",
            (1.0 - REWRITE_MAX_COST_RATIO) * 100.0
        ));
    }
    Verdict::Keep(json!({
        "original_cost": before,
        "rewritten_cost": after,
        "improvement_pct": crate::plan_diff::improvement_pct(before, after),
        "node_changes": crate::plan_diff::node_changes(r.original, r.rewritten),
        "original_nodes": r.original.node_types,
        "rewritten_nodes": r.rewritten.node_types,
        "hashed_subplan": r.hashed_subplan,
        "key_not_null": r.key_not_null,
        "plan": r.plan,
    }))
}

/// Does an EXPLAIN (FORMAT JSON) output run a subquery as a hash table?
pub fn has_hashed_subplan(plan_json: &Value) -> bool {
    fn walk(v: &Value) -> bool {
        match v {
            Value::String(s) => s.contains("hashed SubPlan"),
            Value::Array(items) => items.iter().any(walk),
            Value::Object(map) => map.values().any(walk),
            _ => false,
        }
    }
    walk(plan_json)
}

/// What a statistics recommendation proposes, read off how stats_rules builds it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StatsFix {
    /// ANALYZE of stale statistics (no columns).
    Analyze,
    /// A larger statistics target for one column.
    Target,
    /// CREATE STATISTICS over several columns.
    Extended,
}

impl StatsFix {
    pub fn of(rec: &Recommendation) -> Option<StatsFix> {
        (rec.kind == Kind::Stats).then_some(match rec.columns.len() {
            0 => StatsFix::Analyze,
            1 => StatsFix::Target,
            _ => StatsFix::Extended,
        })
    }
}

/// A fresh plan of one statement the advice cites, against what its executions return.
#[derive(Debug, Clone)]
pub struct EstimateReplay {
    pub query_id: i64,
    pub root_node: String,
    pub estimated_rows: f64,
    /// pg_stat_statements rows / calls over optidb's history.
    pub actual_rows_per_call: Option<f64>,
    pub plan: String,
}

impl EstimateReplay {
    /// The off-by factor, when the plan's top estimate is comparable with rows returned.
    fn ratio(&self) -> Option<f64> {
        if NOT_COMPARABLE_ROOTS.contains(&self.root_node.as_str()) {
            return None;
        }
        self.actual_rows_per_call
            .map(|actual| estimate_ratio(self.estimated_rows, actual))
    }
}

/// For a larger statistics target: the table's rows and the column's current target.
#[derive(Debug, Clone, Copy)]
pub struct TargetFacts {
    pub table_rows: f64,
    pub target: f64,
    /// ANALYZE kept every value it sampled as a most common value (a list and no histogram):
    /// the planner already knows each value's share, so the error is not in this column.
    pub every_value_common: bool,
}

/// Statistics advice stands when some replayed statement is estimated far enough off what it
/// returns, and (for a larger target) the table holds more rows than ANALYZE already samples.
pub fn stats(fix: StatsFix, replays: &[EstimateReplay], target: Option<TargetFacts>) -> Verdict {
    if fix == StatsFix::Target {
        let Some(t) = target else {
            return Verdict::Drop("the column's statistics target could not be read".into());
        };
        let sample = SAMPLE_ROWS_PER_TARGET * t.target.max(1.0);
        if t.table_rows <= sample {
            return Verdict::Drop(format!(
                "the table holds ~{:.0} rows, no more than ANALYZE already samples at \
                 statistics target {:.0} ({sample:.0} rows): a larger target changes no estimate",
                t.table_rows, t.target
            ));
        }
        if t.every_value_common {
            return Verdict::Drop(
                "every value of the column is in its most-common-values list already, each \
                 with its share: a larger target changes no estimate of it (the error is in \
                 how the filtered columns combine, or elsewhere in the plan)"
                    .into(),
            );
        }
    }
    let needed = match fix {
        StatsFix::Analyze => STALE_CONFIRM_RATIO,
        StatsFix::Target | StatsFix::Extended => SKEW_CONFIRM_RATIO,
    };
    let off: Vec<Value> = replays
        .iter()
        .filter_map(|r| {
            r.ratio()
                .filter(|ratio| *ratio >= needed)
                .map(|ratio| (r, ratio))
        })
        .map(|(r, ratio)| {
            json!({
                "query_id": r.query_id,
                "estimated_rows": r.estimated_rows,
                "actual_rows_per_call": r.actual_rows_per_call,
                "ratio": ratio,
                "plan": r.plan,
            })
        })
        .collect();
    if off.is_empty() {
        let seen: Vec<String> = replays
            .iter()
            .map(|r| {
                format!(
                    "query {}: estimated {:.0}, executions return {} ({})",
                    r.query_id,
                    r.estimated_rows,
                    r.actual_rows_per_call
                        .map_or("unknown".into(), |a| format!("{a:.1}")),
                    r.root_node
                )
            })
            .collect();
        return Verdict::Drop(format!(
            "no replayed statement is estimated {needed:.0}x or more off what it returns ({})",
            if seen.is_empty() {
                "none could be replayed".to_string()
            } else {
                seen.join("; ")
            }
        ));
    }
    let mut evidence = json!({"replayed_estimates": off, "required_ratio": needed});
    if let Some(t) = target {
        evidence["table_rows"] = json!(t.table_rows);
        evidence["statistics_target"] = json!(t.target);
        evidence["analyze_sample_rows"] = json!(SAMPLE_ROWS_PER_TARGET * t.target.max(1.0));
    }
    Verdict::Keep(evidence)
}

/// Rewrite advice for which optidb cannot write the rewritten statement: nothing to replay, so
/// it is not filed as a rewrite.
pub fn unreplayable_rewrite(rec: &Recommendation) -> bool {
    rec.kind == Kind::Rewrite && rec.columns.first().map(String::as_str) != Some(NOT_IN_TITLE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(cost: f64) -> PlanFacts {
        PlanFacts {
            total_cost: cost,
            ..PlanFacts::default()
        }
    }

    fn replay<'a>(o: &'a PlanFacts, r: &'a PlanFacts, hashed: bool, nn: bool) -> RewriteReplay<'a> {
        RewriteReplay {
            original: o,
            rewritten: r,
            hashed_subplan: hashed,
            key_not_null: nn,
            plan: "generic",
        }
    }

    #[test]
    fn a_hashed_subplan_over_a_not_null_key_is_never_advised() {
        let (o, r) = (facts(1000.0), facts(100.0));
        assert!(
            matches!(not_in_rewrite(&replay(&o, &r, true, true)), Verdict::Drop(m) if m.contains("hashed SubPlan"))
        );
        // Nullable key: the cost decides.
        assert!(matches!(
            not_in_rewrite(&replay(&o, &r, true, false)),
            Verdict::Keep(_)
        ));
    }

    #[test]
    fn a_rewrite_must_be_cheaper_by_the_margin() {
        let o = facts(1000.0);
        assert!(matches!(
            not_in_rewrite(&replay(&o, &facts(850.0), false, false)),
            Verdict::Drop(_)
        ));
        let Verdict::Keep(e) = not_in_rewrite(&replay(&o, &facts(10.0), false, false)) else {
            panic!("kept")
        };
        assert_eq!(e["original_cost"], 1000.0);
        assert_eq!(e["rewritten_cost"], 10.0);
    }

    #[test]
    fn hashed_subplans_are_found_anywhere_in_the_plan() {
        let plan = json!([{"Plan": {"Node Type": "Seq Scan", "Filter": "(NOT (hashed SubPlan 1))",
                                    "Plans": [{"Subplan Name": "hashed SubPlan 1"}]}}]);
        assert!(has_hashed_subplan(&plan));
        assert!(!has_hashed_subplan(
            &json!([{"Plan": {"Filter": "(NOT (SubPlan 1))"}}])
        ));
    }

    fn estimate(est: f64, actual: f64, root: &str) -> EstimateReplay {
        EstimateReplay {
            query_id: 7,
            root_node: root.into(),
            estimated_rows: est,
            actual_rows_per_call: Some(actual),
            plan: "sampled".into(),
        }
    }

    #[test]
    fn a_larger_target_on_a_table_smaller_than_the_sample_is_never_advised() {
        let tiny = TargetFacts {
            table_rows: 25.0,
            target: 100.0,
            every_value_common: false,
        };
        let v = stats(
            StatsFix::Target,
            &[estimate(1.0, 25.0, "Seq Scan")],
            Some(tiny),
        );
        assert!(matches!(v, Verdict::Drop(m) if m.contains("changes no estimate")));
    }

    #[test]
    fn a_skewed_estimate_on_a_large_table_is_advised_with_both_figures() {
        let big = TargetFacts {
            table_rows: 200_000.0,
            target: 100.0,
            every_value_common: false,
        };
        let Verdict::Keep(e) = stats(
            StatsFix::Target,
            &[estimate(2.0, 500.0, "Seq Scan")],
            Some(big),
        ) else {
            panic!("kept")
        };
        assert_eq!(e["replayed_estimates"][0]["estimated_rows"], 2.0);
        assert_eq!(e["replayed_estimates"][0]["actual_rows_per_call"], 500.0);
        assert_eq!(e["analyze_sample_rows"], 30_000.0);
        // An estimate that is right, or not comparable (an aggregate), confirms nothing.
        for r in [
            estimate(480.0, 500.0, "Seq Scan"),
            estimate(1.0, 500.0, "Aggregate"),
        ] {
            assert!(matches!(
                stats(StatsFix::Target, &[r], Some(big)),
                Verdict::Drop(_)
            ));
        }
    }

    #[test]
    fn a_larger_target_for_a_column_whose_every_value_is_common_is_never_advised() {
        // Dexter's posts: user_id has 10 values, all in the list; `user_id = 9 AND blog_id < 9`
        // returns nothing because the columns are correlated, not because of user_id's list.
        let described = TargetFacts {
            table_rows: 200_000.0,
            target: 100.0,
            every_value_common: true,
        };
        let v = stats(
            StatsFix::Target,
            &[estimate(173.0, 0.0, "Seq Scan")],
            Some(described),
        );
        assert!(matches!(v, Verdict::Drop(m) if m.contains("most-common-values")));
    }

    #[test]
    fn stale_statistics_need_a_smaller_mismatch_than_a_new_target() {
        assert!(matches!(
            stats(StatsFix::Analyze, &[estimate(1.0, 6.0, "Seq Scan")], None),
            Verdict::Keep(_)
        ));
        assert!(matches!(
            stats(StatsFix::Extended, &[estimate(1.0, 6.0, "Seq Scan")], None),
            Verdict::Drop(_)
        ));
        assert!(
            matches!(stats(StatsFix::Analyze, &[], None), Verdict::Drop(m) if m.contains("none could be replayed"))
        );
    }
}

/// Confidence of trigram advice a real, rolled-back build confirmed: the planner used the
/// index and costed the statement lower (a cost, not a timing, so below a B-tree index's).
pub const TRIAL_CONFIDENCE: f64 = 0.7;

/// What one rolled-back build of a GIN trigram index measured for one statement.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialReplay {
    pub before_cost: f64,
    pub after_cost: f64,
    /// The statement's plan with the index reads it.
    pub used: bool,
    pub build_ms: f64,
    pub index_bytes: i64,
    pub plan: String,
}

/// A trigram index stands for a statement only when its plan reads the built index and costs
/// less than without it; the evidence holds the measurement.
pub fn trigram_trial(t: &TrialReplay) -> Verdict {
    let (before, after) = (t.before_cost, t.after_cost);
    if !t.used {
        return Verdict::Drop(format!(
            "with the index built, the plan does not use it (cost {before:.0} -> {after:.0})"
        ));
    }
    if after >= before {
        return Verdict::Drop(format!(
            "the plan that uses the index is not cheaper: cost {before:.0} -> {after:.0}"
        ));
    }
    Verdict::Keep(json!({
        "before_cost": before,
        "after_cost": after,
        "improvement_pct": crate::plan_diff::improvement_pct(before, after),
        "build_ms": (t.build_ms * 10.0).round() / 10.0,
        "index_mb": (t.index_bytes as f64 / 1_048_576.0 * 100.0).round() / 100.0,
        "plan": t.plan,
    }))
}

#[cfg(test)]
mod trial_tests {
    use super::*;

    fn trial(used: bool, after: f64) -> TrialReplay {
        TrialReplay {
            before_cost: 4_000.0,
            after_cost: after,
            used,
            build_ms: 812.34,
            index_bytes: 3 * 1_048_576,
            plan: "sampled".into(),
        }
    }

    #[test]
    fn kept_only_when_used_and_cheaper() {
        let Verdict::Keep(e) = trigram_trial(&trial(true, 40.0)) else {
            panic!("a used, cheaper index stands")
        };
        assert_eq!(e["before_cost"], 4_000.0);
        assert_eq!(e["after_cost"], 40.0);
        assert_eq!(e["build_ms"], 812.3);
        assert_eq!(e["index_mb"], 3.0);
        assert!(matches!(
            trigram_trial(&trial(false, 40.0)),
            Verdict::Drop(_)
        ));
        assert!(matches!(
            trigram_trial(&trial(true, 4_000.0)),
            Verdict::Drop(_)
        ));
    }
}
