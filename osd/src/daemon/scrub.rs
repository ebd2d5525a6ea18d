//! Scrub: the primary of a clean PG reads every object from every live member, compares
//! the copies and repairs the ones that differ (Vitastor's `next_scrub` in
//! `/pg/history`, `auto_scrub`, `no_scrub`, `scrub_interval` (global or per pool),
//! `scrub_queue_depth`, `scrub_sleep`; PG flags `scrubbing` and `has_inconsistent`).
//!
//! When: a PG is due when its history's `next_scrub` (UNIX seconds) has passed, or, with
//! `auto_scrub`, when it has none. Only active PGs with nothing to recover are scrubbed;
//! repeering drops a running scrub (it starts again, since `next_scrub` is still due).
//! When every object was compared the primary writes the history back with
//! `next_scrub` removed, or moved `scrub_interval` ahead with `auto_scrub` (as soon as no
//! other history write of the PG is on its way; the same `next_scrub` set again after
//! that is a new request).
//!
//! Each object holds its queue while its copies are read (a write in between would look
//! like a difference), at most `scrub_queue_depth` objects per OSD, `scrub_sleep` ms
//! apart. The copies of one object, read whole with their bitmaps and versions:
//!
//! | copies | verdict |
//! |---|---|
//! | all read and equal | fine |
//! | some fail their checksums (-EDOM), the others agree | repaired from a good copy |
//! | they differ, and more than half of all copies agree | repaired from the majority |
//! | they differ without a majority (2 replicas, say) | inconsistent: logged, the PG gets `has_inconsistent`, nothing is changed |
//! | a member could not answer (disconnect) | not judged: the scrub runs again later |
//!
//! One object can also be compared on request (SCRUB, opcode 17, as `vitastor-cli fix`
//! sends it: `fix.rs`), with the same verdicts.
//!
//! A repair is the one of `repair.rs`: the chosen copy is written whole at a new version
//! to every live member, which also clears a damage mark on any of them.

use super::pg::HistoryWrite;
use super::{Osd, Waiter};
use crate::blockstore::{Disk, Op, OpError, OpOutput};
use crate::cluster::PgKey;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use vitastor_proto::errno;
use vitastor_proto::etcd::{parse_interval_s, PgHistory};
use vitastor_proto::wire::request::SecRw;
use vitastor_proto::wire::{Reply, ReplyBody, RequestBody};
use vitastor_proto::ObjectId;

/// Due PGs are looked for at most this often (ms).
pub(super) const DUE_CHECK_EVERY_MS: u64 = 100;
/// A scrub that could not judge every object runs again this much later (ms).
const SCRUB_RETRY_MS: u64 = 5_000;

/// One copy as read: version, bitmap, data.
type Copy = (u64, Vec<u8>, Vec<u8>);
/// A copy, or the errno of its read.
pub(super) type ReadCopy = Result<Copy, i32>;

/// What the comparison of one object's copies concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// A member could not answer: not judged.
    Unjudged,
    /// Every copy read and they are equal.
    Fine,
    /// Some copies were bad; a repair from a good one is queued on the object.
    Repairing,
    /// The copies differ and nothing says which is right: left alone, reported.
    Inconsistent,
}

/// The scrub of one PG.
#[derive(Debug, Default)]
pub(super) struct Scrub {
    /// The `next_scrub` this scrub serves (0: `auto_scrub` without one).
    pub due: u64,
    todo: VecDeque<ObjectId>,
    /// Objects being compared: the copies read so far, and how many are awaited.
    running: BTreeMap<ObjectId, (Vec<(u64, ReadCopy)>, usize)>,
    checked: u64,
    /// Objects a member could not be read for (the scrub is run again).
    unjudged: u64,
    repaired: u64,
    inconsistent: BTreeSet<ObjectId>,
}

/// The local copy of an object, as the blockstore read it whole.
pub(super) fn local_copy(result: Result<OpOutput, OpError>) -> ReadCopy {
    match result {
        Ok(OpOutput::Read {
            version,
            bitmap,
            data,
        }) => Ok((version, bitmap, data.to_vec())),
        Ok(_) => Err(errno::EIO),
        Err(error) => Err(error.errno),
    }
}

/// A member's copy of an object, as its SEC_READ reply brought it.
pub(super) fn peer_copy(result: Result<(Reply, Vec<u8>), i32>) -> ReadCopy {
    result.and_then(|(reply, payload)| match reply.body {
        ReplyBody::SecRw { version, attr_len } if payload.len() >= attr_len as usize => {
            let (bitmap, data) = payload.split_at(attr_len as usize);
            Ok((version, bitmap.to_vec(), data.to_vec()))
        }
        _ => Err(errno::EIO),
    })
}

