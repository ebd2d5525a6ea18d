//! `vitastor-nbd map` with a real kernel NBD driver, in a TCG guest (the host kernel has no
//! nbd module): map, write and read `/dev/nbdN` with O_DIRECT, `ls`, `unmap`; then
//! `kill -9` of the NBD process while a guest program writes: the writes must fail with
//! I/O errors, and every write the kernel acknowledged before must be in the image.
//!
//! The cluster (etcd, monitor, two OSDs) runs on the host. The guest reaches the host's
//! 127.0.0.1 at 10.0.2.2 (QEMU user networking), but the OSDs advertise 127.0.0.1 in
//! etcd, so the guest script first listens on its own 127.0.0.1 at the etcd port and at
//! every OSD port and forwards each connection to 10.0.2.2 at the same port (busybox
//! `nc -ll -e nc`): the client in the guest then uses the addresses etcd gives it.

use std::process::{Command, Stdio};
use std::time::Duration;
use vitastor_testkit::{guest, sha256_hex, LocalCluster};

const POOLS: &str = r#"{"1":{"name":"testpool","scheme":"replicated","pg_size":2,"pg_minsize":1,"pg_count":8,"failure_domain":"osd"}}"#;
const GLOBAL: &str = r#"{"immediate_commit":"all"}"#;
const IMAGE_SIZE: u64 = 16 << 20;
/// The first phase writes 1 MiB; the second starts 8 MiB of writes and is killed early.
const FIRST_BLOCKS: u64 = 256;
const SECOND_BLOCKS: u64 = 2048;

/// The guest's script: forwarders, then the two phases; results as GUEST-RESULT lines.
fn script(etcd: &str, ports: &[u16]) -> String {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    format!(
        r#"set -u
for p in {ports}; do nc -ll -p $p -e nc 10.0.2.2 $p & done
for p in {ports}; do
  for i in $(seq 1 100); do netstat -ltn | grep -q ":$p " && break; sleep 0.1; done
done
wait_mapped() {{
  for i in $(seq 1 1200); do [ -s /sys/block/nbd0/pid ] && return 0; sleep 0.1; done
  echo "GUEST: nbd0 was not mapped"; cat /tmp/map.err; exit 3
}}
vitastor-nbd map --etcd_address {etcd} --image testimg > /tmp/map.out 2> /tmp/map.err &
MAP=$!
wait_mapped
DEV=$(cat /tmp/map.out)
echo "GUEST-RESULT device=$DEV"
dd if=/dev/urandom of=/tmp/data bs=4096 count={FIRST_BLOCKS} 2>/dev/null
dd if=/tmp/data of=$DEV bs=4096 oflag=direct 2>/dev/null || exit 4
dd if=$DEV of=/tmp/back bs=4096 count={FIRST_BLOCKS} iflag=direct 2>/dev/null || exit 5
echo "GUEST-RESULT written=$(sha256sum < /tmp/data | cut -d' ' -f1)"
echo "GUEST-RESULT read=$(sha256sum < /tmp/back | cut -d' ' -f1)"
echo "GUEST-RESULT ls=$(vitastor-nbd ls | tr '\t' ' ')"
vitastor-nbd unmap $DEV || exit 6
wait $MAP
echo "GUEST-RESULT map_exit=$?"
echo "GUEST-RESULT after_unmap=$(cat /sys/block/nbd0/pid 2>/dev/null)"

vitastor-nbd map --etcd_address {etcd} --image testimg > /tmp/map.out 2> /tmp/map.err &
MAP=$!
wait_mapped
dd if=/dev/urandom of=/tmp/big bs=4096 count={SECOND_BLOCKS} 2>/dev/null
before=$(awk '{{print $7}}' /sys/block/nbd0/stat)
(dd if=/tmp/big of=$DEV bs=4096 oflag=direct 2> /tmp/dd.err; echo $? > /tmp/dd.rc) &
DD=$!
# kill once the kernel has written at least 64 KiB of this run (field 7: sectors written)
for i in $(seq 1 1200); do
  [ "$(awk '{{print $7}}' /sys/block/nbd0/stat)" -ge $((before + 128)) ] && break; sleep 0.05
done
kill -9 $MAP
wait $DD
echo "GUEST-RESULT dd_rc=$(cat /tmp/dd.rc)"
echo "GUEST-RESULT dd_err=$(grep -i error /tmp/dd.err | head -n 1)"
records=$(sed -n 's/^\([0-9]*\)+[0-9]* records out$/\1/p' /tmp/dd.err)
echo "GUEST-RESULT records=$records"
echo "GUEST-RESULT acked=$(dd if=/tmp/big bs=4096 count=$records 2>/dev/null | sha256sum | cut -d' ' -f1)"
dd if=$DEV of=/tmp/after bs=4096 count=1 iflag=direct 2>/dev/null
echo "GUEST-RESULT read_after_kill=$? $(stat -c %s /tmp/after 2>/dev/null || echo 0)"
echo "GUEST-RESULT size_after_kill=$(cat /sys/block/nbd0/size)"
"#,
        ports = ports.join(" ")
    )
}

