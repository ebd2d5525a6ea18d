//! Debian's fio loads libfio_vitastor.so as an external engine and passes verify=crc32c
//! for randwrite and randrw at iodepth 1 and 64 against a real three-OSD cluster.

use std::process::Command;
use std::time::Duration;
use vitastor_testkit::{built_library, LocalCluster};

fn fio(engine_arg: &str, etcd: &str, extra: &[&str]) -> (bool, String) {
    let output = Command::new("fio")
        .args(["--name=test", engine_arg, &format!("--etcd={etcd}")])
        .args(["--bs=4k", "--size=16m", "--output-format=json"])
        .args(extra)
        .output()
        .expect("fio");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn fio_verifies_through_the_engine() {
    let cluster = LocalCluster::start(
        "fio-engine",
        3,
        r#"{"immediate_commit":"all"}"#,
        r#"{"1":{"name":"p","scheme":"replicated","pg_size":2,"pg_minsize":1,"pg_count":16,"failure_domain":"osd"}}"#,
    );
    cluster.etcd.put(
        "/vitastor/config/inode/1/1",
        r#"{"name":"fioimg","size":67108864}"#,
    );
    cluster.wait_active(1, 16, Duration::from_secs(60));
    let engine = built_library("vitastor-fio", "libfio_vitastor.so");
    let external = format!("--ioengine=external:{}", engine.display());
    for rw in ["randwrite", "randrw"] {
        for depth in ["1", "64"] {
            let (ok, output) = fio(
                &external,
                &cluster.etcd.address,
                &[
                    "--image=fioimg",
                    &format!("--rw={rw}"),
                    &format!("--iodepth={depth}"),
                    "--verify=crc32c",
                    "--verify_state_save=0",
                    "--do_verify=1",
                    "--verify_fatal=1",
                ],
            );
            assert!(ok, "fio {rw} iodepth {depth}: {output}");
            let json = &output[output.find("{\n").expect("fio JSON")..];
            let json = &json[..=json.rfind('}').unwrap()];
            let report: serde_json::Value = serde_json::from_str(json).expect("fio JSON");
            assert_eq!(report["jobs"][0]["error"], 0, "{output}");
            let read_ios = report["jobs"][0]["read"]["io_bytes"].as_u64().unwrap_or(0);
            assert!(read_ios > 0, "fio read nothing back to verify: {output}");
        }
    }
    // The -ioengine=/path form and -pool/-inode.
    let direct = format!("--ioengine={}", engine.display());
    let (ok, output) = fio(
        &direct,
        &cluster.etcd.address,
        &["--pool=1", "--inode=1", "--rw=randread", "--iodepth=4"],
    );
    assert!(ok, "fio -ioengine=/path: {output}");
    // Errors: a missing image and a missing -etcd are reported, not crashed on.
    let (ok, output) = fio(
        &external,
        &cluster.etcd.address,
        &["--image=nope", "--rw=read"],
    );
    assert!(
        !ok && output.contains("image nope does not exist"),
        "{output}"
    );
}
