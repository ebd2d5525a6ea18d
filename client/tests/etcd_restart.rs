//! etcd crashes (kill -9) and comes back on the same data directory and port, twice,
//! under a client write load: no OSD or monitor exits, the client keeps writing to the
//! OSDs it knows while etcd is down, follows etcd again afterwards (a new image appears),
//! and every acknowledged write reads back. Vitastor covers the same ground in
//! tests/test_etcd_fail.sh.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vitastor_client::{Client, ClientOptions};
use vitastor_testkit::{wait_for, LocalCluster};

const POOLS: &str = r#"{"1":{"name":"p","scheme":"replicated","pg_size":2,"pg_minsize":1,"pg_count":8,"failure_domain":"osd"}}"#;
/// 64 blocks, one per 128 KiB object: 8 per PG.
const BLOCKS: u64 = 64;
/// How long etcd stays down each time (the fault, not a synchronization).
const OUTAGE: Duration = Duration::from_secs(3);

fn pattern(block: u64, round: u64) -> Vec<u8> {
    (0..4096u64)
        .map(|i| (i ^ block.wrapping_mul(31) ^ round.wrapping_mul(7)) as u8)
        .collect()
}

/// The write load: block by block, round after round; records what was acknowledged and
/// when each write completed.
struct Load {
    written: Mutex<BTreeMap<u64, u64>>,
    completions: Mutex<Vec<Instant>>,
    count: AtomicU64,
    stop: AtomicBool,
}

impl Load {
    fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    /// Waits until `more` writes completed after now.
    fn wait_progress(&self, what: &str, more: u64) {
        let target = self.count() + more;
        wait_for(what, Duration::from_secs(60), || self.count() >= target);
    }

    /// The longest time between two completed writes in `[from, to]`.
    fn longest_pause(&self, from: Instant, to: Instant) -> Duration {
        let completions = self.completions.lock().unwrap();
        let inside: Vec<Instant> = completions
            .iter()
            .copied()
            .filter(|t| *t >= from && *t <= to)
            .collect();
        inside
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default()
    }
}

#[test]
fn etcd_kill_9_and_restart_twice_under_load() {
    let mut cluster =
        LocalCluster::start("etcd-restart", 3, r#"{"immediate_commit":"all"}"#, POOLS);
    cluster.etcd.put(
        "/vitastor/config/inode/1/1",
        r#"{"name":"img","size":67108864}"#,
    );
    cluster.wait_active(1, 8, Duration::from_secs(60));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = runtime
        .block_on(Client::connect(ClientOptions::new(&cluster.etcd.address)))
        .unwrap();
    let image = runtime.block_on(client.open_image("img")).unwrap();
    let load = Arc::new(Load {
        written: Mutex::default(),
        completions: Mutex::default(),
        count: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let writer = {
        let load = load.clone();
        let image = image.clone();
        runtime.spawn(async move {
            let mut round = 0;
            while !load.stop.load(Ordering::SeqCst) {
                round += 1;
                for block in 0..BLOCKS {
                    let offset = block * 131072 + (block % 32) * 4096;
                    image
                        .write(offset, &pattern(offset, round))
                        .await
                        .expect("a write completes despite etcd restarts");
                    load.written.lock().unwrap().insert(offset, round);
                    load.completions.lock().unwrap().push(Instant::now());
                    load.count.fetch_add(1, Ordering::SeqCst);
                    if load.stop.load(Ordering::SeqCst) {
                        break;
                    }
                }
            }
        })
    };
    load.wait_progress("writes before the first etcd crash", 100);
    for restart in 1..=2 {
        let killed = Instant::now();
        cluster.etcd.kill();
        // The client keeps writing to the OSDs it knows while etcd is away.
        load.wait_progress("writes while etcd is down", 50);
        let remaining = OUTAGE.saturating_sub(killed.elapsed());
        std::thread::sleep(remaining);
        cluster.etcd.restart();
        let restarted = Instant::now();
        load.wait_progress("writes after etcd is back", 200);
        // Lease renewals and the watches resume: nothing is stopped or frozen.
        wait_for("every PG active again", Duration::from_secs(30), || {
            let states = cluster.etcd.get_prefix("/vitastor/pg/state/1/");
            states.len() == 8 && states.iter().all(|(_, v)| v.contains("\"active\""))
        });
        let exited = cluster.exited();
        assert!(
            exited.is_empty(),
            "exited after etcd restart {restart}: {exited:?}"
        );
        eprintln!(
            "etcd restart {restart}: down {:?}; longest pause between writes: {:?} while down, {:?} from the restart on",
            restarted - killed,
            load.longest_pause(killed, restarted),
            load.longest_pause(restarted, Instant::now()),
        );
    }
    // The client follows etcd again: an image created now can be opened.
    cluster.etcd.put(
        "/vitastor/config/inode/1/2",
        r#"{"name":"after","size":1048576}"#,
    );
    wait_for(
        "the client sees the new image",
        Duration::from_secs(10),
        || runtime.block_on(client.open_image("after")).is_ok(),
    );
    load.stop.store(true, Ordering::SeqCst);
    runtime.block_on(writer).unwrap();
    let written = load.written.lock().unwrap().clone();
    runtime.block_on(async {
        for (&offset, &round) in &written {
            let data = image.read(offset, 4096).await.unwrap();
            assert_eq!(data, pattern(offset, round), "block at {offset}");
        }
    });
    let exited = cluster.exited();
    assert!(exited.is_empty(), "exited: {exited:?}");
    eprintln!(
        "{} writes, all {} blocks verified",
        load.count(),
        written.len()
    );
}
