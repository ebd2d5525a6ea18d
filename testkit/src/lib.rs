//! Test and benchmark harness shared by the crates' process tests and the benchmarks:
//! a real etcd (Debian's etcd-server) on free 127.0.0.1 ports in a scratch directory,
//! etcdctl helpers, a deadline-bound wait, and a way to find the workspace's binaries.
//!
//! Every process started here is killed when its owner is dropped, also when a test fails.

pub mod guest;

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot bind a port on 127.0.0.1")
}

/// Waits for `condition` with a deadline (polling, no sleeps as synchronization).
pub fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A binary of this workspace (`vitastor-osd`, `vitastor-mon`, ...) next to the running
/// test or benchmark (`target/<profile>/`). `cargo test --workspace` builds them all.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build it first (cargo build --workspace, or cargo test --workspace)",
        path.display()
    );
    path
}

/// A shared object of this workspace (`libvitastor_client.so`, `libfio_vitastor.so`):
/// `cargo test` builds libraries only as rlibs, so this builds `package`'s library with the
/// same cargo, then returns the file next to the tests.
pub fn built_library(package: &str, file: &str) -> PathBuf {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "-p", package, "--lib"])
        .status()
        .expect("run cargo build");
    assert!(status.success(), "building {file} ({package}) failed");
    workspace_binary(file)
}

/// A running etcd server, stopped (and its directory removed) on drop.
pub struct Etcd {
    pub address: String,
    pub dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    /// None while killed (between [`Etcd::kill`] and [`Etcd::restart`]).
    child: Option<Child>,
}

impl Etcd {
    /// Starts etcd with its data under `dir/etcd` and waits until it answers.
    pub fn start(dir: &Path) -> Etcd {
        std::fs::create_dir_all(dir).expect("create the scratch directory");
        let (client_port, peer_port) = (free_port(), free_port());
        let mut etcd = Etcd {
            address: format!("127.0.0.1:{client_port}"),
            dir: dir.to_path_buf(),
            client_port,
            peer_port,
            child: None,
        };
        etcd.spawn();
        etcd
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .expect("etcd.log");
        let child = vitastor_local::etcd_command(&self.dir, self.client_port, self.peer_port)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect(
                "etcd is not installed (apt install etcd-server); scripts/setup.sh installs it",
            );
        self.child = Some(child);
        wait_for("etcd", Duration::from_secs(30), || {
            self.etcdctl(&["endpoint", "health"]).is_ok()
        });
    }

