//! Blockstore benchmark: the blockstore on a file through io_uring, beside fio
//! (`ioengine=io_uring`, `direct=1`) on a file of the same filesystem, in the same run.
//!
//! Tests: 4 KiB random write + sync at depth 1 (latency), 4 KiB random write at depth 32,
//! 4 KiB random read at depth 1 and 32, 128 KiB random write at depth 8. The image is
//! filled before the tests so reads hit real data. Prints the table, writes `report.md`
//! and `chart.png` into `--results`. Exits non-zero only when it could not run.

use clap::Parser;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use vitastor_bench::fio::{self, FioJob};
use vitastor_bench::report::{self, Metric, Row, Target};
use vitastor_bench::stats::{process_cpu_time, LatencyRecorder, RunStats};
use vitastor_osd::blockstore::prepare::prepare;
use vitastor_osd::blockstore::uring::UringDisk;
use vitastor_osd::blockstore::{AlignedBuf, Blockstore, BlockstoreConfig, FormatOptions, Op, OpId};
use vitastor_proto::size::{format_size, parse_size};
use vitastor_proto::ObjectId;

#[derive(Parser)]
#[command(
    name = "bench-blockstore",
    about = "Blockstore vs raw file, side by side"
)]
struct Args {
    /// Directory for the data files (must be on a filesystem with O_DIRECT, not tmpfs).
    #[arg(long, default_value = "target/bench-data")]
    dir: PathBuf,
    /// Where report.md and chart.png go.
    #[arg(long, default_value = "bench/results/blockstore")]
    results: PathBuf,
    /// Image size the tests run over (raw file of the same size).
    #[arg(long, value_parser = parse_size, default_value = "1G")]
    size: u64,
    /// Seconds per test and side.
    #[arg(long, default_value_t = 10)]
    runtime: u64,
    /// Smoke mode for CI: 64M image, 1 second per test.
    #[arg(long)]
    short: bool,
    /// Run only the tests whose name contains this text (e.g. "QD32 4k randread").
    #[arg(long)]
    only: Option<String>,
    /// Skip fsyncs in the blockstore (drives with power-loss protection only).
    #[arg(long = "disable_fsync")]
    disable_fsync: bool,
}

const OBJECT_SIZE: u32 = 128 << 10;
const IMAGE_INODE: u64 = 1 << 48 | 1;

/// One access pattern.
#[derive(Clone, Copy)]
struct Pattern {
    name: &'static str,
    fio_rw: &'static str,
    io_size: u32,
    depth: usize,
    write: bool,
    sync_each: bool,
    metric: Metric,
    target: Option<Target>,
}

const PATTERNS: [Pattern; 5] = [
    Pattern {
        name: "T1Q1 4k randwrite+sync",
        fio_rw: "randwrite",
        io_size: 4096,
        depth: 1,
        write: true,
        sync_each: true,
        metric: Metric::LatencyUs,
        target: Some(Target::AtMost(1.3)),
    },
    Pattern {
        name: "QD32 4k randwrite",
        fio_rw: "randwrite",
        io_size: 4096,
        depth: 32,
        write: true,
        sync_each: false,
        metric: Metric::Iops,
        target: Some(Target::AtLeast(0.4)),
    },
    Pattern {
        name: "T1Q1 4k randread",
        fio_rw: "randread",
        io_size: 4096,
        depth: 1,
        write: false,
        sync_each: false,
        metric: Metric::Iops,
        target: Some(Target::AtLeast(0.8)),
    },
    Pattern {
        name: "QD32 4k randread",
        fio_rw: "randread",
        io_size: 4096,
        depth: 32,
        write: false,
        sync_each: false,
        metric: Metric::Iops,
        target: Some(Target::AtLeast(0.8)),
    },
    Pattern {
        name: "QD8 128k randwrite",
        fio_rw: "randwrite",
        io_size: 128 << 10,
        depth: 8,
        write: true,
        sync_each: false,
        metric: Metric::BandwidthMbS,
        target: None,
    },
];

struct Ours {
    store: Blockstore<UringDisk>,
    objects: u64,
    rng: SmallRng,
    template: Vec<u8>,
}

impl Ours {
    fn oid(&self, object: u64) -> ObjectId {
        ObjectId {
            inode: IMAGE_INODE,
            stripe: object * u64::from(OBJECT_SIZE),
        }
    }

