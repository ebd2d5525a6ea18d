//! Deletes as durable tombstones, and purge, on the simulated disk: a tombstone survives
//! the flusher, a clean reopen and a crash; it reads as zeros with its version and is
//! listed as deleted; a write on top of it starts from zeros; a purge makes the object
//! disappear for good, and does nothing while a newer live version exists.

use vitastor_osd::blockstore::dump::dump_meta;
use vitastor_osd::blockstore::prepare::prepare;
use vitastor_osd::blockstore::sim::SimDisk;
use vitastor_osd::blockstore::{
    AlignedBuf, Blockstore, BlockstoreConfig, FormatOptions, ListedVersion, Op, OpOutput,
};
use vitastor_proto::ObjectId;

const BLOCK: u32 = 128 << 10;

fn formatted(seed: u64) -> SimDisk {
    let mut disk = SimDisk::new(32 << 20, seed);
    let options = FormatOptions {
        journal_size: 1 << 20,
        ..FormatOptions::default()
    };
    prepare(&mut disk, &options).expect("prepare");
    disk
}

/// Both ways of finding checksums: kept in memory, or read from the metadata slot.
fn configs() -> [BlockstoreConfig; 2] {
    [
        BlockstoreConfig::default(),
        BlockstoreConfig {
            csum_memory_limit_bytes: 0,
            ..BlockstoreConfig::default()
        },
    ]
}

fn oid(n: u64) -> ObjectId {
    ObjectId {
        inode: 1 << 48 | 7,
        stripe: n * u64::from(BLOCK),
    }
}

fn pattern(len: usize, seed: u8) -> AlignedBuf {
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed) | 1)
        .collect();
    AlignedBuf::from_slice(&data)
}

fn version_of(result: Result<OpOutput, vitastor_osd::blockstore::OpError>) -> u64 {
    match result {
        Ok(OpOutput::Version(v)) => v,
        other => panic!("expected a version, got {other:?}"),
    }
}

fn write(store: &mut Blockstore<SimDisk>, o: ObjectId, offset: u32, data: AlignedBuf) -> u64 {
    version_of(store.run(Op::Write {
        oid: o,
        version: 0,
        offset,
        data,
        stable: true,
    }))
}

fn delete(store: &mut Blockstore<SimDisk>, o: ObjectId, version: u64) -> u64 {
    version_of(store.run(Op::Delete { oid: o, version }))
}

fn purge(store: &mut Blockstore<SimDisk>, o: ObjectId, version: u64) -> u64 {
    version_of(store.run(Op::Purge { oid: o, version }))
}

/// (version, bitmap, data) of the whole object.
fn read(store: &mut Blockstore<SimDisk>, o: ObjectId) -> (u64, Vec<u8>, Vec<u8>) {
    match store.run(Op::Read {
        oid: o,
        offset: 0,
        len: BLOCK,
    }) {
        Ok(OpOutput::Read {
            version,
            bitmap,
            data,
        }) => (version, bitmap, data.to_vec()),
        other => panic!("read failed: {other:?}"),
    }
}

fn listed(store: &Blockstore<SimDisk>, o: ObjectId) -> Vec<(u64, bool, bool)> {
    store
        .list(0, 0, 0, 0, u64::MAX)
        .iter()
        .filter(|v| v.oid == o)
        .map(|v| (v.version, v.stable, v.deleted))
        .collect()
}

fn assert_tombstone(store: &mut Blockstore<SimDisk>, o: ObjectId, version: u64, when: &str) {
    let (read_version, bitmap, data) = read(store, o);
    assert_eq!(read_version, version, "{when}: read version");
    assert!(bitmap.iter().all(|b| *b == 0), "{when}: bitmap {bitmap:?}");
    assert!(data.iter().all(|b| *b == 0), "{when}: data is not zeros");
    assert_eq!(store.object_version(&o), version, "{when}: object_version");
    assert_eq!(
        listed(store, o),
        vec![(version, true, true)],
        "{when}: listed"
    );
}

fn clean_reopen(store: Blockstore<SimDisk>, config: &BlockstoreConfig) -> Blockstore<SimDisk> {
    let disk = store.close().expect("close").reopen(3);
    Blockstore::open(disk, config.clone()).expect("reopen")
}

fn crash_reopen(
    store: Blockstore<SimDisk>,
    config: &BlockstoreConfig,
    seed: u64,
) -> Blockstore<SimDisk> {
    let disk = store.into_disk().crash(seed);
    Blockstore::open(disk, config.clone()).expect("reopen after crash")
}

