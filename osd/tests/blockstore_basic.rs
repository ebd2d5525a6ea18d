//! Blockstore behaviour on the simulated disk: each operation, reopen, and bad input.

use vitastor_osd::blockstore::prepare::prepare;
use vitastor_osd::blockstore::sim::SimDisk;
use vitastor_osd::blockstore::{
    AlignedBuf, Blockstore, BlockstoreConfig, BlockstoreError, FormatOptions, Op, OpOutput,
};
use vitastor_proto::errno;
use vitastor_proto::ObjectId;

const BLOCK: u32 = 128 << 10;

fn formatted(size: u64, journal_size: u64, seed: u64) -> SimDisk {
    let mut disk = SimDisk::new(size, seed);
    let options = FormatOptions {
        journal_size,
        ..FormatOptions::default()
    };
    prepare(&mut disk, &options).expect("prepare");
    disk
}

fn open(disk: SimDisk) -> Blockstore<SimDisk> {
    Blockstore::open(disk, BlockstoreConfig::default()).expect("open")
}

fn oid(n: u64) -> ObjectId {
    ObjectId {
        inode: 1 << 48 | 1,
        stripe: n * u64::from(BLOCK),
    }
}

fn pattern(len: usize, seed: u8) -> AlignedBuf {
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    AlignedBuf::from_slice(&data)
}

fn write(store: &mut Blockstore<SimDisk>, o: ObjectId, offset: u32, data: AlignedBuf) -> u64 {
    match store.run(Op::Write {
        oid: o,
        version: 0,
        offset,
        data,
        stable: true,
    }) {
        Ok(OpOutput::Version(v)) => v,
        other => panic!("write failed: {other:?}"),
    }
}

fn read(
    store: &mut Blockstore<SimDisk>,
    o: ObjectId,
    offset: u32,
    len: u32,
) -> (u64, Vec<u8>, Vec<u8>) {
    match store.run(Op::Read {
        oid: o,
        offset,
        len,
    }) {
        Ok(OpOutput::Read {
            version,
            bitmap,
            data,
        }) => (version, bitmap, data.to_vec()),
        other => panic!("read failed: {other:?}"),
    }
}

#[test]
fn write_read_flush_reopen() {
    let mut store = open(formatted(64 << 20, 1 << 20, 1));
    let a = oid(1);
    assert_eq!(
        read(&mut store, a, 0, BLOCK).0,
        0,
        "never written: version 0"
    );
    assert!(read(&mut store, a, 0, BLOCK).2.iter().all(|b| *b == 0));
    assert_eq!(write(&mut store, a, 8192, pattern(4096, 1)), 1);
    assert_eq!(write(&mut store, a, 0, pattern(8192, 2)), 2);
    assert_eq!(write(&mut store, a, 8192, pattern(4096, 3)), 3);
    let (version, bitmap, data) = read(&mut store, a, 0, 16384);
    assert_eq!(version, 3);
    assert_eq!(bitmap[0], 0b0111);
    assert_eq!(&data[..8192], &pattern(8192, 2)[..]);
    assert_eq!(&data[8192..12288], &pattern(4096, 3)[..]);
    assert!(data[12288..].iter().all(|b| *b == 0));
    store.run(Op::Sync).unwrap();
    store.flush_all().unwrap();
    assert_eq!(
        store.journal_used_bytes(),
        0,
        "everything flushed and trimmed"
    );
    let (_, _, again) = read(&mut store, a, 0, 16384);
    assert_eq!(again, data);
    let disk = store.close().unwrap().reopen(2);
    let mut store = open(disk);
    let (version, _, after) = read(&mut store, a, 0, 16384);
    assert_eq!((version, after), (3, data));

    // Unflushed journal content survives a clean reopen too.
    write(&mut store, a, 4096, pattern(4096, 9));
    let b = oid(2);
    write(&mut store, b, 0, pattern(BLOCK as usize, 4));
    let disk = store.close().unwrap().reopen(3);
    let mut store = open(disk);
    assert_eq!(
        &read(&mut store, a, 4096, 4096).2[..],
        &pattern(4096, 9)[..]
    );
    assert_eq!(
        &read(&mut store, b, 0, BLOCK).2[..],
        &pattern(BLOCK as usize, 4)[..]
    );

    // Delete, list: the tombstone is a listed version (more in blockstore_tombstones.rs).
    store.run(Op::Delete { oid: a, version: 0 }).unwrap();
    let listed: Vec<(u64, bool)> = store
        .list(0, 0, 0, 0, u64::MAX)
        .iter()
        .filter(|v| v.oid == a)
        .map(|v| (v.version, v.deleted))
        .collect();
    assert_eq!(listed, vec![(3, false), (4, false), (5, true)]);
    store.flush_all().unwrap();
    assert_eq!(read(&mut store, a, 0, BLOCK).0, 5);
    assert!(read(&mut store, a, 0, BLOCK).2.iter().all(|x| *x == 0));
    let listed: Vec<(u64, bool)> = store
        .list(0, 0, 0, 0, u64::MAX)
        .iter()
        .filter(|v| v.oid == a)
        .map(|v| (v.version, v.deleted))
        .collect();
    assert_eq!(listed, vec![(5, true)]);
}

