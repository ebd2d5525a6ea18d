//! Multipath: two `vitastor-nvmf` processes export one image under one subsystem NQN with
//! the same namespace identity (nsid, UUID/NGUID, serial, model), disjoint controller-id
//! ranges and ANA reporting (gateway A optimized, B non-optimized). The Linux host in a TCG
//! guest sees one namespace with two paths; while it writes, gateway A is killed with
//! SIGKILL and the writes go on through B. The guest measures the longest write (the
//! failover gap). Gateway A is then restarted, restores its configuration from etcd, and
//! the host's reconnect brings the optimized path back. The host checks every acknowledged
//! block in the image.
//!
//! The guest asks for the kill itself, by connecting to a port the test listens on (the
//! host kills the gateway when the connection arrives), so the kill lands mid-run.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vitastor_client::{Client, ClientOptions};
use vitastor_testkit::{free_port, guest, sha256_hex, wait_for, LocalCluster};

/// Debian's nvme-cli, copied into the guest with its libraries.
const NVME_CLI: &str = "/usr/sbin/nvme";
const POOLS: &str = r#"{"1":{"name":"testpool","scheme":"replicated","pg_size":1,"pg_minsize":1,"pg_count":4,"failure_domain":"osd"}}"#;
const GLOBAL: &str = r#"{"immediate_commit":"all"}"#;
const IMAGE_SIZE: u64 = 16 << 20;
const NQN: &str = "nqn.2016-06.io.spdk:multipath1";
const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:0a0a0a0a-1111-2222-3333-444444444444";
const BDEV_UUID: &str = "5b7e6a1c-3d2f-4e8a-9b1c-0d2e3f4a5b6c";
/// Blocks written one O_DIRECT dd at a time; the kill is asked for after KILL_AT.
const BLOCKS: u32 = 120;
const KILL_AT: u32 = 40;

fn call(socket: &std::path::Path, method: &str, params: serde_json::Value) {
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
}

/// Starts a gateway process (it restores its configuration from etcd, if any) and waits
/// for its RPC socket.
fn spawn_gateway(etcd: &str, dir: &std::path::Path, name: &str) -> Child {
    let socket = dir.join(format!("{name}.sock"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))
        .expect("log");
    let child = Command::new(env!("CARGO_BIN_EXE_vitastor-nvmf"))
        .args(["--etcd_address", etcd])
        .args(["--gateway_name", name])
        .arg("--rpc-socket")
        .arg(&socket)
        .stderr(log)
        .spawn()
        .expect("start vitastor-nvmf");
    wait_for("the RPC socket", Duration::from_secs(30), || {
        UnixStream::connect(&socket).is_ok()
    });
    child
}

/// Starts a gateway and exports the image from it with the shared identity.
fn gateway(
    cluster: &LocalCluster,
    name: &str,
    port: u16,
    cntlids: (u32, u32),
    ana_state: &str,
) -> Child {
    let dir = &cluster.scratch.0;
    let socket = dir.join(format!("{name}.sock"));
    let child = spawn_gateway(&cluster.etcd.address, dir, name);
    let listen = serde_json::json!({"trtype": "tcp", "adrfam": "ipv4", "traddr": "127.0.0.1", "trsvcid": port.to_string()});
    call(
        &socket,
        "nvmf_create_transport",
        serde_json::json!({"trtype": "TCP"}),
    );
    call(
        &socket,
        "bdev_vitastor_create",
        serde_json::json!({"name": "vol0", "image": "testimg", "uuid": BDEV_UUID}),
    );
    call(
        &socket,
        "nvmf_create_subsystem",
        serde_json::json!({"nqn": NQN, "serial_number": "VITAMP01", "model_number": "VitastorGW",
            "allow_any_host": true, "ana_reporting": true,
            "min_cntlid": cntlids.0, "max_cntlid": cntlids.1}),
    );
    call(
        &socket,
        "nvmf_subsystem_add_ns",
        serde_json::json!({"nqn": NQN, "namespace": {"bdev_name": "vol0", "nsid": 1, "uuid": BDEV_UUID}}),
    );
    call(
        &socket,
        "nvmf_subsystem_add_listener",
        serde_json::json!({"nqn": NQN, "listen_address": listen}),
    );
    call(
        &socket,
        "nvmf_subsystem_listener_set_ana_state",
        serde_json::json!({"nqn": NQN, "ana_state": ana_state, "listen_address": listen}),
    );
    child
}

