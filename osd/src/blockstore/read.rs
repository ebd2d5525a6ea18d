//! Reads: find, for every requested sector, the newest completed version that wrote it
//! (journal mirror, a redirected block, or the clean block), read the disk parts straight
//! into the result buffer and check every sector's crc32c.
//!
//! A checksum mismatch is -EDOM, never data, and puts the object in the damaged set (the
//! OSD then serves the read from a peer and repairs the object). Journaled data is checked
//! too: replay keeps a corrupted small write with its checksums. Because the flusher may
//! rewrite a block in place while a read is in flight, a mismatch seen after such a change
//! (`mutation_gen` moved) is first retried with a fresh plan. An object that lost a
//! journal entry fails every read: what it returns could be a stale version.

use super::aligned::AlignedBuf;
use super::bitmap;
use super::damage::DamageReason;
use super::dirty::DirtyKind;
use super::disk::{Disk, IoKind};
use super::error::OpError;
use super::layout::SECTOR;
use super::meta_format::{self, MetaSlot};
use super::store::{Blockstore, OpOutput, OpState, Owner};
use vitastor_proto::{errno, ObjectId};

const MAX_READ_RETRIES: u32 = 8;

/// Where one requested sector comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Zero,
    Mirror {
        pos: u64,
        csum: u32,
    },
    /// Sector `sector` of data block `block`; `csum` is `None` when it must come from the
    /// block's metadata slot.
    Block {
        block: u32,
        sector: u32,
        csum: Option<u32>,
    },
}

pub(super) struct ReadOp {
    oid: ObjectId,
    offset: u32,
    len: u32,
    out: AlignedBuf,
    plan: Vec<Source>,
    meta_slots: Vec<(u32, AlignedBuf)>,
    version: u64,
    bitmap: Vec<u8>,
    plan_gen: u64,
    retries: u32,
}

impl ReadOp {
    pub fn new(oid: ObjectId, offset: u32, len: u32) -> ReadOp {
        ReadOp {
            oid,
            offset,
            len,
            out: AlignedBuf::new(0),
            plan: Vec::new(),
            meta_slots: Vec::new(),
            version: 0,
            bitmap: Vec::new(),
            plan_gen: 0,
            retries: 0,
        }
    }
}

impl<D: Disk> Blockstore<D> {
    pub(super) fn start_read(&mut self, index: usize) {
        let OpState::Read(op) = &self.slot_mut(index).state else {
            unreachable!("invariant: read op")
        };
        let (offset, len) = (op.offset, op.len);
        if let Err(error) = self.check_range("read", offset, len) {
            return self.complete(index, Err(error));
        }
        self.stats.reads += 1;
        let OpState::Read(op) = &self.slot_mut(index).state else {
            unreachable!("invariant: read op")
        };
        let oid = op.oid;
        if let Some(reason) = self.unreadable(&oid) {
            let message = match reason {
                DamageReason::Condemned => {
                    format!("{oid}: this copy was marked bad by `fix`; a repair rewrites it")
                }
                _ => format!(
                    "{oid} lost a journal entry to corruption; it must be recovered from a peer"
                ),
            };
            return self.complete(index, Err(OpError::new(errno::EDOM, message)));
        }
        self.plan_and_submit_read(index);
    }

