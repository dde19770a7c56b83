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
//!
//! Storage: an index is advised at its size only when its extra columns earn it. A pick is
//! replaced by a narrower candidate it covers (its leading columns), or dropped when another
//! pick already covers such a prefix, when the set then keeps all but `size_share` of the
//! saving of the statements that pick serves and takes fewer bytes; only columns that filter
//! are given up this way, never an ORDER BY or GROUP BY column (TPC-H: three lineitem
//! indexes leading with l_partkey, 75 MB, where one on l_partkey of 4 MB serves some of their
//! statements nearly as well). Each statement the pick serves is re-costed with the new set
//! and must plan at most `max_cost_rise` above its cost with the pick: a share of the saving
//! hides what a statement is left with (TPC-H Q17, timed out before, planned 207,000 and kept
//! 90% of its saving with (l_partkey) alone, yet ran 0.26 s instead of 0.00 s).
//!
//! Storage has a price besides: `storage_price` times the advised set's own saving per byte
//! (as the greedy chose it, net of writes). A wider pick must earn its extra bytes over the
//! narrower stand-in (or over none, when another pick covers its prefix) at least at that rate:
//! an extra MB that saves less than the set's average MB is the set's worst use of storage,
//! and goes. The price is relative to the workload, so it reads the same for a one-minute
//! benchmark and a month of production. A change it allows must still leave every statement
//! the wide pick served planned at least `min_gain` below its cost without indexes: a
//! statement is never left with a plan only slightly cheaper than none's, where plans run
//! slower. 0 turns the price off.

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
    /// Those of `covers` it may give way to for its size: its columns beyond theirs only filter
    /// (an ORDER BY or GROUP BY column's worth depends on how many rows a value has, which
    /// the sampled plans' average understates).
    pub stand_ins: Vec<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub budget_bytes: f64,
    /// Smallest share of a statement's cost an index set must remove to count (0.0-1.0).
    pub min_gain: f64,
    /// Largest share of its statements' saving a pick's extra size may buy (0.0-1.0): a pick
    /// that adds less goes for a narrower index, or none.
    pub size_share: f64,
    /// Largest rise of a served statement's planned cost (0.2 = 1.2x its cost with the wider
    /// pick) that giving up a pick for its size may cause.
    pub max_cost_rise: f64,
    /// Saving an extra byte must buy, as a multiple of the advised set's saving per byte
    /// (0: storage is free, only the budget and `size_share` weigh it).
    pub storage_price: f64,
}

/// Which rule gave a pick up for its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NarrowRule {
    /// Its statements keep all but `size_share` of their saving, none planning above
    /// `max_cost_rise`.
    SizeShare,
    /// Its extra bytes save less than `storage_price` times the set's saving per byte.
    StoragePrice,
}

impl NarrowRule {
    pub fn name(self) -> &'static str {
        match self {
            NarrowRule::SizeShare => "size_share",
            NarrowRule::StoragePrice => "storage_price",
        }
    }
}

/// Why a pick that has a narrower stand-in kept its size: the cheapest change storage could
/// make, and what its bytes would have had to save less than.
#[derive(Debug, Clone, PartialEq)]
pub struct KeptWide {
    pub wide: usize,
    pub narrow: Option<usize>,
    /// Saving the change would lose (ms over the window, net of writes).
    pub loss_ms: f64,
    pub bytes_saved: f64,
    /// What those bytes are worth at the storage price (ms over the window).
    pub price_ms: f64,
}

/// A pick given up for storage: `wide` dropped, `narrow` (if any) advised instead.
#[derive(Debug, Clone, PartialEq)]
pub struct Narrowed {
    pub wide: usize,
    pub narrow: Option<usize>,
    /// Saving of the set lost by it (ms over the window), net of writes.
    pub loss_ms: f64,
    /// Saving of the statements the wide index served, with it (ms over the window).
    pub served_ms: f64,
    pub bytes_saved: f64,
    pub rule: NarrowRule,
    /// What `bytes_saved` is worth at the storage price (ms over the window).
    pub price_ms: f64,
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
    /// Picks given up for a narrower index or none, as `size_share` or the storage price allow.
    pub narrowed: Vec<Narrowed>,
    /// Picks with a narrower stand-in that earned their size, with the change refused.
    pub kept_wide: Vec<KeptWide>,
    /// The storage price in ms (over the window) per byte: `storage_price` times the set's
    /// saving per byte as the greedy chose it.
    pub price_ms_per_byte: f64,
}

