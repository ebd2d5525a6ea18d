//! Metadata slots: one sealed 4 KiB sector per data block, describing the object whose
//! flushed ("clean") version lives in that block.
//!
//! | offset | field |
//! |---|---|
//! | 0 | magic `VMET` (u32) |
//! | 4 | flags (u32): bit 0 (1) = in use; bit 1 (2) = tombstone; 0 = empty |
//! | 8 | format id (u64) |
//! | 16 | inode, 24 stripe, 32 version (u64 each) |
//! | 40 | block number (u32), 44 sectors per block `n` (u32) |
//! | 48 | bitmap: `ceil(n/8)` bytes, then `n` crc32c values (u32) of each sector's data |
//! | 4092 | crc32c of bytes 0..4092 |
//!
//! A tombstone slot (flags 3) records that the object was deleted at `version`: its bitmap
//! is all zeros (the object reads as zeros) and its checksums are zero. It keeps its data
//! block allocated, so that the clean index can stay one dense entry per block and a later
//! write replaces it like any overwrite; only a purge empties it. Slots written before
//! tombstones existed carry flags 1 and decode as before.
//!
//! A slot of all zeros, or one sealed with another format id, is empty (left over from
//! before `prepare`). A slot that is neither sealed nor zero is corrupt: on open it must be
//! covered by a journal flush record (a write torn by a crash) or the open fails.

use super::bitmap::bitmap_bytes;
use super::codec::{is_all_zero, seal_sector, sector_is_sealed, Reader, Writer};
use super::layout::SECTOR;
use vitastor_proto::ObjectId;

const MAGIC: u32 = u32::from_le_bytes(*b"VMET");
const FLAG_IN_USE: u32 = 1;
const FLAG_TOMBSTONE: u32 = 2;
const HEADER_BYTES: usize = 48;
/// Bounded by what fits in one 4 KiB slot (bitmap + csums + header).
pub const MAX_SECTORS_PER_BLOCK: u32 = 512;

/// The clean state of one block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaEntry {
    pub oid: ObjectId,
    pub version: u64,
    pub block: u32,
    pub bitmap: Vec<u8>,
    pub csums: Vec<u32>,
    /// The object's newest flushed version is a deletion (bitmap and csums are zeros).
    pub tombstone: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaSlot {
    Empty,
    Used(MetaEntry),
    Corrupt,
}

pub fn encode_entry(entry: &MetaEntry, format_id: u64, out: &mut [u8]) {
    out[..SECTOR as usize].fill(0);
    let mut w = Writer::new(&mut out[..SECTOR as usize]);
    w.u32(MAGIC);
    w.u32(if entry.tombstone {
        FLAG_IN_USE | FLAG_TOMBSTONE
    } else {
        FLAG_IN_USE
    });
    w.u64(format_id);
    w.u64(entry.oid.inode);
    w.u64(entry.oid.stripe);
    w.u64(entry.version);
    w.u32(entry.block);
    w.u32(entry.csums.len() as u32);
    w.bytes(&entry.bitmap);
    for csum in &entry.csums {
        w.u32(*csum);
    }
    seal_sector(&mut out[..SECTOR as usize]);
}

pub fn encode_empty(block: u32, format_id: u64, out: &mut [u8]) {
    out[..SECTOR as usize].fill(0);
    let mut w = Writer::new(&mut out[..SECTOR as usize]);
    w.u32(MAGIC);
    w.u32(0);
    w.u64(format_id);
    w.bytes(&[0u8; 24]);
    w.u32(block);
    seal_sector(&mut out[..SECTOR as usize]);
}

