//! The blockstore on a real file through io_uring with O_DIRECT, and the `vitastor-disk`
//! tool on the same kind of file.

use std::path::{Path, PathBuf};
use std::process::Command;
use vitastor_osd::blockstore::prepare::prepare;
use vitastor_osd::blockstore::uring::UringDisk;
use vitastor_osd::blockstore::{
    AlignedBuf, Blockstore, BlockstoreConfig, FormatOptions, Op, OpOutput,
};
use vitastor_proto::ObjectId;

/// A file in cargo's per-test temp dir (a real filesystem: tmpfs has no O_DIRECT).
fn data_file(name: &str, size: u64) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let file = std::fs::File::create(&path).expect("create data file");
    file.set_len(size).expect("size data file");
    path
}

fn pattern(len: usize, seed: u8) -> AlignedBuf {
    AlignedBuf::from_slice(&(0..len).map(|i| (i as u8) ^ seed).collect::<Vec<u8>>())
}

#[test]
fn uring_write_sync_flush_reopen() {
    let path = data_file("uring-basic.bin", 64 << 20);
    let mut disk = UringDisk::open(&path).expect("open with O_DIRECT");
    prepare(
        &mut disk,
        &FormatOptions {
            journal_size: 4 << 20,
            ..FormatOptions::default()
        },
    )
    .expect("prepare");
    let mut store = Blockstore::open(disk, BlockstoreConfig::default()).expect("open");
    let oid = |n: u64| ObjectId {
        inode: 1 << 48 | 1,
        stripe: n << 17,
    };
    let mut ids = Vec::new();
    // Many writes in flight at once, then one sync.
    for n in 0..64u64 {
        let data = pattern(if n % 2 == 0 { 4096 } else { 128 << 10 }, n as u8);
        ids.push(store.submit(Op::Write {
            oid: oid(n % 16),
            version: 0,
            offset: 0,
            data,
            stable: true,
        }));
    }
    let sync = store.submit(Op::Sync);
    let mut done = Vec::new();
    while done.len() < 65 {
        store.poll(true).unwrap();
        store.take_completions(&mut done);
    }
    assert!(done.iter().all(|c| c.result.is_ok()), "{done:?}");
    assert!(done.iter().any(|c| c.id == sync));
    store.flush_all().unwrap();
    let disk = store.close().unwrap();
    let mut store = Blockstore::open(disk, BlockstoreConfig::default()).expect("reopen");
    for n in 48..64u64 {
        let len = if n % 2 == 0 { 4096 } else { 128 << 10 };
        match store.run(Op::Read {
            oid: oid(n % 16),
            offset: 0,
            len: len as u32,
        }) {
            Ok(OpOutput::Read { data, .. }) => {
                assert_eq!(&data[..], &pattern(len, n as u8)[..], "object {}", n % 16)
            }
            other => panic!("read: {other:?}"),
        }
    }
    drop(store);
    std::fs::remove_file(path).ok();
}

fn vitastor_disk(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vitastor-disk"))
        .args(args)
        .output()
        .expect("run vitastor-disk")
}

#[test]
fn vitastor_disk_prepare_and_dump() {
    let path = data_file("disk-tool.bin", 32 << 20);
    let device = path.to_str().unwrap();
    let out = vitastor_disk(&[
        "prepare",
        "--data_device",
        device,
        "--block_size",
        "128k",
        "--journal_size",
        "2M",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let superblock: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(superblock["block_size"], 131072);
    assert_eq!(superblock["journal_size"], 2 << 20);

    // Put something on it, then dump.
    let mut store =
        Blockstore::open(UringDisk::open(&path).unwrap(), BlockstoreConfig::default()).unwrap();
    let oid = ObjectId {
        inode: 1 << 48 | 9,
        stripe: 0,
    };
    store
        .run(Op::Write {
            oid,
            version: 0,
            offset: 0,
            data: pattern(128 << 10, 1),
            stable: true,
        })
        .unwrap();
    store
        .run(Op::Write {
            oid,
            version: 0,
            offset: 8192,
            data: pattern(4096, 2),
            stable: true,
        })
        .unwrap();
    store.close().unwrap();
    let out = vitastor_disk(&["dump-journal", "--data_device", device]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let journal: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds: Vec<&str> = journal["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["big_write", "small_write"]);
    let out = vitastor_disk(&["dump-meta", "--data_device", device]);
    assert!(out.status.success());
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        meta["entries"].as_array().unwrap().is_empty(),
        "nothing flushed yet"
    );

    // Errors: one line, non-zero exit.
    let blank = data_file("blank.bin", 8 << 20);
    let out = vitastor_disk(&["dump-meta", "--data_device", blank.to_str().unwrap()]);
    assert!(!out.status.success());
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(
        message.contains("vitastor-disk prepare") && message.lines().count() == 1,
        "{message}"
    );
    let out = vitastor_disk(&["prepare", "--data_device", "/nonexistent/x.bin"]);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("/nonexistent/x.bin")
    );
    let out = vitastor_disk(&["prepare", "--data_device", device, "--block_size", "100000"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("block_size"));
    let out = vitastor_disk(&["prepare", "--data_device", device, "--journal_size", "12Q"]);
    assert!(!out.status.success());
    let reopened = Blockstore::open(
        UringDisk::open(&path).unwrap(),
        BlockstoreConfig {
            block_size: 1 << 20,
            ..Default::default()
        },
    );
    assert!(reopened
        .err()
        .unwrap()
        .to_string()
        .contains("block_size 131072"));
    std::fs::remove_file(path).ok();
    std::fs::remove_file(blank).ok();
}

#[test]
fn prepare_over_old_garbage_gives_a_clean_store() {
    // A device that held something else: every byte 0xff. prepare must leave no slot or
    // journal entry that open would take for data or for damage.
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("garbage.bin");
    std::fs::write(&path, vec![0xffu8; 24 << 20]).unwrap();
    let mut disk = UringDisk::open(&path).unwrap();
    prepare(
        &mut disk,
        &FormatOptions {
            journal_size: 1 << 20,
            ..FormatOptions::default()
        },
    )
    .expect("prepare");
    let mut store = Blockstore::open(disk, BlockstoreConfig::default())
        .expect("open after prepare over garbage");
    assert!(store.list(0, 0, 0, 0, u64::MAX).is_empty());
    let oid = ObjectId {
        inode: 1 << 48 | 2,
        stripe: 0,
    };
    store
        .run(Op::Write {
            oid,
            version: 0,
            offset: 4096,
            data: pattern(4096, 7),
            stable: true,
        })
        .unwrap();
    match store.run(Op::Read {
        oid,
        offset: 0,
        len: 8192,
    }) {
        Ok(OpOutput::Read { data, .. }) => {
            assert!(
                data[..4096].iter().all(|b| *b == 0),
                "never written: zeros, not the old garbage"
            );
            assert_eq!(&data[4096..], &pattern(4096, 7)[..]);
        }
        other => panic!("read: {other:?}"),
    }
    store.flush_all().unwrap();
    let store =
        Blockstore::open(store.close().unwrap(), BlockstoreConfig::default()).expect("reopen");
    drop(store);
    std::fs::remove_file(path).ok();
}
