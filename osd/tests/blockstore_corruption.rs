//! Damage at rest, the way a tester finds it: bytes flipped in a stopped OSD's data file
//! (a real file through io_uring with O_DIRECT), then the blockstore is opened again.
//!
//! Replay must report the damage (an ERROR line with counts), keep every later entry
//! whose own checksums hold, and put the damaged object in `damaged_objects()`; reads of
//! the damaged data fail with -EDOM and never return wrong data; a rewrite of the whole
//! object clears the mark. The last tests check the other rows of the replay rule (see
//! `blockstore/journal_walk.rs`) on the simulated disk: a gap nothing proves durable is a
//! torn write, not corruption.

use serde_json::Value;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use vitastor_osd::blockstore::dump::dump_journal;
use vitastor_osd::blockstore::prepare::prepare;
use vitastor_osd::blockstore::sim::SimDisk;
use vitastor_osd::blockstore::uring::UringDisk;
use vitastor_osd::blockstore::{
    AlignedBuf, Blockstore, BlockstoreConfig, DamageReason, FormatOptions, Op, OpOutput,
};
use vitastor_proto::{errno, ObjectId};

const BLOCK: u32 = 128 << 10;
const LATER_WRITES: u64 = 24;

fn data_file(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let file = std::fs::File::create(&path).expect("create data file");
    file.set_len(64 << 20).expect("size data file");
    let mut disk = UringDisk::open(&path).expect("open with O_DIRECT");
    let options = FormatOptions {
        journal_size: 4 << 20,
        ..FormatOptions::default()
    };
    prepare(&mut disk, &options).expect("prepare");
    path
}

fn open(path: &Path) -> Blockstore<UringDisk> {
    let disk = UringDisk::open(path).expect("open with O_DIRECT");
    Blockstore::open(disk, BlockstoreConfig::default()).expect("open the blockstore")
}

fn oid(n: u64) -> ObjectId {
    ObjectId {
        inode: 1 << 48 | 7,
        stripe: n * u64::from(BLOCK),
    }
}

fn pattern(len: usize, seed: u64) -> AlignedBuf {
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed as u8 ^ 0x5a))
        .collect();
    AlignedBuf::from_slice(&data)
}

fn write(store: &mut Blockstore<UringDisk>, n: u64, offset: u32, data: AlignedBuf) -> u64 {
    match store.run(Op::Write {
        oid: oid(n),
        version: 0,
        offset,
        data,
        stable: true,
    }) {
        Ok(OpOutput::Version(version)) => version,
        other => panic!("write to object {n} failed: {other:?}"),
    }
}

fn sync(store: &mut Blockstore<UringDisk>) {
    store.run(Op::Sync).expect("sync");
}

fn read(store: &mut Blockstore<UringDisk>, n: u64, offset: u32, len: u32) -> Result<Vec<u8>, i32> {
    match store.run(Op::Read {
        oid: oid(n),
        offset,
        len,
    }) {
        Ok(OpOutput::Read { data, .. }) => Ok(data.to_vec()),
        Ok(other) => panic!("unexpected read output {other:?}"),
        Err(error) => Err(error.errno),
    }
}

/// Acknowledged, synced writes to objects 1..=LATER_WRITES: whole blocks (redirected).
fn later_writes(store: &mut Blockstore<UringDisk>) {
    for n in 1..=LATER_WRITES {
        write(store, n, 0, pattern(BLOCK as usize, n));
        if n % 4 == 0 {
            sync(store);
        }
    }
    sync(store);
}

fn assert_later_writes_survived(store: &mut Blockstore<UringDisk>) {
    for n in 1..=LATER_WRITES {
        let data = read(store, n, 0, BLOCK)
            .unwrap_or_else(|e| panic!("acknowledged write to object {n} is lost: errno {e}"));
        assert!(
            data == pattern(BLOCK as usize, n)[..],
            "object {n} reads back wrong data"
        );
    }
}

/// Stops the store the way the OSD stops today (no clean-shutdown header), or cleanly.
fn stop(store: Blockstore<UringDisk>, clean: bool) {
    if clean {
        store.close().expect("close");
    } else {
        drop(store);
    }
}

