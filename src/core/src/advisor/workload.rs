//! Which indexes to advise for the whole workload: the set that saves the most execution time
//! net of what the indexes cost the writes, within a storage budget.
//!
//! Each statement comes with its planned cost under a few sets of hypothetical indexes
//! (measured with hypopg: its best set, each index of it alone, ...). A statement's cost under
//! a chosen set X is the lowest measured cost of a set contained in X (its own plan without
//! indexes otherwise), so an index that two statements use is counted once and indexes that
//! overlap are not counted twice. Time saved is the statement's recorded execution time times
//! the share of its cost the indexes remove; a statement counts as helped only when its cost
//! falls by at least `min_gain` (small planned gains are where plans costed lower run slower).
//!
//! Greedy, re-evaluated after each pick: add the index (or a statement's whole set, for
//! statements that need two indexes together) with the largest net saving that fits the
//! budget, until none saves more than it costs; then drop any pick later picks made useless.

use std::collections::BTreeSet;

/// One statement as measured with hypothetical indexes.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    pub query_id: i64,
    /// Execution time recorded over the window, in ms.
    pub total_ms: f64,
    pub calls: f64,
    /// Planned cost without any new index.
    pub base_cost: f64,
    /// Planned cost with these candidates (indexes into the candidate list) present.
    pub configs: Vec<(Vec<usize>, f64)>,
}

/// What a candidate costs: its size and its writes over the window (ms).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Price {
    pub bytes: f64,
    pub write_ms: f64,
    /// The candidates it can stand in for: those whose columns are its leading columns (an
    /// index on (a, b) serves what an index on (a) serves, about as cheaply). A statement
    /// measured with (a) is then counted as served by (a, b) too.
    pub covers: Vec<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub budget_bytes: f64,
    /// Smallest share of a statement's cost an index set must remove to count (0.0-1.0).
    pub min_gain: f64,
}

/// A statement an advised index serves, and its planned cost before and after the whole set.
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    pub query_id: i64,
    pub before_cost: f64,
    pub after_cost: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pick {
    pub candidate: usize,
    /// 1 = the largest net saving.
    pub rank: usize,
    /// Execution time over the window the set would lose without this index.
    pub saving_ms: f64,
    pub write_ms: f64,
    pub bytes: f64,
    pub serves: Vec<Served>,
}

impl Pick {
    pub fn net_ms(&self) -> f64 {
        self.saving_ms - self.write_ms
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Selection {
    pub picks: Vec<Pick>,
    /// Indexes that would speed statements up but cost their table's writes more than that.
    pub net_negative: Vec<Pick>,
    /// Sum over statements of calls x planned cost, without and with the advised set.
    pub cost_before: f64,
    pub cost_after: f64,
    pub saving_ms: f64,
    pub write_ms: f64,
    pub bytes: f64,
}

pub fn select(statements: &[Measured], prices: &[Price], limits: Limits) -> Selection {
    let w = Workload {
        statements,
        prices,
        limits,
    };
    let mut chosen: BTreeSet<usize> = BTreeSet::new();
    loop {
        let current = w.saving(&chosen);
        let used: f64 = chosen.iter().map(|i| prices[*i].bytes).sum();
        let scored: Vec<(f64, BTreeSet<usize>)> = w
            .moves(&chosen)
            .into_iter()
            .filter(|m| used + w.bytes(m) <= limits.budget_bytes)
            .map(|m| {
                let with: BTreeSet<usize> = chosen.union(&m).copied().collect();
                let net =
                    w.saving(&with) - current - m.iter().map(|i| prices[*i].write_ms).sum::<f64>();
                (net, m)
            })
            .filter(|(net, m)| *net > 0.0 && w.cuts(&chosen, m))
            .collect();
        let best = scored.iter().max_by(|a, b| {
            a.0.total_cmp(&b.0)
                .then_with(|| b.1.len().cmp(&a.1.len()))
                .then_with(|| b.1.cmp(&a.1))
        });
        let Some((_, best)) = best else { break };
        chosen.extend(best.clone());
    }
    // A pick that later picks made useless (its statements now use others, or gain little
    // more from it than from the rest of the set) goes.
    while let Some(useless) = chosen
        .iter()
        .copied()
        .find(|i| !w.worth_keeping(&chosen, *i))
    {
        chosen.remove(&useless);
    }
    w.describe(&chosen)
}

struct Workload<'a> {
    statements: &'a [Measured],
    prices: &'a [Price],
    limits: Limits,
}

impl Workload<'_> {
    /// Is candidate `i` present, itself or through a chosen index that covers it?
    fn present(&self, chosen: &BTreeSet<usize>, i: usize) -> bool {
        chosen.contains(&i) || chosen.iter().any(|j| self.prices[*j].covers.contains(&i))
    }

