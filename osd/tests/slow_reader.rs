//! Issue 16 item 6: a client that sends requests without reading the replies does not grow
//! the OSD without bound. Past `REPLY_QUEUE_MAX_BYTES` of queued replies the OSD stops
//! reading that connection (checked between socket reads, so the replies to one read's
//! requests can come on top); every reply still arrives once the client reads, and other
//! clients are served meanwhile.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use vitastor_osd::net::{INBOUND_READ_CHUNK_BYTES, REPLY_QUEUE_MAX_BYTES};
use vitastor_proto::wire::request::Rw;
use vitastor_proto::wire::{encode_request, Request, RequestBody, PACKET_SIZE};
use vitastor_testkit::LocalCluster;

/// Resident memory of process `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

fn read_request(id: u64, len: u32) -> Vec<u8> {
    let request = Request {
        id,
        body: RequestBody::Read(Rw {
            inode: 1 << 48 | 1,
            offset: (id % 64) * u64::from(len),
            len,
            ..Rw::default()
        }),
    };
    encode_request(&request, &[]).expect("encode")
}

#[test]
fn a_client_that_never_reads_is_throttled_and_others_are_served() {
    // 1.25 GiB of replies asked for in all.
    const REQUESTS: u64 = 10_000;
    const LEN: u32 = 128 << 10;
    // The documented bound: the 64 MiB queue limit plus the replies to the requests one
    // 256 KiB socket read can bring (bare 128-byte headers: 2048 reads of 128 KiB = 256
    // MiB), plus slack for the process. Without backpressure the OSD grows ~1.25 GiB.
    assert_eq!(
        (REPLY_QUEUE_MAX_BYTES, INBOUND_READ_CHUNK_BYTES, PACKET_SIZE),
        (64 << 20, 256 << 10, 128),
        "the bound below is computed from these"
    );
    let bound_mib: u64 = 64 + 256 + 48;
    let cluster = LocalCluster::start(
        "slow-reader",
        1,
        r#"{"immediate_commit":"all"}"#,
        r#"{"1":{"name":"p","scheme":"replicated","pg_size":1,"pg_minsize":1,"pg_count":1,"failure_domain":"osd"}}"#,
    );
    cluster.etcd.put(
        "/vitastor/config/inode/1/1",
        r#"{"name":"img","size":8388608}"#,
    );
    cluster.wait_active(1, 1, Duration::from_secs(60));
    let state = cluster
        .etcd
        .get("/vitastor/osd/state/1")
        .expect("OSD 1 is up");
    let port = serde_json::from_str::<serde_json::Value>(&state).unwrap()["port"]
        .as_u64()
        .expect("port");
    let pid = cluster
        .children
        .iter()
        .find(|(name, _)| name == "osd1")
        .map(|(_, child)| child.id())
        .expect("osd1 runs");
    let before = rss_kib(pid);
    // ~375 MiB of read replies asked for; the client reads none of them yet.
    let mut greedy = TcpStream::connect(("127.0.0.1", port as u16)).expect("connect");
    greedy
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut sent = 0;
    for id in 0..REQUESTS {
        if greedy.write_all(&read_request(id, LEN)).is_err() {
            break; // the OSD stopped reading us: the socket buffers are full
        }
        sent += 1;
    }
    std::thread::sleep(Duration::from_secs(2));
    let grown_mib = rss_kib(pid).saturating_sub(before) / 1024;
    eprintln!("sent {sent} reads of {LEN} bytes unread; OSD RSS grew {grown_mib} MiB");
    assert!(
        grown_mib < bound_mib,
        "queued replies are bounded: the OSD grew {grown_mib} MiB (bound {bound_mib} MiB)"
    );
    // Another client is served meanwhile.
    let mut other = TcpStream::connect(("127.0.0.1", port as u16)).expect("connect");
    other
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    other.write_all(&read_request(1, 4096)).unwrap();
    let mut header = [0u8; PACKET_SIZE];
    other
        .read_exact(&mut header)
        .expect("the other client gets its reply");
    // Every reply the greedy client asked for arrives once it reads.
    greedy
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut total = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    let expected_min = sent * u64::from(LEN);
    while total < expected_min {
        match greedy.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n as u64,
        }
    }
    assert!(
        total >= expected_min,
        "got {total} bytes of replies for {sent} reads of {LEN}"
    );
}
