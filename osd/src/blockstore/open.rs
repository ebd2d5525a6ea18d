//! Opening a blockstore: check the superblock, load the metadata area, replay the journal
//! and repair what a crash left half-done.
//!
//! 1. Metadata slots: the highest version of each object wins; stale duplicates are
//!    emptied; damaged slots are remembered.
//! 2. Journal header: the valid copy with the higher generation.
//! 3. Entries from the start ([`super::journal_walk`]): the chain of valid entries, and the
//!    gaps in it. The first gap nothing proves durable is a torn write and ends the
//!    journal; gaps before it are corruption: reported, skipped or kept with their bad
//!    checksums, and their objects marked damaged ([`super::journal_triage`]).
//! 4. Redirected writes are checked against their data checksums (unless a later flush
//!    record rewrote the block); a bad one is a gap under the same rule.
//! 5. The journal must reach every entry known durable: up to where it was closed
//!    cleanly, and up to where the last open's replay ended.
//! 6. Entries are applied in order. A flush record is applied only when one of its
//!    metadata slots is torn (the crash hit the metadata phase, so the data is durable);
//!    otherwise its versions simply stay journaled and are flushed again.
//!    A purge entry forgets its object again (it was checked when appended; the tombstone
//!    itself may already be trimmed) and has the object's metadata slot emptied; it also
//!    covers that slot, which the flusher may have been emptying when the crash came.
//!    Versions start again at 1 after a purge: entries of an object up to a purge that
//!    its flushed state is newer than (an earlier life) are skipped.
//! 7. A damaged metadata slot that no flush record or purge entry covers is corruption.
//! 8. A new session starts: the header is rewritten before anything else happens.

use super::aligned::AlignedBuf;
use super::bitmap::bitmap_bytes;
use super::damage::DamageReason;
use super::dirty::{DirtyEntry, DirtyKind};
use super::disk::{Disk, IoKind};
use super::error::BlockstoreError;
use super::journal_format::{
    EntryHeader, EntryKind, HeaderCopy, JournalHeader, FLAG_DELETED, FLAG_PURGED, NO_BLOCK,
};
use super::journal_triage::{LostEntry, Triage};
use super::layout::SECTOR;
use super::meta_format::{self, MetaEntry, MetaSlot};
use super::store::{io_sync, read_superblock, Blockstore, BlockstoreConfig};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use vitastor_proto::ObjectId;

const META_READ_CHUNK: u64 = 1 << 20;
const JOURNAL_READ_CHUNK: u64 = 4 << 20;

/// What replay must still write to the metadata area.
#[derive(Default)]
struct Repairs {
    /// Block -> its metadata as the journal says it should be (None = empty slot).
    redo: BTreeMap<u32, Option<MetaEntry>>,
    /// Blocks mentioned by any flush record (their slots may legitimately be torn).
    covered: BTreeSet<u32>,
    /// Blocks whose metadata slot is damaged.
    suspects: BTreeSet<u32>,
    /// (block, seq) of redirected writes replay skipped because they were already flushed.
    flushed_blocks: Vec<(u32, u64)>,
}

impl<D: Disk> Blockstore<D> {
    /// Opens a formatted device.
    pub fn open(mut disk: D, config: BlockstoreConfig) -> Result<Blockstore<D>, BlockstoreError> {
        let superblock = read_superblock(&mut disk)?;
        if config.block_size != 0 && config.block_size != superblock.block_size {
            return Err(BlockstoreError::BlockSizeMismatch {
                on_disk: superblock.block_size,
                requested: config.block_size,
            });
        }
        let mut store = Blockstore::assemble(disk, superblock, config);
        store.load()?;
        Ok(store)
    }