impl<D: Disk> Osd<D> {
    /// Starts due scrubs and object comparisons while slots are free.
    pub(super) fn pump_scrub(&mut self) {
        let global = &self.view.global;
        if self.lease_lost || self.unix_s == 0 || global.no_scrub == Some(true) {
            return;
        }
        if self.now_ms >= self.scrub_checked_at_ms + DUE_CHECK_EVERY_MS {
            self.scrub_checked_at_ms = self.now_ms;
            let unrecorded: Vec<PgKey> = self
                .pgs
                .iter()
                .filter(|(_, pg)| pg.scrub_record.is_some())
                .map(|(key, _)| *key)
                .collect();
            for key in unrecorded {
                self.record_scrub(key);
            }
            let due: Vec<(PgKey, u64)> = self
                .pgs
                .keys()
                .filter_map(|&key| self.scrub_due(key).map(|due| (key, due)))
                .collect();
            for (key, due) in due {
                self.begin_scrub(key, due);
            }
        }
        let depth = self.view.global.scrub_queue_depth.unwrap_or(1).max(1) as usize;
        debug_assert_eq!(
            self.scrubbing_pgs,
            self.pgs.values().filter(|pg| pg.scrub.is_some()).count(),
            "scrubbing PGs counted"
        );
        // Called on every event: look for objects only while some PG scrubs.
        while self.scrubbing_pgs > 0
            && self.scrub_inflight < depth
            && self.now_ms >= self.scrub_next_at_ms
        {
            let next = self.pgs.iter_mut().find_map(|(&key, pg)| {
                let busy = &pg.busy;
                let scrub = pg.scrub.as_mut()?;
                let position = scrub.todo.iter().position(|oid| !busy.contains_key(oid))?;
                Some((key, scrub.todo.remove(position).expect("found above")))
            });
            let Some((key, oid)) = next else {
                return;
            };
            self.compare_object(key, oid);
        }
    }

    /// `Some(next_scrub)` if PG `key` should be scrubbed now.
    fn scrub_due(&self, key: PgKey) -> Option<u64> {
        let pg = self.pgs.get(&key)?;
        // EC chunks differ by design: comparing them needs the codec (not built yet).
        let idle = pg.ec.is_none()
            && pg.base == super::PgBase::Active
            && pg.recovery.is_none()
            && pg.cleanup.is_none()
            && pg.scrub.is_none()
            && pg.history_write.is_none();
        if !idle {
            return None;
        }
        let next = self.view.pg_history.get(&key)?.next_scrub.unwrap_or(0);
        if pg.scrub_served == Some(next) || self.now_ms < pg.scrub_not_before_ms {
            return None; // done, its record on the way; or retried a little later
        }
        let due = if next != 0 {
            next <= self.unix_s
        } else {
            self.view.global.auto_scrub == Some(true)
        };
        due.then_some(next)
    }

    fn begin_scrub(&mut self, key: PgKey, due: u64) {
        let min_inode = u64::from(key.0) << 48;
        let max_inode = min_inode | ((1 << 48) - 1);
        let stripe = self.pg_stripe_size(key);
        let Some(pg) = self.pgs.get_mut(&key) else {
            return;
        };
        let mut todo: Vec<ObjectId> = self
            .store
            .list(key.1, pg.pg_count, stripe, min_inode, max_inode)
            .into_iter()
            .filter(|v| !v.deleted)
            .map(|v| v.oid)
            .collect();
        todo.dedup();
        tracing::info!(
            pool = key.0,
            pg = key.1,
            objects = todo.len(),
            "scrub started"
        );
        pg.scrub = Some(Scrub {
            due,
            todo: todo.into(),
            ..Scrub::default()
        });
        self.scrubbing_pgs += 1;
        self.publish_state(key);
        self.scrub_progress(key);
    }

    /// Reads every live member's copy of `oid`, holding the object's queue.
    fn compare_object(&mut self, key: PgKey, oid: ObjectId) {
        let Some(pg) = self.pgs.get_mut(&key) else {
            return;
        };
        let (gen, epoch) = (pg.generation, pg.epoch);
        let members: Vec<u64> = pg.live.iter().copied().filter(|&o| o != 0).collect();
        let previous = pg.busy.insert(oid, Default::default());
        debug_assert!(
            previous.is_none(),
            "a comparison starts only on a free object"
        );
        let scrub = pg.scrub.as_mut().expect("invariant: the caller found it");
        scrub.running.insert(oid, (Vec::new(), members.len()));
        self.scrub_inflight += 1;
        let waiter = |osd| Waiter::Scrub {
            pg: key,
            gen,
            oid,
            osd,
        };
        for osd in self.read_copies(key, epoch, oid, &members, waiter) {
            self.scrub_copy_read(key, gen, oid, osd, Err(errno::EPIPE));
        }
    }

