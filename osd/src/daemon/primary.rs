//! Client ops on PGs this OSD is the active primary of (replicated pools).
//!
//! A write or delete takes the object's queue (one runs at a time per object, later ones
//! wait in order), gets the next version (at least `epoch << 16 | 1`), is written locally
//! and sent to every other live member in parallel, and is acknowledged when all of them
//! have it (each after an fsync when every write must be durable). If a member fails, the
//! client gets -EPIPE (and retries), and the PG repeers so the member's copy is repaired or
//! the member is left out. Reads come from the primary's blockstore. Any op on an object
//! some live member still lacks waits for its copy (`recovery.rs`; a primary out of space
//! reads such objects from the member that holds them).

use super::{ClientPart, ConnId, Osd, Waiter};
use crate::blockstore::{AlignedBuf, Disk, Op, OpError, OpOutput};
use crate::cluster::PgKey;
use vitastor_proto::errno;
use vitastor_proto::placement::pg_of_stripe;
use vitastor_proto::wire::request::{Rw, SecDelete, SecRw};
use vitastor_proto::wire::{Opcode, Reply, ReplyBody, RequestBody};
use vitastor_proto::{ObjectId, PoolId};

#[derive(Debug)]
pub(super) enum ClientKind {
    Read,
    Write {
        data: Vec<u8>,
    },
    Delete,
    Sync,
    /// An internal rewrite of a damaged object (`repair.rs`): reads the object from a
    /// member with a good copy, then writes it whole at a new version to every member.
    Repair,
    /// SCRUB of one object (`fix.rs`): the copies read so far, and how many are awaited.
    Scrub {
        copies: Vec<(u64, super::scrub::ReadCopy)>,
        awaited: usize,
    },
}

#[derive(Debug)]
pub(super) struct ClientOp {
    pub conn: ConnId,
    pub id: u64,
    pub opcode: Opcode,
    pub pg: Option<PgKey>,
    pub oid: ObjectId,
    pub offset: u32,
    pub len: u32,
    /// Compare-and-set: the version the write must follow (0 = none).
    pub expected: u64,
    /// The write gets at least this version (a repair must outrank the damaged one).
    pub min_version: u64,
    /// A repair reads the good copy from this member (0: any member that has it).
    pub repair_source: u64,
    pub kind: ClientKind,
    pub version: u64,
    pub pending: u32,
    pub error: Option<i32>,
    pub peer_failed: bool,
    /// Whether this write or delete is the one running on its object (others wait).
    pub holds_object: bool,
    pub read: Option<(Vec<u8>, AlignedBuf)>,
    /// When the op arrived (monotonic microseconds; client load for recovery tuning).
    pub started_us: u64,
}

impl<D: Disk> Osd<D> {
    /// The PG, object and offset inside the object of a client request, or an errno.
    pub(super) fn locate(&self, rw: &Rw, what: &str) -> Result<(PgKey, ObjectId, u32), i32> {
        let pool_id = (rw.inode >> 48) as u32;
        let Some(pool) = PoolId::new(pool_id)
            .ok()
            .and_then(|id| self.view.pools.get(&id))
        else {
            tracing::debug!(inode = rw.inode, "{what}: no such pool");
            return Err(errno::ENOENT);
        };
        let block_size = u64::from(self.store.block_size());
        // An EC/XOR object (stripe) holds `k` chunks of image data.
        let stripe_size = block_size * u64::from(pool.data_chunks().max(1));
        let granularity = u64::from(self.store.bitmap_granularity());
        let stripe = rw.offset - rw.offset % stripe_size;
        let in_object = rw.offset - stripe;
        if !rw.offset.is_multiple_of(granularity)
            || !u64::from(rw.len).is_multiple_of(granularity)
            || in_object + u64::from(rw.len) > stripe_size
        {
            tracing::debug!(
                rw.offset,
                rw.len,
                "{what}: unaligned or crosses an object boundary"
            );
            return Err(errno::EINVAL);
        }
        let pg_stripe_size = pool.pg_stripe_size.unwrap_or(0).max(stripe_size);
        let pg = pg_of_stripe(stripe, pg_stripe_size, pool.pg_count).get();
        let key = (pool_id, pg);
        match self.pgs.get(&key) {
            Some(pg) if pg.base == super::PgBase::Active => {}
            _ => return Err(errno::EPIPE),
        }
        let oid = ObjectId {
            inode: rw.inode,
            stripe,
        };
        Ok((key, oid, in_object as u32))
    }

