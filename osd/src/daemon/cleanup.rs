//! Rebalance, last step: OSDs that hold copies of a PG's objects but are no longer in its
//! set drop them, and leave `all_peers`.
//!
//! Runs once the PG is clean (every live member holds the newest version of every object
//! and `/pg/history` names only the live set), so nothing those OSDs hold is needed any
//! more. For each such OSD that peering listed, every object it listed is purged there at
//! the listed version (the blockstore forgets the object only if that is still its newest
//! version, data or tombstone, and frees its blocks). When every purge of an OSD succeeded
//! it is removed from `all_peers` with a conditional history write, like every history
//! change. An OSD that could not be reached or failed a purge stays in `all_peers`: the
//! PG peers again [`CLEANUP_RETRY_MS`] later, lists it again and retries (a copy left
//! behind costs space, never data).

use super::pg::HistoryWrite;
use super::{Osd, Waiter};
use crate::blockstore::Disk;
use crate::cluster::PgKey;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use vitastor_proto::etcd::PgHistory;
use vitastor_proto::wire::RequestBody;
use vitastor_proto::ObjectId;

/// When a cleanup could not drop every copy, the PG peers again this much later (ms):
/// that lists those OSDs again and retries.
const CLEANUP_RETRY_MS: u64 = 5_000;

/// Copies to drop on OSDs outside the set, and how far that got.
#[derive(Debug, Default)]
pub(super) struct Cleanup {
    /// (OSD, object, version listed there) not sent yet.
    pub queue: VecDeque<(u64, ObjectId, u64)>,
    /// OSD -> purges not answered yet (sent or queued).
    pub left: BTreeMap<u64, usize>,
    /// OSDs where a purge failed or could not be sent.
    pub failed: BTreeSet<u64>,
    /// OSDs whose purges were all answered, waiting for their SYNC (a purge is answered
    /// before it is durable; an OSD leaves all_peers only once its purges are).
    pub syncing: BTreeSet<u64>,
    /// OSDs whose purges are durable.
    pub synced: BTreeSet<u64>,
}

impl Cleanup {
    /// `foreign`: OSD -> the objects (and versions) it listed, for the OSDs to clean.
    pub fn new(foreign: BTreeMap<u64, Vec<(ObjectId, u64)>>) -> Cleanup {
        let mut cleanup = Cleanup::default();
        for (osd, objects) in foreign {
            cleanup.left.insert(osd, objects.len());
            for (oid, version) in objects {
                cleanup.queue.push_back((osd, oid, version));
            }
        }
        cleanup
    }

    fn finished(&self) -> bool {
        self.left.values().all(|&left| left == 0)
    }
}

impl<D: Disk> Osd<D> {
    /// Starts dropping the copies outside the set (called when the PG became clean).
    pub(super) fn start_cleanup(
        &mut self,
        key: PgKey,
        foreign: BTreeMap<u64, Vec<(ObjectId, u64)>>,
    ) {
        if foreign.is_empty() {
            return;
        }
        let Some(pg) = self.pgs.get_mut(&key) else {
            return;
        };
        let objects: usize = foreign.values().map(Vec::len).sum();
        tracing::info!(
            pool = key.0,
            pg = key.1,
            osds = ?foreign.keys().collect::<Vec<_>>(),
            objects,
            "dropping copies on OSDs outside the PG's set"
        );
        pg.cleanup = Some(Cleanup::new(foreign));
        self.cleanup_progress(key);
        self.pump_purges();
    }

    /// Sends one queued cleanup purge of some PG; `false` when none is queued.
    pub(super) fn send_cleanup_purge(&mut self) -> bool {
        let Some((&key, pg)) = self.pgs.iter_mut().find(|(_, pg)| {
            pg.base == super::PgBase::Active
                && pg.cleanup.as_ref().is_some_and(|c| !c.queue.is_empty())
        }) else {
            return false;
        };
        let (gen, epoch) = (pg.generation, pg.epoch);
        let cleanup = pg.cleanup.as_mut().expect("invariant: found above");
        let (osd, oid, version) = cleanup.queue.pop_front().expect("invariant: not empty");
        let body = super::peering::purge_request(key, oid, version, epoch);
        let waiter = Waiter::Cleanup { pg: key, gen, osd };
        if self.send_to_peer(osd, body, &[], waiter) {
            self.purges_inflight += 1;
        } else {
            self.cleanup_purge_done(key, gen, osd, false);
        }
        true
    }