    /// Builds the per-sector plan for the op's range from the current state.
    fn plan_read(&self, oid: &ObjectId, offset: u32, len: u32) -> (u64, Vec<u8>, Vec<Source>) {
        let granularity = self.sb.bitmap_granularity;
        let sectors = self.sb.sectors_per_block();
        let first = offset / granularity;
        let count = len / granularity;
        let mut plan: Vec<Option<Source>> = vec![None; count as usize];
        let mut bitmap = vec![0u8; bitmap::bitmap_bytes(sectors)];
        let mut version = 0;
        let mut reached_base = false;
        let resolve = |plan: &mut Vec<Option<Source>>, sector: u32, source: Source| {
            if sector >= first && sector < first + count {
                let slot = &mut plan[(sector - first) as usize];
                if slot.is_none() {
                    *slot = Some(source);
                }
            }
        };
        if let Some(chain) = self.dirty.get(oid) {
            for entry in chain.iter().rev().filter(|e| e.written) {
                if version == 0 {
                    version = entry.version;
                }
                match &entry.kind {
                    DirtyKind::Small {
                        offset,
                        len,
                        data_pos,
                        csums,
                    } => {
                        let (start, n) = (offset / granularity, len / granularity);
                        bitmap::set_range(&mut bitmap, start, n);
                        for i in 0..n {
                            let pos = data_pos + u64::from(i) * u64::from(granularity);
                            let csum = csums[i as usize];
                            resolve(&mut plan, start + i, Source::Mirror { pos, csum });
                        }
                    }
                    DirtyKind::Big {
                        block,
                        offset,
                        len,
                        csums,
                    } => {
                        let (start, n) = (offset / granularity, len / granularity);
                        bitmap::set_range(&mut bitmap, start, n);
                        for i in 0..n {
                            let source = Source::Block {
                                block: *block,
                                sector: start + i,
                                csum: Some(csums[i as usize]),
                            };
                            resolve(&mut plan, start + i, source);
                        }
                        reached_base = true;
                        break;
                    }
                    DirtyKind::Delete => {
                        reached_base = true;
                        break;
                    }
                }
            }
        }
        if !reached_base {
            if let Some(clean) = self.clean.get(oid) {
                if version == 0 {
                    version = clean.version;
                }
                bitmap::union(&mut bitmap, clean.bitmap);
                for sector in first..first + count {
                    if bitmap::get(clean.bitmap, sector) {
                        let csum = clean.csums.map(|c| c[sector as usize]);
                        resolve(
                            &mut plan,
                            sector,
                            Source::Block {
                                block: clean.block,
                                sector,
                                csum,
                            },
                        );
                    }
                }
            }
        }
        let plan = plan
            .into_iter()
            .map(|s| s.unwrap_or(Source::Zero))
            .collect();
        (version, bitmap, plan)
    }

    fn plan_and_submit_read(&mut self, index: usize) {
        let OpState::Read(op) = &self.slot_mut(index).state else {
            unreachable!("invariant: read op")
        };
        let (oid, offset, len) = (op.oid, op.offset, op.len);
        let (version, bitmap, plan) = self.plan_read(&oid, offset, len);
        let granularity = self.sb.bitmap_granularity as usize;
        let mut out = AlignedBuf::new(len as usize);
        let mut disk_runs: Vec<(u64, usize, usize)> = Vec::new();
        let mut meta_blocks: Vec<u32> = Vec::new();
        let mut bad_mirror = None;
        for (i, source) in plan.iter().enumerate() {
            match *source {
                Source::Zero => {}
                Source::Mirror { pos, csum } => {
                    let piece = &mut out[i * granularity..(i + 1) * granularity];
                    piece.copy_from_slice(self.journal.slice(pos, granularity as u64));
                    if bad_mirror.is_none() && crc32c::crc32c(piece) != csum {
                        bad_mirror = Some((pos, csum));
                    }
                }
                Source::Block {
                    block,
                    sector,
                    csum,
                } => {
                    let disk_offset =
                        self.sb.block_offset(block) + sector as u64 * granularity as u64;
                    match disk_runs.last_mut() {
                        Some((run_offset, run_start, run_len))
                            if *run_offset + *run_len as u64 == disk_offset
                                && *run_start + *run_len == i * granularity =>
                        {
                            *run_len += granularity;
                        }
                        _ => disk_runs.push((disk_offset, i * granularity, granularity)),
                    }
                    if csum.is_none() && !meta_blocks.contains(&block) {
                        meta_blocks.push(block);
                    }
                }
            }
        }
        let mut meta_slots: Vec<(u32, AlignedBuf)> = meta_blocks
            .iter()
            .map(|b| (*b, AlignedBuf::new(SECTOR as usize)))
            .collect();
        let out_ptr = out.as_mut_ptr();
        let meta_ptrs: Vec<(u64, *mut u8)> = meta_slots
            .iter_mut()
            .map(|(b, buf)| (self.sb.meta_slot_offset(*b), buf.as_mut_ptr()))
            .collect();
        if let Some((pos, csum)) = bad_mirror {
            self.stats.csum_errors += 1;
            self.mark_damaged(oid, version, DamageReason::BadJournalData);
            tracing::error!(%oid, version, pos, csum, "journaled data checksum mismatch");
            let message = format!("checksum mismatch in {oid}: journaled data at ring position {pos} (expected {csum:#010x})");
            return self.complete(index, Err(OpError::new(errno::EDOM, message)));
        }
        let plan_gen = self.mutation_gen;
        let OpState::Read(op) = &mut self.slot_mut(index).state else {
            unreachable!("invariant: read op")
        };
        op.out = out;
        op.plan = plan;
        op.meta_slots = meta_slots;
        op.version = version;
        op.bitmap = bitmap;
        op.plan_gen = plan_gen;
        if disk_runs.is_empty() {
            return self.finish_read(index);
        }
        for (disk_offset, start, run_len) in disk_runs {
            // SAFETY: `out` is owned by the op (its heap memory does not move) until the op
            // completes, after every read into it has been reaped; runs are disjoint.
            unsafe {
                self.submit_io(
                    Owner::Op(index),
                    IoKind::Read,
                    disk_offset,
                    out_ptr.add(start),
                    run_len,
                )
            };
        }
        for (disk_offset, ptr) in meta_ptrs {
            // SAFETY: as above, for the op's metadata slot buffers.
            unsafe {
                self.submit_io(
                    Owner::Op(index),
                    IoKind::Read,
                    disk_offset,
                    ptr,
                    SECTOR as usize,
                )
            };
        }
    }

