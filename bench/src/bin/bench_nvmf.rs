//! `bench-nvmf`: 4 KiB random writes and reads at depth 1 and 32 through the NVMe-oF/TCP
//! gateway (`vitastor-nvmf`, driven by the small NVMe/TCP initiator of the nvmf crate: the
//! host kernel has no nvme-tcp), beside fio with the Vitastor engine (`libfio_vitastor.so`)
//! on the same image in the same run; the depth-1 rows give the gateway's added latency.
//! Local cluster: etcd, monitor, 2 OSDs on 1 GiB files, 2-replica pool, immediate_commit=all.
//! Needs the release binaries: `cargo build --release -j2 -p vitastor-osd -p vitastor-mon
//! -p vitastor-fio -p vitastor-nvmf` first.

use clap::Parser;
use rand::Rng;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vitastor_bench::fio::{self, FioJob};
use vitastor_bench::report::{self, Metric, Row};
use vitastor_bench::stats::LatencyRecorder;
use vitastor_nvmf::command::io_op;
use vitastor_nvmf::initiator::{connect_controller, Command as NvmeCommand};
use vitastor_testkit::{free_port, wait_for, workspace_binary, LocalCluster};

#[derive(Parser, Debug)]
#[command(name = "bench-nvmf")]
struct Args {
    #[arg(long, default_value = "bench/results/nvmf")]
    results: PathBuf,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10)]
    runtime: u64,
    /// 2-second runs (smoke test).
    #[arg(long)]
    short: bool,
}

const IMAGE_SIZE: u64 = 256 << 20;
const NQN: &str = "nqn.2016-06.io.spdk:bench";
const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:bench";
const BLOCK_BYTES: u64 = 4096;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn call(socket: &std::path::Path, method: &str, params: serde_json::Value) -> Result<(), String> {
    let mut stream = UnixStream::connect(socket).map_err(|e| format!("RPC socket: {e}"))?;
    let request =
        serde_json::json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1});
    stream
        .write_all(request.to_string().as_bytes())
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let reply: serde_json::Value = serde_json::from_str(&line).map_err(|e| e.to_string())?;
    match reply.get("error") {
        Some(error) => Err(format!("{method}: {error}")),
        None => Ok(()),
    }
}