fn script(port_a: u16, port_b: u16, kill_port: u16) -> String {
    format!(
        r#"set -u
nvme connect -t tcp -a 10.0.2.2 -s {port_a} -n {NQN} -q {HOST} || exit 2
nvme connect -t tcp -a 10.0.2.2 -s {port_b} -n {NQN} -q {HOST} || exit 3
for i in $(seq 1 300); do [ -b /dev/nvme0n1 ] && break; sleep 0.1; done
echo "GUEST-RESULT controllers=$(ls /sys/class/nvme-subsystem/nvme-subsys0/ | grep -c '^nvme[0-9]*$')"
echo "GUEST-RESULT heads=$(ls /dev | grep -c '^nvme[0-9]n[0-9]$')"
echo "GUEST-RESULT ana=$(cat /sys/block/nvme0c*n1/ana_state | sort | tr '\n' ' ')"
echo "GUEST-RESULT cntlids=$(cat /sys/class/nvme/nvme*/cntlid | sort -n | tr '\n' ' ')"
dd if=/dev/urandom of=/tmp/data bs=4096 count={BLOCKS} 2>/dev/null
now() {{ cut -d' ' -f1 /proc/uptime | tr -d .; }}
max=0
failed=0
i=0
while [ $i -lt {BLOCKS} ]; do
  t0=$(now)
  dd if=/tmp/data of=/dev/nvme0n1 bs=4096 count=1 skip=$i seek=$i oflag=direct conv=notrunc 2>/dev/null || failed=$((failed+1))
  t1=$(now)
  d=$((t1 - t0)); [ $d -gt $max ] && [ $i -gt {KILL_AT} ] && max=$d
  if [ $i -eq {KILL_AT} ]; then
    echo "GUEST-RESULT before_kill_cs=$max"
    echo kill | nc 10.0.2.2 {kill_port} > /tmp/killed
    echo "GUEST-RESULT killed=$(cat /tmp/killed)"
  fi
  i=$((i+1))
done
echo "GUEST-RESULT failed=$failed"
echo "GUEST-RESULT gap_cs=$max"
dd if=/dev/nvme0n1 of=/tmp/back bs=4096 count={BLOCKS} iflag=direct 2>/dev/null
echo "GUEST-RESULT data=$(sha256sum < /tmp/data | cut -d' ' -f1)"
echo "GUEST-RESULT back=$(sha256sum < /tmp/back | cut -d' ' -f1)"
echo "GUEST-RESULT ana_after=$(cat /sys/block/nvme0c*n1/ana_state 2>/dev/null | sort | tr '\n' ' ')"
echo restart | nc 10.0.2.2 {kill_port} > /tmp/restarted
echo "GUEST-RESULT restarted=$(cat /tmp/restarted)"
# The host reconnects the lost path (reconnect_delay 10 s) to the restored gateway.
for i in $(seq 1 400); do [ "$(cat /sys/class/nvme/nvme0/state)" = live ] && break; sleep 0.1; done
echo "GUEST-RESULT path_a_state=$(cat /sys/class/nvme/nvme0/state)"
echo "GUEST-RESULT ana_restored=$(cat /sys/block/nvme0c*n1/ana_state 2>/dev/null | sort | tr '\n' ' ')"
dd if=/tmp/data of=/dev/nvme0n1 bs=4096 count=16 seek={BLOCKS} oflag=direct 2>/dev/null
echo "GUEST-RESULT write_after_restore_rc=$?"
nvme disconnect -n {NQN} > /dev/null 2>&1
echo "GUEST-RESULT disconnect_rc=$?"
dmesg | grep -i nvme | sed 's/^/GUEST-DMESG /'
"#
    )
}

