//! Background recovery and rebalance of active PGs.
//!
//! Peering decides the newest version of every object (data or tombstone) and activates
//! the PG at once; the objects some live member lacks become [`RecoveryItem`]s in the PG's
//! [`RecoveryQueue`], copied afterwards while the PG serves I/O:
//!
//! | object | client read | client write / delete | background |
//! |---|---|---|---|
//! | clean | served locally | runs | - |
//! | pending, the primary has the newest | waits: the item starts at once, the read follows | waits: the item starts at once, the write follows | copied when its turn comes |
//! | pending, the primary lacks it | same (a primary out of space: served by the copy's source, a proxied `SEC_READ`) | same | same |
//! | running (a copy holds the object's queue) | queued behind the copy | queued behind the copy | - |
//!
//! A copy holds the object's queue like a write does, so no client write can run between
//! reading the source and writing the targets; a write never starts on an object a live
//! member lacks, so every write reaches members that hold the object's full newest state.
//! A copy moves only the written part of the object (the span of its bitmap) unless a
//! target holds an older live version (then the whole block, so nothing stale survives).
//! Tombstones are copied as deletes at the same version.
//!
//! Scheduling is per OSD: at most `recovery_queue_depth` background copies in flight
//! (copies started for a client op do not wait for a slot), `recovery_pg_switch` copies
//! from one PG before moving to the next, `no_recovery` / `no_rebalance` pause degraded /
//! misplaced copies (`/config/global`, Vitastor's names and meaning). When the queue of a
//! PG is empty every live member holds everything the recorded sets held: the primary
//! trims `/pg/history` to the live set (`peering.rs`), and tombstones are purged when
//! every OSD that may hold a copy is live.
//!
//! Any failed step (a source or target error or disconnect) sends the PG back to peering,
//! which lists again and plans from what is there.

use super::peering::Listed;
use super::{Osd, Waiter};
use crate::blockstore::{AlignedBuf, Disk, Op, OpError, OpOutput};
use crate::cluster::PgKey;
use std::collections::BTreeMap;
use vitastor_proto::errno;
use vitastor_proto::wire::request::{SecDelete, SecRw};
use vitastor_proto::wire::{Reply, ReplyBody, RequestBody};
use vitastor_proto::ObjectId;

/// How long a member that ran out of space is left out of a PG's live set (ms).
pub(super) const FULL_RETRY_MS: u64 = 30_000;

/// Vitastor's defaults.
pub(super) const DEFAULT_RECOVERY_QUEUE_DEPTH: usize = 1;
pub(super) const DEFAULT_RECOVERY_PG_SWITCH: u64 = 128;

/// What a recovery request was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RecoveryStep {
    Read,
    LocalWrite,
    LocalSync,
    PeerWrite,
}

/// Why an object is copied: it has fewer copies of its newest version than the PG has
/// members (degraded: recovery), or enough, but some on OSDs outside the set (misplaced:
/// rebalance).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CopyKind {
    Degraded,
    Misplaced,
}

/// One object to copy: its newest version lives on `source` and is missing on `targets`.
#[derive(Debug)]
pub(super) struct RecoveryItem {
    pub version: u64,
    pub deleted: bool,
    pub source: u64,
    /// Other holders of the newest version, tried in turn when the source's copy fails
    /// its checksums (-EDOM).
    pub other_sources: Vec<u64>,
    /// EC stripes: (chunk, OSD) holders of the committed version to rebuild from
    /// (`ec_rebuild.rs`; `source` is unused).
    pub ec_sources: Vec<(u32, u64)>,
    pub targets: Vec<u64>,
    pub kind: CopyKind,
    /// A target holds an older live version: copy the whole block, not just the written
    /// span, so none of the old data survives.
    pub whole: bool,
    /// Copies not acknowledged yet.
    pub(super) pending: usize,
    /// Started for a client op (does not take a `recovery_queue_depth` slot).
    urgent: bool,
    pub(super) bytes: u64,
    /// The primary's own copy failed for lack of space (the item goes back to the queue
    /// for it alone once the other targets answered).
    local_full: bool,
    /// When the copy started (monotonic microseconds; `recovery_tune.rs`).
    started_us: u64,
}

