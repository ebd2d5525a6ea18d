//! `bench-recovery`: how fast the cluster restores redundancy after losing an OSD, and what
//! that costs the clients meanwhile.
//!
//! One run per (`recovery_queue_depth`, load), each on a fresh local cluster (etcd,
//! `vitastor-mon`, 3 `vitastor-osd` on files, a 2-replica pool of 32 PGs with
//! `pg_minsize` 1, immediate_commit=all) whose image (`--size_mib`) is written in full:
//!
//! ```text
//!  fill ── load ──┬─ kill -9 OSD 3 ── out ─────────────── clean ── stats ── load
//!  (4M    (before │  t_kill           t_out               t_clean  (the      (after
//!  writes) the    │  (PGs degraded,   (the monitor moved  (every   survivors' clean)
//!          kill)  │   1 copy)          its PGs: copies     PG       reports)
//!                 │                    start)              ["active"])
//!                 └─ the same load, from right after the kill until clean
//! ```
//!
//! Throughput: the objects copied (the survivors' `/osd/stats` `recovery_stats` counts, degraded plus misplaced,
//! after minus before; every object of a fully written image is whole, so each copy moves
//! one block) over out -> clean (the copy rate) and over kill -> clean (what an operator
//! waits, `osd_out_time` included). The bytes the dead OSD held (its `size - free` before
//! the kill) are shown beside as a cross-check. Client impact: fio 4k randwrite through our
//! engine, every completion logged with its Unix time (`write_lat_log`, `log_unix_epoch`);
//! latency and IOPS are computed over out -> clean, over a run of the same load before the
//! kill (3 OSDs) and over one after clean (the 2 survivors, the copy window's topology).
//! The load `none` gives the copy rate with no client I/O.
//!
//! `--bin_dir` picks the binaries as in bench-failover; `--label` names the result
//! (`<results>/<label>.json`); `report.md` there is rebuilt from every result present, with
//! `notes.md` (hand-written analysis, if present) appended. `--short`: 64 MiB, one T1Q1 run
//! at queue depth 1 (a smoke test, under a minute).

use clap::Parser;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use vitastor_bench::procs::Processes;
use vitastor_bench::stats::{LatencyRecorder, RunStats};
use vitastor_bench::usage::{disk_of, Usage};
use vitastor_testkit::Etcd;

mod report;
use report::{usage_cell, write_report};

#[derive(Parser, Debug)]
#[command(name = "bench-recovery")]
struct Args {
    /// Directory with vitastor-osd, vitastor-mon, vitastor-disk and libfio_vitastor.so
    /// (default: next to this program).
    #[arg(long = "bin_dir")]
    bin_dir: Option<PathBuf>,
    /// Where the cluster's files go.
    #[arg(long, default_value = "target/bench-recovery")]
    dir: PathBuf,
    #[arg(long, default_value = "bench/results/recovery")]
    results: PathBuf,
    /// Name of this measurement.
    #[arg(long, default_value = "current")]
    label: String,
    /// Image size, written in full before the kill (MiB).
    #[arg(long = "size_mib", default_value_t = 1024)]
    size_mib: u64,
    /// `recovery_queue_depth` values, one set of runs each.
    #[arg(long = "queue_depths", value_delimiter = ',', default_value = "1,8")]
    queue_depths: Vec<u64>,
    /// Client loads during recovery: none, t1q1 (4k randwrite QD1), qd32 (4k randwrite QD32).
    #[arg(long, value_delimiter = ',', default_value = "none,t1q1,qd32",
          value_parser = ["none", "t1q1", "qd32"])]
    loads: Vec<String>,
    /// Seconds of each load before the kill (the numbers without recovery).
    #[arg(long, default_value_t = 15)]
    baseline: u64,
    /// `osd_out_time` in `/config/global` (s).
    #[arg(long = "osd_out_time", default_value_t = 5)]
    osd_out_time: u64,
    /// Seconds from the kill to clean before the run is given up.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
    /// 64 MiB, queue depth 1, the T1Q1 load only, 3 s baseline, osd_out_time 2.
    #[arg(long)]
    short: bool,
    /// Only rebuild `report.md` from the results present.
    #[arg(long = "report_only")]
    report_only: bool,
}

