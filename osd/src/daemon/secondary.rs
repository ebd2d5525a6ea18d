//! Sub-ops a primary sends to the other OSDs of a PG: write or read one object version,
//! delete, fsync, list a PG's versions for peering. They run straight on the blockstore;
//! when every write must be durable (`immediate_commit = all`), a write is followed by an
//! fsync before its reply.

use super::{ConnId, Osd, Waiter};
use crate::blockstore::{AlignedBuf, Disk, Op, OpError, OpOutput};
use vitastor_proto::wire::{encode_obj_versions, Opcode, Reply, ReplyBody, Request, RequestBody};
use vitastor_proto::ObjectVersion;

impl<D: Disk> Osd<D> {
    pub(super) fn secondary_op(&mut self, conn: ConnId, request: Request, payload: Vec<u8>) {
        let (id, opcode) = (request.id, request.body.opcode());
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
            RequestBody::SecDelete { oid, version } => {
                Self::count(&mut self.counters.subops, "delete", 0);
                self.submit_store(Op::Delete { oid, version }, waiter(sync, version, 0));
            }
            RequestBody::SecSync => {
                Self::count(&mut self.counters.subops, "sync", 0);
                self.submit_store(Op::Sync, waiter(false, 0, 0));
            }
            RequestBody::SecList(list) => {
                Self::count(&mut self.counters.subops, "list", 0);
                let mut listed = self.store.list(
                    list.list_pg,
                    list.pg_count,
                    list.pg_stripe_size,
                    list.min_inode,
                    list.max_inode,
                );
                // TODO(peering): tombstones. Deleted versions are not sent yet (the primary
                // takes every listed version for live data); peering should carry them.
                listed.retain(|v| !v.deleted);
                // Stable versions first, as the reply's stable_count says.
                listed.sort_by_key(|v| !v.stable);
                let stable_count = listed.iter().filter(|v| v.stable).count() as u64;
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
                    body: ReplyBody::SecList { stable_count },
                };
                self.reply(conn, reply, &encode_obj_versions(&items));
            }
            _ => unreachable!("inbound.rs routes only sub-ops here"),
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