impl RecoveryItem {
    pub fn new(
        newest: Listed,
        source: u64,
        targets: Vec<u64>,
        kind: CopyKind,
        whole: bool,
    ) -> RecoveryItem {
        debug_assert!(!targets.is_empty(), "an item has somewhere to go");
        debug_assert!(newest.version != 0, "version 0 is never listed");
        RecoveryItem {
            version: newest.version,
            deleted: newest.deleted,
            source,
            other_sources: Vec::new(),
            ec_sources: Vec::new(),
            targets,
            kind,
            whole,
            pending: 0,
            urgent: false,
            bytes: 0,
            local_full: false,
            started_us: 0,
        }
    }
}

/// The copies an active PG still has to make.
#[derive(Debug, Default)]
pub(super) struct RecoveryQueue {
    pending: BTreeMap<ObjectId, RecoveryItem>,
    /// Started copies; each holds its object's queue in `Pg::busy`.
    running: BTreeMap<ObjectId, RecoveryItem>,
    /// Background copies of `running` (they hold a `recovery_queue_depth` slot).
    pub background: usize,
    pub done_objects: u64,
    pub done_bytes: u64,
    /// Tombstones seen by peering: purged once the history is trimmed, if allowed.
    pub tombstones: Vec<(ObjectId, u64)>,
    /// Listed OSDs outside the set and what they hold: dropped once clean (`cleanup.rs`).
    pub foreign: BTreeMap<u64, Vec<(ObjectId, u64)>>,
    /// The history trim is on its way to etcd.
    pub trimming: bool,
    /// Whether `/pg/history` still names sets other than the live one.
    pub history_untrimmed: bool,
}

impl RecoveryQueue {
    pub fn new(items: BTreeMap<ObjectId, RecoveryItem>, untrimmed: bool) -> RecoveryQueue {
        RecoveryQueue {
            pending: items,
            history_untrimmed: untrimmed,
            ..RecoveryQueue::default()
        }
    }

    /// No copies left.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.running.is_empty()
    }

    /// Objects left to copy: (degraded, misplaced).
    pub fn left(&self) -> (u64, u64) {
        let mut counts = (0, 0);
        for item in self.pending.values().chain(self.running.values()) {
            match item.kind {
                CopyKind::Degraded => counts.0 += 1,
                CopyKind::Misplaced => counts.1 += 1,
            }
        }
        counts
    }

    /// The item for `oid` if it still has to be (or is being) copied.
    pub fn item(&self, oid: &ObjectId) -> Option<&RecoveryItem> {
        self.pending.get(oid).or_else(|| self.running.get(oid))
    }

    /// Every object still to copy (pending or running).
    pub fn items(&self) -> impl Iterator<Item = (&ObjectId, &RecoveryItem)> {
        self.pending.iter().chain(self.running.iter())
    }

    pub fn is_pending(&self, oid: &ObjectId) -> bool {
        self.pending.contains_key(oid)
    }

    /// The running copies (their objects' queues must be released when dropped).
    pub fn running_objects(&self) -> impl Iterator<Item = &ObjectId> {
        self.running.keys()
    }

    /// The next pending object allowed by the flags whose queue is free.
    /// `full`: an OSD out of space (copies to it wait).
    fn next_background(
        &self,
        busy: &std::collections::HashMap<ObjectId, std::collections::VecDeque<u64>>,
        no_recovery: bool,
        no_rebalance: bool,
        full: Option<u64>,
    ) -> Option<ObjectId> {
        self.pending
            .iter()
            .find(|(oid, item)| {
                let paused = match item.kind {
                    CopyKind::Degraded => no_recovery,
                    CopyKind::Misplaced => no_rebalance,
                };
                let blocked = full.is_some_and(|osd| item.targets.contains(&osd));
                !paused && !blocked && !busy.contains_key(oid)
            })
            .map(|(oid, _)| *oid)
    }
}

impl<D: Disk> Osd<D> {
    fn recovery_queue_depth(&self) -> usize {
        self.view
            .global
            .recovery_queue_depth
            .map_or(DEFAULT_RECOVERY_QUEUE_DEPTH, |depth| depth.max(1) as usize)
    }

    /// Ends a recovery tuning round when it is due (`recovery_tune.rs`).
    pub(super) fn tune_recovery(&mut self) {
        let depth = self.recovery_queue_depth();
        if let Some(pause) = self
            .recovery_tuner
            .tick(self.now_us, depth, &self.view.global)
        {
            tracing::debug!(pause_us = pause, "recovery pause tuned");
        }
    }

