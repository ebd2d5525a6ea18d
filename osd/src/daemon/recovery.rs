//! Copying the newest version of each object to the live members that lack it, while a PG
//! peers. A data version is read whole (from the primary or a member that has it) and
//! written stable at the same version; a tombstone is written as a delete at the same
//! version, so a member that missed a delete cannot bring the object back later. At most
//! `recovery_parallelism` objects of a PG are in flight.

use super::peering::Listed;
use super::{Osd, Waiter};
use crate::blockstore::{AlignedBuf, Disk, Op, OpError, OpOutput};
use crate::cluster::PgKey;
use vitastor_proto::errno;
use vitastor_proto::wire::request::{SecDelete, SecRw};
use vitastor_proto::wire::{Reply, RequestBody};
use vitastor_proto::ObjectId;

/// How long a member that ran out of space is left out of a PG's live set (ms).
pub(super) const FULL_RETRY_MS: u64 = 30_000;

/// What a recovery request was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RecoveryStep {
    Read,
    LocalWrite,
    LocalSync,
    PeerWrite,
}

/// One object to copy: its newest version lives on `source` and is missing on `targets`.
#[derive(Debug)]
pub(super) struct RecoveryItem {
    oid: ObjectId,
    version: u64,
    deleted: bool,
    source: u64,
    targets: Vec<u64>,
    pending: usize,
}

impl RecoveryItem {
    pub fn new(oid: ObjectId, newest: Listed, source: u64, targets: Vec<u64>) -> RecoveryItem {
        debug_assert!(!targets.is_empty(), "an item has somewhere to go");
        RecoveryItem {
            oid,
            version: newest.version,
            deleted: newest.deleted,
            source,
            targets,
            pending: 0,
        }
    }
}

impl<D: Disk> Osd<D> {
    pub(super) fn run_recovery(&mut self, key: PgKey) {
        let me = self.settings.osd_num;
        let parallelism = self.settings.recovery_parallelism.max(1);
        let block_size = self.store.block_size();
        loop {
            let Some(pg) = self.pgs.get_mut(&key) else {
                return;
            };
            let gen = pg.generation;
            let fence = pg.peering.as_ref().map_or(0, |p| p.fence);
            let Some(peering) = pg.peering.as_mut() else {
                return;
            };
            if peering.finished == peering.items.len() {
                self.write_history(key);
                return;
            }
            if peering.inflight >= parallelism || peering.next_item >= peering.items.len() {
                return;
            }
            let item_index = peering.next_item;
            peering.next_item += 1;
            peering.inflight += 1;
            let item = &peering.items[item_index];
            let (oid, version, source, deleted) =
                (item.oid, item.version, item.source, item.deleted);
            if deleted {
                self.copy_to_targets(key, gen, item_index, None);
                continue;
            }
            let waiter = Waiter::Recovery {
                pg: key,
                gen,
                item: item_index,
                step: RecoveryStep::Read,
            };
            if source == me {
                let op = Op::Read {
                    oid,
                    offset: 0,
                    len: block_size,
                };
                self.submit_store(op, waiter);
            } else {
                let rw = SecRw {
                    oid,
                    version,
                    offset: 0,
                    len: block_size,
                    attr_len: 0,
                    pg: key.1,
                    epoch: fence,
                };
                if !self.send_to_peer(source, RequestBody::SecRead(rw), &[], waiter) {
                    return self.retry_peering_later(key, "the recovery source disconnected");
                }
            }
        }
    }

    pub(super) fn recovery_local_done(
        &mut self,
        key: PgKey,
        gen: u64,
        item: usize,
        step: RecoveryStep,
        result: Result<OpOutput, OpError>,
    ) {
        match (step, result) {
            (RecoveryStep::Read, Ok(OpOutput::Read { data, .. })) => {
                self.copy_to_targets(key, gen, item, Some(data.to_vec()))
            }
            (RecoveryStep::LocalWrite, Ok(_)) if self.sync_every_write() => {
                let waiter = Waiter::Recovery {
                    pg: key,
                    gen,
                    item,
                    step: RecoveryStep::LocalSync,
                };
                self.submit_store(Op::Sync, waiter);
            }
            (_, Ok(_)) => self.recovery_write_done(key, gen, item),
            (_, Err(error)) => self.recovery_failed(key, gen, &error.message),
        }
    }

