//! The journal: two header copies, then a ring of entries. Every entry starts with one
//! sealed 4 KiB header sector; a small write's data sectors follow it in the same I/O.
//!
//! Journal header (both copies; the valid one with the higher generation wins):
//!
//! | offset | field |
//! |---|---|
//! | 0 | magic `VJHD` (u32) |
//! | 8 | format id (u64) |
//! | 16 | generation (u64) |
//! | 24 | start position in the ring (u64, bytes) |
//! | 32 | start sequence number (u64) |
//! | 40 | clean-shutdown end sequence (u64; 0 = not a clean shutdown) |
//! | 48 | session (u64), incremented and made durable at every open |
//! | 56 | session start sequence (u64): the next sequence number when this session began; entries from it on must carry at least this session (0 = no such rule, headers written before it existed) |
//! | 4092 | crc32c |
//!
//! Entry header sector:
//!
//! | offset | field |
//! |---|---|
//! | 0 | magic `VJEN` (u32), 4 kind (u16), 6 flags (u16: 1 = stable, 2 = deleted, 4 = purged) |
//! | 8 | format id (u64), 16 sequence number (u64; consecutive) |
//! | 24 | inode, 32 stripe, 40 version (u64 each) |
//! | 48 | offset, 52 length in the object (u32 bytes) |
//! | 56 | block (u32), 60 data sectors following this header (u32) |
//! | 64 | old block freed by a flush (u32, `u32::MAX` = none), 68 crc count `c` (u32) |
//! | 72 | session (u64): bumped at every open; along the chain it never decreases, so an
//! |    | entry left over from before a crash can never be taken for a continuation |
//! | 80 | bitmap (`ceil(n/8)` bytes, flush records only), then `c` crc32c values (u32) |
//! | 4060 | previous entry's inode, 4068 stripe, 4076 version (u64 each; all 0 = unknown): names
//! |      | what was lost when this entry's predecessor is unreadable |
//! | 4084 | durable below (u64): every entry with a lower sequence number had been fsynced when
//! |      | this one was appended, so damage there is corruption, not a torn write (0 = no claim) |
//! | 4092 | crc32c of bytes 0..4092 |
//!
//! The tail fields (4060..4092) are zeros in entries written before they existed, which
//! reads as "unknown" and "no claim": such journals replay exactly as before.
//!
//! Kinds (the u16 at offset 4):
//!
//! | kind | name | meaning |
//! |---|---|---|
//! | 1 | small write | data in the journal after the header |
//! | 2 | big write | data redirected to `block` |
//! | 3 | stabilize | every version <= `version` is stable |
//! | 4 | rollback | unstable versions > `version` are dropped |
//! | 5 | delete | a tombstone version (stable); flushed, it becomes a tombstone slot |
//! | 6 | flush | the full new metadata of `block`, written before the flusher touches the data and metadata areas so a torn in-place write can be redone (see below) |
//! | 7 | purge | the object, whose newest version was the tombstone `version`, is forgotten (appended only after that check; replay forgets unconditionally, since the tombstone may be trimmed already); `block` is the clean block whose metadata slot the flusher empties (`u32::MAX` = none) |
//!
//! Flush records (kind 6, kept outside the ring) use the flags this way: deleted without a
//! block = the object was removed (written only by older versions); deleted with a block =
//! `block` holds a tombstone (empty bitmap, zero checksums); purged = the record only
//! empties `old_block`, the clean block of a purged tombstone.

use super::bitmap::bitmap_bytes;
use super::codec::{is_all_zero, seal_sector, sector_is_sealed, Reader, Writer};
use super::layout::SECTOR;
use vitastor_proto::ObjectId;

const HEADER_MAGIC: u32 = u32::from_le_bytes(*b"VJHD");
const ENTRY_MAGIC: u32 = u32::from_le_bytes(*b"VJEN");
const ENTRY_FIXED_BYTES: usize = 80;
/// Where the tail fields (previous entry, durable below) start; the bitmap and the crc
/// values must end before it.
const ENTRY_TAIL_OFFSET: usize = 4060;
const _: () = assert!(ENTRY_TAIL_OFFSET + 32 == SECTOR as usize - 4);
pub const NO_BLOCK: u32 = u32::MAX;
pub const FLAG_STABLE: u16 = 1;
pub const FLAG_DELETED: u16 = 2;
/// Flush records only: the record empties `old_block` after a purge, nothing else.
pub const FLAG_PURGED: u16 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalHeader {
    pub generation: u64,
    pub start_pos: u64,
    pub start_seq: u64,
    pub clean_end_seq: u64,
    pub session: u64,
    /// Entries with a sequence number >= this were appended in `session` or later: an
    /// entry of an older session there is a leftover of a crash (torn when replay passed
    /// it, then completed by a later torn write of the same sector) and ends the journal.
    pub session_start_seq: u64,
}

