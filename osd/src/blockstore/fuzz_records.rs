//! Fuzzing entry points for the records read at startup (journal entries and headers,
//! metadata slots), shared by `fuzz/fuzz_targets/journal_entry.rs` and a unit test that
//! drives them with random inputs, so the logic is compiled and run on stable without
//! cargo-fuzz.
//!
//! Mutated records are sealed again (their crc32c recomputed) before they are decoded or
//! replayed: with the stored checksum left as it was, nearly every input fails the
//! checksum check, and the fuzzer never reaches the field decoders or the replay logic
//! behind them (36 edges in 45M runs).
//!
//! Input of [`journal_entry`]: byte 0 chooses the base image (clean shutdown or power
//! loss); the rest is taken as one sector for the decoders, and as 4-byte patches
//! `(target, offset lo, offset hi, xor)` for replay: `target` picks a live record of the
//! base image (journal entry header, small-write data, journal header copy, metadata
//! slot), `offset` a byte in it. Records are re-sealed after patching (data sectors are
//! not: their checksums live in the entry header, so a patch there is corruption).

use super::bitmap::bitmap_bytes;
use super::codec::{seal_sector, sector_is_sealed};
use super::dump::{dump_journal, dump_meta};
use super::journal_format::{EntryHeader, HeaderCopy, JournalHeader};
use super::layout::SECTOR;
use super::meta_format::{self, MetaSlot};
use super::prepare::prepare;
use super::sim::SimDisk;
use super::{AlignedBuf, Blockstore, BlockstoreConfig, BlockstoreError, FormatOptions, Op};
use std::sync::OnceLock;
use vitastor_proto::ObjectId;

const BLOCK: u32 = 128 << 10;
const OBJECTS: u64 = 4;
const PATCHES_MAX: usize = 16;

/// Decoders on `data`, then replay of a base image patched by `data`.
pub fn journal_entry(data: &[u8]) {
    decode_sector(data);
    replay_patched(data);
}

/// The input as one sector, as given and sealed: every decoder returns a record or
/// "invalid", never panics, and a decoded record encodes back to itself.
pub fn decode_sector(data: &[u8]) {
    let mut sector = [0u8; SECTOR as usize];
    let len = data.len().min(sector.len());
    sector[..len].copy_from_slice(&data[..len]);
    let bitmap_len = bitmap_bytes(32);
    for sealed in [false, true] {
        if sealed {
            seal_sector(&mut sector);
        }
        let embedded = u64::from_le_bytes(sector[8..16].try_into().expect("8 bytes"));
        for format_id in [0, embedded] {
            if let Some(entry) = EntryHeader::decode(&sector, format_id, bitmap_len) {
                let mut again = [0u8; SECTOR as usize];
                entry.encode(format_id, &mut again);
                assert_eq!(
                    EntryHeader::decode(&again, format_id, bitmap_len),
                    Some(entry),
                    "journal entry round trip"
                );
            }
            if let HeaderCopy::Valid(header) = JournalHeader::decode(&sector, format_id) {
                let mut again = [0u8; SECTOR as usize];
                header.encode(format_id, &mut again);
                assert_eq!(
                    JournalHeader::decode(&again, format_id),
                    HeaderCopy::Valid(header),
                    "journal header round trip"
                );
            }
            if let MetaSlot::Used(entry) = meta_format::decode(&sector, 0, 32, format_id) {
                let mut again = [0u8; SECTOR as usize];
                meta_format::encode_entry(&entry, format_id, &mut again);
                assert!(
                    matches!(meta_format::decode(&again, 0, 32, format_id), MetaSlot::Used(e) if e == entry),
                    "metadata slot round trip"
                );
            }
        }
    }
}

/// A live record of a base image that patches may target.
#[derive(Debug, Clone, Copy)]
struct Target {
    offset: u64,
    len: u64,
    /// Sealed by its own crc32c (re-sealed after a patch).
    sealed: bool,
}

struct Base {
    disk: SimDisk,
    targets: Vec<Target>,
}

fn oid(n: u64) -> ObjectId {
    ObjectId {
        inode: 1 << 48 | 5,
        stripe: n * u64::from(BLOCK),
    }
}