fn journal(path: &Path) -> Value {
    dump_journal(UringDisk::open_read_only(path).expect("open read-only")).expect("dump journal")
}

fn number(value: &Value) -> u64 {
    value.as_u64().expect("a number")
}

/// The journal entry of object `n` at `version`.
fn entry_of(journal: &Value, n: u64, version: u64) -> Value {
    let stripe = format!("{:#x}", oid(n).stripe);
    journal["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["stripe"] == stripe.as_str() && number(&e["version"]) == version)
        .unwrap_or_else(|| panic!("no journal entry for object {n} v{version}: {journal:#}"))
        .clone()
}

fn flip_bit(path: &Path, offset: u64, bit: u8) {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open data file");
    let mut byte = [0u8];
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.read_exact(&mut byte).unwrap();
    byte[0] ^= 1 << bit;
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.write_all(&byte).unwrap();
    file.sync_all().unwrap();
}

/// Everything logged at WARN or above while `f` runs on this thread.
fn logged<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Capture(Arc::new(Mutex::new(Vec::new())));
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let result = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned();
    (result, text)
}

fn damage_of(store: &Blockstore<UringDisk>, n: u64) -> Option<(u64, DamageReason)> {
    store
        .damaged_objects()
        .get(&oid(n))
        .map(|d| (d.version, d.reason))
}

/// Defect (a): a bit flip in a fsynced redirected block was taken for a torn write and
/// replay silently dropped every later entry.
fn flipped_big_write(name: &str, clean: bool) {
    let path = data_file(name);
    let mut store = open(&path);
    let version = write(&mut store, 0, 0, pattern(BLOCK as usize, 0));
    sync(&mut store);
    later_writes(&mut store);
    stop(store, clean);
    let journal = journal(&path);
    let entry = entry_of(&journal, 0, version);
    assert_eq!(entry["kind"], "big_write");
    let data_offset = number(&journal["superblock"]["data_offset"]);
    flip_bit(
        &path,
        data_offset + number(&entry["block"]) * u64::from(BLOCK) + 5000,
        3,
    );

    let (mut store, log) = logged(|| open(&path));
    assert!(
        log.contains("ERROR") && log.contains("journal corruption"),
        "no ERROR about the corruption: {log}"
    );
    assert_later_writes_survived(&mut store);
    assert_eq!(damage_of(&store, 0), Some((version, DamageReason::BadData)));
    assert_eq!(read(&mut store, 0, 4096, 4096), Err(errno::EDOM));
    assert!(read(&mut store, 0, 0, 4096).is_ok(), "intact sectors read");
    // The OSD restores the object from a peer: a whole-block write clears the mark.
    write(&mut store, 0, 0, pattern(BLOCK as usize, 99));
    assert_eq!(damage_of(&store, 0), None);
    assert!(read(&mut store, 0, 0, BLOCK).unwrap() == pattern(BLOCK as usize, 99)[..]);
}

#[test]
fn bit_flip_in_a_synced_big_write_after_a_kill_keeps_later_writes() {
    flipped_big_write("corrupt-big-kill.bin", false);
}

#[test]
fn bit_flip_in_a_synced_big_write_after_a_clean_stop_keeps_later_writes() {
    flipped_big_write("corrupt-big-clean.bin", true);
}

/// A synced small write of object 0 (over a whole-block base), then the later writes.
fn with_small_write(name: &str) -> (PathBuf, u64, Value) {
    let path = data_file(name);
    let mut store = open(&path);
    write(&mut store, 0, 0, pattern(BLOCK as usize, 0));
    let version = write(&mut store, 0, 8192, pattern(4096, 50));
    sync(&mut store);
    later_writes(&mut store);
    stop(store, false);
    let journal = journal(&path);
    let entry = entry_of(&journal, 0, version);
    assert_eq!(entry["kind"], "small_write");
    (path, version, entry)
}

