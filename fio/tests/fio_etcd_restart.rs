//! etcd crashes (kill -9) and comes back on the same data directory and port, twice,
//! while Debian's fio writes through our engine with verify=crc32c: no OSD or monitor
//! exits, fio keeps completing I/O after each restart (its own `--status-interval`
//! reports, timestamped by fio, show it), exits 0 and verifies every block it wrote.
//! Vitastor covers the same ground in tests/test_etcd_fail.sh.

use serde_json::Value;
use std::io::{BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

/// fio running in the background; killed on drop (also when the test fails).
struct Fio {
    child: Child,
    /// Every JSON report fio printed so far (one per second, then the final one).
    reports: Arc<Mutex<Vec<Value>>>,
    /// Set when stdout held something other than JSON reports.
    garbage: Arc<Mutex<Option<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Fio {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// (timestamp_ms, bytes written + bytes read back) of one fio report.
fn progress(report: &Value) -> (u64, u64) {
    let job = &report["jobs"][0];
    let bytes = |dir: &str| job[dir]["io_bytes"].as_u64().unwrap_or(0);
    (
        report["timestamp_ms"].as_u64().unwrap_or(0),
        bytes("write") + bytes("read"),
    )
}

impl Fio {
    fn start(engine: &str, etcd: &str, stderr: std::fs::File) -> Fio {
        let mut child = Command::new("fio")
            .args(["--name=etcdfail", engine, &format!("--etcd={etcd}")])
            .args([
                "--image=fioimg",
                "--rw=randwrite",
                "--bs=4k",
                "--iodepth=16",
            ])
            .arg(format!("--size={SIZE_MB}m"))
            .arg(format!("--loops={LOOPS}"))
            .arg(format!("--rate_iops={RATE_IOPS}"))
            .args(["--verify=crc32c", "--do_verify=1", "--verify_fatal=1"])
            .arg(format!("--verify_backlog={VERIFY_BACKLOG}"))
            .args(["--verify_state_save=0", "--randrepeat=0"])
            .args(["--output-format=json", "--status-interval=1"])
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("fio is not installed (apt install fio); scripts/setup.sh installs it");
        let stdout = child.stdout.take().expect("fio stdout");
        let reports = Arc::new(Mutex::new(Vec::new()));
        let garbage = Arc::new(Mutex::new(None));
        let reader = {
            let (reports, garbage) = (reports.clone(), garbage.clone());
            std::thread::spawn(move || {
                let mut stdout = BufReader::new(stdout);
                let stream =
                    serde_json::Deserializer::from_reader(&mut stdout).into_iter::<Value>();
                for report in stream {
                    match report {
                        Ok(report) => reports.lock().unwrap().push(report),
                        Err(e) => {
                            let mut rest = String::new();
                            let _ = stdout.read_to_string(&mut rest);
                            *garbage.lock().unwrap() = Some(format!("{e}: ...{rest}"));
                            return;
                        }
                    }
                }
            })
        };
        Fio {
            child,
            reports,
            garbage,
            reader: Some(reader),
        }
    }

    fn reports(&self) -> Vec<(u64, u64)> {
        self.reports.lock().unwrap().iter().map(progress).collect()
    }

    /// Whether fio reported I/O completed after `since_ms` (wall clock): two reports,
    /// both generated after it, the later with more bytes done.
    fn progressed_since(&self, since_ms: u64) -> bool {
        let after: Vec<(u64, u64)> = self
            .reports()
            .into_iter()
            .filter(|(t, _)| *t > since_ms)
            .collect();
        match (after.first(), after.last()) {
            (Some(first), Some(last)) => last.1 > first.1,
            _ => false,
        }
    }

    /// The reports as "+ms: written/read" relative to `base_ms`, for failure messages.
    fn history(&self, base_ms: u64) -> String {
        self.reports
            .lock()
            .unwrap()
            .iter()
            .map(|r| {
                let job = &r["jobs"][0];
                format!(
                    "{:+}ms: w {} r {}",
                    r["timestamp_ms"].as_u64().unwrap_or(0) as i64 - base_ms as i64,
                    job["write"]["io_bytes"],
                    job["read"]["io_bytes"]
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().expect("fio try_wait").is_none()
    }
}

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
    let mut fio = Fio::start(
        &format!("--ioengine=external:{}", engine.display()),
        &cluster.etcd.address,
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