    fn load(&mut self) -> Result<(), BlockstoreError> {
        let mut repairs = Repairs::default();
        let suspects = self.load_meta(&mut repairs)?;
        repairs.suspects = suspects.iter().copied().collect();
        let header = self.load_journal_header()?;
        let records = self.load_flush_records()?;
        self.read_ring()?;
        let walk = self.walk_journal(&header)?;
        let mut triage = Triage::new(&header, walk)?;
        let earlier_lives = self.earlier_lives(&triage.entries);
        let bad_big_writes = self.verify_big_writes(&triage.entries, &earlier_lives)?;
        triage.big_writes(&header, &bad_big_writes);
        triage.report();
        let end_seq = triage.end_seq(header.start_seq);
        let durable_end = header.clean_end_seq.max(header.session_start_seq);
        if end_seq < durable_end {
            return Err(BlockstoreError::Corrupted {
                what: "journal",
                detail: format!(
                    "entries up to seq {durable_end} were durable (clean shutdown at {}, session start {}) but replay stops at seq {end_seq} (ring position {})",
                    header.clean_end_seq, header.session_start_seq, triage.stop_pos
                ),
            });
        }
        self.apply_entries(&triage, &earlier_lives, &mut repairs);
        for record in &records {
            self.apply_flush_record(record, end_seq, &mut repairs);
        }
        self.hold_blocks_of_flushed_entries(&repairs);
        for block in &suspects {
            if !repairs.covered.contains(block) && !repairs.redo.contains_key(block) {
                return Err(BlockstoreError::Corrupted {
                    what: "metadata",
                    detail: format!(
                        "the slot of data block {block} is damaged and no flush record covers it"
                    ),
                });
            }
            repairs.redo.entry(*block).or_insert(None);
        }
        self.write_repairs(&repairs)?;
        self.journal
            .restore(header.start_pos, header.start_seq, triage.ring_positions());
        self.journal.last_appended = triage.entries.last().map(|(e, _)| (e.oid, e.version));
        self.erase_stale_entries()?;
        self.journal.header_generation = header.generation;
        // Entries never carry a session newer than the header's, unless damaged; the new
        // session must still be newer than every replayed entry's, or the next replay
        // would take this session's entries for leftovers.
        let newest_session = triage.entries.iter().map(|(e, _)| e.session).max();
        self.journal.session = header
            .session
            .max(newest_session.unwrap_or(0))
            .saturating_add(1);
        self.journal.session_start_seq = self.journal.next_seq;
        self.write_journal_header_sync(false)?;
        // That header write ended with an fsync: everything replayed is durable now.
        self.durable_below = self.journal.next_seq;
        Ok(())
    }

    /// The records of the newest flush batch (the only one that may be incomplete).
    pub(super) fn load_flush_records(&mut self) -> Result<Vec<EntryHeader>, BlockstoreError> {
        let slots = self.sb.flush_record_slots();
        let mut buf = AlignedBuf::new((2 * slots * SECTOR) as usize);
        self.io_sync(IoKind::Read, self.sb.flush_record_offset(0), &mut buf)?;
        let bitmap_len = bitmap_bytes(self.sb.sectors_per_block());
        let mut records: Vec<EntryHeader> = buf
            .chunks(SECTOR as usize)
            .filter_map(|sector| EntryHeader::decode(sector, self.sb.format_id, bitmap_len))
            .filter(|r| r.kind == EntryKind::Flush && self.entry_is_consistent(r))
            .collect();
        let newest = records.iter().map(|r| r.seq).max().unwrap_or(0);
        self.flusher.batch_gen = newest;
        records.retain(|r| r.seq == newest);
        records.sort_by_key(|r| r.offset);
        Ok(records)
    }

    /// Zeroes every entry header in the free part of the ring that carries a sequence
    /// number replay could expect later: entries written before a crash but not replayed
    /// (torn, or after a torn one). Otherwise, once new entries skip over such a position
    /// (an entry that does not fit the ring's tail starts at 0), a later replay could take
    /// the old entry for the next one.
    fn erase_stale_entries(&mut self) -> Result<(), BlockstoreError> {
        let size = self.journal.size;
        let next_seq = self.journal.next_seq;
        let bitmap_len = bitmap_bytes(self.sb.sectors_per_block());
        let mut stale = Vec::new();
        for k in 0..self.journal.free_bytes() / SECTOR {
            let pos = (self.journal.next_pos + k * SECTOR) % size;
            if let Some(entry) = EntryHeader::decode(
                self.journal.slice(pos, SECTOR),
                self.sb.format_id,
                bitmap_len,
            ) {
                if entry.seq >= next_seq {
                    stale.push(pos);
                }
            }
        }
        let mut zero = AlignedBuf::new(SECTOR as usize);
        for pos in stale {
            self.journal.slice_mut(pos, SECTOR).fill(0);
            let offset = self.journal.disk_offset + pos;
            self.io_sync(IoKind::Write, offset, &mut zero)?;
        }
        Ok(())
    }

