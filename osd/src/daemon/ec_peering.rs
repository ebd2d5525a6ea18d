//! Peering of an EC/XOR PG, after every listing is in: decide each stripe
//! (`ec_decide.rs`), settle what is half-written (roll back a write that did not reach
//! `k` chunks, stabilize one that did, complete a delete), then activate as a replicated
//! PG does (history first).
//!
//! Activation ([`history::decide_ec_activation`]): `k` reachable members of every set the
//! history records, and `max(pg_minsize, k)` reachable members of the PG's own set.
//! Members that lack chunks get them rebuilt in the background (`ec_rebuild.rs`; ops on
//! such a stripe wait for its rebuild); absent members are served around (reads rebuild
//! their data chunks, writes skip them).

use super::ec_decide::{decide_stripe, HeldChunk};
use super::ec_layout::EcLayout;
use super::ec_primary::EcInfo;
use super::history::{self, Blocker};
use super::peering::Listed;
use super::recovery::{CopyKind, RecoveryItem};
use super::{Osd, Waiter};
use crate::blockstore::{Disk, Op, OpError, OpOutput};
use crate::cluster::PgKey;
use crate::ec::{ErasureCode, Scheme};
use std::collections::BTreeMap;
use std::sync::Arc;
use vitastor_proto::etcd::PoolScheme;
use vitastor_proto::placement::EC_CHUNK_MASK;
use vitastor_proto::wire::request::SecDelete;
use vitastor_proto::wire::{encode_obj_versions, RequestBody};
use vitastor_proto::{ObjectId, ObjectVersion};

/// What one OSD must do before an EC PG activates.
#[derive(Debug, Default)]
struct Settle {
    rollback: Vec<ObjectVersion>,
    stabilize: Vec<ObjectVersion>,
    tombstones: Vec<ObjectVersion>,
}

impl<D: Disk> Osd<D> {
    /// The stripe geometry and codec of pool `pool`, made once per layout.
    pub(super) fn ec_info(
        &mut self,
        pool: u32,
        scheme: PoolScheme,
        k: u32,
        m: u32,
    ) -> Option<Arc<EcInfo>> {
        let layout = EcLayout {
            k,
            m,
            chunk_size: self.store.block_size(),
        };
        if let Some(info) = self.ec_codecs.get(&pool).filter(|i| i.layout == layout) {
            return Some(info.clone());
        }
        let scheme = match scheme {
            PoolScheme::Xor => Scheme::Xor,
            _ => Scheme::ReedSolomon,
        };
        match ErasureCode::new(scheme, k as usize, m as usize) {
            Ok(code) => {
                let info = Arc::new(EcInfo { layout, code });
                self.ec_codecs.insert(pool, info.clone());
                Some(info)
            }
            Err(error) => {
                tracing::error!(pool, k, m, "cannot serve this EC pool: {error}");
                None
            }
        }
    }

