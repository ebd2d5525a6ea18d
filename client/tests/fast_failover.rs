//! Fast failure detection with real processes: a crashed primary (`kill -9`) and a frozen
//! one (SIGSTOP) lose their etcd lease long before its TTL, because their peers and the
//! client revoke it (connection refused; no PING answer). Client writes keep completing
//! through the failover and every acknowledged write reads back, also after the frozen
//! OSD resumes.
//!
//! The SIGSTOP test also needs a resumed OSD to leave alone the `/pg/state` keys that its
//! successors created (a lease-conditional release): without it the resumed OSD deletes
//! them and those PGs stay unserved.
//!
//! The OSDs run with the default lease TTL (15 s); the bounds asserted are generous (half
//! the TTL); how fast it really is belongs to bench-failover.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vitastor_client::{Client, ClientOptions, Image};
use vitastor_testkit::{wait_for, LocalCluster};

const POOLS: &str = r#"{"1":{"name":"p","scheme":"replicated","pg_size":2,"pg_minsize":1,"pg_count":8,"failure_domain":"osd"}}"#;
const PGS: usize = 8;
/// `--etcd_report_interval 5` gives Vitastor's lease TTL of 15 s.
const TTL: Duration = Duration::from_secs(15);

fn pattern(offset: u64, round: u64) -> Vec<u8> {
    (0..4096u64)
        .map(|i| (i ^ offset.wrapping_mul(31) ^ round.wrapping_mul(7)) as u8)
        .collect()
}

