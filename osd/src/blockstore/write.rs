//! Operations that change objects: write (small = journaled, big = redirected to a fresh
//! block), stabilize, rollback, delete (a tombstone version), purge (forgets a tombstoned
//! object), and sync.
//!
//! A purge forgets the object in memory at once; its journal entry keeps the journal start
//! from passing it until the flusher has emptied the object's metadata slot, so a crash
//! before that replays the purge. It waits while the flusher is flushing the object or a
//! version of it is still being written, so that no in-flight I/O refers to a block it
//! frees.
//!
//! Every change is applied to the in-memory state when its journal entry is appended, and
//! becomes visible to readers when its disk writes complete (`written`). A sync waits for
//! every write submitted before it, then joins the next fsync ([`super::group_commit`]).

use super::aligned::AlignedBuf;
use super::dirty::{DirtyEntry, DirtyKind};
use super::disk::{Disk, IoKind};
use super::error::OpError;
use super::journal::EntryClass;
use super::journal_format::{EntryHeader, EntryKind, FLAG_STABLE, NO_BLOCK};
use super::layout::SECTOR;
use super::store::{Blockstore, OpOutput, OpState, Owner, PendingClear};
use vitastor_proto::{errno, ObjectId};

pub(super) struct WriteOp {
    oid: ObjectId,
    requested_version: u64,
    version: u64,
    seq: u64,
    offset: u32,
    data: AlignedBuf,
    stable: bool,
}

impl WriteOp {
    pub fn new(
        oid: ObjectId,
        version: u64,
        offset: u32,
        data: AlignedBuf,
        stable: bool,
    ) -> WriteOp {
        WriteOp {
            oid,
            requested_version: version,
            version: 0,
            seq: 0,
            offset,
            data,
            stable,
        }
    }
}

#[derive(Default)]
pub(super) struct SyncOp {
    barrier_tag: u64,
    /// Handed to group commit (its writes have completed).
    started: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum JournalOpKind {
    Stabilize,
    Rollback,
    Delete,
    Purge,
}

pub(super) struct JournalOp {
    kind: JournalOpKind,
    oid: ObjectId,
    version: u64,
    seq: u64,
}

impl WriteOp {
    pub(super) fn oid(&self) -> ObjectId {
        self.oid
    }
}

impl JournalOp {
    pub(super) fn oid(&self) -> ObjectId {
        self.oid
    }

    pub fn stabilize(oid: ObjectId, version: u64) -> JournalOp {
        JournalOp {
            kind: JournalOpKind::Stabilize,
            oid,
            version,
            seq: 0,
        }
    }
    pub fn rollback(oid: ObjectId, version: u64) -> JournalOp {
        JournalOp {
            kind: JournalOpKind::Rollback,
            oid,
            version,
            seq: 0,
        }
    }
    pub fn delete(oid: ObjectId, version: u64) -> JournalOp {
        JournalOp {
            kind: JournalOpKind::Delete,
            oid,
            version,
            seq: 0,
        }
    }
    pub fn purge(oid: ObjectId, version: u64) -> JournalOp {
        JournalOp {
            kind: JournalOpKind::Purge,
            oid,
            version,
            seq: 0,
        }
    }
}

/// crc32c of each `granularity`-sized piece of `data`.
pub(super) fn sector_csums(data: &[u8], granularity: u32) -> Box<[u32]> {
    data.chunks(granularity as usize)
        .map(crc32c::crc32c)
        .collect()
}

fn entry(kind: EntryKind, oid: ObjectId, version: u64, stable: bool) -> EntryHeader {
    EntryHeader {
        kind,
        flags: if stable { FLAG_STABLE } else { 0 },
        seq: 0,
        oid,
        version,
        offset: 0,
        len: 0,
        block: NO_BLOCK,
        data_sectors: 0,
        old_block: NO_BLOCK,
        session: 0,
        bitmap: Vec::new(),
        csums: Vec::new(),
        prev: None,
        durable_below: 0,
    }
}

impl<D: Disk> Blockstore<D> {
    /// Appends an entry to the journal mirror (header, then `data`); returns `(seq, pos)`.
    pub(super) fn append_entry(
        &mut self,
        header: &mut EntryHeader,
        data: Option<&[u8]>,
        class: EntryClass,
    ) -> Option<(u64, u64)> {
        let (seq, pos) = self.journal.append(header.entry_bytes(), class)?;
        self.inflight_journal.insert(seq);
        header.seq = seq;
        header.session = self.journal.session;
        header.prev = self.journal.last_appended;
        assert!(
            self.durable_below <= seq,
            "invariant: an entry cannot be durable before it is appended"
        );
        header.durable_below = self.durable_below;
        self.journal.last_appended = Some((header.oid, header.version));
        let format_id = self.sb.format_id;
        header.encode(format_id, self.journal.slice_mut(pos, SECTOR));
        if let Some(data) = data {
            self.journal
                .slice_mut(pos + SECTOR, data.len() as u64)
                .copy_from_slice(data);
        }
        Some((seq, pos))
    }