    /// Starts background copies while slots are free, PG after PG.
    pub(super) fn pump_recovery(&mut self) {
        // Recovery yields to client I/O: the tuned pause after the last copy.
        if self.lease_lost || self.now_us < self.recovery_tuner.next_copy_at_us {
            return;
        }
        let depth = self.recovery_queue_depth();
        let switch_after = self
            .view
            .global
            .recovery_pg_switch
            .unwrap_or(DEFAULT_RECOVERY_PG_SWITCH)
            .max(1);
        let no_recovery = self.view.global.no_recovery.unwrap_or(false);
        let no_rebalance = self.view.global.no_rebalance.unwrap_or(false);
        let full = (self.now_ms < self.full_until_ms).then_some(self.settings.osd_num);
        let mut idle_pgs = 0;
        while self.recovery_inflight < depth && idle_pgs <= self.pgs.len() {
            let candidates: Vec<PgKey> = self
                .pgs
                .range(self.recovery_cursor..)
                .chain(self.pgs.range(..self.recovery_cursor))
                .filter(|(_, pg)| pg.base == super::PgBase::Active && pg.recovery.is_some())
                .map(|(key, _)| *key)
                .collect();
            let Some(&key) = candidates.first() else {
                return;
            };
            let next = self.pgs.get(&key).and_then(|pg| {
                let queue = pg.recovery.as_ref()?;
                queue.next_background(&pg.busy, no_recovery, no_rebalance, full)
            });
            let Some(oid) = next.filter(|_| self.recovery_switch_count < switch_after) else {
                // Nothing (allowed) to start here now, or its turn is over: next PG.
                self.recovery_switch_count = 0;
                self.recovery_cursor = self.pg_after(key);
                idle_pgs += 1;
                if candidates.len() == 1 && next.is_none() {
                    return;
                }
                continue;
            };
            idle_pgs = 0;
            self.recovery_cursor = key;
            self.recovery_switch_count += 1;
            self.start_copy(key, oid, false);
        }
    }

    /// The PG key after `key` in order (wrapping).
    fn pg_after(&self, key: PgKey) -> PgKey {
        use std::ops::Bound::{Excluded, Unbounded};
        self.pgs
            .range((Excluded(key), Unbounded))
            .next()
            .or_else(|| self.pgs.iter().next())
            .map_or(key, |(key, _)| *key)
    }

    /// Before a client op touches `oid`: if the object still has to be copied to a live
    /// member, starts that copy now (it takes the object's queue) and returns `true`: the
    /// op must queue behind it. Reads too, even when the primary has the newest version:
    /// that version may be a write whose client never got an answer, held by fewer than
    /// all live members; once a read showed it, it must survive the loss of any one of
    /// them (monotonic reads), so it is copied to every live member first.
    pub(super) fn recover_first(&mut self, key: PgKey, oid: ObjectId) -> bool {
        let Some(pg) = self.pgs.get(&key) else {
            return false;
        };
        let Some(queue) = pg.recovery.as_ref() else {
            return false;
        };
        if queue.item(&oid).is_none() {
            return false;
        }
        if queue.is_pending(&oid) {
            debug_assert!(
                !pg.busy.contains_key(&oid),
                "an object with a pending copy has no op running"
            );
            self.start_copy(key, oid, true);
        }
        true
    }

    /// Moves `oid` from pending to running, takes its queue and reads the source.
    fn start_copy(&mut self, key: PgKey, oid: ObjectId, urgent: bool) {
        let Some(pg) = self.pgs.get_mut(&key) else {
            return;
        };
        let gen = pg.generation;
        let Some(queue) = pg.recovery.as_mut() else {
            return;
        };
        let Some(mut item) = queue.pending.remove(&oid) else {
            return;
        };
        item.urgent = urgent;
        item.started_us = self.now_us;
        if !urgent {
            queue.background += 1;
            self.recovery_inflight += 1;
        }
        let deleted = item.deleted;
        queue.running.insert(oid, item);
        let previous = pg.busy.insert(oid, Default::default());
        debug_assert!(previous.is_none(), "a copy starts only on a free object");
        if deleted {
            return self.copy_to_targets(key, gen, oid, None);
        }
        if self.pgs.get(&key).is_some_and(|pg| pg.ec.is_some()) {
            return self.ec_rebuild_read(key, gen, oid);
        }
        self.read_recovery_source(key, gen, oid);
    }

