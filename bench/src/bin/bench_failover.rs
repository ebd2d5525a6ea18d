//! `bench-failover`: how long client I/O stops when a primary OSD is killed with `kill -9`
//! (or, with `--signal stop`, frozen with SIGSTOP until the run ends).
//!
//! A local cluster (etcd, `vitastor-mon`, 3 `vitastor-osd` on files, a 2-replica pool of 32
//! PGs, immediate_commit=all, the default lease TTL of 15 s) takes 4k random writes from fio
//! through our engine, at queue depth 1 (T1Q1) and 32. During each fio run one OSD that is
//! the primary of some PGs gets SIGKILL; fio records every completion (`write_lat_log`,
//! `log_avg_msec=0`), and the longest time between two consecutive completions is that
//! run's I/O gap. Every kill gets a fresh cluster, so one kill's recovery (or a restarted
//! OSD's PG handoff) never disturbs the next measurement.
//!
//! `--bin_dir` picks the binaries (`vitastor-osd`, `vitastor-mon`, `vitastor-disk`,
//! `libfio_vitastor.so`), so the same tool measures an older build; `--label` names the
//! result (`<results>/<label>.json`), and `report.md` there is rebuilt from every result
//! present. `--short`: one kill per queue depth and short runs (a smoke test).

use clap::Parser;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vitastor_bench::procs::Processes;
use vitastor_testkit::Etcd;

#[derive(Parser, Debug)]
#[command(name = "bench-failover")]
struct Args {
    /// Directory with vitastor-osd, vitastor-mon, vitastor-disk and libfio_vitastor.so
    /// (default: next to this program).
    #[arg(long = "bin_dir")]
    bin_dir: Option<PathBuf>,
    /// Where the cluster's files go.
    #[arg(long, default_value = "target/bench-failover")]
    dir: PathBuf,
    #[arg(long, default_value = "bench/results/failover")]
    results: PathBuf,
    /// Name of this measurement (e.g. before, after).
    #[arg(long, default_value = "current")]
    label: String,
    /// Kills per queue depth.
    #[arg(long, default_value_t = 5)]
    kills: usize,
    /// Seconds of fio per kill (the kill comes after `--warmup` seconds); must cover the
    /// longest stall expected.
    #[arg(long, default_value_t = 25)]
    runtime: u64,
    #[arg(long, default_value_t = 4)]
    warmup: u64,
    /// One kill per queue depth, 8-second runs.
    #[arg(long)]
    short: bool,
    /// `kill` (SIGKILL: a crash) or `stop` (SIGSTOP for `--freeze` seconds: a hung OSD).
    #[arg(long, default_value = "kill", value_parser = ["kill", "stop"])]
    signal: String,
    /// Seconds between SIGSTOP and SIGCONT (a frozen OSD can hold client requests for the
    /// whole freeze, so fio ends only after it).
    #[arg(long, default_value_t = 15)]
    freeze: u64,
    /// The `/config/global` value (e.g. with `osd_idle_timeout` and `osd_ping_timeout`).
    #[arg(long, default_value = r#"{"immediate_commit":"all"}"#)]
    global: String,
    /// Only rebuild `report.md` from the results present.
    #[arg(long = "report_only")]
    report_only: bool,
}

const PGS: usize = 32;
const OSDS: u64 = 3;
const PREFIX: &str = "/vitastor";
/// Seconds past its runtime after which fio is considered hung.
const FIO_HANG_LIMIT_S: u64 = 60;