    fn random_op(&mut self, pattern: &Pattern) -> Op {
        let object = self.rng.gen_range(0..self.objects);
        let slots = OBJECT_SIZE / pattern.io_size;
        let offset = self.rng.gen_range(0..slots) * pattern.io_size;
        let oid = self.oid(object);
        if pattern.write {
            let start = self
                .rng
                .gen_range(0..self.template.len() - pattern.io_size as usize);
            let data =
                AlignedBuf::from_slice(&self.template[start..start + pattern.io_size as usize]);
            Op::Write {
                oid,
                version: 0,
                offset,
                data,
                stable: true,
            }
        } else {
            Op::Read {
                oid,
                offset,
                len: pattern.io_size,
            }
        }
    }

    /// Writes every object once (128 KiB each, depth 16) and flushes.
    fn fill(&mut self) -> Result<(), String> {
        let mut next = 0;
        let mut inflight = 0;
        let mut done = Vec::new();
        while next < self.objects || inflight > 0 {
            while inflight < 16 && next < self.objects {
                let data = AlignedBuf::from_slice(&self.template[..OBJECT_SIZE as usize]);
                self.store.submit(Op::Write {
                    oid: self.oid(next),
                    version: 0,
                    offset: 0,
                    data,
                    stable: true,
                });
                next += 1;
                inflight += 1;
            }
            self.store.poll(true).map_err(|e| e.to_string())?;
            self.store.take_completions(&mut done);
            for completion in done.drain(..) {
                completion
                    .result
                    .map_err(|e| format!("fill write failed: {e}"))?;
                inflight -= 1;
            }
        }
        self.store.run(Op::Sync).map_err(|e| e.to_string())?;
        self.store.flush_all().map_err(|e| e.to_string())
    }

    fn run(&mut self, pattern: &Pattern, runtime: Duration) -> Result<RunStats, String> {
        let mut recorder = LatencyRecorder::default();
        let mut inflight: HashMap<OpId, (Instant, bool)> = HashMap::new();
        let mut done = Vec::new();
        let cpu_before = process_cpu_time();
        let start = Instant::now();
        let deadline = start + runtime;
        for _ in 0..pattern.depth {
            let op = self.random_op(pattern);
            inflight.insert(self.store.submit(op), (Instant::now(), false));
        }
        while !inflight.is_empty() {
            self.store.poll(true).map_err(|e| e.to_string())?;
            self.store.take_completions(&mut done);
            for completion in done.drain(..) {
                let Some((started, was_sync)) = inflight.remove(&completion.id) else {
                    continue;
                };
                if let Err(error) = completion.result {
                    return Err(format!("{} failed: {error}", pattern.name));
                }
                if pattern.sync_each && !was_sync {
                    inflight.insert(self.store.submit(Op::Sync), (started, true));
                    continue;
                }
                recorder.record(started.elapsed());
                if Instant::now() < deadline {
                    let op = self.random_op(pattern);
                    inflight.insert(self.store.submit(op), (Instant::now(), false));
                }
            }
        }
        let elapsed = start.elapsed();
        let mut stats = recorder.finish(elapsed, u64::from(pattern.io_size));
        if stats.ops > 0 {
            stats.cpu_us_per_op =
                Some((process_cpu_time() - cpu_before).as_secs_f64() * 1e6 / stats.ops as f64);
        }
        Ok(stats)
    }
}

