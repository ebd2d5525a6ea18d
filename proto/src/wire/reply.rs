//! Reply headers: `{magic, id, opcode, retval i64 @24}` then op-specific fields from 32:
//!
//! | ops | layout from offset 32 | payload (when retval >= 0) |
//! |---|---|---|
//! | READ, WRITE, DELETE, SCRUB | bitmap_len u32 @32, pad @36, version u64 @40 | READ: bitmap_len + retval |
//! | SEC_READ, SEC_WRITE, SEC_WRITE_STABLE | version u64 @32, attr_len u32 @40 | SEC_READ: attr_len + retval |
//! | SEC_DELETE | version u64 @32 | - |
//! | SEC_LIST | stable_count u64 @32, deleted_count u64 @40 (ours: the last entries are tombstones) | retval x 24 bytes `{inode, stripe, version}` |
//! | SHOW_CONFIG, SEC_READ_BMP | - | retval bytes |
//! | DESCRIBE | result_bytes u64 @32 | result_bytes |
//! | others | - | - |

use super::{as_header, check_payload, check_seal, seal, Fields, FieldsMut, Opcode, WireError};
use super::{OBJ_VER_SIZE, PACKET_SIZE, REPLY_MAGIC};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyBody {
    /// READ/WRITE/DELETE/SCRUB.
    Rw {
        bitmap_len: u32,
        version: u64,
    },
    /// SEC_READ/SEC_WRITE/SEC_WRITE_STABLE.
    SecRw {
        version: u64,
        attr_len: u32,
    },
    SecDelete {
        version: u64,
    },
    SecList {
        stable_count: u64,
        deleted_count: u64,
    },
    Describe {
        result_bytes: u64,
    },
    /// Ops whose reply has no fields beyond retval.
    Empty,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub id: u64,
    pub opcode: Opcode,
    pub retval: i64,
    pub body: ReplyBody,
}

impl Reply {
    /// An error (or field-less) reply to request `id`.
    pub fn error(id: u64, opcode: Opcode, errno: i32) -> Reply {
        Reply {
            id,
            opcode,
            retval: -i64::from(errno.abs()),
            body: Reply::empty_body(opcode),
        }
    }

    /// The field-less body of an op's reply (zeros for ops that have fields).
    pub fn empty_body(opcode: Opcode) -> ReplyBody {
        match opcode {
            Opcode::Read | Opcode::Write | Opcode::Delete | Opcode::Scrub => ReplyBody::Rw {
                bitmap_len: 0,
                version: 0,
            },
            Opcode::SecRead | Opcode::SecWrite | Opcode::SecWriteStable => ReplyBody::SecRw {
                version: 0,
                attr_len: 0,
            },
            Opcode::SecDelete => ReplyBody::SecDelete { version: 0 },
            Opcode::SecList => ReplyBody::SecList {
                stable_count: 0,
                deleted_count: 0,
            },
            Opcode::Describe => ReplyBody::Describe { result_bytes: 0 },
            _ => ReplyBody::Empty,
        }
    }

    /// Bytes of payload that follow this header on the stream.
    pub fn payload_len(&self) -> u64 {
        if self.retval < 0 {
            return 0;
        }
        let retval = self.retval as u64;
        match (self.opcode, self.body) {
            (Opcode::Read, ReplyBody::Rw { bitmap_len, .. }) => {
                u64::from(bitmap_len).saturating_add(retval)
            }
            (Opcode::SecRead, ReplyBody::SecRw { attr_len, .. }) => {
                u64::from(attr_len).saturating_add(retval)
            }
            (Opcode::SecList, _) => retval.saturating_mul(OBJ_VER_SIZE),
            (Opcode::ShowConfig | Opcode::SecReadBmp, _) => retval,
            (Opcode::Describe, ReplyBody::Describe { result_bytes }) => result_bytes,
            _ => 0,
        }
    }

    pub fn encode(&self) -> [u8; PACKET_SIZE] {
        let mut buf = [0u8; PACKET_SIZE];
        let mut f = FieldsMut(&mut buf);
        f.put_u64(0, REPLY_MAGIC);
        f.put_u64(8, self.id);
        f.put_u64(16, self.opcode as u64);
        f.put_u64(24, self.retval as u64);
        match self.body {
            ReplyBody::Rw {
                bitmap_len,
                version,
            } => {
                f.put_u32(32, bitmap_len);
                f.put_u64(40, version);
            }
            ReplyBody::SecRw { version, attr_len } => {
                f.put_u64(32, version);
                f.put_u32(40, attr_len);
            }
            ReplyBody::SecDelete { version } => f.put_u64(32, version),
            ReplyBody::SecList {
                stable_count,
                deleted_count,
            } => {
                f.put_u64(32, stable_count);
                f.put_u64(40, deleted_count);
            }
            ReplyBody::Describe { result_bytes } => f.put_u64(32, result_bytes),
            ReplyBody::Empty => {}
        }
        seal(&mut buf);
        buf
    }

    /// The header of an error reply to a request whose opcode is unknown (so only its id
    /// and opcode number are known). It has no payload.
    pub fn unknown_opcode(id: u64, opcode: u64, errno: i32) -> [u8; PACKET_SIZE] {
        let mut buf = [0u8; PACKET_SIZE];
        let mut f = FieldsMut(&mut buf);
        f.put_u64(0, REPLY_MAGIC);
        f.put_u64(8, id);
        f.put_u64(16, opcode);
        f.put_u64(24, (-i64::from(errno.abs())) as u64);
        seal(&mut buf);
        buf
    }

    /// Decodes a reply header. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Reply, WireError> {
        let buf = as_header(bytes)?;
        let f = Fields(buf);
        let magic = f.u64(0);
        if magic != REPLY_MAGIC {
            return Err(WireError::BadMagic(magic));
        }
        let sealed = check_seal(buf)?;
        let id = f.u64(8);
        let raw_opcode = f.u64(16);
        let opcode = Opcode::from_u64(raw_opcode).ok_or(WireError::UnknownOpcode {
            id,
            opcode: raw_opcode,
        })?;
        if !sealed && opcode.requires_seal() {
            return Err(WireError::MissingChecksum {
                id,
                opcode,
                payload_len: 0,
            });
        }
        let retval = f.u64(24) as i64;
        let body = match opcode {
            Opcode::Read | Opcode::Write | Opcode::Delete | Opcode::Scrub => ReplyBody::Rw {
                bitmap_len: f.u32(32),
                version: f.u64(40),
            },
            Opcode::SecRead | Opcode::SecWrite | Opcode::SecWriteStable => ReplyBody::SecRw {
                version: f.u64(32),
                attr_len: f.u32(40),
            },
            Opcode::SecDelete => ReplyBody::SecDelete { version: f.u64(32) },
            Opcode::SecList => ReplyBody::SecList {
                stable_count: f.u64(32),
                deleted_count: f.u64(40),
            },
            Opcode::Describe => ReplyBody::Describe {
                result_bytes: f.u64(32),
            },
            _ => ReplyBody::Empty,
        };
        let reply = Reply {
            id,
            opcode,
            retval,
            body,
        };
        check_payload(reply.payload_len())?;
        Ok(reply)
    }
}
