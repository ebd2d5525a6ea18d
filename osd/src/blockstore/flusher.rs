//! The flusher: makes stable journaled versions permanent in the data and metadata areas
//! and moves the journal start forward. One batch at a time:
//!
//! ```text
//!   Idle --(journal over threshold, space wanted, or flush_all)--> pick objects
//!     [ReadMeta]      read metadata slots when checksums are not kept in memory
//!     Records         write one flush record per object (its block's full new metadata)
//!                     to the current half of the flush record area
//!     SyncRecords     fsync (makes the flushed journal entries durable; skipped when an
//!                     earlier fsync already did)
//!     Data            write journaled sectors in place
//!     SyncData        fsync: the data is durable before any metadata points at it
//!     Meta            write the new metadata slots (+ an empty slot for a block the
//!                     object moved away from)
//!     SyncMeta        fsync, then apply to the in-memory index
//!     Header          write the journal header with the new start
//!     SyncHeader      fsync, then give journal space and freed blocks back
//!   --> Idle
//! ```
//!
//! A crash at any point is repaired on open. Before the metadata phase, the journal still
//! holds every flushed version, so replay simply keeps them journaled and they are flushed
//! again. During the metadata phase a slot may be torn; the flush record then supplies the
//! full metadata (the data is already durable). Only the newest batch can be incomplete, so
//! the record area has two halves used alternately, and records are not kept in the ring
//! (where they would use up space while an unstable version pins the journal start).
//!
//! Deletes: a flushed delete becomes a tombstone slot (empty bitmap, zero checksums) in a
//! block the object already had (its clean block, else a redirected block of the flushed
//! versions, else a freshly allocated one), so the tombstone keeps the object's version
//! across restarts and peering can see it. Purges: the flusher empties the metadata slot
//! of a purged object's clean block in a batch like any other (record flagged purged,
//! then the empty slot); only then may the journal start pass the purge entry.

use super::aligned::AlignedBuf;
use super::bitmap;
use super::dirty::{DirtyEntry, DirtyKind};
use super::disk::{Disk, IoKind};
use super::error::BlockstoreError;
use super::journal_format::{
    EntryHeader, EntryKind, JournalHeader, FLAG_DELETED, FLAG_PURGED, FLAG_STABLE, NO_BLOCK,
};
use super::layout::SECTOR;
use super::meta_format::{self, MetaEntry, MetaSlot};
use super::store::{Blockstore, Owner};
use vitastor_proto::{errno, ObjectId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    ReadMeta,
    Records,
    SyncRecords,
    Data,
    SyncData,
    Meta,
    SyncMeta,
    Header,
    SyncHeader,
}

/// One object in a flush batch.
struct FlushItem {
    oid: ObjectId,
    version: u64,
    prefix_len: usize,
    /// Block that will hold the object (`None` only for purge items).
    target: Option<u32>,
    /// The flushed version is a tombstone (the target slot gets the tombstone flag).
    tombstone: bool,
    /// A tombstone with no block of its own yet: one is allocated before the batch starts.
    needs_block: bool,
    /// Not a journaled version: only empties `old_clean`, the slot of a purged object.
    purge: bool,
    /// Clean block the object leaves (its metadata slot is emptied).
    old_clean: Option<u32>,
    /// Redirected blocks in the flushed prefix that end up unused.
    superseded: Vec<u32>,
    bitmap: Vec<u8>,
    /// Full per-sector checksums of the target block (filled after ReadMeta if needed).
    csums: Vec<u32>,
    /// Sector -> (journal data position, checksum), newest version wins.
    overlays: Vec<(u32, u64, u32)>,
    /// Target block whose metadata slot must be read first.
    meta_read: Option<AlignedBuf>,
    buffers: Vec<AlignedBuf>,
    /// Highest journal sequence number the flushed versions depend on (their entries and
    /// the entries that made them stable).
    max_seq: u64,
}

