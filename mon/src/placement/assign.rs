//! Turning the LP's per-class domain counts into concrete PG -> OSD sets.

use super::shares::{integer_targets, water_fill};
use std::collections::{BTreeMap, BTreeSet};

/// Splits one class's domain counts over its PGs: returns each PG's domains.
///
/// This is filling a 0/1 matrix (PGs x domains) with given row and column sums. Domains
/// are dealt one at a time to the PGs that still miss the most slots (the constructive
/// proof of the Gale-Ryser theorem: this greedy succeeds whenever any filling exists);
/// ties are broken by a hash of (PG, domain), so that PGs end up with varied domain sets
/// and a failure is recovered from many peers, not from the same few. Held domains are
/// kept by `count` PGs and dropped by the others, again spread evenly.
pub fn split_class(
    held: &BTreeSet<usize>,
    pgs: &[u32],
    counts: &BTreeMap<usize, u32>,
) -> Vec<Vec<usize>> {
    let n = pgs.len();
    let mut sets: Vec<Vec<usize>> = vec![held.iter().copied().collect(); n];
    let mut order: Vec<usize> = (0..n).collect();
    for &d in held {
        let keep = counts.get(&d).copied().unwrap_or(0) as usize;
        // Drop from the PGs that still keep the most domains.
        order.sort_by_key(|&i| (std::cmp::Reverse(sets[i].len()), mix(pgs[i], d)));
        for &i in &order[..n - keep.min(n)] {
            sets[i].retain(|&x| x != d);
        }
    }
    let k: usize = counts.values().map(|&c| c as usize).sum::<usize>() / n.max(1);
    let mut new_domains: Vec<(usize, usize)> = counts
        .iter()
        .filter(|(d, _)| !held.contains(d))
        .map(|(&d, &c)| (d, c as usize))
        .collect();
    // Biggest columns first, as the theorem's construction does.
    new_domains.sort_by_key(|&(d, c)| (std::cmp::Reverse(c), d));
    for (d, count) in new_domains {
        order.sort_by_key(|&i| (sets[i].len(), mix(pgs[i], d)));
        for &i in order.iter().take(count) {
            debug_assert!(!sets[i].contains(&d) && sets[i].len() < k);
            sets[i].push(d);
        }
    }
    sets
}

/// A fixed pseudo-random tie-breaker for (PG, domain).
fn mix(pg: u32, domain: usize) -> u64 {
    let mut x = (u64::from(pg) << 32) ^ domain as u64 ^ 0x9e37_79b9_7f4a_7c15;
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// One OSD that may take slots inside a failure domain.
#[derive(Debug, Clone)]
pub struct DomainMember {
    pub osd: u64,
    pub weight: f64,
}

/// Chooses an OSD inside one domain for each PG that has a slot there.
///
/// `pgs` pairs each PG with the OSD it has in this domain now (if any). OSD targets are the
/// domain's slot count split by weight; a PG keeps its OSD while that OSD is under target,
/// the rest go to the OSDs furthest below theirs. This keeps `sum min(current, target)`
/// slots, the most any assignment can.
pub fn assign_in_domain(members: &[DomainMember], pgs: &[(u32, Option<u64>)]) -> Vec<(u32, u64)> {
    let weights: Vec<f64> = members.iter().map(|m| m.weight).collect();
    let total = pgs.len() as u32;
    let shares = water_fill(&weights, f64::from(total), f64::INFINITY);
    let index: BTreeMap<u64, usize> = members
        .iter()
        .enumerate()
        .map(|(i, m)| (m.osd, i))
        .collect();
    let mut current = vec![0u32; members.len()];
    for (_, osd) in pgs {
        if let Some(&i) = osd.as_ref().and_then(|o| index.get(o)) {
            current[i] += 1;
        }
    }
    let targets = integer_targets(&shares, total, &current);
    let mut load = vec![0u32; members.len()];
    let mut result = Vec::with_capacity(pgs.len());
    let mut unplaced = Vec::new();
    for &(pg, osd) in pgs {
        match osd.and_then(|o| index.get(&o).copied()) {
            Some(i) if load[i] < targets[i] => {
                load[i] += 1;
                result.push((pg, members[i].osd));
            }
            _ => unplaced.push(pg),
        }
    }
    for pg in unplaced {
        let i = (0..members.len())
            .max_by(|&a, &b| {
                let room = |i: usize| i64::from(targets[i]) - i64::from(load[i]);
                room(a).cmp(&room(b)).then(b.cmp(&a))
            })
            .expect("a domain with slots has members");
        load[i] += 1;
        result.push((pg, members[i].osd));
    }
    result
}

/// Lays the chosen OSDs out as an `osd_set` of `pg_size` positions: an OSD that stays keeps
/// its position (EC sets are ordered by chunk), new ones fill the empty positions in order,
/// and positions left over are 0 (an undersized set).
pub fn lay_out(old_set: &[u64], chosen: &BTreeSet<u64>, pg_size: usize) -> Vec<u64> {
    let mut set = vec![0u64; pg_size];
    let mut placed = BTreeSet::new();
    for (i, osd) in old_set.iter().enumerate().take(pg_size) {
        if chosen.contains(osd) && placed.insert(*osd) {
            set[i] = *osd;
        }
    }
    let mut empty = (0..pg_size)
        .filter(|&i| set[i] == 0)
        .collect::<Vec<_>>()
        .into_iter();
    for osd in chosen {
        if !placed.contains(osd) {
            if let Some(i) = empty.next() {
                set[i] = *osd;
            }
        }
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_class_never_repeats_a_domain() {
        let held = BTreeSet::from([0, 1, 2]);
        let counts = BTreeMap::from([(0, 5), (1, 4), (2, 3), (3, 3), (4, 3), (5, 2)]);
        let sets = split_class(&held, &[1, 2, 3, 4, 5], &counts);
        for set in &sets {
            assert_eq!(set.len(), 4, "{sets:?}");
            assert_eq!(set.iter().collect::<BTreeSet<_>>().len(), 4, "{sets:?}");
        }
    }

    #[test]
    fn in_domain_assignment_keeps_what_fits() {
        let members = [
            DomainMember {
                osd: 1,
                weight: 1.0,
            },
            DomainMember {
                osd: 2,
                weight: 1.0,
            },
        ];
        let pgs = [(1, Some(1)), (2, Some(1)), (3, Some(1)), (4, None)];
        let result = assign_in_domain(&members, &pgs);
        let on_1 = result.iter().filter(|(_, o)| *o == 1).count();
        assert_eq!(on_1, 2);
        assert!(result.contains(&(1, 1)) && result.contains(&(2, 1)));
    }

    #[test]
    fn layout_keeps_positions() {
        let set = lay_out(&[5, 6, 7], &BTreeSet::from([5, 7, 9]), 3);
        assert_eq!(set, vec![5, 9, 7]);
        assert_eq!(lay_out(&[], &BTreeSet::from([3]), 2), vec![3, 0]);
    }
}
