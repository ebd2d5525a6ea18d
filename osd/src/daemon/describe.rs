//! DESCRIBE: this primary's objects that are not as they should be, for `vitastor-cli
//! describe` (see `vitastor_proto::wire::describe`):
//!
//! | object (of an active PG this OSD is primary of) | item |
//! |---|---|
//! | still to be copied to a live member (recovery) | that member, outdated; state degraded or misplaced |
//! | found inconsistent by the last scrub | every live member, inconsistent |
//! | marked damaged in this OSD's blockstore | this OSD, corrupted |

use super::Osd;
use crate::blockstore::Disk;
use crate::cluster::PgKey;
use std::collections::BTreeMap;
use vitastor_proto::wire::describe::{
    encode_describe_items, DescribeItem, LOC_CORRUPTED, LOC_INCONSISTENT, LOC_OUTDATED,
    OBJ_CORRUPTED, OBJ_DEGRADED, OBJ_INCONSISTENT, OBJ_MISPLACED,
};
use vitastor_proto::wire::request::Describe;
use vitastor_proto::wire::{Opcode, Reply, ReplyBody};
use vitastor_proto::ObjectId;

/// Items in one reply at most (32 bytes each: 32 MiB).
const DESCRIBE_ITEMS_MAX: usize = 1 << 20;

impl<D: Disk> Osd<D> {
    pub(super) fn describe(&mut self, conn: super::ConnId, id: u64, request: Describe) {
        let me = self.settings.osd_num;
        let wanted = |state: u64| request.object_state == 0 || request.object_state & state != 0;
        let in_range = |oid: &ObjectId| {
            let max_inode = if request.max_inode == 0 {
                u64::MAX
            } else {
                request.max_inode
            };
            let max_offset = if request.max_offset == 0 {
                u64::MAX
            } else {
                request.max_offset
            };
            oid.inode >= request.min_inode
                && oid.inode <= max_inode
                && oid.stripe >= request.min_offset
                && oid.stripe <= max_offset
        };
        // (inode, stripe, osd) -> what is wrong there.
        let mut found: BTreeMap<(u64, u64, u64), u32> = BTreeMap::new();
        let mut note = |oid: &ObjectId, osd: u64, loc: u32| {
            *found.entry((oid.inode, oid.stripe, osd)).or_default() |= loc;
        };
        let pgs: Vec<PgKey> = self
            .pgs
            .iter()
            .filter(|(key, pg)| {
                pg.base == super::PgBase::Active
                    && (request.pool_id == 0 || key.0 == request.pool_id)
                    && (request.pg_num == 0 || key.1 == request.pg_num)
            })
            .map(|(key, _)| *key)
            .collect();
        for key in &pgs {
            let pg = &self.pgs[key];
            if let Some(queue) = pg.recovery.as_ref() {
                for (oid, item) in queue.items() {
                    let state = match item.kind {
                        super::recovery::CopyKind::Degraded => OBJ_DEGRADED,
                        super::recovery::CopyKind::Misplaced => OBJ_MISPLACED,
                    };
                    if wanted(state) && in_range(oid) {
                        for &osd in &item.targets {
                            note(oid, osd, LOC_OUTDATED);
                        }
                    }
                }
            }
            if wanted(OBJ_INCONSISTENT) {
                for oid in pg.inconsistent.iter().filter(|oid| in_range(oid)) {
                    for &osd in pg.live.iter().filter(|&&osd| osd != 0) {
                        note(oid, osd, LOC_INCONSISTENT);
                    }
                }
            }
        }
        if wanted(OBJ_CORRUPTED) {
            let damaged: Vec<ObjectId> = self.store.damaged_objects().keys().copied().collect();
            for oid in damaged.iter().filter(|oid| in_range(oid)) {
                if self.pg_of_object(oid).is_some_and(|pg| pgs.contains(&pg)) {
                    note(oid, me, LOC_CORRUPTED);
                }
            }
        }
        let limit = match request.limit {
            0 => DESCRIBE_ITEMS_MAX,
            n => (n as usize).min(DESCRIBE_ITEMS_MAX),
        };
        let items: Vec<DescribeItem> = found
            .into_iter()
            .take(limit)
            .map(|((inode, stripe, osd_num), loc_bad)| DescribeItem {
                inode,
                stripe,
                role: 0,
                loc_bad,
                osd_num,
            })
            .collect();
        let payload = encode_describe_items(&items);
        let reply = Reply {
            id,
            opcode: Opcode::Describe,
            retval: items.len() as i64,
            body: ReplyBody::Describe {
                result_bytes: payload.len() as u64,
            },
        };
        self.reply(conn, reply, &payload);
    }
}
