//! A Vitastor cluster built outside this project (`bench-cluster --peer DIR`), for side
//! by side numbers: its own etcd, Vitastor's node.js monitor, N `vitastor-osd` on
//! pre-written files (layout from `vitastor-disk simple-offsets`, no superblock, so no
//! partitions or systemd are needed), a replicated pool and an image made with its
//! `vitastor-cli`. Everything listens on 127.0.0.1 and is stopped on drop (also when
//! starting fails half way).
//!
//! DIR holds Vitastor's build: `vitastor-osd`, `vitastor-disk`, `vitastor-cli`,
//! `libfio_vitastor.so` and `mon/` (with its `node_modules`); the monitor also needs
//! `node` and `lp_solve` (Debian: nodejs, lp-solve).

use crate::fio;
use crate::procs::Processes;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What [`PeerCluster::start`] builds.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// Vitastor's binaries (see the module documentation).
    pub bin: PathBuf,
    /// Where the cluster's files and logs go (emptied first).
    pub dir: PathBuf,
    pub osds: u64,
    pub osd_size: u64,
    pub pg_size: u32,
    pub pg_count: u32,
    pub image: String,
    pub image_size: u64,
    /// `true`: `disable_data_fsync` and `immediate_commit=all`; `false`: fsyncs on and
    /// `immediate_commit=none` (Vitastor refuses `all` with data fsyncs).
    pub disable_data_fsync: bool,
}

impl PeerConfig {
    /// The OSD options beyond the layout: what `vitastor-disk prepare` writes into the
    /// superblock of an SSD OSD with these fsync settings.
    pub fn osd_options(&self) -> Vec<String> {
        let mut options = vec![
            "--journal_no_same_sector_overwrites",
            "true",
            "--journal_sector_buffer_count",
            "1024",
        ];
        if self.disable_data_fsync {
            options.extend(["--disable_data_fsync", "1", "--immediate_commit", "all"]);
        } else {
            options.extend([
                "--disable_data_fsync",
                "0",
                "--immediate_commit",
                "none",
                "--min_flusher_count",
                "32",
                "--max_flusher_count",
                "256",
                "--autosync_writes",
                "512",
            ]);
        }
        options.into_iter().map(String::from).collect()
    }

    /// Journal size `vitastor-disk prepare` picks for an SSD with these fsync settings.
    pub fn journal_size(&self) -> &'static str {
        if self.disable_data_fsync {
            "32M"
        } else {
            "128M"
        }
    }

    pub fn immediate_commit(&self) -> &'static str {
        if self.disable_data_fsync {
            "all"
        } else {
            "none"
        }
    }
}

/// A running Vitastor cluster.
pub struct PeerCluster {
    pub config: PeerConfig,
    pub etcd_address: String,
    processes: Processes,
}

/// Files DIR must hold.
const REQUIRED: [&str; 5] = [
    "vitastor-osd",
    "vitastor-disk",
    "vitastor-cli",
    "libfio_vitastor.so",
    "mon/mon-main.js",
];

/// Checks that `bin` holds Vitastor's build and that its monitor's programs (node and
/// lp_solve) are installed.
pub fn check_bin(bin: &Path) -> Result<(), String> {
    for name in REQUIRED {
        if !bin.join(name).exists() {
            return Err(format!(
                "--peer {}: {name} is missing (want Vitastor's vitastor-osd, vitastor-disk, vitastor-cli, libfio_vitastor.so and mon/)",
                bin.display()
            ));
        }
    }
    // Only whether they start matters (lp_solve -S1 with no model exits non-zero).
    for (program, arg, package) in [
        ("node", "--version", "nodejs"),
        ("lp_solve", "-S1", "lp-solve"),
    ] {
        Command::new(program)
            .arg(arg)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| {
                format!("{program} (for Vitastor's monitor) cannot run: {e}; apt install {package}")
            })?;
    }
    Ok(())
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port on 127.0.0.1: {e}"))
}