    /// A statement's lowest counted cost with these indexes present.
    fn cost(&self, s: &Measured, chosen: &BTreeSet<usize>) -> f64 {
        s.configs
            .iter()
            .filter(|(set, cost)| {
                !set.is_empty()
                    && set.iter().all(|i| self.present(chosen, *i))
                    && s.base_cost > 0.0
                    && (s.base_cost - cost) / s.base_cost >= self.limits.min_gain
            })
            .map(|(_, cost)| *cost)
            .fold(s.base_cost, f64::min)
    }

    fn saving_of(&self, s: &Measured, chosen: &BTreeSet<usize>) -> f64 {
        if s.base_cost <= 0.0 {
            return 0.0;
        }
        s.total_ms * (1.0 - self.cost(s, chosen) / s.base_cost)
    }

    fn saving(&self, chosen: &BTreeSet<usize>) -> f64 {
        self.statements
            .iter()
            .map(|s| self.saving_of(s, chosen))
            .sum()
    }

    fn marginal(&self, chosen: &BTreeSet<usize>, i: usize) -> f64 {
        let without: BTreeSet<usize> = chosen.iter().copied().filter(|j| *j != i).collect();
        self.saving(chosen) - self.saving(&without)
    }

    fn bytes(&self, set: &BTreeSet<usize>) -> f64 {
        set.iter().map(|i| self.prices[*i].bytes).sum()
    }

    /// Adding `m` to `chosen` cuts some statement's cost by at least half of `min_gain`.
    fn cuts(&self, chosen: &BTreeSet<usize>, m: &BTreeSet<usize>) -> bool {
        let with: BTreeSet<usize> = chosen.union(m).copied().collect();
        self.statements.iter().any(|s| {
            let (after, before) = (self.cost(s, &with), self.cost(s, chosen));
            before > 0.0 && (before - after) / before >= self.limits.min_gain / 2.0
        })
    }

    /// A chosen index still saves more than it costs, and cuts some statement's cost by at
    /// least half of `min_gain` more than the rest of the set does.
    fn worth_keeping(&self, chosen: &BTreeSet<usize>, i: usize) -> bool {
        let without: BTreeSet<usize> = chosen.iter().copied().filter(|j| *j != i).collect();
        self.cuts(&without, &BTreeSet::from([i]))
            && self.marginal(chosen, i) > self.prices[i].write_ms
    }

    /// Single candidates, and each measured set as a whole, minus what is chosen.
    fn moves(&self, chosen: &BTreeSet<usize>) -> Vec<BTreeSet<usize>> {
        let mut out: Vec<BTreeSet<usize>> = Vec::new();
        for s in self.statements {
            for (set, _) in &s.configs {
                let rest: BTreeSet<usize> = set
                    .iter()
                    .copied()
                    .filter(|i| !chosen.contains(i))
                    .collect();
                let singles = rest.iter().map(|i| BTreeSet::from([*i]));
                for m in singles.chain(std::iter::once(rest.clone())) {
                    if !m.is_empty() && !out.contains(&m) {
                        out.push(m);
                    }
                }
            }
        }
        out
    }

