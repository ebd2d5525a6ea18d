//! Group commit: one fsync at a time, each covering every sync that became ready while
//! the previous one was in flight.
//!
//! A sync is ready once every write submitted before it has completed
//! ([`Blockstore::try_sync`]). With no fsync in flight it starts one at once (no added
//! latency at queue depth 1); otherwise it joins the group that waits for the in-flight
//! fsync, and that whole group shares the next one. At queue depth 128 this turns up to
//! 128 fsyncs per round into 2, which is what a filesystem journal or a drive's cache
//! flush costs anyway: a flush is not cheaper for covering fewer writes.
//!
//! An fsync covers the writes completed before it was submitted, so its `covers` (the
//! journal seq below which every entry is on disk) is taken at submission.

use super::disk::{Disk, IoKind};
use super::error::OpError;
use super::store::{Blockstore, OpOutput, Owner};
use vitastor_proto::errno;

/// The sync ops of the fsync in flight and of the group waiting for it.
#[derive(Default)]
pub(super) struct FsyncGroups {
    /// Slots of the syncs the in-flight fsync completes, and the journal seq below which
    /// it makes every entry durable. None = no fsync in flight.
    in_flight: Option<(Vec<usize>, u64)>,
    /// Slots of ready syncs waiting for the in-flight fsync to end, to share the next.
    waiting: Vec<usize>,
}

impl FsyncGroups {
    pub fn is_idle(&self) -> bool {
        debug_assert!(
            self.in_flight.is_some() || self.waiting.is_empty(),
            "invariant: a group waits only behind an fsync in flight"
        );
        self.in_flight.is_none()
    }
}

impl<D: Disk> Blockstore<D> {
    /// Sync op `index` is ready: start an fsync for it, or wait to share the next one.
    pub(super) fn join_fsync_group(&mut self, index: usize) {
        if let Some(reason) = &self.flusher.broken {
            // After a failed fsync Linux may report the next one as a success although
            // the failed writeback is gone: nothing is promised durable any more.
            let error = OpError::new(errno::EIO, format!("blockstore stopped: {reason}"));
            return self.complete(index, Err(error));
        }
        if self.fsyncs.in_flight.is_some() {
            self.fsyncs.waiting.push(index);
        } else {
            self.start_group_fsync(vec![index]);
        }
    }

    fn start_group_fsync(&mut self, members: Vec<usize>) {
        debug_assert!(self.fsyncs.in_flight.is_none() && !members.is_empty());
        let covers = self.journal_complete_below();
        self.stats.fsyncs += 1;
        self.fsyncs.in_flight = Some((members, covers));
        // SAFETY: fsync transfers no data; the null buffer is never touched.
        unsafe { self.submit_io(Owner::Fsync, IoKind::Fsync, 0, std::ptr::null_mut(), 0) };
    }

    /// The group's fsync completed with `result`: complete its syncs, start the next.
    pub(super) fn group_fsync_done(&mut self, result: i32) {
        let (members, covers) = self
            .fsyncs
            .in_flight
            .take()
            .expect("invariant: a completion for the fsync in flight");
        if result < 0 {
            let error = OpError::new(-result, format!("fsync failed: {}", errno::name(-result)));
            self.flusher.broken = Some(format!("fsync failed: {error}"));
            // The waiting group fails too: a later fsync could not prove its writes.
            let waiting = std::mem::take(&mut self.fsyncs.waiting);
            for index in members.into_iter().chain(waiting) {
                self.complete(index, Err(error.clone()));
            }
            return;
        }
        self.durable_below = self.durable_below.max(covers);
        for index in members {
            self.complete(index, Ok(OpOutput::Done));
        }
        let waiting = std::mem::take(&mut self.fsyncs.waiting);
        if !waiting.is_empty() {
            self.start_group_fsync(waiting);
        }
    }
}
