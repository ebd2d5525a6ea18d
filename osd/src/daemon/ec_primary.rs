//! Client reads, writes and deletes on an active EC/XOR PG (this OSD is its primary).
//!
//! | op | steps |
//! |---|---|
//! | read | read each touched data chunk's part from its slot's OSD, assemble |
//! | write | read the old bytes of the data chunks over the write's in-chunk range (`ec_layout.rs`) where the write does not cover it, lay the new bytes over them, compute the parity of that range; phase 1: every live chunk OSD writes its chunk's range *unstable* at the new version; then the client is answered (any `k` members hold it now, so peering commits it) and phase 2 runs in the background: every chunk OSD stabilizes it |
//! | delete | a tombstone at the new version on every chunk OSD |
//!
//! The op holds its object's queue throughout (as in `primary.rs`), so a read sees the
//! stripe before or after a write, never a mix. Any failed part fails the op with -EPIPE
//! (the client retries) and the PG peers again: peering rolls back a write that did not
//! reach `k` chunks and commits one that did (`ec_decide.rs`), so no explicit SEC_ROLLBACK
//! is needed here.
//!
//! Degraded (a chunk OSD absent from the live set): a read that needs an absent data
//! chunk reads the same in-chunk range of `k` live chunks and rebuilds it; a write that
//! needs old bytes of an absent data chunk rebuilds them the same way; writes go to the
//! live chunk OSDs only.
//!
//! A read (or a write's read of old bytes) that meets a chunk whose checksums fail reads
//! around it the same way; a write then rewrites the bad chunk's range too, but a bad
//! sector outside it stays until a write covers it (the next read meets it and reads
//! around it again). Scrub and `fix` skip EC PGs.

use super::ec_layout::{ChunkPart, EcLayout};
use super::primary::ClientKind;
use super::scrub::{local_copy, peer_copy};
use super::{Osd, Waiter};
use crate::blockstore::{AlignedBuf, Disk, Op, OpError, OpOutput};
use crate::cluster::PgKey;
use crate::ec::{Chunk, ErasureCode};
use vitastor_proto::errno;
use vitastor_proto::wire::request::{SecDelete, SecRw};
use vitastor_proto::wire::{Reply, ReplyBody, RequestBody};
use vitastor_proto::ObjectId;
use vitastor_proto::ObjectVersion;

/// What an EC PG needs to serve I/O: its stripe geometry and its codec.
#[derive(Debug)]
pub(super) struct EcInfo {
    pub layout: EcLayout,
    pub code: ErasureCode,
}

/// Where an EC op is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading the client's range.
    Read,
    /// Reading a range of k live chunks to rebuild the client's range from.
    ReadDegraded,
    /// Reading old bytes of the write's range.
    ReadOld,
    /// Phase 1: unstable chunk writes (or the tombstones of a delete).
    Write,
    /// Phase 2: stabilizing.
    Stabilize,
}

/// The state of one EC client op (keyed like its [`super::primary::ClientOp`]).
#[derive(Debug)]
pub(super) struct EcOp {
    pg: PgKey,
    /// The stripe.
    oid: ObjectId,
    is_delete: bool,
    phase: Phase,
    /// Parts of the current phase not answered yet.
    pending: usize,
    failed: Option<i32>,
    /// Read: the client's bytes. Write: one buffer per chunk over `range`.
    bufs: Vec<Vec<u8>>,
    /// Read: the stripe's bitmap.
    bitmap: Vec<u8>,
    parts: Vec<ChunkPart>,
    /// In-chunk range every chunk is written over (or read, degraded).
    range: (u32, u32),
    version: u64,
    /// Chunks read to rebuild absent ones from (empty: nothing to rebuild).
    sources: Vec<u32>,
    /// Chunks whose checksums failed here: read around them.
    bad: Vec<u32>,
}

/// The object of chunk `chunk` of stripe `oid`.
fn chunk_oid(oid: ObjectId, chunk: u32) -> ObjectId {
    ObjectId {
        inode: oid.inode,
        stripe: oid.stripe | u64::from(chunk),
    }
}

