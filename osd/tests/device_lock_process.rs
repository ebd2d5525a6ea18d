//! One OSD per device, with real processes: while `vitastor-osd` runs on a file, a second
//! OSD and `vitastor-disk prepare` on that file are refused with one line naming the device
//! and the holder, and the file is untouched; the superblock remembers which OSD the device
//! belongs to, so another `--osd_num` is refused after a restart too.

mod common;

use common::{wait_for, Cluster, WireClient};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const INODE: u64 = 1 << 48 | 1;
const OBJECTS: u64 = 8;
const BLOCK: u64 = 128 << 10;

/// Kills the child on drop, so a process that unexpectedly keeps running never outlives
/// the test.
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `command` to its end, or kills it after `timeout` and fails. (Its output is a few
/// lines, well within a pipe's buffer.)
fn run(command: &mut Command, timeout: Duration) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut guard = KillOnDrop(Some(child));
    let deadline = Instant::now() + timeout;
    loop {
        let child = guard.0.as_mut().expect("child present until taken");
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{command:?} still runs after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let child = guard.0.take().expect("child present until taken");
    child.wait_with_output().expect("collect output")
}

fn osd(osd_num: u64, device: &Path, etcd_address: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vitastor-osd"));
    command
        .args(["--osd_num", &osd_num.to_string()])
        .args(["--data_device", device.to_str().unwrap()])
        .args(["--etcd_address", etcd_address])
        .args(["--etcd_report_interval", "1"]);
    command
}

fn disk(args: &[&str], device: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vitastor-disk"));
    command
        .args(args)
        .args(["--data_device", device.to_str().unwrap()]);
    command
}

/// The single line a refused command printed; fails if it succeeded or said more.
fn refusal(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(!output.status.success(), "expected a refusal: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line: {stderr}");
    lines[0].to_string()
}

fn superblock_bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("read the device")[..4096].to_vec()
}

