//! Which statements scan() captures plans for (src/postgres/capture.rs): every statement that
//! matters to the workload, not a fixed "top N by time".
//!
//! A statement is planned when, over the stored history of the statements the scan ingests,
//! - its share of the workload's execution time is at least MIN_TIME_SHARE (0.2%), or
//! - its share of the workload's calls (completed plus failed executions) is at least
//!   MIN_CALL_SHARE (1%), or
//! - it failed at least once (timeouts, cancels, errors: the worst statements of a database
//!   are often the ones that never complete, and their recorded time says nothing of that).
//!
//! Why these thresholds: an index that made a statement with 0.2% of the time free would save
//! 0.2% of the workload, below what run-to-run noise lets anyone measure; at most 500
//! statements can reach it. A statement with 1% of the calls is a frequent, usually fast one
//! whose time share understates it (a point lookup that loses its index gets 100x slower on
//! every call); at most 100 statements can reach it. Both together stay near the default
//! budget (`optidb.explain_top_k`, 200) on real workloads, and a workload of a few hundred
//! statements has every statement that matters planned.
//!
//! When more statements qualify than the budget allows, the larger of a statement's two shares
//! ranks it (failures only make a statement qualify; they do not rank it first: a cheap insert
//! that keeps hitting a unique violation is not worth a slow query's slot). Ties keep the
//! caller's order. Statements that cannot be planned (utility statements) count towards the
//! workload's totals but never take a slot.
//!
//! Tenant families (issue 27): the same statement text run by many tenants, each resolving to
//! its own schema, is one statement of the workload split into tenants' shares (0.01% each at
//! 1,000 tenants, so none would qualify). A family is also one target weighed by its tenants'
//! summed loads; choosing it plans a sample of its tenants (optidb_core::tenant), each still
//! as its own statement (its owner, its search_path). A tenant that matters on its own keeps
//! its own slot.

use crate::tenant;
use std::cmp::Ordering;

/// Share of the workload's execution time that makes a statement worth planning.
pub const MIN_TIME_SHARE: f64 = 0.002;
/// Share of the workload's calls that makes a statement worth planning.
pub const MIN_CALL_SHARE: f64 = 0.01;

/// What one statement cost over the stored history.
#[derive(Debug, Clone, PartialEq)]
pub struct Load {
    /// Execution time (ms) of its completed executions.
    pub time_ms: f64,
    /// Executions, completed and failed.
    pub calls: i64,
    /// Executions that failed (errors, timeouts, cancels).
    pub failures: i64,
    /// Whether it can be planned at all (one explainable statement).
    pub plannable: bool,
}

/// A statement's shares of the workload: (time, calls), each in 0..=1 (0 when the total is 0).
fn shares(load: &Load, total_ms: f64, total_calls: i64) -> (f64, f64) {
    let share = |part: f64, whole: f64| if whole > 0.0 { part / whole } else { 0.0 };
    (
        share(load.time_ms.max(0.0), total_ms),
        share(load.calls.max(0) as f64, total_calls as f64),
    )
}

/// Whether a statement with these shares and failures is worth a plan.
fn qualifies(load: &Load, (time, calls): (f64, f64)) -> bool {
    time >= MIN_TIME_SHARE || calls >= MIN_CALL_SHARE || load.failures > 0
}

/// Indexes (into `loads`) of the statements to plan, at most `budget`, most important first.
pub fn choose(loads: &[Load], budget: usize) -> Vec<usize> {
    let total_ms: f64 = loads.iter().map(|l| l.time_ms.max(0.0)).sum();
    let total_calls: i64 = loads.iter().map(|l| l.calls.max(0)).sum();
    rank(loads, total_ms, total_calls)
        .into_iter()
        .take(budget)
        .collect()
}

