//! etcd crashes (kill -9) and comes back on the same data directory and port, twice,
//! while Debian's fio writes through our engine with verify=crc32c: no OSD or monitor
//! exits, fio keeps completing I/O after each restart (its own `--status-interval`
//! reports, timestamped by fio, show it), exits 0 and verifies every block it wrote.
//! Vitastor covers the same ground in tests/test_etcd_fail.sh.

mod common;

use common::{now_ms, Fio};
use std::time::{Duration, Instant};
use vitastor_testkit::{built_library, wait_for, LocalCluster};

const POOLS: &str = r#"{"1":{"name":"p","scheme":"replicated","pg_size":2,"pg_minsize":1,"pg_count":16,"failure_domain":"osd"}}"#;
/// How long etcd stays down each time (the fault, not a synchronization).
const OUTAGE: Duration = Duration::from_secs(3);
/// The workload: every loop writes each 4 KiB block of SIZE once in random order at
/// QD16 (reading back and checking every VERIFY_BACKLOG writes), then reads back and
/// checks the rest. The write rate cap makes its length independent of the machine's
/// speed: LOOPS * SIZE / 4 KiB / RATE_IOPS ≈ 25 s, well past the two outages (~12 s).
const SIZE_MB: u64 = 16;
const LOOPS: u64 = 3;
const RATE_IOPS: u64 = 500;
const VERIFY_BACKLOG: u64 = 256;

#[test]
fn fio_verifies_while_etcd_is_killed_and_restarted_twice() {
    let mut cluster = LocalCluster::start(
        "fio-etcd-restart",
        3,
        r#"{"immediate_commit":"all"}"#,
        POOLS,
    );
    cluster.etcd.put(
        "/vitastor/config/inode/1/1",
        r#"{"name":"fioimg","size":67108864}"#,
    );
    cluster.wait_active(1, 16, Duration::from_secs(60));
    let engine = built_library("vitastor-fio", "libfio_vitastor.so");
    let stderr_path = cluster.scratch.0.join("fio.stderr");
    let args: Vec<String> = vec![
        "--name=etcdfail".into(),
        format!("--ioengine=external:{}", engine.display()),
        format!("--etcd={}", cluster.etcd.address),
        "--image=fioimg".into(),
        "--rw=randwrite".into(),
        "--bs=4k".into(),
        "--iodepth=16".into(),
        format!("--size={SIZE_MB}m"),
        format!("--loops={LOOPS}"),
        format!("--rate_iops={RATE_IOPS}"),
        "--verify=crc32c".into(),
        "--do_verify=1".into(),
        "--verify_fatal=1".into(),
        format!("--verify_backlog={VERIFY_BACKLOG}"),
        "--verify_state_save=0".into(),
        "--randrepeat=0".into(),
    ];
    let mut fio = Fio::start(
        &args,
        std::fs::File::create(&stderr_path).expect("fio.stderr"),
    );
    let started = Instant::now();
    wait_for("fio's first writes", Duration::from_secs(30), || {
        fio.reports().iter().any(|(_, bytes)| *bytes > 0)
    });
    for restart in 1..=2 {
        assert!(fio.running(), "fio ended before etcd restart {restart}");
        let killed = Instant::now();
        let killed_ms = now_ms();
        cluster.etcd.kill();
        std::thread::sleep(OUTAGE);
        cluster.etcd.restart();
        let restarted_ms = now_ms();
        // What fio completed while etcd was down (informational: the client keeps
        // serving I/O from the OSDs it knows).
        let during: Vec<u64> = fio
            .reports()
            .into_iter()
            .filter(|(t, _)| *t > killed_ms && *t < restarted_ms)
            .map(|(_, bytes)| bytes)
            .collect();
        eprintln!(
            "etcd restart {restart}: down {:?}, at {:?} into the fio run; {} KiB done while down",
            killed.elapsed(),
            started.elapsed(),
            during
                .last()
                .unwrap_or(&0)
                .saturating_sub(*during.first().unwrap_or(&0))
                >> 10
        );
        // fio's reports 200 ms after the restart answered show more I/O done.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !fio.progressed_since(restarted_ms + 200) {
            assert!(
                Instant::now() < deadline,
                "no fio I/O after etcd restart {restart} (fio running: {}); reports relative to the restart:\n{}",
                fio.running(),
                fio.history(restarted_ms)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let exited = cluster.exited();
        assert!(
            exited.is_empty(),
            "exited after etcd restart {restart}: {exited:?}"
        );
    }
    wait_for("fio to finish", Duration::from_secs(60), || !fio.running());
    let status = fio.child.wait().expect("fio wait");
    if let Some(reader) = fio.reader.take() {
        reader.join().expect("fio stdout reader");
    }
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    eprintln!("fio finished after {:?}", started.elapsed());
    let garbage = fio.garbage.lock().unwrap().clone();
    assert!(garbage.is_none(), "fio stdout: {garbage:?}\n{stderr}");
    assert!(status.success(), "fio: {status}\n{stderr}");
    assert!(
        !stderr.to_lowercase().contains("verify"),
        "fio reported verify errors:\n{stderr}"
    );
    let reports = fio.reports.lock().unwrap().clone();
    let last = reports.last().expect("fio's final report");
    let job = &last["jobs"][0];
    assert_eq!(job["error"], 0, "{last}");
    let written = job["write"]["io_bytes"].as_u64().unwrap_or(0);
    let verified = job["read"]["io_bytes"].as_u64().unwrap_or(0);
    eprintln!(
        "fio: {} reports, {written} bytes written, {verified} bytes read back and verified",
        reports.len()
    );
    assert_eq!(written, (LOOPS * SIZE_MB) << 20, "{last}");
    assert_eq!(
        verified, written,
        "every block written is read back: {last}"
    );
    let exited = cluster.exited();
    assert!(exited.is_empty(), "exited: {exited:?}");
}