fn main() -> std::process::ExitCode {
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench-failover: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// One cluster; the processes stop before etcd does (fields drop in order).
struct Bench {
    processes: Processes,
    bin_dir: PathBuf,
    dir: PathBuf,
    etcd: Etcd,
}

impl Bench {
    fn binary(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    fn osd_command(&self, osd: u64) -> Command {
        let mut command = Command::new(self.binary("vitastor-osd"));
        command
            .args(["--osd_num", &osd.to_string()])
            .args(["--data_device", &self.osd_file(osd).to_string_lossy()])
            .args(["--etcd_address", &self.etcd.address]);
        command
    }

    fn osd_file(&self, osd: u64) -> PathBuf {
        self.dir.join(format!("osd{osd}.bin"))
    }

    /// Polls `condition` every 50 ms until `timeout`; fails when a process exits.
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
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether every PG of pool 1 is exactly `active` (not degraded, nothing to recover).
    fn clean(&self) -> bool {
        let states = self.etcd.get_prefix(&format!("{PREFIX}/pg/state/1/"));
        states.len() == PGS
            && states.iter().all(|(_, value)| {
                serde_json::from_str::<serde_json::Value>(value)
                    .is_ok_and(|v| v["state"] == serde_json::json!(["active"]))
            })
    }

    /// OSD -> number of PGs it is the primary of, from `/pg/config`.
    fn primaries(&self) -> Vec<(u64, usize)> {
        let mut counts = vec![0usize; OSDS as usize + 1];
        let config = self.etcd.get(&format!("{PREFIX}/pg/config"));
        let parsed = config
            .and_then(|c| serde_json::from_str::<serde_json::Value>(&c).ok())
            .unwrap_or_default();
        if let Some(items) = parsed["items"]["1"].as_object() {
            for item in items.values() {
                let primary = item["primary"]
                    .as_u64()
                    .or_else(|| item["primary"].as_str().and_then(|s| s.parse().ok()))
                    .unwrap_or(0) as usize;
                if primary < counts.len() {
                    counts[primary] += 1;
                }
            }
        }
        (1..=OSDS).map(|osd| (osd, counts[osd as usize])).collect()
    }
}

/// One kill: the longest pause between two fio completions, the op that waited longest,
/// and when the killed OSD's `/osd/state` key disappeared.
#[derive(Debug, Clone)]
struct KillResult {
    osd: u64,
    gap_ms: u64,
    max_latency_ms: f64,
    state_gone_ms: Option<u64>,
    ops: usize,
    /// fio never finished: some requests did not complete.
    hung: bool,
}

fn run(args: Args) -> Result<(), String> {
    if args.report_only {
        return write_report(&args.results);
    }
    let (kills, runtime, warmup) = if args.short {
        (1, 8, 3)
    } else {
        (args.kills, args.runtime, args.warmup)
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
                "{} is missing: cargo build -p vitastor-osd -p vitastor-mon -p vitastor-fio",
                bin_dir.join(name).display()
            ));
        }
    }
    let mut results: Vec<(u32, Vec<KillResult>)> = Vec::new();
    let mut victim_turn = 0u64;
    for iodepth in [1u32, 32] {
        let mut runs = Vec::new();
        for kill in 0..kills {
            let mut bench = start_cluster(&args.dir, &bin_dir, &args.global)?;
            // The next OSD in turn that is the primary of at least one PG.
            let primaries = bench.primaries();
            let victim = (0..OSDS)
                .map(|i| (victim_turn + i) % OSDS + 1)
                .find(|osd| primaries.iter().any(|&(o, n)| o == *osd && n > 0))
                .ok_or("no OSD is a primary")?;
            victim_turn = victim % OSDS;
            eprintln!(
                "QD{iodepth} kill {}/{kills}: OSD {victim} (primary of {} PGs)",
                kill + 1,
                primaries
                    .iter()
                    .find(|(o, _)| *o == victim)
                    .map_or(0, |p| p.1)
            );
            let freeze = (args.signal == "stop").then(|| Duration::from_secs(args.freeze));
            let result = one_kill(&mut bench, iodepth, victim, runtime, warmup, kill, freeze)?;
            eprintln!(
                "  longest I/O gap {} ms, longest op {:.0} ms, /osd/state gone after {}, {} ops",
                result.gap_ms,
                result.max_latency_ms,
                result
                    .state_gone_ms
                    .map_or("-".to_string(), |ms| format!("{ms} ms")),
                result.ops
            );
            runs.push(result);
        }
        results.push((iodepth, runs));
    }
    publish(&args, &results, runtime, warmup)
}