    /// Writes the journal entry at `pos` (of `bytes`) to disk on behalf of op `index`,
    /// merged with the entries appended next to it in the same round
    /// ([`super::journal_batch`]).
    pub(super) fn submit_journal_write(&mut self, index: usize, pos: u64, bytes: u64) {
        self.queue_journal_write(index, pos, bytes);
    }

    fn wait_for_space(&mut self, index: usize) {
        self.stats.space_waits += 1;
        self.space_waiters.push_back(index);
    }

    /// Retries the op after the next progress (the flusher or a write must finish first).
    fn wait_for_progress(&mut self, index: usize) {
        self.space_waiters.push_back(index);
    }

    fn refuse_if_broken(&mut self, index: usize) -> bool {
        if let Some(reason) = &self.flusher.broken {
            let error = OpError::new(
                errno::EIO,
                format!("blockstore stopped accepting changes: {reason}"),
            );
            self.complete(index, Err(error));
            return true;
        }
        false
    }

    pub(super) fn start_write(&mut self, index: usize) {
        if self.refuse_if_broken(index) {
            return;
        }
        let OpState::Write(op) = &self.slot_mut(index).state else {
            unreachable!("invariant: write op")
        };
        let (oid, requested, offset, len, stable) = (
            op.oid,
            op.requested_version,
            op.offset,
            op.data.len() as u32,
            op.stable,
        );
        let granularity = self.sb.bitmap_granularity;
        let block_size = self.sb.block_size;
        let checked = if len == 0 {
            Err(OpError::new(errno::EINVAL, "a write of 0 bytes"))
        } else {
            self.check_range("write", offset, len)
        };
        let version = match checked.and_then(|()| self.next_version("write", &oid, requested)) {
            Ok(version) => version,
            Err(error) => return self.complete(index, Err(error)),
        };
        let big = !self.object_exists(&oid) || (offset == 0 && len == block_size);
        let mut header = entry(
            if big {
                EntryKind::BigWrite
            } else {
                EntryKind::SmallWrite
            },
            oid,
            version,
            stable,
        );
        header.offset = offset;
        header.len = len;
        // The repair of an object that lost a journal entry (a whole-block write) may use
        // the reserve: the lost entry holds the journal start until then.
        let class = if offset == 0 && len == block_size && self.has_lost_entry(&oid) {
            EntryClass::Unpin
        } else {
            EntryClass::Regular
        };
        if big {
            if !self.journal.fits(SECTOR, class) {
                return self.wait_for_space(index);
            }
            let Some(block) = self.alloc.allocate() else {
                return self.wait_for_space(index);
            };
            let OpState::Write(op) = &mut self.slot_mut(index).state else {
                unreachable!("invariant: write op")
            };
            let csums = sector_csums(&op.data, granularity);
            op.version = version;
            let data_ptr = op.data.as_mut_ptr();
            header.block = block;
            header.csums = csums.to_vec();
            let (seq, pos) = self
                .append_entry(&mut header, None, class)
                .expect("invariant: space was checked");
            let kind = DirtyKind::Big {
                block,
                offset,
                len,
                csums,
            };
            self.push_dirty(oid, DirtyEntry::new(version, seq, stable, false, kind));
            let data_offset = self.sb.block_offset(block) + u64::from(offset);
            // SAFETY: the data buffer is owned by this op's slot until the op completes,
            // which happens only after both writes are reaped.
            unsafe {
                self.submit_io(
                    Owner::Op(index),
                    IoKind::Write,
                    data_offset,
                    data_ptr,
                    len as usize,
                )
            };
            self.submit_journal_write(index, pos, SECTOR);
            self.set_op_seq(index, seq);
            self.stats.big_writes += 1;
        } else {
            header.data_sectors = (u64::from(len) / SECTOR) as u32;
            let bytes = header.entry_bytes();
            if !self.journal.fits(bytes, EntryClass::Regular) {
                return self.wait_for_space(index);
            }
            let slot = self.slots[index].as_mut().expect("invariant: live op");
            let OpState::Write(op) = &mut slot.state else {
                unreachable!("invariant: write op")
            };
            op.version = version;
            let csums = sector_csums(&op.data, granularity);
            header.csums = csums.to_vec();
            let data = std::mem::replace(&mut op.data, AlignedBuf::new(0));
            let (seq, pos) = self
                .append_entry(&mut header, Some(&data), EntryClass::Regular)
                .expect("invariant: space was checked");
            let kind = DirtyKind::Small {
                offset,
                len,
                data_pos: pos + SECTOR,
                csums,
            };
            self.push_dirty(oid, DirtyEntry::new(version, seq, stable, false, kind));
            self.submit_journal_write(index, pos, bytes);
            self.set_op_seq(index, seq);
            self.stats.small_writes += 1;
        }
    }

