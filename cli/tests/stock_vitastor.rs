//! Issue 18 item 7: stock Vitastor tools against our cluster. Runs only when
//! `VITASTOR_BIN=DIR` names a directory with Vitastor's build (`vitastor-cli`,
//! `libfio_vitastor.so`, and `vitastor-mon` or `mon-main.js`); otherwise it prints why it
//! is skipped and passes. Vitastor is built outside this project (never in CI: it is not
//! a registry package); none of its code or build steps are part of this repository.
//!
//! Covered: Vitastor's CLI `create`, `ls`, `df`, `status`, `snap-create`, `rm` (which
//! lists objects with unsealed SEC_LIST), its fio engine with `verify=crc32c`, and its
//! monitor driving our OSDs to all PGs active.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use vitastor_testkit::LocalCluster;

const POOLS: &str = r#"{"1":{"name":"testpool","scheme":"replicated","pg_size":2,"pg_minsize":1,"pg_count":8,"failure_domain":"osd"}}"#;

/// Vitastor's build directory, or `None` after printing why the test is skipped.
fn vitastor_bin() -> Option<PathBuf> {
    let Some(dir) = std::env::var_os("VITASTOR_BIN") else {
        eprintln!("skipped: VITASTOR_BIN is not set (a directory with a Vitastor build)");
        return None;
    };
    let dir = PathBuf::from(dir);
    if !dir.join("vitastor-cli").exists() {
        eprintln!("skipped: {} has no vitastor-cli", dir.display());
        return None;
    }
    Some(dir)
}

/// Runs stock `vitastor-cli` against our etcd; (success, stdout + stderr).
fn stock_cli(bin: &Path, cluster: &LocalCluster, args: &[&str]) -> (bool, String) {
    let output = Command::new(bin.join("vitastor-cli"))
        .args(["--etcd_address", &cluster.etcd.address])
        .args(args)
        .output()
        .expect("run Vitastor's vitastor-cli");
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

fn ok(bin: &Path, cluster: &LocalCluster, args: &[&str]) -> String {
    let (success, text) = stock_cli(bin, cluster, args);
    assert!(success, "Vitastor's vitastor-cli {args:?}: {text}");
    text
}

/// Vitastor's `vitastor-cli` commands and fio engine against our cluster.
#[test]
fn stock_cli_and_fio_against_our_cluster() {
    let Some(bin) = vitastor_bin() else {
        return;
    };
    let cluster = LocalCluster::start("stock-cli", 2, r#"{"immediate_commit":"all"}"#, POOLS);
    cluster.wait_active(1, 8, Duration::from_secs(60));
    ok(
        &bin,
        &cluster,
        &["create", "-s", "64M", "-p", "testpool", "testimg"],
    );
    assert!(ok(&bin, &cluster, &["ls"]).contains("testimg"));
    assert!(ok(&bin, &cluster, &["status"]).contains("osd"));
    let df = ok(&bin, &cluster, &["df", "--json"]);
    let pools: serde_json::Value = serde_json::from_str(&df).expect("df --json");
    let pool = &pools[0];
    // An empty pool is not shown as used (issue 18: the inverted raw_to_usable).
    assert!(pool["used_raw"].as_u64().unwrap_or(0) < 1 << 20, "{df}");
    assert_eq!(pool["raw_to_usable"].as_f64(), Some(2.0), "{df}");

    let engine = bin.join("libfio_vitastor.so");
    if engine.exists() {
        let status = Command::new("fio")
            .args([
                "-thread",
                "-name=verify",
                "-bs=4k",
                "-direct=1",
                "-iodepth=16",
            ])
            .args(["-rw=randwrite", "-size=16M", "-verify=crc32c"])
            .arg(format!("-ioengine={}", engine.display()))
            .arg(format!("-etcd={}/v3", cluster.etcd.address))
            .arg("-image=testimg")
            .status()
            .expect("run fio");
        assert!(status.success(), "Vitastor's fio engine with verify");
    } else {
        eprintln!("fio part skipped: no {}", engine.display());
    }

    ok(&bin, &cluster, &["snap-create", "testimg@snap1"]);
    assert!(ok(&bin, &cluster, &["ls"]).contains("testimg@snap1"));
    // rm lists objects with SEC_LIST (unsealed): it must finish, not hang.
    ok(&bin, &cluster, &["rm", "testimg@snap1"]);
    ok(&bin, &cluster, &["rm", "testimg"]);
    assert!(!ok(&bin, &cluster, &["ls"]).contains("testimg"));
    assert!(cluster.etcd.get("/vitastor/config/inode/1/1").is_none());
}

/// Vitastor's monitor drives our OSDs to every PG active.
#[test]
fn stock_monitor_drives_our_osds() {
    let Some(bin) = vitastor_bin() else {
        return;
    };
    let mut monitor = if bin.join("vitastor-mon").exists() {
        Command::new(bin.join("vitastor-mon"))
    } else if bin.join("mon-main.js").exists() {
        let mut node = Command::new("node");
        node.arg(bin.join("mon-main.js"));
        node
    } else {
        eprintln!(
            "skipped: {} has no vitastor-mon or mon-main.js",
            bin.display()
        );
        return;
    };
    // Our cluster without its monitor: the stock one takes over.
    let mut cluster = LocalCluster::start("stock-mon", 3, r#"{"immediate_commit":"all"}"#, "{}");
    cluster.kill("mon");
    let address = cluster.etcd.address.clone();
    cluster.spawn("stock-mon", monitor.args(["--etcd_address", &address]));
    cluster.etcd.put("/vitastor/config/pools", POOLS);
    cluster.wait_active(1, 8, Duration::from_secs(120));
    let stats = cluster.etcd.get("/vitastor/pool/stats/1");
    eprintln!("stock monitor's pool stats: {stats:?}");
}