#[test]
fn kernel_nbd_map_in_a_guest() {
    let Some(kernel) = guest::kernel_or_skip("kernel_nbd_map_in_a_guest") else {
        return;
    };
    let cluster = LocalCluster::start("nbd-guest", 2, GLOBAL, POOLS);
    cluster.wait_active(1, 8, Duration::from_secs(60));
    cluster.etcd.put(
        "/vitastor/config/inode/1/1",
        &format!(r#"{{"name":"testimg","size":{IMAGE_SIZE}}}"#),
    );
    cluster
        .etcd
        .put("/vitastor/index/image/testimg", r#"{"id":1,"pool_id":1}"#);
    let mut ports = vec![cluster
        .etcd
        .address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .expect("etcd port")];
    for (key, value) in cluster.etcd.get_prefix("/vitastor/osd/state/") {
        let state: serde_json::Value = serde_json::from_str(&value).expect("OSD state JSON");
        let port = state["port"].as_u64().expect("an OSD port");
        ports.push(u16::try_from(port).unwrap_or_else(|_| panic!("{key}: port {port}")));
    }
    assert_eq!(ports.len(), 3, "etcd and two OSDs");

    let dir = cluster.scratch.0.clone();
    let initrd = guest::Initramfs::new(&dir, &kernel)
        .modules(&["nbd", "virtio_pci", "virtio_net"])
        .binary(
            std::path::Path::new(env!("CARGO_BIN_EXE_vitastor-nbd")),
            "/bin/vitastor-nbd",
        )
        .build(&script(&cluster.etcd.address, &ports));
    let run = guest::boot(
        &kernel,
        &initrd,
        &["-nic".to_string(), "user,model=virtio-net-pci".to_string()],
        &[],
        Duration::from_secs(240),
        &dir.join("console.log"),
    );
    let console = &run.console;
    assert!(
        !run.timed_out && run.exit == Some(0),
        "the guest failed (exit {:?}, timed out: {}):\n{console}",
        run.exit,
        run.timed_out
    );
    for line in console.lines().filter(|l| l.starts_with("GUEST-RESULT")) {
        eprintln!("{line}");
    }
    let result = |key: &str| {
        run.result(key)
            .unwrap_or_else(|| panic!("no {key} in the guest's output:\n{console}"))
    };

    // map, write, read, ls, unmap.
    let device = result("device");
    assert!(device.starts_with("/dev/nbd"), "{console}");
    assert_eq!(result("read"), result("written"), "{console}");
    assert!(result("ls").contains(&device), "{console}");
    assert_eq!(result("map_exit"), "0", "{console}");
    assert_eq!(result("after_unmap"), "", "{console}");

    // kill -9 during writes: I/O errors, never a silent success.
    assert_ne!(
        result("dd_rc"),
        "0",
        "dd finished without an error:\n{console}"
    );
    assert!(
        result("dd_err").contains("I/O error") || result("dd_err").contains("error"),
        "{console}"
    );
    // A read afterwards fails or finds a device of size 0: no data from nowhere.
    let read_after = result("read_after_kill");
    assert!(
        !read_after.starts_with("0 ") || read_after == "0 0",
        "a read after the kill returned data:\n{console}"
    );
    let records: u64 = result("records").parse().expect("dd's record count");
    assert!(
        records < SECOND_BLOCKS,
        "the kill came too late:\n{console}"
    );

    // Every write the kernel acknowledged is in the image: read it on the host.
    let socket = dir.join("check.sock");
    let mut server = Command::new(env!("CARGO_BIN_EXE_vitastor-nbd"))
        .args(["serve", "--etcd_address", &cluster.etcd.address])
        .args(["--image", "testimg", "--socket"])
        .arg(&socket)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("serve.log")).expect("log"))
        .spawn()
        .expect("start vitastor-nbd serve");
    vitastor_testkit::wait_for("the NBD socket", Duration::from_secs(20), || {
        socket.exists()
    });
    let copy = dir.join("image.raw");
    let status = Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "raw"])
        .arg(format!("nbd+unix:///?socket={}", socket.display()))
        .arg(&copy)
        .status()
        .expect("run qemu-img");
    let _ = server.kill();
    let _ = server.wait();
    assert!(status.success(), "qemu-img convert from NBD failed");
    let image = std::fs::read(&copy).expect("read the copy");
    assert_eq!(
        sha256_hex(&image[..(records * 4096) as usize]),
        result("acked"),
        "acknowledged writes are missing from the image"
    );
}
