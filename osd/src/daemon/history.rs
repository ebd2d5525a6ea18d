//! The rule that makes peering authoritative: which OSDs a primary must hear from before a
//! PG may serve I/O, and what `/pg/history/<pool>/<pg>` says afterwards. Pure functions,
//! tested below without any I/O.
//!
//! `/pg/history` (Vitastor's format) holds `osd_sets`: every set of OSDs that may hold
//! acknowledged writes the others lack, `all_peers`: every OSD that may hold any copy of
//! the PG's objects, and `epoch`: the last version epoch an activation used. A primary
//! writes its *live* set (the members that take this epoch's writes, `0` in the slots of
//! absent members) into `osd_sets` with a transaction conditioned on the history it read
//! and on holding the PG's `/pg/state` under its own lease, and accepts writes only after
//! etcd confirmed it. Every write of a replicated PG is acknowledged only when every live
//! member has it, so any ONE member of a recorded set knows every acknowledged write of
//! the epochs that set served.
//!
//! | situation when peering starts | the PG may activate when |
//! |---|---|
//! | no recorded set (a new PG, or history trimmed) | one member of the PG map's set is reachable (they all hold the same data) |
//! | recorded sets `S1..Sn` | for EVERY `Si`: at least one of its non-zero members is reachable and listed |
//! | a recorded set with no non-zero member | ignored (it never took writes) |
//! | any case | the reachable members of the PG map's set number at least `pg_minsize` and include the primary |
//! | otherwise | `incomplete`: I/O gets -EPIPE (retry), and peering runs again whenever a missing OSD connects |
//!
//! Activation happens as soon as peering decided the newest version of every object; the
//! copies to live members that lack some are made in the background (`recovery.rs`).
//! Until they are, the activation *adds* the live set to the sets recorded before (any of
//! them may hold what a live member lacks); a PG with nothing to copy records only its
//! live set. When the last copy is made, every live member holds everything every
//! recorded set held, and the primary *trims* `osd_sets` to the live set (same
//! conditions): history shrinks exactly when the data is on the set that is recorded. `all_peers` only grows (copies left on
//! OSDs outside the set are not removed yet), and tombstones are purged only while every
//! OSD in `all_peers` is a live member.

use std::collections::BTreeSet;
use vitastor_proto::etcd::PgHistory;

/// Why a PG cannot activate yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocker {
    /// No reachable member of a set that may hold the newest writes.
    SetUnreachable(Vec<u64>),
    /// Fewer than `pg_minsize` members of the PG's set reachable.
    BelowMinsize { live: usize, pg_minsize: u32 },
    /// The primary is not a member of the set it serves.
    PrimaryNotMember,
    /// What an EC PG still lacks to be served (`ec_peering.rs`).
    Ec(String),
}

impl std::fmt::Display for Blocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Blocker::SetUnreachable(set) => write!(
                f,
                "no OSD of {set:?} is reachable, and it may hold the newest writes"
            ),
            Blocker::BelowMinsize { live, pg_minsize } => {
                write!(f, "{live} members reachable, pg_minsize is {pg_minsize}")
            }
            Blocker::PrimaryNotMember => write!(f, "the primary is not in the PG's set"),
            Blocker::Ec(reason) => f.write_str(reason),
        }
    }
}

/// The sets peering must hear from (see the module table).
pub fn sets_to_check(osd_set: &[u64], history: &PgHistory) -> Vec<Vec<u64>> {
    let recorded: Vec<Vec<u64>> = history
        .osd_sets
        .iter()
        .filter(|set| set.iter().any(|&osd| osd != 0))
        .cloned()
        .collect();
    if recorded.is_empty() {
        vec![osd_set.to_vec()]
    } else {
        recorded
    }
}

/// Every OSD peering should list: members, recorded sets and `all_peers`.
pub fn peering_targets(osd_set: &[u64], history: &PgHistory) -> BTreeSet<u64> {
    let mut targets: BTreeSet<u64> = osd_set.iter().copied().collect();
    for set in &history.osd_sets {
        targets.extend(set.iter().copied());
    }
    targets.extend(history.all_peers.iter().copied());
    targets.remove(&0);
    targets
}