/// Decodes the slot of `block`. `sectors` is the expected sectors per block.
pub fn decode(slot: &[u8], block: u32, sectors: u32, format_id: u64) -> MetaSlot {
    if is_all_zero(slot) {
        return MetaSlot::Empty;
    }
    if !sector_is_sealed(slot) {
        return MetaSlot::Corrupt;
    }
    let mut r = Reader::new(slot);
    let (Some(magic), Some(flags), Some(slot_format)) = (r.u32(), r.u32(), r.u64()) else {
        return MetaSlot::Corrupt;
    };
    if magic != MAGIC || slot_format != format_id {
        return MetaSlot::Empty;
    }
    if flags & FLAG_IN_USE == 0 {
        return MetaSlot::Empty;
    }
    let parsed = (|| {
        let oid = ObjectId {
            inode: r.u64()?,
            stripe: r.u64()?,
        };
        let version = r.u64()?;
        let slot_block = r.u32()?;
        let count = r.u32()?;
        if slot_block != block
            || count != sectors
            || HEADER_BYTES + bitmap_bytes(count) + 4 * count as usize > 4092
        {
            return None;
        }
        let bitmap = r.bytes(bitmap_bytes(count))?.to_vec();
        let csums = (0..count).map(|_| r.u32()).collect::<Option<Vec<u32>>>()?;
        let tombstone = flags & FLAG_TOMBSTONE != 0;
        if tombstone && bitmap.iter().any(|b| *b != 0) {
            return None;
        }
        Some(MetaEntry {
            oid,
            version,
            block,
            bitmap,
            csums,
            tombstone,
        })
    })();
    match parsed {
        Some(entry) => MetaSlot::Used(entry),
        None => MetaSlot::Corrupt,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_round_trip_and_detect_damage() {
        let entry = MetaEntry {
            oid: ObjectId {
                inode: 1 << 48 | 5,
                stripe: 131072,
            },
            version: 9,
            block: 3,
            bitmap: vec![0b101, 0, 0, 0x80],
            csums: (0..32).collect(),
            tombstone: false,
        };
        let mut slot = vec![0u8; 4096];
        encode_entry(&entry, 77, &mut slot);
        assert_eq!(decode(&slot, 3, 32, 77), MetaSlot::Used(entry.clone()));
        assert_eq!(
            decode(&slot, 3, 32, 78),
            MetaSlot::Empty,
            "another format's slot is empty"
        );
        assert_eq!(
            decode(&slot, 4, 32, 77),
            MetaSlot::Corrupt,
            "slot of another block"
        );
        for bit in [0, 100, 8 * 4000, 8 * 4095] {
            let mut damaged = slot.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(decode(&damaged, 3, 32, 77), MetaSlot::Corrupt);
        }
        assert_eq!(decode(&[0u8; 4096], 3, 32, 77), MetaSlot::Empty);
        encode_empty(3, 77, &mut slot);
        assert_eq!(decode(&slot, 3, 32, 77), MetaSlot::Empty);
    }

    #[test]
    fn tombstones_round_trip_and_old_slots_still_decode() {
        let tombstone = MetaEntry {
            oid: ObjectId {
                inode: 1 << 48 | 5,
                stripe: 0,
            },
            version: 12,
            block: 6,
            bitmap: vec![0; 4],
            csums: vec![0; 32],
            tombstone: true,
        };
        let mut slot = vec![0u8; 4096];
        encode_entry(&tombstone, 77, &mut slot);
        assert_eq!(u32::from_le_bytes(slot[4..8].try_into().unwrap()), 3);
        assert_eq!(decode(&slot, 6, 32, 77), MetaSlot::Used(tombstone.clone()));

        // A slot as written before tombstones existed: flags 1, decodes as live data.
        let live = MetaEntry {
            tombstone: false,
            bitmap: vec![1, 0, 0, 0],
            ..tombstone.clone()
        };
        encode_entry(&live, 77, &mut slot);
        assert_eq!(u32::from_le_bytes(slot[4..8].try_into().unwrap()), 1);
        assert_eq!(decode(&slot, 6, 32, 77), MetaSlot::Used(live.clone()));

        // A tombstone claiming data is inconsistent.
        let bad = MetaEntry {
            tombstone: true,
            ..live
        };
        encode_entry(&bad, 77, &mut slot);
        assert_eq!(decode(&slot, 6, 32, 77), MetaSlot::Corrupt);
    }
}