fn dumped_osd_num(device: &Path) -> u64 {
    let output = run(&mut disk(&["dump-meta"], device), Duration::from_secs(30));
    assert!(
        output.status.success(),
        "dump-meta: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("dump JSON");
    json["superblock"]["osd_num"]
        .as_u64()
        .expect("osd_num in the superblock JSON")
}

fn pattern(object: u64) -> Vec<u8> {
    (0..4096u64)
        .map(|i| (i.wrapping_mul(31) ^ object.wrapping_mul(97)) as u8)
        .collect()
}

fn check_data(cluster: &Cluster) {
    let address = cluster.osd_address(1).expect("OSD 1 is up");
    let mut client = WireClient::connect(&address).expect("connect to OSD 1");
    for object in 0..OBJECTS {
        let data = client
            .read(INODE, object * BLOCK, 4096)
            .expect("read")
            .expect("read succeeds");
        assert_eq!(data, pattern(object), "object {object}");
    }
}

#[test]
fn a_device_in_use_is_refused_and_remembers_its_osd() {
    let mut cluster = Cluster::start("device-lock", 1);
    let device = cluster.osd_file(1);
    cluster.put(
        "/vitastor/config/pools",
        r#"{"1":{"name":"testpool","scheme":"replicated","pg_size":1,"pg_minsize":1,"pg_count":1,"failure_domain":"osd"}}"#,
    );
    cluster.put(
        "/vitastor/pg/config",
        r#"{"items":{"1":{"1":{"osd_set":[1],"primary":1}}}}"#,
    );
    cluster.start_osd(1);
    cluster.wait_active(&[(1, 1)], Duration::from_secs(60));
    let holder_pid = cluster.osds[0].as_ref().expect("OSD 1 runs").id();
    {
        let address = cluster.osd_address(1).expect("OSD 1 is up");
        let mut client = WireClient::connect(&address).expect("connect to OSD 1");
        for object in 0..OBJECTS {
            assert_eq!(
                client
                    .write(INODE, object * BLOCK, &pattern(object))
                    .unwrap(),
                4096
            );
        }
    }
    // The first start claimed the unnumbered device; a dump reads the live device.
    assert_eq!(dumped_osd_num(&device), 1);
    let superblock = superblock_bytes(&device);
    let in_use = format!(
        "{} is in use by another process (pid {holder_pid}: ",
        device.display()
    );

    // (a) A second OSD with another number on the same file.
    let line = refusal(&run(
        &mut osd(2, &device, &cluster.etcd_address),
        Duration::from_secs(30),
    ));
    assert!(
        line.starts_with(&format!("vitastor-osd: {in_use}")),
        "{line}"
    );
    assert!(line.contains("vitastor-osd --osd_num 1 "), "{line}");

    // (b) prepare on the file is refused and changes nothing.
    let line = refusal(&run(
        &mut disk(&["prepare", "--journal_size", "16M"], &device),
        Duration::from_secs(30),
    ));
    assert!(
        line.starts_with(&format!("vitastor-disk: {in_use}")),
        "{line}"
    );
    assert_eq!(superblock_bytes(&device), superblock, "superblock changed");
    check_data(&cluster);

    // (d) --disable_flock gets past the lock; the superblock's number still refuses it.
    let line = refusal(&run(
        osd(2, &device, &cluster.etcd_address).arg("--disable_flock"),
        Duration::from_secs(30),
    ));
    assert!(!line.contains("in use"), "{line}");
    assert!(
        line.contains(&format!("{} belongs to OSD 1, not 2", device.display())),
        "{line}"
    );
    assert_eq!(superblock_bytes(&device), superblock, "superblock changed");

    // A copy of OSD 1 on another device passes the lock and is refused by etcd.
    let other = cluster.dir.join("other.bin");
    std::fs::File::create(&other)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let output = run(
        &mut disk(&["prepare", "--journal_size", "4M"], &other),
        Duration::from_secs(30),
    );
    assert!(output.status.success());
    let output = run(
        &mut osd(1, &other, &cluster.etcd_address),
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("OSD 1 is already running"), "{stderr}");

    // (c) Stopped (kill -9), the device still belongs to OSD 1.
    cluster.kill_osd(1);
    let line = refusal(&run(
        &mut osd(2, &device, &cluster.etcd_address),
        Duration::from_secs(30),
    ));
    assert!(
        line.contains(&format!("{} belongs to OSD 1, not 2", device.display())),
        "{line}"
    );
    assert_eq!(superblock_bytes(&device), superblock, "superblock changed");

    // OSD 1 itself starts again and serves what it had.
    wait_for("OSD 1's lease to expire", Duration::from_secs(30), || {
        cluster.osd_address(1).is_none()
    });
    cluster.start_osd(1);
    cluster.wait_active(&[(1, 1)], Duration::from_secs(60));
    check_data(&cluster);
}

/// `prepare --osd_num` records the number; an unnumbered device is claimed by the first OSD
/// started on it, durably, before it talks to etcd (none is running here).
#[test]
fn prepare_records_the_osd_num() {
    let scratch = vitastor_testkit::ScratchDir::new("prepare-osd-num");
    let device = scratch.0.join("osd.bin");
    std::fs::File::create(&device)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let no_etcd = format!("127.0.0.1:{}", vitastor_testkit::free_port());
    let prepare = |extra: &[&str]| {
        let mut args = vec!["prepare", "--journal_size", "4M"];
        args.extend_from_slice(extra);
        let output = run(&mut disk(&args, &device), Duration::from_secs(30));
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        json["osd_num"].as_u64().unwrap()
    };

    assert_eq!(prepare(&["--osd_num", "5"]), 5);
    assert_eq!(dumped_osd_num(&device), 5);
    let line = refusal(&run(
        &mut osd(6, &device, &no_etcd),
        Duration::from_secs(30),
    ));
    assert!(
        line.contains(&format!("{} belongs to OSD 5, not 6", device.display())),
        "{line}"
    );

    assert_eq!(prepare(&[]), 0);
    assert_eq!(dumped_osd_num(&device), 0);
    // Fails on etcd, after claiming the device.
    let output = run(&mut osd(6, &device, &no_etcd), Duration::from_secs(60));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("belongs to"), "{stderr}");
    assert_eq!(dumped_osd_num(&device), 6);
    let line = refusal(&run(
        &mut osd(7, &device, &no_etcd),
        Duration::from_secs(30),
    ));
    assert!(line.contains("belongs to OSD 6, not 7"), "{line}");
}
