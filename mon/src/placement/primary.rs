//! Choosing each PG's primary: an up member of its set, spread evenly.
//!
//! Each OSD may be primary of about as many PGs as its share of the pool's slots says
//! (`ceil(pgs_with_an_up_member x its_slots / all_slots)`). A PG keeps its primary while
//! that OSD is up, still a member and under its allowance (a change of primary makes the
//! PG re-peer); the others get the up member with the fewest primaries per slot.

use std::collections::{BTreeMap, BTreeSet};

pub fn choose_primaries(
    sets: &BTreeMap<u32, Vec<u64>>,
    current: &BTreeMap<u32, u64>,
    up: &BTreeSet<u64>,
) -> BTreeMap<u32, u64> {
    let mut slots: BTreeMap<u64, u32> = BTreeMap::new();
    for set in sets.values() {
        for &osd in set.iter().filter(|&&o| o != 0) {
            *slots.entry(osd).or_default() += 1;
        }
    }
    let all_slots: u32 = slots.values().sum();
    let servable = sets
        .values()
        .filter(|set| set.iter().any(|o| up.contains(o)))
        .count() as u64;
    let allowance = |osd: u64| -> u64 {
        let own = u64::from(slots.get(&osd).copied().unwrap_or(0));
        (servable * own).div_ceil(u64::from(all_slots.max(1)))
    };
    let mut count: BTreeMap<u64, u64> = BTreeMap::new();
    let mut primaries = BTreeMap::new();
    let mut pending = Vec::new();
    for (&pg, set) in sets {
        match current.get(&pg) {
            Some(&p)
                if p != 0
                    && up.contains(&p)
                    && set.contains(&p)
                    && count.get(&p).copied().unwrap_or(0) < allowance(p) =>
            {
                *count.entry(p).or_default() += 1;
                primaries.insert(pg, p);
            }
            _ => pending.push(pg),
        }
    }
    for pg in pending {
        let best = sets[&pg]
            .iter()
            .copied()
            .filter(|o| *o != 0 && up.contains(o))
            .min_by(|&a, &b| {
                let ratio = |o: u64| {
                    count.get(&o).copied().unwrap_or(0) as f64
                        / f64::from(slots.get(&o).copied().unwrap_or(1))
                };
                ratio(a).total_cmp(&ratio(b)).then(a.cmp(&b))
            });
        let primary = best.unwrap_or(0);
        if primary != 0 {
            *count.entry(primary).or_default() += 1;
        }
        primaries.insert(pg, primary);
    }
    primaries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primaries_are_up_members_spread_evenly() {
        let sets: BTreeMap<u32, Vec<u64>> = (1..=30)
            .map(|pg| (pg, vec![1 + pg as u64 % 3, 1 + (pg as u64 + 1) % 3]))
            .collect();
        let up = BTreeSet::from([1, 2, 3]);
        let primaries = choose_primaries(&sets, &BTreeMap::new(), &up);
        for osd in 1..=3 {
            let n = primaries.values().filter(|&&p| p == osd).count();
            assert_eq!(n, 10);
        }
        // OSD 2 goes down: its PGs get another member, others keep theirs.
        let up = BTreeSet::from([1, 3]);
        let after = choose_primaries(&sets, &primaries, &up);
        for (pg, p) in &after {
            assert_ne!(*p, 2);
            assert!(sets[pg].contains(p));
            if primaries[pg] != 2 {
                assert_eq!(primaries[pg], *p, "PG {pg} lost a live primary");
            }
        }
        let none_up = choose_primaries(&sets, &primaries, &BTreeSet::new());
        assert!(none_up.values().all(|&p| p == 0));
    }
}