/// A fresh cluster in `dir` (emptied first), every PG active and clean.
fn start_cluster(dir: &Path, bin_dir: &Path, global: &str) -> Result<Bench, String> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let dir = std::fs::canonicalize(dir).map_err(|e| e.to_string())?;
    eprintln!(
        "starting etcd, the monitor and {OSDS} OSDs in {}",
        dir.display()
    );
    let etcd = Etcd::start(&dir);
    let mut bench = Bench {
        bin_dir: bin_dir.to_path_buf(),
        dir: dir.clone(),
        etcd,
        processes: Processes::new(dir.clone()),
    };
    bench.etcd.put(&format!("{PREFIX}/config/global"), global);
    for osd in 1..=OSDS {
        let path = bench.osd_file(osd);
        std::fs::File::create(&path)
            .and_then(|f| f.set_len(1 << 30))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let status = Command::new(bench.binary("vitastor-disk"))
            .args(["prepare", "--data_device", &path.to_string_lossy()])
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("vitastor-disk: {e}"))?;
        if !status.success() {
            return Err("vitastor-disk prepare failed".into());
        }
        let mut command = bench.osd_command(osd);
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
        r#"{"name":"bench","size":268435456}"#,
    );
    bench.etcd.put(
        &format!("{PREFIX}/index/image/bench"),
        r#"{"id":1,"pool_id":1}"#,
    );
    bench.wait("every PG to become active", Duration::from_secs(120), |b| {
        b.clean()
    })?;

    Ok(bench)
}