    pub(super) fn new_op(&mut self, op: ClientOp) -> u64 {
        let key = self.next_client_op;
        self.next_client_op += 1;
        if let Some(pg) = op.pg.and_then(|pg| self.pgs.get_mut(&pg)) {
            pg.inflight += 1;
        }
        self.client_ops.insert(key, op);
        key
    }

    pub(super) fn client_op(
        &self,
        conn: ConnId,
        id: u64,
        opcode: Opcode,
        kind: ClientKind,
    ) -> ClientOp {
        ClientOp {
            conn,
            id,
            opcode,
            pg: None,
            oid: ObjectId::default(),
            offset: 0,
            len: 0,
            expected: 0,
            min_version: 0,
            repair_source: 0,
            started_us: self.now_us,
            kind,
            version: 0,
            pending: 0,
            error: None,
            peer_failed: false,
            holds_object: false,
            read: None,
        }
    }

    pub(super) fn client_read(&mut self, conn: ConnId, id: u64, rw: Rw) {
        Self::count(&mut self.counters.ops, "read", u64::from(rw.len));
        let (pg, oid, offset) = match self.locate(&rw, "read") {
            Ok(found) => found,
            Err(code) => return self.reply(conn, Reply::error(id, Opcode::Read, code), &[]),
        };
        let mut op = self.client_op(conn, id, Opcode::Read, ClientKind::Read);
        (op.pg, op.oid, op.offset, op.len, op.pending) = (Some(pg), oid, offset, rw.len, 1);
        let key = self.new_op(op);
        // The primary lacks the newest version and is out of space: the member that has
        // it serves the read...
        if let Some((source, version)) = self.proxy_read_source(pg, oid) {
            return self.proxy_read(key, source, version);
        }
        // ...otherwise a copy of a degraded object comes first and the read follows it.
        if self.recover_first(pg, oid) {
            return self.queue_on_object(pg, oid, key);
        }
        // A write or delete in flight is not acknowledged yet and may still be lost (a
        // member fails, the primary dies): a read must not see it before it is on every
        // live member, or a later read could go back to the older data.
        if self.pgs[&pg].busy.contains_key(&oid) {
            return self.queue_on_object(pg, oid, key);
        }
        self.start_read(key);
    }

    pub(super) fn start_read(&mut self, key: u64) {
        let Some(op) = self.client_ops.get(&key) else {
            return;
        };
        if op
            .pg
            .and_then(|pg| self.pgs.get(&pg))
            .is_some_and(|pg| pg.ec.is_some())
        {
            return self.ec_start_read(key);
        }
        let read = Op::Read {
            oid: op.oid,
            offset: op.offset,
            len: op.len,
        };
        let part = ClientPart::LocalWrite;
        self.submit_store(read, Waiter::Client { op: key, part });
    }

    /// The member and version to read `oid` from when the primary lacks its newest
    /// version, cannot store it (out of space) and no copy of it runs: the copy's source.
    /// (Otherwise the copy comes first, see [`Osd::recover_first`]. A newest version that
    /// is a tombstone is copied first: a delete is small and reads then come out as
    /// zeros.) Known limit: such a read can show a write whose client got an error and
    /// which only the source holds; it is lost if the source fails before the copy.
    fn proxy_read_source(&self, pg: PgKey, oid: ObjectId) -> Option<(u64, u64)> {
        let me = self.settings.osd_num;
        if self.now_ms >= self.full_until_ms {
            return None;
        }
        let pg = self.pgs.get(&pg)?;
        let queue = pg.recovery.as_ref()?;
        let item = queue.item(&oid)?;
        let usable = queue.is_pending(&oid)
            && item.targets.contains(&me)
            && !item.deleted
            && item.source != me
            && self.peers.contains_key(&item.source);
        usable.then_some((item.source, item.version))
    }

    pub(super) fn proxy_read(&mut self, key: u64, source: u64, version: u64) {
        let Some(op) = self.client_ops.get_mut(&key) else {
            return;
        };
        let pg = op.pg.expect("invariant: a read has a PG");
        op.version = version;
        let epoch = self.pgs.get(&pg).map_or(0, |pg| pg.epoch);
        let rw = SecRw {
            oid: op.oid,
            version,
            offset: op.offset,
            len: op.len,
            attr_len: 0,
            pg: pg.1,
            epoch,
        };
        Self::count(&mut self.counters.ops, "proxy_read", u64::from(rw.len));
        if !self.send_to_peer(
            source,
            RequestBody::SecRead(rw),
            &[],
            Waiter::ProxyRead { op: key },
        ) {
            self.client_part_done(key, Err(errno::EPIPE), true);
        }
    }