    /// Reads the running copy's source (the whole object).
    fn read_recovery_source(&mut self, key: PgKey, gen: u64, oid: ObjectId) {
        let me = self.settings.osd_num;
        let block_size = self.store.block_size();
        let epoch = self.pgs.get(&key).map_or(0, |pg| pg.epoch);
        let Some(item) = self.running_item(key, gen, &oid) else {
            return;
        };
        let (version, source) = (item.version, item.source);
        let waiter = Waiter::Recovery {
            pg: key,
            gen,
            oid,
            step: RecoveryStep::Read,
        };
        if source == me {
            let op = Op::Read {
                oid,
                offset: 0,
                len: block_size,
            };
            self.submit_store(op, waiter);
            return;
        }
        let rw = SecRw {
            oid,
            version,
            offset: 0,
            len: block_size,
            attr_len: 0,
            pg: key.1,
            epoch,
        };
        if !self.send_to_peer(source, RequestBody::SecRead(rw), &[], waiter) {
            self.recovery_failed(key, gen, "the recovery source disconnected");
        }
    }

    /// The source's copy of a running copy failed its checksums: read another holder of
    /// the same version if there is one (repeering would pick the same source again).
    /// Returns false if none is left.
    fn try_next_source(&mut self, key: PgKey, gen: u64, oid: ObjectId) -> bool {
        let Some(item) = self.running_item(key, gen, &oid) else {
            return true; // the PG moved on: nothing to do
        };
        let Some(next) = item.other_sources.pop() else {
            return false;
        };
        tracing::warn!(
            pool = key.0,
            pg = key.1,
            %oid,
            damaged = item.source,
            next,
            "the recovery source's copy is damaged; copying from another holder"
        );
        item.source = next;
        self.read_recovery_source(key, gen, oid);
        true
    }

    pub(super) fn recovery_local_done(
        &mut self,
        key: PgKey,
        gen: u64,
        oid: ObjectId,
        step: RecoveryStep,
        result: Result<OpOutput, OpError>,
    ) {
        match (step, result) {
            (
                RecoveryStep::Read,
                Ok(OpOutput::Read {
                    version,
                    bitmap,
                    data,
                }),
            ) => self.source_read(key, gen, oid, version, &bitmap, &data),
            (RecoveryStep::LocalWrite, Ok(_)) if self.sync_every_write() => {
                let waiter = Waiter::Recovery {
                    pg: key,
                    gen,
                    oid,
                    step: RecoveryStep::LocalSync,
                };
                self.submit_store(Op::Sync, waiter);
            }
            (_, Ok(_)) => self.recovery_write_done(key, gen, oid),
            (RecoveryStep::Read, Err(error))
                if error.errno == errno::EDOM && self.try_next_source(key, gen, oid) => {}
            (RecoveryStep::LocalWrite | RecoveryStep::LocalSync, Err(error))
                if error.errno == errno::ENOSPC =>
            {
                if let Some(item) = self.running_item(key, gen, &oid) {
                    item.local_full = true;
                }
                self.recovery_write_done(key, gen, oid)
            }
            (_, Err(error)) => self.recovery_failed(key, gen, &error.message),
        }
    }

    pub(super) fn recovery_peer_done(
        &mut self,
        key: PgKey,
        gen: u64,
        (oid, step): (ObjectId, RecoveryStep),
        result: Result<(Reply, Vec<u8>), i32>,
        from: Option<u64>,
    ) {
        match (step, result) {
            (RecoveryStep::Read, Ok((reply, payload))) => {
                let (version, attr_len) = match reply.body {
                    ReplyBody::SecRw { version, attr_len } => (version, attr_len as usize),
                    _ => (0, 0),
                };
                let bitmap = payload.get(..attr_len).unwrap_or_default();
                let data = payload.get(attr_len..).unwrap_or_default();
                self.source_read(key, gen, oid, version, bitmap, data);
            }
            (_, Ok(_)) => self.recovery_write_done(key, gen, oid),
            (RecoveryStep::Read, Err(errno::EDOM)) if self.try_next_source(key, gen, oid) => {}
            (RecoveryStep::PeerWrite, Err(errno::ENOSPC)) if from.is_some() => {
                self.member_is_full(key, gen, from.expect("checked"))
            }
            (_, Err(code)) => self.recovery_failed(key, gen, &format!("error {code}")),
        }
    }