#[test]
fn delete_flush_reopen_keeps_the_tombstone() {
    for config in configs() {
        let mut store = Blockstore::open(formatted(1), config.clone()).expect("open");
        let a = oid(1);
        let b = oid(2);
        write(&mut store, a, 0, pattern(BLOCK as usize, 1));
        write(&mut store, a, 8192, pattern(4096, 2));
        write(&mut store, b, 4096, pattern(4096, 3));
        store.flush_all().unwrap();
        write(&mut store, a, 16384, pattern(4096, 4));
        let tombstone = delete(&mut store, a, 0);
        assert_eq!(tombstone, 4);
        // Journaled: the data versions and the tombstone are listed, reads give zeros.
        assert_eq!(
            listed(&store, a),
            vec![(2, true, false), (3, true, false), (4, true, true)]
        );
        let (version, bitmap, data) = read(&mut store, a);
        assert_eq!(version, 4);
        assert!(bitmap.iter().all(|b| *b == 0) && data.iter().all(|b| *b == 0));
        // A second delete without a version leaves the tombstone alone.
        assert_eq!(delete(&mut store, a, 0), 4);

        store.flush_all().unwrap();
        assert_tombstone(&mut store, a, 4, "flushed");
        assert_eq!(store.journal_used_bytes(), 0, "the delete was flushed");
        let mut store = clean_reopen(store, &config);
        assert_tombstone(&mut store, a, 4, "after a clean reopen");
        let mut store = crash_reopen(store, &config, 9);
        assert_tombstone(&mut store, a, 4, "after a crash");
        // The other object is untouched.
        assert_eq!(&read(&mut store, b).2[4096..8192], &pattern(4096, 3)[..]);

        let disk = store.close().unwrap().reopen(4);
        let meta = dump_meta(disk.snapshot(5)).expect("dump meta");
        let entries = meta["entries"].as_array().expect("entries");
        let tombstones: Vec<_> = entries.iter().filter(|e| e["tombstone"] == true).collect();
        assert_eq!(tombstones.len(), 1, "{meta:#}");
        assert_eq!(tombstones[0]["version"], 4);
        assert_eq!(entries.len(), 2, "one slot per object: {meta:#}");
    }
}

#[test]
fn journaled_tombstone_survives_a_crash_after_sync() {
    for config in configs() {
        let mut store = Blockstore::open(formatted(2), config.clone()).expect("open");
        let a = oid(3);
        write(&mut store, a, 0, pattern(8192, 5));
        let tombstone = delete(&mut store, a, 0);
        store.run(Op::Sync).unwrap();
        let mut store = crash_reopen(store, &config, 1);
        assert_eq!(read(&mut store, a).0, tombstone);
        assert!(read(&mut store, a).2.iter().all(|b| *b == 0));
        assert_eq!(
            listed(&store, a).last(),
            Some(&(tombstone, true, true)),
            "the tombstone is the newest listed version"
        );
        store.flush_all().unwrap();
        assert_tombstone(&mut store, a, tombstone, "flushed after replay");
    }
}

#[test]
fn write_after_tombstone_starts_from_zeros() {
    for config in configs() {
        let mut store = Blockstore::open(formatted(3), config.clone()).expect("open");
        let a = oid(4);
        let c = oid(5);
        write(&mut store, a, 0, pattern(BLOCK as usize, 6));
        store.flush_all().unwrap();
        let tombstone = delete(&mut store, a, 0);
        store.flush_all().unwrap();
        let v = write(&mut store, a, 8192, pattern(4096, 7));
        assert_eq!(v, tombstone + 1, "versions go on after a tombstone");
        // The same with the tombstone and the write journaled together.
        write(&mut store, c, 0, pattern(BLOCK as usize, 8));
        store.flush_all().unwrap();
        let c_tombstone = delete(&mut store, c, 0);
        let vc = write(&mut store, c, 4096, pattern(4096, 9));
        assert_eq!(vc, c_tombstone + 1);

        let check = |store: &mut Blockstore<SimDisk>, when: &str| {
            let (version, bitmap, data) = read(store, a);
            assert_eq!(version, v, "{when}");
            assert_eq!(bitmap[0], 0b100, "{when}: only the new sector");
            assert!(data[..8192].iter().all(|b| *b == 0), "{when}: old data");
            assert_eq!(&data[8192..12288], &pattern(4096, 7)[..], "{when}");
            assert!(data[12288..].iter().all(|b| *b == 0), "{when}: old data");
            let (version, _, data) = read(store, c);
            assert_eq!(version, vc, "{when}");
            assert!(data[..4096].iter().all(|b| *b == 0), "{when}: old data");
            assert_eq!(&data[4096..8192], &pattern(4096, 9)[..], "{when}");
            assert!(data[8192..].iter().all(|b| *b == 0), "{when}: old data");
        };
        check(&mut store, "journaled");
        store.flush_all().unwrap();
        check(&mut store, "flushed");
        assert_eq!(listed(&store, a), vec![(v, true, false)]);
        assert_eq!(listed(&store, c), vec![(vc, true, false)]);
        let mut store = clean_reopen(store, &config);
        check(&mut store, "after reopen");
        assert_eq!(listed(&store, a), vec![(v, true, false)]);
        let mut store = crash_reopen(store, &config, 2);
        check(&mut store, "after a crash");
    }
}

