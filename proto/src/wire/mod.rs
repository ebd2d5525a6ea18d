//! The wire protocol: every request and reply is a fixed 128-byte little-endian header,
//! then a payload whose length the header determines.
//!
//! Common request header (all ops):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `0x2bd7b10325434553` (reply: `0xbaa699b87b434553`) |
//! | 8 | 8 | id (replies carry the request's id; they may come out of order) |
//! | 16 | 8 | opcode |
//! | 24 | 8 | reply only: retval (negative errno on error) |
//! | 124 | 4 | crc32c of bytes 0..124 (ours; 0 = absent, refused on the ops that change a PG's data, see [`Opcode::requires_seal`]) |
//!
//! The op-specific fields follow at offset 24 (requests) or 32 (replies); their layouts
//! are in [`request`] and [`reply`]. The header crc lives in padding that Vitastor leaves
//! zeroed, so Vitastor clients and tools (which send 0 there) still interoperate on client
//! ops and on the read-only secondary ops their tools use.
//! [`framing`] splits a byte stream into messages.

pub mod describe;
pub mod framing;
pub mod opcode;
pub mod reply;
pub mod request;
pub mod show_config;

pub use framing::{encode_reply, encode_request, ReplyDecoder, RequestDecoder, RequestEvent};
pub use opcode::Opcode;
pub use reply::{Reply, ReplyBody};
pub use request::{Request, RequestBody};

pub const REQUEST_MAGIC: u64 = 0x2bd7_b103_2543_4553;
pub const REPLY_MAGIC: u64 = 0xbaa6_99b8_7b43_4553;
/// Size of every request and reply header.
pub const PACKET_SIZE: usize = 128;
/// Largest payload of any request or reply (Vitastor's `OSD_RW_MAX`).
pub const MAX_PAYLOAD_BYTES: u64 = 64 << 20;
pub const PROTOCOL_VERSION: u32 = 1;
/// Size of one `{inode, stripe, version}` entry in stabilize/rollback/list payloads.
pub const OBJ_VER_SIZE: u64 = 24;
const CRC_OFFSET: usize = 124;

/// Why a header could not be decoded. Everything but `UnknownOpcode` means the stream can
/// no longer be trusted and the connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("header is {0} bytes, expected {PACKET_SIZE}")]
    Truncated(usize),
    #[error("bad magic {0:#018x}")]
    BadMagic(u64),
    #[error("header checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadChecksum { stored: u32, computed: u32 },
    /// An intact but unsealed header of an op that requires the seal
    /// ([`Opcode::requires_seal`]): answer -EPERM to `id`, skip `payload_len` bytes.
    #[error("op {opcode:?} requires a header checksum")]
    MissingChecksum {
        id: u64,
        opcode: Opcode,
        payload_len: u64,
    },
    /// The header is intact but the opcode is not one we know: reply -EINVAL to `id`.
    #[error("unknown opcode {opcode} in request {id}")]
    UnknownOpcode { id: u64, opcode: u64 },
    #[error("payload of {len} bytes exceeds the limit of {MAX_PAYLOAD_BYTES}")]
    PayloadTooLarge { len: u64 },
    #[error("invalid field {field} = {value}")]
    InvalidField { field: &'static str, value: u64 },
}

/// Little-endian field access on a header buffer; all offsets are compile-time constants
/// below 128 so indexing cannot fail for a `[u8; PACKET_SIZE]`.
pub(crate) struct Fields<'a>(pub &'a [u8; PACKET_SIZE]);

impl Fields<'_> {
    pub fn u64(&self, offset: usize) -> u64 {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&self.0[offset..offset + 8]);
        u64::from_le_bytes(bytes)
    }
    pub fn u32(&self, offset: usize) -> u32 {
        let mut bytes = [0u8; 4];
        bytes.copy_from_slice(&self.0[offset..offset + 4]);
        u32::from_le_bytes(bytes)
    }
}

pub(crate) struct FieldsMut<'a>(pub &'a mut [u8; PACKET_SIZE]);

impl FieldsMut<'_> {
    pub fn put_u64(&mut self, offset: usize, value: u64) {
        self.0[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
    }
    pub fn put_u32(&mut self, offset: usize, value: u32) {
        self.0[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
    }
}

/// Writes the header crc (bytes 124..128) over bytes 0..124.
pub(crate) fn seal(buf: &mut [u8; PACKET_SIZE]) {
    let crc = crc32c::crc32c(&buf[..CRC_OFFSET]);
    buf[CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
}

/// Checks the header crc. `Ok(false)` if absent (zero), `Ok(true)` if present and correct.
pub(crate) fn check_seal(buf: &[u8; PACKET_SIZE]) -> Result<bool, WireError> {
    let stored = Fields(buf).u32(CRC_OFFSET);
    if stored == 0 {
        return Ok(false);
    }
    let computed = crc32c::crc32c(&buf[..CRC_OFFSET]);
    if stored != computed {
        return Err(WireError::BadChecksum { stored, computed });
    }
    Ok(true)
}

pub(crate) fn as_header(bytes: &[u8]) -> Result<&[u8; PACKET_SIZE], WireError> {
    bytes
        .get(..PACKET_SIZE)
        .and_then(|b| b.try_into().ok())
        .ok_or(WireError::Truncated(bytes.len()))
}

pub(crate) fn check_payload(len: u64) -> Result<u64, WireError> {
    if len > MAX_PAYLOAD_BYTES {
        return Err(WireError::PayloadTooLarge { len });
    }
    Ok(len)
}

/// Encodes `{inode, stripe, version}` entries (stabilize/rollback/list payloads).
pub fn encode_obj_versions(items: &[crate::ObjectVersion]) -> Vec<u8> {
    let mut out = Vec::with_capacity(items.len() * OBJ_VER_SIZE as usize);
    for item in items {
        out.extend_from_slice(&item.oid.inode.to_le_bytes());
        out.extend_from_slice(&item.oid.stripe.to_le_bytes());
        out.extend_from_slice(&item.version.to_le_bytes());
    }
    out
}

/// Decodes a `{inode, stripe, version}` array; the length must be a multiple of 24.
pub fn decode_obj_versions(payload: &[u8]) -> Result<Vec<crate::ObjectVersion>, WireError> {
    if !(payload.len() as u64).is_multiple_of(OBJ_VER_SIZE) {
        return Err(WireError::InvalidField {
            field: "obj_ver payload length",
            value: payload.len() as u64,
        });
    }
    Ok(payload
        .chunks_exact(OBJ_VER_SIZE as usize)
        .map(|chunk| {
            let word = |i: usize| {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(&chunk[i * 8..i * 8 + 8]);
                u64::from_le_bytes(bytes)
            };
            crate::ObjectVersion {
                oid: crate::ObjectId {
                    inode: word(0),
                    stripe: word(1),
                },
                version: word(2),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests;
