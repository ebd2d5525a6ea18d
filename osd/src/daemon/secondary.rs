//! Sub-ops a primary sends to the other OSDs of a PG: write or read one object version,
//! delete (a tombstone) or purge a tombstone, fsync, list a PG's versions for peering,
//! stabilize or roll back unstable versions (`stabilize.rs`).
//! They run straight on the blockstore; when every write must be durable
//! (`immediate_commit = all`), a write is followed by an fsync before its reply.
//!
//! Fencing: every sub-op of a PG carries the primary's epoch of it. The newest epoch seen
//! per PG is remembered, and sub-ops of older epochs are refused with -EPIPE: they come
//! from a primary that was deposed (its lease expired, another OSD peered the PG since).
//! If we think we are the primary of that PG ourselves and a newer epoch shows up, we
//! were deposed: the PG stops here.

use super::{ConnId, Osd, Waiter};
use crate::blockstore::{AlignedBuf, Disk, Op, OpError, OpOutput};
use crate::cluster::PgKey;
use vitastor_proto::errno;
use vitastor_proto::wire::request::{LIST_PAGED, LIST_TOMBSTONES};

/// Most objects one SEC_LIST page lists (its reply stays far below the frame limit).
pub(super) const MAX_LIST_PAGE_OBJECTS: usize = 65_536;
use vitastor_proto::wire::{encode_obj_versions, Opcode, Reply, ReplyBody, Request, RequestBody};
use vitastor_proto::{ObjectId, ObjectVersion};

impl<D: Disk> Osd<D> {
    /// Checks a sub-op's epoch against the fence of its PG (and raises the fence). Epoch 0
    /// is not fenced (Vitastor's own tools listing objects).
    fn fence_allows(&mut self, key: PgKey, epoch: u64, opcode: Opcode) -> bool {
        if epoch == 0 {
            return true;
        }
        let fence = self.fences.get(&key).copied().unwrap_or(0);
        if epoch < fence {
            tracing::warn!(
                pool = key.0,
                pg = key.1,
                epoch,
                fence,
                ?opcode,
                "refusing a sub-op of a deposed primary"
            );
            return false;
        }
        self.raise_fence(key, epoch);
        let deposed = self.pgs.get(&key).is_some_and(|pg| {
            pg.claimed
                && !pg.stop
                && epoch > pg.epoch.max(pg.peering.as_ref().map_or(0, |p| p.fence))
        });
        if deposed {
            tracing::error!(
                pool = key.0,
                pg = key.1,
                epoch,
                "another primary serves this PG in a newer epoch; stopping it here"
            );
            self.stop_pg(key);
        }
        true
    }

