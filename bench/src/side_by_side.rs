//! `bench-cluster --peer DIR`: the standard set against our cluster and a Vitastor cluster
//! (DIR = its build, see [`crate::peer_cluster`]) in one run, in two fsync modes:
//!
//! - **fsync off**: our OSDs with `--disable_data_fsync`, Vitastor's with
//!   `disable_data_fsync`; both `immediate_commit=all`.
//! - **durable**: ours fsyncs before every ack (`immediate_commit=all`); Vitastor refuses
//!   `all` with data fsyncs, so it runs `immediate_commit=none` (clients send SYNCs) with the
//!   flusher and autosync settings `vitastor-disk prepare` gives such an OSD.
//!
//! Per mode both clusters run side by side (3 OSDs each on pre-written files, 2 replicas,
//! 32 PGs, each with its own etcd, monitor and fio engine); both images are filled; then
//! per test: fio on the raw file once, and ours, Vitastor, ours, Vitastor, ... Each side's
//! numbers are the medians of its runs; OSD CPU per op = the OSD processes' user + system
//! time during a run over the ops fio completed.

use crate::fio::{self, FioJob};
use crate::peer_cluster::{PeerCluster, PeerConfig};
use crate::peer_report::{self, PeerRow};
use crate::standard::TESTS;
use crate::stats::RunStats;
use crate::usage::{process_ticks, ticks_to_s};
use std::path::{Path, PathBuf};
use std::process::Command;
use vitastor_local::{binary, Cluster, Config};

/// What `bench-cluster --peer` was asked for.
#[derive(Debug, Clone)]
pub struct Options {
    /// Vitastor's build.
    pub peer_bin: PathBuf,
    pub dir: PathBuf,
    pub results: PathBuf,
    /// Seconds per fio run.
    pub seconds: u64,
    /// 1 GiB OSD files and a 256 MiB image instead of 2 GiB and 1 GiB.
    pub short: bool,
    /// Runs per system and test (alternated).
    pub alternations: u32,
}

struct Mode {
    name: &'static str,
    disable_data_fsync: bool,
}

const MODES: [Mode; 2] = [
    Mode {
        name: "fsync off",
        disable_data_fsync: true,
    },
    Mode {
        name: "durable",
        disable_data_fsync: false,
    },
];

const OSDS: u64 = 3;
const PG_SIZE: u32 = 2;
const PG_COUNT: u32 = 32;
const IMAGE: &str = "bench";

/// One fio run through `target` with the CPU time the processes `osd_pids` spent
/// meanwhile, per op.
fn measure(target: &[String], osd_pids: &[u32], job: &FioJob) -> Result<RunStats, String> {
    let before = process_ticks(osd_pids);
    // Vitastor's engine takes fsync but not fdatasync: both systems get fsync.
    let mut stats = fio::run_with_sync(target, job, "--fsync=1")?;
    let cpu_s = ticks_to_s(process_ticks(osd_pids).saturating_sub(before));
    if stats.ops > 0 {
        stats.cpu_us_per_op = Some(cpu_s * 1e6 / stats.ops as f64);
    }
    Ok(stats)
}

/// Our cluster on pre-written files (formatted here, so the launcher keeps them).
fn start_ours(
    dir: &Path,
    osd_size: u64,
    image_size: u64,
    disable_data_fsync: bool,
) -> Result<Cluster, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for osd in 1..=OSDS {
        let path = dir.join(format!("osd{osd}.bin"));
        fio::prefill(&path, osd_size)?;
        vitastor_local::prepare_data_file(&path)?;
    }
    Cluster::start(Config {
        dir: dir.to_path_buf(),
        osds: OSDS,
        osd_size,
        pg_size: PG_SIZE,
        parity_chunks: 0,
        pg_count: PG_COUNT,
        immediate_commit: "all".into(),
        disable_data_fsync,
        image: IMAGE.into(),
        image_size,
        etcd_port: 0,
    })
}

/// Fails when a process of either cluster died.
fn check_alive(ours: &mut Cluster, peer: &mut PeerCluster) -> Result<(), String> {
    let dead = ours.dead_processes();
    if !dead.is_empty() {
        return Err(format!("our {dead:?} exited"));
    }
    match peer.exited() {
        Some(name) => Err(format!("Vitastor's {name} exited")),
        None => Ok(()),
    }
}

