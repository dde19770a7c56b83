//! Fair shares of a fixed set of shared-memory slots between roles (optidb's failed-statement
//! slots, src/postgres/latency/failed.rs): which slot a new statement takes when none is free,
//! and per-role counts of what was dropped. Plain code over closures and a fixed array: it runs
//! at transaction abort under an LWLock, so it neither allocates nor fails.

/// The most slots `place` shares out.
pub const MAX_SLOTS: usize = 64;

/// Where a new statement (one with no slot yet) goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Place {
    Free(usize),
    /// Take this slot; what it held is dropped.
    Evict(usize),
    /// No room: this failure is dropped.
    Dropped,
}

/// The slot for a new statement of role `userid` whose failure took `elapsed_us`, among `n`
/// slots (`held(i)`: the role and the summed time until failure of slot i, None when free):
/// - a free slot;
/// - else, when the role holds fewer slots than the role holding the most, the cheapest slot
///   of the roles holding the most: fair shares first, so a role that floods the slots with
///   many distinct failing statements gives way to any other role's failure;
/// - else the cheapest of its own slots, if that cost less than this failure (a flood of quick
///   errors does not push out the role's own statement that keeps hitting statement_timeout).
pub fn place(
    n: usize,
    held: impl Fn(usize) -> Option<(u32, i64)>,
    userid: u32,
    elapsed_us: i64,
) -> Place {
    assert!(n <= MAX_SLOTS);
    if let Some(i) = (0..n).find(|&i| held(i).is_none()) {
        return Place::Free(i);
    }
    // Slots held per role, on the stack: one pass over the slots, a lookup per role.
    let mut roles = [(0u32, 0usize); MAX_SLOTS];
    let mut distinct = 0;
    for (role, _) in (0..n).filter_map(&held) {
        match roles[..distinct].iter_mut().find(|(r, _)| *r == role) {
            Some((_, count)) => *count += 1,
            None => {
                roles[distinct] = (role, 1);
                distinct += 1;
            }
        }
    }
    let count = |role: u32| {
        roles[..distinct]
            .iter()
            .find(|(r, _)| *r == role)
            .map_or(0, |(_, c)| *c)
    };
    let most = roles[..distinct].iter().map(|(_, c)| *c).max().unwrap_or(0);
    let cheapest = |of: &dyn Fn(u32) -> bool| {
        (0..n)
            .filter_map(|i| held(i).filter(|(u, _)| of(*u)).map(|(_, cost)| (i, cost)))
            .min_by_key(|(_, cost)| *cost)
    };
    if count(userid) < most {
        return match cheapest(&|u| count(u) == most) {
            Some((i, _)) => Place::Evict(i),
            None => Place::Dropped,
        };
    }
    match cheapest(&|u| u == userid) {
        Some((i, cost)) if cost < elapsed_us => Place::Evict(i),
        _ => Place::Dropped,
    }
}

/// Slots a ring looks at past its oldest one for a slot of the pushing role (`ring_slot`).
pub const RING_LOOKAHEAD: usize = 32;

/// Which entry of a full ring of `n` slots (oldest at `next`; `held(i)`: the role of slot i,
/// None when free) gives way to a new entry of role `userid`: the oldest when it is free or the
/// role's own; else the role's own oldest (or a free slot) among the next RING_LOOKAHEAD;
/// else the oldest. The ring moves its oldest entry into the slot chosen and writes the new one
/// in the oldest's place: a role that floods the ring drops its own entries first, not other
/// roles' older ones, at a bounded cost per entry (no count over the ring on the hot path).
pub fn ring_slot(n: usize, next: usize, held: impl Fn(usize) -> Option<u32>, userid: u32) -> usize {
    let oldest = next % n;
    (0..RING_LOOKAHEAD.min(n))
        .map(|k| (oldest + k) % n)
        .find(|&i| held(i).is_none_or(|u| u == userid))
        .unwrap_or(oldest)
}

/// Failures of one role in one database whose text optidb dropped since the last drain.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DropCount {
    pub used: bool,
    pub userid: u32,
    pub dbid: u32,
    pub failures: u64,
}