    /// Reads the whole copy of `oid` on each of `members` (a SEC_READ in `epoch`, or the
    /// local store), each answer going to `waiter(osd)`. Returns the members that could
    /// not be asked (not connected).
    pub(super) fn read_copies(
        &mut self,
        key: PgKey,
        epoch: u64,
        oid: ObjectId,
        members: &[u64],
        waiter: impl Fn(u64) -> Waiter,
    ) -> Vec<u64> {
        let me = self.settings.osd_num;
        let block = self.store.block_size();
        let mut unasked = Vec::new();
        for &osd in members {
            if osd == me {
                let read = Op::Read {
                    oid,
                    offset: 0,
                    len: block,
                };
                self.submit_store(read, waiter(osd));
                continue;
            }
            let rw = SecRw {
                oid,
                version: 0,
                offset: 0,
                len: block,
                attr_len: 0,
                pg: key.1,
                epoch,
            };
            if !self.send_to_peer(osd, RequestBody::SecRead(rw), &[], waiter(osd)) {
                unasked.push(osd);
            }
        }
        unasked
    }

    /// The local copy, as read by the blockstore.
    pub(super) fn scrub_local_read(
        &mut self,
        (key, gen, oid, osd): (PgKey, u64, ObjectId, u64),
        result: Result<OpOutput, OpError>,
    ) {
        self.scrub_copy_read(key, gen, oid, osd, local_copy(result));
    }

    /// A member's copy, as its SEC_READ reply brought it.
    pub(super) fn scrub_peer_read(
        &mut self,
        (key, gen, oid, osd): (PgKey, u64, ObjectId, u64),
        result: Result<(Reply, Vec<u8>), i32>,
    ) {
        self.scrub_copy_read(key, gen, oid, osd, peer_copy(result));
    }

    fn scrub_copy_read(&mut self, key: PgKey, gen: u64, oid: ObjectId, osd: u64, copy: ReadCopy) {
        let Some(pg) = self.pgs.get_mut(&key).filter(|pg| pg.generation == gen) else {
            return; // the PG repeered: its scrub was dropped
        };
        let Some(scrub) = pg.scrub.as_mut() else {
            return;
        };
        let Some((copies, awaited)) = scrub.running.get_mut(&oid) else {
            return;
        };
        copies.push((osd, copy));
        *awaited -= 1;
        if *awaited > 0 {
            return;
        }
        let (copies, _) = scrub.running.remove(&oid).expect("found above");
        self.scrub_inflight -= 1;
        let sleep = self.view.global.scrub_sleep.unwrap_or(0);
        self.scrub_next_at_ms = self.now_ms + sleep;
        self.release_object(key, oid);
        let verdict = self.judge_copies(key, oid, copies);
        if let Some(scrub) = self.pgs.get_mut(&key).and_then(|pg| pg.scrub.as_mut()) {
            match verdict {
                Verdict::Unjudged => scrub.unjudged += 1,
                Verdict::Fine => scrub.checked += 1,
                Verdict::Repairing => {
                    (scrub.checked, scrub.repaired) = (scrub.checked + 1, scrub.repaired + 1)
                }
                Verdict::Inconsistent => {
                    scrub.checked += 1;
                    scrub.inconsistent.insert(oid);
                }
            }
        }
        self.scrub_progress(key);
    }

    /// Applies the table at the top of this file to one object's copies (a repair it
    /// decides on is queued on the object).
    pub(super) fn judge_copies(
        &mut self,
        key: PgKey,
        oid: ObjectId,
        copies: Vec<(u64, ReadCopy)>,
    ) -> Verdict {
        let total = copies.len();
        if copies
            .iter()
            .any(|(_, c)| matches!(c, Err(code) if *code != errno::EDOM))
        {
            return Verdict::Unjudged;
        }
        let damaged: Vec<u64> = copies
            .iter()
            .filter(|(_, c)| c.is_err())
            .map(|(osd, _)| *osd)
            .collect();
        // Copies that read fine, grouped by content.
        let mut groups: Vec<(&Copy, Vec<u64>)> = Vec::new();
        for (osd, copy) in &copies {
            let Ok(copy) = copy else { continue };
            match groups.iter_mut().find(|(c, _)| *c == copy) {
                Some((_, osds)) => osds.push(*osd),
                None => groups.push((copy, vec![*osd])),
            }
        }
        if damaged.is_empty() && groups.len() <= 1 {
            return Verdict::Fine;
        }
        let source = match groups.as_slice() {
            [(_, osds)] => Some(osds[0]), // the damaged ones differ only by checksums
            _ => groups
                .iter()
                .find(|(_, osds)| osds.len() * 2 > total)
                .map(|(_, osds)| osds[0]),
        };
        match source {
            Some(source) => {
                tracing::warn!(
                    pool = key.0,
                    pg = key.1,
                    %oid,
                    ?damaged,
                    copies = total,
                    variants = groups.len(),
                    source,
                    "scrub: copies differ; repairing from the good one"
                );
                let newest = copies
                    .iter()
                    .filter_map(|(_, c)| c.as_ref().ok())
                    .map(|c| c.0);
                let min_version = newest.max().unwrap_or(0) + 1;
                self.start_repair_from(key, oid, source, min_version);
                Verdict::Repairing
            }
            None => {
                tracing::error!(
                    pool = key.0,
                    pg = key.1,
                    %oid,
                    ?damaged,
                    copies = total,
                    variants = groups.len(),
                    "scrub: copies differ and no majority says which is right; marked inconsistent"
                );
                Verdict::Inconsistent
            }
        }
    }