/// Indexes of the loads that qualify against these totals, most important first.
fn rank(loads: &[Load], total_ms: f64, total_calls: i64) -> Vec<usize> {
    let mut chosen: Vec<(usize, f64)> = loads
        .iter()
        .enumerate()
        .filter(|(_, l)| l.plannable)
        .filter_map(|(i, l)| {
            let s = shares(l, total_ms, total_calls);
            qualifies(l, s).then_some((i, s.0.max(s.1)))
        })
        .collect();
    // Stable: equal weights keep the caller's order.
    chosen.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(Ordering::Equal));
    chosen.into_iter().map(|(i, _)| i).collect()
}

/// A statement's tenant family, when it has one: its key (the same text in the same
/// database) and the tenant it stands for (its schema, which orders the sample), None when
/// unknown (no sample says where it ran): such a statement adds its load to the family but is
/// not in its sample, as it could not be replayed where it ran.
pub type Member<'a> = Option<(&'a str, Option<&'a str>)>;

/// As `choose`, with tenant families (`members[i]` is statement i's; a key shared by one
/// statement only is no family): each family is one more candidate, weighed by its statements'
/// summed loads, that takes one slot and plans a sample of its plannable tenants.
pub fn choose_with_families(loads: &[Load], members: &[Member], budget: usize) -> Vec<usize> {
    let mut families: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
    for (i, m) in members.iter().enumerate() {
        if let Some((key, _)) = m {
            families.entry(key).or_default().push(i);
        }
    }
    families.retain(|_, f| f.len() > 1);
    let families: Vec<Vec<usize>> = families.into_values().collect();
    // The families follow the statements: `choose` weighs them against the same totals.
    let summed = families.iter().map(|f| Load {
        time_ms: f.iter().map(|&i| loads[i].time_ms.max(0.0)).sum(),
        calls: f.iter().map(|&i| loads[i].calls.max(0)).sum(),
        failures: f.iter().map(|&i| loads[i].failures.max(0)).sum(),
        plannable: f.iter().any(|&i| loads[i].plannable),
    });
    let candidates: Vec<Load> = loads.iter().cloned().chain(summed).collect();
    let total_ms: f64 = loads.iter().map(|l| l.time_ms.max(0.0)).sum();
    let total_calls: i64 = loads.iter().map(|l| l.calls.max(0)).sum();
    let mut chosen = Vec::new();
    for c in rank(&candidates, total_ms, total_calls)
        .into_iter()
        .take(budget)
    {
        let sample = match c.checked_sub(loads.len()) {
            None => vec![c],
            Some(f) => {
                let (plannable, tenants): (Vec<usize>, Vec<(Option<&str>, &str)>) = families[f]
                    .iter()
                    .filter(|&&i| loads[i].plannable)
                    .filter_map(|&i| match members[i] {
                        Some((key, Some(tenant))) => Some((i, (Some(key), tenant))),
                        _ => None,
                    })
                    .unzip();
                let keep = tenant::sampled(&tenants);
                plannable
                    .into_iter()
                    .zip(keep)
                    .filter(|(_, k)| *k)
                    .map(|(i, _)| i)
                    .collect()
            }
        };
        for i in sample {
            if !chosen.contains(&i) {
                chosen.push(i);
            }
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(time_ms: f64, calls: i64) -> Load {
        Load {
            time_ms,
            calls,
            failures: 0,
            plannable: true,
        }
    }

    #[test]
    fn a_statement_with_many_calls_is_planned_whatever_its_time_rank() {
        // 39 slow statements, then a fast one with 3% of the calls, then 20 negligible ones.
        let mut loads: Vec<Load> = (0..39).map(|i| load(1000.0 - i as f64, 10)).collect();
        loads.push(load(5.0, 30));
        loads.extend((0..20).map(|_| load(0.01, 1)));
        let chosen = choose(&loads, 200);
        assert!(chosen.contains(&39), "{chosen:?}");
        // The negligible ones (0.0000x of the time, 0.1% of the calls) are not.
        assert!(chosen.iter().all(|&i| i < 40), "{chosen:?}");
        assert_eq!(chosen.len(), 40);
    }

    #[test]
    fn thresholds_are_inclusive_and_either_share_suffices() {
        // Totals: 1000 ms, 1000 calls.
        let loads = vec![
            load(2.0, 1),  // exactly 0.2% of the time
            load(1.9, 10), // exactly 1% of the calls
            load(1.9, 9),  // neither
            load(994.2, 980),
        ];
        assert_eq!(choose(&loads, 10), vec![3, 1, 0]);
    }

    #[test]
    fn failing_statements_qualify_even_with_no_time_or_calls_share() {
        let mut loads = vec![load(10_000.0, 10_000)];
        loads.push(Load {
            time_ms: 0.0,
            calls: 2,
            failures: 2,
            plannable: true,
        });
        assert_eq!(choose(&loads, 10), vec![0, 1]);
        // A failed statement with no completed execution at all, in a workload with none either.
        let never = Load {
            time_ms: 0.0,
            calls: 0,
            failures: 1,
            plannable: true,
        };
        assert_eq!(choose(&[never], 10), vec![0]);
    }

    #[test]
    fn the_budget_keeps_the_largest_shares_and_unplannable_ones_take_no_slot() {
        let mut loads = vec![
            load(100.0, 1),
            load(50.0, 500), // half of the calls: ranks first
            load(300.0, 1),
        ];
        loads.push(Load {
            time_ms: 10_000.0, // a utility statement: counts in the totals only
            calls: 1,
            failures: 0,
            plannable: false,
        });
        // Time total 10,450: 100 ms is ~1%, 300 ms ~2.9%; the unplannable one is skipped.
        assert_eq!(choose(&loads, 2), vec![1, 2]);
        assert_eq!(choose(&loads, 0), Vec::<usize>::new());
    }

    #[test]
    fn an_empty_or_idle_workload_plans_nothing_but_its_failures() {
        assert!(choose(&[], 200).is_empty());
        assert!(choose(&[load(0.0, 0), load(0.0, 0)], 200).is_empty());
    }

    #[test]
    fn a_family_of_negligible_tenants_is_one_target_planned_on_a_sample() {
        // 1,000 tenants of one statement (0.09% of the time each) and one big statement.
        let schemas: Vec<String> = (0..1000).map(|i| format!("t{i:04}")).collect();
        let mut loads: Vec<Load> = (0..1000).map(|_| load(1.0, 1)).collect();
        loads.push(load(100.0, 10));
        let mut members: Vec<Member> = schemas
            .iter()
            .map(|s| Some(("fp", Some(s.as_str()))))
            .collect();
        members.push(None);
        assert_eq!(choose(&loads, 10), vec![1000]);
        // The family (91% of the time) first: its first, middle and last tenant by name.
        assert_eq!(choose_with_families(&loads, &members, 1), vec![0, 499, 999]);
        assert_eq!(
            choose_with_families(&loads, &members, 2),
            vec![0, 499, 999, 1000]
        );
    }

    #[test]
    fn tenants_that_matter_alone_keep_their_slot_and_lone_keys_are_no_family() {
        let loads = vec![
            load(500.0, 100),
            load(400.0, 100),
            load(100.0, 100),
            load(1.0, 1), // 0.1% of the time, 0.3% of the calls
        ];
        // Statements 0 and 2 share a key (the family, 60%, first); statement 3's is its own.
        let members = [
            Some(("a", Some("s1"))),
            None,
            Some(("a", Some("s2"))),
            Some(("b", Some("s3"))),
        ];
        assert_eq!(choose_with_families(&loads, &members, 10), vec![0, 2, 1]);
        // The family took one slot, with both its tenants.
        assert_eq!(choose_with_families(&loads, &members, 1), vec![0, 2]);
        // Without families, the same choice as choose().
        let none = [None; 4];
        assert_eq!(choose_with_families(&loads, &none, 10), choose(&loads, 10));
        // A tenant nothing says where it ran weighs in but is not planned for the family.
        let unknown = [Some(("a", None)), None, Some(("a", Some("s2"))), None];
        assert_eq!(choose_with_families(&loads, &unknown, 1), vec![2]);
    }
}
