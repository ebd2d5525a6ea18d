//! EC and XOR pools (issue 13) through Debian's fio and our engine, against a real
//! three-OSD cluster: writes of 4 KiB to 256 KiB (inside one chunk, across chunks, whole
//! stripes) verify on `ec` and `xor` 2+1 pools; then on the `ec` pool one OSD is killed
//! (the PGs serve degraded: reads rebuild its data chunks), written while it is down,
//! started again (its chunks are rebuilt until every PG is clean), and another OSD is
//! killed: everything written still verifies.

use std::process::Command;
use std::time::Duration;
use vitastor_testkit::{built_library, wait_for, LocalCluster};

const POOLS: &str = r#"{"1":{"name":"ec","scheme":"ec","parity_chunks":1,"pg_size":3,"pg_minsize":2,"pg_count":8,"failure_domain":"osd"},
    "2":{"name":"xor","scheme":"xor","pg_size":3,"pg_minsize":2,"pg_count":8,"failure_domain":"osd"}}"#;

/// Runs fio on image `image` with verify; `only_verify`: check what the same job wrote.
fn fio(cluster: &LocalCluster, image: &str, depth: &str, only_verify: bool) {
    let engine = built_library("vitastor-fio", "libfio_vitastor.so");
    let output = Command::new("fio")
        .args([
            "--name=test",
            &format!("--ioengine=external:{}", engine.display()),
        ])
        .arg(format!("--etcd={}", cluster.etcd.address))
        .arg(format!("--image={image}"))
        .args([
            "--size=16m",
            "--rw=randwrite",
            "--bssplit=4k/40:12k/30:128k/20:256k/10",
        ])
        .arg(format!("--iodepth={depth}"))
        .args(["--verify=crc32c", "--verify_state_save=0", "--do_verify=1"])
        .args(["--verify_fatal=1", "--output-format=json"])
        .args(only_verify.then_some("--verify_only"))
        .output()
        .expect("fio");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "fio on {image} (depth {depth}, verify only {only_verify}): {text}"
    );
    let json = &text[text.find("{\n").expect("fio JSON")..];
    let json = &json[..=json.rfind('}').expect("fio JSON")];
    let report: serde_json::Value = serde_json::from_str(json).expect("fio JSON");
    assert_eq!(report["jobs"][0]["error"], 0, "{text}");
    let read = report["jobs"][0]["read"]["io_bytes"].as_u64().unwrap_or(0);
    assert!(read > 0, "fio read nothing back to verify: {text}");
}

/// Every PG of `pool` is active and degraded (a member is down).
fn degraded(cluster: &LocalCluster, pool: u32) -> bool {
    let states = cluster
        .etcd
        .get_prefix(&format!("/vitastor/pg/state/{pool}/"));
    states.len() == 8
        && states
            .iter()
            .all(|(_, v)| v.contains(r#""active""#) && v.contains(r#""degraded""#))
}

/// Every PG of `pool` is plain `["active"]`.
fn clean(cluster: &LocalCluster, pool: u32) -> bool {
    let states = cluster
        .etcd
        .get_prefix(&format!("/vitastor/pg/state/{pool}/"));
    states.len() == 8
        && states
            .iter()
            .all(|(_, v)| v.contains(r#""state":["active"]"#))
}

#[test]
fn fio_verifies_on_ec_and_xor_pools_through_failures() {
    let mut cluster = LocalCluster::start("fio-ec", 3, r#"{"immediate_commit":"all"}"#, POOLS);
    for pool in [1, 2] {
        cluster.etcd.put(
            &format!("/vitastor/config/inode/{pool}/1"),
            &format!(r#"{{"name":"img{pool}","size":67108864}}"#),
        );
        cluster.wait_active(pool, 8, Duration::from_secs(60));
    }
    for image in ["img1", "img2"] {
        for depth in ["1", "16"] {
            fio(&cluster, image, depth, false);
        }
    }
    // One OSD down: degraded reads rebuild its data chunks; writes go on without it.
    cluster.kill("osd3");
    wait_for("EC PGs degraded", Duration::from_secs(60), || {
        degraded(&cluster, 1)
    });
    fio(&cluster, "img1", "16", true);
    fio(&cluster, "img1", "16", false);
    // Back: its stale chunks are rebuilt until every PG is clean.
    cluster.start_osd("osd3", 3, &[]);
    wait_for("every EC PG clean", Duration::from_secs(90), || {
        clean(&cluster, 1)
    });
    // Another one down: the rebuilt chunks serve.
    cluster.kill("osd1");
    wait_for("EC PGs degraded again", Duration::from_secs(60), || {
        degraded(&cluster, 1)
    });
    fio(&cluster, "img1", "16", true);
}