impl<D: Disk> Osd<D> {
    /// The live chunk OSDs of op `key`'s PG in slot order (0 for absent ones), its epoch
    /// and EC info, if the PG is active with at least `k` of them.
    fn ec_members(&self, key: u64) -> Option<(Vec<u64>, u64, std::sync::Arc<EcInfo>)> {
        let pg = match self.client_ops.get(&key) {
            Some(op) => op.pg?,
            None => self.ec_ops.get(&key)?.pg, // a stabilize after the answer
        };
        let pg = self.pgs.get(&pg)?;
        let info = pg.ec.clone()?;
        let live = pg.live_slots.iter().filter(|&&osd| osd != 0).count();
        let serving = pg.base == super::PgBase::Active
            && pg.live_slots.len() == info.layout.chunks() as usize
            && live >= info.layout.k as usize;
        serving.then(|| (pg.live_slots.clone(), pg.epoch, info))
    }

    /// Reads `[start, end)` of the first `k` live chunks of op `key`, to rebuild absent
    /// data chunks from.
    fn ec_read_sources(&mut self, key: u64, members: &[u64], k: u32, (start, end): (u32, u32)) {
        let sources: Vec<u32> = (0..members.len() as u32)
            .filter(|&chunk| members[chunk as usize] != 0)
            .take(k as usize)
            .collect();
        let state = self.ec_ops.get_mut(&key).expect("invariant: a live EC op");
        state.sources = sources.clone();
        state.pending = sources.len();
        for chunk in sources {
            let osd = members[chunk as usize];
            self.ec_read_chunk(key, osd, chunk, start, end - start);
        }
    }

    /// Rebuilds the data chunks of `state` that were not read from the ones that were.
    fn ec_rebuild_data(info: &EcInfo, state: &mut EcOp) -> Result<(), i32> {
        let k = info.layout.k as usize;
        let mut chunks: Vec<Chunk<'_>> = state
            .bufs
            .iter_mut()
            .enumerate()
            .map(|(chunk, buf)| {
                if state.sources.contains(&(chunk as u32)) {
                    Chunk::Present(buf.as_slice())
                } else if chunk < k {
                    Chunk::Rebuild(buf.as_mut_slice())
                } else {
                    Chunk::Absent
                }
            })
            .collect();
        info.code.reconstruct(&mut chunks).map_err(|error| {
            tracing::error!("EC rebuild of a range failed: {error}");
            errno::EIO
        })
    }

    /// Sends the read of `[offset, offset + len)` of chunk `chunk` to `osd` (or the local
    /// store) for EC op `key`.
    fn ec_read_chunk(&mut self, key: u64, osd: u64, chunk: u32, offset: u32, len: u32) {
        let Some(op) = self.client_ops.get(&key) else {
            return;
        };
        let (pg, oid) = (op.pg.expect("invariant: EC ops have a PG"), op.oid);
        let oid = chunk_oid(oid, chunk);
        let waiter = Waiter::Ec {
            op: key,
            chunk,
            sync: false,
        };
        if osd == self.settings.osd_num {
            return self.submit_store(Op::Read { oid, offset, len }, waiter);
        }
        let epoch = self.pgs.get(&pg).map_or(0, |pg| pg.epoch);
        let rw = SecRw {
            oid,
            version: 0,
            offset,
            len,
            attr_len: 0,
            pg: pg.1,
            epoch,
        };
        if !self.send_to_peer(osd, RequestBody::SecRead(rw), &[], waiter) {
            self.ec_part_done(key, chunk, Err(errno::EPIPE));
        }
    }

    /// A client read of an EC PG that holds its object (or needs no queue).
    pub(super) fn ec_start_read(&mut self, key: u64) {
        let Some((members, _, info)) = self.ec_members(key) else {
            return self.fail_client_op(key, errno::EPIPE);
        };
        let op = &self.client_ops[&key];
        let (offset, len) = (op.offset, op.len);
        let parts = info.layout.parts(offset, len);
        let granularity = self.store.bitmap_granularity();
        let bitmap_bytes = (info.layout.stripe_size() / u64::from(granularity)).div_ceil(8);
        let mut state = EcOp {
            pg: op.pg.expect("invariant: EC ops have a PG"),
            oid: op.oid,
            is_delete: false,
            phase: Phase::Read,
            pending: parts.len(),
            failed: None,
            bufs: vec![vec![0; len as usize]],
            bitmap: vec![0; bitmap_bytes as usize],
            parts: parts.clone(),
            range: (0, 0),
            version: 0,
            sources: Vec::new(),
            bad: Vec::new(),
        };
        if parts.iter().any(|part| members[part.chunk as usize] == 0) {
            // A data chunk's OSD is absent: read the same range of k live chunks and
            // rebuild what is missing.
            let (start, end) = info.layout.write_range(offset, len);
            state.phase = Phase::ReadDegraded;
            state.range = (start, end);
            state.bufs = vec![vec![0; (end - start) as usize]; info.layout.chunks() as usize];
            self.ec_ops.insert(key, state);
            return self.ec_read_sources(key, &members, info.layout.k, (start, end));
        }
        self.ec_ops.insert(key, state);
        for part in parts {
            let osd = members[part.chunk as usize];
            self.ec_read_chunk(key, osd, part.chunk, part.offset, part.len);
        }
    }