/// Decides whether a PG may activate with the OSDs in `reachable` (those whose listing
/// arrived, the primary included). On success returns the live set in slot order, `0`
/// for absent members.
pub fn decide_activation(
    osd_set: &[u64],
    history: &PgHistory,
    reachable: &BTreeSet<u64>,
    me: u64,
    pg_minsize: u32,
) -> Result<Vec<u64>, Blocker> {
    if !osd_set.contains(&me) {
        return Err(Blocker::PrimaryNotMember);
    }
    for set in sets_to_check(osd_set, history) {
        if !set.iter().any(|osd| *osd != 0 && reachable.contains(osd)) {
            return Err(Blocker::SetUnreachable(set));
        }
    }
    let live: Vec<u64> = osd_set
        .iter()
        .map(|&osd| {
            if osd != 0 && reachable.contains(&osd) {
                osd
            } else {
                0
            }
        })
        .collect();
    let count = live.iter().filter(|&&osd| osd != 0).count();
    if (count as u32) < pg_minsize {
        return Err(Blocker::BelowMinsize {
            live: count,
            pg_minsize,
        });
    }
    Ok(live)
}

/// [`decide_activation`] for an EC/XOR PG with `k` data chunks: an acknowledged write is
/// on every live member of the set that took it, and `k` of its chunks rebuild it, so
/// each recorded set needs `k` reachable members (all of them if it has fewer), and the
/// PG needs `max(pg_minsize, k)` reachable members of its own set.
pub fn decide_ec_activation(
    osd_set: &[u64],
    history: &PgHistory,
    reachable: &BTreeSet<u64>,
    me: u64,
    pg_minsize: u32,
    k: u32,
) -> Result<Vec<u64>, Blocker> {
    if !osd_set.contains(&me) {
        return Err(Blocker::PrimaryNotMember);
    }
    for set in sets_to_check(osd_set, history) {
        let members = set.iter().filter(|&&osd| osd != 0).count();
        let found = set
            .iter()
            .filter(|&&osd| osd != 0 && reachable.contains(&osd))
            .count();
        if found < members.min(k as usize) {
            return Err(Blocker::SetUnreachable(set));
        }
    }
    decide_activation(
        osd_set,
        &PgHistory::default(),
        reachable,
        me,
        pg_minsize.max(k),
    )
}

/// The history to record before a PG activated on `live` (after recovery) accepts writes.
pub fn activated_history(
    old: &PgHistory,
    osd_set: &[u64],
    live: &[u64],
    holders: &BTreeSet<u64>,
    epoch: u64,
    clean: bool,
) -> PgHistory {
    debug_assert!(epoch > old.epoch, "every activation starts a new epoch");
    let mut all_peers: BTreeSet<u64> = old.all_peers.iter().copied().collect();
    all_peers.extend(osd_set.iter().copied());
    all_peers.extend(holders.iter().copied());
    all_peers.remove(&0);
    // Until every live member holds everything, the sets that held it stay recorded.
    let mut osd_sets = if clean {
        Vec::new()
    } else {
        sets_to_check(osd_set, old)
    };
    if !osd_sets.iter().any(|set| set == live) {
        osd_sets.push(live.to_vec());
    }
    PgHistory {
        osd_sets,
        all_peers: all_peers.into_iter().collect(),
        epoch,
        // A scrub asked for is still asked for.
        next_scrub: old.next_scrub,
    }
}