/// Writers that keep overwriting one 4 KiB block per object (so every PG gets load) until
/// stopped, each recording the last acknowledged round of its blocks.
struct Load {
    runtime: tokio::runtime::Runtime,
    image: Image,
    stop: Arc<AtomicBool>,
    completed: Arc<AtomicU64>,
    acknowledged: Arc<Mutex<BTreeMap<u64, u64>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(cluster: &LocalCluster, writers: u64) -> Load {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let client = runtime
            .block_on(Client::connect(ClientOptions::new(&cluster.etcd.address)))
            .unwrap();
        let image = runtime.block_on(client.open_image("img")).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let completed = Arc::new(AtomicU64::new(0));
        let acknowledged = Arc::new(Mutex::new(BTreeMap::new()));
        let tasks = (0..writers)
            .map(|writer| {
                let (image, stop) = (image.clone(), stop.clone());
                let (completed, acknowledged) = (completed.clone(), acknowledged.clone());
                runtime.spawn(async move {
                    let mut round = 0;
                    while !stop.load(Ordering::SeqCst) {
                        round += 1;
                        for object in (writer..64).step_by(writers as usize) {
                            let offset = object * 131072 + (object % 32) * 4096;
                            image
                                .write(offset, &pattern(offset, round))
                                .await
                                .expect("writes complete through the failover");
                            acknowledged.lock().unwrap().insert(offset, round);
                            completed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        Load {
            runtime,
            image,
            stop,
            completed,
            acknowledged,
            tasks,
        }
    }

    fn completed(&self) -> u64 {
        self.completed.load(Ordering::SeqCst)
    }

    /// Waits until `count` more writes complete.
    fn wait_progress(&self, count: u64, timeout: Duration) {
        let from = self.completed();
        wait_for("client writes to complete", timeout, || {
            self.completed() >= from + count
        });
    }

    /// Stops the writers and reads every acknowledged block back.
    fn stop_and_verify(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.runtime.block_on(async {
            for task in self.tasks {
                task.await.expect("writer task");
            }
            let acknowledged = self.acknowledged.lock().unwrap().clone();
            assert_eq!(acknowledged.len(), 64);
            for (offset, round) in acknowledged {
                let data = self.image.read(offset, 4096).await.unwrap();
                assert_eq!(data, pattern(offset, round), "block at {offset}");
            }
        });
    }
}

fn start_cluster(name: &str, global: &str) -> LocalCluster {
    let cluster = LocalCluster::start_with(
        name,
        3,
        256 << 20,
        &["--etcd_report_interval", "5"],
        global,
        POOLS,
    );
    cluster.etcd.put(
        "/vitastor/config/inode/1/1",
        r#"{"name":"img","size":67108864}"#,
    );
    cluster.wait_active(1, PGS, Duration::from_secs(60));
    cluster
}

/// The primary of PG 1 in `/pg/config`.
fn primary_of_pg1(cluster: &LocalCluster) -> u64 {
    let config: serde_json::Value =
        serde_json::from_str(&cluster.etcd.get("/vitastor/pg/config").unwrap()).unwrap();
    let primary = &config["items"]["1"]["1"]["primary"];
    primary
        .as_u64()
        .or_else(|| primary.as_str().and_then(|s| s.parse().ok()))
        .expect("PG 1 has a primary")
}

fn pid_of(cluster: &LocalCluster, name: &str) -> i32 {
    let (_, child) = cluster
        .children
        .iter()
        .find(|(n, _)| n == name)
        .expect("the process was started");
    child.id() as i32
}

#[test]
fn a_killed_primary_loses_its_lease_at_once_and_writes_go_on() {
    let mut cluster = start_cluster("fast-failover-kill", r#"{"immediate_commit":"all"}"#);
    let load = Load::start(&cluster, 16);
    load.wait_progress(200, Duration::from_secs(60));

    let victim = primary_of_pg1(&cluster);
    let state_key = format!("/vitastor/osd/state/{victim}");
    assert!(cluster.etcd.get(&state_key).is_some());
    let killed = Instant::now();
    cluster.kill(&format!("osd{victim}"));
    wait_for("the killed OSD's lease to be revoked", TTL / 2, || {
        cluster.etcd.get(&state_key).is_none()
    });
    eprintln!(
        "/osd/state/{victim} gone {:?} after kill -9",
        killed.elapsed()
    );
    // Every PG is served again (by the two others) and writes go on.
    cluster.wait_active(1, PGS, Duration::from_secs(60));
    load.wait_progress(200, Duration::from_secs(60));
    load.stop_and_verify();
}

#[test]
fn a_frozen_primary_loses_its_lease_after_the_ping_timeout_and_writes_go_on() {
    let mut cluster = start_cluster(
        "fast-failover-stop",
        r#"{"immediate_commit":"all","osd_idle_timeout":1,"osd_ping_timeout":1}"#,
    );
    let load = Load::start(&cluster, 16);
    load.wait_progress(200, Duration::from_secs(60));

    let victim = primary_of_pg1(&cluster);
    let name = format!("osd{victim}");
    let pid = pid_of(&cluster, &name);
    let state_key = format!("/vitastor/osd/state/{victim}");
    let stopped = Instant::now();
    // SAFETY: signals a child process this test started (and still owns: it is reaped
    // only by LocalCluster).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    // Idle 1 s + ping 1 s, plus a wide margin; the TTL is 15 s.
    wait_for("the frozen OSD's lease to be revoked", TTL / 2, || {
        cluster.etcd.get(&state_key).is_none()
    });
    eprintln!(
        "/osd/state/{victim} gone {:?} after SIGSTOP",
        stopped.elapsed()
    );
    cluster.wait_active(1, PGS, Duration::from_secs(60));
    load.wait_progress(200, Duration::from_secs(60));

    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    // Whatever the resumed OSD does (stop serving, exit or register again), the cluster
    // keeps serving and nothing acknowledged is lost.
    load.wait_progress(200, Duration::from_secs(60));
    cluster.wait_active(1, PGS, Duration::from_secs(60));
    load.stop_and_verify();
    for other in (1..=3).filter(|&n| n != victim) {
        assert!(
            cluster
                .etcd
                .get(&format!("/vitastor/osd/state/{other}"))
                .is_some(),
            "OSD {other} is still up"
        );
    }
    cluster.kill(&name);
}