/// One measurement through the gateway: `rw` at `depth` for `seconds`.
fn run_gateway(
    address: &str,
    write: bool,
    depth: u16,
    seconds: u64,
) -> Result<vitastor_bench::stats::RunStats, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let (_admin, mut io) = connect_controller(address, NQN, HOST)
            .await
            .map_err(|e| format!("connect: {e:?}"))?;
        let blocks = IMAGE_SIZE / BLOCK_BYTES;
        let mut rng = rand::thread_rng();
        let data = vec![0x5au8; BLOCK_BYTES as usize];
        let next = || {
            let slba = rng.gen_range(0..blocks);
            let mut command = NvmeCommand::new(if write { io_op::WRITE } else { io_op::READ });
            command.nsid = 1;
            command.cdw10 = slba as u32;
            command.cdw11 = (slba >> 32) as u32;
            command.cdw12 = 0;
            command.data_len = BLOCK_BYTES as u32;
            (command, write.then(|| data.clone()))
        };
        let started = Instant::now();
        let latencies = io
            .run_depth(depth, started + Duration::from_secs(seconds), next)
            .await
            .map_err(|e| format!("I/O: {e:?}"))?;
        let elapsed = started.elapsed();
        let mut recorder = LatencyRecorder::default();
        for latency in latencies {
            recorder.record(latency);
        }
        Ok(recorder.finish(elapsed, BLOCK_BYTES))
    })
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let seconds = if args.short { 2 } else { args.runtime };
    let engine = workspace_binary("libfio_vitastor.so");
    let cluster = LocalCluster::start_sized(
        "bench-nvmf",
        2,
        1 << 30,
        r#"{"immediate_commit":"all"}"#,
        r#"{"1":{"name":"bench","scheme":"replicated","pg_size":2,"pg_minsize":1,"pg_count":8,"failure_domain":"osd"}}"#,
    );
    cluster.etcd.put(
        "/vitastor/config/inode/1/1",
        &format!(r#"{{"name":"bench","size":{IMAGE_SIZE}}}"#),
    );
    cluster
        .etcd
        .put("/vitastor/index/image/bench", r#"{"id":1,"pool_id":1}"#);
    cluster.wait_active(1, 8, Duration::from_secs(60));
    let socket = cluster.scratch.0.join("nvmf.sock");
    let _gateway = Server(
        Command::new(workspace_binary("vitastor-nvmf"))
            .args(["--etcd_address", &cluster.etcd.address])
            .arg("--rpc-socket")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start vitastor-nvmf: {e}"))?,
    );
    wait_for("the RPC socket", Duration::from_secs(20), || {
        UnixStream::connect(&socket).is_ok()
    });
    let port = free_port();
    let listen = serde_json::json!({"trtype": "tcp", "adrfam": "ipv4", "traddr": "127.0.0.1", "trsvcid": port.to_string()});
    call(
        &socket,
        "nvmf_create_transport",
        serde_json::json!({"trtype": "TCP"}),
    )?;
    call(
        &socket,
        "bdev_vitastor_create",
        serde_json::json!({"name": "vol0", "image": "bench"}),
    )?;
    call(
        &socket,
        "nvmf_create_subsystem",
        serde_json::json!({"nqn": NQN, "allow_any_host": true}),
    )?;
    call(
        &socket,
        "nvmf_subsystem_add_ns",
        serde_json::json!({"nqn": NQN, "namespace": {"bdev_name": "vol0", "nsid": 1}}),
    )?;
    call(
        &socket,
        "nvmf_subsystem_add_listener",
        serde_json::json!({"nqn": NQN, "listen_address": listen}),
    )?;
    let address = format!("127.0.0.1:{port}");

    let fio_target = vec![
        format!("--ioengine=external:{}", engine.display()),
        format!("--etcd={}", cluster.etcd.address),
        "--image=bench".to_string(),
    ];
    let job = |rw: &'static str, iodepth: u32| FioJob {
        rw,
        block_size: BLOCK_BYTES,
        iodepth,
        fdatasync: false,
        runtime_s: seconds,
        size: IMAGE_SIZE,
    };
    // Fill the image so reads hit written blocks.
    fio::run_with(&fio_target, &FioJob::fill(IMAGE_SIZE, 1 << 20))?;
    let mut rows = Vec::new();
    for (name, rw, depth, metric) in [
        ("T1Q1 4k randwrite", "randwrite", 1u16, Metric::LatencyUs),
        ("T1Q1 4k randread", "randread", 1, Metric::LatencyUs),
        ("QD32 4k randwrite", "randwrite", 32, Metric::Iops),
        ("QD32 4k randread", "randread", 32, Metric::Iops),
    ] {
        let raw = fio::run_with(&fio_target, &job(rw, u32::from(depth)))?;
        let ours = run_gateway(&address, rw == "randwrite", depth, seconds)?;
        rows.push(Row {
            name: name.to_string(),
            metric,
            raw,
            ours,
            target: None,
        });
    }
    let added = |row: &Row| row.ours.lat_avg_us - row.raw.lat_avg_us;
    let configuration = vec![
        format!("date: {}", date()),
        "ours: bench's NVMe/TCP initiator (one queue, in-capsule 4 KiB writes) -> vitastor-nvmf (127.0.0.1) -> client library -> 2 vitastor-osd (1 GiB files, 2-replica pool, 8 PGs, immediate_commit=all); etcd and vitastor-mon on the same machine".to_string(),
        format!("raw column: {} with libfio_vitastor.so on the same image (the client library without the gateway)", fio::fio_version().unwrap_or_default()),
        format!("{seconds} s per run, 256 MiB image prefilled"),
        format!(
            "gateway's added latency at depth 1: write {:.1} us, read {:.1} us",
            added(&rows[0]),
            added(&rows[1])
        ),
    ];
    report::publish(
        &args.results,
        "bench-nvmf: NVMe/TCP gateway vs the fio engine",
        &configuration,
        &rows,
    )
}

fn date() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
