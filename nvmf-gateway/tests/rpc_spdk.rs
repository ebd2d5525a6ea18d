//! SPDK's own `rpc.py` (PyPI package `spdk`, installed by scripts/setup.sh as
//! target/spdk-venv/bin/spdk-rpc) drives a `vitastor-nvmf` process on a real cluster (etcd,
//! monitor, one OSD): every RPC of the issue, fail-fast bdev creation, the host ACL seen by
//! an NVMe/TCP host, QoS enforcement, raw JSON-RPC errors and streams, and the
//! configuration restored from etcd after a `kill -9` of the gateway.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vitastor_nvmf::command::{io_op, Status};
use vitastor_nvmf::initiator::{Command as NvmeCommand, HostQueue};
use vitastor_nvmf::pdu::Digests;
use vitastor_testkit::{free_port, wait_for, LocalCluster};

const POOLS: &str = r#"{"1":{"name":"testpool","scheme":"replicated","pg_size":1,"pg_minsize":1,"pg_count":4,"failure_domain":"osd"}}"#;
const GLOBAL: &str = r#"{"immediate_commit":"all"}"#;
const NQN: &str = "nqn.2016-06.io.spdk:vitastor1";
const HOST_OK: &str = "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555";
const HOST_BAD: &str = "nqn.2014-08.org.nvmexpress:uuid:99999999-2222-3333-4444-555555555555";
const NS_UUID: &str = "ceccf520-691e-4b46-9546-34af789907c5";

/// spdk-rpc from setup.sh's venv, or from PATH; None (test skipped) outside CI.
fn spdk_rpc() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/spdk-venv/bin/spdk-rpc");
    if venv.exists() {
        return Some(venv);
    }
    let found = Command::new("sh")
        .args(["-c", "command -v spdk-rpc"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "spdk-rpc is missing: run scripts/setup.sh"
        );
        eprintln!("SKIP: spdk-rpc is missing (run scripts/setup.sh)");
    }
    found
}

/// The gateway process, killed on drop.
struct GatewayProcess {
    child: Child,
    socket: PathBuf,
}