/// The flush record of `item`: record `index` of `count` in batch `batch`. Flush records
/// reuse the journal entry format with `seq` = batch number, `offset` = index and `len` =
/// count.
fn flush_record(item: &FlushItem, batch: u64, index: usize, count: usize) -> EntryHeader {
    let mut flags = FLAG_STABLE;
    if item.tombstone || item.target.is_none() {
        flags |= FLAG_DELETED;
    }
    if item.purge {
        flags |= FLAG_PURGED;
    }
    EntryHeader {
        kind: EntryKind::Flush,
        flags,
        seq: batch,
        oid: item.oid,
        version: item.version,
        offset: index as u32,
        len: count as u32,
        block: item.target.unwrap_or(NO_BLOCK),
        data_sectors: 0,
        old_block: item.old_clean.unwrap_or(NO_BLOCK),
        session: 0,
        bitmap: item.bitmap.clone(),
        csums: if item.target.is_some() {
            item.csums.clone()
        } else {
            Vec::new()
        },
        prev: None,
        durable_below: 0,
    }
}

pub(super) struct Flusher {
    phase: Phase,
    pub force: bool,
    /// Set after a failed write: the store then refuses changes (reads keep working).
    pub broken: Option<String>,
    items: Vec<FlushItem>,
    pending_io: u32,
    failed: Option<i32>,
    header_buf: AlignedBuf,
    records_buf: AlignedBuf,
    trim_to_seq: u64,
    /// Number of the last flush batch (its records carry it as their `seq`).
    pub batch_gen: u64,
    /// What the flusher's fsync in flight makes durable (see `Blockstore::durable_below`).
    fsync_covers: u64,
    /// Whether some flushed journal entry is not yet known durable, so the records phase
    /// must end with an fsync before data is overwritten in place.
    records_need_fsync: bool,
}

impl Flusher {
    pub fn new() -> Flusher {
        Flusher {
            phase: Phase::Idle,
            force: false,
            broken: None,
            items: Vec::new(),
            pending_io: 0,
            failed: None,
            header_buf: AlignedBuf::new(SECTOR as usize),
            records_buf: AlignedBuf::new(0),
            trim_to_seq: 0,
            batch_gen: 0,
            fsync_covers: 0,
            records_need_fsync: true,
        }
    }

    pub fn is_idle(&self) -> bool {
        self.phase == Phase::Idle
    }

    /// Whether the batch in flight flushes versions of `oid` (purge items do not count).
    pub fn is_flushing(&self, oid: &ObjectId) -> bool {
        self.items
            .iter()
            .any(|item| item.oid == *oid && !item.purge)
    }
}

impl<D: Disk> Blockstore<D> {
    fn flush_wanted(&self) -> bool {
        self.flusher.force
            || !self.space_waiters.is_empty()
            || self.journal.used_bytes() * 100
                >= self.journal.size * self.config.flush_journal_percent
            || self.alloc.free_blocks() * 8 < u64::from(self.alloc.total_blocks())
    }

    /// Where the journal could start: the oldest entry any object still needs (purge
    /// entries are needed until their slot is emptied; a lost entry until its object is
    /// repaired, so that a restart finds the damage again).
    fn trim_target(&self) -> u64 {
        self.dirty
            .values()
            .flat_map(|chain| chain.iter().map(|e| e.seq))
            .chain(self.pending_clears.iter().map(|p| p.seq))
            .chain(self.oldest_lost_seq())
            .min()
            .unwrap_or(self.journal.next_seq)
    }