pub fn select(statements: &[Measured], prices: &[Price], limits: Limits) -> Selection {
    let w = Workload {
        statements,
        prices,
        limits,
        price: 0.0,
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
    // The rate is fixed before any narrowing: each change then does not raise the bar for
    // the next (a smaller set has a higher saving per byte).
    let bytes = w.bytes(&chosen);
    let price = if bytes > 0.0 {
        limits.storage_price * w.value(&chosen).max(0.0) / bytes
    } else {
        0.0
    };
    let w = Workload { price, ..w };
    let mut narrowed: Vec<Narrowed> = Vec::new();
    while let Some(n) = w.narrower(&chosen) {
        chosen.remove(&n.wide);
        chosen.extend(n.narrow);
        narrowed.push(n);
    }
    let mut selection = w.describe(&chosen);
    selection.kept_wide = chosen
        .iter()
        .filter_map(|wide| w.cheapest_change(&chosen, *wide))
        .collect();
    selection.narrowed = narrowed;
    selection.price_ms_per_byte = price;
    selection
}

struct Workload<'a> {
    statements: &'a [Measured],
    prices: &'a [Price],
    limits: Limits,
    /// Storage price, ms over the window per byte (0 before the greedy has chosen).
    price: f64,
}

/// One change storage may make to a pick: `narrow` (or nothing) in place of `wide`.
struct Change {
    narrow: Option<usize>,
    loss_ms: f64,
    bytes_saved: f64,
    served_ms: f64,
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

    /// Workload value of a set: saving net of writes.
    fn value(&self, chosen: &BTreeSet<usize>) -> f64 {
        self.saving(chosen) - chosen.iter().map(|i| self.prices[*i].write_ms).sum::<f64>()
    }

    /// The changes storage may make to pick `wide`: a smaller candidate it covers in its
    /// place, or none when another pick already serves a prefix of it; what each loses.
    fn changes(&self, chosen: &BTreeSet<usize>, wide: usize) -> Vec<Change> {
        let value = self.value(chosen);
        let without: BTreeSet<usize> = chosen.iter().copied().filter(|j| *j != wide).collect();
        let served_ms: f64 = self
            .statements
            .iter()
            .filter(|s| self.cost(s, chosen) < self.cost(s, &without))
            .map(|s| self.saving_of(s, chosen))
            .sum();
        let narrow_options = self.prices[wide]
            .stand_ins
            .iter()
            .copied()
            .filter(|n| !chosen.contains(n) && self.prices[*n].bytes < self.prices[wide].bytes)
            .map(Some);
        let prefix_served = self.prices[wide]
            .stand_ins
            .iter()
            .any(|n| *n != wide && self.present(&without, *n));
        prefix_served
            .then_some(None)
            .into_iter()
            .chain(narrow_options)
            .map(|narrow| {
                let mut set = without.clone();
                set.extend(narrow);
                Change {
                    narrow,
                    loss_ms: value - self.value(&set),
                    bytes_saved: self.bytes(chosen) - self.bytes(&set),
                    served_ms,
                }
            })
            .filter(|c| c.bytes_saved > 0.0)
            .collect()
    }

    /// The rule that allows this change, if any.
    fn allowed(&self, chosen: &BTreeSet<usize>, wide: usize, c: &Change) -> Option<NarrowRule> {
        if c.loss_ms <= self.limits.size_share * c.served_ms
            && self.no_statement_loses(chosen, wide, c.narrow)
        {
            Some(NarrowRule::SizeShare)
        } else if c.loss_ms <= self.price * c.bytes_saved
            && self.served_stay_helped(chosen, wide, c.narrow)
        {
            Some(NarrowRule::StoragePrice)
        } else {
            None
        }
    }