    fn serves(&self, chosen: &BTreeSet<usize>, i: usize) -> Vec<Served> {
        let without: BTreeSet<usize> = chosen.iter().copied().filter(|j| *j != i).collect();
        self.statements
            .iter()
            .filter(|s| self.cost(s, chosen) < self.cost(s, &without))
            .map(|s| Served {
                query_id: s.query_id,
                before_cost: s.base_cost,
                after_cost: self.cost(s, chosen),
            })
            .collect()
    }

    fn describe(&self, chosen: &BTreeSet<usize>) -> Selection {
        let mut picks: Vec<Pick> = chosen
            .iter()
            .map(|i| Pick {
                candidate: *i,
                rank: 0,
                saving_ms: self.marginal(chosen, *i),
                write_ms: self.prices[*i].write_ms,
                bytes: self.prices[*i].bytes,
                serves: self.serves(chosen, *i),
            })
            .collect();
        picks.sort_by(|a, b| {
            b.net_ms()
                .total_cmp(&a.net_ms())
                .then(a.candidate.cmp(&b.candidate))
        });
        for (n, p) in picks.iter_mut().enumerate() {
            p.rank = n + 1;
        }
        let weighted = |set: &BTreeSet<usize>| -> f64 {
            self.statements
                .iter()
                .map(|s| s.calls * self.cost(s, set))
                .sum()
        };
        Selection {
            net_negative: self.net_negative(chosen),
            cost_before: weighted(&BTreeSet::new()),
            cost_after: weighted(chosen),
            saving_ms: self.saving(chosen),
            write_ms: picks.iter().map(|p| p.write_ms).sum(),
            bytes: picks.iter().map(|p| p.bytes).sum(),
            picks,
        }
    }

