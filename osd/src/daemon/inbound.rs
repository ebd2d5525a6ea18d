//! Inbound connections: decode requests as bytes arrive and route them. A stream that cannot
//! be trusted (bad magic, bad header checksum, oversized payload) closes that connection
//! only; an unknown or unimplemented opcode gets -EINVAL (what Vitastor's OSD answers), a
//! mutating sub-op without the header seal gets -EPERM, and the stream goes on: closing
//! would only make a stock Vitastor client reconnect and resend in a loop. Each such
//! opcode is logged once per OSD process, not once per request.

use super::{Action, ConnId, Osd};
use crate::blockstore::Disk;
use vitastor_proto::errno;
use vitastor_proto::wire::show_config::{ShowConfigReply, ShowConfigRequest};
use vitastor_proto::wire::PROTOCOL_VERSION;
use vitastor_proto::wire::{Opcode, Reply, ReplyBody, Request, RequestBody, RequestEvent};

impl<D: Disk> Osd<D> {
    /// Bytes received on inbound connection `conn`.
    pub fn on_bytes(&mut self, conn: ConnId, bytes: &[u8]) {
        let Some(decoder) = self.inbound.get_mut(&conn) else {
            return;
        };
        decoder.push(bytes);
        loop {
            let Some(decoder) = self.inbound.get_mut(&conn) else {
                return;
            };
            match decoder.next_event() {
                Ok(Some(RequestEvent::Request(request, payload))) => {
                    self.handle_request(conn, request, payload)
                }
                Ok(Some(RequestEvent::Unknown { id, opcode })) => {
                    if self.refused_opcodes.insert(opcode) {
                        tracing::warn!(conn, opcode, "unknown opcode, answering -EINVAL");
                    }
                    let bytes = Reply::unknown_opcode(id, opcode, errno::EINVAL).to_vec();
                    self.actions.push(Action::Reply { conn, bytes });
                }
                Ok(Some(RequestEvent::Unsealed { id, opcode })) => {
                    if self.refused_opcodes.insert(opcode as u64) {
                        tracing::warn!(
                            conn,
                            ?opcode,
                            "a mutating sub-op without the header seal (not from one of our \
                             OSDs), answering -EPERM"
                        );
                    }
                    self.reply(conn, Reply::error(id, opcode, errno::EPERM), &[]);
                }
                Ok(None) => return,
                Err(error) => {
                    tracing::warn!(
                        conn,
                        "closing a connection that sent a bad request: {error}"
                    );
                    self.inbound.remove(&conn);
                    self.actions.push(Action::Close { conn });
                    return;
                }
            }
        }
    }

    fn handle_request(&mut self, conn: ConnId, request: Request, payload: Vec<u8>) {
        let id = request.id;
        match request.body {
            RequestBody::ShowConfig { .. } => self.show_config(conn, id, &payload),
            RequestBody::Ping => self.reply(conn, Reply::error(id, Opcode::Ping, 0), &[]),
            RequestBody::Read(rw) => self.client_read(conn, id, rw),
            RequestBody::Write(rw) => self.client_write(conn, id, rw, payload),
            RequestBody::Delete(rw) => self.client_delete(conn, id, rw),
            RequestBody::Sync => self.client_sync(conn, id),
            RequestBody::Describe(describe) => self.describe(conn, id, describe),
            RequestBody::Scrub(rw) => self.client_scrub(conn, id, rw),
            RequestBody::CondemnCopy(oid) => self.condemn_copy(conn, id, oid),
            RequestBody::SecRead(_)
            | RequestBody::SecWrite(_)
            | RequestBody::SecWriteStable(_)
            | RequestBody::SecSync
            | RequestBody::SecStabilize { .. }
            | RequestBody::SecRollback { .. }
            | RequestBody::SecDelete { .. }
            | RequestBody::SecList(_) => self.secondary_op(conn, request, payload),
            _ => {
                if self.refused_opcodes.insert(request.body.opcode() as u64) {
                    tracing::warn!(conn, ?request, "unimplemented op, answering -EINVAL");
                }
                self.reply(
                    conn,
                    Reply::error(id, request.body.opcode(), errno::EINVAL),
                    &[],
                );
            }
        }
    }

    fn show_config(&mut self, conn: ConnId, id: u64, payload: &[u8]) {
        if let Err(error) = ShowConfigRequest::parse(payload) {
            tracing::warn!(conn, "invalid SHOW_CONFIG JSON: {error}");
            self.reply(
                conn,
                Reply::error(id, Opcode::ShowConfig, errno::EINVAL),
                &[],
            );
            return;
        }
        let config = ShowConfigReply {
            osd_num: self.settings.osd_num,
            protocol_version: PROTOCOL_VERSION,
            block_size: self.store.block_size(),
            bitmap_granularity: self.store.bitmap_granularity(),
            primary_enabled: true,
            blockstore_enabled: true,
            readonly: false,
            immediate_commit: self.settings.immediate_commit,
            lease_timeout: self.settings.lease_timeout,
            features: serde_json::Map::new(),
        };
        // JSON + NUL, retval = its length: Vitastor's convention (see show_config.rs).
        let payload = config.to_payload();
        let reply = Reply {
            id,
            opcode: Opcode::ShowConfig,
            retval: payload.len() as i64,
            body: ReplyBody::Empty,
        };
        self.reply(conn, reply, &payload);
    }
}
