//! Issue 18: `vitastor-cli rm` while the image is being written, `rm-data` for what a
//! writer re-created after the image was gone, and the image name length limit.

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use vitastor_client::{Client, ClientOptions};
use vitastor_testkit::{wait_for, LocalCluster};

const POOLS: &str = r#"{"1":{"name":"testpool","scheme":"replicated","pg_size":1,"pg_minsize":1,"pg_count":4,"failure_domain":"osd"}}"#;
/// Objects the writer cycles over (128 KiB each).
const OBJECTS: u64 = 32;

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

#[test]
fn rm_refuses_while_written_and_rm_data_removes_leftovers() {
    let cluster = LocalCluster::start("rm-writers", 1, r#"{"immediate_commit":"all"}"#, POOLS);
    cluster.wait_active(1, 4, Duration::from_secs(60));
    let (ok, text) = cli(&cluster, &["create", "-s", "4M", "img"]);
    assert!(ok, "{text}");

    let long = "n".repeat(256);
    let (ok, text) = cli(&cluster, &["create", "-s", "4M", &long]);
    assert!(!ok && text.contains("limit is 255"), "{text}");
    let (ok, text) = cli(&cluster, &["create", "-s", "4M", &long[..255]]);
    assert!(ok, "{text}");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let client = runtime
        .block_on(Client::connect(ClientOptions::new(&cluster.etcd.address)))
        .expect("client");
    let inode = runtime
        .block_on(client.open_image("img"))
        .expect("img")
        .inode;
    // A writer that goes on after the image is gone, as one that opened it by number.
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let writer = {
        let (client, stop, writes) = (client.clone(), stop.clone(), writes.clone());
        runtime.spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let offset = (n % OBJECTS) * 131072;
                client
                    .write(inode, offset, &[n as u8; 4096])
                    .await
                    .expect("write");
                writes.fetch_add(1, Ordering::SeqCst);
                n += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    wait_for("the writer writes", Duration::from_secs(30), || {
        writes.load(Ordering::SeqCst) > 2 * OBJECTS
    });
    let (ok, text) = cli(&cluster, &["rm", "img"]);
    assert!(!ok && text.contains("is being written"), "{text}");
    assert!(
        runtime.block_on(client.open_image("img")).is_ok(),
        "refused: nothing removed"
    );

    // The caller claims the writers are stopped, but one still writes: the image goes,
    // and rm names the command that removes what the writer re-creates (when the writer
    // got a write in between its deletes and its last listing).
    let before = writes.load(Ordering::SeqCst);
    let (ok, text) = cli(&cluster, &["rm", "img", "--writers-stopped"]);
    let during = writes.load(Ordering::SeqCst) - before;
    eprintln!("rm --writers-stopped with {during} writes meanwhile: {text}");
    assert!(ok || text.contains("rm-data --pool 1 --inode 1"), "{text}");
    let after_rm = writes.load(Ordering::SeqCst);
    wait_for("writes after rm", Duration::from_secs(30), || {
        writes.load(Ordering::SeqCst) > after_rm + 2 * OBJECTS
    });
    let left = runtime.block_on(client.list_objects(inode)).expect("list");
    eprintln!("left after rm: {left:?}");
    stop.store(true, Ordering::SeqCst);
    runtime.block_on(writer).expect("writer ends");
    let left = runtime.block_on(client.list_objects(inode)).expect("list");
    assert!(!left.objects.is_empty(), "the writer left data behind");
    let (ok, text) = cli(&cluster, &["rm-data", "--pool", "testpool", "--inode", "1"]);
    assert!(ok, "{text}");
    let left = runtime.block_on(client.list_objects(inode)).expect("list");
    assert!(left.objects.is_empty(), "{left:?}");
    assert!(left.unlisted.is_empty(), "{left:?}");
    eprintln!("{text}");
}