    /// A write or delete of an EC PG that holds its object's queue.
    pub(super) fn ec_start_modify(&mut self, key: u64) {
        let me = self.settings.osd_num;
        let Some((members, epoch, info)) = self.ec_members(key) else {
            return self.fail_client_op(key, errno::EPIPE);
        };
        let Some(my_chunk) = members.iter().position(|&osd| osd == me) else {
            return self.fail_client_op(key, errno::EPIPE);
        };
        let op = &self.client_ops[&key];
        let current = self
            .store
            .object_version(&chunk_oid(op.oid, my_chunk as u32));
        if op.expected != 0 && op.expected != current + 1 {
            return self.fail_client_op(key, errno::EINTR);
        }
        let version = (current + 1).max(epoch << 16 | 1).max(op.min_version);
        let is_delete = matches!(op.kind, ClientKind::Delete);
        let (offset, len) = (op.offset, op.len);
        let mut state = EcOp {
            pg: op.pg.expect("invariant: EC ops have a PG"),
            oid: op.oid,
            is_delete,
            phase: Phase::ReadOld,
            pending: 0,
            failed: None,
            bufs: Vec::new(),
            bitmap: Vec::new(),
            parts: Vec::new(),
            range: (0, 0),
            version,
            sources: Vec::new(),
            bad: Vec::new(),
        };
        if is_delete {
            state.phase = Phase::Write;
            self.ec_ops.insert(key, state);
            return self.ec_send_phase(key);
        }
        let (start, end) = info.layout.write_range(offset, len);
        let width = (end - start) as usize;
        state.parts = info.layout.parts(offset, len);
        state.range = (start, end);
        state.bufs = vec![vec![0; width]; info.layout.chunks() as usize];
        // Data chunks whose part of the range the write does not cover: read them first.
        let k = info.layout.k;
        let old: Vec<u32> = (0..k)
            .filter(|&chunk| {
                !state
                    .parts
                    .iter()
                    .any(|p| p.chunk == chunk && p.offset == start && p.offset + p.len == end)
            })
            .collect();
        state.pending = old.len();
        let degraded = old.iter().any(|&chunk| members[chunk as usize] == 0);
        self.ec_ops.insert(key, state);
        if degraded {
            // Old bytes of an absent data chunk: rebuild every data chunk's range from k
            // live chunks.
            return self.ec_read_sources(key, &members, k, (start, end));
        }
        if old.is_empty() {
            return self.ec_encode_and_write(key);
        }
        for chunk in old {
            let osd = members[chunk as usize];
            self.ec_read_chunk(key, osd, chunk, start, end - start);
        }
    }

    /// The old bytes are in: lay the new ones over them, compute the parity, phase 1.
    fn ec_encode_and_write(&mut self, key: u64) {
        let Some((_, _, info)) = self.ec_members(key) else {
            return self.ec_fail(key, errno::EPIPE);
        };
        let Some(op) = self.client_ops.get(&key) else {
            return;
        };
        let ClientKind::Write { data } = &op.kind else {
            unreachable!("invariant: only writes read old bytes")
        };
        let state = self.ec_ops.get_mut(&key).expect("invariant: a live EC op");
        if !state.sources.is_empty() {
            if let Err(code) = Self::ec_rebuild_data(&info, state) {
                return self.ec_fail(key, code);
            }
        }
        let state = self.ec_ops.get_mut(&key).expect("invariant: a live EC op");
        let start = state.range.0;
        for part in &state.parts {
            let at = (part.offset - start) as usize;
            let from = part.buf_offset as usize;
            state.bufs[part.chunk as usize][at..at + part.len as usize]
                .copy_from_slice(&data[from..from + part.len as usize]);
        }
        let k = info.layout.k as usize;
        let (data_bufs, parity_bufs) = state.bufs.split_at_mut(k);
        let data_refs: Vec<&[u8]> = data_bufs.iter().map(Vec::as_slice).collect();
        let mut parity_refs: Vec<&mut [u8]> =
            parity_bufs.iter_mut().map(Vec::as_mut_slice).collect();
        info.code.encode(&data_refs, &mut parity_refs);
        state.phase = Phase::Write;
        self.ec_send_phase(key);
    }