    pub(super) fn read_io_done(&mut self, index: usize) {
        if let Some(error) = self.slot_mut(index).error.take() {
            return self.complete(index, Err(error));
        }
        let granularity = self.sb.bitmap_granularity as usize;
        let sectors = self.sb.sectors_per_block();
        let format_id = self.sb.format_id;
        let current_gen = self.mutation_gen;
        let OpState::Read(op) = &self.slot_mut(index).state else {
            unreachable!("invariant: read op")
        };
        let mut mismatch = None;
        for (i, source) in op.plan.iter().enumerate() {
            let Source::Block {
                block,
                sector,
                csum,
            } = *source
            else {
                continue;
            };
            let expected = match csum {
                Some(csum) => Some(csum),
                None => op
                    .meta_slots
                    .iter()
                    .find(|(b, _)| *b == block)
                    .and_then(|(_, slot)| {
                        match meta_format::decode(slot, block, sectors, format_id) {
                            MetaSlot::Used(entry) => entry.csums.get(sector as usize).copied(),
                            _ => None,
                        }
                    }),
            };
            let actual = crc32c::crc32c(&op.out[i * granularity..(i + 1) * granularity]);
            if expected != Some(actual) {
                mismatch = Some((block, sector, expected, actual));
                break;
            }
        }
        let Some((block, sector, expected, actual)) = mismatch else {
            return self.finish_read(index);
        };
        let OpState::Read(op) = &mut self.slot_mut(index).state else {
            unreachable!("invariant: read op")
        };
        if op.plan_gen != current_gen && op.retries < MAX_READ_RETRIES {
            op.retries += 1;
            return self.plan_and_submit_read(index);
        }
        let (oid, version) = (op.oid, op.version);
        self.stats.csum_errors += 1;
        self.mark_damaged(oid, version, DamageReason::BadData);
        tracing::error!(%oid, version, block, sector, ?expected, actual, "data checksum mismatch; object marked damaged");
        let message = format!("checksum mismatch in {oid}: block {block} sector {sector} (expected {expected:?}, got {actual:#010x})");
        self.complete(index, Err(OpError::new(errno::EDOM, message)));
    }

    fn finish_read(&mut self, index: usize) {
        let OpState::Read(op) = &mut self.slot_mut(index).state else {
            unreachable!("invariant: read op")
        };
        let data = std::mem::replace(&mut op.out, AlignedBuf::new(0));
        let bitmap = std::mem::take(&mut op.bitmap);
        let version = op.version;
        self.complete(
            index,
            Ok(OpOutput::Read {
                version,
                bitmap,
                data,
            }),
        );
    }
}