    /// Reads every metadata slot into the clean index; returns the damaged slots.
    fn load_meta(&mut self, repairs: &mut Repairs) -> Result<Vec<u32>, BlockstoreError> {
        let sb = self.sb;
        let sectors = sb.sectors_per_block();
        let mut suspects = Vec::new();
        let mut buf = AlignedBuf::new(META_READ_CHUNK.min(sb.meta_size) as usize);
        let mut offset = 0;
        while offset < sb.meta_size {
            let len = META_READ_CHUNK.min(sb.meta_size - offset) as usize;
            self.io_sync(IoKind::Read, sb.meta_offset + offset, &mut buf[..len])?;
            for (i, slot) in buf[..len].chunks(SECTOR as usize).enumerate() {
                let block = ((offset / SECTOR) as usize + i) as u32;
                match meta_format::decode(slot, block, sectors, sb.format_id) {
                    MetaSlot::Empty => {}
                    MetaSlot::Corrupt => suspects.push(block),
                    MetaSlot::Used(entry) => {
                        // Duplicates (a crash between writing an object's new slot and
                        // emptying its old one): the higher version wins, the loser's
                        // block is emptied and given back after the first trim.
                        let loser = match self.clean.get(&entry.oid).map(|c| (c.block, c.version)) {
                            Some((_, version)) if version >= entry.version => Some(block),
                            Some((other, _)) => {
                                self.clean.insert(&entry);
                                Some(other)
                            }
                            None => {
                                self.clean.insert(&entry);
                                None
                            }
                        };
                        self.alloc.mark_used(block);
                        if let Some(loser) = loser {
                            repairs.redo.insert(loser, None);
                            self.alloc.free_later(loser, 0);
                        }
                    }
                }
            }
            offset += len as u64;
        }
        Ok(suspects)
    }

    pub(super) fn load_journal_header(&mut self) -> Result<JournalHeader, BlockstoreError> {
        let mut buf = AlignedBuf::new(2 * SECTOR as usize);
        self.io_sync(IoKind::Read, self.sb.journal_offset, &mut buf)?;
        let format_id = self.sb.format_id;
        let copies = [
            JournalHeader::decode(&buf[..SECTOR as usize], format_id),
            JournalHeader::decode(&buf[SECTOR as usize..], format_id),
        ];
        let best = copies
            .iter()
            .filter_map(|c| match c {
                HeaderCopy::Valid(header) => Some(*header),
                _ => None,
            })
            .max_by_key(|h| h.generation);
        match best {
            Some(header) => {
                if copies.contains(&HeaderCopy::Damaged) {
                    tracing::warn!(
                        "one journal header copy is damaged (torn by a crash?); using the other"
                    );
                }
                if header.start_pos % SECTOR != 0 || header.start_pos >= self.journal.size {
                    return Err(BlockstoreError::Corrupted {
                        what: "journal header",
                        detail: format!("start position {} is outside the ring", header.start_pos),
                    });
                }
                Ok(header)
            }
            None => Err(BlockstoreError::Corrupted {
                what: "journal header",
                detail: "no valid copy of the journal header".to_string(),
            }),
        }
    }

    pub(super) fn read_ring(&mut self) -> Result<(), BlockstoreError> {
        let mut offset = 0;
        while offset < self.journal.size {
            let len = JOURNAL_READ_CHUNK.min(self.journal.size - offset);
            let disk_offset = self.journal.disk_offset + offset;
            let ptr = self.journal.ptr_at(offset);
            // SAFETY: the slice covers part of the journal mirror, which nothing else
            // touches during open.
            let target = unsafe { std::slice::from_raw_parts_mut(ptr, len as usize) };
            let disk = self.disk.as_mut().expect("invariant: disk present");
            io_sync(disk, IoKind::Read, disk_offset, target)?;
            offset += len;
        }
        Ok(())
    }

