//! Which statements one snapshot or scan records: at most `top` of them, chosen after
//! pg_stat_statements' entries were grouped into statements (one statement, many entries: an
//! IN list of every length is one statement), so no role can blind optidb by multiplying
//! entries or statements.
//!
//! What a DBA expects from a bounded history is the statements that cost the database most
//! *since optidb last looked*: a statement heavy last month and idle now must not take the slot
//! of one that is heavy today. So the order is:
//! 1. execution time in the interval (since the statement's stored baseline), the work that
//!    will be recorded;
//! 2. calls in the interval, when times tie;
//! 3. execution time since pg_stat_statements began counting (its own rank), so statements
//!    idle in the interval (nothing to record) follow in the order a DBA knows from
//!    pg_stat_statements;
//! 4. the caller's order, so equal candidates are chosen the same way every time.
//!
//! Each role with activity in the interval first gets up to `ceil(top / active roles)` of its
//! own most costly active statements; the slots left go by the order above. A role can then
//! take more than its share only when the others leave slots unused, and a role with a few
//! statements always gets them all in. No minimum share is needed: the shares add up to at
//! least `top` (`ceil(top / roles) * roles`), so they alone can fill every slot (when they
//! overfill it, the first statement of every role comes before any role's second, and so on).

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

/// One statement and what it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The role that ran it (pg_stat_statements' userid).
    pub role: u32,
    /// Execution time (ms) and calls since optidb last recorded the statement.
    pub interval_ms: f64,
    pub interval_calls: i64,
    /// Execution time (ms) since pg_stat_statements began counting it.
    pub cumulative_ms: f64,
}

impl Candidate {
    /// Ran in the interval: there is something to record.
    pub fn active(&self) -> bool {
        self.interval_calls > 0
    }
}

/// The order of the module header, most costly first (ties: the caller's order).
fn costlier(a: &Candidate, b: &Candidate) -> Ordering {
    b.interval_ms
        .total_cmp(&a.interval_ms)
        .then(b.interval_calls.cmp(&a.interval_calls))
        .then(b.cumulative_ms.total_cmp(&a.cumulative_ms))
}