fn run(store: &mut Blockstore<SimDisk>, op: Op) {
    store
        .run(op)
        .unwrap_or_else(|e| panic!("base image operation failed: {e}"));
}

fn write(store: &mut Blockstore<SimDisk>, n: u64, offset: u32, len: usize, stable: bool) {
    let data: Vec<u8> = (0..len).map(|i| (i as u8) ^ (n as u8 * 37)).collect();
    run(
        store,
        Op::Write {
            oid: oid(n),
            version: 0,
            offset,
            data: AlignedBuf::from_slice(&data),
            stable,
        },
    );
}

/// A small store with every kind of journal entry and some flushed objects; stopped
/// cleanly or by a power loss.
fn build_base(power_loss: bool) -> Base {
    let mut disk = SimDisk::new(4 << 20, 7);
    disk.reorder = false;
    let options = FormatOptions {
        journal_size: 256 << 10,
        format_id: 0xf0220,
        ..FormatOptions::default()
    };
    prepare(&mut disk, &options).expect("prepare the base image");
    let mut store = Blockstore::open(disk, BlockstoreConfig::default()).expect("open");
    for n in 0..OBJECTS {
        write(&mut store, n, 0, BLOCK as usize, true);
    }
    run(&mut store, Op::Sync);
    store.flush_all().expect("flush");
    write(&mut store, 0, 8192, 8192, true);
    write(&mut store, 1, 0, 4096, false);
    run(
        &mut store,
        Op::Stabilize {
            oid: oid(1),
            version: 2,
        },
    );
    run(&mut store, Op::Sync);
    write(&mut store, 2, 4096, 4096, false);
    run(
        &mut store,
        Op::Rollback {
            oid: oid(2),
            version: 1,
        },
    );
    run(
        &mut store,
        Op::Delete {
            oid: oid(3),
            version: 0,
        },
    );
    write(&mut store, 2, 0, BLOCK as usize, true);
    run(&mut store, Op::Sync);
    write(&mut store, 0, 65536, 4096, true);
    write(&mut store, 1, 4096, 8192, true);
    let disk = if power_loss {
        store.into_disk().crash(11)
    } else {
        store.close().expect("close").reopen(11)
    };
    let targets = targets_of(&disk);
    Base { disk, targets }
}

fn number(value: &serde_json::Value) -> u64 {
    value.as_u64().expect("dump fields are numbers")
}

/// The live records of `disk`.
fn targets_of(disk: &SimDisk) -> Vec<Target> {
    let journal = dump_journal(disk.snapshot(0)).expect("dump journal");
    let meta = dump_meta(disk.snapshot(0)).expect("dump meta");
    let sb = &journal["superblock"];
    let ring = number(&journal["ring_offset"]);
    let sealed = |offset| Target {
        offset,
        len: SECTOR,
        sealed: true,
    };
    let mut targets = vec![
        sealed(number(&sb["journal_offset"])),
        sealed(number(&sb["journal_offset"]) + SECTOR),
    ];
    for entry in journal["entries"].as_array().expect("entries") {
        let at = ring + number(&entry["pos"]);
        targets.push(sealed(at));
        if entry["kind"] == "small_write" {
            targets.push(Target {
                offset: at + SECTOR,
                len: number(&entry["len"]),
                sealed: false,
            });
        }
    }
    for entry in meta["entries"].as_array().expect("entries") {
        targets.push(sealed(
            number(&sb["meta_offset"]) + number(&entry["block"]) * SECTOR,
        ));
    }
    targets
}

/// XORs `value` into the byte at `offset` (in both the current and the durable image).
fn xor_byte(disk: &mut SimDisk, offset: u64, value: u8) {
    for bit in 0..8 {
        if value & (1 << bit) != 0 {
            disk.flip_bit(offset, bit);
        }
    }
}

/// Recomputes the crc32c of the sector at `offset`.
fn reseal(disk: &mut SimDisk, offset: u64) {
    let at = offset as usize;
    let mut sector = disk.contents()[at..at + SECTOR as usize].to_vec();
    if sector_is_sealed(&sector) {
        return;
    }
    let old = sector[SECTOR as usize - 4..].to_vec();
    seal_sector(&mut sector);
    for (i, (new, old)) in sector[SECTOR as usize - 4..].iter().zip(old).enumerate() {
        xor_byte(disk, offset + SECTOR - 4 + i as u64, new ^ old);
    }
}