    /// Every listing of EC PG `key` is in: decide, settle, then write the history.
    pub(super) fn ec_plan(&mut self, key: PgKey) {
        let me = self.settings.osd_num;
        let Some(pg) = self.pgs.get_mut(&key) else {
            return;
        };
        let (Some(info), Some(peering)) = (pg.ec.clone(), pg.peering.as_mut()) else {
            return;
        };
        let n = info.layout.chunks() as usize;
        let k = info.layout.k as usize;
        let base_history = peering.based_on.clone().unwrap_or_default();
        let live = match history::decide_ec_activation(
            &pg.osd_set,
            &base_history,
            &peering.listed,
            me,
            pg.pg_minsize,
            info.layout.k,
        ) {
            Ok(live) if pg.osd_set.len() == n => live,
            Ok(_) => {
                let reason = format!("the PG's set has {} slots, its pool {n}", pg.osd_set.len());
                return self.mark_incomplete(key, &Blocker::Ec(reason));
            }
            Err(blocker) => return self.mark_incomplete(key, &blocker),
        };
        let mut settle: BTreeMap<u64, Settle> = BTreeMap::new();
        let mut plan = BTreeMap::new();
        let mut lost = 0usize;
        let mut misplaced = false;
        for (stripe, held) in &peering.ec_held {
            let decision = decide_stripe(held, k, n);
            if decision.lost {
                tracing::error!(pool = key.0, pg = key.1, %stripe, "EC stripe lost: a stable version is on fewer than k chunks");
                lost += 1;
                continue;
            }
            let item = |chunk: u32, version: u64| ObjectVersion {
                oid: ObjectId {
                    inode: stripe.inode,
                    stripe: stripe.stripe | u64::from(chunk),
                },
                version,
            };
            for &(osd, chunk, version) in &decision.rollback {
                settle
                    .entry(osd)
                    .or_default()
                    .rollback
                    .push(item(chunk, version));
            }
            for &(osd, chunk, version) in &decision.stabilize {
                settle
                    .entry(osd)
                    .or_default()
                    .stabilize
                    .push(item(chunk, version));
            }
            let Some(committed) = decision.committed else {
                continue;
            };
            if held.iter().any(|h| !pg.osd_set.contains(&h.osd)) {
                misplaced = true;
            }
            let mut targets = Vec::new();
            for (slot, &osd) in live.iter().enumerate() {
                let slot = slot as u32;
                let has = decision
                    .holders
                    .get(&slot)
                    .is_some_and(|osds| osds.contains(&osd));
                if osd == 0 || has {
                    continue;
                }
                if committed.deleted {
                    let tombstone = item(slot, committed.version);
                    settle.entry(osd).or_default().tombstones.push(tombstone);
                } else {
                    targets.push(osd);
                }
            }
            if targets.is_empty() {
                continue;
            }
            // Sources: a holder of each chunk at the committed version, the chunk's own
            // member first.
            let mut sources: Vec<(u32, u64)> = Vec::new();
            for (&chunk, osds) in &decision.holders {
                let own = pg.osd_set.get(chunk as usize).copied();
                let mut osds = osds.clone();
                osds.sort_by_key(|&osd| Some(osd) != own);
                sources.extend(osds.into_iter().map(|osd| (chunk, osd)));
            }
            let kind = if decision.holders.len() == n {
                CopyKind::Misplaced
            } else {
                CopyKind::Degraded
            };
            let newest = Listed {
                version: committed.version,
                deleted: false,
            };
            let mut recovery = RecoveryItem::new(newest, 0, targets, kind, true);
            recovery.ec_sources = sources;
            plan.insert(*stripe, recovery);
        }
        let count = live.iter().filter(|&&osd| osd != 0).count();
        if lost > 0 {
            let reason =
                format!("{lost} EC stripes are lost (a stable version on fewer than k chunks)");
            return self.mark_incomplete(key, &Blocker::Ec(reason));
        }
        if !plan.is_empty() {
            tracing::info!(
                pool = key.0,
                pg = key.1,
                stripes = plan.len(),
                "EC stripes to rebuild in the background once active"
            );
        }
        pg.live = live.iter().copied().filter(|&osd| osd != 0).collect();
        pg.degraded = count < n;
        pg.live_slots = live;
        peering.plan = plan;
        peering.misplaced_copies = misplaced;
        let (gen, epoch) = (pg.generation, peering.fence);
        let mut pending = 0;
        for (osd, work) in settle {
            let lists = [(false, work.stabilize), (true, work.rollback)];
            for (rollback, items) in lists.into_iter().filter(|(_, i)| !i.is_empty()) {
                if osd == me {
                    for item in items {
                        let (oid, version) = (item.oid, item.version);
                        let op = if rollback {
                            Op::Rollback { oid, version }
                        } else {
                            Op::Stabilize { oid, version }
                        };
                        self.submit_store(op, Waiter::EcSettle { pg: key, gen });
                        pending += 1;
                    }
                    continue;
                }
                for chunk in items.chunks(super::stabilize::MAX_STABILIZE_ITEMS) {
                    let payload = encode_obj_versions(chunk);
                    let len = payload.len() as u64;
                    let body = if rollback {
                        RequestBody::SecRollback {
                            len,
                            pg: key.1,
                            epoch,
                        }
                    } else {
                        RequestBody::SecStabilize {
                            len,
                            pg: key.1,
                            epoch,
                        }
                    };
                    let waiter = Waiter::EcSettle { pg: key, gen };
                    if !self.send_to_peer(osd, body, &payload, waiter) {
                        return self
                            .retry_peering_later(key, &format!("OSD {osd} left while settling"));
                    }
                    pending += 1;
                }
            }
            for item in work.tombstones {
                let (oid, version) = (item.oid, item.version);
                let waiter = Waiter::EcSettle { pg: key, gen };
                if osd == me {
                    self.submit_store(Op::Delete { oid, version }, waiter);
                } else {
                    let body = RequestBody::SecDelete(SecDelete {
                        oid,
                        version,
                        purge: false,
                        pg: key.1,
                        epoch,
                    });
                    if !self.send_to_peer(osd, body, &[], waiter) {
                        return self
                            .retry_peering_later(key, &format!("OSD {osd} left while settling"));
                    }
                }
                pending += 1;
            }
        }
        let Some(peering) = self.peering_mut(key, gen) else {
            return;
        };
        peering.ec_settling = pending;
        if pending == 0 {
            self.write_history(key);
        } else {
            tracing::info!(
                pool = key.0,
                pg = key.1,
                pending,
                "settling half-written EC stripes"
            );
        }
    }

    /// One settle action of the peering of `key` in generation `gen` finished.
    pub(super) fn ec_settle_done(&mut self, key: PgKey, gen: u64, result: Result<(), String>) {
        let Some(peering) = self.peering_mut(key, gen) else {
            return;
        };
        if let Err(problem) = result {
            return self
                .retry_peering_later(key, &format!("settling EC stripes failed: {problem}"));
        }
        peering.ec_settling -= 1;
        if peering.ec_settling == 0 {
            self.write_history(key);
        }
    }

    pub(super) fn ec_settle_local(
        &mut self,
        key: PgKey,
        gen: u64,
        result: Result<OpOutput, OpError>,
    ) {
        self.ec_settle_done(key, gen, result.map(|_| ()).map_err(|e| e.message));
    }
}

/// Records a listed chunk version for the EC decision.
pub(super) fn record_chunk(
    held: &mut BTreeMap<ObjectId, Vec<HeldChunk>>,
    oid: ObjectId,
    osd: u64,
    (version, stable, deleted): (u64, bool, bool),
) {
    let stripe = ObjectId {
        inode: oid.inode,
        stripe: oid.stripe & !EC_CHUNK_MASK,
    };
    held.entry(stripe).or_default().push(HeldChunk {
        osd,
        chunk: (oid.stripe & EC_CHUNK_MASK) as u32,
        version,
        stable,
        deleted,
    });
}