    /// Objects whose flushed state is newer than a purge in the journal (versions start
    /// again at 1 after a purge, and a new life may have been flushed already): entries
    /// up to that purge (its sequence number here) belong to an earlier life and are not
    /// applied. The clean slot predates a purge if it is in the block the purge names
    /// (that block is not handed out again while the purge is in the journal); a slot
    /// no purge names was flushed after the last one.
    fn earlier_lives(&self, entries: &[(EntryHeader, u64)]) -> HashMap<ObjectId, u64> {
        let mut purges: HashMap<ObjectId, Vec<(u64, u32)>> = HashMap::new();
        for (entry, _) in entries.iter().filter(|(e, _)| e.kind == EntryKind::Purge) {
            purges
                .entry(entry.oid)
                .or_default()
                .push((entry.seq, entry.block));
        }
        let mut lives = HashMap::new();
        for (oid, list) in purges {
            let Some(clean_block) = self.clean.block_of(&oid) else {
                continue;
            };
            // A purge that names the slot's block is newer than the slot (the block is
            // not handed out again while that purge is in the journal) and forgets
            // everything before it: every entry may be applied in order. Otherwise the
            // slot was flushed after the last purge, by a later life.
            if list.iter().any(|(_, block)| *block == clean_block) {
                continue;
            }
            if let Some((seq, _)) = list.last() {
                lives.insert(oid, *seq);
            }
        }
        lives
    }

    /// An entry of an earlier life of its object: not applied, but the blocks it names
    /// stay held while it is in the journal, and a purge still covers its slot.
    fn skip_earlier_life(entry: &EntryHeader, repairs: &mut Repairs) {
        match entry.kind {
            EntryKind::BigWrite => repairs.flushed_blocks.push((entry.block, entry.seq)),
            EntryKind::Purge if entry.block != NO_BLOCK => {
                repairs.covered.insert(entry.block);
                repairs.flushed_blocks.push((entry.block, entry.seq));
            }
            _ => {}
        }
    }

    /// Drops the journal from the first redirected write whose data did not land.
    ///
    /// Sectors that a later small write of the same object covers are not checked: the
    /// flusher may have been rewriting exactly those in place when the power went, and
    /// reads take them from the journal anyway.
    fn verify_big_writes(
        &mut self,
        entries: &[(EntryHeader, u64)],
        earlier_lives: &HashMap<ObjectId, u64>,
    ) -> Result<Vec<usize>, BlockstoreError> {
        let mut bad = Vec::new();
        let granularity = self.sb.bitmap_granularity;
        // Objects purged earlier in the journal: their clean slot (if still there) is of
        // the purged life and says nothing about whether later writes were flushed.
        let mut purged = std::collections::HashSet::new();
        for i in 0..entries.len() {
            let (entry, _) = &entries[i];
            let earlier_life = earlier_lives
                .get(&entry.oid)
                .is_some_and(|purge_seq| entry.seq <= *purge_seq);
            if entry.kind == EntryKind::Purge && !earlier_life {
                purged.insert(entry.oid);
            }
            if entry.kind != EntryKind::BigWrite || earlier_life {
                continue;
            }
            if !purged.contains(&entry.oid)
                && self
                    .clean
                    .get(&entry.oid)
                    .is_some_and(|c| c.version >= entry.version)
            {
                continue;
            }
            let reused_later = entries[i + 1..]
                .iter()
                .any(|(later, _)| later.kind == EntryKind::BigWrite && later.block == entry.block);
            if reused_later {
                continue;
            }
            let first_sector = entry.offset / granularity;
            let overlaid = |sector: u32| {
                entries[i + 1..].iter().any(|(later, _)| {
                    later.kind == EntryKind::SmallWrite
                        && later.oid == entry.oid
                        && sector >= later.offset / granularity
                        && sector < (later.offset + later.len) / granularity
                })
            };
            let checked: Vec<bool> = (0..entry.csums.len() as u32)
                .map(|k| !overlaid(first_sector + k))
                .collect();
            let mut data = AlignedBuf::new(entry.len as usize);
            let offset = self.sb.block_offset(entry.block) + u64::from(entry.offset);
            let csums = entry.csums.clone();
            self.io_sync(IoKind::Read, offset, &mut data)?;
            let intact = data
                .chunks(granularity as usize)
                .zip(&csums)
                .zip(&checked)
                .all(|((piece, csum), check)| !check || crc32c::crc32c(piece) == *csum);
            if !intact {
                bad.push(i);
            }
        }
        Ok(bad)
    }

