//! vitastor-nbd against a real three-OSD cluster (real etcd, monitor, OSD processes) with
//! real NBD clients: qemu-img, nbdinfo, nbdcopy and fio's nbd engine.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use vitastor_testkit::{wait_for, LocalCluster};

const POOLS: &str = r#"{"1":{"name":"testpool","scheme":"replicated","pg_size":2,"pg_minsize":1,"pg_count":16,"failure_domain":"osd"}}"#;
const GLOBAL: &str = r#"{"immediate_commit":"all"}"#;
const IMAGE_SIZE: u64 = 256 << 20;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).to_string()
}

fn serve(cluster: &LocalCluster, image: &str, socket: &Path) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_vitastor-nbd"))
        .args([
            "serve",
            "--etcd_address",
            &cluster.etcd.address,
            "--image",
            image,
        ])
        .args(["--socket", socket.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(cluster.scratch.0.join("nbd.log")).unwrap())
        .spawn()
        .unwrap();
    wait_for("the NBD socket", Duration::from_secs(20), || {
        socket.exists()
    });
    Server(child)
}

fn random_file(path: &Path, size: u64) {
    use std::io::Write;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for _ in 0..size / 8 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        file.write_all(&state.to_le_bytes()).unwrap();
    }
}

fn same_files(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}

#[test]
fn real_nbd_clients_round_trip_data() {
    let cluster = LocalCluster::start("nbd-clients", 3, GLOBAL, POOLS);
    cluster.etcd.put(
        "/vitastor/config/inode/1/1",
        &format!(r#"{{"name":"testimg","size":{IMAGE_SIZE}}}"#),
    );
    cluster
        .etcd
        .put("/vitastor/index/image/testimg", r#"{"id":1,"pool_id":1}"#);
    cluster.wait_active(1, 16, Duration::from_secs(60));
    let dir = &cluster.scratch.0;
    let socket = dir.join("nbd.sock");
    let _server = serve(&cluster, "testimg", &socket);
    let uri = format!("nbd+unix:///?socket={}", socket.display());

    // nbdinfo sees the size.
    assert_eq!(
        run("nbdinfo", &["--size", &uri]).trim(),
        IMAGE_SIZE.to_string()
    );

    // A never-written image reads as zeros.
    let zeros = dir.join("zeros.bin");
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            &uri,
            zeros.to_str().unwrap(),
        ],
    );
    assert!(std::fs::read(&zeros).unwrap().iter().all(|&b| b == 0));

    // qemu-img convert in and out, byte for byte.
    let source = dir.join("random.bin");
    random_file(&source, IMAGE_SIZE);
    run(
        "qemu-img",
        &[
            "convert",
            "-n",
            "-f",
            "raw",
            "-O",
            "raw",
            source.to_str().unwrap(),
            &uri,
        ],
    );
    let back = dir.join("back.bin");
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            &uri,
            back.to_str().unwrap(),
        ],
    );
    assert!(same_files(&source, &back), "qemu-img round trip differs");

    // nbdcopy both ways (a different pattern in, then out).
    let second = dir.join("second.bin");
    random_file(&second, IMAGE_SIZE);
    std::fs::write(&second, {
        let mut data = std::fs::read(&second).unwrap();
        data.reverse();
        data
    })
    .unwrap();
    run("nbdcopy", &[second.to_str().unwrap(), &uri]);
    let copied = dir.join("copied.bin");
    run("nbdcopy", &[&uri, copied.to_str().unwrap()]);
    assert!(same_files(&second, &copied), "nbdcopy round trip differs");

    // fio's nbd engine with verification, iodepth 16.
    for rw in ["randwrite", "randrw"] {
        let output = run(
            "fio",
            &[
                "--name=verify",
                "--ioengine=nbd",
                &format!("--uri={uri}"),
                &format!("--rw={rw}"),
                "--bs=4k",
                "--iodepth=16",
                "--size=32m",
                "--verify=crc32c",
                "--verify_state_save=0",
                "--do_verify=1",
                "--verify_fatal=1",
                "--output-format=json",
            ],
        );
        let report: serde_json::Value =
            serde_json::from_str(&output[output.find('{').unwrap()..]).unwrap();
        assert_eq!(report["jobs"][0]["error"], 0, "fio {rw}: {output}");
    }
}

#[test]
fn missing_image_and_bad_arguments_are_clear_errors() {
    let cluster = LocalCluster::start("nbd-errors", 1, GLOBAL, POOLS);
    let output = Command::new(env!("CARGO_BIN_EXE_vitastor-nbd"))
        .args([
            "serve",
            "--etcd_address",
            &cluster.etcd.address,
            "--image",
            "nope",
            "--port",
            "1",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("\"nope\" does not exist"));
    // No /dev/nbd* on this machine (when there is, map would try to attach).
    if !Path::new("/dev/nbd0").exists() {
        let output = Command::new(env!("CARGO_BIN_EXE_vitastor-nbd"))
            .args([
                "map",
                "--etcd_address",
                &cluster.etcd.address,
                "--image",
                "x",
            ])
            .output()
            .unwrap();
        assert!(!output.status.success());
        assert!(String::from_utf8_lossy(&output.stderr).contains("no NBD support"));
    }
}