    pub(super) fn secondary_op(&mut self, conn: ConnId, request: Request, payload: Vec<u8>) {
        let (id, opcode) = (request.id, request.body.opcode());
        let pool_of = |oid: &ObjectId| (oid.inode >> 48) as u32;
        let fenced = match &request.body {
            RequestBody::SecWrite(rw)
            | RequestBody::SecWriteStable(rw)
            | RequestBody::SecRead(rw) => {
                !self.fence_allows((pool_of(&rw.oid), rw.pg), rw.epoch, opcode)
            }
            RequestBody::SecDelete(del) => {
                !self.fence_allows((pool_of(&del.oid), del.pg), del.epoch, opcode)
            }
            RequestBody::SecList(list) => {
                let pool = (list.min_inode >> 48) as u32;
                !self.fence_allows((pool, list.list_pg), list.epoch, opcode)
            }
            RequestBody::SecStabilize { pg, epoch, .. }
            | RequestBody::SecRollback { pg, epoch, .. } => {
                // Every item is of PG `pg`; the pool comes from the first one.
                let pool = payload.get(..8).map_or(0, |b| {
                    (u64::from_le_bytes(b.try_into().expect("8 bytes")) >> 48) as u32
                });
                !self.fence_allows((pool, *pg), *epoch, opcode)
            }
            _ => false,
        };
        if fenced {
            return self.reply(conn, Reply::error(id, opcode, errno::EPIPE), &[]);
        }
        let sync = self.sync_every_write();
        let waiter = |sync: bool, version: u64, len: u32| Waiter::Secondary {
            conn,
            id,
            opcode,
            sync,
            version,
            len,
        };
        match request.body {
            RequestBody::SecWrite(rw) | RequestBody::SecWriteStable(rw) => {
                Self::count(&mut self.counters.subops, "write", u64::from(rw.len));
                let data = AlignedBuf::from_slice(&payload[rw.attr_len as usize..]);
                let op = Op::Write {
                    oid: rw.oid,
                    version: rw.version,
                    offset: rw.offset,
                    data,
                    stable: opcode == Opcode::SecWriteStable,
                };
                self.submit_store(op, waiter(sync, rw.version, rw.len));
            }
            RequestBody::SecRead(rw) => {
                Self::count(&mut self.counters.subops, "read", u64::from(rw.len));
                let op = Op::Read {
                    oid: rw.oid,
                    offset: rw.offset,
                    len: rw.len,
                };
                self.submit_store(op, waiter(false, 0, rw.len));
            }
            RequestBody::SecDelete(del) => {
                Self::count(&mut self.counters.subops, "delete", 0);
                let (oid, version) = (del.oid, del.version);
                let op = if del.purge {
                    Op::Purge { oid, version }
                } else {
                    Op::Delete { oid, version }
                };
                self.submit_store(op, waiter(sync && !del.purge, version, 0));
            }
            RequestBody::SecStabilize { .. } => {
                self.stabilize_or_rollback(conn, id, false, &payload)
            }
            RequestBody::SecRollback { .. } => self.stabilize_or_rollback(conn, id, true, &payload),
            RequestBody::SecSync => {
                Self::count(&mut self.counters.subops, "sync", 0);
                self.submit_store(Op::Sync, waiter(false, 0, 0));
            }
            RequestBody::SecList(list) => {
                // A change of the PG still on its way (a sub-op of the primary before,
                // admitted before the fence went up) would land after the listing and
                // make this copy differ from what peering decided: list once it landed.
                let max_inode = if list.max_inode == 0 {
                    u64::MAX
                } else {
                    list.max_inode
                };
                if self.store.changes_in_flight(
                    list.list_pg,
                    list.pg_count,
                    list.pg_stripe_size,
                    list.min_inode,
                    max_inode,
                ) {
                    self.deferred_lists.push((conn, request));
                    return;
                }
                Self::count(&mut self.counters.subops, "list", 0);
                let mut listed = if list.flags & LIST_PAGED != 0 {
                    let from = ObjectId {
                        inode: list.min_inode,
                        stripe: list.min_stripe,
                    };
                    let limit = (list.stable_limit as usize).clamp(1, MAX_LIST_PAGE_OBJECTS);
                    self.store
                        .list_page(
                            list.list_pg,
                            list.pg_count,
                            list.pg_stripe_size,
                            from,
                            list.max_inode,
                            limit,
                        )
                        .0
                } else {
                    self.store.list(
                        list.list_pg,
                        list.pg_count,
                        list.pg_stripe_size,
                        list.min_inode,
                        list.max_inode,
                    )
                };
                // Live stable versions first, as the reply's stable_count says, then
                // unstable ones, then (when asked for) tombstones: the last deleted_count.
                let with_tombstones = list.flags & LIST_TOMBSTONES != 0;
                listed.retain(|v| with_tombstones || !v.deleted);
                listed.sort_by_key(|v| (v.deleted, !v.stable));
                let stable_count = listed.iter().filter(|v| v.stable && !v.deleted).count() as u64;
                let deleted_count = listed.iter().filter(|v| v.deleted).count() as u64;
                let items: Vec<ObjectVersion> = listed
                    .iter()
                    .map(|v| ObjectVersion {
                        oid: v.oid,
                        version: v.version,
                    })
                    .collect();
                let reply = Reply {
                    id,
                    opcode,
                    retval: items.len() as i64,
                    body: ReplyBody::SecList {
                        stable_count,
                        deleted_count,
                    },
                };
                self.reply(conn, reply, &encode_obj_versions(&items));
            }
            _ => unreachable!("inbound.rs routes only sub-ops here"),
        }
    }

    /// Serves the listings that waited for changes in flight (after disk completions).
    pub(super) fn retry_deferred_lists(&mut self) {
        for (conn, request) in std::mem::take(&mut self.deferred_lists) {
            if self.inbound.contains_key(&conn) {
                self.secondary_op(conn, request, Vec::new());
            }
        }
    }

    pub(super) fn secondary_store_done(
        &mut self,
        waiter: Waiter,
        result: Result<OpOutput, OpError>,
    ) {
        let Waiter::Secondary {
            conn,
            id,
            opcode,
            sync,
            version,
            len,
        } = waiter
        else {
            return;
        };
        if !self.inbound.contains_key(&conn) {
            return; // the primary went away; nobody to answer
        }
        let output = match result {
            Ok(output) => output,
            Err(error) => {
                tracing::debug!(conn, ?opcode, "sub-op failed: {}", error.message);
                self.reply(conn, Reply::error(id, opcode, error.errno), &[]);
                return;
            }
        };
        if sync {
            let version = match output {
                OpOutput::Version(v) => v,
                _ => version,
            };
            let next = Waiter::Secondary {
                conn,
                id,
                opcode,
                sync: false,
                version,
                len,
            };
            self.submit_store(Op::Sync, next);
            return;
        }
        let (retval, body, payload) = match (opcode, output) {
            (
                Opcode::SecRead,
                OpOutput::Read {
                    version,
                    bitmap,
                    data,
                },
            ) => {
                let mut payload = bitmap.clone();
                payload.extend_from_slice(&data);
                let body = ReplyBody::SecRw {
                    version,
                    attr_len: bitmap.len() as u32,
                };
                (i64::from(len), body, payload)
            }
            (Opcode::SecWrite | Opcode::SecWriteStable, output) => {
                let version = match output {
                    OpOutput::Version(v) => v,
                    _ => version,
                };
                let body = ReplyBody::SecRw {
                    version,
                    attr_len: 0,
                };
                (i64::from(len), body, Vec::new())
            }
            (Opcode::SecDelete, output) => {
                let version = match output {
                    OpOutput::Version(v) => v,
                    _ => version,
                };
                (0, ReplyBody::SecDelete { version }, Vec::new())
            }
            _ => (0, ReplyBody::Empty, Vec::new()),
        };
        let reply = Reply {
            id,
            opcode,
            retval,
            body,
        };
        self.reply(conn, reply, &payload);
    }
}