#[test]
fn unstable_versions_stabilize_and_rollback() {
    let mut store = open(formatted(32 << 20, 1 << 20, 5));
    let a = oid(7);
    let v1 = match store.run(Op::Write {
        oid: a,
        version: 0,
        offset: 0,
        data: pattern(4096, 1),
        stable: false,
    }) {
        Ok(OpOutput::Version(v)) => v,
        other => panic!("{other:?}"),
    };
    store
        .run(Op::Write {
            oid: a,
            version: 5,
            offset: 0,
            data: pattern(4096, 2),
            stable: false,
        })
        .unwrap();
    let listed = store.list(0, 0, 0, 0, u64::MAX);
    assert_eq!(
        listed
            .iter()
            .map(|v| (v.version, v.stable))
            .collect::<Vec<_>>(),
        vec![(1, false), (5, false)]
    );
    assert_eq!(
        store
            .run(Op::Stabilize { oid: a, version: 9 })
            .unwrap_err()
            .errno,
        errno::ENOENT
    );
    store
        .run(Op::Stabilize {
            oid: a,
            version: v1,
        })
        .unwrap();
    store
        .run(Op::Rollback {
            oid: a,
            version: v1,
        })
        .unwrap();
    assert_eq!(read(&mut store, a, 0, 4096).0, v1);
    assert_eq!(&read(&mut store, a, 0, 4096).2[..], &pattern(4096, 1)[..]);
    // A stable version cannot be rolled back.
    assert_eq!(
        store
            .run(Op::Rollback { oid: a, version: 0 })
            .unwrap_err()
            .errno,
        errno::EBUSY
    );
    // Old versions are refused.
    let stale = store.run(Op::Write {
        oid: a,
        version: 1,
        offset: 0,
        data: pattern(4096, 3),
        stable: true,
    });
    assert_eq!(stale.unwrap_err().errno, errno::EINVAL);
}

#[test]
fn bad_requests_are_einval() {
    let mut store = open(formatted(32 << 20, 1 << 20, 6));
    let a = oid(1);
    for (offset, len) in [(100u32, 4096usize), (0, 100), (BLOCK - 4096, 8192), (0, 0)] {
        let result = store.run(Op::Write {
            oid: a,
            version: 0,
            offset,
            data: AlignedBuf::new(len),
            stable: true,
        });
        assert_eq!(
            result.unwrap_err().errno,
            errno::EINVAL,
            "write {offset}+{len}"
        );
    }
    assert_eq!(
        store
            .run(Op::Read {
                oid: a,
                offset: 1,
                len: 4096
            })
            .unwrap_err()
            .errno,
        errno::EINVAL
    );
    assert_eq!(
        store
            .run(Op::Read {
                oid: a,
                offset: 0,
                len: BLOCK * 2
            })
            .unwrap_err()
            .errno,
        errno::EINVAL
    );
}