    /// The member's answer to a proxied read: it must hold at least the version peering
    /// chose (a newer one is a write that raced with the read); anything else means the
    /// member cannot be trusted and the PG peers again.
    pub(super) fn proxy_read_done(
        &mut self,
        key: u64,
        result: Result<(Reply, Vec<u8>), i32>,
        from: Option<u64>,
    ) {
        let Some(op) = self.client_ops.get_mut(&key) else {
            return;
        };
        let (reply, payload) = match result {
            Ok(answer) => answer,
            // That copy is damaged too: no data rather than wrong data; the member is
            // healthy otherwise, so the PG does not repeer (a repair is tried again at
            // the next read or activation).
            Err(code) if code == errno::EDOM || matches!(op.kind, ClientKind::Repair) => {
                return self.fail_client_op(key, code)
            }
            Err(code) => return self.client_part_done(key, Err(code), true),
        };
        let (version, attr_len) = match reply.body {
            ReplyBody::SecRw { version, attr_len } => (version, attr_len as usize),
            _ => (0, usize::MAX),
        };
        let sane = version >= op.version && payload.len() == attr_len + op.len as usize;
        if !sane {
            tracing::error!(
                osd = from,
                version,
                wanted = op.version,
                "a member answered a proxied read with an older version or a bad length"
            );
            if let Some(osd) = from {
                self.close_peer(osd);
            }
            return self.client_part_done(key, Err(errno::EPIPE), true);
        }
        if matches!(op.kind, ClientKind::Repair) {
            return self.repair_source_read(key, version, payload[attr_len..].to_vec());
        }
        op.version = version;
        let (bitmap, data) = payload.split_at(attr_len);
        op.read = Some((bitmap.to_vec(), AlignedBuf::from_slice(data)));
        self.client_part_done(key, Ok(()), true)
    }

    pub(super) fn is_client_read(&self, key: u64) -> bool {
        self.client_ops
            .get(&key)
            .is_some_and(|op| matches!(op.kind, ClientKind::Read))
    }

    /// Queues op `key` behind whatever holds `oid` (a copy or a write).
    pub(super) fn queue_on_object(&mut self, pg: PgKey, oid: ObjectId, key: u64) {
        let queue = self
            .pgs
            .get_mut(&pg)
            .and_then(|pg| pg.busy.get_mut(&oid))
            .expect("invariant: the object is held");
        queue.push_back(key);
    }

    pub(super) fn client_write(&mut self, conn: ConnId, id: u64, rw: Rw, payload: Vec<u8>) {
        Self::count(&mut self.counters.ops, "write", u64::from(rw.len));
        if rw.len == 0 {
            return self.reply(conn, Reply::error(id, Opcode::Write, errno::EINVAL), &[]);
        }
        let kind = ClientKind::Write { data: payload };
        self.client_modify(conn, id, Opcode::Write, rw, kind);
    }

    pub(super) fn client_delete(&mut self, conn: ConnId, id: u64, rw: Rw) {
        Self::count(&mut self.counters.ops, "delete", 0);
        let rw = Rw { len: 0, ..rw };
        self.client_modify(conn, id, Opcode::Delete, rw, ClientKind::Delete);
    }

    fn client_modify(&mut self, conn: ConnId, id: u64, opcode: Opcode, rw: Rw, kind: ClientKind) {
        let what = if opcode == Opcode::Delete {
            "delete"
        } else {
            "write"
        };
        let (pg, oid, offset) = match self.locate(&rw, what) {
            Ok(found) => found,
            Err(code) => return self.reply(conn, Reply::error(id, opcode, code), &[]),
        };
        let mut op = self.client_op(conn, id, opcode, kind);
        (op.pg, op.oid, op.offset, op.len, op.expected) =
            (Some(pg), oid, offset, rw.len, rw.version);
        let key = self.new_op(op);
        let busy = self
            .pgs
            .get(&pg)
            .expect("invariant: locate found the PG")
            .busy
            .contains_key(&oid);
        // A write must find the object whole on every live member: a pending copy of it
        // starts now and the write queues behind it.
        if busy || self.recover_first(pg, oid) {
            return self.queue_on_object(pg, oid, key);
        }
        self.pgs
            .get_mut(&pg)
            .expect("invariant: locate found the PG")
            .busy
            .insert(oid, Default::default());
        self.start_modify(key);
    }