/// Defect (b): a corrupted small-write entry stopped replay with no log line at all.
#[test]
fn bit_flip_in_small_write_data_is_reported_and_later_writes_survive() {
    let (path, version, entry) = with_small_write("corrupt-small-data.bin");
    let ring = number(&journal(&path)["ring_offset"]);
    flip_bit(&path, ring + number(&entry["pos"]) + 4096 + 100, 0);

    let (mut store, log) = logged(|| open(&path));
    assert!(log.contains("ERROR"), "no ERROR logged: {log}");
    assert_later_writes_survived(&mut store);
    assert_eq!(
        damage_of(&store, 0),
        Some((version, DamageReason::BadJournalData))
    );
    assert_eq!(read(&mut store, 0, 8192, 4096), Err(errno::EDOM));
    assert!(read(&mut store, 0, 0, 8192).unwrap() == pattern(BLOCK as usize, 0)[..8192]);
    // Flushed, the bad data keeps its checksum: still detected after a restart.
    store.flush_all().expect("flush");
    stop(store, false);
    let mut store = open(&path);
    assert_eq!(read(&mut store, 0, 8192, 4096), Err(errno::EDOM));
    assert!(damage_of(&store, 0).is_some(), "the failed read marks it");
}

#[test]
fn bit_flip_in_a_small_write_header_loses_only_that_entry() {
    let (path, version, entry) = with_small_write("corrupt-small-header.bin");
    let ring = number(&journal(&path)["ring_offset"]);
    flip_bit(&path, ring + number(&entry["pos"]) + 30, 6);

    let (mut store, log) = logged(|| open(&path));
    assert!(
        log.contains("ERROR") && log.contains("entries_skipped=1"),
        "no ERROR with counts: {log}"
    );
    assert_later_writes_survived(&mut store);
    assert!(
        matches!(damage_of(&store, 0), Some((v, DamageReason::LostEntry { .. })) if v == version),
        "{:?}",
        store.damaged_objects()
    );
    // Every read fails: the sectors the lost entry wrote would come back stale.
    assert_eq!(read(&mut store, 0, 0, 4096), Err(errno::EDOM));
    // A restart finds the same damage (the lost entry holds the journal start).
    store.flush_all().expect("flush");
    stop(store, false);
    let mut store = open(&path);
    assert!(matches!(
        damage_of(&store, 0),
        Some((_, DamageReason::LostEntry { .. }))
    ));
    // The repair: a peer's copy at a version newer than the lost one.
    let repaired = match store.run(Op::Write {
        oid: oid(0),
        version: version + 1,
        offset: 0,
        data: pattern(BLOCK as usize, 77),
        stable: true,
    }) {
        Ok(OpOutput::Version(v)) => v,
        other => panic!("repair failed: {other:?}"),
    };
    assert_eq!(repaired, version + 1);
    assert_eq!(damage_of(&store, 0), None);
    store.flush_all().expect("flush");
    stop(store, false);
    let mut store = open(&path);
    assert_eq!(
        damage_of(&store, 0),
        None,
        "the rewrite is newer than the loss"
    );
    assert!(read(&mut store, 0, 0, BLOCK).unwrap() == pattern(BLOCK as usize, 77)[..]);
    assert_later_writes_survived(&mut store);
}

/// Defect (c) stays as it was (-EDOM, never data), and the object is now marked for read
/// repair.
#[test]
fn checksum_failure_on_read_marks_the_object_until_rewritten() {
    let path = data_file("corrupt-read.bin");
    let mut store = open(&path);
    write(&mut store, 0, 0, pattern(BLOCK as usize, 0));
    sync(&mut store);
    store.flush_all().expect("flush");
    store.close().expect("close");
    let meta = vitastor_osd::blockstore::dump::dump_meta(
        UringDisk::open_read_only(&path).expect("open read-only"),
    )
    .expect("dump meta");
    let block = number(&meta["entries"][0]["block"]);
    let data_offset = number(&meta["superblock"]["data_offset"]);
    flip_bit(
        &path,
        data_offset + block * u64::from(BLOCK) + 3 * 4096 + 7,
        1,
    );

    let mut store = open(&path);
    assert!(store.damaged_objects().is_empty(), "nothing read yet");
    let (result, log) = logged(|| read(&mut store, 0, 0, BLOCK));
    assert_eq!(result, Err(errno::EDOM));
    assert!(log.contains("ERROR"), "{log}");
    assert_eq!(
        damage_of(&store, 0).map(|d| d.1),
        Some(DamageReason::BadData)
    );
    assert!(
        read(&mut store, 0, 0, 3 * 4096).is_ok(),
        "good sectors still read"
    );
    // Clearing by hand does not make the data good: the next read marks it again.
    assert!(store.clear_damaged(&oid(0)));
    assert_eq!(read(&mut store, 0, 3 * 4096, 4096), Err(errno::EDOM));
    assert!(damage_of(&store, 0).is_some());
    write(&mut store, 0, 0, pattern(BLOCK as usize, 5));
    assert_eq!(damage_of(&store, 0), None);
    assert!(!store.clear_damaged(&oid(0)), "the write cleared it");
    assert!(read(&mut store, 0, 0, BLOCK).unwrap() == pattern(BLOCK as usize, 5)[..]);
}

