//! A local cluster on one machine: a real etcd (Debian's etcd-server) on free 127.0.0.1
//! ports, one `vitastor-mon`, N `vitastor-osd` on files formatted by `vitastor-disk
//! prepare`, a pool and an image. Used by the `vitastor-local` launcher and the benchmarks.
//!
//! Everything lives under one directory: `etcd/` (data), `osdN.bin`, `*.log`, and
//! `cluster.json` (addresses and PIDs, for `vitastor-local stop|status`). Dropping a
//! [`Cluster`] stops every process it started.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vitastor_proto::size::format_size;

#[derive(Debug, Clone)]
pub struct Config {
    pub dir: PathBuf,
    pub osds: u64,
    pub osd_size: u64,
    pub pg_size: u32,
    /// Parity chunks of an EC pool (0: replicated; `pg_size - parity_chunks` data chunks).
    pub parity_chunks: u32,
    pub pg_count: u32,
    pub immediate_commit: String,
    /// Start the OSDs with `--disable_data_fsync` (no fsync of the data files).
    pub disable_data_fsync: bool,
    pub image: String,
    pub image_size: u64,
    /// etcd client port; 0 picks a free one.
    pub etcd_port: u16,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            dir: PathBuf::from("vitastor-local"),
            osds: 3,
            osd_size: 1 << 30,
            pg_size: 2,
            parity_chunks: 0,
            pg_count: 32,
            immediate_commit: "all".into(),
            disable_data_fsync: false,
            image: "testimg".into(),
            image_size: 256 << 20,
            etcd_port: 0,
        }
    }
}

pub struct Cluster {
    pub config: Config,
    pub etcd_address: String,
    children: Vec<(String, Child)>,
}

