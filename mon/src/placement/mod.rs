//! PG placement for one pool: which OSDs hold each PG, and which of them is primary.
//!
//! 1. Candidates are grouped by failure domain; each domain's share of the pool's slots is
//!    proportional to its weight, capped at one slot per PG ([`shares`]).
//! 2. A linear program ([`lp`]) decides how many PGs of each class (PGs that hold the same
//!    domains now) get a slot in each domain, keeping as many current slots as it can while
//!    every domain ends within the floor/ceiling of its share.
//! 3. The counts become per-PG domain sets ([`assign::split_class`]); inside each domain the
//!    slots go to OSDs by weight, keeping current holders first
//!    ([`assign::assign_in_domain`]).
//! 4. Sets keep their positions (EC chunk order) and primaries are chosen ([`primary`]).
//!
//! Each PG gets `k = min(pg_size, domains with weight)` members; when there are fewer
//! domains than `pg_size` the remaining positions are 0 (undersized sets).

pub mod assign;
pub mod lp;
pub mod primary;
pub mod shares;

use assign::{assign_in_domain, lay_out, split_class, DomainMember};
use lp::PgClass;
use std::collections::{BTreeMap, BTreeSet};

/// An OSD that may hold slots of the pool.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub osd: u64,
    /// Name of its failure domain (see [`crate::tree::PlacementTree::domain_of`]).
    pub domain: String,
    /// size x reweight; OSDs of weight 0 take no slots.
    pub weight: f64,
    /// Only up OSDs can be primary.
    pub up: bool,
}

/// Everything placement needs to know about one pool.
#[derive(Debug, Clone, Default)]
pub struct PoolRequest {
    pub pg_count: u32,
    pub pg_size: u32,
    pub candidates: Vec<Candidate>,
    /// Current `osd_set` of each PG (absent = not placed yet).
    pub current_sets: BTreeMap<u32, Vec<u64>>,
    pub current_primaries: BTreeMap<u32, u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PoolPlacement {
    pub sets: BTreeMap<u32, Vec<u64>>,
    pub primaries: BTreeMap<u32, u64>,
    /// (PG, OSD) pairs in the new sets that were not in the old ones.
    pub moved_slots: usize,
    /// Variables of the LP that decided it.
    pub lp_variables: usize,
}

pub use lp::LpError;

/// Places one pool.
pub fn place_pool(request: &PoolRequest) -> Result<PoolPlacement, LpError> {
    let pg_size = request.pg_size as usize;
    let mut domain_names: Vec<&str> = request
        .candidates
        .iter()
        .filter(|c| c.weight > 0.0)
        .map(|c| c.domain.as_str())
        .collect();
    domain_names.sort_unstable();
    domain_names.dedup();
    let domain_index: BTreeMap<&str, usize> = domain_names
        .iter()
        .enumerate()
        .map(|(i, d)| (*d, i))
        .collect();
    let mut members: Vec<Vec<DomainMember>> = vec![Vec::new(); domain_names.len()];
    let mut osd_domain: BTreeMap<u64, usize> = BTreeMap::new();
    for c in request.candidates.iter().filter(|c| c.weight > 0.0) {
        let d = domain_index[c.domain.as_str()];
        members[d].push(DomainMember {
            osd: c.osd,
            weight: c.weight,
        });
        osd_domain.insert(c.osd, d);
    }
    let k = pg_size.min(domain_names.len()) as u32;
    let up: BTreeSet<u64> = request
        .candidates
        .iter()
        .filter(|c| c.up)
        .map(|c| c.osd)
        .collect();
    let pgs: Vec<u32> = (1..=request.pg_count).collect();
    let empty = Vec::new();
    let old_set = |pg: u32| request.current_sets.get(&pg).unwrap_or(&empty);

    // Classes: PGs holding slots in the same domains.
    let mut classes: BTreeMap<BTreeSet<usize>, Vec<u32>> = BTreeMap::new();
    for &pg in &pgs {
        let held: BTreeSet<usize> = old_set(pg)
            .iter()
            .filter_map(|o| osd_domain.get(o).copied())
            .collect();
        classes.entry(held).or_default().push(pg);
    }
    let classes: Vec<PgClass> = classes
        .into_iter()
        .map(|(domains, pgs)| PgClass { domains, pgs })
        .collect();

    let (domain_sets, lp_variables) = if k == 0 {
        (BTreeMap::new(), 0)
    } else {
        let weights: Vec<f64> = members
            .iter()
            .map(|m| m.iter().map(|c| c.weight).sum())
            .collect();
        let total = f64::from(k) * f64::from(request.pg_count);
        let domain_shares = shares::water_fill(&weights, total, f64::from(request.pg_count));
        let (lo, hi): (Vec<u32>, Vec<u32>) =
            domain_shares.iter().map(|&s| shares::bounds(s)).unzip();
        // Hard limit on the distance from a share: 3% of it, at least one slot.
        let slack: Vec<u32> = domain_shares
            .iter()
            .map(|&s| ((s * 0.03).floor() as u32).max(1))
            .collect();
        let counts = lp::solve(&classes, &lo, &hi, &slack, k)?;
        let mut domain_sets: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (class, class_counts) in classes.iter().zip(&counts.per_class) {
            let split = split_class(&class.domains, &class.pgs, class_counts);
            domain_sets.extend(class.pgs.iter().copied().zip(split));
        }
        (domain_sets, counts.variables)
    };

    // Inside each domain: which OSD.
    let mut per_domain: Vec<Vec<(u32, Option<u64>)>> = vec![Vec::new(); domain_names.len()];
    for (&pg, domains) in &domain_sets {
        for &d in domains {
            let holder = old_set(pg)
                .iter()
                .copied()
                .find(|o| osd_domain.get(o) == Some(&d));
            per_domain[d].push((pg, holder));
        }
    }
    let mut chosen: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
    for (d, pgs_here) in per_domain.iter().enumerate() {
        if pgs_here.is_empty() {
            continue;
        }
        for (pg, osd) in assign_in_domain(&members[d], pgs_here) {
            chosen.entry(pg).or_default().insert(osd);
        }
    }

    let mut sets = BTreeMap::new();
    let mut moved_slots = 0;
    for &pg in &pgs {
        let picked = chosen.remove(&pg).unwrap_or_default();
        moved_slots += picked.iter().filter(|o| !old_set(pg).contains(o)).count();
        sets.insert(pg, lay_out(old_set(pg), &picked, pg_size));
    }
    let primaries = primary::choose_primaries(&sets, &request.current_primaries, &up);
    Ok(PoolPlacement {
        sets,
        primaries,
        moved_slots,
        lp_variables,
    })
}

#[cfg(test)]
mod tests;