impl GatewayProcess {
    fn start(cluster: &LocalCluster, name: &str) -> GatewayProcess {
        let socket = cluster.scratch.0.join(format!("{name}.sock"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(cluster.scratch.0.join(format!("{name}.log")))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_vitastor-nvmf"))
            .args(["--etcd_address", &cluster.etcd.address])
            .args(["--gateway_name", name])
            .arg("--rpc-socket")
            .arg(&socket)
            .stderr(log)
            .spawn()
            .unwrap();
        let gateway = GatewayProcess { child, socket };
        wait_for("the RPC socket", Duration::from_secs(30), || {
            UnixStream::connect(&gateway.socket).is_ok()
        });
        gateway
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Rpc {
    exe: PathBuf,
    socket: PathBuf,
}

impl Rpc {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        let plugin = Path::new(env!("CARGO_MANIFEST_DIR")).join("rpc_plugin");
        let mut child = Command::new(&self.exe)
            .arg("-s")
            .arg(&self.socket)
            .args(["--plugin", "vitastor_rpc"])
            .args(args)
            .env("PYTHONPATH", plugin)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (success, stdout, stderr) = self.run(args, None);
        assert!(success, "spdk-rpc {args:?} failed:\n{stdout}\n{stderr}");
        stdout
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    fn fails(&self, args: &[&str], message: &str) {
        let (success, stdout, stderr) = self.run(args, None);
        assert!(!success, "spdk-rpc {args:?} should fail");
        assert!(
            stdout.contains(message) || stderr.contains(message),
            "spdk-rpc {args:?}: {stdout}\n{stderr}"
        );
    }
}

/// Sends raw bytes on the RPC socket and reads `replies` newline-ended replies.
fn raw_rpc(socket: &Path, bytes: &[u8], replies: usize) -> Vec<serde_json::Value> {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // In two pieces, split inside a value.
    let half = bytes.len() / 2;
    stream.write_all(&bytes[..half]).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    stream.write_all(&bytes[half..]).unwrap();
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    while text.lines().count() < replies {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the server closed early: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn rw(opcode: u8, slba: u64, blocks: u32) -> NvmeCommand {
    let mut c = NvmeCommand::new(opcode);
    c.nsid = 1;
    c.cdw10 = slba as u32;
    c.cdw12 = blocks - 1;
    c.data_len = blocks * 4096;
    c
}

/// Connects admin + one I/O queue as `host`; Err(status) when Connect is refused.
async fn connect(address: &str, host: &str) -> Result<(HostQueue, HostQueue), Status> {
    let mut admin = HostQueue::open(address, Digests::default()).await.unwrap();
    let c = admin
        .fabrics_connect(0, 31, 0xffff, NQN, host, 0)
        .await
        .unwrap();
    if !c.status.is_success() {
        return Err(c.status);
    }
    admin.property_set(0x14, 1).await.unwrap();
    let mut io = HostQueue::open(address, Digests::default()).await.unwrap();
    let c = io
        .fabrics_connect(1, 127, c.dw0 as u16, NQN, host, 0)
        .await
        .unwrap();
    assert!(c.status.is_success(), "{c:?}");
    Ok((admin, io))
}

#[test]
fn spdk_rpc_py_drives_the_gateway() {
    let Some(exe) = spdk_rpc() else {
        return;
    };
    let cluster = LocalCluster::start("nvmf-rpc", 1, GLOBAL, POOLS);
    cluster.wait_active(1, 4, Duration::from_secs(60));
    cluster.etcd.put(
        "/vitastor/config/inode/1/1",
        r#"{"name":"testimg","size":16777216}"#,
    );
    cluster
        .etcd
        .put("/vitastor/index/image/testimg", r#"{"id":1,"pool_id":1}"#);
    let mut gateway = GatewayProcess::start(&cluster, "gw1");
    let rpc = Rpc {
        exe,
        socket: gateway.socket.clone(),
    };
    let port = free_port().to_string();
    let address = format!("127.0.0.1:{port}");

    let methods = rpc.json(&["rpc_get_methods"]);
    assert!(methods.as_array().unwrap().len() >= 20);
    rpc.ok(&["framework_start_init"]);
    rpc.ok(&["framework_wait_init"]);
    rpc.ok(&["bdev_set_options", "--no-auto-examine"]);
    rpc.ok(&["nvmf_set_crdt", "-t1", "100", "-t2", "100", "-t3", "100"]);
    rpc.ok(&[
        "nvmf_create_transport",
        "-t",
        "TCP",
        "-m",
        "8",
        "-c",
        "8192",
    ]);

    // Fail fast: a missing image and an unreachable cluster fail the call, nothing stays.
    rpc.fails(
        &["bdev_vitastor_create", "-b", "nope", "-i", "noimage"],
        "does not exist",
    );
    let started = Instant::now();
    rpc.fails(
        &[
            "bdev_vitastor_create",
            "-b",
            "nope",
            "-i",
            "testimg",
            "--etcd-address",
            "127.0.0.1:1",
        ],
        "cannot connect",
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(rpc.json(&["bdev_get_bdevs"]), serde_json::json!([]));
    rpc.ok(&[
        "bdev_vitastor_create",
        "-b",
        "vol0",
        "-i",
        "testimg",
        "-u",
        NS_UUID,
    ]);
    let bdevs = rpc.json(&["bdev_get_bdevs", "-b", "vol0"]);
    assert_eq!(bdevs[0]["num_blocks"], 4096);
    assert_eq!(bdevs[0]["uuid"], NS_UUID);
    // By pool and inode, read-only.
    rpc.ok(&[
        "bdev_vitastor_create",
        "-b",
        "ro",
        "--pool",
        "1",
        "--inode",
        "1",
        "-r",
    ]);
    let ro = rpc.json(&["bdev_get_bdevs", "-b", "ro"]);
    assert_eq!(ro[0]["supported_io_types"]["write"], false);
    assert_eq!(ro[0]["driver_specific"]["vitastor"]["inode"], 1);
    rpc.ok(&["bdev_vitastor_delete", "ro"]);

    rpc.ok(&[
        "nvmf_create_subsystem",
        NQN,
        "-s",
        "VITASTOR0001",
        "-d",
        "Vitastor gateway",
        "-i",
        "1",
        "-I",
        "32760",
        "-r",
    ]);
    rpc.ok(&[
        "nvmf_subsystem_add_ns",
        NQN,
        "vol0",
        "-n",
        "1",
        "-u",
        NS_UUID,
    ]);
    rpc.ok(&[
        "nvmf_subsystem_add_listener",
        NQN,
        "-t",
        "tcp",
        "-a",
        "127.0.0.1",
        "-s",
        &port,
        "-f",
        "ipv4",
    ]);
    rpc.ok(&[
        "nvmf_subsystem_add_listener",
        "discovery",
        "-t",
        "tcp",
        "-a",
        "127.0.0.1",
        "-s",
        &port,
    ]);
    rpc.ok(&["nvmf_subsystem_add_host", NQN, HOST_OK]);
    rpc.ok(&[
        "nvmf_subsystem_listener_set_ana_state",
        NQN,
        "-n",
        "non_optimized",
        "-t",
        "tcp",
        "-a",
        "127.0.0.1",
        "-s",
        &port,
    ]);
    let subsystems = rpc.json(&["nvmf_get_subsystems"]);
    let ours = subsystems
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["nqn"] == NQN)
        .expect("the subsystem is listed")
        .clone();
    assert_eq!(ours["serial_number"], "VITASTOR0001");
    assert_eq!(ours["allow_any_host"], false);
    assert_eq!(ours["hosts"][0]["nqn"], HOST_OK);
    assert_eq!(ours["namespaces"][0]["uuid"], NS_UUID);
    assert_eq!(ours["listen_addresses"][0]["trsvcid"], port.as_str());
    assert_eq!(ours["min_cntlid"], 1);
    assert_eq!(ours["max_cntlid"], 32760);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        assert_eq!(
            connect(&address, HOST_BAD).await.err(),
            Some(Status::CONNECT_INVALID_HOST)
        );
        let (_admin, mut io) = connect(&address, HOST_OK).await.unwrap();
        let data: Vec<u8> = (0..65536u32).map(|i| (i * 7) as u8).collect();
        let (c, _) = io
            .execute(rw(io_op::WRITE, 8, 16), Some(&data))
            .await
            .unwrap();
        assert!(c.status.is_success(), "{c:?}");
        let (c, back) = io.execute(rw(io_op::READ, 8, 16), None).await.unwrap();
        assert!(c.status.is_success());
        assert_eq!(back, data);
    });
    let stats = rpc.json(&["bdev_get_iostat", "--names", "vol0"]);
    assert_eq!(stats["bdevs"][0]["num_write_ops"], 1);
    assert_eq!(stats["bdevs"][0]["bytes_read"], 65536);

    // QoS: 100 IOPS; 60 reads take at least 0.4 s (a 10-command burst, then 10 ms each).
    rpc.ok(&["bdev_set_qos_limit", "vol0", "--rw-ios-per-sec", "100"]);
    assert_eq!(
        rpc.json(&["bdev_get_bdevs", "-b", "vol0"])[0]["assigned_rate_limits"]["rw_ios_per_sec"],
        100
    );
    runtime.block_on(async {
        let (_admin, mut io) = connect(&address, HOST_OK).await.unwrap();
        let started = Instant::now();
        for i in 0..60 {
            let (c, _) = io.execute(rw(io_op::READ, i, 1), None).await.unwrap();
            assert!(c.status.is_success());
        }
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(400),
            "QoS not enforced: {took:?}"
        );
    });
    rpc.ok(&["bdev_set_qos_limit", "vol0", "--rw-ios-per-sec", "0"]);

    // Raw JSON-RPC: two pretty-printed requests back to back, unknown method, missing
    // field, and a batch.
    let stream = b"{\n  \"jsonrpc\": \"2.0\",\n  \"method\": \"no_such_method\",\n  \"id\": 1\n}{\n  \"jsonrpc\": \"2.0\",\n  \"method\": \"nvmf_create_subsystem\",\n  \"params\": {},\n  \"id\": 2\n}[{\"jsonrpc\":\"2.0\",\"method\":\"framework_wait_init\",\"id\":3},{\"jsonrpc\":\"2.0\",\"method\":\"nvmf_subsystem_add_ns\",\"params\":{\"nqn\":\"x\",\"namespace\":{}},\"id\":4}]";
    let replies = raw_rpc(&gateway.socket, stream, 3);
    assert_eq!(replies[0]["id"], 1);
    assert_eq!(replies[0]["error"]["code"], -32601);
    assert_eq!(replies[1]["id"], 2);
    assert_eq!(replies[1]["error"]["code"], -32602);
    assert!(replies[1]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("nqn"));
    assert_eq!(replies[2][0]["result"], true);
    assert_eq!(replies[2][1]["error"]["code"], -32602);
    assert!(replies[2][1]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("namespace.bdev_name"));
    // rpc.py's own batch mode.
    let (success, stdout, stderr) = rpc.run(
        &["--batch-mode"],
        Some("framework_wait_init\nbdev_get_bdevs\n"),
    );
    assert!(success, "{stdout}{stderr}");
    assert!(stdout.contains("vol0"));

    // kill -9 and restart: the configuration comes back from etcd.
    let _ = gateway.child.kill();
    let _ = gateway.child.wait();
    let stored = cluster
        .etcd
        .get("/vitastor/nvmf/gw1/config")
        .expect("stored");
    assert!(stored.contains(NQN));
    gateway = GatewayProcess::start(&cluster, "gw1");
    let subsystems = rpc.json(&["nvmf_get_subsystems", NQN]);
    assert_eq!(subsystems[0]["hosts"][0]["nqn"], HOST_OK);
    assert_eq!(subsystems[0]["namespaces"][0]["uuid"], NS_UUID);
    runtime.block_on(async {
        let (_admin, mut io) = connect(&address, HOST_OK).await.unwrap();
        let (c, back) = io.execute(rw(io_op::READ, 8, 1), None).await.unwrap();
        assert!(c.status.is_success());
        let expected: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
        assert_eq!(back, expected);
        assert_eq!(
            connect(&address, HOST_BAD).await.err(),
            Some(Status::CONNECT_INVALID_HOST)
        );
    });

    // Tear it all down with the remove/delete calls.
    rpc.ok(&["nvmf_subsystem_remove_host", NQN, HOST_OK]);
    rpc.ok(&["nvmf_subsystem_remove_ns", NQN, "1"]);
    rpc.ok(&[
        "nvmf_subsystem_remove_listener",
        NQN,
        "-t",
        "tcp",
        "-a",
        "127.0.0.1",
        "-s",
        &port,
    ]);
    rpc.ok(&["nvmf_delete_subsystem", NQN]);
    rpc.ok(&["bdev_vitastor_delete", "vol0"]);
    assert_eq!(rpc.json(&["bdev_get_bdevs"]), serde_json::json!([]));
    rpc.fails(&["nvmf_delete_subsystem", NQN], "does not exist");
    drop(gateway);
}
