//! Journal writes of one event-loop round go to the device together: entries appended
//! back to back (the journal is a ring, so consecutive appends are contiguous on disk and
//! in the mirror until it wraps) are written by one request instead of one each. At queue
//! depth 32 this turns ~32 journal writes into a handful, which is most of what the
//! kernel's submission path costs per op.
//!
//! A queued write counts as in flight from the moment it is queued: it holds a tag in
//! `inflight` (so a sync started before the batch goes out still waits for it, see
//! [`Blockstore::writes_in_flight_before`]) and a pending I/O of its op. The batch goes to
//! the device at the start of every [`Blockstore::poll`] round; the run's completion is
//! the completion of each write in it.

use super::disk::{Disk, IoKind};
use super::store::{Blockstore, Owner};

/// Largest single request a run of journal entries is merged into.
pub const JOURNAL_RUN_MAX_BYTES: u64 = 1 << 20;

/// One queued journal write: its tag (already in `inflight`), its op, where and how much.
pub(super) struct QueuedJournalWrite {
    tag: u64,
    op: usize,
    pos: u64,
    bytes: u64,
}

#[derive(Default)]
pub(super) struct JournalBatch {
    queued: Vec<QueuedJournalWrite>,
    /// Requests in flight that carry several writes: the run's tag -> (tag, op) of each.
    runs: std::collections::HashMap<u64, Vec<(u64, usize)>>,
}

impl JournalBatch {
    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }
}

impl<D: Disk> Blockstore<D> {
    /// Queues the journal write of op `index` (the entry at `pos`, `bytes` long).
    pub(super) fn queue_journal_write(&mut self, index: usize, pos: u64, bytes: u64) {
        let tag = self.reserve_tag(Owner::Op(index), true);
        self.journal_batch.queued.push(QueuedJournalWrite {
            tag,
            op: index,
            pos,
            bytes,
        });
    }

    /// Sends the queued journal writes, merging contiguous ones.
    pub(super) fn submit_journal_batch(&mut self) {
        let queued = std::mem::take(&mut self.journal_batch.queued);
        let mut rest = queued.as_slice();
        while let Some(first) = rest.first() {
            let mut end = first.pos + first.bytes;
            let mut count = 1;
            while let Some(next) = rest.get(count) {
                if next.pos != end || end + next.bytes - first.pos > JOURNAL_RUN_MAX_BYTES {
                    break;
                }
                end += next.bytes;
                count += 1;
            }
            let (run, after) = rest.split_at(count);
            rest = after;
            let offset = self.journal.disk_offset + first.pos;
            let buf = self.journal.ptr_at(first.pos);
            let len = (end - first.pos) as usize;
            if let [single] = run {
                // SAFETY: the mirror outlives the request and this region is not rewritten
                // until the journal start passes it, long after the write completes.
                unsafe { self.submit_reserved(single.tag, IoKind::Write, offset, buf, len) };
                continue;
            }
            let members: Vec<(u64, usize)> = run.iter().map(|w| (w.tag, w.op)).collect();
            let tag = self.reserve_tag(Owner::JournalRun, true);
            self.journal_batch.runs.insert(tag, members);
            // SAFETY: as above; the run is contiguous in the mirror (no wrap inside it).
            unsafe { self.submit_reserved(tag, IoKind::Write, offset, buf, len) };
        }
    }

    /// The merged request `tag` completed: so did each write in it.
    pub(super) fn journal_run_done(&mut self, tag: u64, result: i32) {
        let members = self
            .journal_batch
            .runs
            .remove(&tag)
            .expect("invariant: a run's completion comes once");
        for (member_tag, op) in members {
            self.forget_tag(member_tag);
            self.op_io_done(op, result);
        }
    }
}
