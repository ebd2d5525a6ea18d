//! EC recovery and rebalance: a stripe whose chunk a live member lacks (it was down while
//! the stripe was written, or it is new in the PG's set) is rebuilt in the background like
//! a replicated copy (`recovery.rs`: the same queue, limits, progress and ops-wait-for-it
//! rule), but its data comes from `k` chunks: each whole chunk is read from a holder of the
//! committed version (members first, earlier holders outside the set too), the codec
//! rebuilds every lacking chunk, and each target is written its own chunk, whole and
//! stable, at the committed version.

use super::recovery::RecoveryStep;
use super::scrub::{local_copy, peer_copy};
use super::{Osd, Waiter};
use crate::blockstore::{AlignedBuf, Disk, Op, OpError, OpOutput};
use crate::cluster::PgKey;
use crate::ec::Chunk;
use std::collections::HashMap;
use vitastor_proto::wire::request::SecRw;
use vitastor_proto::wire::{Reply, RequestBody};
use vitastor_proto::ObjectId;

/// The chunks of one stripe being read for a rebuild.
#[derive(Debug)]
pub(super) struct Rebuild {
    /// Chunk -> its bytes once read (one buffer per chunk of the stripe).
    bufs: Vec<Option<Vec<u8>>>,
    /// The (chunk, OSD) pairs being read.
    from: Vec<(u32, u64)>,
    pending: usize,
    failed: Option<String>,
    /// Sources that failed (checksums, versions): not read again for this rebuild.
    bad: Vec<(u32, u64)>,
}

/// Rebuilds in progress, by PG and stripe.
pub(super) type Rebuilds = HashMap<(PgKey, ObjectId), Rebuild>;

fn chunk_oid(stripe: ObjectId, chunk: u32) -> ObjectId {
    ObjectId {
        inode: stripe.inode,
        stripe: stripe.stripe | u64::from(chunk),
    }
}

impl<D: Disk> Osd<D> {
    /// Starts the rebuild of running recovery item `oid` (a stripe) of EC PG `key`: reads
    /// `k` whole chunks from their holders.
    pub(super) fn ec_rebuild_read(&mut self, key: PgKey, gen: u64, oid: ObjectId) {
        let me = self.settings.osd_num;
        let block = self.store.block_size();
        let Some(pg) = self.pgs.get(&key) else {
            return;
        };
        let Some(info) = pg.ec.clone() else {
            return;
        };
        let epoch = pg.epoch;
        let Some(item) = self.running_item(key, gen, &oid) else {
            return;
        };
        let holders = item.ec_sources.clone();
        let k = info.layout.k as usize;
        // One holder per chunk, connected ones only; the first k chunks are read.
        let mut sources: Vec<(u32, u64)> = Vec::new();
        for (chunk, osd) in holders {
            let usable = osd == me || self.peers.contains_key(&osd);
            if usable && !sources.iter().any(|(c, _)| *c == chunk) {
                sources.push((chunk, osd));
            }
        }
        sources.truncate(k);
        if sources.len() < k {
            return self.recovery_failed(key, gen, "fewer than k chunk holders are connected");
        }
        let chunks = info.layout.chunks() as usize;
        self.ec_rebuilds.insert(
            (key, oid),
            Rebuild {
                bufs: vec![None; chunks],
                from: sources.clone(),
                pending: k,
                failed: None,
                bad: Vec::new(),
            },
        );
        for (chunk, osd) in sources {
            let waiter = Waiter::EcRebuild {
                pg: key,
                gen,
                oid,
                chunk,
            };
            let chunk_oid = chunk_oid(oid, chunk);
            if osd == me {
                let read = Op::Read {
                    oid: chunk_oid,
                    offset: 0,
                    len: block,
                };
                self.submit_store(read, waiter);
                continue;
            }
            let rw = SecRw {
                oid: chunk_oid,
                version: 0,
                offset: 0,
                len: block,
                attr_len: 0,
                pg: key.1,
                epoch,
            };
            if !self.send_to_peer(osd, RequestBody::SecRead(rw), &[], waiter) {
                self.ec_rebuild_chunk(key, gen, oid, chunk, Err("a holder disconnected".into()));
            }
        }
    }

    pub(super) fn ec_rebuild_local(
        &mut self,
        (key, gen, oid, chunk): (PgKey, u64, ObjectId, u32),
        result: Result<OpOutput, OpError>,
    ) {
        let read = local_copy(result)
            .map(|(version, _, data)| (version, data))
            .map_err(|code| format!("error {code}"));
        self.ec_rebuild_chunk(key, gen, oid, chunk, read);
    }

    pub(super) fn ec_rebuild_peer(
        &mut self,
        (key, gen, oid, chunk): (PgKey, u64, ObjectId, u32),
        result: Result<(Reply, Vec<u8>), i32>,
    ) {
        let read = peer_copy(result)
            .map(|(version, _, data)| (version, data))
            .map_err(|code| format!("error {code}"));
        self.ec_rebuild_chunk(key, gen, oid, chunk, read);
    }