impl JournalHeader {
    pub fn encode(&self, format_id: u64, out: &mut [u8]) {
        out[..SECTOR as usize].fill(0);
        let mut w = Writer::new(&mut out[..SECTOR as usize]);
        w.u32(HEADER_MAGIC);
        w.u32(0);
        w.u64(format_id);
        w.u64(self.generation);
        w.u64(self.start_pos);
        w.u64(self.start_seq);
        w.u64(self.clean_end_seq);
        w.u64(self.session);
        w.u64(self.session_start_seq);
        seal_sector(&mut out[..SECTOR as usize]);
    }

    /// Decodes one header copy.
    pub fn decode(sector: &[u8], format_id: u64) -> HeaderCopy {
        if is_all_zero(sector) {
            return HeaderCopy::Empty;
        }
        if !sector_is_sealed(sector) {
            return HeaderCopy::Damaged;
        }
        let mut r = Reader::new(sector);
        let fields = (|| {
            let magic = r.u32()?;
            let _reserved = r.u32()?;
            let header_format = r.u64()?;
            if magic != HEADER_MAGIC || header_format != format_id {
                return Some(None);
            }
            Some(Some(JournalHeader {
                generation: r.u64()?,
                start_pos: r.u64()?,
                start_seq: r.u64()?,
                clean_end_seq: r.u64()?,
                session: r.u64()?,
                session_start_seq: r.u64()?,
            }))
        })();
        match fields {
            Some(Some(header)) => HeaderCopy::Valid(header),
            Some(None) => HeaderCopy::Empty,
            None => HeaderCopy::Damaged,
        }
    }
}

/// One of the two journal header copies as found on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderCopy {
    /// Zeros, or a header of another format.
    Empty,
    Valid(JournalHeader),
    /// Not sealed: torn by a crash while being written, or corrupted.
    Damaged,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum EntryKind {
    SmallWrite = 1,
    BigWrite = 2,
    Stabilize = 3,
    Rollback = 4,
    Delete = 5,
    Flush = 6,
    Purge = 7,
}

impl EntryKind {
    fn from_u16(value: u16) -> Option<EntryKind> {
        [
            EntryKind::SmallWrite,
            EntryKind::BigWrite,
            EntryKind::Stabilize,
            EntryKind::Rollback,
            EntryKind::Delete,
            EntryKind::Flush,
            EntryKind::Purge,
        ]
        .into_iter()
        .find(|kind| *kind as u16 == value)
    }
}

/// One journal entry's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryHeader {
    pub kind: EntryKind,
    pub flags: u16,
    pub seq: u64,
    pub oid: ObjectId,
    pub version: u64,
    pub offset: u32,
    pub len: u32,
    pub block: u32,
    pub data_sectors: u32,
    pub old_block: u32,
    pub session: u64,
    /// Flush records: the block's full bitmap. Empty for other kinds.
    pub bitmap: Vec<u8>,
    /// Small/big writes: one per written sector; flush records: one per sector of the block.
    pub csums: Vec<u32>,
    /// The entry appended just before this one: (object, version); `None` = unknown.
    pub prev: Option<(ObjectId, u64)>,
    /// Every entry with a lower sequence number was durable when this one was appended
    /// (0 = no claim). Replay uses it to tell corruption from a torn write.
    pub durable_below: u64,
}

impl EntryHeader {
    /// Largest crc count a header sector can carry with a bitmap of `sectors` bits.
    pub fn max_csums(sectors: u32) -> usize {
        (ENTRY_TAIL_OFFSET - ENTRY_FIXED_BYTES - bitmap_bytes(sectors)) / 4
    }

    /// Total bytes of the entry in the ring.
    pub fn entry_bytes(&self) -> u64 {
        SECTOR * (1 + u64::from(self.data_sectors))
    }

    pub fn is_stable(&self) -> bool {
        self.flags & FLAG_STABLE != 0
    }