/// The six tests in one fsync mode; the rows for the report.
fn run_mode(options: &Options, mode: &Mode, raw_file: &Path) -> Result<Vec<PeerRow>, String> {
    let image_size: u64 = if options.short { 256 << 20 } else { 1 << 30 };
    let osd_size: u64 = if options.short { 1 << 30 } else { 2 << 30 };
    let ours_dir = options.dir.join("ours");
    let peer_dir = options.dir.join("vitastor");
    let _ = std::fs::remove_dir_all(&ours_dir);
    eprintln!(
        "[{}] starting our cluster in {}",
        mode.name,
        ours_dir.display()
    );
    let mut ours = start_ours(&ours_dir, osd_size, image_size, mode.disable_data_fsync)?;
    eprintln!(
        "[{}] starting the Vitastor cluster in {}",
        mode.name,
        peer_dir.display()
    );
    let mut peer = PeerCluster::start(PeerConfig {
        bin: options.peer_bin.clone(),
        dir: peer_dir.clone(),
        osds: OSDS,
        osd_size,
        pg_size: PG_SIZE,
        pg_count: PG_COUNT,
        image: IMAGE.into(),
        image_size,
        disable_data_fsync: mode.disable_data_fsync,
    })?;
    let ours_target = vec![
        format!(
            "--ioengine=external:{}",
            binary("libfio_vitastor.so").display()
        ),
        format!("--etcd={}", ours.etcd_address),
        format!("--image={IMAGE}"),
    ];
    let peer_target = peer.fio_target();
    let (ours_pids, peer_pids) = (ours.osd_pids(), peer.osd_pids());
    eprintln!(
        "[{}] filling both images ({} MiB)",
        mode.name,
        image_size >> 20
    );
    let fill = FioJob::fill(image_size, 4 << 20);
    fio::run_with(&ours_target, &fill)?;
    fio::run_with(&peer_target, &fill)?;
    let mut rows = Vec::new();
    for test in &TESTS {
        let job = test.job(options.seconds, image_size);
        eprintln!("[{}] {}", mode.name, test.name);
        let raw = fio::run(raw_file, &job)?;
        let (mut ours_runs, mut peer_runs) = (Vec::new(), Vec::new());
        for _ in 0..options.alternations.max(1) {
            ours_runs.push(measure(&ours_target, &ours_pids, &job)?);
            peer_runs.push(measure(&peer_target, &peer_pids, &job)?);
            check_alive(&mut ours, &mut peer)?;
        }
        rows.push(PeerRow {
            mode: mode.name.to_string(),
            name: test.name.to_string(),
            metric: test.metric,
            raw,
            ours: peer_report::median(&ours_runs),
            peer: peer_report::median(&peer_runs),
        });
    }
    eprintln!(
        "[{}] verified run on ours: randwrite 4k QD16 verify=crc32c",
        mode.name
    );
    fio::verified_run(&ours_target)?;
    drop(peer);
    drop(ours);
    let _ = std::fs::remove_dir_all(&ours_dir);
    let _ = std::fs::remove_dir_all(&peer_dir);
    Ok(rows)
}

/// Both modes, then the report.
pub fn run(options: &Options) -> Result<(), String> {
    let engine = binary("libfio_vitastor.so");
    if !engine.exists() {
        return Err(format!(
            "{} is missing: cargo build --release -p vitastor-fio",
            engine.display()
        ));
    }
    crate::peer_cluster::check_bin(&options.peer_bin)?;
    let image_size: u64 = if options.short { 256 << 20 } else { 1 << 30 };
    let _ = std::fs::remove_dir_all(&options.dir);
    std::fs::create_dir_all(&options.dir)
        .map_err(|e| format!("cannot create {}: {e}", options.dir.display()))?;
    let raw_file = options.dir.join("raw.bin");
    fio::prefill(&raw_file, image_size)?;
    let mut rows = Vec::new();
    for mode in &MODES {
        rows.extend(run_mode(options, mode, &raw_file)?);
    }
    let _ = std::fs::remove_file(&raw_file);
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let files = if options.short { "1 GiB" } else { "2 GiB" };
    let configuration = vec![
        format!("date: {date}"),
        format!("both systems: 3 OSDs each on pre-written {files} files of the same filesystem, 2 replicas, 32 PGs, 128 KiB objects, {} MiB image (prefilled), each with its own etcd, monitor and fio engine over loopback TCP, both clusters up during a mode; etcd, monitors and OSDs of both on the same 2-core machine", image_size >> 20),
        format!("Vitastor: the build in {} (vitastor-osd on `vitastor-disk simple-offsets` layouts, node mon/mon-main.js, vitastor-cli create, libfio_vitastor.so)", options.peer_bin.display()),
        "fsync off: our OSDs --disable_data_fsync, Vitastor's disable_data_fsync=1 (journal 32M); both immediate_commit=all".to_string(),
        "durable: ours immediate_commit=all, data fsynced before every ack; Vitastor immediate_commit=none with data fsyncs (journal 128M, min/max_flusher_count 32/256, autosync_writes 512, as `vitastor-disk prepare` sets for such an SSD): only T1Q1 write (fsync=1) is equally durable there".to_string(),
        format!("raw: {}, ioengine=io_uring, direct=1, a {} MiB file on the same filesystem; T1Q1 write with fdatasync after every write (ours and Vitastor: fsync=1, as Vitastor's engine takes no fdatasync)", fio::fio_version().unwrap_or_default(), image_size >> 20),
        format!("{} s per run; per test raw once, then ours and Vitastor alternated {} times; medians; a verified randwrite (crc32c) on ours passed in each mode", options.seconds, options.alternations.max(1)),
    ];
    peer_report::publish(
        &options.results,
        "bench-cluster --peer: ours vs Vitastor, side by side",
        &configuration,
        &rows,
    )
}