#[test]
fn full_data_area_is_enospc_and_old_data_stays() {
    let mut store = open(formatted(8 << 20, 1 << 20, 7));
    let blocks = store.superblock().block_count;
    let mut written = Vec::new();
    let mut enospc = None;
    for n in 0..blocks + 4 {
        match store.run(Op::Write {
            oid: oid(n),
            version: 0,
            offset: 0,
            data: pattern(BLOCK as usize, n as u8),
            stable: true,
        }) {
            Ok(_) => written.push(n),
            Err(error) => {
                enospc = Some(error);
                break;
            }
        }
    }
    let error = enospc.expect("the data area must fill up");
    assert_eq!(error.errno, errno::ENOSPC, "{error}");
    assert!(written.len() as u64 >= blocks - 1);
    for n in written {
        assert_eq!(
            &read(&mut store, oid(n), 0, BLOCK).2[..],
            &pattern(BLOCK as usize, n as u8)[..]
        );
    }
}

#[test]
fn full_journal_of_unstable_writes_is_enospc() {
    let mut store = open(formatted(16 << 20, 64 << 10, 8));
    let a = oid(1);
    store
        .run(Op::Write {
            oid: a,
            version: 0,
            offset: 0,
            data: pattern(BLOCK as usize, 1),
            stable: true,
        })
        .unwrap();
    let mut result = Ok(OpOutput::Done);
    for i in 0..64 {
        result = store.run(Op::Write {
            oid: a,
            version: 0,
            offset: 4096,
            data: pattern(4096, i),
            stable: false,
        });
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result.unwrap_err().errno, errno::ENOSPC);
    assert_eq!(&read(&mut store, a, 0, 4096).2[..], &pattern(4096, 1)[..]);
}

#[test]
fn small_journal_keeps_working_through_many_flushes() {
    let mut store = open(formatted(16 << 20, 64 << 10, 9));
    for round in 0..200u32 {
        let o = oid(u64::from(round % 7));
        write(
            &mut store,
            o,
            (round % 32) * 4096,
            pattern(4096, round as u8),
        );
    }
    for round in 200 - 32..200u32 {
        let o = oid(u64::from(round % 7));
        let (_, _, data) = read(&mut store, o, (round % 32) * 4096, 4096);
        let newest = (0..200u32)
            .rev()
            .find(|r| r % 7 == round % 7 && r % 32 == round % 32)
            .unwrap();
        assert_eq!(&data[..], &pattern(4096, newest as u8)[..]);
    }
    assert!(store.stats().flush_batches > 0);
}

#[test]
fn bad_devices_fail_to_open_with_one_clear_message() {
    let blank = SimDisk::new(16 << 20, 1);
    let error = Blockstore::open(blank, BlockstoreConfig::default())
        .err()
        .unwrap();
    assert!(
        matches!(error, BlockstoreError::BadSuperblock(_)),
        "{error}"
    );
    assert!(error.to_string().contains("vitastor-disk prepare"));

    let disk = formatted(16 << 20, 1 << 20, 2);
    let config = BlockstoreConfig {
        block_size: 1 << 20,
        ..BlockstoreConfig::default()
    };
    let error = Blockstore::open(disk, config).err().unwrap();
    assert!(
        error.to_string().contains("block_size 131072") && error.to_string().contains("1048576"),
        "{error}"
    );

    let mut disk = formatted(16 << 20, 1 << 20, 3);
    disk.flip_bit(8, 0); // format version
    let error = Blockstore::open(disk, BlockstoreConfig::default())
        .err()
        .unwrap();
    assert!(error.to_string().contains("checksum"), "{error}");
}