    pub fn encode(&self, format_id: u64, out: &mut [u8]) {
        out[..SECTOR as usize].fill(0);
        let mut w = Writer::new(&mut out[..SECTOR as usize]);
        w.u32(ENTRY_MAGIC);
        w.u16(self.kind as u16);
        w.u16(self.flags);
        w.u64(format_id);
        w.u64(self.seq);
        w.u64(self.oid.inode);
        w.u64(self.oid.stripe);
        w.u64(self.version);
        w.u32(self.offset);
        w.u32(self.len);
        w.u32(self.block);
        w.u32(self.data_sectors);
        w.u32(self.old_block);
        w.u32(self.csums.len() as u32);
        w.u64(self.session);
        debug_assert_eq!(w.position(), ENTRY_FIXED_BYTES);
        w.bytes(&self.bitmap);
        for csum in &self.csums {
            w.u32(*csum);
        }
        assert!(
            w.position() <= ENTRY_TAIL_OFFSET,
            "invariant: bitmap and crc values end before the tail fields"
        );
        let mut w = Writer::new(&mut out[ENTRY_TAIL_OFFSET..SECTOR as usize]);
        let (prev_oid, prev_version) = self.prev.unwrap_or_default();
        w.u64(prev_oid.inode);
        w.u64(prev_oid.stripe);
        w.u64(prev_version);
        w.u64(self.durable_below);
        seal_sector(&mut out[..SECTOR as usize]);
    }

    /// Decodes a header sector: `None` unless it is a sealed entry of this format whose
    /// fields are self-consistent. `bitmap_len` is the bitmap size of flush records.
    pub fn decode(sector: &[u8], format_id: u64, bitmap_len: usize) -> Option<EntryHeader> {
        if sector.len() < SECTOR as usize || !sector_is_sealed(&sector[..SECTOR as usize]) {
            return None;
        }
        let mut r = Reader::new(sector);
        if r.u32()? != ENTRY_MAGIC {
            return None;
        }
        let kind = EntryKind::from_u16(r.u16()?)?;
        let flags = r.u16()?;
        if r.u64()? != format_id {
            return None;
        }
        let seq = r.u64()?;
        let oid = ObjectId {
            inode: r.u64()?,
            stripe: r.u64()?,
        };
        let version = r.u64()?;
        let offset = r.u32()?;
        let len = r.u32()?;
        let block = r.u32()?;
        let data_sectors = r.u32()?;
        let old_block = r.u32()?;
        let csum_count = r.u32()? as usize;
        let session = r.u64()?;
        let bitmap = if kind == EntryKind::Flush {
            r.bytes(bitmap_len)?.to_vec()
        } else {
            Vec::new()
        };
        if ENTRY_FIXED_BYTES + bitmap.len() + csum_count * 4 > ENTRY_TAIL_OFFSET {
            return None;
        }
        let csums = (0..csum_count)
            .map(|_| r.u32())
            .collect::<Option<Vec<u32>>>()?;
        let mut tail = Reader::new(&sector[ENTRY_TAIL_OFFSET..]);
        let prev_oid = ObjectId {
            inode: tail.u64()?,
            stripe: tail.u64()?,
        };
        let prev_version = tail.u64()?;
        let durable_below = tail.u64()?;
        let prev = (prev_version != 0).then_some((prev_oid, prev_version));
        Some(EntryHeader {
            kind,
            flags,
            seq,
            oid,
            version,
            offset,
            len,
            block,
            data_sectors,
            old_block,
            session,
            bitmap,
            csums,
            prev,
            durable_below,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_detect_damage() {
        let entry = EntryHeader {
            kind: EntryKind::Flush,
            flags: FLAG_STABLE,
            seq: 12,
            oid: ObjectId {
                inode: 3,
                stripe: 0,
            },
            version: 5,
            offset: 0,
            len: 0,
            block: 7,
            data_sectors: 0,
            old_block: NO_BLOCK,
            session: 4,
            bitmap: vec![1, 2, 3, 4],
            csums: (100..132).collect(),
            prev: Some((
                ObjectId {
                    inode: 3,
                    stripe: 1 << 17,
                },
                9,
            )),
            durable_below: 11,
        };
        let mut sector = vec![0u8; 4096];
        entry.encode(9, &mut sector);
        assert_eq!(EntryHeader::decode(&sector, 9, 4), Some(entry.clone()));
        assert_eq!(EntryHeader::decode(&sector, 8, 4), None);
        sector[50] ^= 4;
        assert_eq!(EntryHeader::decode(&sector, 9, 4), None);
        assert_eq!(EntryHeader::decode(&sector[..100], 9, 4), None);

        let header = JournalHeader {
            generation: 3,
            start_pos: 8192,
            start_seq: 17,
            clean_end_seq: 0,
            session: 2,
            session_start_seq: 15,
        };
        header.encode(9, &mut sector);
        assert_eq!(JournalHeader::decode(&sector, 9), HeaderCopy::Valid(header));
        sector[30] ^= 1;
        assert_eq!(JournalHeader::decode(&sector, 9), HeaderCopy::Damaged);
        assert_eq!(JournalHeader::decode(&[0u8; 4096], 9), HeaderCopy::Empty);
    }
}