/// Overwrites the first `len` bytes of `path` with zeros and syncs them.
fn zero_start(path: &Path, len: u64) -> Result<(), String> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let zeros = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..n])
            .map_err(|e| format!("{}: {e}", path.display()))?;
        left -= n as u64;
    }
    file.sync_all()
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Runs a command to completion; its stdout, or an error with its stderr.
fn output(what: &str, command: &mut Command) -> Result<String, String> {
    let out = command
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

impl PeerCluster {
    /// Starts etcd, the OSDs and the monitor, creates the pool and waits until every PG
    /// is active, then creates the image.
    pub fn start(config: PeerConfig) -> Result<PeerCluster, String> {
        check_bin(&config.bin)?;
        let _ = std::fs::remove_dir_all(&config.dir);
        std::fs::create_dir_all(&config.dir)
            .map_err(|e| format!("cannot create {}: {e}", config.dir.display()))?;
        let (client_port, peer_port) = (free_port()?, free_port()?);
        let mut cluster = PeerCluster {
            etcd_address: format!("127.0.0.1:{client_port}"),
            processes: Processes::new(config.dir.clone()),
            config,
        };
        let dir = cluster.config.dir.clone();
        cluster.spawn(
            "etcd",
            &mut vitastor_local::etcd_command(&dir, client_port, peer_port),
        )?;
        cluster.wait("etcd to answer", Duration::from_secs(30), |c| {
            c.etcdctl(&["endpoint", "health"]).is_ok()
        })?;
        cluster.etcdctl(&[
            "put",
            "/vitastor/config/global",
            &format!(
                r#"{{"immediate_commit":"{}"}}"#,
                cluster.config.immediate_commit()
            ),
        ])?;
        for osd in 1..=cluster.config.osds {
            cluster.start_osd(osd)?;
        }
        let bin = cluster.config.bin.clone();
        let address = cluster.etcd_address.clone();
        let http_port = free_port()?;
        cluster.spawn(
            "mon",
            Command::new("node")
                .arg(bin.join("mon/mon-main.js"))
                .args(["--etcd_address", &address])
                .args(["--mon_http_ip", "127.0.0.1"])
                .args(["--mon_http_port", &http_port.to_string()]),
        )?;
        let pools = format!(
            r#"{{"1":{{"name":"testpool","scheme":"replicated","pg_size":{},"pg_minsize":1,"pg_count":{},"failure_domain":"osd"}}}}"#,
            cluster.config.pg_size, cluster.config.pg_count
        );
        cluster.etcdctl(&["put", "/vitastor/config/pools", &pools])?;
        let pg_count = cluster.config.pg_count as usize;
        cluster.wait("every PG to become active", Duration::from_secs(120), |c| {
            let states = c
                .etcdctl(&[
                    "get",
                    "--prefix",
                    "--print-value-only",
                    "/vitastor/pg/state/1/",
                ])
                .unwrap_or_default();
            states.lines().filter(|l| l.contains("\"active\"")).count() == pg_count
        })?;
        let size = format!("{}M", cluster.config.image_size >> 20);
        let image = cluster.config.image.clone();
        output(
            "vitastor-cli create",
            Command::new(bin.join("vitastor-cli"))
                .args(["--etcd_address", &address])
                .args(["create", "-s", &size, "--pool", "testpool", &image]),
        )?;
        Ok(cluster)
    }

    /// Starts `command` as `name` with stdout and stderr (Vitastor logs to stdout) in
    /// `<dir>/<name>.log`.
    fn spawn(&mut self, name: &str, command: &mut Command) -> Result<(), String> {
        let path = self.config.dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&path)
            .and_then(|log| Ok((log.try_clone()?, log)))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log.0)
            .stderr(log.1)
            .spawn()
            .map_err(|e| format!("cannot start Vitastor's {name}: {e}"))?;
        self.processes.children.push((name.to_string(), child));
        Ok(())
    }

    /// Pre-writes OSD `osd`'s file, lays it out and starts the OSD.
    fn start_osd(&mut self, osd: u64) -> Result<(), String> {
        let path = self.config.dir.join(format!("osd{osd}.bin"));
        fio::prefill(&path, self.config.osd_size)?;
        let layout = output(
            "vitastor-disk simple-offsets",
            Command::new(self.config.bin.join("vitastor-disk"))
                .args(["simple-offsets", "--format", "options"])
                .args(["--journal_size", self.config.journal_size()])
                .arg(&path),
        )?;
        let options: Vec<(&str, &str)> = layout
            .lines()
            .filter_map(|line| line.split_once(' '))
            .collect();
        // Like `vitastor-disk prepare`: a zeroed journal and metadata area is a new OSD.
        let data_offset = options
            .iter()
            .find(|(key, _)| *key == "--data_offset")
            .and_then(|(_, value)| value.parse::<u64>().ok())
            .ok_or_else(|| {
                format!("vitastor-disk simple-offsets printed no data_offset: {layout}")
            })?;
        zero_start(&path, data_offset)?;
        let mut command = Command::new(self.config.bin.join("vitastor-osd"));
        command
            .args(["--etcd_address", &self.etcd_address])
            .args(["--osd_num", &osd.to_string()])
            .args(["--bind_address", "127.0.0.1"])
            .args(options.iter().flat_map(|(key, value)| [key, value]))
            .args(self.config.osd_options());
        self.spawn(&format!("osd{osd}"), &mut command)
    }

    /// Waits for a condition; fails early (with the log's last line) when a process died.
    fn wait(
        &mut self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&PeerCluster) -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if done(self) {
                return Ok(());
            }
            if let Some(name) = self.processes.exited() {
                let log = std::fs::read_to_string(self.config.dir.join(format!("{name}.log")))
                    .unwrap_or_default();
                let last = log.lines().last().unwrap_or("").to_string();
                return Err(format!(
                    "Vitastor's {name} exited while waiting for {what}: {last}"
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!("timed out waiting for Vitastor's {what}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn etcdctl(&self, args: &[&str]) -> Result<String, String> {
        output(
            &format!("etcdctl {args:?}"),
            Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={}", self.etcd_address))
                .args(args),
        )
    }

    /// fio arguments that select Vitastor's engine and the image.
    pub fn fio_target(&self) -> Vec<String> {
        vec![
            format!(
                "--ioengine=external:{}",
                self.config.bin.join("libfio_vitastor.so").display()
            ),
            format!("--etcd={}", self.etcd_address),
            format!("--image={}", self.config.image),
        ]
    }

    /// Process ids of the OSDs (for their CPU time).
    pub fn osd_pids(&self) -> Vec<u32> {
        (1..=self.config.osds)
            .filter_map(|osd| self.processes.pid(&format!("osd{osd}")))
            .collect()
    }

    /// Names of processes that exited on their own.
    pub fn exited(&mut self) -> Option<String> {
        self.processes.exited()
    }
}

impl Drop for PeerCluster {
    /// OSDs and the monitor first, etcd last (the rest goes with `Processes`' drop).
    fn drop(&mut self) {
        for osd in 1..=self.config.osds {
            self.processes.kill(&format!("osd{osd}"));
        }
        self.processes.kill("mon");
        self.processes.kill("etcd");
    }
}
