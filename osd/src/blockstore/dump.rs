//! What is on a device, as JSON, without changing anything (`vitastor-disk dump-journal`
//! and `dump-meta`).

use super::aligned::AlignedBuf;
use super::disk::{Disk, IoKind};
use super::error::BlockstoreError;
use super::journal_format::{EntryKind, FLAG_DELETED, FLAG_PURGED, NO_BLOCK};
use super::layout::{Superblock, SECTOR};
use super::meta_format::{self, MetaSlot};
use super::store::{io_sync, read_superblock, Blockstore, BlockstoreConfig};
use serde_json::{json, Value};

pub fn superblock_json(sb: &Superblock) -> Value {
    json!({
        "format_id": format!("{:016x}", sb.format_id),
        "block_size": sb.block_size,
        "bitmap_granularity": sb.bitmap_granularity,
        "meta_offset": sb.meta_offset,
        "meta_size": sb.meta_size,
        "journal_offset": sb.journal_offset,
        "journal_size": sb.journal_size,
        "data_offset": sb.data_offset,
        "block_count": sb.block_count,
        "osd_num": sb.osd_num,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every used metadata slot (tombstones with `"tombstone": true`), and the damaged ones.
pub fn dump_meta<D: Disk>(mut disk: D) -> Result<Value, BlockstoreError> {
    let sb = read_superblock(&mut disk)?;
    let mut entries = Vec::new();
    let mut damaged = Vec::new();
    let mut slot = AlignedBuf::new(SECTOR as usize);
    for block in 0..sb.block_count as u32 {
        io_sync(
            &mut disk,
            IoKind::Read,
            sb.meta_slot_offset(block),
            &mut slot,
        )?;
        match meta_format::decode(&slot, block, sb.sectors_per_block(), sb.format_id) {
            MetaSlot::Empty => {}
            MetaSlot::Corrupt => damaged.push(block),
            MetaSlot::Used(entry) => entries.push(json!({
                "block": block,
                "inode": format!("{:#x}", entry.oid.inode),
                "stripe": format!("{:#x}", entry.oid.stripe),
                "version": entry.version,
                "tombstone": entry.tombstone,
                "bitmap": hex(&entry.bitmap),
                "csums": entry.csums.iter().map(|c| format!("{c:08x}")).collect::<Vec<_>>(),
            })),
        }
    }
    Ok(json!({ "superblock": superblock_json(&sb), "entries": entries, "damaged_slots": damaged }))
}

/// The journal header and every entry replay would apply.
pub fn dump_journal<D: Disk>(mut disk: D) -> Result<Value, BlockstoreError> {
    let sb = read_superblock(&mut disk)?;
    let mut store = Blockstore::assemble(disk, sb, BlockstoreConfig::default());
    let header = store.load_journal_header()?;
    store.read_ring()?;
    let walk = store.walk_journal(&header)?;
    let (entries, stop_pos) = (&walk.entries, walk.stop_pos);
    let gaps: Vec<Value> = walk
        .gaps
        .iter()
        .map(|g| {
            json!({
                "seq": g.seq,
                "lost_entries": g.lost,
                "pos": g.pos,
                "object": g.object.map(|(oid, version)| json!({
                    "inode": format!("{:#x}", oid.inode),
                    "stripe": format!("{:#x}", oid.stripe),
                    "version": version,
                })),
            })
        })
        .collect();
    let records: Vec<Value> = store
        .load_flush_records()?
        .iter()
        .map(|r| {
            json!({
                "batch": r.seq,
                "index": r.offset,
                "inode": format!("{:#x}", r.oid.inode),
                "stripe": format!("{:#x}", r.oid.stripe),
                "version": r.version,
                "deleted": r.flags & FLAG_DELETED != 0,
                "tombstone": r.flags & FLAG_DELETED != 0 && r.block != NO_BLOCK,
                "purged": r.flags & FLAG_PURGED != 0,
                "block": (r.block != NO_BLOCK).then_some(r.block),
                "old_block": (r.old_block != NO_BLOCK).then_some(r.old_block),
            })
        })
        .collect();
    let entries: Vec<Value> = entries
        .iter()
        .map(|(e, pos)| {
            let kind = match e.kind {
                EntryKind::SmallWrite => "small_write",
                EntryKind::BigWrite => "big_write",
                EntryKind::Stabilize => "stabilize",
                EntryKind::Rollback => "rollback",
                EntryKind::Delete => "delete",
                EntryKind::Flush => "flush",
                EntryKind::Purge => "purge",
            };
            let mut value = json!({
                "seq": e.seq,
                "pos": pos,
                "kind": kind,
                "inode": format!("{:#x}", e.oid.inode),
                "stripe": format!("{:#x}", e.oid.stripe),
                "version": e.version,
                "stable": e.is_stable(),
                "session": e.session,
                "durable_below": e.durable_below,
            });
            if matches!(e.kind, EntryKind::SmallWrite | EntryKind::BigWrite) {
                value["offset"] = json!(e.offset);
                value["len"] = json!(e.len);
            }
            if e.block != NO_BLOCK {
                value["block"] = json!(e.block);
            }
            if e.old_block != NO_BLOCK {
                value["old_block"] = json!(e.old_block);
            }
            value
        })
        .collect();
    Ok(json!({
        "superblock": superblock_json(&sb),
        "header": {
            "generation": header.generation,
            "start_pos": header.start_pos,
            "start_seq": header.start_seq,
            "clean_end_seq": header.clean_end_seq,
            "session": header.session,
            "session_start_seq": header.session_start_seq,
        },
        "ring_offset": sb.ring_area().0,
        "entries": entries,
        "gaps": gaps,
        "end_pos": stop_pos,
        "newest_flush_batch": records,
    }))
}