    /// The largest pick (by bytes) that storage may give up, and its allowed change that
    /// loses least.
    fn narrower(&self, chosen: &BTreeSet<usize>) -> Option<Narrowed> {
        let mut picks: Vec<usize> = chosen.iter().copied().collect();
        picks.sort_by(|a, b| self.prices[*b].bytes.total_cmp(&self.prices[*a].bytes));
        picks.into_iter().find_map(|wide| {
            self.changes(chosen, wide)
                .into_iter()
                .filter_map(|c| self.allowed(chosen, wide, &c).map(|rule| (c, rule)))
                .min_by(|a, b| a.0.loss_ms.total_cmp(&b.0.loss_ms))
                .map(|(c, rule)| Narrowed {
                    wide,
                    narrow: c.narrow,
                    loss_ms: c.loss_ms,
                    served_ms: c.served_ms,
                    bytes_saved: c.bytes_saved,
                    rule,
                    price_ms: self.price * c.bytes_saved,
                })
        })
    }

    /// A pick storage could change but did not: the change that would lose least.
    fn cheapest_change(&self, chosen: &BTreeSet<usize>, wide: usize) -> Option<KeptWide> {
        self.changes(chosen, wide)
            .into_iter()
            .min_by(|a, b| a.loss_ms.total_cmp(&b.loss_ms))
            .map(|c| KeptWide {
                wide,
                narrow: c.narrow,
                loss_ms: c.loss_ms,
                bytes_saved: c.bytes_saved,
                price_ms: self.price * c.bytes_saved,
            })
    }

    /// Every statement `wide` serves stays planned at least `min_gain` below its cost without
    /// indexes once `wide` is replaced by `narrow` (or just gone).
    fn served_stay_helped(
        &self,
        chosen: &BTreeSet<usize>,
        wide: usize,
        narrow: Option<usize>,
    ) -> bool {
        self.all_served_after_swap(chosen, wide, narrow, |s, after| after < s.base_cost)
    }

    /// Every statement `wide` serves plans, with `wide` replaced by `narrow` (or just gone), at
    /// most `max_cost_rise` above its cost with the chosen set.
    fn no_statement_loses(
        &self,
        chosen: &BTreeSet<usize>,
        wide: usize,
        narrow: Option<usize>,
    ) -> bool {
        self.all_served_after_swap(chosen, wide, narrow, |s, after| {
            after <= (1.0 + self.limits.max_cost_rise) * self.cost(s, chosen)
        })
    }