    pub(super) fn recovery_peer_done(
        &mut self,
        key: PgKey,
        gen: u64,
        (item, step): (usize, RecoveryStep),
        result: Result<(Reply, Vec<u8>), i32>,
        from: Option<u64>,
    ) {
        match (step, result) {
            (RecoveryStep::Read, Ok((reply, payload))) => {
                let attr_len = match reply.body {
                    vitastor_proto::wire::ReplyBody::SecRw { attr_len, .. } => attr_len as usize,
                    _ => 0,
                };
                let data = payload.get(attr_len..).unwrap_or_default().to_vec();
                self.copy_to_targets(key, gen, item, Some(data));
            }
            (_, Ok(_)) => self.recovery_write_done(key, gen, item),
            (RecoveryStep::PeerWrite, Err(errno::ENOSPC)) if from.is_some() => {
                self.member_is_full(key, gen, from.expect("checked"))
            }
            (_, Err(code)) => self.recovery_failed(key, gen, &format!("error {code}")),
        }
    }

    /// A member has no room for the copy: the PG peers again without it (as if it were
    /// down, so the history records it as absent) for [`FULL_RETRY_MS`], then tries it
    /// again.
    fn member_is_full(&mut self, key: PgKey, gen: u64, osd: u64) {
        if self.peering_mut(key, gen).is_none() {
            return;
        }
        let until = self.now_ms + FULL_RETRY_MS;
        if let Some(pg) = self.pgs.get_mut(&key) {
            pg.full_until.insert(osd, until);
        }
        self.retry_peering_later(key, &format!("OSD {osd} is out of space"));
    }

    fn recovery_failed(&mut self, key: PgKey, gen: u64, problem: &str) {
        if self.peering_mut(key, gen).is_none() {
            return;
        }
        self.retry_peering_later(key, &format!("recovery failed: {problem}"));
    }

    /// Writes the object's newest version (`data`, or a tombstone when `None`) to every
    /// target of the item.
    fn copy_to_targets(&mut self, key: PgKey, gen: u64, item_index: usize, data: Option<Vec<u8>>) {
        let me = self.settings.osd_num;
        let Some(peering) = self.peering_mut(key, gen) else {
            return;
        };
        let fence = peering.fence;
        let item = &mut peering.items[item_index];
        item.pending = item.targets.len();
        let (oid, version, targets) = (item.oid, item.version, item.targets.clone());
        for target in targets {
            let waiter = |step| Waiter::Recovery {
                pg: key,
                gen,
                item: item_index,
                step,
            };
            if target == me {
                let op = match &data {
                    Some(data) => Op::Write {
                        oid,
                        version,
                        offset: 0,
                        data: AlignedBuf::from_slice(data),
                        stable: true,
                    },
                    None => Op::Delete { oid, version },
                };
                self.submit_store(op, waiter(RecoveryStep::LocalWrite));
                continue;
            }
            let (body, payload): (RequestBody, &[u8]) = match &data {
                Some(data) => (
                    RequestBody::SecWriteStable(SecRw {
                        oid,
                        version,
                        offset: 0,
                        len: data.len() as u32,
                        attr_len: 0,
                        pg: key.1,
                        epoch: fence,
                    }),
                    data,
                ),
                None => (
                    RequestBody::SecDelete(SecDelete {
                        oid,
                        version,
                        purge: false,
                        pg: key.1,
                        epoch: fence,
                    }),
                    &[],
                ),
            };
            if !self.send_to_peer(target, body, payload, waiter(RecoveryStep::PeerWrite)) {
                return self.retry_peering_later(key, "a recovery target disconnected");
            }
        }
    }

    fn recovery_write_done(&mut self, key: PgKey, gen: u64, item_index: usize) {
        let Some(peering) = self.peering_mut(key, gen) else {
            return;
        };
        let item = &mut peering.items[item_index];
        item.pending -= 1;
        if item.pending > 0 {
            return;
        }
        peering.inflight -= 1;
        peering.finished += 1;
        self.counters.recovered_objects += 1;
        self.run_recovery(key);
    }
}