#[test]
fn a_failing_disk_stops_changes_but_keeps_reads() {
    let mut store = open(formatted(32 << 20, 1 << 20, 11));
    let a = oid(1);
    write(&mut store, a, 0, pattern(BLOCK as usize, 1));
    write(&mut store, a, 4096, pattern(4096, 2));
    store.run(Op::Sync).unwrap();
    store.sim_disk_mut().fail_writes_from = 0;
    let failed = store.run(Op::Write {
        oid: a,
        version: 0,
        offset: 8192,
        data: pattern(4096, 3),
        stable: true,
    });
    assert_eq!(failed.unwrap_err().errno, errno::EIO);
    store.sim_disk_mut().fail_writes_from = u64::MAX;
    // Even with the disk back, this store refuses changes until it is reopened (replay
    // decides what the failed write left behind).
    let refused = store.run(Op::Write {
        oid: oid(2),
        version: 0,
        offset: 0,
        data: pattern(4096, 4),
        stable: true,
    });
    assert_eq!(refused.unwrap_err().errno, errno::EIO);
    assert!(refused_message_is_clear(
        store.run(Op::Delete { oid: a, version: 0 })
    ));
    let (version, _, data) = read(&mut store, a, 0, 8192);
    assert_eq!(version, 2);
    assert_eq!(&data[..4096], &pattern(BLOCK as usize, 1)[..4096]);
    assert_eq!(&data[4096..], &pattern(4096, 2)[..]);
    // After a restart the store works again and the acknowledged data is there.
    let mut store = open(store.into_disk().crash(1));
    assert_eq!(
        &read(&mut store, a, 4096, 4096).2[..],
        &pattern(4096, 2)[..]
    );
    write(&mut store, a, 8192, pattern(4096, 5));
}

fn refused_message_is_clear(result: Result<OpOutput, vitastor_osd::blockstore::OpError>) -> bool {
    matches!(result, Err(error) if error.errno == errno::EIO && error.message.contains("stopped accepting changes"))
}

#[test]
fn list_returns_one_pg_with_stable_flags() {
    use vitastor_proto::placement::pg_of_stripe;
    let mut store = open(formatted(32 << 20, 1 << 20, 12));
    let pg_count = 4;
    let pg_stripe_size = u64::from(BLOCK);
    for n in 0..12u64 {
        let stable = n % 3 != 0;
        store
            .run(Op::Write {
                oid: oid(n),
                version: 0,
                offset: 0,
                data: pattern(4096, n as u8),
                stable,
            })
            .unwrap();
    }
    // Another pool's inode in the same stripes must not show up with an inode range filter.
    let other = ObjectId {
        inode: 2 << 48 | 1,
        stripe: 0,
    };
    store
        .run(Op::Write {
            oid: other,
            version: 0,
            offset: 0,
            data: pattern(4096, 99),
            stable: true,
        })
        .unwrap();
    store.flush_all().unwrap();
    for pg in 1..=pg_count {
        let listed = store.list(pg, pg_count, pg_stripe_size, 1 << 48, (2 << 48) - 1);
        let expected: Vec<u64> = (0..12u64)
            .filter(|n| pg_of_stripe(oid(*n).stripe, pg_stripe_size, pg_count).get() == pg)
            .collect();
        assert_eq!(
            listed.iter().map(|v| v.oid).collect::<Vec<_>>(),
            expected.iter().map(|n| oid(*n)).collect::<Vec<_>>()
        );
        for version in &listed {
            let n = version.oid.stripe / u64::from(BLOCK);
            // Unstable versions stay journaled (not flushed) and are listed as unstable.
            assert_eq!(version.stable, n % 3 != 0, "{version:?}");
        }
    }
}