#[test]
fn purge_forgets_the_object_for_good() {
    for config in configs() {
        let mut store = Blockstore::open(formatted(4), config.clone()).expect("open");
        let free_at_start = store.free_bytes();
        let a = oid(6); // tombstone flushed before the purge
        let b = oid(7); // tombstone still journaled at the purge
        let c = oid(8); // purged, then crash after sync, before any flush
        for (n, o) in [a, b, c].into_iter().enumerate() {
            write(&mut store, o, 0, pattern(BLOCK as usize, n as u8));
            write(&mut store, o, 4096, pattern(4096, 10 + n as u8));
        }
        store.flush_all().unwrap();
        let ta = delete(&mut store, a, 0);
        store.flush_all().unwrap();
        let tb = delete(&mut store, b, 0);
        let tc = delete(&mut store, c, 0);
        store.flush_all().unwrap();
        // An older version than the tombstone purges nothing.
        assert_eq!(purge(&mut store, a, ta - 1), 0);
        assert_tombstone(&mut store, a, ta, "purge of an older version");
        assert_eq!(purge(&mut store, a, ta), ta);
        assert_eq!(purge(&mut store, a, ta), 0, "already gone");
        let tb2 = delete(&mut store, b, tb + 5);
        assert_eq!(tb2, tb + 5, "a newer tombstone over a tombstone");
        assert_eq!(purge(&mut store, b, tb + 10), tb2);
        for o in [a, b] {
            assert_eq!(read(&mut store, o).0, 0);
            assert!(read(&mut store, o).2.iter().all(|x| *x == 0));
            assert_eq!(store.object_version(&o), 0);
            assert!(listed(&store, o).is_empty());
        }
        assert_eq!(purge(&mut store, c, tc), tc);
        store.run(Op::Sync).unwrap();
        let mut store = crash_reopen(store, &config, 5);
        for o in [a, b, c] {
            assert_eq!(read(&mut store, o).0, 0, "after the crash");
            assert!(listed(&store, o).is_empty(), "after the crash");
        }
        store.flush_all().unwrap();
        let mut store = clean_reopen(store, &config);
        for o in [a, b, c] {
            assert_eq!(read(&mut store, o).0, 0, "after the reopen");
            assert!(listed(&store, o).is_empty(), "after the reopen");
        }
        assert!(store.list(0, 0, 0, 0, u64::MAX).is_empty());
        // Every block is free again, and the objects start over at version 1.
        store.flush_all().unwrap();
        assert_eq!(store.free_bytes(), free_at_start);
        assert_eq!(write(&mut store, a, 0, pattern(4096, 20)), 1);
        let (version, bitmap, data) = read(&mut store, a);
        assert_eq!((version, bitmap[0]), (1, 1));
        assert!(data[4096..].iter().all(|x| *x == 0));
        let disk = store.close().unwrap().reopen(6);
        let meta = dump_meta(disk.snapshot(7)).expect("dump meta");
        assert!(
            meta["entries"].as_array().unwrap().is_empty(),
            "no slot in use after purges and a journaled write: {meta:#}"
        );
    }
}

#[test]
fn purge_with_a_newer_live_version_does_nothing() {
    let config = BlockstoreConfig::default();
    let mut store = Blockstore::open(formatted(5), config.clone()).expect("open");
    let a = oid(9);
    write(&mut store, a, 0, pattern(8192, 1));
    let tombstone = delete(&mut store, a, 0);
    let live = write(&mut store, a, 0, pattern(4096, 2));
    assert_eq!(purge(&mut store, a, tombstone), 0);
    assert_eq!(purge(&mut store, a, live - 1), 0);
    store.flush_all().unwrap();
    assert_eq!(purge(&mut store, a, live - 1), 0);
    let mut store = clean_reopen(store, &config);
    assert_eq!(listed(&store, a), vec![(live, true, false)]);
    let (version, _, data) = read(&mut store, a);
    assert_eq!(version, live);
    assert_eq!(&data[..4096], &pattern(4096, 2)[..]);
    assert!(data[4096..].iter().all(|x| *x == 0));
    // Purging a never-written object is fine too.
    assert_eq!(purge(&mut store, oid(10), 5), 0);
}

