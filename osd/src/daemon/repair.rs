//! Read repair: damaged local data is served from a good copy and rewritten, never
//! returned wrong and never left to fail every read.
//!
//! The blockstore reports damage two ways: a read whose checksums fail returns -EDOM
//! (and marks the object), and replay marks what it found corrupted at rest
//! ([`crate::blockstore::Blockstore::damaged_objects`]). On the primary of an active PG:
//!
//! | event | what happens |
//! |---|---|
//! | a client read fails with -EDOM here | the read is served by another live member (a proxied `SEC_READ`), and the object is repaired |
//! | the PG activates or finishes recovery while this OSD has damaged objects of it | each is repaired |
//! | no other live member, or its copy fails too | the read fails with -EDOM (never wrong data); the damage stays marked |
//!
//! A repair is an internal op that holds the object's queue like a write: it reads the
//! whole object from a live member other than this one, then writes it whole to every
//! live member at a version newer than any copy and than the damaged version (a lost
//! journal entry may have been newer than what the index holds), which is exactly what
//! clears the damage mark in the blockstore. Every member keeps the same version, so the
//! next client write numbers its version as usual. The whole block is written, so a
//! partly written object becomes fully written (its unwritten sectors as zeros), as a
//! recovery copy of its written span already does between its first and last sector.
//!
//! Damage on a secondary is found when that copy is read: by scrub (`scrub.rs`), as the
//! source of a recovery copy (another holder is then the source), or after the primary
//! moves to it.

use super::primary::{ClientKind, ClientOp};
use super::{ConnId, Osd};
use crate::blockstore::Disk;
use crate::cluster::PgKey;
use vitastor_proto::errno;
use vitastor_proto::wire::Opcode;
use vitastor_proto::ObjectId;

/// The connection id of internal repair ops (their result is logged, not sent).
pub(super) const REPAIR_CONN: ConnId = ConnId::MAX;

impl<D: Disk> Osd<D> {
    /// A member other than this OSD that holds the newest version of `oid` (every live
    /// member does, unless a recovery copy of it is still to be made to that member).
    fn repair_source(&self, pg: PgKey, oid: ObjectId, not: u64) -> Option<u64> {
        let me = self.settings.osd_num;
        let pg = self.pgs.get(&pg)?;
        let lacking = pg
            .recovery
            .as_ref()
            .and_then(|queue| queue.item(&oid))
            .map_or(&[][..], |item| &item.targets[..]);
        pg.live.iter().copied().find(|&osd| {
            osd != 0
                && osd != me
                && osd != not
                && !lacking.contains(&osd)
                && self.peers.contains_key(&osd)
        })
    }

    /// The newest version this store knows of `oid`, damaged or not.
    fn newest_local_version(&self, oid: &ObjectId) -> u64 {
        let damaged = self
            .store
            .damaged_objects()
            .get(oid)
            .map_or(0, |d| d.version);
        self.store.object_version(oid).max(damaged)
    }

    /// Client read `key` hit a checksum failure here: serve it from another member and
    /// repair the object.
    pub(super) fn read_repair(&mut self, key: u64) {
        let Some(op) = self.client_ops.get(&key) else {
            return;
        };
        let (pg, oid) = (op.pg.expect("invariant: reads have a PG"), op.oid);
        tracing::warn!(
            pool = pg.0,
            pg = pg.1,
            %oid,
            "checksum failure reading a local copy; serving it from another member and repairing"
        );
        match self.repair_source(pg, oid, 0) {
            Some(source) => {
                let version = self.newest_local_version(&oid);
                self.proxy_read(key, source, version);
                self.start_repair(pg, oid);
            }
            None => {
                tracing::error!(
                    pool = pg.0,
                    pg = pg.1,
                    %oid,
                    "no other live member has this object: the read fails with EDOM"
                );
                self.client_part_done(key, Err(errno::EDOM), false);
            }
        }
    }

    /// Repairs every object of `pg` this store has marked damaged.
    pub(super) fn repair_local_damage(&mut self, pg: PgKey) {
        if self.pgs.get(&pg).is_some_and(|state| state.ec.is_some()) {
            return; // chunks are rebuilt from the others, not copied (EC recovery)
        }
        let damaged: Vec<ObjectId> = self
            .store
            .damaged_objects()
            .keys()
            .copied()
            .filter(|oid| self.pg_of_object(oid) == Some(pg))
            .collect();
        for oid in damaged {
            self.start_repair(pg, oid);
        }
    }

