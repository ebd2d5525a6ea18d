//! `bench-cluster`: BENCH.md's standard set through our fio engine against a local cluster
//! (vitastor-local: etcd, monitor, 3 OSDs on files, 2-replica pool, immediate_commit=all),
//! and the same fio jobs on a raw file of the same filesystem, in one run. Then a verified
//! run (randwrite, verify=crc32c) whose failure fails the benchmark.
//!
//! `--peer DIR` runs the same tests side by side against a Vitastor build in DIR as well,
//! in two fsync modes (`vitastor_bench::side_by_side`); without it nothing changes.
//!
//! Needs the release binaries: `cargo build --release -j2 -p vitastor-osd -p vitastor-mon
//! -p vitastor-fio` (the README's main command does it).

use clap::Parser;
use std::path::PathBuf;
use std::process::Command;
use vitastor_bench::fio::{self, FioJob};
use vitastor_bench::report::{self, Row, Target};
use vitastor_bench::side_by_side;
use vitastor_bench::standard::TESTS;
use vitastor_local::{binary, Cluster, Config};

#[derive(Parser, Debug)]
#[command(name = "bench-cluster")]
struct Args {
    /// Where the cluster's files go.
    #[arg(long, default_value = "target/bench-cluster")]
    dir: PathBuf,
    #[arg(long, default_value = "bench/results/cluster")]
    results: PathBuf,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10)]
    runtime: u64,
    /// 2-second runs on a 256 MiB image (smoke test for CI).
    #[arg(long)]
    short: bool,
    /// An EC pool of K data and M parity chunks (`2+1`) instead of 2 replicas.
    #[arg(long)]
    ec: Option<String>,
    /// Also run against a Vitastor cluster built in DIR (vitastor-osd, vitastor-disk,
    /// vitastor-cli, libfio_vitastor.so, mon/), alternating the systems, in two fsync
    /// modes; the report adds Vitastor, the ratios and report.json.
    #[arg(long, value_name = "DIR")]
    peer: Option<PathBuf>,
    /// With --peer: runs per system and test, alternated (medians are reported).
    #[arg(long, default_value_t = 2)]
    alternations: u32,
}

fn main() -> std::process::ExitCode {
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench-cluster: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let seconds = if args.short { 2 } else { args.runtime };
    if let Some(peer_bin) = args.peer {
        if args.ec.is_some() {
            return Err("--peer compares 2-replica pools: drop --ec".into());
        }
        return side_by_side::run(&side_by_side::Options {
            peer_bin,
            dir: args.dir,
            results: args.results,
            seconds,
            short: args.short,
            alternations: args.alternations,
        });
    }
    let image_size: u64 = if args.short { 256 << 20 } else { 1 << 30 };
    let engine = binary("libfio_vitastor.so");
    if !engine.exists() {
        return Err(format!(
            "{} is missing: cargo build --release -p vitastor-fio",
            engine.display()
        ));
    }
    let (pg_size, parity_chunks) = match args.ec.as_deref() {
        None => (2, 0),
        Some(spec) => {
            let parsed = spec
                .split_once('+')
                .and_then(|(k, m)| Some((k.parse::<u32>().ok()?, m.parse::<u32>().ok()?)));
            match parsed {
                Some((k, m)) if k >= 1 && m >= 1 && k + m <= 3 => (k + m, m),
                _ => return Err(format!("--ec {spec}: want K+M with K+M <= 3 (3 OSDs)")),
            }
        }
    };
    let pool = match parity_chunks {
        0 => "pool of 2 replicas".to_string(),
        m => format!("EC pool {}+{m}", pg_size - m),
    };
    let _ = std::fs::remove_dir_all(&args.dir);
    let config = Config {
        dir: args.dir.join("cluster"),
        osds: 3,
        osd_size: if args.short { 1 << 30 } else { 2 << 30 },
        pg_size,
        parity_chunks,
        pg_count: 32,
        immediate_commit: "all".into(),
        disable_data_fsync: false,
        image: "bench".into(),
        image_size,
        etcd_port: 0,
    };
    eprintln!("starting the local cluster in {}", config.dir.display());
    let cluster = Cluster::start(config)?;
    let target = vec![
        format!("--ioengine=external:{}", engine.display()),
        format!("--etcd={}", cluster.etcd_address),
        "--image=bench".to_string(),
    ];
    let raw_file = args.dir.join("raw.bin");
    eprintln!(
        "filling the image and the raw file ({} MiB)",
        image_size >> 20
    );
    let fill = FioJob::fill(image_size, 4 << 20);
    fio::run_with(&target, &fill)?;
    fio::prefill(&raw_file, image_size)?;

    let mut rows = Vec::new();
    for test in &TESTS {
        eprintln!("{}", test.name);
        let job = FioJob {
            rw: test.rw,
            block_size: test.block_size,
            iodepth: test.iodepth,
            fdatasync: test.fsync,
            runtime_s: seconds,
            size: image_size,
        };
        let ours = fio::run_with(&target, &job)?;
        let raw = fio::run(&raw_file, &job)?;
        let target_ratio = match test.rw {
            "randwrite" if test.iodepth == 1 => Some(Target::AtMost(1.5)),
            "randread" if test.iodepth == 1 => {
                Some(Target::AtMost((raw.lat_avg_us + 40.0) / raw.lat_avg_us))
            }
            "randwrite" => Some(Target::AtLeast(0.4)),
            "randread" => Some(Target::AtLeast(0.6)),
            _ => Some(Target::AtLeast(0.5)),
        };
        rows.push(Row {
            name: test.name.to_string(),
            metric: test.metric,
            raw,
            ours,
            target: target_ratio,
        });
    }
    let _ = std::fs::remove_file(&raw_file);

    eprintln!("verified run: randwrite 4k QD16 verify=crc32c");
    fio::verified_run(&target)?;
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let configuration = vec![
        format!("date: {date}"),
        format!("ours: fio + libfio_vitastor.so -> 3 vitastor-osd on {} files, {pool}, 32 PGs, immediate_commit=all (data fsynced before every ack), 128 KiB objects (chunks); etcd and vitastor-mon on the same 2-core machine", if args.short { "1 GiB" } else { "2 GiB" }),
        format!("raw: {}, ioengine=io_uring, direct=1, a {} MiB file on the same filesystem; T1Q1 write with fdatasync after every write", fio::fio_version().unwrap_or_default(), image_size >> 20),
        format!("{seconds} s per test and side, image prefilled; a verified randwrite (crc32c, QD16, 32 MiB) passed"),
    ];
    report::publish(
        &args.results,
        "bench-cluster: the standard set through the fio engine",
        &configuration,
        &rows,
    )?;
    drop(cluster);
    Ok(())
}