    /// Starts an op that reached the head of its object's queue.
    fn start_queued(&mut self, key: u64) {
        let Some(op) = self.client_ops.get_mut(&key) else {
            return;
        };
        if matches!(op.kind, ClientKind::Repair) {
            op.holds_object = true;
            return self.start_repair_read(key);
        }
        if matches!(op.kind, ClientKind::Scrub { .. }) {
            return self.start_object_scrub(key);
        }
        if !matches!(op.kind, ClientKind::Read) {
            return self.start_modify(key);
        }
        op.holds_object = true;
        let (pg, oid) = (op.pg.expect("invariant: reads have a PG"), op.oid);
        if self
            .pgs
            .get(&pg)
            .is_none_or(|pg| pg.base != super::PgBase::Active)
        {
            return self.fail_client_op(key, errno::EPIPE);
        }
        // The copy it waited for went back to the queue (this OSD is out of space).
        if let Some((source, version)) = self.proxy_read_source(pg, oid) {
            return self.proxy_read(key, source, version);
        }
        self.start_read(key);
    }

    /// Runs a write or delete that holds its object's queue.
    pub(super) fn start_modify(&mut self, key: u64) {
        let me = self.settings.osd_num;
        let Some(op) = self.client_ops.get_mut(&key) else {
            return;
        };
        // From here on this op holds its object's queue: however it ends, the next op in
        // the queue must be started (a failure below must not strand the queue).
        op.holds_object = true;
        let (pg_key, oid) = (op.pg.expect("invariant: modify ops have a PG"), op.oid);
        let Some(op) = self.client_ops.get(&key) else {
            return;
        };
        let Some(pg) = self.pgs.get(&pg_key) else {
            return self.fail_client_op(key, errno::EPIPE);
        };
        if pg.base != super::PgBase::Active {
            return self.fail_client_op(key, errno::EPIPE);
        }
        if pg.ec.is_some() {
            return self.ec_start_modify(key);
        }
        // A write starts only on an object every live member holds whole. The one way a
        // copy can still be due here: it went back to the queue because this OSD ran out
        // of space (`recovery.rs`), while a read held the object; the write could not be
        // stored here either.
        if let Some(queue) = pg.recovery.as_ref().filter(|q| q.item(&oid).is_some()) {
            debug_assert!(
                queue.is_pending(&oid) && self.full_until_ms > 0,
                "a write starts only on an object every live member holds whole"
            );
            return self.fail_client_op(key, errno::ENOSPC);
        }
        let current = self.store.object_version(&oid);
        let expected = op.expected;
        let is_delete = matches!(op.kind, ClientKind::Delete);
        let pg_epoch = pg.epoch;
        // Only when every OSD that may hold a copy takes this epoch's writes does "the
        // primary has no live data" mean "nobody has": an absent member may hold a write
        // whose outcome its client never learned, and only a tombstone keeps it from
        // coming back.
        let nobody_else = !pg.degraded
            && self
                .view
                .pg_history
                .get(&pg_key)
                .is_none_or(|h| h.all_peers.iter().all(|osd| pg.live.contains(osd)));
        let peers: Vec<u64> = pg.write_peers(me).collect();
        if expected != 0 && expected != current + 1 {
            return self.fail_client_op(key, errno::EINTR);
        }
        if is_delete && nobody_else && !self.store.object_exists(&oid) {
            // Never written, deleted already or purged everywhere: it reads as zeros, and
            // another tombstone would only cost space.
            return self.finish_client_op(key);
        }
        let version = (current + 1).max(pg_epoch << 16 | 1).max(op.min_version);
        debug_assert!(version >> 16 >= pg_epoch, "versions carry the PG's epoch");
        let (pg_num, epoch) = (pg_key.1, pg_epoch);
        let op = self
            .client_ops
            .get_mut(&key)
            .expect("invariant: checked above");
        op.version = version;
        op.pending = 1 + peers.len() as u32;
        let (offset, len) = (op.offset, op.len);
        debug_assert!(
            matches!(op.kind, ClientKind::Write { .. } | ClientKind::Delete),
            "only writes and deletes are written: {:?}",
            op.kind
        );
        let (local, body, data) = match &mut op.kind {
            ClientKind::Write { data } => {
                let local = Op::Write {
                    oid,
                    version,
                    offset,
                    data: AlignedBuf::from_slice(data),
                    stable: true,
                };
                let rw = SecRw {
                    oid,
                    version,
                    offset,
                    len,
                    attr_len: 0,
                    pg: pg_num,
                    epoch,
                };
                // Not needed after this: the copies are on their way.
                (local, RequestBody::SecWriteStable(rw), std::mem::take(data))
            }
            _ => (
                Op::Delete { oid, version },
                RequestBody::SecDelete(SecDelete {
                    oid,
                    version,
                    purge: false,
                    pg: pg_num,
                    epoch,
                }),
                Vec::new(),
            ),
        };
        let part = ClientPart::LocalWrite;
        self.submit_store(local, Waiter::Client { op: key, part });
        for osd in peers {
            let waiter = Waiter::Client {
                op: key,
                part: ClientPart::Peer,
            };
            if !self.send_to_peer(osd, body, &data, waiter) {
                self.client_part_done(key, Err(errno::EPIPE), true);
            }
        }
    }

