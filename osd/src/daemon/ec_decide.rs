//! What peering of an EC/XOR PG decides for one stripe, as a pure function.
//!
//! Our EC writes give every chunk of a stripe the same version: the primary writes the new
//! version of every chunk (touched data chunks with their new bytes, the other data chunks
//! with their unchanged bytes of the affected range, parity chunks with the new parity)
//! *unstable* on every live chunk OSD (phase 1), then stabilizes it on all of them
//! (phase 2), and acknowledges the client when phase 2 is done. The decision:
//!
//! | found | decision |
//! |---|---|
//! | the newest version that at least `k` chunks hold (stable or not), or a newer tombstone | *committed*: the stripe's state; its unstable copies are stabilized, chunks without it are rebuilt from `k` holders (`holders` says who has what; a delete is completed) |
//! | a newer version on fewer than `k` chunks, unstable | phase 1 did not reach `k` chunks, never acknowledged: rolled back |
//! | a newer version on fewer than `k` chunks, stable on one | cannot happen unless chunks were lost beyond the pool's redundancy: `lost` |
//!
//! Why `k` is enough and safe: a version stable anywhere finished phase 1 on every live
//! member of its epoch's set; activation hears from `k` members of every recorded set
//! (`history::decide_ec_activation`), all of which hold it, so an acknowledged version is
//! always committed. Deciding on `k` (rather than waiting for every chunk) also means the
//! same stripe gets the same decision whichever `k` members are heard. A delete needs no
//! data and a tombstone cannot be rolled back, so one that reached any chunk is completed.

use std::collections::{BTreeMap, BTreeSet};

/// One version of one chunk as an OSD listed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldChunk {
    pub osd: u64,
    pub chunk: u32,
    pub version: u64,
    pub stable: bool,
    pub deleted: bool,
}

/// The stripe's committed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    pub version: u64,
    pub deleted: bool,
}

/// What to do with one stripe (see the module table).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StripeDecision {
    /// `None`: no version reaches `k` chunks (everything found is rolled back).
    pub committed: Option<Committed>,
    /// (osd, chunk, version to roll back to).
    pub rollback: Vec<(u64, u32, u64)>,
    /// (osd, chunk, version to stabilize).
    pub stabilize: Vec<(u64, u32, u64)>,
    /// Chunk -> the OSDs holding it at the committed version.
    pub holders: BTreeMap<u32, Vec<u64>>,
    /// A stable version newer than the committed one is on fewer than `k` chunks.
    pub lost: bool,
}