    /// The PG of `oid` among the pools this OSD knows.
    pub(super) fn pg_of_object(&self, oid: &ObjectId) -> Option<PgKey> {
        let rw = vitastor_proto::wire::request::Rw {
            inode: oid.inode,
            offset: oid.stripe,
            len: 0,
            ..Default::default()
        };
        self.locate(&rw, "repair").ok().map(|(pg, _, _)| pg)
    }

    /// Queues a repair of `oid` (one per object at a time).
    fn start_repair(&mut self, pg: PgKey, oid: ObjectId) {
        self.start_repair_from(pg, oid, 0, 0)
    }

    /// Queues a repair of `oid` from the copy on `source` (0: any member that has it),
    /// written at `min_version` or newer (a scrub saw copies up to `min_version - 1`).
    pub(super) fn start_repair_from(
        &mut self,
        pg: PgKey,
        oid: ObjectId,
        source: u64,
        min_version: u64,
    ) {
        let block = self.store.block_size();
        let Some(state) = self.pgs.get_mut(&pg) else {
            return;
        };
        if !state.repairing.insert(oid) {
            return;
        }
        let mut op = self.client_op(REPAIR_CONN, 0, Opcode::Write, ClientKind::Repair);
        (op.pg, op.oid, op.offset, op.len) = (Some(pg), oid, 0, block);
        (op.repair_source, op.min_version) = (source, min_version);
        let key = self.new_op(op);
        let busy = self.pgs[&pg].busy.contains_key(&oid);
        if busy || self.recover_first(pg, oid) {
            return self.queue_on_object(pg, oid, key);
        }
        self.pgs
            .get_mut(&pg)
            .expect("invariant: found above")
            .busy
            .insert(oid, Default::default());
        self.client_ops
            .get_mut(&key)
            .expect("invariant: just made")
            .holds_object = true;
        self.start_repair_read(key);
    }

    /// The repair holds the object: read it from a good copy.
    pub(super) fn start_repair_read(&mut self, key: u64) {
        let Some(op) = self.client_ops.get(&key) else {
            return;
        };
        let (pg, oid) = (op.pg.expect("invariant: repairs have a PG"), op.oid);
        let me = self.settings.osd_num;
        let chosen = op.repair_source;
        let source = match chosen {
            // The local copy is the good one: read it like a member's (the proxied read
            // path checks version and length the same way).
            _ if chosen == me => None,
            0 => self.repair_source(pg, oid, 0),
            osd => Some(osd).filter(|osd| self.peers.contains_key(osd)),
        };
        match source {
            Some(source) => {
                let version = self.newest_local_version(&oid);
                self.proxy_read(key, source, version);
            }
            None if chosen == me => self.repair_from_local(key),
            None => self.fail_client_op(key, errno::EDOM),
        }
    }

    /// Reads the object's local copy as the repair's source.
    fn repair_from_local(&mut self, key: u64) {
        self.start_read(key);
    }

    /// The good copy arrived: write it whole, at a version above every copy's and the
    /// damaged one's, to every live member (`primary.rs` does the write).
    pub(super) fn repair_source_read(&mut self, key: u64, version: u64, data: Vec<u8>) {
        let newest = self
            .client_ops
            .get(&key)
            .map_or(0, |op| self.newest_local_version(&op.oid));
        let Some(op) = self.client_ops.get_mut(&key) else {
            return;
        };
        debug_assert_eq!(data.len(), op.len as usize, "a whole object was read");
        op.min_version = op.min_version.max(version.max(newest) + 1);
        op.kind = ClientKind::Write { data };
        op.pending = 0;
        self.start_modify(key);
    }

    /// A repair ended (written everywhere, or failed: the damage stays marked and the
    /// next read or activation tries again).
    pub(super) fn repair_finished(&mut self, op: &ClientOp) {
        let pg = op.pg.expect("invariant: repairs have a PG");
        if let Some(state) = self.pgs.get_mut(&pg) {
            state.repairing.remove(&op.oid);
        }
        match op.error {
            None => tracing::info!(
                pool = pg.0,
                pg = pg.1,
                oid = %op.oid,
                version = op.version,
                "repaired a damaged object from another member's copy"
            ),
            Some(code) => tracing::warn!(
                pool = pg.0,
                pg = pg.1,
                oid = %op.oid,
                "repair failed ({code}); trying again at the next read or activation"
            ),
        }
    }
}