    pub(super) fn write_io_done(&mut self, index: usize) {
        let slot = self.slots[index].as_mut().expect("invariant: live op");
        let OpState::Write(op) = &slot.state else {
            unreachable!("invariant: write op")
        };
        let (oid, version) = (op.oid, op.version);
        self.inflight_journal.remove(&op.seq);
        if let Some(error) = slot.error.take() {
            self.remove_dirty_version(&oid, version);
            self.flusher.broken = Some(format!("a write failed: {error}"));
            return self.complete(index, Err(error));
        }
        if let Some(entry) = self
            .dirty
            .get_mut(&oid)
            .and_then(|chain| chain.iter_mut().find(|e| e.version == version))
        {
            entry.written = true;
        }
        self.clear_damage_if_replaced(&oid);
        self.complete(index, Ok(OpOutput::Version(version)));
    }

    pub(super) fn start_sync(&mut self, index: usize) {
        let barrier = self.next_tag();
        let OpState::Sync(op) = &mut self.slot_mut(index).state else {
            unreachable!("invariant: sync op")
        };
        op.barrier_tag = barrier;
        self.sync_waiters.push(index);
    }

    /// Hands the sync to group commit ([`super::group_commit`]) once every write before
    /// its barrier has completed.
    pub(super) fn try_sync(&mut self, index: usize) {
        let OpState::Sync(op) = &self.slot_mut(index).state else {
            unreachable!("invariant: sync op")
        };
        let (started, barrier) = (op.started, op.barrier_tag);
        if started {
            return;
        }
        if self.writes_in_flight_before(barrier) {
            self.sync_waiters.push(index);
            return;
        }
        self.stats.syncs += 1;
        if self.config.disable_fsync {
            let covers = self.journal_complete_below();
            self.durable_below = self.durable_below.max(covers);
            return self.complete(index, Ok(OpOutput::Done));
        }
        let OpState::Sync(op) = &mut self.slot_mut(index).state else {
            unreachable!("invariant: sync op")
        };
        op.started = true;
        self.join_fsync_group(index);
    }