/// Listings go through a per-PG index built on the first listing of a pool (see
/// `blockstore/pg_index.rs`); every listing is checked against a scan of all objects in
/// debug builds. Here: objects written after the index exists, deleted, purged,
/// flushed, in two pools, and a pg_count change, each followed by listings of every PG.
#[test]
fn the_pg_index_lists_what_a_scan_finds_through_changes() {
    use vitastor_proto::placement::pg_of_stripe;
    let mut store = open(formatted(64 << 20, 2 << 20, 21));
    let stripe = u64::from(BLOCK);
    let object = |pool: u64, n: u64| ObjectId {
        inode: pool << 48 | 1,
        stripe: n * stripe,
    };
    let list_all = |store: &Blockstore<SimDisk>, pg_count: u32| -> usize {
        let mut total = 0;
        for pool in 1..=2u64 {
            for pg in 1..=pg_count {
                let listed = store.list(
                    pg,
                    pg_count,
                    stripe,
                    pool << 48,
                    (pool << 48) | ((1 << 48) - 1),
                );
                for v in &listed {
                    assert_eq!(pg_of_stripe(v.oid.stripe, stripe, pg_count).get(), pg);
                }
                total += listed.len();
            }
        }
        total
    };
    for n in 0..8 {
        write(&mut store, object(1, n), 0, pattern(4096, n as u8));
    }
    assert_eq!(list_all(&store, 4), 8);
    // New objects after the index was built, in both pools.
    for n in 8..16 {
        write(&mut store, object(1, n), 0, pattern(4096, n as u8));
        write(&mut store, object(2, n), 0, pattern(4096, n as u8));
    }
    assert_eq!(list_all(&store, 4), 24);
    // Deletes leave tombstones (listed); purges remove objects (pruned from the index).
    for n in 0..4 {
        store
            .run(Op::Delete {
                oid: object(1, n),
                version: 0,
            })
            .unwrap();
    }
    store.flush_all().unwrap();
    list_all(&store, 4);
    for n in 0..4 {
        let version = store.object_version(&object(1, n));
        store
            .run(Op::Purge {
                oid: object(1, n),
                version,
            })
            .unwrap();
    }
    store.flush_all().unwrap();
    assert_eq!(list_all(&store, 4), 20);
    // Objects rewritten again and again, flushed in between.
    for round in 0..50u8 {
        write(&mut store, object(1, 5), 0, pattern(4096, round));
        if round % 10 == 0 {
            store.flush_all().unwrap();
        }
    }
    list_all(&store, 4);
    // Another pg_count: the pool's index is rebuilt.
    list_all(&store, 7);
    write(&mut store, object(1, 3), 0, pattern(4096, 3));
    assert_eq!(list_all(&store, 7), list_all(&store, 4));
}

#[test]
fn a_failed_fsync_fails_its_group_and_every_later_sync() {
    let mut store = open(formatted(16 << 20, 1 << 20, 7));
    store.sim_disk_mut().fail_fsyncs = true;
    // Writes and syncs in flight together: the syncs share group fsyncs.
    let mut syncs = Vec::new();
    for i in 0..4u64 {
        store.submit(Op::Write {
            oid: oid(i),
            version: 0,
            offset: 0,
            data: pattern(4096, i as u8),
            stable: true,
        });
        syncs.push(store.submit(Op::Sync));
    }
    let mut failed = Vec::new();
    while failed.len() < syncs.len() {
        store.poll(true).expect("poll");
        let mut done = Vec::new();
        store.take_completions(&mut done);
        for completion in done.into_iter().filter(|c| syncs.contains(&c.id)) {
            match completion.result {
                Err(error) if error.errno == errno::EIO => failed.push(completion.id),
                other => panic!("a sync over a failed fsync must fail: {other:?}"),
            }
        }
    }
    // Linux may report the next fsync as a success although the failed writeback is
    // lost: a later sync must not promise anything either.
    store.sim_disk_mut().fail_fsyncs = false;
    assert!(matches!(store.run(Op::Sync), Err(error) if error.errno == errno::EIO));
}