    /// The source's copy arrived: check it is the version peering chose, and send the
    /// written span (or the whole block) to the targets.
    fn source_read(
        &mut self,
        key: PgKey,
        gen: u64,
        oid: ObjectId,
        version: u64,
        bitmap: &[u8],
        data: &[u8],
    ) {
        let granularity = self.store.bitmap_granularity() as usize;
        let Some(item) = self.running_item(key, gen, &oid) else {
            return;
        };
        if version != item.version {
            let problem = format!(
                "the source of {oid:?} has version {version:#x}, peering chose {:#x}",
                item.version
            );
            return self.recovery_failed(key, gen, &problem);
        }
        let sectors = data.len() / granularity;
        let written = |sector: usize| {
            bitmap
                .get(sector / 8)
                .is_some_and(|byte| byte & (1 << (sector % 8)) != 0)
        };
        let first = (0..sectors).find(|&s| written(s));
        let last = (0..sectors).rev().find(|&s| written(s));
        let (start, end) = match (first, last) {
            (Some(first), Some(last)) if !item.whole => {
                (first * granularity, (last + 1) * granularity)
            }
            _ => (0, data.len()),
        };
        let span = (start as u32, data[start..end].to_vec());
        self.copy_to_targets(key, gen, oid, Some(span));
    }

    pub(super) fn running_item(
        &mut self,
        key: PgKey,
        gen: u64,
        oid: &ObjectId,
    ) -> Option<&mut RecoveryItem> {
        let pg = self.pgs.get_mut(&key)?;
        if pg.generation != gen {
            return None;
        }
        pg.recovery.as_mut()?.running.get_mut(oid)
    }

    /// A member has no room for the copy: the PG peers again without it (as if it were
    /// down, so the history records it as absent) for [`FULL_RETRY_MS`], then tries it
    /// again.
    fn member_is_full(&mut self, key: PgKey, gen: u64, osd: u64) {
        if self.pgs.get(&key).is_none_or(|pg| pg.generation != gen) {
            return;
        }
        let until = self.now_ms + FULL_RETRY_MS;
        if let Some(pg) = self.pgs.get_mut(&key) {
            pg.full_until.insert(osd, until);
        }
        self.retry_peering_later(key, &format!("OSD {osd} is out of space"));
    }

    pub(super) fn recovery_failed(&mut self, key: PgKey, gen: u64, problem: &str) {
        if self.pgs.get(&key).is_none_or(|pg| pg.generation != gen) {
            return;
        }
        self.retry_peering_later(key, &format!("recovery failed: {problem}"));
    }

    /// Writes the object's newest version (`data` at `offset`, or a tombstone when
    /// `None`) to every target of the item.
    fn copy_to_targets(
        &mut self,
        key: PgKey,
        gen: u64,
        oid: ObjectId,
        data: Option<(u32, Vec<u8>)>,
    ) {
        let me = self.settings.osd_num;
        let epoch = self.pgs.get(&key).map_or(0, |pg| pg.epoch);
        let Some(item) = self.running_item(key, gen, &oid) else {
            return;
        };
        item.pending = item.targets.len();
        item.bytes = data.as_ref().map_or(0, |(_, data)| data.len() as u64);
        let (version, targets) = (item.version, item.targets.clone());
        tracing::debug!(
            pool = key.0,
            pg = key.1,
            %oid,
            version,
            source = item.source,
            ?targets,
            whole = item.whole,
            span = ?data.as_ref().map(|(offset, data)| (*offset, data.len())),
            "copying"
        );
        for target in targets {
            let waiter = |step| Waiter::Recovery {
                pg: key,
                gen,
                oid,
                step,
            };
            if target == me {
                let op = match &data {
                    Some((offset, data)) => Op::Write {
                        oid,
                        version,
                        offset: *offset,
                        data: AlignedBuf::from_slice(data),
                        stable: true,
                    },
                    None => Op::Delete { oid, version },
                };
                self.submit_store(op, waiter(RecoveryStep::LocalWrite));
                continue;
            }
            let (body, payload): (RequestBody, &[u8]) = match &data {
                Some((offset, data)) => (
                    RequestBody::SecWriteStable(SecRw {
                        oid,
                        version,
                        offset: *offset,
                        len: data.len() as u32,
                        attr_len: 0,
                        pg: key.1,
                        epoch,
                    }),
                    data,
                ),
                None => (
                    RequestBody::SecDelete(SecDelete {
                        oid,
                        version,
                        purge: false,
                        pg: key.1,
                        epoch,
                    }),
                    &[],
                ),
            };
            if !self.send_to_peer(target, body, payload, waiter(RecoveryStep::PeerWrite)) {
                return self.recovery_failed(key, gen, "a recovery target disconnected");
            }
        }
    }

