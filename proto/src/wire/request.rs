//! Request headers. Fields after the common header (offsets in bytes):
//!
//! | ops | layout from offset 24 | payload |
//! |---|---|---|
//! | SEC_READ, SEC_WRITE, SEC_WRITE_STABLE | inode u64 @24, stripe u64 @32, version u64 @40, offset u32 @48, len u32 @52, attr_len u32 @56; pg u32 @104, pg_epoch u64 @112 (ours) | writes: attr_len + len |
//! | SEC_DELETE | inode @24, stripe @32, version @40, flags u32 @48 (Vitastor's: 2 = `OSD_OP_IGNORE_PG_LOCK`, see [`RequestBody::CondemnCopy`]); purge u32 @108 (ours: 1 = purge the tombstone), pg u32 @104, pg_epoch @112 (ours) | - |
//! | SEC_STABILIZE, SEC_ROLLBACK | len u64 @24; pg u32 @104, pg_epoch @112 (ours) | len bytes of `{inode, stripe, version}` |
//! | SEC_READ_BMP | len u64 @24 | len bytes of `{inode, stripe, version}` |
//! | SEC_LIST | list_pg u32 @24, pg_count u32 @28, pg_stripe_size @32, min_inode @40, max_inode @48, min_stripe @56, max_stripe @64, stable_limit u32 @72; flags u32 @76 (ours: 1 = list tombstones too), pg_epoch @112 (ours) | - |
//! | SHOW_CONFIG | json_len u64 @24 | json_len bytes of JSON |
//! | READ, WRITE, DELETE, SCRUB | inode @24, offset @32, len u32 @40, flags u32 @44, meta_revision @48, version @56 | WRITE: len |
//! | DESCRIBE | object_state @24, min_inode @32, min_offset @40, max_inode @48, max_offset @56, limit @64 | - |
//! | SEC_LOCK (ours) | flags @24, pool_id @32, pg_num @40, pg_state @48 | - |
//! | SEC_SYNC, TEST_SYNC_STAB_ALL, SYNC, PING | - | - |
//!
//! `pg` and `pg_epoch` fence deposed primaries: a secondary remembers the newest epoch it
//! has seen per PG (from listings and sub-ops) and refuses sub-ops of older epochs. They
//! live in padding Vitastor leaves zeroed; epoch 0 means "not fenced" (Vitastor's own
//! tools listing objects).

use super::{as_header, check_payload, check_seal, seal, Fields, FieldsMut, Opcode, WireError};
use super::{MAX_PAYLOAD_BYTES, OBJ_VER_SIZE, PACKET_SIZE, REQUEST_MAGIC};
use crate::ObjectId;

/// Secondary read/write of one object version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SecRw {
    pub oid: ObjectId,
    pub version: u64,
    pub offset: u32,
    pub len: u32,
    pub attr_len: u32,
    /// The PG the object belongs to and the primary's epoch of it (fencing; 0 = none).
    pub pg: u32,
    pub epoch: u64,
}

/// SEC_DELETE: write a tombstone at `version`, or (`purge`) drop a tombstone that is the
/// object's newest version and not newer than `version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SecDelete {
    pub oid: ObjectId,
    pub version: u64,
    pub purge: bool,
    pub pg: u32,
    pub epoch: u64,
}

/// SEC_DELETE `flags` bit (Vitastor's `OSD_OP_IGNORE_PG_LOCK`): sent only by
/// `vitastor-cli fix`, straight to the OSD whose copy it removes; see
/// [`RequestBody::CondemnCopy`]. Our primaries never set it.
pub const SEC_IGNORE_PG_LOCK: u32 = 2;

/// SEC_LIST `flags` bit: include tombstones (the reply's last `deleted_count` entries).
pub const LIST_TOMBSTONES: u32 = 1;
/// SEC_LIST `flags` bit: one page of a listing. Only objects at or after the cursor
/// (`min_inode`, `min_stripe`) in (inode, stripe) order are listed (and up to
/// `max_inode`), at most `stable_limit` objects (with every listed version of each); a
/// reply with fewer objects is the last page. Without it `min_stripe`/`max_stripe` and
/// `stable_limit` are not interpreted (one reply holds everything).
pub const LIST_PAGED: u32 = 2;