/// Add `failures` to the count of role `userid` in database `dbid`. When every count is taken,
/// the database's further roles share one count under role 0 (one of its own roles' counts
/// becomes that shared count); with no count of the database at all, nothing is counted.
pub fn count_dropped(counts: &mut [DropCount], userid: u32, dbid: u32, failures: u64) {
    let of = |c: &DropCount, role: u32| c.used && c.dbid == dbid && c.userid == role;
    let found = counts
        .iter()
        .position(|c| of(c, userid))
        .or_else(|| counts.iter().position(|c| !c.used))
        .or_else(|| counts.iter().position(|c| of(c, 0)));
    let i = match found {
        Some(i) => i,
        None => match counts.iter().position(|c| c.used && c.dbid == dbid) {
            Some(i) => {
                counts[i].userid = 0;
                i
            }
            None => return,
        },
    };
    let c = &mut counts[i];
    if !c.used {
        *c = DropCount {
            used: true,
            userid,
            dbid,
            failures: 0,
        };
    }
    c.failures += failures;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slots as (role, cost) pairs, None free.
    fn place_in(slots: &[Option<(u32, i64)>], userid: u32, elapsed_us: i64) -> Place {
        place(slots.len(), |i| slots[i], userid, elapsed_us)
    }

    #[test]
    fn a_role_flooding_the_slots_gives_way_to_another_roles_quick_failure() {
        // mallory (10) holds every slot with 150 ms timeouts; bob's (20) 1 ms division by zero.
        let mut slots = vec![Some((10, 150_000)); 8];
        slots[3] = Some((10, 140_000));
        assert_eq!(place_in(&slots, 20, 1_000), Place::Evict(3));
        // Then mallory, holding the most, only competes with her own slots, by cost.
        slots[3] = Some((20, 1_000));
        assert_eq!(place_in(&slots, 10, 100), Place::Dropped);
        assert_eq!(place_in(&slots, 10, 160_000), Place::Evict(0));
        // bob again (1 slot of 8): mallory's cheapest gives way.
        slots[5] = Some((10, 90_000));
        assert_eq!(place_in(&slots, 20, 10), Place::Evict(5));
    }

    #[test]
    fn free_slots_first_and_equal_shares_compete_by_cost() {
        let mut slots = vec![Some((10, 5)), None, Some((20, 1))];
        assert_eq!(place_in(&slots, 10, 0), Place::Free(1));
        slots[1] = Some((20, 7));
        // bob (20) holds the most: his new statement competes with his own slots only.
        assert_eq!(place_in(&slots, 20, 3), Place::Evict(2));
        assert_eq!(place_in(&slots, 20, 1), Place::Dropped);
        // A third role, holding none, takes bob's cheapest, even a costlier one.
        assert_eq!(place_in(&slots, 30, 0), Place::Evict(2));
    }

    #[test]
    fn a_ring_flooded_by_one_role_recycles_its_own_entries_first() {
        // Ring of 6, oldest at 1: bob (20) at 1 and 2, mallory (10) elsewhere.
        let ring = [Some(10), Some(20), Some(20), Some(10), Some(10), None];
        let held = |i: usize| ring[i];
        assert_eq!(
            ring_slot(6, 1, held, 10),
            3,
            "mallory skips bob's older entries"
        );
        assert_eq!(ring_slot(6, 1, held, 20), 1, "bob takes his own oldest");
        assert_eq!(
            ring_slot(6, 1, held, 30),
            5,
            "a third role takes the free slot"
        );
        let full_of_bob = [Some(20); 40];
        assert_eq!(
            ring_slot(40, 39, |i| full_of_bob[i], 10),
            39,
            "else the oldest"
        );
    }

    #[test]
    fn dropped_failures_are_counted_per_role_and_database() {
        let mut counts = [DropCount::default(); 8];
        count_dropped(&mut counts, 10, 1, 5);
        count_dropped(&mut counts, 10, 1, 1);
        count_dropped(&mut counts, 10, 2, 2);
        let of_db = |counts: &[DropCount], db| {
            counts
                .iter()
                .filter(|c| c.used && c.dbid == db)
                .map(|c| (c.userid, c.failures))
                .collect::<Vec<_>>()
        };
        assert_eq!(of_db(&counts, 1), vec![(10, 6)]);
        assert_eq!(of_db(&counts, 2), vec![(10, 2)]);
        // Every count taken: a further role of database 1 joins its shared count (role 0).
        for (n, c) in counts.iter_mut().enumerate().skip(2) {
            *c = DropCount {
                used: true,
                userid: 100 + n as u32,
                dbid: 3,
                failures: 1,
            };
        }
        count_dropped(&mut counts, 11, 1, 4);
        count_dropped(&mut counts, 12, 1, 1);
        assert_eq!(of_db(&counts, 1), vec![(0, 11)]);
        // A database with no count at all: nothing to add to.
        count_dropped(&mut counts, 13, 4, 1);
        assert_eq!(of_db(&counts, 4), vec![]);
    }
}
