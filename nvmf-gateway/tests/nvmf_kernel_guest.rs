//! The Linux kernel's NVMe/TCP initiator (Debian's nvme-tcp module and nvme-cli) against a
//! `vitastor-nvmf` process, in a TCG guest (the host kernel has no nvme-tcp): `nvme
//! discover`, `connect` with a refused and an allowed host NQN (the latter with header and
//! data digests), O_DIRECT writes and reads of the namespace (4 KiB in the capsule and
//! 1 MiB blocks, which the kernel sends as 128 KiB R2T transfers), `disconnect`; then the
//! host reads the image through the cluster client and finds the guest's data.
//!
//! The cluster and the gateway run on the host; the guest reaches the gateway's
//! 127.0.0.1 listener at 10.0.2.2 (QEMU user networking). The gateway is configured with
//! raw JSON-RPC on its socket (the rpc.py test covers SPDK's client).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command};
use std::time::Duration;
use vitastor_client::{Client, ClientOptions};
use vitastor_testkit::{free_port, guest, sha256_hex, wait_for, LocalCluster};

/// Debian's nvme-cli, copied into the guest with its libraries.
const NVME_CLI: &str = "/usr/sbin/nvme";
const POOLS: &str = r#"{"1":{"name":"testpool","scheme":"replicated","pg_size":1,"pg_minsize":1,"pg_count":4,"failure_domain":"osd"}}"#;
const GLOBAL: &str = r#"{"immediate_commit":"all"}"#;
const IMAGE_SIZE: u64 = 16 << 20;
const NQN: &str = "nqn.2016-06.io.spdk:guest1";
const HOST_OK: &str = "nqn.2014-08.org.nvmexpress:uuid:0f0f0f0f-1111-2222-3333-444444444444";
const HOST_BAD: &str = "nqn.2014-08.org.nvmexpress:uuid:0e0e0e0e-1111-2222-3333-444444444444";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One JSON-RPC call on the gateway's socket; panics on an error reply.
fn call(socket: &std::path::Path, method: &str, params: serde_json::Value) -> serde_json::Value {
    let mut stream = UnixStream::connect(socket).expect("connect the RPC socket");
    let request =
        serde_json::json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1});
    stream
        .write_all(request.to_string().as_bytes())
        .expect("send");
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).expect("reply");
    let reply: serde_json::Value = serde_json::from_str(&line).expect("JSON reply");
    assert!(reply.get("error").is_none(), "{method}: {reply}");
    reply["result"].clone()
}

fn script(port: u16) -> String {
    format!(
        r#"set -u
A="-t tcp -a 10.0.2.2 -s {port}"
nvme discover $A -q {HOST_OK} > /tmp/disc 2>&1
echo "GUEST-RESULT discover_rc=$?"
echo "GUEST-RESULT discover_has_nqn=$(grep -c 'subnqn: *{NQN}' /tmp/disc)"
nvme connect $A -n {NQN} -q {HOST_BAD} > /tmp/bad 2>&1
echo "GUEST-RESULT refused_rc=$?"
nvme connect $A -n {NQN} -q {HOST_OK} --hdr-digest --data-digest > /tmp/ok 2>&1
echo "GUEST-RESULT connect_rc=$?"
cat /tmp/ok
for i in $(seq 1 300); do [ -b /dev/nvme0n1 ] && break; sleep 0.1; done
echo "GUEST-RESULT device=$(ls /dev/nvme0n1 2>/dev/null)"
echo "GUEST-RESULT size=$(cat /sys/block/nvme0n1/size 2>/dev/null)"
echo "GUEST-RESULT model=$(cat /sys/class/nvme/nvme0/model 2>/dev/null | tr -d ' ')"
dd if=/dev/urandom of=/tmp/small bs=4096 count=64 2>/dev/null
dd if=/tmp/small of=/dev/nvme0n1 bs=4096 oflag=direct 2>/dev/null
echo "GUEST-RESULT small_write_rc=$?"
dd if=/dev/urandom of=/tmp/big bs=1M count=4 2>/dev/null
dd if=/tmp/big of=/dev/nvme0n1 bs=1M seek=1 oflag=direct 2>/dev/null
echo "GUEST-RESULT big_write_rc=$?"
dd if=/dev/nvme0n1 of=/tmp/small_back bs=4096 count=64 iflag=direct 2>/dev/null
dd if=/dev/nvme0n1 of=/tmp/big_back bs=1M skip=1 count=4 iflag=direct 2>/dev/null
echo "GUEST-RESULT small=$(sha256sum < /tmp/small | cut -d' ' -f1)"
echo "GUEST-RESULT small_back=$(sha256sum < /tmp/small_back | cut -d' ' -f1)"
echo "GUEST-RESULT big=$(sha256sum < /tmp/big | cut -d' ' -f1)"
echo "GUEST-RESULT big_back=$(sha256sum < /tmp/big_back | cut -d' ' -f1)"
nvme disconnect -n {NQN} > /tmp/disconnect 2>&1
echo "GUEST-RESULT disconnect_rc=$?"
echo "GUEST-RESULT after_disconnect=$(ls /dev/nvme0n1 2>/dev/null)"
dmesg | grep -i nvme | sed 's/^/GUEST-DMESG /'
"#
    )
}