/// Rebalance: an OSD that left a PG's set drops its copies, live data included, and gets
/// the space back; the purge survives a crash and a reopen.
#[test]
fn purge_of_live_data_frees_it_for_good() {
    for config in configs() {
        let mut store = Blockstore::open(formatted(8), config.clone()).expect("open");
        let free_at_start = store.free_bytes();
        let flushed = oid(12);
        let journaled = oid(13);
        write(&mut store, flushed, 0, pattern(BLOCK as usize, 3));
        store.flush_all().unwrap();
        let v1 = write(&mut store, flushed, 8192, pattern(4096, 4));
        let v2 = write(&mut store, journaled, 4096, pattern(4096, 5));
        assert_eq!(purge(&mut store, flushed, v1), v1);
        assert_eq!(purge(&mut store, journaled, v2 + 3), v2);
        store.run(Op::Sync).unwrap();
        let mut store = crash_reopen(store, &config, 9);
        for o in [flushed, journaled] {
            assert_eq!(read(&mut store, o).0, 0, "after the crash");
            assert!(listed(&store, o).is_empty(), "after the crash");
        }
        store.flush_all().unwrap();
        let mut store = clean_reopen(store, &config);
        for o in [flushed, journaled] {
            assert_eq!(read(&mut store, o).0, 0, "after the reopen");
            assert!(read(&mut store, o).2.iter().all(|x| *x == 0));
        }
        store.flush_all().unwrap();
        assert_eq!(store.free_bytes(), free_at_start);
    }
}

#[test]
fn explicit_delete_of_an_absent_object_records_a_tombstone() {
    let config = BlockstoreConfig::default();
    let mut store = Blockstore::open(formatted(6), config.clone()).expect("open");
    let a = oid(11);
    // Peering propagates a delete to a member that never had the object.
    assert_eq!(delete(&mut store, a, 0), 0, "version 0: nothing to delete");
    assert!(listed(&store, a).is_empty());
    assert_eq!(delete(&mut store, a, 7), 7);
    store.flush_all().unwrap();
    assert_tombstone(&mut store, a, 7, "flushed");
    let mut store = clean_reopen(store, &config);
    assert_tombstone(&mut store, a, 7, "reopened");
    let listed_all: Vec<ListedVersion> = store.list(0, 0, 0, 0, u64::MAX);
    assert!(listed_all.iter().all(|v| v.deleted && v.stable));
    assert_eq!(purge(&mut store, a, 7), 7);
    store.flush_all().unwrap();
    let store = clean_reopen(store, &config);
    assert!(store.list(0, 0, 0, 0, u64::MAX).is_empty());
}

#[test]
fn new_life_after_purge_survives_replay_of_the_old_one() {
    for config in configs() {
        let mut store = Blockstore::open(formatted(7), config.clone()).expect("open");
        let a = oid(12);
        let pin = oid(13);
        // An unstable version pins the journal start: the old life's delete and the purge
        // stay in the journal while the new life is flushed.
        store
            .run(Op::Write {
                oid: pin,
                version: 0,
                offset: 0,
                data: pattern(4096, 1),
                stable: false,
            })
            .unwrap();
        write(&mut store, a, 0, pattern(BLOCK as usize, 2));
        write(&mut store, a, 4096, pattern(4096, 3));
        write(&mut store, a, 8192, pattern(4096, 4));
        let tombstone = delete(&mut store, a, 0);
        assert_eq!(tombstone, 4);
        store.flush_all().unwrap();
        assert_eq!(purge(&mut store, a, tombstone), tombstone);
        assert_eq!(write(&mut store, a, 16384, pattern(8192, 5)), 1);
        store.flush_all().unwrap();
        assert_eq!(write(&mut store, a, 0, pattern(4096, 6)), 2);
        let check = |store: &mut Blockstore<SimDisk>, when: &str| {
            let (version, _, data) = read(store, a);
            assert_eq!(version, 2, "{when}");
            assert_eq!(&data[..4096], &pattern(4096, 6)[..], "{when}");
            assert!(data[4096..16384].iter().all(|b| *b == 0), "{when}");
            assert_eq!(&data[16384..24576], &pattern(8192, 5)[..], "{when}");
            assert_eq!(listed(store, a), vec![(1, true, false), (2, true, false)]);
        };
        check(&mut store, "before reopen");
        let mut store = clean_reopen(store, &config);
        check(&mut store, "after reopen");
        store.run(Op::Sync).unwrap();
        let mut store = crash_reopen(store, &config, 8);
        check(&mut store, "after a crash");
    }
}