    pub(super) fn maybe_start_flush(&mut self) {
        if !self.flusher.is_idle() || self.flusher.broken.is_some() || !self.flush_wanted() {
            return;
        }
        // Oldest first, so that every batch lets the journal start move forward.
        let limit = self.sb.flush_record_slots() as usize;
        // Only versions whose journal entries (and everything before them) have reached the
        // disk: replay stops at the first entry that did not, and must find these.
        let complete_below = self.journal_complete_below();
        let mut candidates: Vec<(u64, ObjectId, usize)> = Vec::new();
        for (oid, chain) in &self.dirty {
            if self.has_lost_entry(oid) {
                // Flushing would make the versions around the lost one permanent as if
                // nothing were missing.
                continue;
            }
            let prefix_len = chain
                .iter()
                .take_while(|e| {
                    e.stable && e.written && e.seq < complete_below && e.stable_seq < complete_below
                })
                .count();
            if prefix_len > 0 {
                candidates.push((chain[0].seq, *oid, prefix_len));
            }
        }
        candidates.sort_unstable_by_key(|(seq, _, _)| *seq);
        let mut items = self.plan_purge_items(limit, complete_below);
        // An object whose earlier life's slot is emptied in this batch is flushed in a
        // later one: replay of one batch's records must not hold both lives of an object.
        let purged: std::collections::HashSet<ObjectId> = items.iter().map(|i| i.oid).collect();
        candidates.retain(|(_, oid, _)| !purged.contains(oid));
        candidates.truncate(limit - items.len());
        for (_, oid, prefix_len) in candidates {
            if let Some(mut item) = self.plan_flush_item(oid, prefix_len) {
                if item.needs_block {
                    let Some(block) = self.alloc.allocate() else {
                        tracing::warn!(%oid, "no free block for a tombstone; flushing it later");
                        continue;
                    };
                    item.target = Some(block);
                    item.needs_block = false;
                }
                items.push(item);
            }
        }
        if items.is_empty() {
            let target = self.trim_target();
            if target > self.journal.start_seq {
                self.flusher.trim_to_seq = target;
                self.write_header_async();
            }
            return;
        }
        self.flusher.items = items;
        self.flusher.failed = None;
        self.stats.flush_batches += 1;
        let mut reads = Vec::new();
        for item in self.flusher.items.iter_mut() {
            if let (Some(buf), Some(block)) = (item.meta_read.as_mut(), item.target) {
                reads.push((self.sb.meta_slot_offset(block), buf.as_mut_ptr()));
            }
        }
        if reads.is_empty() {
            return self.write_flush_records();
        }
        self.flusher.phase = Phase::ReadMeta;
        for (offset, ptr) in reads {
            self.flusher_submit(IoKind::Read, offset, ptr, SECTOR as usize);
        }
    }

    /// Items that empty the metadata slots of purged objects (oldest purge first), for
    /// purges whose journal entries have reached the disk.
    fn plan_purge_items(&self, limit: usize, complete_below: u64) -> Vec<FlushItem> {
        let sectors = self.sb.sectors_per_block();
        let mut clears: Vec<_> = self
            .pending_clears
            .iter()
            .filter(|p| p.seq < complete_below)
            .collect();
        clears.sort_unstable_by_key(|p| p.seq);
        clears
            .into_iter()
            .take(limit)
            .map(|p| FlushItem {
                oid: p.oid,
                version: p.version,
                prefix_len: 0,
                target: None,
                tombstone: false,
                needs_block: false,
                purge: true,
                old_clean: Some(p.block),
                superseded: Vec::new(),
                bitmap: vec![0; bitmap::bitmap_bytes(sectors)],
                csums: vec![0; sectors as usize],
                overlays: Vec::new(),
                meta_read: None,
                buffers: Vec::new(),
                max_seq: p.seq,
            })
            .collect()
    }