#[test]
fn kernel_nvme_tcp_in_a_guest() {
    let Some(kernel) = guest::kernel_or_skip("kernel_nvme_tcp_in_a_guest") else {
        return;
    };
    if !std::path::Path::new(NVME_CLI).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{NVME_CLI} is missing: run scripts/setup.sh (CI must install nvme-cli)"
        );
        eprintln!("SKIP kernel_nvme_tcp_in_a_guest: {NVME_CLI} is missing (scripts/setup.sh installs nvme-cli)");
        return;
    }
    let cluster = LocalCluster::start("nvmf-guest", 1, GLOBAL, POOLS);
    cluster.wait_active(1, 4, Duration::from_secs(60));
    cluster.etcd.put(
        "/vitastor/config/inode/1/1",
        &format!(r#"{{"name":"testimg","size":{IMAGE_SIZE}}}"#),
    );
    cluster
        .etcd
        .put("/vitastor/index/image/testimg", r#"{"id":1,"pool_id":1}"#);
    let dir = cluster.scratch.0.clone();
    let socket = dir.join("nvmf.sock");
    let _gateway = Killed(
        Command::new(env!("CARGO_BIN_EXE_vitastor-nvmf"))
            .args(["--etcd_address", &cluster.etcd.address])
            .arg("--rpc-socket")
            .arg(&socket)
            .stderr(std::fs::File::create(dir.join("nvmf.log")).expect("log"))
            .spawn()
            .expect("start vitastor-nvmf"),
    );
    wait_for("the RPC socket", Duration::from_secs(30), || {
        UnixStream::connect(&socket).is_ok()
    });
    let port = free_port();
    let listen = serde_json::json!({"trtype": "tcp", "adrfam": "ipv4", "traddr": "127.0.0.1", "trsvcid": port.to_string()});
    call(
        &socket,
        "nvmf_create_transport",
        serde_json::json!({"trtype": "TCP"}),
    );
    call(
        &socket,
        "bdev_vitastor_create",
        serde_json::json!({"name": "vol0", "image": "testimg"}),
    );
    call(
        &socket,
        "nvmf_create_subsystem",
        serde_json::json!({"nqn": NQN, "serial_number": "VITA0001", "model_number": "VitastorGW", "allow_any_host": false}),
    );
    call(
        &socket,
        "nvmf_subsystem_add_ns",
        serde_json::json!({"nqn": NQN, "namespace": {"bdev_name": "vol0", "nsid": 1}}),
    );
    call(
        &socket,
        "nvmf_subsystem_add_host",
        serde_json::json!({"nqn": NQN, "host": HOST_OK}),
    );
    call(
        &socket,
        "nvmf_subsystem_add_listener",
        serde_json::json!({"nqn": NQN, "listen_address": listen}),
    );
    call(
        &socket,
        "nvmf_subsystem_add_listener",
        serde_json::json!({"nqn": "nqn.2014-08.org.nvmexpress.discovery", "listen_address": listen}),
    );

    let initrd = guest::Initramfs::new(&dir, &kernel)
        // crc32c_generic: the digests (nvme-tcp asks the crypto API for "crc32c", a soft
        // dependency modules.dep does not list).
        .modules(&["nvme-tcp", "crc32c_generic", "virtio_pci", "virtio_net"])
        .binary(std::path::Path::new(NVME_CLI), "/bin/nvme")
        .file("/etc/nvme/hostnqn", format!("{HOST_OK}\n").as_bytes())
        .build(&script(port));
    let run = guest::boot(
        &kernel,
        &initrd,
        &["-nic".to_string(), "user,model=virtio-net-pci".to_string()],
        &[],
        Duration::from_secs(300),
        &dir.join("console.log"),
    );
    let console = &run.console;
    assert!(
        !run.timed_out && run.exit == Some(0),
        "the guest failed (exit {:?}, timed out: {}):\n{console}",
        run.exit,
        run.timed_out
    );
    for line in console
        .lines()
        .filter(|l| l.starts_with("GUEST-RESULT") || l.starts_with("GUEST-DMESG"))
    {
        eprintln!("{line}");
    }
    let result = |key: &str| {
        run.result(key)
            .unwrap_or_else(|| panic!("no {key} in the guest's output:\n{console}"))
    };
    assert_eq!(result("discover_rc"), "0", "{console}");
    assert_eq!(result("discover_has_nqn"), "1", "{console}");
    assert_ne!(
        result("refused_rc"),
        "0",
        "a refused host connected:\n{console}"
    );
    assert_eq!(result("connect_rc"), "0", "{console}");
    assert_eq!(result("device"), "/dev/nvme0n1", "{console}");
    assert_eq!(result("size"), (IMAGE_SIZE / 512).to_string(), "{console}");
    assert_eq!(result("model"), "VitastorGW", "{console}");
    assert_eq!(result("small_write_rc"), "0", "{console}");
    assert_eq!(result("big_write_rc"), "0", "{console}");
    assert_eq!(result("small"), result("small_back"), "{console}");
    assert_eq!(result("big"), result("big_back"), "{console}");
    assert_eq!(result("disconnect_rc"), "0", "{console}");
    assert_eq!(result("after_disconnect"), "", "{console}");

    // The data is in the cluster: read the image with the client on the host.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let image = runtime.block_on(async {
        let client = Client::connect(ClientOptions::new(&cluster.etcd.address))
            .await
            .expect("client");
        let image = client.open_image("testimg").await.expect("open");
        image.read(0, 5 << 20).await.expect("read")
    });
    assert_eq!(sha256_hex(&image[..64 * 4096]), result("small"));
    assert_eq!(sha256_hex(&image[1 << 20..5 << 20]), result("big"));
}