const PGS: usize = 32;
const OSDS: u64 = 3;
/// The OSD killed; the survivors are `1..VICTIM`.
const VICTIM: u64 = 3;
const _: () = assert!(
    VICTIM == OSDS,
    "the survivors are the OSDs below the victim"
);
const PREFIX: &str = "/vitastor";
const MIB: u64 = 1 << 20;
/// How long after clean the survivors have to publish `/osd/stats` (their report interval
/// is 5 s by default).
const STATS_WAIT: Duration = Duration::from_secs(20);

fn main() -> std::process::ExitCode {
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench-recovery: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// The fio queue depth of a load (`None`: no client I/O).
fn load_iodepth(load: &str) -> Option<u32> {
    match load {
        "t1q1" => Some(1),
        "qd32" => Some(32),
        _ => None,
    }
}

/// One cluster; the processes stop before etcd does (fields drop in order).
struct Bench {
    processes: Processes,
    bin_dir: PathBuf,
    dir: PathBuf,
    etcd: Etcd,
    size_bytes: u64,
}

impl Bench {
    fn binary(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// Polls `condition` every 100 ms until `timeout`; fails when a process exits.
    fn wait(
        &mut self,
        what: &str,
        timeout: Duration,
        mut condition: impl FnMut(&Bench) -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if condition(self) {
                return Ok(());
            }
            if let Some(name) = self.processes.exited() {
                return Err(format!("{name} exited while waiting for {what}"));
            }
            if Instant::now() >= deadline {
                return Err(format!("timed out waiting for {what}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// PG -> its state names (`+`-joined), pool 1.
    fn states(&self) -> BTreeMap<u64, String> {
        self.etcd
            .get_prefix(&format!("{PREFIX}/pg/state/1/"))
            .into_iter()
            .map(|(key, value)| {
                let pg = key.rsplit('/').next().and_then(|n| n.parse().ok());
                let names: Vec<String> = parse(&value)["state"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)))
                    .into_iter()
                    .flatten()
                    .collect();
                (pg.unwrap_or(0), names.join("+"))
            })
            .collect()
    }

    fn clean(states: &BTreeMap<u64, String>) -> bool {
        states.len() == PGS && states.values().all(|s| s == "active")
    }

    /// Whether `/pg/config` lists every PG and none has `osd` in its set.
    fn moved_off(&self, osd: u64) -> bool {
        let config = parse(
            &self
                .etcd
                .get(&format!("{PREFIX}/pg/config"))
                .unwrap_or_default(),
        );
        let Some(items) = config["items"]["1"].as_object() else {
            return false;
        };
        items.len() == PGS
            && items.values().all(|item| {
                item["osd_set"]
                    .as_array()
                    .is_some_and(|set| !set.iter().any(|o| o.as_u64() == Some(osd)))
            })
    }

    /// Waits until each of `osds` published `/osd/stats` made after `after_ms` (Unix ms).
    fn wait_for_reports(&mut self, osds: &[u64], after_ms: u64) -> Result<(), String> {
        let after_s = after_ms as f64 / 1000.0;
        self.wait("/osd/stats reports", STATS_WAIT, |b| {
            osds.iter().all(|&osd| {
                b.osd_stats(osd)["time"]
                    .as_str()
                    .and_then(|t| t.parse::<f64>().ok())
                    .is_some_and(|t| t > after_s)
            })
        })
    }

    fn osd_stats(&self, osd: u64) -> Value {
        parse(
            &self
                .etcd
                .get(&format!("{PREFIX}/osd/stats/{osd}"))
                .unwrap_or_default(),
        )
    }

    /// fio 4k randwrite through our engine for `runtime_s`, every completion logged with
    /// its Unix time in ms under `log_prefix`.
    fn start_load(&self, iodepth: u32, runtime_s: u64, log_prefix: &Path) -> Result<Child, String> {
        let engine = self.binary("libfio_vitastor.so");
        Command::new("fio")
            .args(["--name=load", "--rw=randwrite", "--bs=4k", "--direct=1"])
            .arg(format!("--iodepth={iodepth}"))
            .arg(format!("--size={}", self.size_bytes))
            .args(["--time_based", "--randrepeat=0"])
            .arg(format!("--runtime={runtime_s}"))
            .arg(format!("--ioengine=external:{}", engine.display()))
            .arg(format!("--etcd={}", self.etcd.address))
            .arg("--image=bench")
            .arg(format!("--write_lat_log={}", log_prefix.display()))
            .args(["--log_avg_msec=0", "--log_unix_epoch=1"])
            .args(["--output-format=terse"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot run fio: {e}"))
    }

    /// The load for `runtime_s` with no recovery running, its first second left out (it
    /// warms up: connections, the image's metadata).
    fn reference_load(&self, iodepth: u32, runtime_s: u64, name: &str) -> Result<RunStats, String> {
        let prefix = self.dir.join(name);
        let fio = self.start_load(iodepth, runtime_s, &prefix)?;
        let samples = finish_load(fio, &prefix, false)?;
        let first = samples.first().map_or(0, |s| s.0);
        let last = samples.last().map_or(0, |s| s.0);
        Ok(window_stats(&samples, first + 1000, last + 1))
    }

    /// Writes the whole image (4M sequential, QD32); returns the seconds it took.
    fn fill(&self) -> Result<f64, String> {
        let engine = self.binary("libfio_vitastor.so");
        let started = Instant::now();
        let out = Command::new("fio")
            .args(["--name=fill", "--rw=write", "--bs=4M", "--iodepth=32"])
            .arg(format!("--size={}", self.size_bytes))
            .arg(format!("--ioengine=external:{}", engine.display()))
            .arg(format!("--etcd={}", self.etcd.address))
            .args(["--image=bench", "--output-format=terse"])
            .output()
            .map_err(|e| format!("cannot run fio: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "the fill failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(started.elapsed().as_secs_f64())
    }
}

/// Waits for fio (or stops it with SIGINT once `stop` is set and it has not finished) and
/// returns its logged completions `(unix_ms, latency_ns)`.
fn finish_load(mut fio: Child, log_prefix: &Path, stop: bool) -> Result<Vec<(u64, u64)>, String> {
    if stop {
        // SAFETY: signals the process group of the fio we started (its job processes are
        // in it); fio stops its jobs and writes its logs on SIGINT.
        unsafe { libc::kill(-(fio.id() as i32), libc::SIGINT) };
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = fio.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() > deadline {
            // SAFETY: as above, the group of the fio we started.
            unsafe { libc::kill(-(fio.id() as i32), libc::SIGKILL) };
            let _ = fio.wait();
            return Err("fio did not stop within 60 s (client requests hang)".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = fio.stderr.take() {
        use std::io::Read;
        let _ = pipe.read_to_string(&mut stderr);
    }
    if !status.success() && !stop {
        return Err(format!("fio failed: {}", stderr.trim()));
    }
    let log = PathBuf::from(format!("{}_lat.1.log", log_prefix.display()));
    let text = std::fs::read_to_string(&log)
        .map_err(|e| format!("{}: {e} (fio: {})", log.display(), stderr.trim()))?;
    for suffix in ["lat", "clat", "slat"] {
        let _ = std::fs::remove_file(format!("{}_{suffix}.1.log", log_prefix.display()));
    }
    let mut samples: Vec<(u64, u64)> = text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(',').map(str::trim);
            Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
        })
        .collect();
    samples.sort_unstable();
    Ok(samples)
}

/// Latency and IOPS of the completions in `[from_ms, to_ms)` (4 KiB each).
fn window_stats(samples: &[(u64, u64)], from_ms: u64, to_ms: u64) -> RunStats {
    let mut recorder = LatencyRecorder::default();
    for &(_, latency_ns) in samples.iter().filter(|(t, _)| (from_ms..to_ms).contains(t)) {
        recorder.record(Duration::from_nanos(latency_ns));
    }
    let window = Duration::from_millis(to_ms.saturating_sub(from_ms).max(1));
    recorder.finish(window, 4096)
}

fn stats_json(stats: &RunStats) -> Value {
    json!({
        "ops": stats.ops,
        "iops": stats.iops,
        "lat_avg_us": stats.lat_avg_us,
        "lat_p99_us": stats.lat_p99_us,
    })
}

/// What one kill measured.
struct RecoveryRun {
    queue_depth: u64,
    load: String,
    fill_s: f64,
    victim_used_bytes: u64,
    block_size: u64,
    copied_objects: Option<u64>,
    out_ms: u64,
    clean_ms: u64,
    state_gone_ms: Option<u64>,
    /// Distinct PG states seen after the kill, with when each was first seen (ms).
    states_seen: BTreeMap<String, u64>,
    baseline: Option<RunStats>,
    during: Option<RunStats>,
    /// The same load on the two survivors once clean (the topology of the copy window).
    after: Option<RunStats>,
    /// The load over kill -> out (failover and the degraded wait).
    degraded: Option<RunStats>,
    /// CPU and disk use over out -> clean (`Usage::since`).
    window_usage: Value,
}

fn run(args: Args) -> Result<(), String> {
    if args.report_only {
        return write_report(&args.results);
    }
    let (size_mib, queue_depths, loads, baseline_s, out_time) = if args.short {
        (64, vec![1], vec!["t1q1".to_string()], 3, 2)
    } else {
        (
            args.size_mib,
            args.queue_depths.clone(),
            args.loads.clone(),
            args.baseline,
            args.osd_out_time,
        )
    };
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .parent()
            .ok_or("no directory of the executable")?
            .to_path_buf(),
    };
    for name in [
        "vitastor-osd",
        "vitastor-mon",
        "vitastor-disk",
        "libfio_vitastor.so",
    ] {
        if !bin_dir.join(name).exists() {
            return Err(format!(
                "{} is missing: cargo build --release -p vitastor-osd -p vitastor-mon -p vitastor-fio",
                bin_dir.join(name).display()
            ));
        }
    }
    let load_average = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let mut runs = Vec::new();
    for &queue_depth in &queue_depths {
        for load in &loads {
            let global = json!({
                "immediate_commit": "all",
                "osd_out_time": out_time,
                "recovery_queue_depth": queue_depth,
            })
            .to_string();
            eprintln!("recovery_queue_depth {queue_depth}, load {load}: {size_mib} MiB");
            let mut bench = start_cluster(&args.dir, &bin_dir, &global, size_mib * MIB)?;
            let result = one_run(&mut bench, queue_depth, load, baseline_s, args.timeout);
            // The next run empties the cluster's directory: keep this one's logs.
            let failed = if result.is_err() { "-failed" } else { "" };
            let logs = args
                .dir
                .with_extension("logs")
                .join(format!("depth{queue_depth}-{load}{failed}"));
            let _ = std::fs::create_dir_all(&logs);
            for log in ["osd1", "osd2", "osd3", "mon"] {
                let from = bench.dir.join(format!("{log}.log"));
                let _ = std::fs::copy(from, logs.join(format!("{log}.log")));
            }
            eprintln!("  logs kept in {}", logs.display());
            let result = result?;
            print_run(&result);
            runs.push(result);
        }
    }
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    publish(
        &args,
        &runs,
        size_mib,
        baseline_s,
        out_time,
        cpus,
        &load_average,
    )
}

/// A fresh cluster in `dir` (emptied first) with an image of `size_bytes`, every PG clean.
fn start_cluster(
    dir: &Path,
    bin_dir: &Path,
    global: &str,
    size_bytes: u64,
) -> Result<Bench, String> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let dir = std::fs::canonicalize(dir).map_err(|e| e.to_string())?;
    let etcd = Etcd::start(&dir);
    let mut bench = Bench {
        processes: Processes::new(dir.clone()),
        bin_dir: bin_dir.to_path_buf(),
        dir: dir.clone(),
        etcd,
        size_bytes,
    };
    bench.etcd.put(&format!("{PREFIX}/config/global"), global);
    // A survivor ends up with a copy of every object: room for the image twice (the load
    // overwrites, the journal) and the metadata.
    let osd_file_bytes = (2 * size_bytes + 256 * MIB).max(1 << 30);
    for osd in 1..=OSDS {
        let path = dir.join(format!("osd{osd}.bin"));
        std::fs::File::create(&path)
            .and_then(|f| f.set_len(osd_file_bytes))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let status = Command::new(bench.binary("vitastor-disk"))
            .args(["prepare", "--data_device", &path.to_string_lossy()])
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("vitastor-disk: {e}"))?;
        if !status.success() {
            return Err("vitastor-disk prepare failed".into());
        }
        let mut command = Command::new(bench.binary("vitastor-osd"));
        command
            .args(["--osd_num", &osd.to_string()])
            .args(["--data_device", &path.to_string_lossy()])
            .args(["--etcd_address", &bench.etcd.address]);
        bench.processes.spawn(&format!("osd{osd}"), &mut command)?;
    }
    let mut mon = Command::new(bench.binary("vitastor-mon"));
    mon.args(["--etcd_address", &bench.etcd.address]);
    bench.processes.spawn("mon", &mut mon)?;
    bench.etcd.put(
        &format!("{PREFIX}/config/pools"),
        &format!(r#"{{"1":{{"name":"testpool","scheme":"replicated","pg_size":2,"pg_minsize":1,"pg_count":{PGS},"failure_domain":"osd"}}}}"#),
    );
    bench.etcd.put(
        &format!("{PREFIX}/config/inode/1/1"),
        &format!(r#"{{"name":"bench","size":{size_bytes}}}"#),
    );
    bench.etcd.put(
        &format!("{PREFIX}/index/image/bench"),
        r#"{"id":1,"pool_id":1}"#,
    );
    bench.wait("every PG to become active", Duration::from_secs(120), |b| {
        Bench::clean(&b.states())
    })?;
    Ok(bench)
}

fn one_run(
    bench: &mut Bench,
    queue_depth: u64,
    load: &str,
    baseline_s: u64,
    timeout_s: u64,
) -> Result<RecoveryRun, String> {
    let fill_s = bench.fill()?;
    eprintln!(
        "  filled in {fill_s:.1} s ({:.0} MB/s)",
        bench.size_bytes as f64 / fill_s / 1e6
    );
    bench.wait("clean after the fill", Duration::from_secs(60), |b| {
        Bench::clean(&b.states())
    })?;
    let iodepth = load_iodepth(load);
    let baseline = iodepth
        .map(|depth| bench.reference_load(depth, baseline_s, "baseline"))
        .transpose()?;
    // What the survivors copied so far, and what the victim holds, from reports made now.
    let all: Vec<u64> = (1..=OSDS).collect();
    bench.wait_for_reports(&all, now_ms())?;
    let recovered_before: Vec<Option<u64>> = (1..OSDS)
        .map(|osd| copied_objects(&bench.osd_stats(osd)))
        .collect();
    let victim = bench.osd_stats(VICTIM);
    let victim_used_bytes = victim["size"]
        .as_u64()
        .zip(victim["free"].as_u64())
        .map_or(0, |(size, free)| size.saturating_sub(free));
    let block_size = victim["data_block_size"].as_u64().unwrap_or(128 << 10);

    let kill_ms = now_ms();
    bench.processes.kill(&format!("osd{VICTIM}"));
    let prefix = bench.dir.join("recovery");
    let fio = match iodepth {
        Some(depth) => Some(bench.start_load(depth, timeout_s + 60, &prefix)?),
        None => None,
    };
    let survivor_pids: Vec<u32> = (1..OSDS)
        .filter_map(|osd| bench.processes.pid(&format!("osd{osd}")))
        .collect();
    let disk = disk_of(&bench.dir);
    let mut usage_at_out = Usage::default();
    let mut states_seen = BTreeMap::new();
    let (mut out_ms, mut state_gone_ms) = (None, None);
    let clean_ms = loop {
        let since = now_ms().saturating_sub(kill_ms);
        if state_gone_ms.is_none()
            && bench
                .etcd
                .get(&format!("{PREFIX}/osd/state/{VICTIM}"))
                .is_none()
        {
            state_gone_ms = Some(since);
        }
        if out_ms.is_none() && bench.moved_off(VICTIM) {
            out_ms = Some(since);
            usage_at_out = Usage::sample(&survivor_pids, disk);
        }
        let states = bench.states();
        for state in states.values() {
            states_seen.entry(state.clone()).or_insert(since);
        }
        if out_ms.is_some() && Bench::clean(&states) {
            break since;
        }
        if let Some(name) = bench.processes.exited() {
            return Err(format!("{name} exited during recovery"));
        }
        if since > timeout_s * 1000 {
            return Err(format!(
                "not clean {timeout_s} s after the kill (states: {states:?})"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let usage_at_clean = Usage::sample(&survivor_pids, disk);
    let out_ms = out_ms.expect("invariant: clean only after out");
    let window_usage = usage_at_out.since(&usage_at_clean, clean_ms - out_ms);
    let (during, degraded) = match fio {
        Some(fio) => {
            let samples = finish_load(fio, &prefix, true)?;
            let during = window_stats(&samples, kill_ms + out_ms, kill_ms + clean_ms);
            let degraded = window_stats(&samples, kill_ms, kill_ms + out_ms);
            (Some(during), Some(degraded))
        }
        None => (None, None),
    };
    // The survivors publish their counters every report interval: wait for a report made
    // after clean.
    let survivors: Vec<u64> = (1..OSDS).collect();
    let copied_objects = match bench.wait_for_reports(&survivors, kill_ms + clean_ms) {
        Ok(()) => (1..OSDS)
            .zip(recovered_before)
            .map(|(osd, before)| {
                let after = copied_objects(&bench.osd_stats(osd))?;
                Some(after.saturating_sub(before.unwrap_or(0)))
            })
            .sum::<Option<u64>>(),
        Err(error) => {
            eprintln!("  {error}: the copied amount is unknown");
            None
        }
    };
    let after = iodepth
        .map(|depth| bench.reference_load(depth, baseline_s, "after"))
        .transpose()?;
    Ok(RecoveryRun {
        queue_depth,
        load: load.to_string(),
        fill_s,
        victim_used_bytes,
        block_size,
        copied_objects,
        out_ms,
        clean_ms,
        state_gone_ms,
        states_seen,
        baseline,
        during,
        after,
        degraded,
        window_usage,
    })
}

fn print_run(run: &RecoveryRun) {
    let copied = run
        .copied_objects
        .map_or("?".to_string(), |objects| format!("{} objects", objects));
    eprintln!(
        "  out after {:.1} s, clean after {:.1} s; copied {copied}; the dead OSD held {} MiB",
        run.out_ms as f64 / 1000.0,
        run.clean_ms as f64 / 1000.0,
        run.victim_used_bytes / MIB
    );
    for (name, stats) in [
        ("before the kill", &run.baseline),
        ("during recovery", &run.during),
        ("after clean", &run.after),
    ] {
        if let Some(stats) = stats {
            eprintln!(
                "  load {name}: {:.0} us (p99 {:.0}), {:.0} iops",
                stats.lat_avg_us, stats.lat_p99_us, stats.iops
            );
        }
    }
    eprintln!("  states seen: {:?}", run.states_seen);
    eprintln!("  copy window: {}", usage_cell(&run.window_usage));
}

fn publish(
    args: &Args,
    runs: &[RecoveryRun],
    size_mib: u64,
    baseline_s: u64,
    out_time: u64,
    cpus: usize,
    load_average: &str,
) -> Result<(), String> {
    std::fs::create_dir_all(&args.results)
        .map_err(|e| format!("{}: {e}", args.results.display()))?;
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let commit = args
        .bin_dir
        .as_ref()
        .and_then(|d| std::fs::read_to_string(d.join("COMMIT")).ok())
        .map(|c| c.trim().to_string());
    let json = json!({
        "label": args.label,
        "date": date,
        "bin_dir": args.bin_dir.as_ref().map(|d| d.display().to_string()),
        "commit": commit,
        "short": args.short,
        "size_mib": size_mib,
        "osds": OSDS,
        "pgs": PGS,
        "pg_size": 2,
        "pg_minsize": 1,
        "osd_out_time_s": out_time,
        "baseline_s": baseline_s,
        "cpus": cpus,
        "load_average_at_start": load_average,
        "runs": runs.iter().map(|r| json!({
            "recovery_queue_depth": r.queue_depth,
            "load": r.load,
            "fill_s": r.fill_s,
            "victim_used_bytes": r.victim_used_bytes,
            "block_size": r.block_size,
            "copied_objects": r.copied_objects,
            "state_gone_ms": r.state_gone_ms,
            "out_ms": r.out_ms,
            "clean_ms": r.clean_ms,
            "states_seen_ms": r.states_seen,
            "baseline": r.baseline.as_ref().map(stats_json),
            "during_recovery": r.during.as_ref().map(stats_json),
            "after_clean": r.after.as_ref().map(stats_json),
            "kill_to_out": r.degraded.as_ref().map(stats_json),
            "copy_window_usage": r.window_usage,
        })).collect::<Vec<_>>(),
    });
    let path = args.results.join(format!("{}.json", args.label));
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&json).expect("invariant: serializes"),
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("wrote {}", path.display());
    write_report(&args.results)
}

/// Objects an OSD copied so far: its `recovery_stats` counts (Vitastor's form,
/// `{"degraded": {"count", "bytes"}, "misplaced": {...}}`).
fn copied_objects(stats: &serde_json::Value) -> Option<u64> {
    let kinds = stats["recovery_stats"].as_object()?;
    Some(
        kinds
            .values()
            .filter_map(|kind| kind["count"].as_u64())
            .sum(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_counts_only_its_completions() {
        // (unix ms, latency ns): 10 completions inside [1000, 2000), two outside.
        let mut samples = vec![(999, 1_000_000), (2000, 1_000_000)];
        samples.extend((0..10).map(|i| (1000 + i * 100, (i + 1) * 100_000)));
        let stats = window_stats(&samples, 1000, 2000);
        assert_eq!(stats.ops, 10);
        assert!((stats.iops - 10.0).abs() < 1e-9);
        assert!((stats.lat_avg_us - 550.0).abs() < 1e-9);
        assert!((stats.lat_p99_us - 1000.0).abs() < 1e-9);
        assert_eq!(window_stats(&samples, 5000, 6000).ops, 0);
    }

    #[test]
    fn report_cells() {
        let stats = json!({"iops": 1000.4, "lat_avg_us": 250.0, "lat_p99_us": 900.0});
        assert_eq!(report::load_cell("t1q1", &stats), "250 us (p99 900)");
        assert_eq!(report::load_cell("qd32", &stats), "1000 iops (p99 900 us)");
        let slower = json!({"iops": 500.2, "lat_avg_us": 500.0});
        assert_eq!(report::load_ratio("t1q1", &stats, &slower), "2.00x");
        assert_eq!(report::load_ratio("qd32", &stats, &slower), "0.50x");
        assert_eq!(report::load_cell("t1q1", &Value::Null), "-");
    }
}