    fn plan_flush_item(&self, oid: ObjectId, prefix_len: usize) -> Option<FlushItem> {
        let chain = self.dirty.get(&oid)?;
        let prefix: &[DirtyEntry] = &chain[..prefix_len];
        let version = prefix.last()?.version;
        let sectors = self.sb.sectors_per_block();
        let granularity = self.sb.bitmap_granularity;
        let clean = self.clean.get(&oid);
        let base_index = prefix
            .iter()
            .rposition(|e| matches!(e.kind, DirtyKind::Big { .. } | DirtyKind::Delete));
        let mut item = FlushItem {
            oid,
            version,
            prefix_len,
            target: None,
            tombstone: false,
            needs_block: false,
            purge: false,
            old_clean: clean.map(|c| c.block),
            superseded: Vec::new(),
            bitmap: vec![0; bitmap::bitmap_bytes(sectors)],
            csums: vec![0; sectors as usize],
            overlays: Vec::new(),
            meta_read: None,
            buffers: Vec::new(),
            max_seq: prefix
                .iter()
                .map(|e| e.seq.max(e.stable_seq))
                .max()
                .unwrap_or(0),
        };
        let overlay_from = match base_index.map(|i| (i, &prefix[i].kind)) {
            Some((i, DirtyKind::Delete)) => {
                // A tombstone: kept in a block the object already has, so that it costs no
                // new space (its old data stays there, unreachable: the bitmap is empty).
                let mut blocks: Vec<u32> = prefix[..i]
                    .iter()
                    .filter_map(DirtyEntry::big_block)
                    .collect();
                item.tombstone = true;
                match clean.map(|c| c.block).or_else(|| blocks.pop()) {
                    Some(block) => item.target = Some(block),
                    None => item.needs_block = true,
                }
                item.superseded = blocks;
                i + 1
            }
            Some((
                i,
                DirtyKind::Big {
                    block,
                    offset,
                    len,
                    csums,
                },
            )) => {
                item.target = Some(*block);
                let (start, n) = (offset / granularity, len / granularity);
                bitmap::set_range(&mut item.bitmap, start, n);
                item.csums[start as usize..(start + n) as usize].copy_from_slice(csums);
                item.superseded = prefix[..i]
                    .iter()
                    .filter_map(DirtyEntry::big_block)
                    .collect();
                i + 1
            }
            _ => {
                let Some(clean) = clean else {
                    tracing::error!(%oid, "journaled small writes without a base version; not flushing");
                    return None;
                };
                item.target = Some(clean.block);
                item.old_clean = None;
                item.bitmap.copy_from_slice(clean.bitmap);
                match clean.csums {
                    // A tombstone has no data: its bitmap and checksums are zeros.
                    _ if clean.tombstone => {}
                    Some(csums) => item.csums.copy_from_slice(csums),
                    None => item.meta_read = Some(AlignedBuf::new(SECTOR as usize)),
                }
                0
            }
        };
        if item.old_clean == item.target {
            item.old_clean = None;
        }
        for entry in &prefix[overlay_from..] {
            if let DirtyKind::Small {
                offset,
                len,
                data_pos,
                csums,
            } = &entry.kind
            {
                let (start, n) = (offset / granularity, len / granularity);
                bitmap::set_range(&mut item.bitmap, start, n);
                for i in 0..n {
                    let overlay = (
                        start + i,
                        data_pos + u64::from(i) * u64::from(granularity),
                        csums[i as usize],
                    );
                    match item.overlays.iter_mut().find(|(s, _, _)| *s == start + i) {
                        Some(existing) => *existing = overlay,
                        None => item.overlays.push(overlay),
                    }
                }
            }
        }
        item.overlays.sort_unstable();
        // Small writes on top of a delete (not made by this version, which redirects writes
        // to deleted objects) would make it an object with just those sectors.
        item.tombstone &= item.overlays.is_empty();
        Some(item)
    }

    fn flusher_submit(&mut self, kind: IoKind, offset: u64, ptr: *mut u8, len: usize) {
        self.flusher.pending_io += 1;
        // SAFETY: every buffer passed here is owned by the flusher (its items or header
        // buffer) or is the journal mirror, and none is dropped or reused before the
        // flusher's phase completes, i.e. after all its requests are reaped.
        unsafe { self.submit_io(Owner::Flusher, kind, offset, ptr, len) };
    }

