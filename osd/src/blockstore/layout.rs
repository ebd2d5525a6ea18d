//! The on-disk layout and the superblock.
//!
//! | area | offset | size | content |
//! |---|---|---|---|
//! | superblock | 0 | 4 KiB | [`Superblock`], crc32c in the last 4 bytes |
//! | journal | `journal_offset` (4 KiB) | `journal_size` | two 4 KiB header copies, two halves of the flush record area (`R` sectors each), then the entry ring ([`super::journal_format`]) |
//! | metadata | `meta_offset` | `blocks x 4 KiB` | one sealed 4 KiB slot per data block ([`super::meta_format`]) |
//! | data | `data_offset` (rounded up to `block_size`) | `blocks x block_size` | object data, written in place or redirected to fresh blocks |
//!
//! Superblock fields (little-endian):
//!
//! | offset | field |
//! |---|---|
//! | 0 | magic `VITRSBS1` (u64) |
//! | 8 | format version (u32) |
//! | 16 | format id (u64, random per `prepare`; every record carries it, so data of an earlier format is never mistaken for ours) |
//! | 24 | block size (u32), 28 bitmap granularity (u32) |
//! | 32 | meta offset, 40 meta size, 48 journal offset, 56 journal size, 64 data offset, 72 block count (u64 each) |
//! | 80..4080 | zero |
//! | 4080 | OSD number (u64): the OSD this device belongs to; 0 = not yet claimed (superblocks written before the field existed read as 0). `vitastor-disk prepare --osd_num N` writes it, or the first `vitastor-osd` started on the device writes its `--osd_num`; an OSD with another number is refused |
//! | 4088 | zero (u32) |
//! | 4092 | crc32c of bytes 0..4092 |
//!
//! All offsets and sizes are multiples of 4 KiB so every I/O can use O_DIRECT.
//!
//! The OSD number sits in the superblock's last 512 bytes, beside the crc, and claiming a
//! device changes nothing else ([`Superblock::stamp_osd_num`]): a rewrite torn at 512 bytes
//! (the smallest unit a device may write atomically) leaves the old or the new superblock,
//! never one that fails its checksum.

use super::codec::{seal_sector, sector_is_sealed, Reader, Writer};
use super::error::BlockstoreError;

pub const SECTOR: u64 = 4096;
pub const SUPERBLOCK_MAGIC: u64 = u64::from_le_bytes(*b"VITRSBS1");
pub const FORMAT_VERSION: u32 = 1;
pub const DEFAULT_JOURNAL_SIZE: u64 = 32 << 20;
/// Smallest journal: two header copies plus room for a few entries.
pub const MIN_JOURNAL_SIZE: u64 = 16 * SECTOR;
/// Where the OSD number is in the superblock sector: in the last 512 bytes, with the crc.
const OSD_NUM_OFFSET: usize = SECTOR as usize - 16;
const _: () = assert!(OSD_NUM_OFFSET >= SECTOR as usize - 512 && OSD_NUM_OFFSET >= 80);

/// Where everything is, as recorded in the superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superblock {
    pub format_id: u64,
    pub block_size: u32,
    pub bitmap_granularity: u32,
    pub meta_offset: u64,
    pub meta_size: u64,
    pub journal_offset: u64,
    pub journal_size: u64,
    pub data_offset: u64,
    pub block_count: u64,
    /// The OSD this device belongs to; 0 = not claimed yet.
    pub osd_num: u64,
}

/// What `prepare` is asked for.
#[derive(Debug, Clone, Copy)]
pub struct FormatOptions {
    pub block_size: u32,
    pub bitmap_granularity: u32,
    pub journal_size: u64,
    /// 0 = as many blocks as fit.
    pub meta_size: u64,
    pub format_id: u64,
    /// The OSD the device is for; 0 = the first OSD started on it claims it.
    pub osd_num: u64,
}

impl Default for FormatOptions {
    fn default() -> Self {
        FormatOptions {
            block_size: 128 << 10,
            bitmap_granularity: 4096,
            journal_size: DEFAULT_JOURNAL_SIZE,
            meta_size: 0,
            format_id: 0,
            osd_num: 0,
        }
    }
}