/// Client read/write/delete of an image range inside one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rw {
    pub inode: u64,
    pub offset: u64,
    pub len: u32,
    pub flags: u32,
    pub meta_revision: u64,
    /// Non-zero on writes: compare-and-set, fails with -EINTR unless the object is at version-1.
    pub version: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SecList {
    pub list_pg: u32,
    pub pg_count: u32,
    pub pg_stripe_size: u64,
    pub min_inode: u64,
    pub max_inode: u64,
    pub min_stripe: u64,
    pub max_stripe: u64,
    pub stable_limit: u32,
    pub flags: u32,
    /// The listing primary's epoch for `list_pg` (fencing; 0 = none).
    pub epoch: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Describe {
    pub object_state: u64,
    pub min_inode: u64,
    pub min_offset: u64,
    pub max_inode: u64,
    pub max_offset: u64,
    pub limit: u64,
    /// 0: every pool.
    pub pool_id: u32,
    /// 0: every PG.
    pub pg_num: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SecLock {
    pub flags: u64,
    pub pool_id: u64,
    pub pg_num: u64,
    pub pg_state: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody {
    SecRead(SecRw),
    SecWrite(SecRw),
    SecWriteStable(SecRw),
    SecSync,
    /// Stabilize (or roll back) the `{inode, stripe, version}` list of the payload
    /// (`len` bytes); `pg` and `epoch` fence deposed primaries as in [`SecRw`].
    SecStabilize {
        len: u64,
        pg: u32,
        epoch: u64,
    },
    SecRollback {
        len: u64,
        pg: u32,
        epoch: u64,
    },
    SecDelete(SecDelete),
    /// A SEC_DELETE with [`SEC_IGNORE_PG_LOCK`]: `vitastor-cli fix --bad-osds` (Vitastor's or
    /// ours) removing this OSD's copy of an inconsistent object, then asking the primary
    /// to scrub the object. It needs no seal (the stock tool cannot make one). The OSD
    /// does not delete: it marks the copy bad so that no read returns it and the primary
    /// rewrites it from the good copies; a real delete under a primary that counts on the
    /// copy could lose the only good one or make a read return zeros.
    CondemnCopy(ObjectId),
    TestSyncStabAll,
    SecList(SecList),
    ShowConfig {
        json_len: u64,
    },
    Read(Rw),
    Write(Rw),
    Sync,
    Delete(Rw),
    Ping,
    SecReadBmp {
        len: u64,
    },
    Scrub(Rw),
    Describe(Describe),
    SecLock(SecLock),
}

/// A decoded request header. The payload (if any) follows on the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub id: u64,
    pub body: RequestBody,
}

impl RequestBody {
    /// Whether this op is refused without the header seal ([`Opcode::requires_seal`], but
    /// a fix's delete needs none: see [`RequestBody::CondemnCopy`]).
    pub fn requires_seal(&self) -> bool {
        !matches!(self, RequestBody::CondemnCopy(_)) && self.opcode().requires_seal()
    }

    pub fn opcode(&self) -> Opcode {
        match self {
            RequestBody::SecRead(_) => Opcode::SecRead,
            RequestBody::SecWrite(_) => Opcode::SecWrite,
            RequestBody::SecWriteStable(_) => Opcode::SecWriteStable,
            RequestBody::SecSync => Opcode::SecSync,
            RequestBody::SecStabilize { .. } => Opcode::SecStabilize,
            RequestBody::SecRollback { .. } => Opcode::SecRollback,
            RequestBody::SecDelete(_) | RequestBody::CondemnCopy(_) => Opcode::SecDelete,
            RequestBody::TestSyncStabAll => Opcode::TestSyncStabAll,
            RequestBody::SecList(_) => Opcode::SecList,
            RequestBody::ShowConfig { .. } => Opcode::ShowConfig,
            RequestBody::Read(_) => Opcode::Read,
            RequestBody::Write(_) => Opcode::Write,
            RequestBody::Sync => Opcode::Sync,
            RequestBody::Delete(_) => Opcode::Delete,
            RequestBody::Ping => Opcode::Ping,
            RequestBody::SecReadBmp { .. } => Opcode::SecReadBmp,
            RequestBody::Scrub(_) => Opcode::Scrub,
            RequestBody::Describe(_) => Opcode::Describe,
            RequestBody::SecLock(_) => Opcode::SecLock,
        }
    }
}

impl Request {
    /// Bytes of payload that follow this header on the stream.
    pub fn payload_len(&self) -> u64 {
        match self.body {
            RequestBody::SecWrite(rw) | RequestBody::SecWriteStable(rw) => {
                u64::from(rw.attr_len) + u64::from(rw.len)
            }
            RequestBody::SecStabilize { len, .. }
            | RequestBody::SecRollback { len, .. }
            | RequestBody::SecReadBmp { len } => len,
            RequestBody::ShowConfig { json_len } => json_len,
            RequestBody::Write(rw) => u64::from(rw.len),
            _ => 0,
        }
    }

    /// Encodes the header, with the crc set.
    pub fn encode(&self) -> [u8; PACKET_SIZE] {
        let mut buf = [0u8; PACKET_SIZE];
        let mut f = FieldsMut(&mut buf);
        f.put_u64(0, REQUEST_MAGIC);
        f.put_u64(8, self.id);
        f.put_u64(16, self.body.opcode() as u64);
        match self.body {
            RequestBody::SecRead(rw)
            | RequestBody::SecWrite(rw)
            | RequestBody::SecWriteStable(rw) => {
                f.put_u64(24, rw.oid.inode);
                f.put_u64(32, rw.oid.stripe);
                f.put_u64(40, rw.version);
                f.put_u32(48, rw.offset);
                f.put_u32(52, rw.len);
                f.put_u32(56, rw.attr_len);
                f.put_u32(104, rw.pg);
                f.put_u64(112, rw.epoch);
            }
            RequestBody::SecDelete(del) => {
                f.put_u64(24, del.oid.inode);
                f.put_u64(32, del.oid.stripe);
                f.put_u64(40, del.version);
                f.put_u32(104, del.pg);
                f.put_u32(108, u32::from(del.purge));
                f.put_u64(112, del.epoch);
            }
            RequestBody::CondemnCopy(oid) => {
                f.put_u64(24, oid.inode);
                f.put_u64(32, oid.stripe);
                f.put_u32(48, SEC_IGNORE_PG_LOCK);
            }
            RequestBody::SecStabilize { len, pg, epoch }
            | RequestBody::SecRollback { len, pg, epoch } => {
                f.put_u64(24, len);
                f.put_u32(104, pg);
                f.put_u64(112, epoch);
            }
            RequestBody::SecReadBmp { len } | RequestBody::ShowConfig { json_len: len } => {
                f.put_u64(24, len)
            }
            RequestBody::SecList(list) => {
                f.put_u32(24, list.list_pg);
                f.put_u32(28, list.pg_count);
                f.put_u64(32, list.pg_stripe_size);
                f.put_u64(40, list.min_inode);
                f.put_u64(48, list.max_inode);
                f.put_u64(56, list.min_stripe);
                f.put_u64(64, list.max_stripe);
                f.put_u32(72, list.stable_limit);
                f.put_u32(76, list.flags);
                f.put_u64(112, list.epoch);
            }
            RequestBody::Read(rw)
            | RequestBody::Write(rw)
            | RequestBody::Delete(rw)
            | RequestBody::Scrub(rw) => {
                f.put_u64(24, rw.inode);
                f.put_u64(32, rw.offset);
                f.put_u32(40, rw.len);
                f.put_u32(44, rw.flags);
                f.put_u64(48, rw.meta_revision);
                f.put_u64(56, rw.version);
            }
            RequestBody::Describe(d) => {
                f.put_u64(24, d.object_state);
                f.put_u64(32, d.min_inode);
                f.put_u64(40, d.min_offset);
                f.put_u64(48, d.max_inode);
                f.put_u64(56, d.max_offset);
                f.put_u64(64, d.limit);
                f.put_u32(72, d.pool_id);
                f.put_u32(76, d.pg_num);
            }
            RequestBody::SecLock(lock) => {
                f.put_u64(24, lock.flags);
                f.put_u64(32, lock.pool_id);
                f.put_u64(40, lock.pg_num);
                f.put_u64(48, lock.pg_state);
            }
            RequestBody::SecSync
            | RequestBody::TestSyncStabAll
            | RequestBody::Sync
            | RequestBody::Ping => {}
        }
        seal(&mut buf);
        buf
    }

    /// Decodes a request header. Never panics; see [`WireError`] for what each error means.
    pub fn decode(bytes: &[u8]) -> Result<Request, WireError> {
        let buf = as_header(bytes)?;
        let f = Fields(buf);
        let magic = f.u64(0);
        if magic != REQUEST_MAGIC {
            return Err(WireError::BadMagic(magic));
        }
        let sealed = check_seal(buf)?;
        let id = f.u64(8);
        let raw_opcode = f.u64(16);
        let opcode = Opcode::from_u64(raw_opcode).ok_or(WireError::UnknownOpcode {
            id,
            opcode: raw_opcode,
        })?;
        let sec_rw = || SecRw {
            oid: ObjectId {
                inode: f.u64(24),
                stripe: f.u64(32),
            },
            version: f.u64(40),
            offset: f.u32(48),
            len: f.u32(52),
            attr_len: f.u32(56),
            pg: f.u32(104),
            epoch: f.u64(112),
        };
        let rw = || Rw {
            inode: f.u64(24),
            offset: f.u64(32),
            len: f.u32(40),
            flags: f.u32(44),
            meta_revision: f.u64(48),
            version: f.u64(56),
        };
        let obj_ver_len = || -> Result<u64, WireError> {
            let len = check_payload(f.u64(24))?;
            if len % OBJ_VER_SIZE != 0 {
                return Err(WireError::InvalidField {
                    field: "len",
                    value: len,
                });
            }
            Ok(len)
        };
        let body = match opcode {
            Opcode::SecRead => RequestBody::SecRead(sec_rw()),
            Opcode::SecWrite => RequestBody::SecWrite(sec_rw()),
            Opcode::SecWriteStable => RequestBody::SecWriteStable(sec_rw()),
            Opcode::SecSync => RequestBody::SecSync,
            Opcode::SecStabilize => RequestBody::SecStabilize {
                len: obj_ver_len()?,
                pg: f.u32(104),
                epoch: f.u64(112),
            },
            Opcode::SecRollback => RequestBody::SecRollback {
                len: obj_ver_len()?,
                pg: f.u32(104),
                epoch: f.u64(112),
            },
            Opcode::SecReadBmp => RequestBody::SecReadBmp {
                len: obj_ver_len()?,
            },
            Opcode::SecDelete if f.u32(48) & SEC_IGNORE_PG_LOCK != 0 => {
                RequestBody::CondemnCopy(ObjectId {
                    inode: f.u64(24),
                    stripe: f.u64(32),
                })
            }
            Opcode::SecDelete => RequestBody::SecDelete(SecDelete {
                oid: ObjectId {
                    inode: f.u64(24),
                    stripe: f.u64(32),
                },
                version: f.u64(40),
                pg: f.u32(104),
                purge: f.u32(108) & 1 != 0,
                epoch: f.u64(112),
            }),
            Opcode::TestSyncStabAll => RequestBody::TestSyncStabAll,
            Opcode::SecList => RequestBody::SecList(SecList {
                list_pg: f.u32(24),
                pg_count: f.u32(28),
                pg_stripe_size: f.u64(32),
                min_inode: f.u64(40),
                max_inode: f.u64(48),
                min_stripe: f.u64(56),
                max_stripe: f.u64(64),
                stable_limit: f.u32(72),
                flags: f.u32(76),
                epoch: f.u64(112),
            }),
            Opcode::ShowConfig => RequestBody::ShowConfig {
                json_len: check_payload(f.u64(24))?,
            },
            Opcode::Read => RequestBody::Read(rw()),
            Opcode::Write => RequestBody::Write(rw()),
            Opcode::Sync => RequestBody::Sync,
            Opcode::Delete => RequestBody::Delete(rw()),
            Opcode::Ping => RequestBody::Ping,
            Opcode::Scrub => RequestBody::Scrub(rw()),
            Opcode::Describe => RequestBody::Describe(Describe {
                object_state: f.u64(24),
                min_inode: f.u64(32),
                min_offset: f.u64(40),
                max_inode: f.u64(48),
                max_offset: f.u64(56),
                limit: f.u64(64),
                pool_id: f.u32(72),
                pg_num: f.u32(76),
            }),
            Opcode::SecLock => RequestBody::SecLock(SecLock {
                flags: f.u64(24),
                pool_id: f.u64(32),
                pg_num: f.u64(40),
                pg_state: f.u64(48),
            }),
        };
        let request = Request { id, body };
        let payload = request.payload_len();
        if payload > MAX_PAYLOAD_BYTES {
            return Err(WireError::PayloadTooLarge { len: payload });
        }
        if sealed {
            return Ok(request);
        }
        if request.body.requires_seal() {
            return Err(WireError::MissingChecksum {
                id,
                opcode,
                payload_len: payload,
            });
        }
        Ok(Request {
            id,
            body: body.without_fencing(),
        })
    }
}

impl RequestBody {
    /// The same op with our fencing fields (`pg`, `pg_epoch`) zeroed: what an unsealed
    /// header is taken to say, because only a sealed one proves those bytes are ours and
    /// not padding (see [`Opcode::requires_seal`]).
    pub fn without_fencing(self) -> RequestBody {
        match self {
            RequestBody::SecRead(rw) => RequestBody::SecRead(SecRw {
                pg: 0,
                epoch: 0,
                ..rw
            }),
            RequestBody::SecList(list) => RequestBody::SecList(SecList { epoch: 0, ..list }),
            other => other,
        }
    }
}
