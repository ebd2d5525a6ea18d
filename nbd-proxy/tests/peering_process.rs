//! Acceptance tests of authoritative peering with real processes: a real etcd, a real
//! `vitastor-mon`, two real `vitastor-osd` processes (pool size 2, `pg_minsize` 1), a real
//! `vitastor-nbd serve` and real NBD clients (nbdcopy for whole-image reads and writes,
//! qemu-io for discard).
//!
//! The sequences are the two of the peering issue:
//! - a stale replica is never promoted: write P1, `kill -9` OSD 2, write P2 (acknowledged by
//!   OSD 1 alone), `kill -9` OSD 1, start OSD 2 alone: every PG stays `incomplete` and a read
//!   does not complete (it must never return P1); start OSD 1: the image reads P2;
//! - a delete missed by a member stays deleted: the same with a discard instead of P2, and
//!   then every replica alone reads the discarded range as zeros;
//! - and `has_degraded` is cleared: after a member returns and recovery finishes, every PG
//!   state is exactly `["active"]`, and the returned member alone serves the new data.
//!
//! OSDs run with `--etcd_report_interval 1` (a 6 s lease); an OSD killed while its peer is
//! up loses its lease at once (the peer's connection is refused and it revokes it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vitastor_testkit::{wait_for, workspace_binary, LocalCluster};

const PG_COUNT: usize = 8;
const POOLS: &str = r#"{"1":{"name":"testpool","scheme":"replicated","pg_size":2,"pg_minsize":1,"pg_count":8,"failure_domain":"osd"}}"#;
const GLOBAL: &str = r#"{"immediate_commit":"all"}"#;
/// 128 objects of 128 KiB: 16 per PG.
const IMAGE_SIZE: u64 = 16 << 20;
const DEADLINE: Duration = Duration::from_secs(60);
/// How long a read of an `incomplete` image is given to (wrongly) complete.
const READ_WINDOW: Duration = Duration::from_secs(5);

/// A child process killed (SIGKILL) and reaped on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Setup {
    cluster: LocalCluster,
    /// The name under which each OSD's current process was started (`LocalCluster::kill`).
    osd_names: [String; 2],
    restarts: u32,
    uri: String,
    _server: Guard,
}