impl Superblock {
    /// Lays out a device of `device_size` bytes.
    pub fn plan(device_size: u64, options: &FormatOptions) -> Result<Superblock, BlockstoreError> {
        let invalid = |message: String| BlockstoreError::InvalidFormat(message);
        vitastor_proto::etcd::pool::check_block_geometry(
            "",
            options.block_size,
            options.bitmap_granularity,
        )
        .map_err(|error| invalid(error.to_string()))?;
        if u64::from(options.bitmap_granularity) < SECTOR {
            return Err(invalid(format!(
                "bitmap_granularity {} is below the 4096-byte direct I/O sector this blockstore needs",
                options.bitmap_granularity
            )));
        }
        let sectors_per_block = options.block_size / options.bitmap_granularity;
        if sectors_per_block > super::meta_format::MAX_SECTORS_PER_BLOCK {
            return Err(invalid(format!(
                "block_size / bitmap_granularity = {sectors_per_block} exceeds {}",
                super::meta_format::MAX_SECTORS_PER_BLOCK
            )));
        }
        let journal_size = options.journal_size / SECTOR * SECTOR;
        if journal_size < MIN_JOURNAL_SIZE {
            return Err(invalid(format!(
                "journal_size {} is below the minimum {MIN_JOURNAL_SIZE}",
                options.journal_size
            )));
        }
        let block_size = u64::from(options.block_size);
        let journal_offset = SECTOR;
        let meta_offset = journal_offset + journal_size;
        let space = (device_size / SECTOR * SECTOR).saturating_sub(meta_offset);
        let mut block_count = space / (block_size + SECTOR);
        if options.meta_size > 0 {
            block_count = block_count.min(options.meta_size / SECTOR);
        }
        if block_count == 0 {
            return Err(invalid(format!(
                "device of {device_size} bytes has no room for a data block after a {journal_size}-byte journal"
            )));
        }
        let meta_size = block_count * SECTOR;
        let data_offset =
            (meta_offset + meta_size).div_ceil(block_size.max(SECTOR)) * block_size.max(SECTOR);
        let block_count = block_count.min(device_size.saturating_sub(data_offset) / block_size);
        if block_count == 0 {
            return Err(invalid(format!(
                "device of {device_size} bytes is too small"
            )));
        }
        Ok(Superblock {
            format_id: options.format_id,
            block_size: options.block_size,
            bitmap_granularity: options.bitmap_granularity,
            meta_offset,
            meta_size: block_count * SECTOR,
            journal_offset,
            journal_size,
            data_offset,
            block_count,
            osd_num: options.osd_num,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut sector = vec![0u8; SECTOR as usize];
        let mut w = Writer::new(&mut sector);
        w.u64(SUPERBLOCK_MAGIC);
        w.u32(FORMAT_VERSION);
        w.u32(0);
        w.u64(self.format_id);
        w.u32(self.block_size);
        w.u32(self.bitmap_granularity);
        w.u64(self.meta_offset);
        w.u64(self.meta_size);
        w.u64(self.journal_offset);
        w.u64(self.journal_size);
        w.u64(self.data_offset);
        w.u64(self.block_count);
        sector[OSD_NUM_OFFSET..OSD_NUM_OFFSET + 8].copy_from_slice(&self.osd_num.to_le_bytes());
        seal_sector(&mut sector);
        sector
    }

    /// Writes `osd_num` into an encoded superblock `sector` and seals it again. Only the
    /// sector's last 512 bytes change, so the rewrite is atomic on any device.
    pub fn stamp_osd_num(sector: &mut [u8], osd_num: u64) {
        assert_eq!(
            sector.len(),
            SECTOR as usize,
            "invariant: a superblock is one sector"
        );
        sector[OSD_NUM_OFFSET..OSD_NUM_OFFSET + 8].copy_from_slice(&osd_num.to_le_bytes());
        seal_sector(sector);
    }

    /// Decodes and checks a superblock sector, with one clear message per failure.
    pub fn decode(sector: &[u8], device_size: u64) -> Result<Superblock, BlockstoreError> {
        let bad = |message: String| BlockstoreError::BadSuperblock(message);
        let mut r = Reader::new(sector);
        let magic = r
            .u64()
            .ok_or_else(|| bad("device is smaller than a superblock".into()))?;
        if magic != SUPERBLOCK_MAGIC {
            return Err(bad(format!(
                "no blockstore superblock (magic {magic:#018x}); format the device with `vitastor-disk prepare`"
            )));
        }
        if !sector_is_sealed(sector) {
            return Err(bad(
                "superblock checksum mismatch (corrupted superblock)".into()
            ));
        }
        let version = r.u32().unwrap_or(0);
        if version != FORMAT_VERSION {
            return Err(bad(format!(
                "unknown format version {version} (this build reads version {FORMAT_VERSION})"
            )));
        }
        let _reserved = r.u32();
        let read = |r: &mut Reader| r.u64().unwrap_or(0);
        let format_id = read(&mut r);
        let block_size = r.u32().unwrap_or(0);
        let bitmap_granularity = r.u32().unwrap_or(0);
        let superblock = Superblock {
            format_id,
            block_size,
            bitmap_granularity,
            meta_offset: read(&mut r),
            meta_size: read(&mut r),
            journal_offset: read(&mut r),
            journal_size: read(&mut r),
            data_offset: read(&mut r),
            block_count: read(&mut r),
            osd_num: Reader::new(sector.get(OSD_NUM_OFFSET..).unwrap_or_default())
                .u64()
                .unwrap_or(0),
        };
        let end = superblock
            .data_offset
            .saturating_add(superblock.block_count.saturating_mul(u64::from(block_size)));
        if end > device_size
            || superblock.block_count == 0
            || superblock.meta_size != superblock.block_count * SECTOR
        {
            return Err(bad(format!(
                "areas do not fit the device ({end} > {device_size} bytes)"
            )));
        }
        Ok(superblock)
    }

    pub fn sectors_per_block(&self) -> u32 {
        self.block_size / self.bitmap_granularity
    }

    pub fn block_offset(&self, block: u32) -> u64 {
        self.data_offset + u64::from(block) * u64::from(self.block_size)
    }

    pub fn meta_slot_offset(&self, block: u32) -> u64 {
        self.meta_offset + u64::from(block) * SECTOR
    }

    /// Flush records one batch may write (`R`): 1/16 of the journal, 1..=512 sectors.
    /// Bigger batches mean fewer fsyncs per flushed object (4 per batch).
    pub fn flush_record_slots(&self) -> u64 {
        (self.journal_size / SECTOR / 16).clamp(1, 512)
    }

    /// Disk offset of half `half` (0 or 1) of the flush record area.
    pub fn flush_record_offset(&self, half: u64) -> u64 {
        self.journal_offset + (2 + half * self.flush_record_slots()) * SECTOR
    }

    /// Disk offset and size of the entry ring.
    pub fn ring_area(&self) -> (u64, u64) {
        let before_ring = (2 + 2 * self.flush_record_slots()) * SECTOR;
        (
            self.journal_offset + before_ring,
            self.journal_size - before_ring,
        )
    }

    pub fn data_size(&self) -> u64 {
        self.block_count * u64::from(self.block_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_and_round_trip() {
        let options = FormatOptions {
            format_id: 42,
            ..FormatOptions::default()
        };
        let superblock = Superblock::plan(1 << 30, &options).unwrap();
        assert!(superblock.data_offset + superblock.data_size() <= 1 << 30);
        assert_eq!(superblock.data_offset % u64::from(superblock.block_size), 0);
        let bytes = superblock.encode();
        assert_eq!(Superblock::decode(&bytes, 1 << 30).unwrap(), superblock);
    }

    #[test]
    fn osd_num_round_trips() {
        let options = FormatOptions {
            osd_num: 7,
            ..FormatOptions::default()
        };
        let superblock = Superblock::plan(1 << 30, &options).unwrap();
        assert_eq!(superblock.osd_num, 7);
        let bytes = superblock.encode();
        assert_eq!(
            &bytes[OSD_NUM_OFFSET..OSD_NUM_OFFSET + 8],
            &7u64.to_le_bytes()
        );
        assert_eq!(Superblock::decode(&bytes, 1 << 30).unwrap(), superblock);
        let unclaimed = Superblock {
            osd_num: 0,
            ..superblock
        };
        assert_eq!(
            Superblock::decode(&unclaimed.encode(), 1 << 30)
                .unwrap()
                .osd_num,
            0
        );
    }

    /// A superblock exactly as written before the OSD number existed (fields up to byte
    /// 80, zeros, crc) still opens, as unclaimed.
    #[test]
    fn superblock_without_osd_num_opens_as_unclaimed() {
        let planned = Superblock::plan(1 << 30, &FormatOptions::default()).unwrap();
        let mut old = vec![0u8; SECTOR as usize];
        let mut w = Writer::new(&mut old);
        w.u64(SUPERBLOCK_MAGIC);
        w.u32(FORMAT_VERSION);
        w.u32(0);
        w.u64(planned.format_id);
        w.u32(planned.block_size);
        w.u32(planned.bitmap_granularity);
        for field in [
            planned.meta_offset,
            planned.meta_size,
            planned.journal_offset,
            planned.journal_size,
            planned.data_offset,
            planned.block_count,
        ] {
            w.u64(field);
        }
        seal_sector(&mut old);
        let decoded = Superblock::decode(&old, 1 << 30).unwrap();
        assert_eq!(decoded.osd_num, 0);
        assert_eq!(decoded, planned);
        assert_eq!(
            decoded.encode(),
            old,
            "encoding an unclaimed superblock is unchanged"
        );
    }

    #[test]
    fn stamping_the_osd_num_changes_only_the_last_512_bytes() {
        let superblock = Superblock::plan(1 << 30, &FormatOptions::default()).unwrap();
        let old = superblock.encode();
        let mut new = old.clone();
        Superblock::stamp_osd_num(&mut new, 3);
        assert_eq!(new[..3584], old[..3584]);
        let decoded = Superblock::decode(&new, 1 << 30).unwrap();
        assert_eq!(decoded.osd_num, 3);
        assert_eq!(decoded.encode(), new);
        // A write torn at any 512-byte boundary leaves the old or the new superblock.
        for cut in (512..4096).step_by(512) {
            let mut torn = new[..cut].to_vec();
            torn.extend_from_slice(&old[cut..]);
            assert_eq!(Superblock::decode(&torn, 1 << 30).unwrap().osd_num, 0);
            let mut torn = old[..cut].to_vec();
            torn.extend_from_slice(&new[cut..]);
            assert_eq!(Superblock::decode(&torn, 1 << 30).unwrap().osd_num, 3);
        }
    }

    #[test]
    fn bad_superblocks_have_clear_messages() {
        let superblock = Superblock::plan(1 << 26, &FormatOptions::default()).unwrap();
        let mut bytes = superblock.encode();
        assert!(Superblock::decode(&vec![0u8; 4096], 1 << 26)
            .unwrap_err()
            .to_string()
            .contains("prepare"));
        bytes[100] ^= 1;
        assert!(Superblock::decode(&bytes, 1 << 26)
            .unwrap_err()
            .to_string()
            .contains("checksum"));
        let mut newer = superblock.encode();
        newer[8] = 9;
        seal_sector(&mut newer);
        assert!(Superblock::decode(&newer, 1 << 26)
            .unwrap_err()
            .to_string()
            .contains("version 9"));
        assert!(Superblock::decode(&superblock.encode(), 1 << 20)
            .unwrap_err()
            .to_string()
            .contains("fit"));
        let tiny = Superblock::plan(1 << 20, &FormatOptions::default());
        assert!(tiny.is_err());
        let odd = FormatOptions {
            block_size: 100_000,
            ..FormatOptions::default()
        };
        assert!(Superblock::plan(1 << 30, &odd)
            .unwrap_err()
            .to_string()
            .contains("block_size"));
    }
}