    /// Applies the entries in order; marks the objects of lost entries and of applied
    /// entries with bad data damaged, and clears the damage of objects a later entry
    /// replaced completely.
    fn apply_entries(
        &mut self,
        triage: &Triage,
        earlier_lives: &HashMap<ObjectId, u64>,
        repairs: &mut Repairs,
    ) {
        let mut lost = triage.lost.iter().peekable();
        for (entry, pos) in &triage.entries {
            while let Some(l) = lost.next_if(|l| l.seq < entry.seq) {
                self.mark_lost(l);
            }
            if earlier_lives
                .get(&entry.oid)
                .is_some_and(|purge_seq| entry.seq <= *purge_seq)
            {
                Self::skip_earlier_life(entry, repairs);
                continue;
            }
            let applied = self.apply_entry(entry, *pos, repairs);
            if entry.kind == EntryKind::Purge {
                self.damaged.remove(&entry.oid);
            }
            self.clear_damage_if_replaced(&entry.oid);
            if applied && triage.bad_data.contains(&entry.seq) {
                let reason = match entry.kind {
                    EntryKind::SmallWrite => DamageReason::BadJournalData,
                    _ => DamageReason::BadData,
                };
                self.mark_damaged(entry.oid, entry.version, reason);
            }
        }
        for l in lost {
            self.mark_lost(l);
        }
    }

    /// A lost entry damages its object unless the object's flushed state is newer: that
    /// was built while the entry was still there (an object is not flushed while it is
    /// marked), so it holds whatever the entry did. An equal version is not enough: a lost
    /// rollback or stabilize names an older version, which may be the flushed one.
    fn mark_lost(&mut self, lost: &LostEntry) {
        if self
            .clean
            .get(&lost.oid)
            .is_some_and(|c| c.version > lost.version)
        {
            return;
        }
        let reason = DamageReason::LostEntry { seq: lost.seq };
        self.mark_damaged(lost.oid, lost.version, reason);
        self.clear_damage_if_replaced(&lost.oid);
    }

