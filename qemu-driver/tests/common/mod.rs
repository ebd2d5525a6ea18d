//! Shared by the QEMU driver's tests: a small cluster with images, QEMU's tools run with
//! the driver preloaded, `vitastor-nbd serve` for reading an image back independently.
#![allow(dead_code)] // each test uses a part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;
use vitastor_testkit::{built_library, wait_for, workspace_binary, LocalCluster};

pub const POOLS: &str = r#"{"1":{"name":"testpool","scheme":"replicated","pg_size":2,"pg_minsize":1,"pg_count":8,"failure_domain":"osd"}}"#;
pub const GLOBAL: &str = r#"{"immediate_commit":"all"}"#;

/// Two OSDs, a 2-replica pool of 8 PGs, every PG active.
pub fn cluster(name: &str) -> LocalCluster {
    let cluster = LocalCluster::start(name, 2, GLOBAL, POOLS);
    cluster.wait_active(1, 8, Duration::from_secs(60));
    cluster
}

/// Creates image `name` as inode `inode` of pool 1.
pub fn create_image(cluster: &LocalCluster, name: &str, inode: u64, size: u64, readonly: bool) {
    let readonly = if readonly { r#","readonly":true"# } else { "" };
    cluster.etcd.put(
        &format!("/vitastor/config/inode/1/{inode}"),
        &format!(r#"{{"name":"{name}","size":{size}{readonly}}}"#),
    );
    cluster.etcd.put(
        &format!("/vitastor/index/image/{name}"),
        &format!(r#"{{"id":{inode},"pool_id":1}}"#),
    );
}

/// The driver (cargo builds it as libblock_vitastor.so).
pub fn driver() -> PathBuf {
    built_library("vitastor-qemu", "libblock_vitastor.so")
}

/// `vitastor:etcd_host=HOST\:PORT:image=NAME`
pub fn filename(cluster: &LocalCluster, image: &str) -> String {
    format!(
        "vitastor:etcd_host={}:image={image}",
        cluster.etcd.address.replace(':', "\\:")
    )
}

/// Runs a QEMU tool with the driver preloaded.
pub fn qemu(driver: &Path, tool: &str, args: &[&str]) -> Output {
    Command::new(tool)
        .args(args)
        .env("LD_PRELOAD", driver)
        .output()
        .unwrap_or_else(|e| panic!("{tool} is not installed ({e}); scripts/setup.sh installs it"))
}

/// As [`qemu`], and the command must succeed; returns stdout.
pub fn qemu_ok(driver: &Path, tool: &str, args: &[&str]) -> String {
    let out = qemu(driver, tool, args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{tool} {args:?} failed: {text}");
    // qemu-io reports a failed command on stdout and still exits 0.
    assert!(
        !text.contains("failed") && !text.contains("Pattern verification"),
        "{tool} {args:?}: {text}"
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deterministic pseudo-random bytes (xorshift).
pub fn random_bytes(size: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut data = Vec::with_capacity(size + 8);
    while data.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(size);
    data
}

/// `vitastor-nbd serve` on a Unix socket; killed on drop.
pub struct NbdServer {
    child: Child,
    pub uri: String,
}

impl Drop for NbdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn nbd_serve(cluster: &LocalCluster, image: &str) -> NbdServer {
    let socket = cluster.scratch.0.join(format!("{image}.sock"));
    let child = Command::new(workspace_binary("vitastor-nbd"))
        .args(["serve", "--etcd_address", &cluster.etcd.address])
        .args(["--image", image])
        .arg("--socket")
        .arg(&socket)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(cluster.scratch.0.join("nbd-serve.log")).expect("log"))
        .spawn()
        .expect("start vitastor-nbd");
    wait_for("the NBD socket", Duration::from_secs(20), || {
        socket.exists()
    });
    NbdServer {
        child,
        uri: format!("nbd+unix:///?socket={}", socket.display()),
    }
}

/// Reads a whole image through `vitastor-nbd serve` with QEMU's own nbd driver.
pub fn read_through_nbd(cluster: &LocalCluster, image: &str) -> Vec<u8> {
    let server = nbd_serve(cluster, image);
    let out = cluster.scratch.0.join(format!("{image}-nbd.raw"));
    let status = Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "raw", &server.uri])
        .arg(&out)
        .status()
        .expect("run qemu-img");
    assert!(status.success(), "qemu-img convert from NBD failed");
    std::fs::read(&out).expect("read the copy")
}