    /// Sends the current phase's sub-op to every chunk OSD.
    fn ec_send_phase(&mut self, key: u64) {
        let me = self.settings.osd_num;
        let Some((members, epoch, _)) = self.ec_members(key) else {
            return self.ec_fail(key, errno::EPIPE);
        };
        let state = self.ec_ops.get_mut(&key).expect("invariant: a live EC op");
        let (pg, oid, is_delete) = (state.pg, state.oid, state.is_delete);
        state.pending = members.iter().filter(|&&osd| osd != 0).count();
        let (phase, version, (start, end)) = (state.phase, state.version, state.range);
        for (chunk, &osd) in members.iter().enumerate() {
            if osd == 0 {
                continue; // absent: its chunk is rebuilt later
            }
            let chunk = chunk as u32;
            let oid = chunk_oid(oid, chunk);
            let waiter = Waiter::Ec {
                op: key,
                chunk,
                sync: false,
            };
            let state = self.ec_ops.get_mut(&key).expect("invariant: a live EC op");
            let (local, body, payload) = match (phase, is_delete) {
                (Phase::Write, true) => (
                    Op::Delete { oid, version },
                    RequestBody::SecDelete(SecDelete {
                        oid,
                        version,
                        purge: false,
                        pg: pg.1,
                        epoch,
                    }),
                    Vec::new(),
                ),
                (Phase::Write, false) => {
                    let data = std::mem::take(&mut state.bufs[chunk as usize]);
                    let rw = SecRw {
                        oid,
                        version,
                        offset: start,
                        len: end - start,
                        attr_len: 0,
                        pg: pg.1,
                        epoch,
                    };
                    let local = Op::Write {
                        oid,
                        version,
                        offset: start,
                        data: AlignedBuf::from_slice(&data),
                        stable: false,
                    };
                    (local, RequestBody::SecWrite(rw), data)
                }
                (Phase::Stabilize, _) => {
                    let item = [ObjectVersion { oid, version }];
                    let payload = vitastor_proto::wire::encode_obj_versions(&item);
                    let len = payload.len() as u64;
                    let body = RequestBody::SecStabilize {
                        len,
                        pg: pg.1,
                        epoch,
                    };
                    (Op::Stabilize { oid, version }, body, payload)
                }
                _ => unreachable!("invariant: only phases that write are sent"),
            };
            if osd == me {
                self.submit_store(local, waiter);
            } else if !self.send_to_peer(osd, body, &payload, waiter) {
                self.ec_part_done(key, chunk, Err(errno::EPIPE));
            }
        }
    }

    /// A local part of EC op `key` finished (`sync`: the fsync after it).
    pub(super) fn ec_store_done(
        &mut self,
        key: u64,
        chunk: u32,
        sync: bool,
        result: Result<OpOutput, OpError>,
    ) {
        let Some(state) = self.ec_ops.get(&key) else {
            return;
        };
        // Phase 1 must be durable before the answer; a stabilize need not be (peering
        // commits a version k members hold either way).
        let writes = state.phase == Phase::Write;
        match result {
            Ok(_) if writes && !sync && self.sync_every_write() => {
                let waiter = Waiter::Ec {
                    op: key,
                    chunk,
                    sync: true,
                };
                self.submit_store(Op::Sync, waiter);
            }
            Ok(OpOutput::Version(_) | OpOutput::Done) => {
                self.ec_part_done(key, chunk, Ok((0, Vec::new(), Vec::new())))
            }
            Err(ref error) => {
                tracing::warn!(key, chunk, "EC part failed here: {}", error.message);
                self.ec_part_done(key, chunk, local_copy(result))
            }
            read => self.ec_part_done(key, chunk, local_copy(read)),
        }
    }