    /// The PG's cleanup, if it still belongs to peering generation `gen` (answers to an
    /// earlier one are ignored).
    fn current_cleanup(&mut self, key: PgKey, gen: u64) -> Option<&mut Cleanup> {
        let pg = self.pgs.get_mut(&key)?;
        if pg.generation != gen {
            return None;
        }
        pg.cleanup.as_mut()
    }

    /// A cleanup purge on `osd` finished (`ok` = the OSD answered without an error).
    pub(super) fn cleanup_purge_done(&mut self, key: PgKey, gen: u64, osd: u64, ok: bool) {
        let Some(cleanup) = self.current_cleanup(key, gen) else {
            return;
        };
        if !ok && cleanup.failed.insert(osd) {
            tracing::warn!(
                pool = key.0,
                pg = key.1,
                osd,
                "could not drop copies there; it stays in the PG's all_peers"
            );
        }
        let left = cleanup
            .left
            .get_mut(&osd)
            .expect("invariant: a cleaned OSD");
        *left -= 1;
        self.cleanup_progress(key);
    }

    /// The SYNC after an OSD's purges finished (`ok`: they are durable there).
    pub(super) fn cleanup_sync_done(&mut self, key: PgKey, gen: u64, osd: u64, ok: bool) {
        let Some(cleanup) = self.current_cleanup(key, gen) else {
            return;
        };
        cleanup.syncing.remove(&osd);
        if ok {
            cleanup.synced.insert(osd);
        } else {
            cleanup.failed.insert(osd);
        }
        self.cleanup_progress(key);
    }

    /// When every purge was answered and made durable: remove the cleaned OSDs from
    /// `all_peers`.
    fn cleanup_progress(&mut self, key: PgKey) {
        let now = self.now_ms;
        let Some(pg) = self.pgs.get_mut(&key) else {
            return;
        };
        let current = pg.seen_history.clone().unwrap_or_default();
        let Some(cleanup) = pg.cleanup.as_ref() else {
            return;
        };
        if !cleanup.finished() || pg.history_write.is_some() {
            return;
        }
        // Every purge answered: make them durable on each OSD that took them all.
        let gen = pg.generation;
        let to_sync: Vec<u64> = cleanup
            .left
            .keys()
            .filter(|osd| {
                !cleanup.failed.contains(osd)
                    && !cleanup.syncing.contains(osd)
                    && !cleanup.synced.contains(osd)
            })
            .copied()
            .collect();
        if !to_sync.is_empty() || !cleanup.syncing.is_empty() {
            for osd in to_sync {
                let waiter = Waiter::CleanupSync { pg: key, gen, osd };
                let sent = self.send_to_peer(osd, RequestBody::SecSync, &[], waiter);
                let Some(cleanup) = self.pgs.get_mut(&key).and_then(|pg| pg.cleanup.as_mut())
                else {
                    return;
                };
                if sent {
                    cleanup.syncing.insert(osd);
                } else {
                    cleanup.failed.insert(osd);
                }
            }
            let pending = self
                .pgs
                .get(&key)
                .and_then(|pg| pg.cleanup.as_ref())
                .is_some_and(|c| !c.syncing.is_empty());
            if pending {
                return;
            }
            return self.cleanup_progress(key);
        }
        let cleaned: BTreeSet<u64> = cleanup.synced.clone();
        if !cleanup.failed.is_empty() {
            // Those OSDs are listed again (and cleaned) by a peering a little later.
            pg.cleanup_retry_at_ms = Some(now + CLEANUP_RETRY_MS);
        }
        let new = PgHistory {
            all_peers: current
                .all_peers
                .iter()
                .copied()
                .filter(|osd| !cleaned.contains(osd))
                .collect(),
            ..current.clone()
        };
        if cleaned.is_empty() || new == current {
            pg.cleanup = None;
            return;
        }
        debug_assert!(
            new.all_peers
                .iter()
                .all(|osd| current.all_peers.contains(osd)),
            "cleanup only removes peers"
        );
        self.put_history(
            key,
            HistoryWrite::ForgetPeers(new.clone()),
            Some(&current),
            &new,
        );
    }

    /// etcd took the history without the cleaned OSDs: the PG has no misplaced copies.
    pub(super) fn peers_forgotten(&mut self, key: PgKey, history: PgHistory) {
        let Some(pg) = self.pgs.get_mut(&key) else {
            return;
        };
        let failed = pg.cleanup.take().is_some_and(|c| !c.failed.is_empty());
        pg.has_misplaced = failed;
        pg.seen_history = Some(history.clone());
        tracing::info!(
            pool = key.0,
            pg = key.1,
            all_peers = ?history.all_peers,
            "copies outside the set dropped"
        );
        self.view.pg_history.insert(key, history);
        self.publish_state(key);
    }
}
