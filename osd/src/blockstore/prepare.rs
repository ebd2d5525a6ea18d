//! Formatting a device: plan the layout, empty the metadata area (a hole punch or WRITE
//! ZEROES where the device can, so a large device formats quickly), write the journal
//! header and, last, the superblock (so a half-formatted device is never mistaken for a
//! formatted one). Also claiming a formatted device for an OSD ([`claim_osd_num`]).

use super::aligned::AlignedBuf;
use super::disk::{Disk, IoKind};
use super::error::BlockstoreError;
use super::journal_format::JournalHeader;
use super::layout::{FormatOptions, Superblock, SECTOR};
use super::store::{io_sync, read_superblock};

const ZERO_CHUNK: u64 = 1 << 20;

/// Formats `disk`; returns the superblock written.
pub fn prepare<D: Disk>(
    disk: &mut D,
    options: &FormatOptions,
) -> Result<Superblock, BlockstoreError> {
    let mut options = *options;
    while options.format_id == 0 {
        options.format_id = rand::random();
    }
    let superblock = Superblock::plan(disk.size(), &options)?;
    // Invalidate any old superblock first, so an interrupted prepare leaves no valid one.
    let mut zero = AlignedBuf::new(ZERO_CHUNK as usize);
    io_sync(disk, IoKind::Write, 0, &mut zero[..SECTOR as usize])?;
    let mut offset = superblock.meta_offset;
    let meta_end = superblock.meta_offset + superblock.meta_size;
    if disk.zero_range(offset, superblock.meta_size)? {
        offset = meta_end;
    }
    while offset < meta_end {
        let len = ZERO_CHUNK.min(meta_end - offset) as usize;
        io_sync(disk, IoKind::Write, offset, &mut zero[..len])?;
        offset += len as u64;
    }
    let mut headers = AlignedBuf::new(2 * SECTOR as usize);
    let header = JournalHeader {
        generation: 1,
        start_pos: 0,
        start_seq: 1,
        clean_end_seq: 0,
        session: 1,
        session_start_seq: 1,
    };
    header.encode(superblock.format_id, &mut headers[SECTOR as usize..]);
    io_sync(disk, IoKind::Write, superblock.journal_offset, &mut headers)?;
    io_sync(disk, IoKind::Fsync, 0, &mut [])?;
    let mut sector = AlignedBuf::from_slice(&superblock.encode());
    io_sync(disk, IoKind::Write, 0, &mut sector)?;
    io_sync(disk, IoKind::Fsync, 0, &mut [])?;
    Ok(superblock)
}

/// Why a device cannot be claimed for an OSD.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("belongs to OSD {on_disk}, not {requested} (start it with --osd_num {on_disk}, or format it again with `vitastor-disk prepare`)")]
    OtherOsd { on_disk: u64, requested: u64 },
    #[error(transparent)]
    Store(#[from] BlockstoreError),
}

/// Checks that the device belongs to OSD `osd_num`. An unclaimed device (number 0: never
/// claimed, or formatted before the field existed) is claimed now: its superblock sector is
/// rewritten with the number and fsynced before this returns, so an OSD registers in etcd
/// only once the device durably says it is that OSD's.
pub fn claim_osd_num<D: Disk>(disk: &mut D, osd_num: u64) -> Result<Superblock, ClaimError> {
    assert!(osd_num > 0, "invariant: OSD numbers start at 1");
    let superblock = read_superblock(disk)?;
    if superblock.osd_num == osd_num {
        return Ok(superblock);
    }
    if superblock.osd_num != 0 {
        return Err(ClaimError::OtherOsd {
            on_disk: superblock.osd_num,
            requested: osd_num,
        });
    }
    // Patch the sector as read (not a re-encoding), so nothing but the number and the crc
    // changes; both are in its last 512 bytes (see the layout table).
    let mut sector = AlignedBuf::new(SECTOR as usize);
    io_sync(disk, IoKind::Read, 0, &mut sector)?;
    Superblock::stamp_osd_num(&mut sector, osd_num);
    let claimed = Superblock::decode(&sector, disk.size())?;
    debug_assert_eq!(
        claimed,
        Superblock {
            osd_num,
            ..superblock
        }
    );
    io_sync(disk, IoKind::Write, 0, &mut sector)?;
    io_sync(disk, IoKind::Fsync, 0, &mut [])?;
    tracing::info!(
        osd_num,
        "device claimed: OSD number written to the superblock"
    );
    Ok(claimed)
}