    pub(super) fn start_journal_op(&mut self, index: usize) {
        if self.refuse_if_broken(index) {
            return;
        }
        let OpState::Journal(op) = &self.slot_mut(index).state else {
            unreachable!("invariant: journal op")
        };
        let (kind, oid, requested) = (op.kind, op.oid, op.version);
        let latest = self.latest_version(&oid);
        let clean_version = self.clean.get(&oid).map_or(0, |c| c.version);
        let chain: &[DirtyEntry] = self.dirty.get(&oid).map_or(&[], |c| c.as_slice());
        let (version, header_kind, stable) = match kind {
            JournalOpKind::Stabilize => {
                if requested == 0 || requested > latest {
                    let message = format!(
                        "cannot stabilize {oid} v{requested}: the newest version is {latest}"
                    );
                    return self.complete(index, Err(OpError::new(errno::ENOENT, message)));
                }
                if chain.iter().all(|e| e.version > requested || e.stable) {
                    return self.complete(index, Ok(OpOutput::Version(requested)));
                }
                (requested, EntryKind::Stabilize, true)
            }
            JournalOpKind::Rollback => {
                if clean_version > requested {
                    let message = format!("cannot roll {oid} back to v{requested}: v{clean_version} is already flushed");
                    return self.complete(index, Err(OpError::new(errno::EBUSY, message)));
                }
                let dropped: Vec<&DirtyEntry> =
                    chain.iter().filter(|e| e.version > requested).collect();
                if dropped.is_empty() {
                    return self.complete(index, Ok(OpOutput::Version(requested)));
                }
                if let Some(busy) = dropped.iter().find(|e| e.stable || !e.written) {
                    let why = if busy.stable {
                        "is stable"
                    } else {
                        "is still being written"
                    };
                    let message = format!(
                        "cannot roll {oid} back to v{requested}: v{} {why}",
                        busy.version
                    );
                    return self.complete(index, Err(OpError::new(errno::EBUSY, message)));
                }
                (requested, EntryKind::Rollback, false)
            }
            JournalOpKind::Delete => {
                let version = match self.next_version("delete", &oid, requested) {
                    Ok(version) => version,
                    Err(error) => return self.complete(index, Err(error)),
                };
                // A delete at an explicit version always leaves a tombstone (peering
                // copies tombstones to members that lack the object).
                if requested == 0 && !self.object_exists(&oid) {
                    return self.complete(index, Ok(OpOutput::Version(latest)));
                }
                (version, EntryKind::Delete, true)
            }
            JournalOpKind::Purge => {
                // The newest version, live data or tombstone, must be one the caller knows.
                // Only whole, stable objects: an unstable version is still being decided
                // (stabilize or rollback), and replay keeps those apart.
                let newest = self.object_version(&oid);
                if newest == 0 || newest > requested || chain.iter().any(|e| !e.stable) {
                    return self.complete(index, Ok(OpOutput::Version(0)));
                }
                if self.flusher.is_flushing(&oid) || chain.iter().any(|e| !e.written) {
                    return self.wait_for_progress(index);
                }
                (newest, EntryKind::Purge, true)
            }
        };
        let class = if matches!(kind, JournalOpKind::Delete | JournalOpKind::Purge) {
            EntryClass::Regular
        } else {
            EntryClass::Unpin
        };
        if !self.journal.fits(SECTOR, class) {
            return self.wait_for_space(index);
        }
        let mut header = entry(header_kind, oid, version, stable);
        if kind == JournalOpKind::Purge {
            header.block = self.clean.block_of(&oid).unwrap_or(NO_BLOCK);
        }
        let (seq, pos) = self
            .append_entry(&mut header, None, class)
            .expect("invariant: space was checked");
        match kind {
            JournalOpKind::Stabilize => {
                if let Some(chain) = self.dirty.get_mut(&oid) {
                    chain
                        .iter_mut()
                        .filter(|e| e.version <= version && !e.stable)
                        .for_each(|e| {
                            e.stable = true;
                            e.stable_seq = seq;
                        });
                }
            }
            JournalOpKind::Rollback => {
                self.drop_unstable_after(&oid, version, seq);
            }
            JournalOpKind::Delete => {
                self.push_dirty(
                    oid,
                    DirtyEntry::new(version, seq, true, false, DirtyKind::Delete),
                );
            }
            JournalOpKind::Purge => {
                if let Some(block) = self.forget_object(&oid, seq) {
                    self.pending_clears.push(PendingClear {
                        block,
                        seq,
                        oid,
                        version,
                    });
                }
            }
        }
        let OpState::Journal(op) = &mut self.slot_mut(index).state else {
            unreachable!("invariant: journal op")
        };
        op.version = version;
        op.seq = seq;
        self.submit_journal_write(index, pos, SECTOR);
    }

    /// Remembers which journal entry an op wrote, to mark it complete later.
    fn set_op_seq(&mut self, index: usize, seq: u64) {
        if let OpState::Write(op) = &mut self.slot_mut(index).state {
            op.seq = seq;
        }
    }

    pub(super) fn journal_op_io_done(&mut self, index: usize) {
        let slot = self.slots[index].as_mut().expect("invariant: live op");
        let OpState::Journal(op) = &slot.state else {
            unreachable!("invariant: journal op")
        };
        let (kind, oid, version) = (op.kind, op.oid, op.version);
        self.inflight_journal.remove(&op.seq);
        if let Some(error) = slot.error.take() {
            self.flusher.broken = Some(format!("a journal write failed: {error}"));
            return self.complete(index, Err(error));
        }
        match kind {
            JournalOpKind::Purge => {
                self.damaged.remove(&oid);
            }
            _ => self.clear_damage_if_replaced(&oid),
        }
        if kind == JournalOpKind::Delete {
            if let Some(entry) = self
                .dirty
                .get_mut(&oid)
                .and_then(|c| c.iter_mut().find(|e| e.version == version))
            {
                entry.written = true;
            }
        }
        self.complete(index, Ok(OpOutput::Version(version)));
    }
}
