//! The blockstore's state, its public API and the event loop that routes disk completions
//! to the operations (and the flusher) that are waiting for them.

use super::aligned::AlignedBuf;
use super::alloc::Allocator;
use super::clean_index::CleanIndex;
use super::dirty::{DirtyEntry, DirtyKind, DirtyMap};
use super::disk::{Disk, IoCompletion, IoKind, IoRequest};
use super::error::{BlockstoreError, OpError};
use super::flusher::Flusher;
use super::journal::JournalRing;
use super::layout::Superblock;
use super::read::ReadOp;
use super::write::{JournalOp, SyncOp, WriteOp};
use std::collections::{BTreeMap, VecDeque};
use vitastor_proto::placement::pg_of_stripe;
use vitastor_proto::{errno, ObjectId};

/// Identifies a submitted operation in its completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(pub u64);

/// An operation on the blockstore.
#[derive(Debug)]
pub enum Op {
    /// Reads the newest completed version. `offset`/`len` must be multiples of the bitmap
    /// granularity inside one block.
    Read {
        oid: ObjectId,
        offset: u32,
        len: u32,
    },
    /// Writes a new version (`version` 0 = next after the newest). `data.len()` is the
    /// length. A stable write also makes every older version stable.
    Write {
        oid: ObjectId,
        version: u64,
        offset: u32,
        data: AlignedBuf,
        stable: bool,
    },
    /// Makes every write completed before it durable.
    Sync,
    /// Marks every version <= `version` stable.
    Stabilize { oid: ObjectId, version: u64 },
    /// Drops every unstable version > `version`.
    Rollback { oid: ObjectId, version: u64 },
    /// Deletes the object: records a stable tombstone version (`version` 0 = next). The
    /// tombstone reads as zeros with its version, is listed with `deleted`, survives the
    /// flusher and restarts, and counts as the object's version until it is purged. With
    /// `version` 0 an object that has no live version (never written, purged, or already
    /// deleted) is left alone and the result is its current version; an explicit version
    /// always records a tombstone (peering propagates deletes this way).
    Delete { oid: ObjectId, version: u64 },
    /// Forgets the object completely, data or tombstone, if its newest version is
    /// <= `version` and none of its versions is unstable (afterwards `object_version` is 0, `list` does not show it and its
    /// blocks are free); otherwise does nothing. Result: the purged version, or 0 if
    /// nothing was purged. Peering calls it for a tombstone once every OSD of the PG holds
    /// it, and for every object of a PG on an OSD that left the PG's set once the set
    /// holds everything (rebalance).
    Purge { oid: ObjectId, version: u64 },
}

#[derive(Debug, PartialEq, Eq)]
pub enum OpOutput {
    Read {
        version: u64,
        bitmap: Vec<u8>,
        data: AlignedBuf,
    },
    Version(u64),
    Done,
}

impl PartialEq for AlignedBuf {
    fn eq(&self, other: &AlignedBuf) -> bool {
        self[..] == other[..]
    }
}
impl Eq for AlignedBuf {}

#[derive(Debug)]
pub struct Completion {
    pub id: OpId,
    pub result: Result<OpOutput, OpError>,
}

/// Whether `oid` is in PG `pg_num` of `pg_count` (objects placed by `pg_stripe_size`;
/// `pg_count` 0: every PG) and its inode in `min_inode..=max_inode`: the filter of
/// [`Blockstore::list`] and [`Blockstore::changes_in_flight`].
fn in_listing(
    oid: &ObjectId,
    (pg_num, pg_count, pg_stripe_size, min_inode, max_inode): (u32, u32, u64, u64, u64),
) -> bool {
    oid.inode >= min_inode
        && oid.inode <= max_inode
        && (pg_count == 0 || pg_of_stripe(oid.stripe, pg_stripe_size, pg_count).get() == pg_num)
}

/// One version of one object, as listed for peering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ListedVersion {
    pub oid: ObjectId,
    pub version: u64,
    pub stable: bool,
    /// The version is a tombstone (a delete); tombstones are always stable.
    pub deleted: bool,
}

/// A metadata slot that must be emptied on disk because its object was purged; the purge
/// journal entry (`seq`) stays in the journal until the flusher has done it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PendingClear {
    pub block: u32,
    pub seq: u64,
    pub oid: ObjectId,
    pub version: u64,
}

#[derive(Debug, Clone)]
pub struct BlockstoreConfig {
    /// Expected block size; 0 accepts whatever the device was formatted with.
    pub block_size: u32,
    /// Keep per-sector checksums of clean blocks in memory when they fit in this budget.
    pub csum_memory_limit_bytes: u64,
    /// Complete fsyncs without issuing them (drives with power-loss protection only).
    pub disable_fsync: bool,
    /// Start flushing when the journal is this full (percent).
    pub flush_journal_percent: u64,
}