/// A binary of this project: next to the running executable (the cargo target dir), or
/// on PATH.
pub fn binary(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            let dir = exe.parent()?;
            [dir.join(name), dir.parent()?.join(name)]
                .into_iter()
                .find(|p| p.exists())
        })
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Formats `path` (a file) as an OSD's data device with our `vitastor-disk prepare`.
pub fn prepare_data_file(path: &Path) -> Result<(), String> {
    let output = Command::new(binary("vitastor-disk"))
        .args(["prepare", "--data_device", &path.to_string_lossy()])
        .output()
        .map_err(|e| format!("cannot run vitastor-disk: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "vitastor-disk prepare {}: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(())
}

/// The etcd command line for a one-member cluster on 127.0.0.1 with its data in
/// `dir/etcd` (shared by the launcher, the test harness and the benchmarks).
pub fn etcd_command(dir: &Path, client_port: u16, peer_port: u16) -> Command {
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let mut command = Command::new("etcd");
    command
        .args(["--data-dir", &dir.join("etcd").to_string_lossy()])
        .args(["--listen-client-urls", &client_url])
        .args(["--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("default={peer_url}")]);
    command
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port on 127.0.0.1: {e}"))
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

impl Cluster {
    /// Checks the preconditions, starts everything and waits until every PG is active.
    pub fn start(config: Config) -> Result<Cluster, String> {
        if !on_path("etcd") {
            return Err(
                "etcd is not installed: apt install etcd-server (scripts/setup.sh does it)".into(),
            );
        }
        if !on_path("etcdctl") {
            return Err(
                "etcdctl is not installed: apt install etcd-client (scripts/setup.sh does it)"
                    .into(),
            );
        }
        std::fs::create_dir_all(&config.dir)
            .and_then(|()| std::fs::write(config.dir.join(".write-test"), b"ok"))
            .and_then(|()| std::fs::remove_file(config.dir.join(".write-test")))
            .map_err(|e| format!("directory {} is not writable: {e}", config.dir.display()))?;
        if config.dir.join("cluster.json").exists() && running_launcher(&config.dir).is_some() {
            return Err(format!(
                "a cluster is already running in {} (vitastor-local stop --dir {} first)",
                config.dir.display(),
                config.dir.display()
            ));
        }
        let client_port = match config.etcd_port {
            0 => free_port()?,
            port if port_is_free(port) => port,
            port => {
                return Err(format!(
                    "port {port} is taken; choose another --etcd_port or 0 for a free one"
                ))
            }
        };
        let peer_port = free_port()?;
        let mut cluster = Cluster {
            etcd_address: format!("127.0.0.1:{client_port}"),
            config,
            children: Vec::new(),
        };
        let dir = cluster.config.dir.clone();
        cluster.spawn("etcd", &mut etcd_command(&dir, client_port, peer_port))?;
        cluster.wait("etcd to answer", Duration::from_secs(30), |c| {
            c.etcdctl(&["endpoint", "health"]).is_ok()
        })?;
        let prefix = "/vitastor";
        // Nothing else runs from this directory: OSD and PG states left by an earlier run
        // that was killed (their leases may not have expired yet) are stale.
        cluster.etcdctl(&["del", "--prefix", &format!("{prefix}/osd/state/")])?;
        cluster.etcdctl(&["del", "--prefix", &format!("{prefix}/pg/state/")])?;
        cluster.etcdctl(&[
            "put",
            &format!("{prefix}/config/global"),
            &format!(
                r#"{{"immediate_commit":"{}"}}"#,
                cluster.config.immediate_commit
            ),
        ])?;
        for osd in 1..=cluster.config.osds {
            let path = dir.join(format!("osd{osd}.bin"));
            if !path.exists() {
                std::fs::File::create(&path)
                    .and_then(|f| f.set_len(cluster.config.osd_size))
                    .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
                prepare_data_file(&path)?;
            }
            let mut command = Command::new(binary("vitastor-osd"));
            command
                .args([
                    "--osd_num",
                    &osd.to_string(),
                    "--data_device",
                    &path.to_string_lossy(),
                ])
                .args(["--etcd_address", &cluster.etcd_address.clone()])
                .args([
                    "--immediate_commit",
                    &cluster.config.immediate_commit.clone(),
                ]);
            if cluster.config.disable_data_fsync {
                command.arg("--disable_data_fsync");
            }
            cluster.spawn(&format!("osd{osd}"), &mut command)?;
        }
        let address = cluster.etcd_address.clone();
        cluster.spawn(
            "mon",
            Command::new(binary("vitastor-mon")).args(["--etcd_address", &address]),
        )?;
        let (pg_size, parity) = (cluster.config.pg_size, cluster.config.parity_chunks);
        let scheme = match parity {
            0 => r#""scheme":"replicated","pg_minsize":1"#.to_string(),
            m => format!(
                r#""scheme":"ec","parity_chunks":{m},"pg_minsize":{}"#,
                pg_size - m + u32::from(m > 1)
            ),
        };
        let pools = format!(
            r#"{{"1":{{"name":"testpool",{scheme},"pg_size":{pg_size},"pg_count":{},"failure_domain":"osd"}}}}"#,
            cluster.config.pg_count
        );
        cluster.etcdctl(&["put", &format!("{prefix}/config/pools"), &pools])?;
        let image = cluster.config.image.clone();
        if cluster
            .etcdctl(&[
                "get",
                "--print-value-only",
                &format!("{prefix}/index/image/{image}"),
            ])?
            .trim()
            .is_empty()
        {
            let inode = format!(
                r#"{{"name":"{image}","size":{}}}"#,
                cluster.config.image_size
            );
            cluster.etcdctl(&["put", &format!("{prefix}/config/inode/1/1"), &inode])?;
            cluster.etcdctl(&[
                "put",
                &format!("{prefix}/index/image/{image}"),
                r#"{"id":1,"pool_id":1}"#,
            ])?;
            cluster.etcdctl(&["put", &format!("{prefix}/index/maxid/1"), "1"])?;
        }
        let pg_count = cluster.config.pg_count as usize;
        cluster.wait("every PG to become active", Duration::from_secs(120), |c| {
            let states = c
                .etcdctl(&[
                    "get",
                    "--prefix",
                    "--print-value-only",
                    &format!("{prefix}/pg/state/1/"),
                ])
                .unwrap_or_default();
            states.lines().filter(|l| l.contains("\"active\"")).count() == pg_count
        })?;
        cluster.write_state()?;
        Ok(cluster)
    }

    fn spawn(&mut self, name: &str, command: &mut Command) -> Result<(), String> {
        let log_path = self.config.dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path)
            .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        self.children.push((name.to_string(), child));
        Ok(())
    }

    /// Waits for a condition; fails early (with the log's last line) when a process died.
    fn wait(
        &mut self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&Cluster) -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if done(self) {
                return Ok(());
            }
            for (name, child) in &mut self.children {
                if let Ok(Some(status)) = child.try_wait() {
                    let log = std::fs::read_to_string(self.config.dir.join(format!("{name}.log")))
                        .unwrap_or_default();
                    let last = log.lines().last().unwrap_or("").to_string();
                    return Err(format!(
                        "{name} exited ({status}) while waiting for {what}: {last}"
                    ));
                }
            }
            if Instant::now() >= deadline {
                return Err(format!("timed out waiting for {what}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn etcdctl(&self, args: &[&str]) -> Result<String, String> {
        let output = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.etcd_address))
            .args(args)
            .output()
            .map_err(|e| format!("etcdctl: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "etcdctl {args:?}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&output.stdout).to_string())
    }

    fn write_state(&self) -> Result<(), String> {
        let pids: serde_json::Map<String, serde_json::Value> = self
            .children
            .iter()
            .map(|(name, child)| (name.clone(), child.id().into()))
            .collect();
        let state = serde_json::json!({
            "etcd_address": self.etcd_address,
            "launcher_pid": std::process::id(),
            "pids": pids,
        });
        std::fs::write(self.config.dir.join("cluster.json"), state.to_string())
            .map_err(|e| format!("cannot write cluster.json: {e}"))
    }

    /// How to use the running cluster.
    pub fn usage(&self) -> String {
        let etcd = &self.etcd_address;
        let image = &self.config.image;
        let dir = self.config.dir.display();
        format!(
            "Local cluster running: etcd {etcd}, 1 monitor, {osds} OSDs ({osd_size} files in {dir}), pool testpool ({pg_size} replicas, {pgs} PGs, immediate_commit={commit}), image {image} ({size}).

  etcdctl --endpoints={etcd} get --prefix /vitastor/pg/state
  vitastor-cli --etcd_address {etcd} status
  vitastor-cli --etcd_address {etcd} ls
  vitastor-nbd serve --etcd_address {etcd} --image {image} --socket {dir}/{image}.sock
  fio -name=test -ioengine=external:{engine} -etcd={etcd} -image={image} -bs=4k -iodepth=1 -rw=randwrite -runtime=10 -time_based

Stop with Ctrl-C here, or: vitastor-local stop --dir {dir}",
            osds = self.config.osds,
            osd_size = format_size(self.config.osd_size),
            pg_size = self.config.pg_size,
            pgs = self.config.pg_count,
            commit = self.config.immediate_commit,
            size = format_size(self.config.image_size),
            engine = binary("libfio_vitastor.so").display(),
        )
    }

    /// Stops every process (SIGTERM, then SIGKILL after 5 s) and removes cluster.json.
    pub fn stop(&mut self) {
        // OSDs and the monitor first, etcd last.
        self.children.sort_by_key(|(name, _)| name == "etcd");
        for (_, child) in &mut self.children {
            // SAFETY: kill(2) on a child PID we own.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for (_, child) in &mut self.children {
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
        let _ = std::fs::remove_file(self.config.dir.join("cluster.json"));
    }

    /// Process ids of the running OSDs (for their CPU time).
    pub fn osd_pids(&self) -> Vec<u32> {
        self.children
            .iter()
            .filter(|(name, _)| name.starts_with("osd"))
            .map(|(_, child)| child.id())
            .collect()
    }

    /// Names of processes that exited on their own.
    pub fn dead_processes(&mut self) -> Vec<String> {
        self.children
            .iter_mut()
            .filter_map(|(name, child)| child.try_wait().ok().flatten().map(|_| name.clone()))
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.children.is_empty() {
            self.stop();
        }
    }
}

fn alive(pid: i64) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    pid > 0 && unsafe { libc::kill(pid as libc::pid_t, 0) } == 0
}

/// The launcher PID recorded in `dir/cluster.json`, if that process is alive.
pub fn running_launcher(dir: &Path) -> Option<i64> {
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("cluster.json")).ok()?).ok()?;
    state["launcher_pid"].as_i64().filter(|&pid| alive(pid))
}

/// Stops the cluster recorded in `dir`: asks its launcher to stop (SIGTERM) and waits; if
/// the launcher is gone, kills the recorded processes directly.
pub fn stop_dir(dir: &Path) -> Result<(), String> {
    let path = dir.join("cluster.json");
    let bytes = std::fs::read(&path).map_err(|_| {
        format!(
            "no cluster is running in {} (no cluster.json)",
            dir.display()
        )
    })?;
    let state: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let pids: Vec<i64> = state["pids"]
        .as_object()
        .map(|m| m.values().filter_map(|v| v.as_i64()).collect())
        .unwrap_or_default();
    if let Some(launcher) = running_launcher(dir) {
        // SAFETY: kill(2) with a PID read from our own state file.
        unsafe { libc::kill(launcher as libc::pid_t, libc::SIGTERM) };
    } else {
        for &pid in &pids {
            // SAFETY: as above.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while pids.iter().any(|&pid| alive(pid)) || running_launcher(dir).is_some() {
        if Instant::now() >= deadline {
            return Err("processes are still running after 15 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
}