/// Whether tombstones may be purged: every OSD that may hold a copy is a live member.
pub fn may_purge(history: &PgHistory, live: &[u64]) -> bool {
    history.all_peers.iter().all(|osd| live.contains(osd))
        && history
            .osd_sets
            .iter()
            .flatten()
            .all(|osd| *osd == 0 || live.contains(osd))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(sets: &[&[u64]], peers: &[u64]) -> PgHistory {
        PgHistory {
            osd_sets: sets.iter().map(|s| s.to_vec()).collect(),
            all_peers: peers.to_vec(),
            epoch: 3,
            next_scrub: None,
        }
    }

    fn up(osds: &[u64]) -> BTreeSet<u64> {
        osds.iter().copied().collect()
    }

    #[test]
    fn ec_sets_need_k_members_each() {
        let h = PgHistory {
            osd_sets: vec![vec![1, 2, 3]],
            ..PgHistory::default()
        };
        let up = |osds: &[u64]| osds.iter().copied().collect::<BTreeSet<u64>>();
        assert_eq!(
            decide_ec_activation(&[1, 2, 3], &h, &up(&[1, 3]), 1, 2, 2),
            Ok(vec![1, 0, 3])
        );
        assert!(decide_ec_activation(&[1, 4, 5], &h, &up(&[1, 4, 5]), 1, 2, 2).is_err());
        assert!(decide_ec_activation(&[1, 2, 3], &h, &up(&[1]), 1, 1, 2).is_err());
    }

    #[test]
    fn a_new_pg_needs_one_member_and_minsize() {
        let empty = PgHistory::default();
        assert_eq!(
            decide_activation(&[1, 2], &empty, &up(&[1]), 1, 1),
            Ok(vec![1, 0])
        );
        assert_eq!(
            decide_activation(&[1, 2], &empty, &up(&[1]), 1, 2),
            Err(Blocker::BelowMinsize {
                live: 1,
                pg_minsize: 2
            })
        );
        assert_eq!(
            decide_activation(&[1, 2], &empty, &up(&[3]), 3, 1),
            Err(Blocker::PrimaryNotMember)
        );
    }

    /// Defect 1 of the issue: OSD 1 alone took writes (set [1,0]); OSD 2 must not serve
    /// alone afterwards.
    #[test]
    fn the_set_that_took_the_last_writes_must_be_heard() {
        let h = history(&[&[1, 0]], &[1, 2]);
        assert_eq!(
            decide_activation(&[1, 2], &h, &up(&[2]), 2, 1),
            Err(Blocker::SetUnreachable(vec![1, 0]))
        );
        assert_eq!(
            decide_activation(&[1, 2], &h, &up(&[1, 2]), 2, 1),
            Ok(vec![1, 2])
        );
    }

    #[test]
    fn every_recorded_set_needs_a_member() {
        let h = history(&[&[1, 2, 0], &[0, 2, 3]], &[1, 2, 3]);
        // 2 covers both sets.
        assert!(decide_activation(&[1, 2, 3], &h, &up(&[2]), 2, 1).is_ok());
        // 1 covers only the first one.
        assert_eq!(
            decide_activation(&[1, 2, 3], &h, &up(&[1]), 1, 1),
            Err(Blocker::SetUnreachable(vec![0, 2, 3]))
        );
        // A set of only empty slots never took writes.
        let h = history(&[&[0, 0]], &[]);
        assert!(decide_activation(&[1, 2], &h, &up(&[1]), 1, 1).is_ok());
    }

    #[test]
    fn a_moved_pg_waits_for_its_old_set() {
        // The monitor moved the PG from [1,2] to [3,4] and recorded the old set.
        let h = history(&[&[1, 2]], &[1, 2]);
        assert!(decide_activation(&[3, 4], &h, &up(&[3, 4]), 3, 1).is_err());
        assert_eq!(
            decide_activation(&[3, 4], &h, &up(&[3, 4, 2]), 3, 1),
            Ok(vec![3, 4])
        );
        assert_eq!(
            peering_targets(&[3, 4], &h),
            [1, 2, 3, 4].into_iter().collect()
        );
    }

    #[test]
    fn activation_records_only_the_live_set_and_keeps_every_peer() {
        let old = history(&[&[1, 0], &[1, 2]], &[1, 2, 5]);
        let new = activated_history(&old, &[1, 2], &[1, 2], &up(&[7]), 9, true);
        assert_eq!(new.osd_sets, vec![vec![1, 2]]);
        assert_eq!(new.all_peers, vec![1, 2, 5, 7]);
        assert_eq!(new.epoch, 9);
        assert!(!may_purge(&new, &[1, 2]));
        let clean = activated_history(&history(&[], &[1, 2]), &[1, 2], &[1, 2], &up(&[]), 4, true);
        assert!(may_purge(&clean, &[1, 2]));
        assert!(!may_purge(&clean, &[1, 0]));
    }

    /// Background recovery: until the copies are made, the sets that held the data stay.
    #[test]
    fn activation_with_copies_left_keeps_the_old_sets() {
        let old = history(&[&[1, 0]], &[1, 2]);
        let new = activated_history(&old, &[1, 2], &[1, 2], &up(&[]), 5, false);
        assert_eq!(new.osd_sets, vec![vec![1, 0], vec![1, 2]]);
        // OSD 2 alone cannot serve: it may lack what only OSD 1 held.
        assert!(decide_activation(&[1, 2], &new, &up(&[2]), 2, 1).is_err());
        // Without a recorded set, the PG map's set is what held the data.
        let fresh = activated_history(
            &PgHistory::default(),
            &[1, 2, 3],
            &[1, 2, 0],
            &up(&[]),
            2,
            false,
        );
        assert_eq!(fresh.osd_sets, vec![vec![1, 2, 3], vec![1, 2, 0]]);
        // The same live set is recorded once.
        let again = activated_history(&new, &[1, 2], &[1, 2], &up(&[]), 6, false);
        assert_eq!(again.osd_sets, vec![vec![1, 0], vec![1, 2]]);
    }
}