    /// Applies one entry; returns whether it changed the object (false: already flushed,
    /// superseded or stale).
    fn apply_entry(&mut self, entry: &EntryHeader, pos: u64, repairs: &mut Repairs) -> bool {
        let oid = entry.oid;
        if matches!(
            entry.kind,
            EntryKind::SmallWrite | EntryKind::BigWrite | EntryKind::Delete
        ) {
            self.start_new_life_if_restarted(entry);
        }
        let latest = self.latest_version(&oid);
        let stable = entry.is_stable();
        let seq = entry.seq;
        match entry.kind {
            EntryKind::SmallWrite => {
                // No check that the object exists: its base may be in a metadata slot torn
                // by a crash, which the newest flush batch's record restores after the ring.
                if entry.version <= latest {
                    return false;
                }
                let kind = DirtyKind::Small {
                    offset: entry.offset,
                    len: entry.len,
                    data_pos: pos + SECTOR,
                    csums: entry.csums.clone().into_boxed_slice(),
                };
                self.push_dirty(oid, DirtyEntry::new(entry.version, seq, stable, true, kind));
                true
            }
            EntryKind::BigWrite => {
                if entry.version <= latest {
                    // Already flushed. Its block must not be handed out while this entry is
                    // in the journal (see `hold_blocks_of_flushed_entries`).
                    repairs.flushed_blocks.push((entry.block, seq));
                    return false;
                }
                if self.alloc.is_used(entry.block) {
                    tracing::warn!(%oid, block = entry.block, seq, "journal names a block that is in use; skipping the stale entry");
                    return false;
                }
                self.alloc.mark_used(entry.block);
                let kind = DirtyKind::Big {
                    block: entry.block,
                    offset: entry.offset,
                    len: entry.len,
                    csums: entry.csums.clone().into_boxed_slice(),
                };
                self.push_dirty(oid, DirtyEntry::new(entry.version, seq, stable, true, kind));
                true
            }
            EntryKind::Delete => {
                if entry.version <= latest {
                    return false;
                }
                self.push_dirty(
                    oid,
                    DirtyEntry::new(entry.version, seq, true, true, DirtyKind::Delete),
                );
                true
            }
            EntryKind::Stabilize => {
                if let Some(chain) = self.dirty.get_mut(&oid) {
                    chain
                        .iter_mut()
                        .filter(|e| e.version <= entry.version && !e.stable)
                        .for_each(|e| {
                            e.stable = true;
                            e.stable_seq = seq;
                        });
                }
                true
            }
            EntryKind::Rollback => {
                self.drop_unstable_after(&oid, entry.version, seq);
                true
            }
            EntryKind::Purge => {
                if entry.block != NO_BLOCK {
                    // The flusher may have been emptying this slot; and the block must not
                    // be handed out while this entry is in the journal.
                    repairs.covered.insert(entry.block);
                    repairs.flushed_blocks.push((entry.block, seq));
                }
                // The purge was accepted when it was appended, and what replay has of the
                // object now is that same life (entries of earlier lives were skipped); its
                // tombstone may be gone from the journal already (a purge drops the object's
                // versions, so they no longer hold the journal start), so no check here.
                if let Some(block) = self.forget_object(&oid, seq) {
                    repairs.redo.insert(block, None);
                }
                true
            }
            EntryKind::Flush => {
                tracing::warn!(seq, "flush record inside the ring; ignored");
                false
            }
        }
    }

    /// A block named by a journal entry is not handed out until the journal start passes
    /// that entry, even when the entry was already flushed and its object moved on: if a
    /// later replay could not read the object's metadata slot, it would check the entry's
    /// data in that block. Blocks in use by now are left alone (their users came later).
    fn hold_blocks_of_flushed_entries(&mut self, repairs: &Repairs) {
        for &(block, seq) in &repairs.flushed_blocks {
            if !self.alloc.is_used(block) {
                self.alloc.mark_used(block);
                self.alloc.free_later(block, seq);
            }
        }
    }

    /// Versions of an object start again at 1 after its deletion has been flushed. A write
    /// entry not newer than a journaled delete therefore belongs to a new life of the
    /// object: the old life (delete included) was flushed and is dropped.
    fn start_new_life_if_restarted(&mut self, entry: &EntryHeader) {
        let restarted = self
            .dirty
            .get(&entry.oid)
            .and_then(|chain| chain.last())
            .is_some_and(|last| {
                matches!(last.kind, DirtyKind::Delete) && entry.version <= last.version
            });
        if !restarted {
            return;
        }
        if let Some(old_life) = self.dirty.remove(&entry.oid) {
            for block in old_life.iter().filter_map(DirtyEntry::big_block) {
                self.alloc.free_later(block, entry.seq);
            }
        }
    }

