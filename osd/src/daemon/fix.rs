//! `vitastor-cli fix` (Vitastor's and ours): an operator settles an inconsistent object by
//! naming the OSDs whose copies are bad. The tool asks the primary to DESCRIBE the object,
//! sends each bad OSD a SEC_DELETE with `OSD_OP_IGNORE_PG_LOCK` for its copy, then asks the
//! primary to SCRUB (opcode 17) the object.
//!
//! | step | here |
//! |---|---|
//! | the delete on a bad OSD ([`RequestBody::CondemnCopy`]) | the copy is *marked bad*, not deleted: every read of it fails with -EDOM, so no read returns it and scrub and read repair take it for damaged |
//! | SCRUB of one object on the primary | the object's copies are compared as scrub does (`scrub.rs`): the condemned copy reads as damaged, so the others (agreeing) are the source, and a repair rewrites the object whole on every live member at a newer version, which clears the mark |
//!
//! Why not delete: the primary decided at peering which members hold the object; a copy
//! removed under it would make a read on that member return zeros (the object looks never
//! written) or, if it was the primary's own good copy, lose data. The mark lives in memory
//! only: if the OSD restarts first, the copy reads as before (nothing lost; the next scrub
//! finds the difference again).
//!
//! [`RequestBody::CondemnCopy`]: vitastor_proto::wire::RequestBody::CondemnCopy

use super::primary::ClientKind;
use super::scrub::{local_copy, peer_copy, ReadCopy, Verdict};
use super::{ConnId, Osd, Waiter};
use crate::blockstore::{Disk, OpError, OpOutput};
use vitastor_proto::errno;
use vitastor_proto::wire::request::Rw;
use vitastor_proto::wire::{Opcode, Reply, ReplyBody};
use vitastor_proto::ObjectId;

impl<D: Disk> Osd<D> {
    /// A fix's SEC_DELETE: mark this OSD's copy of `oid` bad.
    pub(super) fn condemn_copy(&mut self, conn: ConnId, id: u64, oid: ObjectId) {
        if !self.store.condemn(oid) {
            return self.reply(
                conn,
                Reply::error(id, Opcode::SecDelete, errno::ENOENT),
                &[],
            );
        }
        tracing::warn!(
            conn,
            %oid,
            "an operator marked this OSD's copy bad (fix); reads of it fail until the primary rewrites it"
        );
        let reply = Reply {
            id,
            opcode: Opcode::SecDelete,
            retval: 0,
            body: ReplyBody::SecDelete { version: 0 },
        };
        self.reply(conn, reply, &[]);
    }

    /// SCRUB of one object (`rw.offset` inside it; `len` is ignored): compare its copies
    /// now and repair what the comparison shows. Answers 0 once judged (a repair it
    /// started is queued on the object, so later ops see the repaired data), -EIO if a
    /// member could not be read.
    pub(super) fn client_scrub(&mut self, conn: ConnId, id: u64, rw: Rw) {
        let block = u64::from(self.store.block_size());
        let rw = Rw {
            offset: rw.offset - rw.offset % block,
            len: 0,
            ..rw
        };
        let (pg, oid, _) = match self.locate(&rw, "scrub") {
            Ok(found) => found,
            Err(code) => return self.reply(conn, Reply::error(id, Opcode::Scrub, code), &[]),
        };
        if self.pgs.get(&pg).is_some_and(|state| state.ec.is_some()) {
            // EC chunks differ by design: comparing them needs the codec (not built yet).
            return self.reply(conn, Reply::error(id, Opcode::Scrub, errno::EINVAL), &[]);
        }
        let kind = ClientKind::Scrub {
            copies: Vec::new(),
            awaited: 0,
        };
        let mut op = self.client_op(conn, id, Opcode::Scrub, kind);
        (op.pg, op.oid) = (Some(pg), oid);
        let key = self.new_op(op);
        if self.pgs[&pg].busy.contains_key(&oid) || self.recover_first(pg, oid) {
            return self.queue_on_object(pg, oid, key);
        }
        self.pgs
            .get_mut(&pg)
            .expect("invariant: locate found it")
            .busy
            .insert(oid, Default::default());
        self.start_object_scrub(key);
    }

    /// The SCRUB op holds its object: read every live member's copy.
    pub(super) fn start_object_scrub(&mut self, key: u64) {
        let Some(op) = self.client_ops.get_mut(&key) else {
            return;
        };
        op.holds_object = true;
        let (pg_key, oid) = (op.pg.expect("invariant: scrubs have a PG"), op.oid);
        let Some(pg) = self
            .pgs
            .get(&pg_key)
            .filter(|pg| pg.base == super::PgBase::Active)
        else {
            return self.fail_client_op(key, errno::EPIPE);
        };
        let epoch = pg.epoch;
        let members: Vec<u64> = pg.live.iter().copied().filter(|&o| o != 0).collect();
        if let Some(ClientKind::Scrub { awaited, .. }) =
            self.client_ops.get_mut(&key).map(|op| &mut op.kind)
        {
            *awaited = members.len();
        }
        let waiter = |osd| Waiter::ScrubRequest { op: key, osd };
        for osd in self.read_copies(pg_key, epoch, oid, &members, waiter) {
            self.scrub_request_copy(key, osd, Err(errno::EPIPE));
        }
    }

    pub(super) fn scrub_request_local(
        &mut self,
        key: u64,
        osd: u64,
        result: Result<OpOutput, OpError>,
    ) {
        self.scrub_request_copy(key, osd, local_copy(result));
    }

    pub(super) fn scrub_request_peer(
        &mut self,
        key: u64,
        osd: u64,
        result: Result<(vitastor_proto::wire::Reply, Vec<u8>), i32>,
    ) {
        self.scrub_request_copy(key, osd, peer_copy(result));
    }

    /// One member's copy for SCRUB op `key`; the last one judges the object.
    fn scrub_request_copy(&mut self, key: u64, osd: u64, copy: ReadCopy) {
        let Some(op) = self.client_ops.get_mut(&key) else {
            return;
        };
        let ClientKind::Scrub { copies, awaited } = &mut op.kind else {
            debug_assert!(false, "a scrub copy for a scrub op");
            return;
        };
        copies.push((osd, copy));
        *awaited -= 1;
        if *awaited > 0 {
            return;
        }
        let copies = std::mem::take(copies);
        let (pg_key, oid) = (op.pg.expect("invariant: scrubs have a PG"), op.oid);
        let verdict = self.judge_copies(pg_key, oid, copies);
        if let Some(pg) = self.pgs.get_mut(&pg_key) {
            let had_inconsistent = pg.has_inconsistent();
            match verdict {
                Verdict::Inconsistent => drop(pg.inconsistent.insert(oid)),
                Verdict::Fine | Verdict::Repairing => drop(pg.inconsistent.remove(&oid)),
                Verdict::Unjudged => {}
            }
            if had_inconsistent != pg.has_inconsistent() {
                self.publish_state(pg_key);
            }
        }
        match verdict {
            Verdict::Unjudged => self.fail_client_op(key, errno::EIO),
            _ => self.finish_client_op(key),
        }
    }
}