    /// Finishes the scrub once every object was compared.
    fn scrub_progress(&mut self, key: PgKey) {
        let interval = self.scrub_interval_s(key);
        let Some(pg) = self.pgs.get_mut(&key) else {
            return;
        };
        let Some(scrub) = pg.scrub.as_ref() else {
            return;
        };
        if !scrub.todo.is_empty() || !scrub.running.is_empty() {
            return;
        }
        let scrub = pg.scrub.take().expect("checked above");
        self.scrubbing_pgs -= 1;
        tracing::info!(
            pool = key.0,
            pg = key.1,
            checked = scrub.checked,
            unjudged = scrub.unjudged,
            repaired = scrub.repaired,
            inconsistent = scrub.inconsistent.len(),
            "scrub finished"
        );
        pg.inconsistent = scrub.inconsistent;
        if scrub.unjudged > 0 {
            // A member did not answer for some objects: the scrub is still due; run it
            // again a little later (the PG repeers meanwhile, most likely).
            pg.scrub_not_before_ms = self.now_ms + SCRUB_RETRY_MS;
        } else {
            pg.scrub_served = Some(scrub.due);
            let next =
                (self.view.global.auto_scrub == Some(true)).then_some(self.unix_s + interval);
            pg.scrub_record = Some(next);
            self.record_scrub(key);
        }
        self.publish_state(key);
    }

    /// Writes the finished scrub's `next_scrub` to the history once no other history
    /// write is on its way (tried again from [`Osd::pump_scrub`] until it is).
    fn record_scrub(&mut self, key: PgKey) {
        let Some(pg) = self.pgs.get_mut(&key) else {
            return;
        };
        if pg.history_write.is_some() || pg.base != super::PgBase::Active {
            return;
        }
        let Some(next_scrub) = pg.scrub_record.take() else {
            return;
        };
        let current = self.view.pg_history.get(&key).cloned().unwrap_or_default();
        if current.next_scrub == next_scrub {
            pg.scrub_served = None;
            return;
        }
        let new = PgHistory {
            next_scrub,
            ..current.clone()
        };
        self.put_history(
            key,
            HistoryWrite::Scrubbed(new.clone()),
            Some(&current),
            &new,
        );
    }

    /// The history with the new `next_scrub` is in etcd.
    pub(super) fn scrub_recorded(&mut self, key: PgKey, history: PgHistory) {
        if let Some(pg) = self.pgs.get_mut(&key) {
            pg.seen_history = Some(history.clone());
            // The history says what is next now; the same `next_scrub` set again later
            // is a new request.
            pg.scrub_served = None;
        }
        self.view.pg_history.insert(key, history);
    }

    /// The pool's `scrub_interval`, or the global one.
    fn scrub_interval_s(&self, key: PgKey) -> u64 {
        vitastor_proto::PoolId::new(key.0)
            .ok()
            .and_then(|id| self.view.pools.get(&id))
            .and_then(|pool| pool.scrub_interval.as_ref())
            .and_then(parse_interval_s)
            .unwrap_or_else(|| self.view.global.scrub_interval_s())
    }

    /// Drops a running scrub (the PG stops being active): its objects' queues are
    /// released and its slots freed; late answers are ignored (the generation changed).
    pub(super) fn drop_scrub(&mut self, key: PgKey) {
        let Some(pg) = self.pgs.get_mut(&key) else {
            return;
        };
        let Some(scrub) = pg.scrub.take() else {
            return;
        };
        self.scrubbing_pgs -= 1;
        for oid in scrub.running.keys() {
            let queued = pg.busy.remove(oid);
            debug_assert!(
                queued.is_none_or(|q| q.is_empty()),
                "ops queued behind a comparison were failed first"
            );
        }
        self.scrub_inflight -= scrub.running.len();
    }
}