fn one_kill(
    bench: &mut Bench,
    iodepth: u32,
    victim: u64,
    runtime: u64,
    warmup: u64,
    index: usize,
    freeze: Option<Duration>,
) -> Result<KillResult, String> {
    let log_prefix = bench.dir.join(format!("qd{iodepth}-kill{index}"));
    let engine = bench.binary("libfio_vitastor.so");
    let mut fio = Command::new("fio")
        .args(["--name=failover", "--rw=randwrite", "--bs=4k", "--direct=1"])
        .arg(format!("--iodepth={iodepth}"))
        .args(["--time_based", "--size=256m"])
        .arg(format!("--runtime={runtime}"))
        .arg(format!("--ioengine=external:{}", engine.display()))
        .arg(format!("--etcd={}", bench.etcd.address))
        .arg("--image=bench")
        .arg(format!("--write_lat_log={}", log_prefix.display()))
        .args(["--log_avg_msec=0", "--output-format=terse"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run fio: {e}"))?;
    // A benchmark schedule, not synchronization: the kill lands in steady state.
    std::thread::sleep(Duration::from_secs(warmup));
    let state_key = format!("{PREFIX}/osd/state/{victim}");
    let killed = Instant::now();
    let name = format!("osd{victim}");
    let mut frozen = freeze.is_some();
    if frozen {
        bench.processes.signal(&name, libc::SIGSTOP);
    } else {
        bench.processes.kill(&name);
    }
    let mut state_gone_ms = None;
    let fio_status = loop {
        if frozen && freeze.is_some_and(|f| killed.elapsed() >= f) {
            bench.processes.signal(&name, libc::SIGCONT);
            frozen = false;
        }
        if state_gone_ms.is_none() && bench.etcd.get(&state_key).is_none() {
            state_gone_ms = Some(killed.elapsed().as_millis() as u64);
        }
        if let Some(status) = fio.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        // Requests that never complete keep fio from ending: record the run as hung
        // (the gap is then at least this long) instead of waiting for ever.
        if killed.elapsed() > Duration::from_secs(runtime + FIO_HANG_LIMIT_S) {
            // SAFETY: signals the process group of the fio we started (fio forks its
            // job processes into it).
            unsafe { libc::kill(-(fio.id() as i32), libc::SIGKILL) };
            let _ = fio.wait();
            let logs = bench.dir.with_extension(format!("hung-{index}"));
            let _ = std::fs::create_dir_all(&logs);
            for log in ["osd1", "osd2", "osd3", "mon"] {
                let from = bench.dir.join(format!("{log}.log"));
                let _ = std::fs::copy(from, logs.join(format!("{log}.log")));
            }
            eprintln!(
                "  fio did not finish {FIO_HANG_LIMIT_S} s after its runtime: client requests hang (logs in {})",
                logs.display()
            );
            return Ok(KillResult {
                osd: victim,
                gap_ms: killed.elapsed().as_millis() as u64,
                max_latency_ms: killed.elapsed().as_secs_f64() * 1000.0,
                state_gone_ms,
                ops: 0,
                hung: true,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if !fio_status.success() {
        let mut stderr = String::new();
        if let Some(mut pipe) = fio.stderr.take() {
            use std::io::Read;
            let _ = pipe.read_to_string(&mut stderr);
        }
        return Err(format!("fio failed: {stderr}"));
    }
    if frozen {
        bench.processes.signal(&name, libc::SIGCONT);
    }
    let log = PathBuf::from(format!("{}_lat.1.log", log_prefix.display()));
    let (gap_ms, max_latency_ms, ops) = analyse(&log)?;
    for suffix in ["lat", "clat", "slat"] {
        let _ = std::fs::remove_file(format!("{}_{suffix}.1.log", log_prefix.display()));
    }

    Ok(KillResult {
        osd: victim,
        gap_ms,
        max_latency_ms,
        state_gone_ms,
        ops,
        hung: false,
    })
}

/// (longest gap between consecutive completions in ms, longest op latency in ms, ops)
/// from a fio latency log (`time_ms, latency_ns, direction, bs, offset[, prio]`).
fn analyse(log: &Path) -> Result<(u64, f64, usize), String> {
    let text = std::fs::read_to_string(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut times = Vec::new();
    let mut max_latency_ns = 0u64;
    for line in text.lines() {
        let mut fields = line.split(',').map(str::trim);
        let (Some(time), Some(latency)) = (fields.next(), fields.next()) else {
            continue;
        };
        let (Ok(time), Ok(latency)) = (time.parse::<u64>(), latency.parse::<u64>()) else {
            continue;
        };
        times.push(time);
        max_latency_ns = max_latency_ns.max(latency);
    }
    if times.len() < 2 {
        return Err(format!("{}: fewer than 2 completions", log.display()));
    }
    times.sort_unstable();
    let gap = times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    Ok((gap, max_latency_ns as f64 / 1e6, times.len()))
}

fn summary(values: &mut [u64]) -> (u64, u64, u64) {
    values.sort_unstable();
    let median = values[values.len() / 2];
    (values[0], median, values[values.len() - 1])
}

fn publish(
    args: &Args,
    results: &[(u32, Vec<KillResult>)],
    runtime: u64,
    warmup: u64,
) -> Result<(), String> {
    std::fs::create_dir_all(&args.results)
        .map_err(|e| format!("{}: {e}", args.results.display()))?;
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    // A COMMIT file next to the binaries (written by whoever copied them there) names the
    // source they were built from.
    let commit = args
        .bin_dir
        .as_ref()
        .and_then(|d| std::fs::read_to_string(d.join("COMMIT")).ok())
        .map(|c| c.trim().to_string());
    let json = serde_json::json!({
        "label": args.label,
        "date": date,
        "bin_dir": args.bin_dir.as_ref().map(|d| d.display().to_string()),
        "commit": commit,
        "fio_runtime_s": runtime,
        "kill_after_s": warmup,
        "signal": args.signal,
        "global": args.global,
        "freeze_s": (args.signal == "stop").then_some(args.freeze),
        "loads": results.iter().map(|(iodepth, runs)| serde_json::json!({
            "iodepth": iodepth,
            "kills": runs.iter().map(|r| serde_json::json!({
                "osd": r.osd,
                "gap_ms": r.gap_ms,
                "max_latency_ms": r.max_latency_ms,
                "state_gone_ms": r.state_gone_ms,
                "ops": r.ops,
                "hung": r.hung,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    });
    let path = args.results.join(format!("{}.json", args.label));
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&json).expect("serializes"),
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("wrote {}", path.display());
    write_report(&args.results)
}

/// Rebuilds `report.md` from every `<label>.json` in the results folder.
fn write_report(results: &Path) -> Result<(), String> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(results)
        .map_err(|e| format!("{}: {e}", results.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    // Oldest measurement first (before, then after).
    entries.sort_by_key(|path| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|j| j["date"].as_str().map(str::to_string))
            .unwrap_or_default()
    });
    let mut out = String::from(
        "# bench-failover: client I/O gap after `kill -9` (or SIGSTOP) of a primary OSD\n\n\
         3 OSDs, a 2-replica pool of 32 PGs, immediate_commit=all, lease TTL 15 s (default \
         `etcd_report_interval` 5 s), monitor with its defaults; fio 4k randwrite through \
         libfio_vitastor.so. Gap = longest time between two consecutive fio completions in \
         the run (`write_lat_log`, every op). \"lease gone\" = time from the kill until the \
         killed OSD's `/osd/state` key disappeared.\n\n\
         | run | load | kills | gap min / median / max (ms) | longest op max (ms) | lease gone median (ms) |\n\
         |---|---|---|---|---|---|\n",
    );
    for path in &entries {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let label = json["label"].as_str().unwrap_or("?");
        let date = json["date"].as_str().unwrap_or("");
        for load in json["loads"].as_array().into_iter().flatten() {
            let kills = load["kills"].as_array().cloned().unwrap_or_default();
            if kills.is_empty() {
                continue;
            }
            let mut gaps: Vec<u64> = kills.iter().filter_map(|k| k["gap_ms"].as_u64()).collect();
            let mut gone: Vec<u64> = kills
                .iter()
                .filter_map(|k| k["state_gone_ms"].as_u64())
                .collect();
            let longest = kills
                .iter()
                .filter_map(|k| k["max_latency_ms"].as_f64())
                .fold(0.0f64, f64::max);
            let (min, median, max) = summary(&mut gaps);
            let gone_median = if gone.is_empty() {
                "-".to_string()
            } else {
                summary(&mut gone).1.to_string()
            };
            let depth = match load["iodepth"].as_u64() {
                Some(1) => "T1Q1".to_string(),
                Some(depth) => format!("QD{depth}"),
                None => "?".to_string(),
            };
            let signal = match json["signal"].as_str() {
                Some("stop") => format!("SIGSTOP {} s", json["freeze_s"]),
                _ => "kill -9".to_string(),
            };
            let load_name = format!("{depth}, {signal}");
            let hung = kills.iter().filter(|k| k["hung"] == true).count();
            let hung_note = if hung > 0 {
                format!(" ({hung} hung: fio never finished, gap counted until it was killed)")
            } else {
                String::new()
            };
            out.push_str(&format!(
                "| {label} ({date}) | {load_name} | {}{hung_note} | {min} / {median} / {max} | {longest:.0} | {gone_median} |\n",
                kills.len()
            ));
        }
    }
    out.push_str("\nBinaries per run:\n\n");
    for path in &entries {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        out.push_str(&format!(
            "- {}: {} (commit {}), fio {} s per kill, kill after {} s, /config/global {}\n",
            json["label"].as_str().unwrap_or("?"),
            json["bin_dir"].as_str().unwrap_or("next to bench-failover"),
            json["commit"].as_str().unwrap_or("unknown"),
            json["fio_runtime_s"],
            json["kill_after_s"],
            json["global"]
                .as_str()
                .unwrap_or(r#"{"immediate_commit":"all"}"#),
        ));
    }
    let path = results.join("report.md");
    std::fs::write(&path, out).map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