#[test]
fn multipath_failover_in_a_guest() {
    let Some(kernel) = guest::kernel_or_skip("multipath_failover_in_a_guest") else {
        return;
    };
    if !std::path::Path::new(NVME_CLI).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{NVME_CLI} is missing: run scripts/setup.sh (CI must install nvme-cli)"
        );
        eprintln!("SKIP multipath_failover_in_a_guest: {NVME_CLI} is missing (scripts/setup.sh installs nvme-cli)");
        return;
    }
    let cluster = LocalCluster::start("nvmf-multipath", 1, GLOBAL, POOLS);
    cluster.wait_active(1, 4, Duration::from_secs(60));
    cluster.etcd.put(
        "/vitastor/config/inode/1/1",
        &format!(r#"{{"name":"testimg","size":{IMAGE_SIZE}}}"#),
    );
    cluster
        .etcd
        .put("/vitastor/index/image/testimg", r#"{"id":1,"pool_id":1}"#);
    let (port_a, port_b) = (free_port(), free_port());
    let gateway_a = Arc::new(Mutex::new(Some(gateway(
        &cluster,
        "gw-a",
        port_a,
        (1, 32760),
        "optimized",
    ))));
    let mut gateway_b = gateway(&cluster, "gw-b", port_b, (32761, 65519), "non_optimized");

    // The kill switch: the first connection kills gateway A.
    let kill_listener = TcpListener::bind("127.0.0.1:0").expect("bind the kill port");
    let kill_port = kill_listener.local_addr().expect("address").port();
    // The second connection restarts it: it restores its configuration from etcd.
    let killer = {
        let gateway_a = gateway_a.clone();
        let etcd = cluster.etcd.address.clone();
        let dir = cluster.scratch.0.clone();
        std::thread::spawn(move || {
            if let Ok((mut stream, _)) = kill_listener.accept() {
                if let Some(mut child) = gateway_a.lock().expect("not poisoned").take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                let _ = stream.write_all(b"done\n");
            }
            if let Ok((mut stream, _)) = kill_listener.accept() {
                let mut slot = gateway_a.lock().expect("not poisoned");
                if slot.is_none() {
                    *slot = Some(spawn_gateway(&etcd, &dir, "gw-a"));
                }
                let _ = stream.write_all(b"restarted\n");
            }
        })
    };

    let dir = cluster.scratch.0.clone();
    let initrd = guest::Initramfs::new(&dir, &kernel)
        .modules(&["nvme-tcp", "virtio_pci", "virtio_net"])
        .binary(std::path::Path::new(NVME_CLI), "/bin/nvme")
        .file("/etc/nvme/hostnqn", format!("{HOST}\n").as_bytes())
        .build(&script(port_a, port_b, kill_port));
    let run = guest::boot(
        &kernel,
        &initrd,
        &["-nic".to_string(), "user,model=virtio-net-pci".to_string()],
        &[],
        Duration::from_secs(400),
        &dir.join("console.log"),
    );
    if let Some(mut child) = gateway_a.lock().expect("not poisoned").take() {
        let _ = child.kill();
        let _ = child.wait();
    }
    // Release the kill switch if the guest never used it (both accepts).
    let _ = std::net::TcpStream::connect(("127.0.0.1", kill_port));
    let _ = std::net::TcpStream::connect(("127.0.0.1", kill_port));
    let _ = killer.join();
    if let Some(mut child) = gateway_a.lock().expect("not poisoned").take() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = gateway_b.kill();
    let _ = gateway_b.wait();
    let console = &run.console;
    for line in console
        .lines()
        .filter(|l| l.starts_with("GUEST-RESULT") || l.starts_with("GUEST-DMESG"))
    {
        eprintln!("{line}");
    }
    assert!(
        !run.timed_out && run.exit == Some(0),
        "the guest failed (exit {:?}, timed out: {}):\n{console}",
        run.exit,
        run.timed_out
    );
    let result = |key: &str| {
        run.result(key)
            .unwrap_or_else(|| panic!("no {key} in the guest's output:\n{console}"))
    };
    assert_eq!(result("controllers"), "2", "two paths:\n{console}");
    assert_eq!(result("heads"), "1", "one namespace:\n{console}");
    assert_eq!(result("ana").trim(), "non-optimized optimized", "{console}");
    let cntlids: Vec<u32> = result("cntlids")
        .split_whitespace()
        .map(|c| c.parse().expect("a cntlid"))
        .collect();
    assert!(
        cntlids.len() == 2 && cntlids[0] <= 32760 && cntlids[1] >= 32761,
        "{cntlids:?}"
    );
    assert_eq!(result("killed"), "done", "{console}");
    assert_eq!(
        result("failed"),
        "0",
        "writes failed during failover:\n{console}"
    );
    assert_eq!(result("data"), result("back"), "{console}");
    assert_eq!(result("restarted"), "restarted", "{console}");
    assert_eq!(
        result("path_a_state"),
        "live",
        "the path came back:\n{console}"
    );
    assert_eq!(
        result("ana_restored").trim(),
        "non-optimized optimized",
        "{console}"
    );
    assert_eq!(result("write_after_restore_rc"), "0", "{console}");
    let gap_ms: u64 = result("gap_cs").parse::<u64>().expect("centiseconds") * 10;
    eprintln!("failover gap (longest 4 KiB write after the kill, TCG guest): {gap_ms} ms");

    // Every block is in the image.
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
        image.read(0, u64::from(BLOCKS) * 4096).await.expect("read")
    });
    assert_eq!(sha256_hex(&image), result("data"));
}