    /// `holds(statement, its cost after the swap)` for every statement `wide` serves in
    /// `chosen` (one that plans cheaper with it than without it), once `wide` is replaced by
    /// `narrow` (or just gone).
    fn all_served_after_swap(
        &self,
        chosen: &BTreeSet<usize>,
        wide: usize,
        narrow: Option<usize>,
        holds: impl Fn(&Measured, f64) -> bool,
    ) -> bool {
        let without: BTreeSet<usize> = chosen.iter().copied().filter(|j| *j != wide).collect();
        let mut swapped = without.clone();
        swapped.extend(narrow);
        self.statements
            .iter()
            .filter(|s| self.cost(s, chosen) < self.cost(s, &without))
            .all(|s| holds(s, self.cost(s, &swapped)))
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
            narrowed: Vec::new(),
            kept_wide: Vec::new(),
            price_ms_per_byte: 0.0,
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
        size_share: 0.1,
        max_cost_rise: 0.2,
        storage_price: 0.0,
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
            ..LIMITS
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
    fn a_wide_index_whose_extra_columns_add_little_gives_way_to_its_prefix() {
        // 0 = (a), 1 = (a, b, c) at 5x the size: 1 saves 95.5 of 100 ms, (a) alone 95.
        let s = [stmt(1, 100.0, 1000.0, &[(&[1], 45.0), (&[0], 50.0)])];
        let mut prices = free(2);
        prices[1].bytes = 5.0;
        prices[1].covers = vec![0];
        prices[1].stand_ins = vec![0];
        let sel = select(&s, &prices, LIMITS);
        assert_eq!(
            sel.picks.iter().map(|p| p.candidate).collect::<Vec<_>>(),
            vec![0]
        );
        assert_eq!(sel.narrowed.len(), 1);
        assert_eq!((sel.narrowed[0].wide, sel.narrowed[0].narrow), (1, Some(0)));
        // Extra columns that earn more than a tenth of the saving stay.
        let s = [stmt(1, 100.0, 1000.0, &[(&[1], 10.0), (&[0], 500.0)])];
        let sel = select(&s, &prices, LIMITS);
        assert_eq!(
            sel.picks.iter().map(|p| p.candidate).collect::<Vec<_>>(),
            vec![1]
        );
        assert!(sel.narrowed.is_empty());
    }

    #[test]
    fn a_wide_index_is_kept_when_a_statement_would_plan_far_above_it() {
        // Q17-like: planned 207,000 before (it timed out), 1,000 with 1 = (a, b), 20,000 with
        // 0 = (a): (a) keeps 91% of the saving, but the statement would plan 20x its cost.
        let s = [stmt(
            1,
            90_000.0,
            207_000.0,
            &[(&[1], 1_000.0), (&[0], 20_000.0)],
        )];
        let mut prices = free(2);
        prices[1].bytes = 4.0;
        prices[1].covers = vec![0];
        prices[1].stand_ins = vec![0];
        let sel = select(&s, &prices, LIMITS);
        assert_eq!(
            sel.picks.iter().map(|p| p.candidate).collect::<Vec<_>>(),
            vec![1]
        );
        assert!(sel.narrowed.is_empty());
        // Within 1.2x, the narrower index is advised.
        let s = [stmt(
            1,
            90_000.0,
            207_000.0,
            &[(&[1], 1_000.0), (&[0], 1_150.0)],
        )];
        let sel = select(&s, &prices, LIMITS);
        assert_eq!(
            sel.picks.iter().map(|p| p.candidate).collect::<Vec<_>>(),
            vec![0]
        );
    }

    #[test]
    fn a_wide_index_is_dropped_when_another_pick_already_serves_its_prefix() {
        // 0 = (a, x) serves statement 1; 1 = (a, y, z) adds 1.5 ms to statement 2 over (a).
        let s = [
            stmt(1, 1000.0, 1000.0, &[(&[0], 10.0)]),
            stmt(2, 100.0, 1000.0, &[(&[1], 85.0), (&[2], 100.0)]),
        ];
        let mut prices = free(3);
        prices[0].covers = vec![2];
        prices[0].stand_ins = vec![2];
        prices[1].covers = vec![2];
        prices[1].stand_ins = vec![2];
        prices[1].bytes = 4.0;
        let sel = select(&s, &prices, LIMITS);
        assert_eq!(
            sel.picks.iter().map(|p| p.candidate).collect::<Vec<_>>(),
            vec![0]
        );
        assert_eq!(sel.narrowed[0].narrow, None);
        assert_eq!(sel.picks[0].serves.len(), 2);
    }

    #[test]
    fn a_sort_column_is_not_given_up_for_its_size() {
        // 1 = (a, sorted) covers 0 = (a) but its extra column serves ORDER BY ... LIMIT.
        let s = [stmt(1, 100.0, 1000.0, &[(&[1], 45.0), (&[0], 50.0)])];
        let mut prices = free(2);
        prices[1].bytes = 5.0;
        prices[1].covers = vec![0];
        let sel = select(&s, &prices, LIMITS);
        assert_eq!(
            sel.picks.iter().map(|p| p.candidate).collect::<Vec<_>>(),
            vec![1]
        );
    }

    #[test]
    fn a_pick_with_no_narrower_stand_in_is_kept_however_little_it_adds() {
        // 1 = (b, c) adds 5% to statement 1, which 0 = (a) already serves; its prefix 2 = (b)
        // is no smaller and no other pick covers it: storage does not drop it.
        let s = [stmt(1, 100.0, 1000.0, &[(&[0], 100.0), (&[0, 1], 50.0)])];
        let mut prices = free(3);
        prices[1].bytes = 9.0;
        prices[2].bytes = 9.0;
        prices[1].covers = vec![2];
        prices[1].stand_ins = vec![2];
        let sel = select(&s, &prices, LIMITS);
        assert_eq!(sel.picks.len(), 2);
        assert!(sel.narrowed.is_empty());
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

    const PRICED: Limits = Limits {
        storage_price: 1.0,
        ..LIMITS
    };

    /// TPC-H-like: statement 1 saves much with a small index 0; statement 2 (Q17) is served
    /// by 1 = (a, b) at 18 MB, planned 4x lower than with its prefix 2 = (a) at 4 MB.
    fn wide_and_its_prefix(wide_extra_ms: f64) -> (Vec<Measured>, Vec<Price>) {
        let s = vec![
            stmt(1, 10_000.0, 1000.0, &[(&[0], 10.0)]),
            stmt(
                2,
                1_000.0,
                100_000.0,
                &[(&[1], 1_000.0), (&[2], 1_000.0 + wide_extra_ms * 100.0)],
            ),
        ];
        let mut prices = free(3);
        prices[0].bytes = 1.0;
        prices[1].bytes = 18.0;
        prices[2].bytes = 4.0;
        prices[1].covers = vec![2];
        prices[1].stand_ins = vec![2];
        (s, prices)
    }

    #[test]
    fn extra_bytes_that_save_less_than_the_sets_average_byte_go_to_the_prefix() {
        // (a, b) adds 30 ms over (a) for 14 extra bytes; the set saves ~10,890 ms in 19 bytes
        // (~573 ms per byte): the price of 14 bytes is ~8,000 ms, far above 30.
        let (s, prices) = wide_and_its_prefix(30.0);
        let unpriced = select(&s, &prices, LIMITS);
        let mut picked: Vec<usize> = unpriced.picks.iter().map(|p| p.candidate).collect();
        picked.sort();
        assert_eq!(
            picked,
            vec![0, 1],
            "a 4x planned rise is refused without a price"
        );
        let sel = select(&s, &prices, PRICED);
        let mut picked: Vec<usize> = sel.picks.iter().map(|p| p.candidate).collect();
        picked.sort();
        assert_eq!(picked, vec![0, 2]);
        assert_eq!(sel.narrowed.len(), 1);
        let n = &sel.narrowed[0];
        assert_eq!(
            (n.wide, n.narrow, n.rule),
            (1, Some(2), NarrowRule::StoragePrice)
        );
        assert!((n.loss_ms - 30.0).abs() < 1e-6);
        assert!(n.price_ms > n.loss_ms);
        assert!((sel.price_ms_per_byte * 19.0 - (10_000.0 * 0.99 + 990.0)).abs() < 1e-6);
        assert!(sel.kept_wide.is_empty());
    }

    #[test]
    fn extra_bytes_that_earn_their_price_are_kept_and_say_why() {
        // (a, b) now saves 2,900 ms over (a); the set saves 10,890 ms in 118 bytes (index 0
        // is large): 14 bytes are priced ~1,290 ms, less than they save.
        let s = vec![
            stmt(1, 1_000.0, 1000.0, &[(&[0], 10.0)]),
            stmt(2, 10_000.0, 100_000.0, &[(&[1], 1_000.0), (&[2], 30_000.0)]),
        ];
        let (_, mut prices) = wide_and_its_prefix(0.0);
        prices[0].bytes = 100.0;
        let sel = select(&s, &prices, PRICED);
        let mut picked: Vec<usize> = sel.picks.iter().map(|p| p.candidate).collect();
        picked.sort();
        assert_eq!(picked, vec![0, 1]);
        assert!(sel.narrowed.is_empty());
        assert_eq!(sel.kept_wide.len(), 1);
        let k = &sel.kept_wide[0];
        assert_eq!((k.wide, k.narrow), (1, Some(2)));
        assert!(k.loss_ms > k.price_ms);
        assert!((k.bytes_saved - 14.0).abs() < 1e-9);
    }

    #[test]
    fn the_price_never_leaves_a_served_statement_without_its_planned_gain() {
        // With (a) alone statement 2 plans 85% of its base: under min_gain, so it would run a
        // plan only slightly cheaper than none's. However cheap its bytes, (a, b) stays.
        let s = vec![
            stmt(1, 100_000.0, 1000.0, &[(&[0], 10.0)]),
            stmt(2, 10.0, 100_000.0, &[(&[1], 1_000.0), (&[2], 85_000.0)]),
        ];
        let (_, prices) = wide_and_its_prefix(0.0);
        let sel = select(&s, &prices, PRICED);
        let mut picked: Vec<usize> = sel.picks.iter().map(|p| p.candidate).collect();
        picked.sort();
        assert_eq!(picked, vec![0, 1]);
        assert!(sel.narrowed.is_empty());
    }
}