    /// A member answered a part of EC op `key`.
    pub(super) fn ec_peer_done(
        &mut self,
        key: u64,
        chunk: u32,
        result: Result<(Reply, Vec<u8>), i32>,
    ) {
        // Reads bring a copy; writes, stabilizes and deletes only their success.
        let part = match &result {
            Ok((reply, _)) if !matches!(reply.body, ReplyBody::SecRw { .. }) => {
                Ok((0, Vec::new(), Vec::new()))
            }
            _ => peer_copy(result),
        };
        self.ec_part_done(key, chunk, part);
    }

    /// One part of the current phase is done: (version, bitmap, data) for reads.
    fn ec_part_done(&mut self, key: u64, chunk: u32, result: Result<(u64, Vec<u8>, Vec<u8>), i32>) {
        let chunk_bitmap_bytes = {
            let granularity = self.store.bitmap_granularity();
            (self.store.block_size() / granularity).div_ceil(8) as usize
        };
        let Some(state) = self.ec_ops.get_mut(&key) else {
            return;
        };
        match result {
            Err(code) => {
                if code == errno::EDOM && !state.bad.contains(&chunk) {
                    state.bad.push(chunk); // its checksums failed: rebuild it instead
                }
                state.failed.get_or_insert(code);
            }
            Ok((version, bitmap, data)) => match state.phase {
                Phase::Read => {
                    let part = *state
                        .parts
                        .iter()
                        .find(|p| p.chunk == chunk)
                        .expect("invariant: a part was read per chunk");
                    if data.len() != part.len as usize {
                        state.failed.get_or_insert(errno::EIO);
                    } else {
                        let at = part.buf_offset as usize;
                        state.bufs[0][at..at + data.len()].copy_from_slice(&data);
                        let into = chunk as usize * chunk_bitmap_bytes;
                        let n = bitmap.len().min(chunk_bitmap_bytes);
                        if into + n <= state.bitmap.len() {
                            state.bitmap[into..into + n].copy_from_slice(&bitmap[..n]);
                        }
                        state.version = state.version.max(version);
                    }
                }
                Phase::ReadOld | Phase::ReadDegraded => {
                    let width = (state.range.1 - state.range.0) as usize;
                    if data.len() != width {
                        state.failed.get_or_insert(errno::EIO);
                    } else {
                        state.bufs[chunk as usize] = data;
                    }
                }
                Phase::Write | Phase::Stabilize => {}
            },
        }
        state.pending -= 1;
        if state.pending > 0 {
            return;
        }
        let (phase, failed) = (state.phase, state.failed);
        let reading = matches!(phase, Phase::Read | Phase::ReadDegraded | Phase::ReadOld);
        if failed == Some(errno::EDOM) && reading {
            return self.ec_read_around_bad_chunks(key);
        }
        if let Some(code) = failed {
            return self.ec_fail(key, code);
        }
        match phase {
            Phase::Read => {
                let state = self.ec_ops.remove(&key).expect("invariant: found above");
                let op = self.client_ops.get_mut(&key).expect("invariant: a live op");
                op.version = state.version;
                let data = AlignedBuf::from_slice(&state.bufs[0]);
                op.read = Some((state.bitmap, data));
                op.pending = 0;
                self.finish_client_op(key);
            }
            Phase::ReadOld => self.ec_encode_and_write(key),
            Phase::ReadDegraded => self.ec_finish_degraded_read(key),
            Phase::Write if !self.ec_is_delete(key) => {
                // Phase 1 is on every live member: whichever k members a later peering
                // hears hold it, so it is committed (`ec_decide.rs`). Answer now and
                // stabilize in the background (the object's next op may start meanwhile;
                // stabilizing this version does not touch a newer one).
                let state = self.ec_ops.get_mut(&key).expect("invariant: found above");
                state.phase = Phase::Stabilize;
                let version = state.version;
                if let Some(op) = self.client_ops.get_mut(&key) {
                    op.version = version;
                    op.pending = 0;
                    self.finish_client_op(key);
                }
                self.ec_send_phase(key);
            }
            Phase::Write => {
                let state = self.ec_ops.remove(&key).expect("invariant: found above");
                let op = self.client_ops.get_mut(&key).expect("invariant: a live op");
                op.version = state.version;
                op.pending = 0;
                self.finish_client_op(key);
            }
            Phase::Stabilize => {
                self.ec_ops.remove(&key);
            }
        }
    }