/// Indices into `candidates` of the statements to record, at most `top`, most costly first.
/// O(n log n).
pub fn choose(candidates: &[Candidate], top: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    // Stable: equal candidates keep the caller's order.
    order.sort_by(|&a, &b| costlier(&candidates[a], &candidates[b]));

    let active_roles: HashSet<u32> = candidates
        .iter()
        .filter(|c| c.active())
        .map(|c| c.role)
        .collect();
    let mut chosen = vec![false; candidates.len()];
    let mut count = 0;
    if !active_roles.is_empty() {
        let share = top.div_ceil(active_roles.len());
        // (rank of the statement within its role, position in the global order).
        let mut shares: Vec<(usize, usize)> = Vec::new();
        let mut ranks: HashMap<u32, usize> = HashMap::new();
        for (position, &i) in order.iter().enumerate() {
            let c = &candidates[i];
            if !c.active() {
                continue;
            }
            let rank = ranks.entry(c.role).or_insert(0);
            *rank += 1;
            if *rank <= share {
                shares.push((*rank, position));
            }
        }
        shares.sort_unstable();
        for (_, position) in shares.into_iter().take(top) {
            chosen[order[position]] = true;
            count += 1;
        }
    }
    for &i in &order {
        if count >= top {
            break;
        }
        if !chosen[i] {
            chosen[i] = true;
            count += 1;
        }
    }
    order.into_iter().filter(|&i| chosen[i]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stmt(role: u32, interval_ms: f64, interval_calls: i64, cumulative_ms: f64) -> Candidate {
        Candidate {
            role,
            interval_ms,
            interval_calls,
            cumulative_ms,
        }
    }

    fn roles_of(candidates: &[Candidate], chosen: &[usize]) -> HashMap<u32, usize> {
        let mut n = HashMap::new();
        for &i in chosen {
            *n.entry(candidates[i].role).or_insert(0) += 1;
        }
        n
    }

    #[test]
    fn everything_fits_when_there_are_fewer_statements_than_slots() {
        let c = vec![
            stmt(1, 1.0, 1, 1.0),
            stmt(2, 0.0, 0, 9.0),
            stmt(1, 5.0, 2, 5.0),
        ];
        assert_eq!(choose(&c, 100), vec![2, 0, 1]);
        assert_eq!(choose(&[], 100), Vec::<usize>::new());
    }

    #[test]
    fn a_flooding_role_cannot_push_another_role_out() {
        // Role 1 runs 500 slow statements, role 2 twenty fast ones.
        let mut c: Vec<Candidate> = (0..500)
            .map(|i| stmt(1, 1000.0 + i as f64, 5, 5e4))
            .collect();
        c.extend((0..20).map(|i| stmt(2, 0.1 + i as f64 / 100.0, 3, 1.0)));
        let chosen = choose(&c, 100);
        assert_eq!(chosen.len(), 100);
        let n = roles_of(&c, &chosen);
        assert_eq!(n[&2], 20, "every statement of the small role is recorded");
        assert_eq!(n[&1], 80, "the slots it leaves go to the flooding role");
        // The flooding role's slots are its costliest statements.
        assert!(chosen.contains(&499) && !chosen.contains(&0));
    }

    #[test]
    fn shares_are_ceil_of_top_over_active_roles() {
        // Three roles with 100 statements each: 34 + 33 + 33.
        let c: Vec<Candidate> = (0..300)
            .map(|i| stmt(i % 3, 1.0 + i as f64, 1, 1.0))
            .collect();
        let n = roles_of(&c, &choose(&c, 100));
        let mut counts: Vec<usize> = n.values().copied().collect();
        counts.sort();
        assert_eq!(counts, vec![33, 33, 34]);
    }

    #[test]
    fn more_roles_than_slots_take_turns_by_cost() {
        // 10 roles, 3 slots: the first statement of the three costliest roles.
        let mut c: Vec<Candidate> = Vec::new();
        for role in 0..10u32 {
            for j in 0..3 {
                c.push(stmt(role, (role * 10 + j) as f64 + 1.0, 1, 0.0));
            }
        }
        let chosen = choose(&c, 3);
        let roles: Vec<u32> = chosen.iter().map(|&i| c[i].role).collect();
        assert_eq!(roles, vec![9, 8, 7]);
    }

    #[test]
    fn idle_statements_follow_active_ones_in_cumulative_order() {
        let c = vec![
            stmt(1, 0.0, 0, 1e6), // heavy once, idle now
            stmt(1, 0.5, 1, 0.5),
            stmt(2, 0.0, 0, 10.0),
            stmt(2, 0.2, 4, 3.0),
        ];
        assert_eq!(choose(&c, 2), vec![1, 3]);
        assert_eq!(choose(&c, 3), vec![1, 3, 0]);
        // No activity at all: pg_stat_statements' own order.
        let idle = vec![
            stmt(1, 0.0, 0, 1.0),
            stmt(2, 0.0, 0, 3.0),
            stmt(1, 0.0, 0, 2.0),
        ];
        assert_eq!(choose(&idle, 2), vec![1, 2]);
    }

    #[test]
    fn idle_statements_never_take_a_share() {
        // Role 1 has 300 idle statements of great past cost: role 2's active ones come first.
        let mut c: Vec<Candidate> = (0..300).map(|_| stmt(1, 0.0, 0, 1e9)).collect();
        c.extend((0..150).map(|i| stmt(2, 1.0 + i as f64, 1, 1.0)));
        let n = roles_of(&c, &choose(&c, 100));
        assert_eq!(n.get(&2), Some(&100));
    }

    #[test]
    fn calls_break_ties_of_time_and_the_callers_order_breaks_the_rest() {
        let c = vec![
            stmt(1, 2.0, 1, 2.0),
            stmt(1, 2.0, 7, 2.0),
            stmt(1, 2.0, 7, 2.0),
        ];
        assert_eq!(choose(&c, 3), vec![1, 2, 0]);
        assert_eq!(choose(&c, 1), vec![1]);
    }
}