    fn flusher_fsync(&mut self) -> bool {
        self.flusher.fsync_covers = self.journal_complete_below();
        if self.config.disable_fsync {
            self.durable_below = self.durable_below.max(self.flusher.fsync_covers);
            return false;
        }
        self.flusher_submit(IoKind::Fsync, 0, std::ptr::null_mut(), 0);
        true
    }

    /// Enters `sync_phase` with an fsync in flight, or goes straight on to `next` when
    /// fsyncs are disabled.
    fn fsync_then(&mut self, sync_phase: Phase, next: fn(&mut Self)) {
        self.flusher.phase = sync_phase;
        if !self.flusher_fsync() {
            next(self);
        }
    }

    pub(super) fn flusher_io_done(&mut self, result: i32) {
        self.flusher.pending_io -= 1;
        if result < 0 && self.flusher.failed.is_none() {
            self.flusher.failed = Some(-result);
        }
        if self.flusher.pending_io > 0 {
            return;
        }
        if let Some(failed) = self.flusher.failed.take() {
            let reason = format!(
                "flusher disk I/O failed in phase {:?}: {}",
                self.flusher.phase,
                errno::name(failed)
            );
            tracing::error!("{reason}");
            self.flusher.broken = Some(reason);
            self.flusher.items.clear();
            self.flusher.phase = Phase::Idle;
            return;
        }
        if matches!(
            self.flusher.phase,
            Phase::SyncRecords | Phase::SyncData | Phase::SyncMeta | Phase::SyncHeader
        ) {
            self.durable_below = self.durable_below.max(self.flusher.fsync_covers);
        }
        match self.flusher.phase {
            Phase::ReadMeta => self.apply_read_meta(),
            Phase::Records => {
                // Data may be overwritten in place only once the journal entries that
                // describe it are durable; often an earlier fsync already made them so.
                if self.flusher.records_need_fsync {
                    self.fsync_then(Phase::SyncRecords, Self::write_flush_data);
                } else {
                    self.write_flush_data();
                }
            }
            Phase::SyncRecords => self.write_flush_data(),
            Phase::Data => self.fsync_then(Phase::SyncData, Self::write_flush_meta),
            Phase::SyncData => self.write_flush_meta(),
            Phase::Meta => self.fsync_then(Phase::SyncMeta, Self::finish_flush_batch),
            Phase::SyncMeta => self.finish_flush_batch(),
            Phase::Header => self.fsync_then(Phase::SyncHeader, Self::finish_trim),
            Phase::SyncHeader => self.finish_trim(),
            Phase::Idle => tracing::error!("flusher completion while idle"),
        }
    }

    fn apply_read_meta(&mut self) {
        let sectors = self.sb.sectors_per_block();
        let format_id = self.sb.format_id;
        for item in self.flusher.items.iter_mut() {
            let (Some(buf), Some(block)) = (item.meta_read.take(), item.target) else {
                continue;
            };
            match meta_format::decode(&buf, block, sectors, format_id) {
                MetaSlot::Used(entry) if entry.oid == item.oid => {
                    item.csums.copy_from_slice(&entry.csums);
                }
                _ => {
                    let reason = format!(
                        "metadata slot of block {block} ({}) is unreadable",
                        item.oid
                    );
                    tracing::error!("{reason}");
                    self.flusher.broken = Some(reason);
                    self.flusher.items.clear();
                    self.flusher.phase = Phase::Idle;
                    return;
                }
            }
        }
        self.write_flush_records();
    }

