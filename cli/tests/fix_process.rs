//! `vitastor-cli fix` against a real cluster (etcd, monitor, two OSDs): one object's
//! copies are made to differ at the same version (one member's copy purged and rewritten
//! with other data at the old version, over raw sub-ops as a bug would), a scrub marks it
//! inconsistent, `describe` shows it on both OSDs, and `fix --bad-osds` with the
//! `describe --json` output rewrites the bad copy from the good one: `describe` is empty
//! again and the member that had the bad copy serves the right data alone.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;
use vitastor_client::{Client, ClientOptions};
use vitastor_proto::wire::request::{SecDelete, SecRw};
use vitastor_proto::wire::{encode_request, Reply, Request, RequestBody, PACKET_SIZE};
use vitastor_proto::ObjectId;
use vitastor_testkit::{wait_for, LocalCluster};

const POOLS: &str = r#"{"1":{"name":"testpool","scheme":"replicated","pg_size":2,"pg_minsize":1,"pg_count":1,"failure_domain":"osd"}}"#;
const OBJECT: usize = 128 << 10;

fn cli(cluster: &LocalCluster, args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_vitastor-cli"))
        .args(["--etcd_address", &cluster.etcd.address])
        .args(args)
        .output()
        .expect("run vitastor-cli");
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

/// One sealed sub-op straight to an OSD, as our primaries send them; returns the retval.
fn sub_op(stream: &mut TcpStream, id: u64, body: RequestBody, payload: &[u8]) -> i64 {
    let bytes = encode_request(&Request { id, body }, payload).expect("encodes");
    stream.write_all(&bytes).expect("send");
    let mut header = [0u8; PACKET_SIZE];
    stream.read_exact(&mut header).expect("reply");
    let reply = Reply::decode(&header).expect("a reply");
    assert_eq!(reply.id, id);
    reply.retval
}

fn describe_inconsistent(cluster: &LocalCluster) -> (Vec<u64>, String) {
    let (ok, text) = cli(
        cluster,
        &["describe", "--json", "--object-state", "inconsistent"],
    );
    assert!(ok, "{text}");
    let items: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let mut osds: Vec<u64> = items
        .as_array()
        .expect("a list")
        .iter()
        .map(|i| i["osd_num"].as_u64().expect("osd_num"))
        .collect();
    osds.sort();
    (osds, text)
}

#[test]
fn fix_rewrites_the_copy_named_bad() {
    let mut cluster = LocalCluster::start("fix", 2, r#"{"immediate_commit":"all"}"#, POOLS);
    cluster.wait_active(1, 1, Duration::from_secs(60));
    let (ok, text) = cli(&cluster, &["create", "-s", "1M", "img"]);
    assert!(ok, "{text}");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let client = runtime
        .block_on(Client::connect(ClientOptions::new(&cluster.etcd.address)))
        .expect("client");
    let image = runtime.block_on(client.open_image("img")).expect("img");
    let data: Vec<u8> = (0..OBJECT).map(|i| (i * 7 % 251) as u8).collect();
    runtime.block_on(image.write(0, &data)).expect("write");
    let inode = image.inode;
    let version = *runtime
        .block_on(client.list_objects(inode))
        .expect("listing")
        .objects
        .get(&0)
        .expect("object 0 listed");
    let state = client.state();
    let primary = state.active_primary(1, 1).expect("an active primary");
    let bad = 3 - primary;
    let address = state.osd_address(bad).expect("an address");

    // The bad member's copy becomes other data at the same version.
    let oid = ObjectId { inode, stripe: 0 };
    let mut stream = TcpStream::connect(&address).expect("connect to the OSD");
    for (id, purge) in [(1, false), (2, true)] {
        let del = SecDelete {
            oid,
            version: version + 1,
            purge,
            pg: 1,
            epoch: 0,
        };
        assert_eq!(sub_op(&mut stream, id, RequestBody::SecDelete(del), &[]), 0);
    }
    let rw = SecRw {
        oid,
        version,
        len: 4096,
        pg: 1,
        ..SecRw::default()
    };
    assert!(
        sub_op(
            &mut stream,
            3,
            RequestBody::SecWriteStable(rw),
            &[0xee; 4096]
        ) >= 0
    );

    // A scrub (requested through the history, as Vitastor documents) finds them different.
    let history_key = "/vitastor/pg/history/1/1";
    let mut history: serde_json::Value = cluster
        .etcd
        .get(history_key)
        .map_or(serde_json::json!({}), |h| {
            serde_json::from_str(&h).expect("JSON")
        });
    history["next_scrub"] = 1.into();
    cluster.etcd.put(history_key, &history.to_string());
    let mut described = String::new();
    wait_for(
        "the scrub marks the object inconsistent",
        Duration::from_secs(30),
        || {
            let (osds, text) = describe_inconsistent(&cluster);
            described = text;
            osds == [1, 2]
        },
    );

    let bad_osds = bad.to_string();
    let (ok, text) = cli(
        &cluster,
        &["fix", "--objects", &described, "--bad-osds", &bad_osds],
    );
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!("Removed {inode:#x}:0x0 (part 0) from OSD {bad}")),
        "{text}"
    );
    wait_for("describe is clean", Duration::from_secs(30), || {
        describe_inconsistent(&cluster).0.is_empty()
    });
    assert_eq!(
        runtime
            .block_on(image.read(0, OBJECT as u64))
            .expect("read"),
        data
    );

    // The fixed member alone.
    cluster.kill(&format!("osd{primary}"));
    let read = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), image.read(0, OBJECT as u64)).await
    });
    assert_eq!(read.expect("served within 60 s").expect("read"), data);
}
