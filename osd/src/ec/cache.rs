//! A bounded cache of decoding plans, keyed by erasure pattern.
//!
//! Building a plan inverts a k x k matrix (O(k^3) field operations) and prepares the
//! shuffle tables; the pattern (which chunks are read, which are rebuilt) only changes
//! when OSDs fail or return, so a primary reconstructing many stripes of a degraded PG
//! reuses one plan. Entries are evicted first-in first-out once the cache holds its
//! capacity: as many plans as fit in [`CACHE_BYTES`], within [`MIN_PLANS`]..=[`MAX_PLANS`]
//! (8+4: ~1000 plans of ~1 KiB, more than its 793 patterns of 1 to 4 erasures), so memory
//! stays bounded however many patterns a pool goes through.

use hashbrown::HashMap;
use std::collections::VecDeque;
use std::sync::Arc;

/// The most memory (approximately) the cached plans of one code may take.
pub const CACHE_BYTES: usize = 1 << 20;
/// Bounds on the number of plans, whatever their size.
pub const MIN_PLANS: usize = 4;
pub const MAX_PLANS: usize = 1024;

/// An erasure pattern: bit i of `sources` = chunk i is read; of `targets` = rebuilt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Pattern {
    pub sources: [u64; 4],
    pub targets: [u64; 4],
}

impl Pattern {
    #[cfg(test)]
    pub fn new(sources: &[usize], targets: &[usize]) -> Pattern {
        let mut pattern = Pattern::default();
        sources.iter().for_each(|&i| pattern.add_source(i));
        targets.iter().for_each(|&i| pattern.add_target(i));
        pattern
    }

    pub fn add_source(&mut self, chunk: usize) {
        assert!(chunk < super::MAX_CHUNKS);
        self.sources[chunk / 64] |= 1 << (chunk % 64);
    }

    pub fn add_target(&mut self, chunk: usize) {
        assert!(chunk < super::MAX_CHUNKS);
        self.targets[chunk / 64] |= 1 << (chunk % 64);
    }

    /// How many chunks are rebuilt.
    pub fn targets(&self) -> usize {
        self.targets.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn source_list(&self) -> Vec<usize> {
        indices(&self.sources)
    }

    pub fn target_list(&self) -> Vec<usize> {
        indices(&self.targets)
    }
}

fn indices(mask: &[u64; 4]) -> Vec<usize> {
    (0..super::MAX_CHUNKS)
        .filter(|&i| mask[i / 64] & (1 << (i % 64)) != 0)
        .collect()
}

pub struct PlanCache<T> {
    plans: HashMap<Pattern, Arc<T>>,
    order: VecDeque<Pattern>,
    capacity: usize,
}

impl<T> PlanCache<T> {
    /// A cache for plans of at most `plan_bytes` each.
    pub fn new(plan_bytes: usize) -> PlanCache<T> {
        let capacity = (CACHE_BYTES / plan_bytes.max(1)).clamp(MIN_PLANS, MAX_PLANS);
        PlanCache {
            plans: HashMap::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.plans.len()
    }

    /// The cached plan for `pattern`, or the one `build` makes (then cached).
    pub fn get_or_insert_with(&mut self, pattern: Pattern, build: impl FnOnce() -> T) -> Arc<T> {
        if let Some(plan) = self.plans.get(&pattern) {
            return plan.clone();
        }
        while self.plans.len() >= self.capacity {
            let oldest = self.order.pop_front().expect("order lists every plan");
            self.plans.remove(&oldest);
        }
        let plan = Arc::new(build());
        self.plans.insert(pattern, plan.clone());
        self.order.push_back(pattern);
        debug_assert_eq!(self.plans.len(), self.order.len());
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_oldest_beyond_capacity() {
        let mut cache = PlanCache::<usize>::new(CACHE_BYTES);
        assert_eq!(cache.capacity(), MIN_PLANS);
        let mut builds = 0;
        for i in 0..10 {
            let pattern = Pattern::new(&[i], &[i + 1]);
            let plan = cache.get_or_insert_with(pattern, || {
                builds += 1;
                i
            });
            assert_eq!(*plan, i);
            assert!(cache.len() <= MIN_PLANS);
        }
        assert_eq!(builds, 10);
        // The newest is still cached, the first was evicted.
        let plan = cache.get_or_insert_with(Pattern::new(&[9], &[10]), || unreachable!());
        assert_eq!(*plan, 9);
        let rebuilt = cache.get_or_insert_with(Pattern::new(&[0], &[1]), || 100);
        assert_eq!(*rebuilt, 100);
    }

    #[test]
    fn small_plans_get_more_entries() {
        assert_eq!(PlanCache::<()>::new(1).capacity(), MAX_PLANS);
        assert_eq!(PlanCache::<()>::new(4096).capacity(), 256);
    }

    #[test]
    fn pattern_bits_cover_all_chunks() {
        let pattern = Pattern::new(&[0, 64, 255], &[128]);
        assert_eq!(pattern.sources, [1, 1, 0, 1 << 63]);
        assert_eq!(pattern.targets, [0, 0, 1, 0]);
        assert_eq!(pattern.source_list(), [0, 64, 255]);
        assert_eq!(pattern.target_list(), [128]);
        assert_eq!(pattern.targets(), 1);
    }
}