    fn write_flush_records(&mut self) {
        self.flusher.phase = Phase::Records;
        self.flusher.batch_gen += 1;
        let batch = self.flusher.batch_gen;
        tracing::debug!(batch, objects = ?self.flusher.items.iter().map(|i| (i.oid, i.version, i.target, i.old_clean)).collect::<Vec<_>>(), "flush batch starts");
        let format_id = self.sb.format_id;
        let count = self.flusher.items.len();
        self.flusher.records_need_fsync = self
            .flusher
            .items
            .iter()
            .any(|item| item.max_seq >= self.durable_below);
        let mut buf = AlignedBuf::new(count * SECTOR as usize);
        for (index, item) in self.flusher.items.iter_mut().enumerate() {
            for (sector, _, csum) in &item.overlays {
                item.csums[*sector as usize] = *csum;
            }
            let header = flush_record(item, batch, index, count);
            header.encode(
                format_id,
                &mut buf[index * SECTOR as usize..(index + 1) * SECTOR as usize],
            );
        }
        let offset = self.sb.flush_record_offset(batch % 2);
        let ptr = buf.as_mut_ptr();
        self.flusher.records_buf = buf;
        self.flusher_submit(IoKind::Write, offset, ptr, count * SECTOR as usize);
    }

    fn write_flush_data(&mut self) {
        self.flusher.phase = Phase::Data;
        self.mutation_gen += 1;
        let granularity = u64::from(self.sb.bitmap_granularity);
        let mut requests: Vec<(u64, *mut u8, usize)> = Vec::new();
        let mut items = std::mem::take(&mut self.flusher.items);
        for item in items.iter_mut() {
            let Some(target) = item.target else { continue };
            let mut runs: Vec<(u32, Vec<u64>)> = Vec::new();
            for (sector, pos, _) in &item.overlays {
                match runs.last_mut() {
                    Some((first, positions)) if *first + positions.len() as u32 == *sector => {
                        positions.push(*pos)
                    }
                    _ => runs.push((*sector, vec![*pos])),
                }
            }
            for (first, positions) in runs {
                let mut buf = AlignedBuf::new((positions.len() as u64 * granularity) as usize);
                for (i, pos) in positions.iter().enumerate() {
                    let at = i * granularity as usize;
                    buf[at..at + granularity as usize]
                        .copy_from_slice(self.journal.slice(*pos, granularity));
                }
                let offset = self.sb.block_offset(target) + u64::from(first) * granularity;
                requests.push((offset, buf.as_mut_ptr(), buf.len()));
                item.buffers.push(buf);
            }
        }
        self.flusher.items = items;
        if requests.is_empty() {
            // Nothing to write in place. The records must still be durable before any
            // metadata slot is touched: fsync here unless the records phase already did.
            if self.flusher.records_need_fsync {
                return self.write_flush_meta();
            }
            return self.fsync_then(Phase::SyncData, Self::write_flush_meta);
        }
        for (offset, ptr, len) in requests {
            self.flusher_submit(IoKind::Write, offset, ptr, len);
        }
    }

    fn write_flush_meta(&mut self) {
        self.flusher.phase = Phase::Meta;
        let format_id = self.sb.format_id;
        let mut requests: Vec<(u64, *mut u8)> = Vec::new();
        let mut items = std::mem::take(&mut self.flusher.items);
        for item in items.iter_mut() {
            item.buffers.clear();
            if let Some(target) = item.target {
                let entry = MetaEntry {
                    oid: item.oid,
                    version: item.version,
                    block: target,
                    bitmap: item.bitmap.clone(),
                    csums: item.csums.clone(),
                    tombstone: item.tombstone,
                };
                let mut slot = AlignedBuf::new(SECTOR as usize);
                meta_format::encode_entry(&entry, format_id, &mut slot);
                requests.push((self.sb.meta_slot_offset(target), slot.as_mut_ptr()));
                item.buffers.push(slot);
            }
            if let Some(old) = item.old_clean {
                let mut slot = AlignedBuf::new(SECTOR as usize);
                meta_format::encode_empty(old, format_id, &mut slot);
                requests.push((self.sb.meta_slot_offset(old), slot.as_mut_ptr()));
                item.buffers.push(slot);
            }
        }
        self.flusher.items = items;
        if requests.is_empty() {
            return self.finish_flush_batch();
        }
        for (offset, ptr) in requests {
            self.flusher_submit(IoKind::Write, offset, ptr, SECTOR as usize);
        }
    }

