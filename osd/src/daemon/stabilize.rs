//! SEC_STABILIZE and SEC_ROLLBACK on a secondary: the second phase of an EC/XOR write
//! (every chunk OSD first holds the new version unstable; the primary then stabilizes it,
//! or rolls it back when a chunk write failed), and what peering of an EC PG uses to commit
//! or drop versions that only some chunk OSDs hold.
//!
//! One request lists `{inode, stripe, version}` items of one PG; each becomes a
//! blockstore op (stabilize every version <= it, or drop every unstable version > it), all
//! submitted at once. The reply comes when the last one finished: the first error, or 0
//! (after an fsync when every change must be durable on acknowledgement). Fenced by the
//! PG's epoch like every other mutating sub-op (`secondary.rs`).

use super::{ConnId, Osd, Waiter};
use crate::blockstore::{Disk, Op, OpError, OpOutput};
use vitastor_proto::errno;
use vitastor_proto::wire::{decode_obj_versions, Opcode, Reply};

/// Most items one request may list: a batch holds one blockstore op per item.
pub(super) const MAX_STABILIZE_ITEMS: usize = 4096;

/// A stabilize or rollback request in progress.
#[derive(Debug)]
pub(super) struct StabilizeBatch {
    conn: ConnId,
    id: u64,
    opcode: Opcode,
    /// Blockstore ops not finished yet.
    remaining: usize,
    error: Option<i32>,
}

impl<D: Disk> Osd<D> {
    /// Starts the items of a SEC_STABILIZE (`rollback` false) or SEC_ROLLBACK request whose
    /// fence was checked.
    pub(super) fn stabilize_or_rollback(
        &mut self,
        conn: ConnId,
        id: u64,
        rollback: bool,
        payload: &[u8],
    ) {
        let opcode = if rollback {
            Opcode::SecRollback
        } else {
            Opcode::SecStabilize
        };
        let items = match decode_obj_versions(payload) {
            Ok(items) if !items.is_empty() && items.len() <= MAX_STABILIZE_ITEMS => items,
            Ok(items) => {
                tracing::warn!(
                    conn,
                    items = items.len(),
                    ?opcode,
                    "refusing an empty or oversized list"
                );
                return self.reply(conn, Reply::error(id, opcode, errno::EINVAL), &[]);
            }
            Err(error) => {
                tracing::warn!(conn, ?opcode, "bad object list: {error}");
                return self.reply(conn, Reply::error(id, opcode, errno::EINVAL), &[]);
            }
        };
        Self::count(
            &mut self.counters.subops,
            if rollback { "rollback" } else { "stabilize" },
            0,
        );
        let batch = self.next_stabilize_batch;
        self.next_stabilize_batch += 1;
        self.stabilize_batches.insert(
            batch,
            StabilizeBatch {
                conn,
                id,
                opcode,
                remaining: items.len(),
                error: None,
            },
        );
        for item in items {
            let (oid, version) = (item.oid, item.version);
            let op = if rollback {
                Op::Rollback { oid, version }
            } else {
                Op::Stabilize { oid, version }
            };
            self.submit_store(op, Waiter::Stabilize { batch });
        }
    }

    /// One item of batch `batch` finished.
    pub(super) fn stabilize_item_done(&mut self, batch: u64, result: Result<OpOutput, OpError>) {
        let Some(state) = self.stabilize_batches.get_mut(&batch) else {
            debug_assert!(false, "a live batch");
            return;
        };
        if let Err(error) = result {
            tracing::debug!(?state.opcode, "item failed: {}", error.message);
            state.error.get_or_insert(error.errno);
        }
        state.remaining -= 1;
        if state.remaining > 0 {
            return;
        }
        let state = self
            .stabilize_batches
            .remove(&batch)
            .expect("invariant: found above");
        if !self.inbound.contains_key(&state.conn) {
            return; // the primary went away; it will find out by listing
        }
        if let Some(code) = state.error {
            return self.reply(state.conn, Reply::error(state.id, state.opcode, code), &[]);
        }
        // The reply (retval 0) is sent by the secondary path, after an fsync when every
        // change must be durable before it is acknowledged.
        let waiter = Waiter::Secondary {
            conn: state.conn,
            id: state.id,
            opcode: state.opcode,
            sync: false,
            version: 0,
            len: 0,
        };
        if self.sync_every_write() {
            self.submit_store(Op::Sync, waiter);
        } else {
            self.secondary_store_done(waiter, Ok(OpOutput::Done));
        }
    }
}