    /// The k chunks of a degraded read are in: rebuild the absent data chunks and
    /// answer with the client's range.
    fn ec_finish_degraded_read(&mut self, key: u64) {
        let Some((_, _, info)) = self.ec_members(key) else {
            return self.ec_fail(key, errno::EPIPE);
        };
        let mut state = self.ec_ops.remove(&key).expect("invariant: a live EC op");
        if let Err(code) = Self::ec_rebuild_data(&info, &mut state) {
            self.ec_ops.insert(key, state);
            return self.ec_fail(key, code);
        }
        let op = self.client_ops.get_mut(&key).expect("invariant: a live op");
        let mut out = vec![0; op.len as usize];
        let start = state.range.0;
        for part in &state.parts {
            let from = (part.offset - start) as usize;
            let at = part.buf_offset as usize;
            out[at..at + part.len as usize]
                .copy_from_slice(&state.bufs[part.chunk as usize][from..from + part.len as usize]);
        }
        op.version = state.version;
        op.read = Some((state.bitmap, AlignedBuf::from_slice(&out)));
        op.pending = 0;
        self.finish_client_op(key);
    }

    /// A read met chunks whose checksums fail (-EDOM): read the range again from `k`
    /// other chunks and rebuild it, as if their members were absent (never wrong data;
    /// -EDOM only when fewer than `k` good chunks are left).
    fn ec_read_around_bad_chunks(&mut self, key: u64) {
        let Some((mut members, _, info)) = self.ec_members(key) else {
            return self.ec_fail(key, errno::EPIPE);
        };
        let state = self.ec_ops.get_mut(&key).expect("invariant: a live EC op");
        for &chunk in &state.bad {
            members[chunk as usize] = 0;
        }
        if members.iter().filter(|&&osd| osd != 0).count() < info.layout.k as usize {
            tracing::error!(key, bad = ?state.bad, "EC read: too few chunks pass their checksums");
            self.ec_ops.remove(&key);
            return self.fail_client_op(key, errno::EDOM);
        }
        tracing::warn!(key, bad = ?state.bad, "EC read: chunks failed their checksums; rebuilding the range from the others");
        let op = &self.client_ops[&key];
        let (start, end) = info.layout.write_range(op.offset, op.len);
        state.failed = None;
        if state.phase != Phase::ReadOld {
            // A client read: its range is rebuilt; a write's old bytes keep their buffers
            // (the write then rewrites the bad chunk's range too).
            state.phase = Phase::ReadDegraded;
            state.range = (start, end);
            state.bufs = vec![vec![0; (end - start) as usize]; info.layout.chunks() as usize];
        }
        let range = state.range;
        self.ec_read_sources(key, &members, info.layout.k, range);
    }

    fn ec_is_delete(&self, key: u64) -> bool {
        self.ec_ops.get(&key).is_some_and(|state| state.is_delete)
    }

    /// Ends EC op `key` with an error; the PG peers again once its ops drained.
    fn ec_fail(&mut self, key: u64, code: i32) {
        let state = self.ec_ops.remove(&key);
        if let Some(state) = state.filter(|_| !self.client_ops.contains_key(&key)) {
            // A background stabilize failed: peering settles the stripe.
            tracing::warn!(pool = state.pg.0, pg = state.pg.1, oid = %state.oid, code, "EC stabilize failed; the PG peers again");
            if let Some(pg) = self.pgs.get_mut(&state.pg) {
                if pg.base == super::PgBase::Active {
                    pg.base = super::PgBase::Repeering;
                    if pg.inflight == 0 {
                        self.start_peering(state.pg);
                    }
                }
            }
            return;
        }
        if let Some(op) = self.client_ops.get_mut(&key) {
            tracing::warn!(key, code, "EC op failed; the PG peers again");
            op.peer_failed = true;
            op.error = Some(if code == errno::EDOM {
                errno::EPIPE
            } else {
                code
            });
            op.pending = 0;
        }
        self.finish_client_op(key);
    }
}