    /// Kills etcd with SIGKILL (a crash: nothing is flushed or closed cleanly).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same data directory and ports, and waits until it
    /// answers.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn etcdctl(&self, args: &[&str]) -> Result<String, String> {
        let output = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.address))
            .args(args)
            .output()
            .map_err(|e| format!("etcdctl: {e}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).to_string());
        }
        Ok(String::from_utf8_lossy(&output.stdout).to_string())
    }

    pub fn put(&self, key: &str, value: &str) {
        self.etcdctl(&["put", key, value]).expect("etcdctl put");
    }

    pub fn delete(&self, key: &str) {
        self.etcdctl(&["del", key]).expect("etcdctl del");
    }

    /// The value of `key`, if it exists.
    pub fn get(&self, key: &str) -> Option<String> {
        let out = self.etcdctl(&["get", "--print-value-only", key]).ok()?;
        let value = out.trim_end_matches('\n');
        (!value.is_empty()).then(|| value.to_string())
    }

    /// `key -> value` for every key under `prefix`.
    pub fn get_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        let out = self
            .etcdctl(&["get", "--prefix", prefix])
            .unwrap_or_default();
        let lines: Vec<&str> = out.lines().collect();
        lines
            .chunks(2)
            .filter(|pair| pair.len() == 2)
            .map(|pair| (pair[0].to_string(), pair[1].to_string()))
            .collect()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A scratch directory removed on drop unless the thread is panicking (then its logs are
/// kept and the path printed).
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    pub fn new(name: &str) -> ScratchDir {
        let dir = std::env::temp_dir().join(format!("vitastor-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch directory");
        ScratchDir(dir)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("logs kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A whole local cluster for process tests: etcd, `osd_count` OSDs on 256 MiB files and one
/// monitor, with the given `/config/pools` (and `/config/global`) put through etcdctl.
/// Every process is killed on drop.
pub struct LocalCluster {
    pub children: Vec<(String, Child)>,
    pub etcd: Etcd,
    pub scratch: ScratchDir,
}

impl LocalCluster {
    pub fn start(name: &str, osd_count: u64, global: &str, pools: &str) -> LocalCluster {
        Self::start_sized(name, osd_count, 256 << 20, global, pools)
    }

    /// As [`LocalCluster::start`] with OSD files of `osd_size` bytes.
    pub fn start_sized(
        name: &str,
        osd_count: u64,
        osd_size: u64,
        global: &str,
        pools: &str,
    ) -> LocalCluster {
        Self::start_with(name, osd_count, osd_size, &[], global, pools)
    }

    /// As [`LocalCluster::start_sized`] with extra `vitastor-osd` arguments (an
    /// `--etcd_report_interval` among them replaces the default of 1 s, a 3 s lease).
    pub fn start_with(
        name: &str,
        osd_count: u64,
        osd_size: u64,
        osd_args: &[&str],
        global: &str,
        pools: &str,
    ) -> LocalCluster {
        let scratch = ScratchDir::new(name);
        let etcd = Etcd::start(&scratch.0);
        etcd.put("/vitastor/config/global", global);
        let mut cluster = LocalCluster {
            children: Vec::new(),
            etcd,
            scratch,
        };
        for osd in 1..=osd_count {
            cluster.prepare_osd(osd, osd_size);
            cluster.start_osd(&format!("osd{osd}"), osd, osd_args);
        }
        cluster.spawn(
            "mon",
            Command::new(workspace_binary("vitastor-mon"))
                .args(["--etcd_address", &cluster.etcd.address])
                .args(["--etcd_mon_ttl", "2", "--mon_change_timeout", "100"]),
        );
        cluster.etcd.put("/vitastor/config/pools", pools);
        cluster
    }

    /// Creates `osd<N>.bin` of `osd_size` bytes in the scratch directory and formats it
    /// with `vitastor-disk prepare`.
    pub fn prepare_osd(&self, osd: u64, osd_size: u64) -> PathBuf {
        let path = self.scratch.0.join(format!("osd{osd}.bin"));
        std::fs::File::create(&path)
            .and_then(|f| f.set_len(osd_size))
            .expect("create the OSD file");
        let status = Command::new(workspace_binary("vitastor-disk"))
            .args(["prepare", "--data_device", path.to_str().expect("utf-8")])
            .args(["--journal_size", "16M"])
            .stdout(Stdio::null())
            .status()
            .expect("run vitastor-disk");
        assert!(status.success(), "vitastor-disk prepare failed");
        path
    }

    /// Starts `vitastor-osd` number `osd` on its prepared file as process `name` (an
    /// `--etcd_report_interval` in `osd_args` replaces the default of 1 s, a 3 s lease).
    pub fn start_osd(&mut self, name: &str, osd: u64, osd_args: &[&str]) {
        let path = self.scratch.0.join(format!("osd{osd}.bin"));
        let report_interval: &[&str] = if osd_args.contains(&"--etcd_report_interval") {
            &[]
        } else {
            &["--etcd_report_interval", "1"]
        };
        let etcd = self.etcd.address.clone();
        self.spawn(
            name,
            Command::new(workspace_binary("vitastor-osd"))
                .args(["--osd_num", &osd.to_string()])
                .args(["--data_device", path.to_str().expect("utf-8")])
                .args(["--etcd_address", &etcd])
                .args(report_interval)
                .args(osd_args),
        );
    }

    /// Starts a process with its stderr in `<dir>/<name>.log`.
    pub fn spawn(&mut self, name: &str, command: &mut Command) {
        let log =
            std::fs::File::create(self.scratch.0.join(format!("{name}.log"))).expect("log file");
        let child = command
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        self.children.push((name.to_string(), child));
    }

    /// Kills (SIGKILL) the process started as `name`.
    pub fn kill(&mut self, name: &str) {
        if let Some(index) = self.children.iter().position(|(n, _)| n == name) {
            let (_, mut child) = self.children.remove(index);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The processes that are no longer running, with how they ended.
    pub fn exited(&mut self) -> Vec<String> {
        self.children
            .iter_mut()
            .filter_map(|(name, child)| match child.try_wait() {
                Ok(Some(status)) => Some(format!("{name} ({status})")),
                _ => None,
            })
            .collect()
    }

    /// Waits until the PG map has `pg_count` PGs for `pool` and all are active on their
    /// primaries.
    pub fn wait_active(&self, pool: u32, pg_count: usize, timeout: Duration) {
        wait_for("all PGs active", timeout, || {
            let Some(config) = self.etcd.get("/vitastor/pg/config") else {
                return false;
            };
            let states = self.etcd.get_prefix(&format!("/vitastor/pg/state/{pool}/"));
            let active = states
                .iter()
                .filter(|(_, v)| v.contains("\"active\""))
                .count();
            config.contains(&format!("\"{pool}\":")) && active == pg_count
        });
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The SHA-256 of `data` as hex, computed by coreutils' `sha256sum` (the same tool the
/// guests use, so host and guest digests compare as strings).
pub fn sha256_hex(data: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run sha256sum");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(data)
        .expect("feed sha256sum");
    let out = child.wait_with_output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}