impl Default for BlockstoreConfig {
    fn default() -> Self {
        BlockstoreConfig {
            block_size: 0,
            csum_memory_limit_bytes: 256 << 20,
            disable_fsync: false,
            flush_journal_percent: 50,
        }
    }
}

/// Counters for `/osd/stats` and benchmarks.
#[derive(Debug, Clone, Copy, Default)]
pub struct BlockstoreStats {
    pub reads: u64,
    pub small_writes: u64,
    pub big_writes: u64,
    pub syncs: u64,
    /// fsyncs issued for syncs (group commit: one may serve many syncs).
    pub fsyncs: u64,
    pub flush_batches: u64,
    pub flushed_objects: u64,
    pub csum_errors: u64,
    /// Times an op had to wait for journal or data space (the flusher was behind).
    pub space_waits: u64,
    /// Requests sent to the device after open (journal, data, metadata, headers), and
    /// the bytes they wrote: what a user write costs the device, flushing included.
    pub device_writes: u64,
    pub device_write_bytes: u64,
    pub device_fsyncs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Owner {
    Op(usize),
    Flusher,
    /// The group commit's fsync ([`super::group_commit`]).
    Fsync,
    /// Several ops' journal writes merged into one request ([`super::journal_batch`]).
    JournalRun,
}

pub(super) enum OpState {
    Read(ReadOp),
    Write(WriteOp),
    Sync(SyncOp),
    Journal(JournalOp),
}

pub(super) struct OpSlot {
    pub id: OpId,
    pub state: OpState,
    pub pending_io: u32,
    pub error: Option<OpError>,
}

pub struct Blockstore<D: Disk> {
    pub(super) disk: Option<D>,
    pub(super) sb: Superblock,
    pub(super) config: BlockstoreConfig,
    pub(super) clean: CleanIndex,
    pub(super) dirty: DirtyMap,
    /// Objects by PG for listings (`pg_index.rs`; a cache, hence the cell).
    pg_index: std::cell::RefCell<super::pg_index::PgIndex>,
    pub(super) alloc: Allocator,
    pub(super) journal: JournalRing,
    pub(super) flusher: Flusher,
    /// Metadata slots of purged objects still to be emptied by the flusher.
    pub(super) pending_clears: Vec<PendingClear>,
    pub(super) slots: Vec<Option<OpSlot>>,
    free_slots: Vec<usize>,
    next_op_id: u64,
    next_tag: u64,
    /// In-flight disk requests: tag -> (owner, is a write).
    inflight: BTreeMap<u64, (Owner, bool)>,
    /// Every journal entry before this sequence number is durable (covered by a completed
    /// fsync that was submitted after the entry's write completed).
    pub(super) durable_below: u64,
    /// Sequence numbers of journal entries whose writes have not completed yet.
    pub(super) inflight_journal: std::collections::BTreeSet<u64>,
    /// Syncs waiting for earlier writes to complete before their fsync.
    pub(super) sync_waiters: Vec<usize>,
    pub(super) fsyncs: super::group_commit::FsyncGroups,
    pub(super) journal_batch: super::journal_batch::JournalBatch,
    /// Ops waiting for journal or data space.
    pub(super) space_waiters: VecDeque<usize>,
    completions: Vec<Completion>,
    io_done: Vec<IoCompletion>,
    /// Bumped whenever data may change under an in-flight read (in-place flush, block reuse).
    pub(super) mutation_gen: u64,
    pub(super) stats: BlockstoreStats,
    /// Objects known lost or corrupted at rest (see [`super::damage`]).
    pub(super) damaged: BTreeMap<ObjectId, super::damage::DamagedObject>,
}

impl<D: Disk> Blockstore<D> {
    pub(super) fn assemble(disk: D, sb: Superblock, config: BlockstoreConfig) -> Blockstore<D> {
        let sectors = sb.sectors_per_block();
        let csum_bytes = sb.block_count * u64::from(sectors) * 4;
        let csums_in_memory = csum_bytes <= config.csum_memory_limit_bytes;
        let (ring_offset, ring_size) = sb.ring_area();
        let journal = JournalRing::new(ring_offset, ring_size);
        Blockstore {
            disk: Some(disk),
            clean: CleanIndex::new(sb.block_count as u32, sectors, csums_in_memory),
            dirty: DirtyMap::default(),
            pg_index: Default::default(),
            alloc: Allocator::new(sb.block_count as u32),
            flusher: Flusher::new(),
            pending_clears: Vec::new(),
            journal,
            sb,
            config,
            slots: Vec::new(),
            free_slots: Vec::new(),
            next_op_id: 1,
            next_tag: 1,
            inflight: BTreeMap::new(),
            durable_below: 0,
            inflight_journal: Default::default(),
            sync_waiters: Vec::new(),
            fsyncs: Default::default(),
            journal_batch: Default::default(),
            space_waiters: VecDeque::new(),
            completions: Vec::new(),
            io_done: Vec::new(),
            mutation_gen: 0,
            stats: BlockstoreStats::default(),
            damaged: BTreeMap::new(),
        }
    }

    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    pub fn stats(&self) -> BlockstoreStats {
        self.stats
    }