/// Decides one stripe from every listed version of its chunks; `k` data chunks of `n`.
pub fn decide_stripe(held: &[HeldChunk], k: usize, n: usize) -> StripeDecision {
    assert!(k >= 1 && n > k, "an EC stripe has data and parity chunks");
    let mut chunks_at: BTreeMap<u64, BTreeSet<u32>> = BTreeMap::new();
    let mut tombstone_at: BTreeSet<u64> = BTreeSet::new();
    for h in held {
        debug_assert!(h.version != 0, "version 0 is never listed");
        debug_assert!((h.chunk as usize) < n, "a chunk of the stripe");
        chunks_at.entry(h.version).or_default().insert(h.chunk);
        if h.deleted {
            tombstone_at.insert(h.version);
        }
    }
    let committed_version = chunks_at
        .iter()
        .rev()
        .find(|(version, chunks)| chunks.len() >= k || tombstone_at.contains(version))
        .map(|(&version, _)| version);
    let mut decision = StripeDecision {
        committed: committed_version.map(|version| Committed {
            version,
            deleted: held.iter().any(|h| h.version == version && h.deleted),
        }),
        ..StripeDecision::default()
    };
    let floor = committed_version.unwrap_or(0);
    // Per (osd, chunk): roll back what is newer than the committed version (once), and
    // stabilize the committed version where it is unstable.
    let mut rolled: BTreeSet<(u64, u32)> = BTreeSet::new();
    for h in held {
        if h.version > floor {
            if h.stable || h.deleted {
                decision.lost = true;
            } else if rolled.insert((h.osd, h.chunk)) {
                decision.rollback.push((h.osd, h.chunk, floor));
            }
        } else if h.version == floor {
            decision.holders.entry(h.chunk).or_default().push(h.osd);
            if !h.stable && !h.deleted {
                decision.stabilize.push((h.osd, h.chunk, floor));
            }
        }
    }
    // A chunk copy that is all older than the committed version but has unstable versions
    // (a write that reached it, then it left the set or missed later ones): drop those,
    // so that rebuilding or purging it finds only stable versions.
    let mut groups: BTreeMap<(u64, u32), Vec<&HeldChunk>> = BTreeMap::new();
    for h in held {
        groups.entry((h.osd, h.chunk)).or_default().push(h);
    }
    for ((osd, chunk), versions) in groups {
        let newest = versions.iter().map(|h| h.version).max().unwrap_or(0);
        if newest >= floor || versions.iter().all(|h| h.stable || h.deleted) {
            continue;
        }
        let stable = versions
            .iter()
            .filter(|h| h.stable || h.deleted)
            .map(|h| h.version)
            .max()
            .unwrap_or(0);
        decision.rollback.push((osd, chunk, stable));
    }
    for osds in decision.holders.values_mut() {
        osds.sort_unstable();
        osds.dedup();
    }
    decision.rollback.sort_unstable();
    decision.stabilize.sort_unstable();
    decision
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn held(osd: u64, chunk: u32, version: u64, stable: bool) -> HeldChunk {
        HeldChunk {
            osd,
            chunk,
            version,
            stable,
            deleted: false,
        }
    }

    #[test]
    fn a_write_on_fewer_than_k_chunks_is_rolled_back() {
        // 2+1: version 2 reached only chunk 0 before the primary died.
        let found = [
            held(1, 0, 1, true),
            held(1, 0, 2, false),
            held(2, 1, 1, true),
            held(3, 2, 1, true),
        ];
        let d = decide_stripe(&found, 2, 3);
        assert_eq!(
            d.committed,
            Some(Committed {
                version: 1,
                deleted: false
            })
        );
        assert_eq!(d.rollback, vec![(1, 0, 1)]);
        assert!(d.stabilize.is_empty() && !d.lost);
        assert_eq!(d.holders.len(), 3);
    }

    #[test]
    fn phase_one_on_k_chunks_is_committed_and_the_rest_rebuilt() {
        let found = [
            held(1, 0, 1, true),
            held(1, 0, 2, false),
            held(2, 1, 1, true),
            held(2, 1, 2, false),
            held(3, 2, 1, true),
        ];
        let d = decide_stripe(&found, 2, 3);
        assert_eq!(d.committed.map(|c| c.version), Some(2));
        assert_eq!(d.stabilize, vec![(1, 0, 2), (2, 1, 2)]);
        assert!(d.rollback.is_empty());
        // Chunk 2 lacks version 2: the caller rebuilds it.
        assert_eq!(d.holders.keys().copied().collect::<Vec<_>>(), vec![0, 1]);
    }

    #[test]
    fn a_version_stable_somewhere_is_committed_and_the_rest_rebuilt() {
        // Phase 2 began (chunk 0 is stable), then chunk 2's OSD lost its copy.
        let found = [
            held(1, 0, 1, true),
            held(1, 0, 2, true),
            held(2, 1, 2, false),
            held(3, 2, 1, true),
        ];
        let d = decide_stripe(&found, 2, 3);
        assert_eq!(d.committed.map(|c| c.version), Some(2));
        assert_eq!(d.stabilize, vec![(2, 1, 2)]);
        // Chunk 2 lacks version 2: the caller rebuilds it.
        assert_eq!(d.holders.keys().copied().collect::<Vec<_>>(), vec![0, 1]);
    }

    #[test]
    fn a_delete_that_reached_one_chunk_is_completed() {
        let mut found = vec![
            held(1, 0, 1, true),
            held(2, 1, 1, true),
            held(3, 2, 1, true),
        ];
        found.push(HeldChunk {
            deleted: true,
            ..held(1, 0, 2, true)
        });
        let d = decide_stripe(&found, 2, 3);
        assert_eq!(
            d.committed,
            Some(Committed {
                version: 2,
                deleted: true
            })
        );
        assert!(!d.lost && d.rollback.is_empty());
        assert_eq!(d.holders.keys().copied().collect::<Vec<_>>(), vec![0]);
    }

    #[test]
    fn a_stable_version_on_too_few_chunks_is_lost_data() {
        let found = [
            held(1, 0, 3, true),
            held(2, 1, 2, true),
            held(3, 2, 2, true),
        ];
        let d = decide_stripe(&found, 2, 3);
        assert!(d.lost);
        assert_eq!(d.committed.map(|c| c.version), Some(2));
    }

    /// A random history of stripe writes on `n` chunk OSDs (OSD i holds chunk i): each
    /// write reaches a random subset of chunks unstable (phase 1), and only if it reached
    /// all of them is it stabilized, on a random subset (phase 2, cut short by a crash) or
    /// on all (acknowledged). Whatever the crash point, the decision commits at least the
    /// last acknowledged version, never rolls back a stable version, and commits only a
    /// version at least `k` chunks hold.
    #[derive(Debug, Clone)]
    struct Write {
        reached: Vec<bool>,
        stabilized: Vec<bool>,
    }

    fn history() -> impl Strategy<Value = (usize, usize, Vec<Write>)> {
        (1usize..5, 1usize..4).prop_flat_map(|(k, m)| {
            let n = k + m;
            let write = (
                proptest::collection::vec(any::<bool>(), n),
                proptest::collection::vec(any::<bool>(), n),
            )
                .prop_map(|(reached, stabilized)| Write {
                    reached,
                    stabilized,
                });
            (Just(k), Just(n), proptest::collection::vec(write, 1..8))
        })
    }

    proptest! {
        #[test]
        fn acknowledged_versions_survive((k, n, writes) in history()) {
            let mut found: Vec<HeldChunk> = Vec::new();
            let mut acked = 0u64;
            for (i, write) in writes.iter().enumerate() {
                let version = i as u64 + 1;
                let reached = write.reached.iter().filter(|&&r| r).count();
                if reached == 0 {
                    continue;
                }
                let phase_one_done = reached == n;
                let all_stable = write.stabilized.iter().all(|&s| s);
                for chunk in 0..n {
                    if write.reached[chunk] {
                        found.push(HeldChunk {
                            osd: chunk as u64 + 1,
                            chunk: chunk as u32,
                            version,
                            stable: phase_one_done && write.stabilized[chunk],
                            deleted: false,
                        });
                    }
                }
                if phase_one_done && all_stable {
                    acked = version;
                } else {
                    break; // the primary crashed during this write
                }
            }
            let d = decide_stripe(&found, k, n);
            let committed = d.committed.map_or(0, |c| c.version);
            prop_assert!(committed >= acked, "committed {} < acked {}", committed, acked);
            prop_assert!(!d.lost);
            if let Some(c) = d.committed {
                let chunks: BTreeSet<u32> = found.iter().filter(|h| h.version == c.version).map(|h| h.chunk).collect();
                prop_assert!(chunks.len() >= k);
            }
            for &(osd, chunk, to) in &d.rollback {
                prop_assert!(to <= committed);
                prop_assert!(found.iter().filter(|h| h.osd == osd && h.chunk == chunk && h.version > to).all(|h| !h.stable));
            }
        }
    }
}
