//! vitastor-cli against a real cluster (etcd, monitor, one OSD): image and pool commands,
//! listings with --json, and the one-line errors.

use std::process::Command;
use std::time::Duration;
use vitastor_client::{Client, ClientOptions};
use vitastor_testkit::{free_port, LocalCluster};

const POOLS: &str = r#"{"1":{"name":"testpool","scheme":"replicated","pg_size":1,"pg_minsize":1,"pg_count":4,"failure_domain":"osd"}}"#;

fn cli(cluster: &LocalCluster, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_vitastor-cli"))
        .args(["--etcd_address", &cluster.etcd.address])
        .args(args)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

fn ok(cluster: &LocalCluster, args: &[&str]) -> String {
    let (success, stdout, stderr) = cli(cluster, args);
    assert!(success, "vitastor-cli {args:?}: {stderr}");
    stdout
}

fn fails(cluster: &LocalCluster, args: &[&str], message: &str) {
    let (success, _, stderr) = cli(cluster, args);
    assert!(!success, "vitastor-cli {args:?} should fail");
    assert!(stderr.contains(message), "vitastor-cli {args:?}: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one-line error: {stderr}");
}

#[test]
fn image_and_pool_commands() {
    let cluster = LocalCluster::start("cli", 1, r#"{"immediate_commit":"all"}"#, POOLS);
    cluster.wait_active(1, 4, Duration::from_secs(60));

    ok(&cluster, &["create", "-s", "10M", "-p", "testpool", "img1"]);
    ok(&cluster, &["create", "-s", "1G", "img2"]);
    let list: serde_json::Value = serde_json::from_str(&ok(&cluster, &["ls", "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[0]["name"], "img1");
    assert_eq!(list[0]["size"], 10 << 20);
    assert!(ok(&cluster, &["ls", "-l"]).contains("img2"));

    fails(&cluster, &["create", "-s", "10M", "img1"], "already exists");
    fails(&cluster, &["create", "-s", "10Q", "img3"], "invalid size");
    fails(
        &cluster,
        &["create", "-s", "1000", "img3"],
        "multiple of 4 KiB",
    );
    fails(
        &cluster,
        &["create", "-s", "1G", "-p", "nopool", "img3"],
        "pool \"nopool\" does not exist",
    );
    fails(
        &cluster,
        &["modify", "nothere", "--resize", "1G"],
        "image \"nothere\" does not exist",
    );
    fails(&cluster, &["rm", "nothere"], "does not exist");

    ok(&cluster, &["modify", "img1", "--resize", "20M"]);
    ok(&cluster, &["modify", "img1", "--rename", "img1b"]);
    ok(&cluster, &["modify", "img1b", "--readonly"]);
    let list: serde_json::Value = serde_json::from_str(&ok(&cluster, &["ls", "--json"])).unwrap();
    assert_eq!(list[0]["name"], "img1b");
    assert_eq!(list[0]["size"], 20 << 20);
    assert_eq!(list[0]["readonly"], true);
    fails(&cluster, &["rm", "img1b"], "read-only");
    ok(&cluster, &["modify", "img1b", "--readwrite"]);

    // Data written through the client is gone after rm.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let inode = list[0]["inode_num"].as_u64().unwrap();
    runtime.block_on(async {
        let client = Client::connect(ClientOptions::new(&cluster.etcd.address))
            .await
            .unwrap();
        let image = client.open_image("img1b").await.unwrap();
        image.write(0, &vec![7u8; 1 << 20]).await.unwrap();
        assert_eq!(image.read(4096, 4096).await.unwrap(), vec![7u8; 4096]);
    });
    let removed = ok(&cluster, &["rm", "img1b"]);
    assert!(removed.contains("removed"));
    cluster.etcd.put(
        &format!("/vitastor/config/inode/1/{inode}"),
        r#"{"name":"again","size":1048576}"#,
    );
    runtime.block_on(async {
        let client = Client::connect(ClientOptions::new(&cluster.etcd.address))
            .await
            .unwrap();
        let image = client.open_image("again").await.unwrap();
        assert!(
            image
                .read(0, 1 << 20)
                .await
                .unwrap()
                .iter()
                .all(|&b| b == 0),
            "rm left data behind"
        );
    });

    // Pools.
    ok(
        &cluster,
        &["create-pool", "ecpool", "--ec", "2+1", "-n", "8"],
    );
    fails(
        &cluster,
        &["create-pool", "ecpool", "-s", "2", "-n", "8"],
        "already exists",
    );
    fails(
        &cluster,
        &["create-pool", "bad", "-s", "0", "-n", "8"],
        "pg_size",
    );
    let pools: serde_json::Value =
        serde_json::from_str(&ok(&cluster, &["ls-pools", "--json"])).unwrap();
    let ec = pools
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "ecpool")
        .unwrap()
        .clone();
    assert_eq!(ec["pg_size"], 3);
    assert_eq!(ec["parity_chunks"], 1);
    assert_eq!(ec["pg_minsize"], 2);
    ok(&cluster, &["modify-pool", "ecpool", "-n", "16"]);
    ok(
        &cluster,
        &["modify-pool", "ecpool", "--scrub_interval", "7d"],
    );
    fails(
        &cluster,
        &["modify-pool", "ecpool", "--scrub_interval", "weekly"],
        "scrub_interval",
    );
    let pools: serde_json::Value =
        serde_json::from_str(&ok(&cluster, &["ls-pools", "--json"])).unwrap();
    assert!(pools
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "ecpool" && p["pg_count"] == 16 && p["scrub_interval"] == "7d"));
    fails(&cluster, &["rm-pool", "testpool"], "still has");
    ok(&cluster, &["rm-pool", "ecpool"]);

    // Listings.
    let status: serde_json::Value =
        serde_json::from_str(&ok(&cluster, &["status", "--json"])).unwrap();
    assert_eq!(status["osd_up"], 1);
    let osds: serde_json::Value =
        serde_json::from_str(&ok(&cluster, &["ls-osd", "--json"])).unwrap();
    assert_eq!(osds[0]["osd_num"], 1);
    assert_eq!(osds[0]["state"], "up");
    let pgs: serde_json::Value =
        serde_json::from_str(&ok(&cluster, &["pg-list", "--json", "--pool", "testpool"])).unwrap();
    assert_eq!(pgs.as_array().unwrap().len(), 4);
    assert!(ok(&cluster, &["osd-tree"]).contains("osd.1"));
    assert!(ok(&cluster, &["df"]).contains("testpool"));
    assert!(ok(&cluster, &["status"]).contains("1 / 1 up"));
    // A healthy single-OSD pool: nothing degraded, misplaced, corrupted or inconsistent.
    let described: serde_json::Value =
        serde_json::from_str(&ok(&cluster, &["describe", "--json", "--pool", "testpool"])).unwrap();
    assert_eq!(described, serde_json::json!([]));
    fails(
        &cluster,
        &["describe", "--object-state", "broken"],
        "unknown state",
    );
}

#[test]
fn unreachable_etcd_is_a_one_line_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_vitastor-cli"))
        .args([
            "--etcd_address",
            &format!("127.0.0.1:{}", free_port()),
            "ls",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot reach etcd"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1);
}