    pub fn block_size(&self) -> u32 {
        self.sb.block_size
    }

    pub fn bitmap_granularity(&self) -> u32 {
        self.sb.bitmap_granularity
    }

    /// Bytes of the data area.
    pub fn size_bytes(&self) -> u64 {
        self.sb.data_size()
    }

    /// Bytes of the data area not holding any object version.
    pub fn free_bytes(&self) -> u64 {
        self.alloc.free_blocks() * u64::from(self.sb.block_size)
    }

    pub fn journal_used_bytes(&self) -> u64 {
        self.journal.used_bytes()
    }

    /// Bytes of memory held by the metadata index and the journal mirror.
    pub fn memory_bytes(&self) -> usize {
        self.clean.memory_bytes() + self.journal.size as usize
    }

    /// A one-paragraph summary of the in-memory state, for test failures and debugging.
    pub fn debug_summary(&self) -> String {
        let mut chains: Vec<String> = self
            .dirty
            .iter()
            .map(|(oid, chain)| {
                let versions: Vec<String> = chain
                    .iter()
                    .map(|e| {
                        let kind = match &e.kind {
                            DirtyKind::Small { .. } => "small".to_string(),
                            DirtyKind::Big { block, .. } => format!("big{block}"),
                            DirtyKind::Delete => "del".to_string(),
                        };
                        format!(
                            "v{}@{}{}{}{kind}",
                            e.version,
                            e.seq,
                            if e.stable { "s" } else { "u" },
                            if e.written { "" } else { "!" }
                        )
                    })
                    .collect();
                format!("{oid}: [{}]", versions.join(" "))
            })
            .collect();
        chains.sort();
        format!(
            "journal start seq {} pos {}, next seq {} pos {}, used {} of {}; flusher idle {} broken {:?}; free blocks {} pending {}; clean: {:?}; slots to empty: {:?}; chains: {}",
            self.journal.start_seq,
            self.journal.start_pos,
            self.journal.next_seq,
            self.journal.next_pos,
            self.journal.used_bytes(),
            self.journal.size,
            self.flusher.is_idle(),
            self.flusher.broken,
            self.alloc.free_blocks(),
            self.alloc.pending_blocks(),
            self.clean.iter().map(|(oid, c)| format!("{oid}@{}v{}{}", c.block, c.version, if c.tombstone { "del" } else { "" })).collect::<Vec<_>>(),
            self.pending_clears.iter().map(|p| (p.block, p.seq)).collect::<Vec<_>>(),
            chains.join("; ")
        )
    }

    pub fn csums_in_memory(&self) -> bool {
        self.clean.csums_in_memory()
    }

    /// Operations submitted and not yet completed (including the flusher's work).
    pub fn is_idle(&self) -> bool {
        self.slots.iter().all(Option::is_none)
            && self.flusher.is_idle()
            && self.fsyncs.is_idle()
            && self.inflight.is_empty()
    }

    pub(super) fn disk_mut(&mut self) -> &mut D {
        self.disk
            .as_mut()
            .expect("invariant: the disk is present until into_disk/close")
    }