    /// For each statement the advised set leaves as it was: its best single index that would
    /// help it, when that index costs its table's writes more than it saves.
    fn net_negative(&self, chosen: &BTreeSet<usize>) -> Vec<Pick> {
        let mut out: Vec<Pick> = Vec::new();
        for s in self.statements {
            if self.cost(s, chosen) < s.base_cost {
                continue;
            }
            let best = s
                .configs
                .iter()
                .filter(|(set, _)| set.len() == 1)
                .map(|(set, _)| set[0])
                .map(|i| (i, self.saving(&BTreeSet::from([i]))))
                .filter(|(i, saving)| *saving > 0.0 && *saving <= self.prices[*i].write_ms)
                .max_by(|a, b| a.1.total_cmp(&b.1));
            if let Some((i, saving)) = best {
                if !out.iter().any(|p| p.candidate == i) {
                    let alone = BTreeSet::from([i]);
                    out.push(Pick {
                        candidate: i,
                        rank: 0,
                        saving_ms: saving,
                        write_ms: self.prices[i].write_ms,
                        bytes: self.prices[i].bytes,
                        serves: self.serves(&alone, i),
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        budget_bytes: 1e12,
        min_gain: 0.2,
    };

    fn stmt(query_id: i64, total_ms: f64, base: f64, configs: &[(&[usize], f64)]) -> Measured {
        Measured {
            query_id,
            total_ms,
            calls: 1.0,
            base_cost: base,
            configs: configs.iter().map(|(s, c)| (s.to_vec(), *c)).collect(),
        }
    }

    fn free(n: usize) -> Vec<Price> {
        vec![
            Price {
                bytes: 1.0,
                ..Price::default()
            };
            n
        ]
    }

    #[test]
    fn a_wider_index_serves_what_its_prefix_was_measured_for() {
        // 0 = (a), 1 = (a, b): statement 1 was measured with (a) only, statement 2 with both.
        let s = [
            stmt(1, 100.0, 1000.0, &[(&[0], 50.0)]),
            stmt(2, 100.0, 1000.0, &[(&[0], 500.0), (&[1], 10.0)]),
        ];
        let mut prices = free(2);
        prices[0].write_ms = 1.0;
        prices[1].write_ms = 1.0;
        prices[1].covers = vec![0];
        let sel = select(&s, &prices, LIMITS);
        assert_eq!(
            sel.picks.iter().map(|p| p.candidate).collect::<Vec<_>>(),
            vec![1]
        );
        assert_eq!(sel.picks[0].serves.len(), 2);
    }

    #[test]
    fn one_index_serving_two_statements_beats_two_narrower_ones() {
        // 0 = (a), 1 = (a, b), 2 = (b): statement 1 wants (a) or (a, b), statement 2 (a, b).
        let s = [
            stmt(1, 100.0, 1000.0, &[(&[0], 100.0), (&[1], 110.0)]),
            stmt(2, 100.0, 1000.0, &[(&[1], 50.0), (&[0], 600.0)]),
        ];
        let sel = select(&s, &free(3), LIMITS);
        let picked: Vec<usize> = sel.picks.iter().map(|p| p.candidate).collect();
        assert_eq!(picked, vec![1]);
        assert_eq!(sel.picks[0].serves.len(), 2);
    }

    #[test]
    fn a_statement_needing_two_indexes_together_gets_both() {
        let s = [stmt(
            1,
            100.0,
            1000.0,
            &[(&[0, 1], 10.0), (&[0], 990.0), (&[1], 995.0)],
        )];
        let sel = select(&s, &free(2), LIMITS);
        let mut picked: Vec<usize> = sel.picks.iter().map(|p| p.candidate).collect();
        picked.sort();
        assert_eq!(picked, vec![0, 1]);
        assert!((sel.saving_ms - 99.0).abs() < 1e-9);
    }

    #[test]
    fn writes_costing_more_than_the_reads_save_are_not_advised_but_reported() {
        let s = [stmt(1, 10.0, 1000.0, &[(&[0], 10.0)])];
        let prices = [Price {
            bytes: 1.0,
            write_ms: 200.0,
            ..Price::default()
        }];
        let sel = select(&s, &prices, LIMITS);
        assert!(sel.picks.is_empty());
        assert_eq!(sel.net_negative.len(), 1);
        assert!(sel.net_negative[0].net_ms() < 0.0);
    }

    #[test]
    fn the_budget_keeps_the_best_that_fits() {
        let s = [
            stmt(1, 100.0, 1000.0, &[(&[0], 10.0)]),
            stmt(2, 50.0, 1000.0, &[(&[1], 10.0)]),
        ];
        let prices = [
            Price {
                bytes: 80.0,
                ..Price::default()
            },
            Price {
                bytes: 30.0,
                ..Price::default()
            },
        ];
        let limits = Limits {
            budget_bytes: 100.0,
            min_gain: 0.2,
        };
        let sel = select(&s, &prices, limits);
        assert_eq!(
            sel.picks.iter().map(|p| p.candidate).collect::<Vec<_>>(),
            vec![0]
        );
    }

    #[test]
    fn a_prefix_is_not_added_beside_the_wider_index_that_serves_better() {
        // 0 = (a): 100; 1 = (a, b): 95. Once (a, b) is in, (a) cuts nothing more.
        let s = [stmt(1, 100.0, 20_000.0, &[(&[0], 100.0), (&[1], 95.0)])];
        let mut prices = free(2);
        prices[1].bytes = 2.0;
        let sel = select(&s, &prices, LIMITS);
        assert_eq!(
            sel.picks.iter().map(|p| p.candidate).collect::<Vec<_>>(),
            vec![1]
        );
        assert_eq!(sel.picks.len(), 1);
    }

    #[test]
    fn small_planned_gains_do_not_count() {
        let s = [stmt(1, 100.0, 1000.0, &[(&[0], 900.0)])];
        assert!(select(&s, &free(1), LIMITS).picks.is_empty());
    }

    #[test]
    fn a_pick_made_useless_by_a_later_one_is_dropped() {
        // Alone, 0 is best for statement 1; the set {1, 2} serves both statements better.
        let s = [
            stmt(1, 100.0, 1000.0, &[(&[0], 100.0), (&[1], 50.0)]),
            stmt(2, 100.0, 1000.0, &[(&[1, 2], 20.0)]),
        ];
        let sel = select(&s, &free(3), LIMITS);
        let mut picked: Vec<usize> = sel.picks.iter().map(|p| p.candidate).collect();
        picked.sort();
        assert_eq!(picked, vec![1, 2]);
    }
}