fn data_file(path: &Path, size: u64) -> Result<(), String> {
    let file = std::fs::File::create(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.set_len(size)
        .map_err(|e| format!("cannot size {}: {e}", path.display()))
}

fn run(args: Args) -> Result<(), String> {
    let (size, runtime_s, journal_size) = if args.short {
        (64 << 20, 1, 8 << 20)
    } else {
        (args.size, args.runtime, 32 << 20)
    };
    let size = size / u64::from(OBJECT_SIZE) * u64::from(OBJECT_SIZE);
    let fio_version = fio::fio_version().ok_or("fio is not installed (apt-get install fio)")?;
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| format!("cannot create {}: {e}", args.dir.display()))?;
    let raw_path = args.dir.join("raw.bin");
    let ours_path = args.dir.join("blockstore.bin");
    // Headroom for redirected writes and metadata: 1.5x the image plus the journal.
    // Both files are written in full first, so neither pays for allocating a sparse file.
    let ours_size = size / 2 * 3 + journal_size + (64 << 20);
    data_file(&ours_path, ours_size)?;
    eprintln!(
        "filling the blockstore file ({})...",
        format_size(ours_size)
    );
    fio::prefill(&ours_path, ours_size)?;
    eprintln!("filling the raw file ({})...", format_size(size));
    fio::prefill(&raw_path, size)?;

    let mut disk = UringDisk::open(&ours_path).map_err(|e| e.to_string())?;
    let options = FormatOptions {
        journal_size,
        ..FormatOptions::default()
    };
    prepare(&mut disk, &options).map_err(|e| e.to_string())?;
    let config = BlockstoreConfig {
        disable_fsync: args.disable_fsync,
        ..BlockstoreConfig::default()
    };
    let store = Blockstore::open(disk, config).map_err(|e| e.to_string())?;
    let mut template = vec![0u8; (OBJECT_SIZE as usize) * 2];
    SmallRng::seed_from_u64(1).fill(&mut template[..]);
    let mut ours = Ours {
        store,
        objects: size / u64::from(OBJECT_SIZE),
        rng: SmallRng::seed_from_u64(2),
        template,
    };
    eprintln!("filling the blockstore image...");
    ours.fill()?;

    let runtime = Duration::from_secs(runtime_s);
    let mut rows = Vec::new();
    let mut device_costs: Vec<String> = Vec::new();
    for pattern in PATTERNS {
        if args
            .only
            .as_ref()
            .is_some_and(|only| !pattern.name.contains(only.as_str()))
        {
            continue;
        }
        eprintln!("{}: raw...", pattern.name);
        let job = FioJob {
            rw: pattern.fio_rw,
            block_size: u64::from(pattern.io_size),
            iodepth: pattern.depth as u32,
            fdatasync: pattern.sync_each,
            runtime_s,
            size,
        };
        let raw = fio::run(&raw_path, &job)?;
        eprintln!("{}: ours...", pattern.name);
        // Each test starts from a flushed journal, as each fio job starts fresh.
        ours.store.flush_all().map_err(|e| e.to_string())?;
        let before = ours.store.stats();
        let ours_stats = ours.run(&pattern, runtime)?;
        // Flushing what the test wrote is part of what its writes cost the device.
        ours.store.flush_all().map_err(|e| e.to_string())?;
        let after = ours.store.stats();
        let user_writes =
            (after.small_writes + after.big_writes) - (before.small_writes + before.big_writes);
        if user_writes > 0 {
            let per = |a: u64, b: u64| (a - b) as f64 / user_writes as f64;
            device_costs.push(format!(
                "{}: per user write the device got {:.2} writes of {:.1} KiB in all and {:.2} fsyncs ({} syncs took {} group fsyncs)",
                pattern.name,
                per(after.device_writes, before.device_writes),
                per(after.device_write_bytes, before.device_write_bytes) / 1024.0,
                per(after.device_fsyncs, before.device_fsyncs),
                after.syncs - before.syncs,
                after.fsyncs - before.fsyncs,
            ));
        }
        rows.push(Row {
            name: pattern.name.to_string(),
            metric: pattern.metric,
            raw,
            ours: ours_stats,
            target: pattern.target,
        });
    }
    let stats = ours.store.stats();
    let memory = ours.store.memory_bytes();
    drop(ours);
    std::fs::remove_file(&raw_path).ok();
    std::fs::remove_file(&ours_path).ok();

    let configuration = vec![
        format!("date: {}", chrono_free_date()),
        format!("image {} over a {}-object blockstore file, {} journal, 128 KiB blocks, 4 KiB granularity", format_size(size), size / u64::from(OBJECT_SIZE), format_size(journal_size)),
        format!("raw: {fio_version}, ioengine=io_uring, direct=1, file on the same filesystem ({})", args.dir.display()),
        format!("ours: blockstore in-process, io_uring + O_DIRECT, one thread; fsync {}", if args.disable_fsync { "disabled" } else { "enabled" }),
        format!("{runtime_s} s per test and side; ours/raw compares latency for latency rows, IOPS or MB/s otherwise"),
        format!(
            "blockstore counters: {} small writes, {} big writes, {} syncs, {} flush batches ({} objects), {} waits for space, {} checksum errors; memory {}",
            stats.small_writes, stats.big_writes, stats.syncs, stats.flush_batches, stats.flushed_objects, stats.space_waits, stats.csum_errors, format_size(memory as u64)
        ),
    ];
    let configuration: Vec<String> = configuration.into_iter().chain(device_costs).collect();
    report::publish(
        &args.results,
        "Blockstore vs raw file",
        &configuration,
        &rows,
    )
}

/// UTC date and time from the system clock, without a date crate.
fn chrono_free_date() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output();
    out.ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("bench-blockstore: {message}");
            ExitCode::FAILURE
        }
    }
}