    /// Starts an operation; its result comes out of [`Blockstore::take_completions`].
    pub fn submit(&mut self, op: Op) -> OpId {
        let id = OpId(self.next_op_id);
        self.next_op_id += 1;
        let state = match op {
            Op::Read { oid, offset, len } => OpState::Read(ReadOp::new(oid, offset, len)),
            Op::Write {
                oid,
                version,
                offset,
                data,
                stable,
            } => OpState::Write(WriteOp::new(oid, version, offset, data, stable)),
            Op::Sync => OpState::Sync(SyncOp::default()),
            Op::Stabilize { oid, version } => OpState::Journal(JournalOp::stabilize(oid, version)),
            Op::Rollback { oid, version } => OpState::Journal(JournalOp::rollback(oid, version)),
            Op::Delete { oid, version } => OpState::Journal(JournalOp::delete(oid, version)),
            Op::Purge { oid, version } => OpState::Journal(JournalOp::purge(oid, version)),
        };
        let slot = OpSlot {
            id,
            state,
            pending_io: 0,
            error: None,
        };
        let index = match self.free_slots.pop() {
            Some(index) => {
                self.slots[index] = Some(slot);
                index
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        self.start_op(index);
        self.after_progress();
        id
    }

    /// Moves finished operations into `out`.
    pub fn take_completions(&mut self, out: &mut Vec<Completion>) {
        out.append(&mut self.completions);
    }

    /// Processes disk completions; with `wait`, blocks until at least one arrives (unless
    /// nothing is in flight).
    ///
    /// Returns only when every request the blockstore queued has been handed to the
    /// device: completions start the next step of their operation (a journal write's
    /// completion starts the data write, a flush batch its next phase, a sync its fsync),
    /// and the OSD polls again only when the device signals a completion. A request left
    /// queued would wait for an unrelated event (a 10 ms tick used to hide this).
    pub fn poll(&mut self, wait: bool) -> Result<(), BlockstoreError> {
        let mut min = usize::from(wait && !self.inflight.is_empty());
        loop {
            self.submit_journal_batch();
            let mut done = std::mem::take(&mut self.io_done);
            let result = self.disk_mut().poll(min, &mut done);
            for completion in done.drain(..) {
                let Some((owner, _)) = self.inflight.remove(&completion.tag) else {
                    tracing::error!(
                        tag = completion.tag,
                        "completion for an unknown disk request"
                    );
                    continue;
                };
                match owner {
                    Owner::Op(index) => self.op_io_done(index, completion.result),
                    Owner::Flusher => self.flusher_io_done(completion.result),
                    Owner::Fsync => self.group_fsync_done(completion.result),
                    Owner::JournalRun => self.journal_run_done(completion.tag, completion.result),
                }
            }
            self.io_done = done;
            result?;
            self.after_progress();
            if self.disk_mut().unsubmitted() == 0 && self.journal_batch.is_empty() {
                return Ok(());
            }
            min = 0;
        }
    }

    /// Submits `op` and drives the blockstore until it completes (for tools and tests).
    pub fn run(&mut self, op: Op) -> Result<OpOutput, OpError> {
        let id = self.submit(op);
        let mut found = None;
        let mut buffer = Vec::new();
        loop {
            self.take_completions(&mut buffer);
            for completion in buffer.drain(..) {
                if completion.id == id {
                    found = Some(completion.result);
                } else {
                    self.completions.push(completion);
                }
            }
            if let Some(result) = found {
                return result;
            }
            if let Err(error) = self.poll(true) {
                return Err(OpError::new(errno::EIO, error.to_string()));
            }
        }
    }

    /// Drives everything in flight (ops and flusher) to completion.
    pub fn drain(&mut self) -> Result<(), BlockstoreError> {
        while !self.inflight.is_empty() || !self.flusher.is_idle() || !self.sync_waiters.is_empty()
        {
            self.poll(true)?;
        }
        Ok(())
    }

    /// Flushes every stable version and trims the journal as far as possible.
    pub fn flush_all(&mut self) -> Result<(), BlockstoreError> {
        self.drain()?;
        loop {
            self.flusher.force = true;
            self.after_progress();
            if self.flusher.is_idle() {
                break;
            }
            self.drain()?;
        }
        self.flusher.force = false;
        Ok(())
    }

    /// Lists all versions of objects in PG `pg_num` of `pg_count` (objects of inodes in
    /// `min_inode..=max_inode` only), sorted by object and version. Tombstones (journaled
    /// and flushed deletes) are listed with `deleted: true`; purged objects are not listed.
    /// One page of [`Blockstore::list`]: the versions of at most `max_objects` objects at
    /// or after `from` (in object order), and whether more may follow.
    pub fn list_page(
        &self,
        pg_num: u32,
        pg_count: u32,
        pg_stripe_size: u64,
        from: ObjectId,
        max_inode: u64,
        max_objects: usize,
    ) -> (Vec<ListedVersion>, bool) {
        let mut all = self.list(pg_num, pg_count, pg_stripe_size, from.inode, max_inode);
        all.retain(|v| v.oid >= from);
        let mut objects = 0;
        let mut end = all.len();
        for (i, version) in all.iter().enumerate() {
            if i == 0 || all[i - 1].oid != version.oid {
                if objects == max_objects {
                    end = i;
                    break;
                }
                objects += 1;
            }
        }
        let more = end < all.len();
        all.truncate(end);
        (all, more)
    }

    /// Whether a write, delete or other change of an object of the PG (the same filter
    /// as [`Blockstore::list`]) was submitted and has not completed: a listing taken now
    /// would not show it, yet it may still land. Peering waits until there is none.
    pub fn changes_in_flight(
        &self,
        pg_num: u32,
        pg_count: u32,
        pg_stripe_size: u64,
        min_inode: u64,
        max_inode: u64,
    ) -> bool {
        let filter = (pg_num, pg_count, pg_stripe_size, min_inode, max_inode);
        let in_pg = |oid: ObjectId| in_listing(&oid, filter);
        self.slots.iter().flatten().any(|slot| match &slot.state {
            OpState::Write(op) => in_pg(op.oid()),
            OpState::Journal(op) => in_pg(op.oid()),
            OpState::Read(_) | OpState::Sync(_) => false,
        })
    }

    /// Every version of every object of PG `pg_num` (of `pg_count`, objects placed by
    /// `pg_stripe_size`) with an inode in `min_inode..=max_inode` (`pg_count` 0: all),
    /// sorted. Within one pool this looks only at the PG's objects ([`super::pg_index`]).
    pub fn list(
        &self,
        pg_num: u32,
        pg_count: u32,
        pg_stripe_size: u64,
        min_inode: u64,
        max_inode: u64,
    ) -> Vec<ListedVersion> {
        let pool = min_inode >> 48;
        if pg_count == 0 || max_inode >> 48 != pool {
            return self.list_by_scan(pg_num, pg_count, pg_stripe_size, min_inode, max_inode);
        }
        let mut index = self.pg_index.borrow_mut();
        let pg = (pg_num, pg_count, pg_stripe_size);
        let candidates = index.candidates(pool, pg, &self.clean, &self.dirty);
        let mut out = Vec::new();
        // Prune purged objects while listing the others.
        candidates.retain(|oid| {
            let clean = self.clean.get(oid);
            let dirty = self.dirty.get(oid);
            if clean.is_none() && dirty.is_none() {
                return false;
            }
            if oid.inode < min_inode || oid.inode > max_inode {
                return true;
            }
            if let Some(clean) = clean {
                out.push(ListedVersion {
                    oid: *oid,
                    version: clean.version,
                    stable: true,
                    deleted: clean.tombstone,
                });
            }
            for entry in dirty.into_iter().flatten().filter(|e| e.written) {
                out.push(ListedVersion {
                    oid: *oid,
                    version: entry.version,
                    stable: entry.stable,
                    deleted: matches!(entry.kind, DirtyKind::Delete),
                });
            }
            true
        });
        index.pruned(pool, pg_num);
        drop(index);
        out.sort();
        debug_assert_eq!(
            out,
            self.list_by_scan(pg_num, pg_count, pg_stripe_size, min_inode, max_inode),
            "the PG index lists what a scan finds"
        );
        out
    }

    /// [`Blockstore::list`] by looking at every object.
    fn list_by_scan(
        &self,
        pg_num: u32,
        pg_count: u32,
        pg_stripe_size: u64,
        min_inode: u64,
        max_inode: u64,
    ) -> Vec<ListedVersion> {
        let filter = (pg_num, pg_count, pg_stripe_size, min_inode, max_inode);
        let in_pg = |oid: &ObjectId| in_listing(oid, filter);
        let mut out = Vec::new();
        for (oid, clean) in self.clean.iter() {
            if in_pg(&oid) {
                out.push(ListedVersion {
                    oid,
                    version: clean.version,
                    stable: true,
                    deleted: clean.tombstone,
                });
            }
        }
        for (oid, chain) in &self.dirty {
            if !in_pg(oid) {
                continue;
            }
            for entry in chain.iter().filter(|e| e.written) {
                out.push(ListedVersion {
                    oid: *oid,
                    version: entry.version,
                    stable: entry.stable,
                    deleted: matches!(entry.kind, DirtyKind::Delete),
                });
            }
        }
        out.sort();
        out
    }

    /// Where the flushed data of `oid` starts on the device, if it has a data block (tests
    /// use it to damage an object at rest).
    pub fn data_offset_of(&self, oid: &ObjectId) -> Option<u64> {
        let block = self.clean.block_of(oid)?;
        Some(self.sb.block_offset(block))
    }

    /// The newest version of an object (completed or in flight; a tombstone counts), 0 if
    /// none is known (never written, or purged).
    pub fn object_version(&self, oid: &ObjectId) -> u64 {
        self.latest_version(oid)
    }

    /// The newest version of an object (completed or in flight), 0 if none.
    pub(super) fn latest_version(&self, oid: &ObjectId) -> u64 {
        match self.dirty.get(oid).and_then(|chain| chain.last()) {
            Some(entry) => entry.version,
            None => self.clean.get(oid).map_or(0, |clean| clean.version),
        }
    }

    /// `offset..offset+len` must be aligned to the bitmap granularity and inside a block.
    pub(super) fn check_range(&self, what: &str, offset: u32, len: u32) -> Result<(), OpError> {
        let granularity = self.sb.bitmap_granularity;
        let block_size = self.sb.block_size;
        if !offset.is_multiple_of(granularity)
            || !len.is_multiple_of(granularity)
            || u64::from(offset) + u64::from(len) > u64::from(block_size)
        {
            let message = format!("{what} {offset}+{len} is not aligned to {granularity} or exceeds the {block_size}-byte block");
            return Err(OpError::new(errno::EINVAL, message));
        }
        Ok(())
    }

    /// The version a new write or delete gets: `requested`, which must be newer than the
    /// object's newest version, or (0) the one after it.
    pub(super) fn next_version(
        &self,
        what: &str,
        oid: &ObjectId,
        requested: u64,
    ) -> Result<u64, OpError> {
        let latest = self.latest_version(oid);
        match requested {
            0 => Ok(latest + 1),
            v if v <= latest => {
                let message = format!(
                    "{what} version {v} of {oid} is not newer than the current version {latest}"
                );
                Err(OpError::new(errno::EINVAL, message))
            }
            v => Ok(v),
        }
    }

    /// Whether the object currently has data (its newest version is not a tombstone).
    pub fn object_exists(&self, oid: &ObjectId) -> bool {
        match self.dirty.get(oid).and_then(|chain| chain.last()) {
            Some(entry) => !matches!(entry.kind, DirtyKind::Delete),
            None => self.clean.get(oid).is_some_and(|c| !c.tombstone),
        }
    }

    /// Forgets an object in memory (a purge appended as journal entry `seq`): its journaled
    /// versions and its clean entry. Blocks are freed once the journal start passes `seq`.
    /// Returns the clean block, whose metadata slot the caller must get emptied on disk.
    pub(super) fn forget_object(&mut self, oid: &ObjectId, seq: u64) -> Option<u32> {
        if let Some(chain) = self.dirty.remove(oid) {
            for block in chain.iter().filter_map(DirtyEntry::big_block) {
                self.alloc.free_later(block, seq);
            }
        }
        let block = self.clean.remove(oid);
        if let Some(block) = block {
            self.alloc.free_later(block, seq);
        }
        self.mutation_gen += 1;
        block
    }

    /// Appends a version to an object's chain. A stable version makes every older one
    /// stable too, so stable versions always form a prefix of the chain.
    pub(super) fn push_dirty(&mut self, oid: ObjectId, mut entry: DirtyEntry) {
        let chain = self.dirty.entry(oid).or_default();
        if chain.is_empty() {
            self.pg_index.get_mut().object_added(oid);
        }
        if entry.stable {
            entry.stable_seq = entry.seq;
            for older in chain.iter_mut().filter(|older| !older.stable) {
                older.stable = true;
                older.stable_seq = entry.seq;
            }
        }
        chain.push(entry);
    }

    /// Drops the unstable versions newer than `version` (a rollback); their blocks are
    /// freed once the journal start passes `freed_at_seq`.
    pub(super) fn drop_unstable_after(&mut self, oid: &ObjectId, version: u64, freed_at_seq: u64) {
        let Some(chain) = self.dirty.get_mut(oid) else {
            return;
        };
        let cut = chain
            .iter()
            .position(|e| e.version > version && !e.stable)
            .unwrap_or(chain.len());
        let dropped: Vec<DirtyEntry> = chain.drain(cut..).collect();
        if chain.is_empty() {
            self.dirty.remove(oid);
        }
        for block in dropped.iter().filter_map(DirtyEntry::big_block) {
            self.alloc.free_later(block, freed_at_seq);
        }
    }

    /// Removes one version from a chain (a failed write); frees its block if it had one.
    pub(super) fn remove_dirty_version(&mut self, oid: &ObjectId, version: u64) {
        let Some(chain) = self.dirty.get_mut(oid) else {
            return;
        };
        if let Some(index) = chain.iter().position(|e| e.version == version) {
            let entry = chain.remove(index);
            if let Some(block) = entry.big_block() {
                self.alloc.free_later(block, self.journal.next_seq);
            }
        }
        if chain.is_empty() {
            self.dirty.remove(oid);
        }
    }

    /// Queues a disk request on behalf of `owner`.
    ///
    /// # Safety
    /// `buf` must stay valid and otherwise untouched until the completion is processed:
    /// callers pass buffers owned by the op slot, the flusher or the journal mirror, none
    /// of which is dropped or reused while it has requests in flight.
    pub(super) unsafe fn submit_io(
        &mut self,
        owner: Owner,
        kind: IoKind,
        offset: u64,
        buf: *mut u8,
        len: usize,
    ) {
        let tag = self.reserve_tag(owner, kind == IoKind::Write);
        // SAFETY: forwarded from this function's contract.
        unsafe { self.submit_reserved(tag, kind, offset, buf, len) };
    }

    /// Takes the next tag for a request of `owner` and counts it in flight (and as a
    /// pending I/O of its op) from now on, before it reaches the device.
    pub(super) fn reserve_tag(&mut self, owner: Owner, is_write: bool) -> u64 {
        let tag = self.next_tag;
        self.next_tag += 1;
        self.inflight.insert(tag, (owner, is_write));
        if let Owner::Op(index) = owner {
            if let Some(slot) = self.slots[index].as_mut() {
                slot.pending_io += 1;
            }
        }
        tag
    }

    /// Forgets a reserved tag that completed as part of another request.
    pub(super) fn forget_tag(&mut self, tag: u64) {
        self.inflight.remove(&tag);
    }

    /// Sends the request of a tag from [`Blockstore::reserve_tag`] to the device.
    ///
    /// # Safety
    /// As [`Blockstore::submit_io`].
    pub(super) unsafe fn submit_reserved(
        &mut self,
        tag: u64,
        kind: IoKind,
        offset: u64,
        buf: *mut u8,
        len: usize,
    ) {
        debug_assert!(self.inflight.contains_key(&tag), "invariant: reserved tag");
        match kind {
            IoKind::Write => {
                self.stats.device_writes += 1;
                self.stats.device_write_bytes += len as u64;
            }
            IoKind::Fsync => self.stats.device_fsyncs += 1,
            IoKind::Read => {}
        }
        let request = IoRequest {
            tag,
            kind,
            offset,
            buf,
            len,
        };
        // SAFETY: forwarded from this function's contract.
        unsafe { self.disk_mut().submit(request) };
    }

    /// Every journal entry before this sequence number has reached the disk (modulo fsync).
    pub(super) fn journal_complete_below(&self) -> u64 {
        self.inflight_journal
            .first()
            .copied()
            .unwrap_or(self.journal.next_seq)
    }

    /// The tag the next request will get (sync barriers wait for writes below it).
    pub(super) fn next_tag(&self) -> u64 {
        self.next_tag
    }

    /// Whether any write submitted before `tag` is still in flight.
    pub(super) fn writes_in_flight_before(&self, tag: u64) -> bool {
        self.inflight
            .range(..tag)
            .any(|(_, (_, is_write))| *is_write)
    }

    pub(super) fn slot_mut(&mut self, index: usize) -> &mut OpSlot {
        self.slots[index]
            .as_mut()
            .expect("invariant: slot of a live op")
    }

    /// Finishes an op and frees its slot.
    pub(super) fn complete(&mut self, index: usize, result: Result<OpOutput, OpError>) {
        let slot = self.slots[index]
            .take()
            .expect("invariant: completing a live op");
        debug_assert_eq!(
            slot.pending_io, 0,
            "invariant: no I/O in flight for a completed op"
        );
        self.free_slots.push(index);
        self.completions.push(Completion {
            id: slot.id,
            result,
        });
    }

    fn start_op(&mut self, index: usize) {
        let kind = match &self.slot_mut(index).state {
            OpState::Read(_) => 0,
            OpState::Write(_) => 1,
            OpState::Sync(_) => 2,
            OpState::Journal(_) => 3,
        };
        match kind {
            0 => self.start_read(index),
            1 => self.start_write(index),
            2 => self.start_sync(index),
            _ => self.start_journal_op(index),
        }
    }

    pub(super) fn op_io_done(&mut self, index: usize, result: i32) {
        let Some(slot) = self.slots[index].as_mut() else {
            tracing::error!(index, "disk completion for a finished op");
            return;
        };
        slot.pending_io -= 1;
        if result < 0 && slot.error.is_none() {
            slot.error = Some(OpError::new(
                -result,
                format!("disk I/O failed: {}", errno::name(-result)),
            ));
        }
        if slot.pending_io > 0 {
            return;
        }
        let kind = match &slot.state {
            OpState::Read(_) => 0,
            OpState::Write(_) => 1,
            OpState::Sync(_) => 2,
            OpState::Journal(_) => 3,
        };
        match kind {
            0 => self.read_io_done(index),
            1 => self.write_io_done(index),
            2 => unreachable!("invariant: group commit owns the fsyncs, not the sync ops"),
            _ => self.journal_op_io_done(index),
        }
    }

    /// Runs after anything changed: release sync barriers, start the flusher, retry ops
    /// waiting for space.
    fn after_progress(&mut self) {
        let waiters = std::mem::take(&mut self.sync_waiters);
        for index in waiters {
            self.try_sync(index);
        }
        self.maybe_start_flush();
        if !self.space_waiters.is_empty() {
            let waiting: Vec<usize> = self.space_waiters.drain(..).collect();
            for index in waiting {
                self.start_op(index);
            }
            if !self.space_waiters.is_empty() {
                self.maybe_start_flush();
                if self.flusher.is_idle() && self.inflight_journal.is_empty() {
                    // Nothing can free space (no flush to run, no journal write whose
                    // completion could make one possible): the waiters get ENOSPC.
                    tracing::debug!(
                        used = self.journal.used_bytes(),
                        size = self.journal.size,
                        free_blocks = self.alloc.free_blocks(),
                        dirty = self.dirty.len(),
                        complete_below = self.journal_complete_below(),
                        waiters = self.space_waiters.len(),
                        summary = self.debug_summary(),
                        "ENOSPC"
                    );
                    let stuck: Vec<usize> = self.space_waiters.drain(..).collect();
                    for index in stuck {
                        self.complete(
                            index,
                            Err(OpError::new(
                                errno::ENOSPC,
                                "no free space in the journal or the data area",
                            )),
                        );
                    }
                }
            }
        }
    }

    /// Waits for everything in flight, then writes a clean-shutdown journal header and
    /// returns the disk.
    pub fn close(mut self) -> Result<D, BlockstoreError> {
        self.drain()?;
        self.write_journal_header_sync(true)?;
        Ok(self
            .disk
            .take()
            .expect("invariant: disk present until close"))
    }

    /// Synchronous single request (open, close): submit and wait for its completion.
    pub(super) fn io_sync(
        &mut self,
        kind: IoKind,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), BlockstoreError> {
        debug_assert!(
            self.inflight.is_empty(),
            "invariant: synchronous I/O only when idle"
        );
        let disk = self.disk.as_mut().expect("invariant: disk present");
        io_sync(disk, kind, offset, buf)
    }
}

impl Blockstore<super::sim::SimDisk> {
    /// The simulated disk, to inject faults while the store runs.
    pub fn sim_disk_mut(&mut self) -> &mut super::sim::SimDisk {
        self.disk_mut()
    }

    /// Gives the disk back without any further I/O, abandoning whatever is in flight: the
    /// moment of a simulated power loss. Only for the simulated disk, whose requests never
    /// reference our memory after submission (a real disk would still be writing it).
    pub fn into_disk(mut self) -> super::sim::SimDisk {
        self.inflight.clear();
        self.disk
            .take()
            .expect("invariant: disk present until into_disk")
    }
}

/// Reads and checks the superblock of a device.
pub(super) fn read_superblock<D: Disk>(disk: &mut D) -> Result<Superblock, BlockstoreError> {
    let mut sector = AlignedBuf::new(super::layout::SECTOR as usize);
    io_sync(disk, IoKind::Read, 0, &mut sector)?;
    Superblock::decode(&sector, disk.size())
}

/// One request, waited for. For open/prepare/close paths only.
pub(super) fn io_sync<D: Disk>(
    disk: &mut D,
    kind: IoKind,
    offset: u64,
    buf: &mut [u8],
) -> Result<(), BlockstoreError> {
    let tag = u64::MAX;
    let request = IoRequest {
        tag,
        kind,
        offset,
        buf: buf.as_mut_ptr(),
        len: buf.len(),
    };
    // SAFETY: `buf` is borrowed mutably for this whole function, which waits for the
    // request's completion before returning.
    unsafe { disk.submit(request) };
    let mut done = Vec::new();
    loop {
        disk.poll(1, &mut done)?;
        if let Some(completion) = done.iter().find(|c| c.tag == tag) {
            if completion.result < 0 {
                let what = match kind {
                    IoKind::Read => "read",
                    IoKind::Write => "write",
                    IoKind::Fsync => "fsync",
                };
                return Err(BlockstoreError::Disk {
                    what,
                    errno: -completion.result,
                });
            }
            return Ok(());
        }
    }
}

impl<D: Disk> Drop for Blockstore<D> {
    fn drop(&mut self) {
        // The kernel may still be reading or writing our buffers: wait for it.
        if let Some(disk) = self.disk.as_mut() {
            let mut done = Vec::new();
            while disk.in_flight() > 0 {
                if disk.poll(1, &mut done).is_err() {
                    break;
                }
                done.clear();
            }
        }
    }
}