/// A store on the simulated disk with object 0 written whole (synced), then two small
/// writes to it that complete but are never synced; the disk as a reboot finds it if both
/// landed (as in-flight writes may).
fn unsynced_small_writes() -> (SimDisk, u64, u64) {
    let mut disk = SimDisk::new(16 << 20, 3);
    disk.reorder = false;
    let options = FormatOptions {
        journal_size: 1 << 20,
        ..FormatOptions::default()
    };
    prepare(&mut disk, &options).expect("prepare");
    let mut store = Blockstore::open(disk, BlockstoreConfig::default()).expect("open");
    let run = |store: &mut Blockstore<SimDisk>, offset: u32, data: AlignedBuf| match store.run(
        Op::Write {
            oid: oid(0),
            version: 0,
            offset,
            data,
            stable: true,
        },
    ) {
        Ok(OpOutput::Version(version)) => version,
        other => panic!("write failed: {other:?}"),
    };
    run(&mut store, 0, pattern(BLOCK as usize, 0));
    store.run(Op::Sync).expect("sync");
    let first = run(&mut store, 8192, pattern(4096, 1));
    let second = run(&mut store, 16384, pattern(4096, 2));
    (store.into_disk().reopen(1), first, second)
}

fn flip_entry_header(disk: &mut SimDisk, version: u64) {
    let journal = dump_journal(disk.snapshot(0)).expect("dump journal");
    let entry = entry_of(&journal, 0, version);
    disk.flip_bit(
        number(&journal["ring_offset"]) + number(&entry["pos"]) + 40,
        2,
    );
}

/// Table row "valid later entries, but nothing proves the gap durable": a write torn by
/// the crash while a later one landed. The journal ends there (the later entry was never
/// durable either), with a WARN; nothing is marked damaged.
#[test]
fn unproven_gap_before_valid_entries_ends_the_journal_with_a_warning() {
    let (mut disk, first, _) = unsynced_small_writes();
    flip_entry_header(&mut disk, first);
    let (store, log) = logged(|| Blockstore::open(disk, BlockstoreConfig::default()));
    let mut store = store.expect("open");
    assert!(
        log.contains("WARN") && log.contains("dropped_entries=1") && !log.contains("ERROR"),
        "{log}"
    );
    assert!(store.damaged_objects().is_empty());
    match store.run(Op::Read {
        oid: oid(0),
        offset: 0,
        len: BLOCK,
    }) {
        Ok(OpOutput::Read { version, data, .. }) => {
            assert_eq!(version, 1);
            assert!(data[..] == pattern(BLOCK as usize, 0)[..]);
        }
        other => panic!("read failed: {other:?}"),
    }
}

/// Table row "nothing valid continues the chain": a torn tail, the normal result of a
/// crash. No log line, no damage.
#[test]
fn torn_tail_ends_the_journal_quietly() {
    let (mut disk, _, second) = unsynced_small_writes();
    flip_entry_header(&mut disk, second);
    let (store, log) = logged(|| Blockstore::open(disk, BlockstoreConfig::default()));
    let store = store.expect("open");
    assert!(!log.contains("WARN") && !log.contains("ERROR"), "{log}");
    assert!(store.damaged_objects().is_empty());
    assert_eq!(store.object_version(&oid(0)), 2);
}