impl Setup {
    fn start(name: &str) -> Setup {
        let cluster = LocalCluster::start(name, 2, GLOBAL, POOLS);
        cluster.etcd.put(
            "/vitastor/config/inode/1/1",
            &format!(r#"{{"name":"img","size":{IMAGE_SIZE}}}"#),
        );
        cluster
            .etcd
            .put("/vitastor/index/image/img", r#"{"id":1,"pool_id":1}"#);
        cluster.wait_active(1, PG_COUNT, DEADLINE);
        let socket = cluster.scratch.0.join("nbd.sock");
        let server = Command::new(env!("CARGO_BIN_EXE_vitastor-nbd"))
            .args(["serve", "--etcd_address", &cluster.etcd.address])
            .args(["--image", "img", "--socket", socket.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(cluster.scratch.0.join("nbd.log")).unwrap())
            .spawn()
            .unwrap();
        let server = Guard(server);
        wait_for("the NBD socket", DEADLINE, || socket.exists());
        Setup {
            cluster,
            osd_names: ["osd1".into(), "osd2".into()],
            restarts: 0,
            uri: format!("nbd+unix:///?socket={}", socket.display()),
            _server: server,
        }
    }

    fn dir(&self) -> &Path {
        &self.cluster.scratch.0
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }

    /// `kill -9` of OSD `num`.
    fn kill_osd(&mut self, num: u64) {
        let name = self.osd_names[num as usize - 1].clone();
        self.cluster.kill(&name);
    }

    /// Starts OSD `num` again on its file (its log goes to `osd<num>-<n>.log`).
    fn start_osd(&mut self, num: u64) {
        self.restarts += 1;
        let name = format!("osd{num}-{}", self.restarts);
        let path = self.file(&format!("osd{num}.bin"));
        let etcd = self.cluster.etcd.address.clone();
        self.cluster.spawn(
            &name,
            Command::new(workspace_binary("vitastor-osd"))
                .args(["--osd_num", &num.to_string()])
                .args(["--data_device", path.to_str().unwrap()])
                .args(["--etcd_address", &etcd])
                .args(["--etcd_report_interval", "1"]),
        );
        self.osd_names[num as usize - 1] = name;
    }

    /// Waits until OSD `num`'s registration (and with it its lease) is gone.
    fn wait_osd_down(&self, num: u64) {
        wait_for(&format!("OSD {num}'s lease to end"), DEADLINE, || {
            self.cluster
                .etcd
                .get(&format!("/vitastor/osd/state/{num}"))
                .is_none()
        });
    }

    /// `(pg, primary, state)` of every PG of pool 1 in `/pg/state`.
    fn pg_states(&self) -> Vec<(u32, u64, Vec<String>)> {
        self.cluster
            .etcd
            .get_prefix("/vitastor/pg/state/1/")
            .into_iter()
            .map(|(key, value)| {
                let pg = key.rsplit('/').next().unwrap().parse().unwrap();
                let value: serde_json::Value =
                    serde_json::from_str(&value).unwrap_or_else(|e| panic!("{key}: {value}: {e}"));
                let state = value["state"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{key}: no state: {value}"))
                    .iter()
                    .map(|s| s.as_str().unwrap().to_string())
                    .collect();
                (pg, value["primary"].as_u64().unwrap(), state)
            })
            .collect()
    }

    /// Waits until every PG of pool 1 has a state for which `want(primary, state)` holds.
    fn wait_states(&self, what: &str, want: impl Fn(u64, &[String]) -> bool) {
        let started = Instant::now();
        let deadline = started + DEADLINE;
        loop {
            let states = self.pg_states();
            if states.len() == PG_COUNT && states.iter().all(|(_, p, s)| want(*p, s)) {
                eprintln!("{what}: after {:?}", started.elapsed());
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; /pg/state: {states:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Copies `source` over the whole image (nbdcopy; it flushes at the end).
    fn write_image(&self, source: &Path) {
        run("nbdcopy", &[source.to_str().unwrap(), &self.uri]);
    }

    /// The whole image, read with nbdcopy.
    fn read_image(&self) -> Vec<u8> {
        let out = self.file("read.bin");
        let _ = std::fs::remove_file(&out);
        run("nbdcopy", &[&self.uri, out.to_str().unwrap()]);
        std::fs::read(&out).unwrap()
    }

    /// A whole-image read that must not complete within [`READ_WINDOW`] (no OSD may serve
    /// it): panics if nbdcopy finishes, saying whether it returned `stale`.
    fn assert_read_blocks(&self, stale: &[u8]) {
        let out = self.file("blocked-read.bin");
        let mut reader = Guard(
            Command::new("nbdcopy")
                .args([&self.uri, out.to_str().unwrap()])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("nbdcopy is not installed (apt install libnbd-bin)"),
        );
        let deadline = Instant::now() + READ_WINDOW;
        while Instant::now() < deadline {
            if let Some(status) = reader.0.try_wait().unwrap() {
                let data = std::fs::read(&out).unwrap_or_default();
                panic!(
                    "a read of an image whose PGs are incomplete completed ({status}); \
                     it returned {} bytes, the stale data: {}",
                    data.len(),
                    data == stale
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Still waiting, as it should: the guard kills it.
    }
}

fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).to_string()
}

/// IMAGE_SIZE pseudo-random bytes (no zero 4 KiB block), a different pattern per seed.
fn pattern(seed: u64) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ seed.wrapping_mul(0x2545_f491_4f6c_dd1d);
    let mut data = Vec::with_capacity(IMAGE_SIZE as usize);
    while (data.len() as u64) < IMAGE_SIZE {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data
}

fn write_pattern(setup: &Setup, name: &str, data: &[u8]) -> PathBuf {
    let path = setup.file(name);
    std::fs::write(&path, data).unwrap();
    setup.write_image(&path);
    path
}

/// Where the first difference is, for a readable failure message.
fn assert_image(actual: &[u8], expected: &[u8], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: image size");
    if let Some(at) = actual.iter().zip(expected).position(|(a, b)| a != b) {
        panic!(
            "{what}: the image differs at byte {at} (object {}): {} bytes differ",
            at / (128 << 10),
            actual.iter().zip(expected).filter(|(a, b)| a != b).count()
        );
    }
}

fn is_active(state: &[String]) -> bool {
    state.first().map(String::as_str) == Some("active")
}

fn exactly_active(state: &[String]) -> bool {
    state == ["active"]
}

fn is_incomplete(state: &[String]) -> bool {
    state.first().map(String::as_str) == Some("incomplete")
}

/// The shared tail of both sequences: OSD 2 (which missed the last change) started alone
/// after OSD 1 died serves nothing, then OSD 1 comes back and everything is active.
fn stale_osd2_alone_then_osd1_back(setup: &mut Setup, stale: &[u8]) {
    setup.kill_osd(1);
    // Nobody is left to see OSD 1's port refuse connections except the NBD server's
    // client: its lease ends by revocation or after the TTL (6 s).
    setup.wait_osd_down(1);
    setup.start_osd(2);
    setup.wait_states("every PG incomplete on OSD 2", |primary, state| {
        primary == 2 && is_incomplete(state)
    });
    setup.assert_read_blocks(stale);
    let states = setup.pg_states();
    assert!(
        states.iter().all(|(_, _, state)| is_incomplete(state)),
        "a PG left incomplete while OSD 1 was down: {states:?}"
    );

    setup.start_osd(1);
    setup.wait_states(
        "every PG exactly active after OSD 1 returned",
        |_, state| exactly_active(state),
    );
}

#[test]
fn a_stale_replica_is_never_promoted() {
    let mut setup = Setup::start("peering-stale");
    let p1 = pattern(1);
    let p2 = pattern(2);
    write_pattern(&setup, "p1.bin", &p1);

    setup.kill_osd(2);
    setup.wait_osd_down(2);
    write_pattern(&setup, "p2.bin", &p2);
    setup.wait_states("every PG active+degraded on OSD 1", |primary, state| {
        primary == 1 && is_active(state) && state.contains(&"degraded".to_string())
    });

    stale_osd2_alone_then_osd1_back(&mut setup, &p1);
    assert_image(&setup.read_image(), &p2, "after OSD 1 returned");
}

#[test]
fn a_delete_missed_by_a_member_stays_deleted() {
    let mut setup = Setup::start("peering-delete");
    let p1 = pattern(1);
    write_pattern(&setup, "p1.bin", &p1);

    setup.kill_osd(2);
    setup.wait_osd_down(2);
    // Objects 32..80 (4 MiB..10 MiB): 48 whole objects, 6 in every PG.
    let (from, to) = (4u64 << 20, 10u64 << 20);
    run(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            &format!("discard {from} {}", to - from),
            &setup.uri,
        ],
    );
    let mut expected = p1.clone();
    expected[from as usize..to as usize].fill(0);
    assert_image(&setup.read_image(), &expected, "after the discard");

    stale_osd2_alone_then_osd1_back(&mut setup, &p1);
    assert_image(&setup.read_image(), &expected, "after OSD 1 returned");

    // Each replica alone: OSD 2 (OSD 1 killed; OSD 2 sees the refusal and revokes), then
    // OSD 1 (after OSD 2 was a full member again).
    setup.kill_osd(1);
    setup.wait_osd_down(1);
    setup.wait_states("every PG active on OSD 2 alone", |primary, state| {
        primary == 2 && is_active(state)
    });
    assert_image(&setup.read_image(), &expected, "OSD 2 alone");
    setup.start_osd(1);
    setup.wait_states("every PG exactly active with both", |_, state| {
        exactly_active(state)
    });
    setup.kill_osd(2);
    setup.wait_osd_down(2);
    setup.wait_states("every PG active on OSD 1 alone", |primary, state| {
        primary == 1 && is_active(state)
    });
    assert_image(&setup.read_image(), &expected, "OSD 1 alone");
}

#[test]
fn has_degraded_is_cleared_once_a_member_returns() {
    let mut setup = Setup::start("peering-recovery");
    let p1 = pattern(1);
    let p2 = pattern(2);
    write_pattern(&setup, "p1.bin", &p1);

    setup.kill_osd(2);
    setup.wait_osd_down(2);
    write_pattern(&setup, "p2.bin", &p2);
    setup.wait_states("every PG active+degraded on OSD 1", |primary, state| {
        primary == 1 && is_active(state) && state.contains(&"degraded".to_string())
    });
    setup.start_osd(2);
    setup.wait_states(
        "every PG exactly active after OSD 2 returned",
        |_, state| exactly_active(state),
    );
    // The returned member really got P2: it serves it alone.
    setup.kill_osd(1);
    setup.wait_osd_down(1);
    setup.wait_states("every PG active on OSD 2 alone", |primary, state| {
        primary == 2 && is_active(state)
    });
    assert_image(&setup.read_image(), &p2, "OSD 2 alone after recovery");
}