    fn finish_flush_batch(&mut self) {
        tracing::debug!(batch = self.flusher.batch_gen, "flush batch done");
        let items = std::mem::take(&mut self.flusher.items);
        for item in items {
            if item.purge {
                // The purge already forgot the object and queued its block for freeing.
                self.pending_clears
                    .retain(|p| Some(p.block) != item.old_clean || p.oid != item.oid);
                continue;
            }
            if let Some(chain) = self.dirty.get_mut(&item.oid) {
                debug_assert!(chain[..item.prefix_len]
                    .iter()
                    .all(|e| e.version <= item.version));
                chain.drain(..item.prefix_len);
                if chain.is_empty() {
                    self.dirty.remove(&item.oid);
                }
            }
            match item.target {
                Some(block) => {
                    let entry = MetaEntry {
                        oid: item.oid,
                        version: item.version,
                        block,
                        bitmap: item.bitmap,
                        csums: item.csums,
                        tombstone: item.tombstone,
                    };
                    self.clean.insert(&entry);
                }
                None => {
                    self.clean.remove(&item.oid);
                }
            }
            for block in item.old_clean.into_iter().chain(item.superseded) {
                self.alloc.free_later(block, self.journal.next_seq);
            }
            self.stats.flushed_objects += 1;
        }
        self.mutation_gen += 1;
        let target = self.trim_target();
        if target > self.journal.start_seq {
            self.flusher.trim_to_seq = target;
            self.write_header_async();
        } else {
            self.flusher.phase = Phase::Idle;
        }
    }

    fn next_header(&self, start_seq: u64, clean_end_seq: u64) -> JournalHeader {
        JournalHeader {
            generation: self.journal.header_generation + 1,
            start_pos: self.journal.position_of(start_seq),
            start_seq,
            clean_end_seq,
            session: self.journal.session,
            session_start_seq: self.journal.session_start_seq,
        }
    }

    fn header_offset(&self, generation: u64) -> u64 {
        self.sb.journal_offset + (generation % 2) * SECTOR
    }

    fn write_header_async(&mut self) {
        self.flusher.phase = Phase::Header;
        let header = self.next_header(self.flusher.trim_to_seq, 0);
        let format_id = self.sb.format_id;
        header.encode(format_id, &mut self.flusher.header_buf);
        let offset = self.header_offset(header.generation);
        let ptr = self.flusher.header_buf.as_mut_ptr();
        self.flusher_submit(IoKind::Write, offset, ptr, SECTOR as usize);
    }

    fn finish_trim(&mut self) {
        self.journal.header_generation += 1;
        let target = self.flusher.trim_to_seq;
        self.journal.trim(target);
        if self.alloc.release_before(target) > 0 {
            self.mutation_gen += 1;
        }
        self.flusher.phase = Phase::Idle;
    }

    /// Writes the journal header (current start; with the clean-shutdown mark if `clean`)
    /// and waits for it to be durable. Only when nothing is in flight.
    pub(super) fn write_journal_header_sync(&mut self, clean: bool) -> Result<(), BlockstoreError> {
        let end = if clean { self.journal.next_seq } else { 0 };
        let header = self.next_header(self.journal.start_seq, end);
        let mut buf = AlignedBuf::new(SECTOR as usize);
        header.encode(self.sb.format_id, &mut buf);
        let offset = self.header_offset(header.generation);
        self.io_sync(IoKind::Write, offset, &mut buf)?;
        self.io_sync(IoKind::Fsync, 0, &mut [])?;
        self.journal.header_generation += 1;
        Ok(())
    }
}
