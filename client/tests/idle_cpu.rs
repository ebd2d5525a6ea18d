//! Issue 18: a client whose etcd is gone and whose OSDs are unreachable, with requests
//! pending, waits with backoff instead of spinning: its process uses next to no CPU, and
//! it tries each OSD once per backoff period however many requests wait for it.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use vitastor_client::{Client, ClientOptions};
use vitastor_testkit::{free_port, Etcd, ScratchDir};

/// User + system CPU time of this whole process so far.
fn process_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct we pass, which lives on this stack.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut usage), 0);
        usage
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

#[test]
fn a_client_without_etcd_or_osds_stays_idle() {
    let scratch = ScratchDir::new("idle-cpu");
    let mut etcd = Etcd::start(&scratch.0);
    // OSD 1 is registered at a port where nothing listens (connects are refused), OSD 2
    // at one that accepts and hangs up at once (the handshake fails); their PGs look
    // active.
    let dead_port = free_port();
    let hang_up = TcpListener::bind("127.0.0.1:0").expect("bind");
    let hang_up_port = hang_up.local_addr().expect("addr").port();
    let accepted = Arc::new(AtomicU64::new(0));
    std::thread::spawn({
        let accepted = accepted.clone();
        move || {
            for stream in hang_up.incoming() {
                accepted.fetch_add(1, Ordering::Relaxed);
                drop(stream);
            }
        }
    });
    etcd.put(
        "/vitastor/config/pools",
        r#"{"1":{"name":"p","scheme":"replicated","pg_size":1,"pg_minsize":1,"pg_count":2,"failure_domain":"osd"}}"#,
    );
    etcd.put(
        "/vitastor/pg/config",
        r#"{"items":{"1":{"1":{"osd_set":[1],"primary":1},"2":{"osd_set":[2],"primary":2}}}}"#,
    );
    for (pg, osd, port) in [(1, 1, dead_port), (2, 2, hang_up_port)] {
        etcd.put(
            &format!("/vitastor/pg/state/1/{pg}"),
            &format!(r#"{{"primary":{osd},"state":["active"],"peers":[{osd}]}}"#),
        );
        etcd.put(
            &format!("/vitastor/osd/state/{osd}"),
            &format!(r#"{{"state":"up","addresses":["127.0.0.1"],"port":{port}}}"#),
        );
    }
    etcd.put(
        "/vitastor/config/inode/1/1",
        r#"{"name":"img","size":2097152}"#,
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let client = runtime
        .block_on(Client::connect(ClientOptions::new(&etcd.address)))
        .expect("client");
    let image = runtime.block_on(client.open_image("img")).expect("img");
    // As fio at iodepth 64 would have them: each request retries on its own. The 128 KiB
    // objects alternate between the two PGs.
    let pending: Vec<_> = (0..64u64)
        .map(|i| {
            let image = image.clone();
            runtime.spawn(async move { image.write(i * 16384, &[1u8; 4096]).await })
        })
        .collect();
    etcd.kill();
    // Let the first retries and the etcd reconnects happen, then measure (IDLE_SETTLE_S=40
    // measures after the etcd connection's keep-alive timeout of 30 s too).
    std::thread::sleep(Duration::from_secs(
        std::env::var("IDLE_SETTLE_S")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3),
    ));
    assert!(
        pending.iter().all(|p| !p.is_finished()),
        "the writes wait for an OSD"
    );
    let before = process_cpu();
    let accepted_before = accepted.load(Ordering::Relaxed);
    let window = Duration::from_secs(4);
    std::thread::sleep(window);
    let used = process_cpu() - before;
    let connects = accepted.load(Ordering::Relaxed) - accepted_before;
    eprintln!("connects to the OSD that hangs up in {window:?}: {connects}");
    // The backoff is at its cap by now: one attempt per 0.5-1 s (jittered), so at most 8;
    // one connect per waiting request would be 32 per period.
    assert!(
        connects <= 10,
        "one connect per OSD per backoff period, not per request: {connects} in {window:?}"
    );
    eprintln!(
        "CPU used in {window:?} without etcd and OSD: {used:?} ({:.2}% of one core)",
        used.as_secs_f64() * 100.0 / window.as_secs_f64()
    );
    // A debug build with 64 requests, each waking about once a second, measures 1-3% of
    // a core here; a spinning retry loop uses a whole core.
    assert!(
        used < window / 20,
        "a waiting client must not spin: {used:?} of CPU in {window:?}"
    );
    for p in pending {
        p.abort();
    }
}