    fn recovery_write_done(&mut self, key: PgKey, gen: u64, oid: ObjectId) {
        let Some(item) = self.running_item(key, gen, &oid) else {
            return;
        };
        item.pending -= 1;
        if item.pending > 0 {
            return;
        }
        let pg = self.pgs.get_mut(&key).expect("invariant: found above");
        let queue = pg.recovery.as_mut().expect("invariant: found above");
        let item = queue.running.remove(&oid).expect("invariant: found above");
        if !item.urgent {
            queue.background -= 1;
            self.recovery_inflight -= 1;
        }
        if !item.urgent {
            let latency = self.now_us.saturating_sub(item.started_us);
            self.recovery_tuner
                .copy_done(self.now_us, latency, &self.view.global);
        }
        if item.local_full {
            return self.primary_is_full(key, oid, item);
        }
        queue.done_objects += 1;
        queue.done_bytes += item.bytes;
        let done = queue.is_empty();
        let report = pg.stats_at_ms + STATS_EVERY_MS <= self.now_ms;
        let kind = match item.kind {
            CopyKind::Degraded => "degraded",
            CopyKind::Misplaced => "misplaced",
        };
        Self::count(&mut self.counters.recovery, kind, item.bytes);
        // The object is whole on every live member: ops that waited for it may run.
        self.release_object(key, oid);
        if done {
            self.recovery_finished(key);
        } else if report {
            self.put_pg_stats(key);
        }
        self.pump_recovery();
    }

    /// The primary has no room for its own copy of `oid` (the other targets have theirs):
    /// the copy goes back to the queue for the primary alone, copies to this OSD pause
    /// for [`FULL_RETRY_MS`], and the ops that waited for it run now: reads are served by
    /// the source (`primary.rs`), writes and deletes fail with ENOSPC, as they would here.
    /// The PG stays active: a full primary still serves reads.
    fn primary_is_full(&mut self, key: PgKey, oid: ObjectId, mut item: RecoveryItem) {
        let me = self.settings.osd_num;
        tracing::warn!(
            pool = key.0,
            pg = key.1,
            "out of space for a recovered object; copies to this OSD pause for {FULL_RETRY_MS} ms"
        );
        self.full_until_ms = self.now_ms + FULL_RETRY_MS;
        let pg = self
            .pgs
            .get_mut(&key)
            .expect("invariant: the caller found it");
        item.targets = vec![me];
        (item.local_full, item.urgent, item.pending, item.bytes) = (false, false, 0, 0);
        let queue = pg
            .recovery
            .as_mut()
            .expect("invariant: the caller found it");
        queue.pending.insert(oid, item);
        let waiting: Vec<u64> = pg
            .busy
            .get(&oid)
            .map_or(Vec::new(), |q| q.iter().copied().collect());
        for op in waiting {
            if !self.is_client_read(op) {
                self.fail_client_op(op, errno::ENOSPC);
            }
        }
        self.release_object(key, oid);
        self.pump_recovery();
    }

    /// Drops the background work of a PG that stops being active (queued purges, the
    /// cleanup and its retry, the copies): the copies' objects' queues are released (the
    /// ops queued there were failed already) and their slots freed. Late answers are
    /// ignored (the PG's generation changed).
    pub(super) fn drop_background_work(&mut self, key: PgKey) {
        self.drop_scrub(key);
        self.ec_rebuilds.retain(|(pg, _), _| *pg != key);
        let Some(pg) = self.pgs.get_mut(&key) else {
            return;
        };
        pg.purges.clear();
        pg.cleanup = None;
        pg.cleanup_retry_at_ms = None;
        let Some(queue) = pg.recovery.take() else {
            return;
        };
        for oid in queue.running_objects() {
            let queued = pg.busy.remove(oid);
            debug_assert!(
                queued.is_none_or(|q| q.is_empty()),
                "ops queued behind a copy were failed first"
            );
        }
        self.recovery_inflight -= queue.background;
    }
}

/// `/pg/stats` of a recovering PG is refreshed at most this often (ms).
const STATS_EVERY_MS: u64 = 1000;