    pub(super) fn client_sync(&mut self, conn: ConnId, id: u64) {
        Self::count(&mut self.counters.ops, "sync", 0);
        if self.sync_every_write() {
            return self.reply(conn, Reply::error(id, Opcode::Sync, 0), &[]);
        }
        let me = self.settings.osd_num;
        let mut peers: Vec<u64> = self
            .pgs
            .values()
            .flat_map(|pg| pg.write_peers(me))
            .collect();
        peers.sort_unstable();
        peers.dedup();
        let mut op = self.client_op(conn, id, Opcode::Sync, ClientKind::Sync);
        op.pending = 1 + peers.len() as u32;
        let key = self.new_op(op);
        let part = ClientPart::LocalSync;
        self.submit_store(Op::Sync, Waiter::Client { op: key, part });
        for osd in peers {
            let waiter = Waiter::Client {
                op: key,
                part: ClientPart::Peer,
            };
            if !self.send_to_peer(osd, RequestBody::SecSync, &[], waiter) {
                self.client_part_done(key, Err(errno::EPIPE), true);
            }
        }
    }

    pub(super) fn client_store_done(
        &mut self,
        key: u64,
        part: ClientPart,
        result: Result<OpOutput, OpError>,
    ) {
        let sync_every_write = self.sync_every_write();
        let Some(op) = self.client_ops.get_mut(&key) else {
            return;
        };
        match result {
            Ok(OpOutput::Read { version, data, .. }) if matches!(op.kind, ClientKind::Repair) => {
                // A repair from this OSD's own copy (scrub found a member's bad).
                return self.repair_source_read(key, version, data.to_vec());
            }
            Err(error) if matches!(op.kind, ClientKind::Repair) => {
                return self.fail_client_op(key, error.errno);
            }
            Ok(OpOutput::Read {
                version,
                bitmap,
                data,
            }) => {
                op.version = version;
                op.read = Some((bitmap, data));
            }
            Ok(_) => {
                let modify = matches!(op.kind, ClientKind::Write { .. } | ClientKind::Delete);
                if part == ClientPart::LocalWrite && modify && sync_every_write {
                    let part = ClientPart::LocalSync;
                    return self.submit_store(Op::Sync, Waiter::Client { op: key, part });
                }
            }
            Err(error) if error.errno == errno::EDOM && matches!(op.kind, ClientKind::Read) => {
                // A checksum failure here: serve the read from a good copy and repair.
                return self.read_repair(key);
            }
            Err(error) => {
                tracing::debug!(key, "client op failed locally: {}", error.message);
                return self.client_part_done(key, Err(error.errno), false);
            }
        }
        self.client_part_done(key, Ok(()), false)
    }

    /// A member answered a sub-op of client op `key`. A write or delete reply must carry
    /// the version we sent; anything else means the peer cannot be trusted: its
    /// connection is dropped and the PG peers again.
    pub(super) fn client_peer_done(
        &mut self,
        key: u64,
        result: Result<Reply, i32>,
        from: Option<u64>,
    ) {
        let expected = self.client_ops.get(&key).map(|op| op.version);
        let result = match result {
            Ok(reply) => {
                let version = match reply.body {
                    ReplyBody::SecRw { version, .. } | ReplyBody::SecDelete { version } => {
                        Some(version)
                    }
                    _ => None,
                };
                match (version, expected, from) {
                    (Some(got), Some(sent), Some(osd)) if got != sent && sent != 0 => {
                        tracing::error!(
                            osd,
                            got,
                            sent,
                            "a member acknowledged another version than it was sent; dropping it"
                        );
                        self.client_part_done(key, Err(errno::EPIPE), true);
                        self.close_peer(osd);
                        return;
                    }
                    _ => Ok(()),
                }
            }
            Err(code) => Err(code),
        };
        self.client_part_done(key, result, true)
    }

