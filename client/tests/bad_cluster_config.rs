//! Issue 18: a new client facing invalid keys in a real etcd. One invalid pool or inode
//! entry makes only that pool or image unavailable, with an error naming the key and the
//! field; an unparsable `/pg/config` makes requests wait with a logged reason and fail
//! after `client_wait_up_timeout`, and they proceed as soon as the key is valid again;
//! the monitor rewrites a `/pg/config` it cannot parse.

use std::process::Command;
use std::time::{Duration, Instant};
use vitastor_client::{Client, ClientOptions};
use vitastor_testkit::{wait_for, workspace_binary, LocalCluster};

const POOL_1: &str = r#""1":{"name":"p","scheme":"replicated","pg_size":2,"pg_minsize":1,"pg_count":4,"failure_domain":"osd"}"#;
/// Pool 2 has a typo in its scheme.
const POOL_2_TYPO: &str = r#""2":{"name":"typo","scheme":"replicatd","pg_size":2,"pg_minsize":1,"pg_count":4,"failure_domain":"osd"}"#;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn invalid_keys_affect_only_their_pool_image_or_wait() {
    let mut cluster = LocalCluster::start(
        "bad-config",
        2,
        r#"{"immediate_commit":"all"}"#,
        &format!("{{{POOL_1}}}"),
    );
    cluster.wait_active(1, 4, Duration::from_secs(60));
    let etcd = &cluster.etcd;
    etcd.put(
        "/vitastor/config/inode/1/1",
        r#"{"name":"img","size":1048576}"#,
    );
    etcd.put("/vitastor/config/inode/1/2", r#"{"name":"bad","size":"x"}"#);
    etcd.put(
        "/vitastor/config/pools",
        &format!("{{{POOL_1},{POOL_2_TYPO}}}"),
    );
    etcd.put(
        "/vitastor/config/inode/2/1",
        r#"{"name":"img2","size":1048576}"#,
    );
    let runtime = runtime();
    let client = runtime
        .block_on(Client::connect(ClientOptions::new(&etcd.address)))
        .expect("a client starts despite the invalid keys");
    let image = runtime
        .block_on(client.open_image("img"))
        .expect("an image of the valid pool opens");
    runtime
        .block_on(image.write(0, &[7u8; 4096]))
        .expect("and takes writes");
    let bad = runtime.block_on(client.open_image("bad")).unwrap_err();
    let text = bad.to_string();
    assert!(
        text.contains("/config/inode/1/2") && text.contains("size"),
        "{text}"
    );
    let typo = runtime.block_on(client.open_image("img2")).unwrap_err();
    let text = typo.to_string();
    assert!(
        text.contains("/config/pools") && text.contains("pool 2") && text.contains("scheme"),
        "{text}"
    );
    assert!(client.open_inode(2, 1).is_err());

    // An unparsable /pg/config with no monitor to repair it: a new client waits, says
    // why, and fails after its timeout naming the key.
    cluster.kill("mon");
    let etcd = &cluster.etcd;
    let valid = etcd
        .get("/vitastor/pg/config")
        .expect("the monitor wrote a map");
    etcd.put("/vitastor/pg/config", "garbage{");
    let mut options = ClientOptions::new(&etcd.address);
    options.client_wait_up_timeout = Duration::from_secs(2);
    let waiting = runtime
        .block_on(Client::connect(options))
        .expect("connects");
    let image = runtime.block_on(waiting.open_image("img")).expect("opens");
    let started = Instant::now();
    let error = runtime.block_on(image.write(0, &[8u8; 4096])).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(error.to_string().contains("/pg/config"), "{error}");

    // A request waiting when the key is repaired proceeds.
    let image = runtime
        .block_on(
            runtime
                .block_on(Client::connect(ClientOptions::new(&etcd.address)))
                .expect("connects")
                .open_image("img"),
        )
        .expect("opens");
    let pending = runtime.spawn(async move { image.write(4096, &[9u8; 4096]).await });
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!pending.is_finished(), "waits while /pg/config is garbage");
    etcd.put("/vitastor/pg/config", &valid);
    runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(15), pending).await })
        .expect("the write proceeds once /pg/config is valid")
        .expect("joins")
        .expect("and succeeds");

    // A monitor rewrites a /pg/config it cannot parse.
    etcd.put("/vitastor/pg/config", "garbage{");
    let address = cluster.etcd.address.clone();
    cluster.spawn(
        "mon2",
        Command::new(workspace_binary("vitastor-mon"))
            .args(["--etcd_address", &address])
            .args(["--etcd_mon_ttl", "2", "--mon_change_timeout", "100"]),
    );
    wait_for(
        "the monitor rewrites the garbage",
        Duration::from_secs(30),
        || {
            cluster
                .etcd
                .get("/vitastor/pg/config")
                .is_some_and(|v| serde_json::from_str::<serde_json::Value>(&v).is_ok())
        },
    );
}