/// The base image chosen by `data[0]`, patched by the rest, opened: open fails with a
/// reason or succeeds; then reads, a full flush, a clean close and a reopen must work.
pub fn replay_patched(data: &[u8]) {
    static BASES: OnceLock<[Base; 2]> = OnceLock::new();
    let bases = BASES.get_or_init(|| [build_base(false), build_base(true)]);
    let Some((&choice, patches)) = data.split_first() else {
        return;
    };
    let base = &bases[usize::from(choice & 1)];
    let mut disk = base.disk.snapshot(u64::from(choice));
    let mut touched = Vec::new();
    for patch in patches.chunks_exact(4).take(PATCHES_MAX) {
        let target = base.targets[usize::from(patch[0]) % base.targets.len()];
        let within = u64::from(u16::from_le_bytes([patch[1], patch[2]]));
        let limit = if target.sealed {
            target.len - 4
        } else {
            target.len
        };
        xor_byte(&mut disk, target.offset + within % limit, patch[3]);
        if target.sealed {
            touched.push(target.offset);
        }
    }
    for offset in touched {
        reseal(&mut disk, offset);
    }
    let config = BlockstoreConfig::default();
    let mut store = match Blockstore::open(disk, config.clone()) {
        Ok(store) => store,
        Err(BlockstoreError::Corrupted { .. } | BlockstoreError::BadSuperblock(_)) => return,
        Err(other) => panic!("open of a patched image failed oddly: {other}"),
    };
    exercise(&mut store);
    let disk = store.close().expect("close after replay").reopen(1);
    let mut store = Blockstore::open(disk, config)
        .unwrap_or_else(|e| panic!("a store closed cleanly after replay does not open: {e}"));
    exercise(&mut store);
}

/// Reads every object, lists, writes one, flushes everything.
fn exercise(store: &mut Blockstore<SimDisk>) {
    for n in 0..OBJECTS {
        let _ = store.run(Op::Read {
            oid: oid(n),
            offset: 0,
            len: BLOCK,
        });
    }
    let _ = store.list(0, 0, 0, 0, u64::MAX);
    let _ = store.damaged_objects();
    let _ = store.run(Op::Write {
        oid: oid(0),
        version: 0,
        offset: 0,
        data: AlignedBuf::from_slice(&[9u8; 4096]),
        stable: true,
    });
    store.flush_all().expect("flush after replay");
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    /// Random inputs, biased towards the fields of the records (the first 96 bytes and
    /// the tail) so that they reach replay's decisions. `FUZZ_RECORDS_RUNS` sets the count.
    #[test]
    fn patched_records_never_panic() {
        let runs: u64 = std::env::var("FUZZ_RECORDS_RUNS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(400);
        let mut rng = SmallRng::seed_from_u64(0xf022);
        for run in 0..runs {
            let mut data = vec![rng.gen::<u8>()];
            for _ in 0..rng.gen_range(0..6) {
                let offset: u16 = if rng.gen_bool(0.8) {
                    rng.gen_range(0..96)
                } else if rng.gen_bool(0.5) {
                    rng.gen_range(4060..4092)
                } else {
                    rng.gen()
                };
                let xor = if rng.gen_bool(0.5) {
                    1 << rng.gen_range(0..8)
                } else {
                    rng.gen_range(1..=255)
                };
                let [lo, hi] = offset.to_le_bytes();
                data.extend([rng.gen(), lo, hi, xor]);
            }
            let caught = std::panic::catch_unwind(|| journal_entry(&data));
            assert!(caught.is_ok(), "run {run}: input {data:?} panicked");
        }
    }

    #[test]
    fn decoders_on_random_sectors() {
        let mut rng = SmallRng::seed_from_u64(7);
        for _ in 0..200 {
            let len = rng.gen_range(0..4200);
            let data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            decode_sector(&data);
        }
    }
}