    /// One source chunk arrived (its version and bytes); the last one rebuilds and writes.
    fn ec_rebuild_chunk(
        &mut self,
        key: PgKey,
        gen: u64,
        oid: ObjectId,
        chunk: u32,
        read: Result<(u64, Vec<u8>), String>,
    ) {
        let block = self.store.block_size() as usize;
        let wanted = self.running_item(key, gen, &oid).map(|item| item.version);
        let Some(rebuild) = self.ec_rebuilds.get_mut(&(key, oid)) else {
            return;
        };
        match read {
            Ok((version, data)) if Some(version) == wanted && data.len() == block => {
                rebuild.bufs[chunk as usize] = Some(data);
            }
            Ok((version, data)) => {
                rebuild.failed.get_or_insert(format!(
                    "chunk {chunk} read at version {version:#x} ({} bytes), wanted {wanted:#x?}",
                    data.len()
                ));
                let source = rebuild.from.iter().find(|(c, _)| *c == chunk).copied();
                rebuild.bad.extend(source);
            }
            Err(problem) => {
                rebuild.failed.get_or_insert(problem);
                let source = rebuild.from.iter().find(|(c, _)| *c == chunk).copied();
                rebuild.bad.extend(source);
            }
        }
        rebuild.pending -= 1;
        if rebuild.pending > 0 {
            return;
        }
        let rebuild = self
            .ec_rebuilds
            .remove(&(key, oid))
            .expect("invariant: found above");
        if let Some(problem) = rebuild.failed {
            // Read the other holders instead (a damaged chunk would fail every time);
            // too few left: the PG peers again.
            let Some(item) = self.running_item(key, gen, &oid) else {
                return;
            };
            item.ec_sources
                .retain(|source| !rebuild.bad.contains(source));
            tracing::warn!(pool = key.0, pg = key.1, %oid, bad = ?rebuild.bad, "EC rebuild: a source failed ({problem}); trying others");
            return self.ec_rebuild_read(key, gen, oid);
        }
        self.ec_rebuild_write(key, gen, oid, rebuild.bufs);
    }

    /// Rebuilds the targets' chunks and writes each to its target.
    fn ec_rebuild_write(
        &mut self,
        key: PgKey,
        gen: u64,
        oid: ObjectId,
        bufs: Vec<Option<Vec<u8>>>,
    ) {
        let me = self.settings.osd_num;
        let block = self.store.block_size() as usize;
        let Some(pg) = self.pgs.get(&key) else {
            return;
        };
        let (Some(info), osd_set, epoch) = (pg.ec.clone(), pg.osd_set.clone(), pg.epoch) else {
            return;
        };
        let Some(item) = self.running_item(key, gen, &oid) else {
            return;
        };
        let version = item.version;
        // Target OSD -> its slot's chunk.
        let targets: Vec<(u64, u32)> = item
            .targets
            .iter()
            .filter_map(|&osd| {
                let slot = osd_set.iter().position(|&o| o == osd)?;
                Some((osd, slot as u32))
            })
            .collect();
        debug_assert_eq!(targets.len(), item.targets.len(), "targets are members");
        let mut rebuilt: Vec<Vec<u8>> = vec![vec![0; block]; bufs.len()];
        {
            let mut chunks: Vec<Chunk<'_>> = bufs
                .iter()
                .zip(rebuilt.iter_mut())
                .enumerate()
                .map(|(chunk, (read, out))| match read {
                    Some(data) => Chunk::Present(data.as_slice()),
                    None if targets.iter().any(|(_, c)| *c as usize == chunk) => {
                        Chunk::Rebuild(out.as_mut_slice())
                    }
                    None => Chunk::Absent,
                })
                .collect();
            if let Err(error) = info.code.reconstruct(&mut chunks) {
                return self.recovery_failed(key, gen, &format!("rebuild failed: {error}"));
            }
        }
        item.pending = targets.len();
        item.bytes = (targets.len() * block) as u64;
        for (target, chunk) in targets {
            // A chunk read from another holder (its old member, after a set change) is
            // copied as it is; the others were rebuilt.
            let data = match &bufs[chunk as usize] {
                Some(read) => read.clone(),
                None => std::mem::take(&mut rebuilt[chunk as usize]),
            };
            let chunk_oid = chunk_oid(oid, chunk);
            let waiter = |step| Waiter::Recovery {
                pg: key,
                gen,
                oid,
                step,
            };
            if target == me {
                let op = Op::Write {
                    oid: chunk_oid,
                    version,
                    offset: 0,
                    data: AlignedBuf::from_slice(&data),
                    stable: true,
                };
                self.submit_store(op, waiter(RecoveryStep::LocalWrite));
                continue;
            }
            let rw = SecRw {
                oid: chunk_oid,
                version,
                offset: 0,
                len: block as u32,
                attr_len: 0,
                pg: key.1,
                epoch,
            };
            let body = RequestBody::SecWriteStable(rw);
            if !self.send_to_peer(target, body, &data, waiter(RecoveryStep::PeerWrite)) {
                return self.recovery_failed(key, gen, "a rebuild target disconnected");
            }
        }
    }
}