    pub(super) fn client_part_done(&mut self, key: u64, result: Result<(), i32>, from_peer: bool) {
        let Some(op) = self.client_ops.get_mut(&key) else {
            return;
        };
        if let Err(code) = result {
            if from_peer {
                op.peer_failed = true;
                // The client retries; the PG repeers and repairs or drops the member.
                op.error.get_or_insert(errno::EPIPE);
            } else {
                op.error = Some(code);
                // A write or delete that failed here (a full disk) may have reached the
                // other members: the PG repeers before the next write to the object, or
                // its next version would be assigned twice with different data.
                if matches!(op.kind, ClientKind::Write { .. } | ClientKind::Delete)
                    && op.version != 0
                {
                    op.peer_failed = true;
                }
            }
        }
        op.pending -= 1;
        if op.pending == 0 {
            self.finish_client_op(key);
        }
    }

    /// Answers an op that has not started its I/O.
    pub(super) fn fail_client_op(&mut self, key: u64, code: i32) {
        if let Some(op) = self.client_ops.get_mut(&key) {
            op.error = Some(code);
            op.pending = 0;
        }
        self.finish_client_op(key);
    }

    pub(super) fn finish_client_op(&mut self, key: u64) {
        let Some(op) = self.client_ops.remove(&key) else {
            return;
        };
        let reply = match op.error {
            Some(code) => Reply::error(op.id, op.opcode, code),
            None => Reply {
                id: op.id,
                opcode: op.opcode,
                retval: match op.kind {
                    ClientKind::Sync => 0,
                    _ => i64::from(op.len),
                },
                body: match op.kind {
                    ClientKind::Sync => ReplyBody::Empty,
                    _ => ReplyBody::Rw {
                        bitmap_len: op.read.as_ref().map_or(0, |(b, _)| b.len() as u32),
                        version: op.version,
                    },
                },
            },
        };
        if op.conn != super::repair::REPAIR_CONN {
            let latency = self.now_us.saturating_sub(op.started_us);
            self.recovery_tuner.client_op_done(latency);
        }
        match (&op.read, op.error) {
            _ if op.conn == super::repair::REPAIR_CONN => self.repair_finished(&op),
            (Some((bitmap, data)), None) => {
                let mut payload = Vec::with_capacity(bitmap.len() + data.len());
                payload.extend_from_slice(bitmap);
                payload.extend_from_slice(data);
                self.reply(op.conn, reply, &payload);
            }
            _ => self.reply(op.conn, reply, &[]),
        }
        let Some(pg_key) = op.pg else {
            return;
        };
        if !matches!(op.kind, ClientKind::Sync) {
            self.next_on_object(pg_key, op.oid, key, op.holds_object);
        }
        if op.peer_failed {
            if let Some(pg) = self.pgs.get_mut(&pg_key) {
                if pg.base == super::PgBase::Active {
                    pg.base = super::PgBase::Repeering;
                }
            }
        }
        self.pg_op_finished(pg_key);
    }

    /// Releases an object's queue to the next waiting op, if the finished op held it.
    fn next_on_object(&mut self, pg_key: PgKey, oid: ObjectId, finished: u64, held: bool) {
        let Some(pg) = self.pgs.get_mut(&pg_key) else {
            return;
        };
        let Some(queue) = pg.busy.get_mut(&oid) else {
            return;
        };
        if !held {
            queue.retain(|&op| op != finished);
            return; // it was waiting, not running
        }
        self.release_object(pg_key, oid);
    }

    /// The holder of `oid`'s queue (an op or a copy) finished: start the next op.
    pub(super) fn release_object(&mut self, pg_key: PgKey, oid: ObjectId) {
        let Some(pg) = self.pgs.get_mut(&pg_key) else {
            return;
        };
        let Some(queue) = pg.busy.get_mut(&oid) else {
            return;
        };
        match queue.pop_front() {
            Some(next) => self.start_queued(next),
            None => {
                pg.busy.remove(&oid);
            }
        }
    }
}