    /// Applies a record of the newest flush batch (after the ring), if its metadata phase
    /// had started; `free_tag` is the journal position blocks it frees must wait for.
    fn apply_flush_record(&mut self, entry: &EntryHeader, free_tag: u64, repairs: &mut Repairs) {
        let oid = entry.oid;
        if entry.flags & FLAG_PURGED != 0 {
            // It only emptied the slot of a purged object: a torn slot there is expected
            // (the purge entry, still in the journal, has the object forgotten again).
            if entry.old_block != NO_BLOCK && self.clean.owner(entry.old_block).is_none() {
                repairs.covered.insert(entry.old_block);
            }
            return;
        }
        let clean = self.clean.get(&oid).map(|c| (c.block, c.version));
        let clean_version = clean.map_or(0, |(_, version)| version);
        let target = (entry.block != NO_BLOCK).then_some(entry.block);
        let tombstone = entry.flags & FLAG_DELETED != 0;
        let cover = |repairs: &mut Repairs| {
            repairs.covered.extend(target);
            if entry.old_block != NO_BLOCK {
                repairs.covered.insert(entry.old_block);
            }
        };
        if entry.version <= clean_version {
            // Already in the metadata area. If it got there through this very batch, the
            // batch's other slot (the block the object left) may be torn: covered.
            if target.is_some() && clean == target.map(|block| (block, entry.version)) {
                cover(repairs);
            }
            return;
        }
        if !self
            .dirty
            .get(&oid)
            .is_some_and(|chain| chain.iter().any(|e| e.version == entry.version))
        {
            // The version is not in the journal: the batch never got past writing its
            // records (they landed, the journal entries did not). Nothing to redo.
            return;
        }
        let torn = |block: u32| block != NO_BLOCK && repairs.suspects.contains(&block);
        if !target.is_some_and(torn) && !torn(entry.old_block) {
            // The metadata phase had not started: the data may not be durable, so the
            // versions stay journaled (already in the chains) and will be flushed again.
            return;
        }
        cover(repairs);
        if let Some(block) = target {
            if self.clean.owner(block).is_some_and(|owner| owner != oid) {
                tracing::warn!(%oid, block, "flush record names a block owned by another object; skipping");
                return;
            }
        }
        let seq = free_tag;
        if let Some(chain) = self.dirty.get_mut(&oid) {
            let cut = chain
                .iter()
                .position(|e| e.version > entry.version)
                .unwrap_or(chain.len());
            let flushed: Vec<DirtyEntry> = chain.drain(..cut).collect();
            if chain.is_empty() {
                self.dirty.remove(&oid);
            }
            for block in flushed
                .iter()
                .filter_map(DirtyEntry::big_block)
                .filter(|b| Some(*b) != target)
            {
                self.alloc.free_later(block, seq);
            }
        }
        let old = match target {
            Some(block) => {
                let meta = MetaEntry {
                    oid,
                    version: entry.version,
                    block,
                    bitmap: entry.bitmap.clone(),
                    csums: entry.csums.clone(),
                    tombstone,
                };
                self.alloc.mark_used(block);
                let old = self.clean.insert(&meta);
                repairs.redo.insert(block, Some(meta));
                old
            }
            None => self.clean.remove(&oid),
        };
        if let Some(old) = old {
            self.alloc.free_later(old, seq);
            repairs.redo.insert(old, None);
        }
        if entry.old_block != NO_BLOCK && Some(entry.old_block) != target {
            repairs.redo.entry(entry.old_block).or_insert(None);
        }
    }

    /// Writes the metadata slots replay decided on, then fsyncs.
    fn write_repairs(&mut self, repairs: &Repairs) -> Result<(), BlockstoreError> {
        if repairs.redo.is_empty() {
            return Ok(());
        }
        let format_id = self.sb.format_id;
        let mut slot = AlignedBuf::new(SECTOR as usize);
        for (block, wanted) in &repairs.redo {
            let owner = self.clean.owner(*block);
            match (owner, wanted) {
                (Some(oid), Some(entry))
                    if entry.oid == oid
                        && self
                            .clean
                            .get(&oid)
                            .is_some_and(|c| c.version == entry.version) =>
                {
                    meta_format::encode_entry(entry, format_id, &mut slot);
                }
                (Some(_), _) => continue,
                (None, _) => meta_format::encode_empty(*block, format_id, &mut slot),
            }
            let offset = self.sb.meta_slot_offset(*block);
            self.io_sync(IoKind::Write, offset, &mut slot)?;
        }
        self.io_sync(IoKind::Fsync, 0, &mut [])?;
        Ok(())
    }
}
