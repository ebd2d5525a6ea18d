//! `bench-nbd`: 4 KiB random reads and writes through `vitastor-nbd serve` with fio's nbd
//! engine (T1Q1 latency, QD32 IOPS) against a local cluster (etcd, monitor, 2 OSDs on
//! 1 GiB files, 2-replica pool, immediate_commit=all), beside fio io_uring direct on a raw
//! file of the same filesystem in the same run. Needs the release binaries:
//! `cargo build --release -j2 -p vitastor-osd -p vitastor-mon -p vitastor-nbd` first.

use clap::Parser;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use vitastor_bench::fio::{self, FioJob};
use vitastor_bench::report::{self, Metric, Row};
use vitastor_testkit::{wait_for, workspace_binary, LocalCluster};

#[derive(Parser, Debug)]
#[command(name = "bench-nbd")]
struct Args {
    #[arg(long, default_value = "bench/results/nbd")]
    results: PathBuf,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10)]
    runtime: u64,
    /// 2-second runs (smoke test).
    #[arg(long)]
    short: bool,
}

const IMAGE_SIZE: u64 = 256 << 20;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let seconds = if args.short { 2 } else { args.runtime };
    let cluster = LocalCluster::start_sized(
        "bench-nbd",
        2,
        1 << 30,
        r#"{"immediate_commit":"all"}"#,
        r#"{"1":{"name":"bench","scheme":"replicated","pg_size":2,"pg_minsize":1,"pg_count":8,"failure_domain":"osd"}}"#,
    );
    cluster.etcd.put(
        "/vitastor/config/inode/1/1",
        &format!(r#"{{"name":"bench","size":{IMAGE_SIZE}}}"#),
    );
    cluster.wait_active(1, 8, Duration::from_secs(60));
    let socket = cluster.scratch.0.join("nbd.sock");
    let server = Command::new(workspace_binary("vitastor-nbd"))
        .args([
            "serve",
            "--etcd_address",
            &cluster.etcd.address,
            "--image",
            "bench",
        ])
        .args(["--socket", socket.to_str().expect("utf-8")])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start vitastor-nbd: {e}"))?;
    let _server = Server(server);
    wait_for("the NBD socket", Duration::from_secs(20), || {
        socket.exists()
    });
    let uri = format!("nbd+unix:///?socket={}", socket.display());

    let job = |rw: &'static str, iodepth: u32, fdatasync: bool| FioJob {
        rw,
        block_size: 4096,
        iodepth,
        fdatasync,
        runtime_s: seconds,
        size: IMAGE_SIZE,
    };
    // Fill both sides so reads hit written blocks.
    fio::run_nbd(&uri, &FioJob::fill(IMAGE_SIZE, 1 << 20))?;
    let raw_dir = PathBuf::from("target/bench-nbd-raw");
    std::fs::create_dir_all(&raw_dir).map_err(|e| e.to_string())?;
    let raw_file = raw_dir.join("raw.bin");
    fio::prefill(&raw_file, IMAGE_SIZE)?;

    let mut rows = Vec::new();
    // immediate_commit=all: every acknowledged NBD write is fsynced on both OSDs, so the
    // raw side of the T1Q1 write row is write + fdatasync.
    for (name, rw, depth, metric, raw_sync) in [
        (
            "T1Q1 4k randwrite (raw: +fdatasync)",
            "randwrite",
            1,
            Metric::LatencyUs,
            true,
        ),
        ("T1Q1 4k randread", "randread", 1, Metric::LatencyUs, false),
        (
            "QD32 4k randwrite (raw: no sync)",
            "randwrite",
            32,
            Metric::Iops,
            false,
        ),
        ("QD32 4k randread", "randread", 32, Metric::Iops, false),
    ] {
        let ours = fio::run_nbd(&uri, &job(rw, depth, false))?;
        let raw = fio::run(&raw_file, &job(rw, depth, raw_sync))?;
        rows.push(Row {
            name: name.to_string(),
            metric,
            raw,
            ours,
            target: None,
        });
    }
    let configuration = vec![
        format!("date: {}", chrono_free_date()),
        "ours: fio ioengine=nbd -> vitastor-nbd serve (unix socket) -> client library -> 2 vitastor-osd (1 GiB files, 2-replica pool, 8 PGs, immediate_commit=all), etcd and vitastor-mon on the same machine".to_string(),
        format!("raw: {}, ioengine=io_uring, direct=1, 256 MiB file on the same filesystem", fio::fio_version().unwrap_or_default()),
        format!("{seconds} s per run, 256 MiB image prefilled"),
    ];
    let _ = std::fs::remove_file(&raw_file);
    report::publish(
        &args.results,
        "bench-nbd: vitastor-nbd vs raw",
        &configuration,
        &rows,
    )
}

fn chrono_free_date() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
