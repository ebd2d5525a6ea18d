//! Formatting a device: plan the layout, empty the metadata area (a hole punch or WRITE
//! ZEROES where the device can, so a large device formats quickly), write the journal
//! header and, last, the superblock (so a half-formatted device is never mistaken for a
//! formatted one).

use super::aligned::AlignedBuf;
use super::disk::{Disk, IoKind};
use super::error::BlockstoreError;
use super::journal_format::JournalHeader;
use super::layout::{FormatOptions, Superblock, SECTOR};
use super::store::io_sync;

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
