//! `bench-osd`: T1Q1 4 KiB write and read latency through the wire protocol against a
//! 2-replica pool served by two local `vitastor-osd` processes (on files, with a real etcd),
//! beside fio on the raw filesystem in the same run.
//!
//! Runs twice: with the OSDs fsyncing every write (`immediate_commit=all`, compared with raw
//! write+fdatasync) and with `--disable_data_fsync` (compared with raw writes without fsync).
//! Needs the release binaries: `cargo build --release -j2 -p vitastor-osd` first.

use clap::Parser;
use rand::{Rng, SeedableRng};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};
use vitastor_bench::fio::{self, FioJob};
use vitastor_bench::report::{self, Metric, Row, Target};
use vitastor_bench::stats::{LatencyRecorder, RunStats};
use vitastor_proto::wire::request::Rw;
use vitastor_proto::wire::{encode_request, ReplyDecoder, Request, RequestBody};

#[derive(Parser, Debug)]
#[command(name = "bench-osd")]
struct Args {
    /// Scratch directory for etcd, the OSD files and the raw fio file.
    #[arg(long, default_value = "target/bench-osd")]
    dir: PathBuf,
    #[arg(long, default_value = "bench/results/osd")]
    results: PathBuf,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10)]
    runtime: u64,
    /// 2-second runs (smoke test).
    #[arg(long)]
    short: bool,
}

const INODE: u64 = 1 << 48 | 1;
const SPAN: u64 = 64 << 20;
const BLOCK: u64 = 128 << 10;

struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

fn wait_for(what: &str, mut condition: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition() {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn etcdctl(endpoint: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(args)
        .output()
        .map_err(|e| format!("cannot run etcdctl (apt install etcd-client): {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

fn binary(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let path = exe.with_file_name(name);
    if !path.exists() {
        return Err(format!(
            "{} not found: build it first with `cargo build --release -j2 -p vitastor-osd`",
            path.display()
        ));
    }
    Ok(path)
}

/// etcd plus two OSDs serving pool 1 (2 replicas, one PG); returns the primary's address.
fn start_cluster(dir: &Path, disable_fsync: bool) -> Result<(Processes, String), String> {
    let _ = std::fs::remove_dir_all(dir.join("etcd"));
    let mut processes = Processes(Vec::new());
    let (client_port, peer_port) = (free_port()?, free_port()?);
    let etcd = vitastor_local::etcd_command(dir, client_port, peer_port)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start etcd (apt install etcd-server): {e}"))?;
    processes.0.push(etcd);
    let endpoint = format!("127.0.0.1:{client_port}");
    wait_for("etcd", || {
        etcdctl(&endpoint, &["endpoint", "health"]).is_ok()
    })?;
    etcdctl(
        &endpoint,
        &[
            "put",
            "/vitastor/config/pools",
            r#"{"1":{"name":"bench","scheme":"replicated","pg_size":2,"pg_minsize":1,"pg_count":1,"failure_domain":"osd"}}"#,
        ],
    )?;
    etcdctl(
        &endpoint,
        &[
            "put",
            "/vitastor/pg/config",
            r#"{"items":{"1":{"1":{"osd_set":[1,2],"primary":1}}}}"#,
        ],
    )?;
    for num in 1..=2u64 {
        let file = dir.join(format!("osd{num}.bin"));
        std::fs::File::create(&file)
            .and_then(|f| f.set_len(1 << 30))
            .map_err(|e| format!("{}: {e}", file.display()))?;
        let status = Command::new(binary("vitastor-disk")?)
            .args(["prepare", "--data_device", &file.display().to_string()])
            .stdout(Stdio::null())
            .status()
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err("vitastor-disk prepare failed".to_string());
        }
        let mut command = Command::new(binary("vitastor-osd")?);
        command
            .args(["--osd_num", &num.to_string()])
            .args(["--data_device", &file.display().to_string()])
            .args(["--etcd_address", &endpoint])
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(dir.join(format!("osd{num}.log")))
                    .map_err(|e| e.to_string())?,
            );
        if disable_fsync {
            command.arg("--disable_data_fsync");
        }
        processes.0.push(
            command
                .spawn()
                .map_err(|e| format!("cannot start vitastor-osd: {e}"))?,
        );
    }
    wait_for("the PG to become active", || {
        etcdctl(
            &endpoint,
            &["get", "--print-value-only", "/vitastor/pg/state/1/1"],
        )
        .is_ok_and(|v| v.contains("\"active\"") && !v.contains("degraded"))
    })?;
    let state = etcdctl(
        &endpoint,
        &["get", "--print-value-only", "/vitastor/osd/state/1"],
    )?;
    let state: serde_json::Value = serde_json::from_str(state.trim()).map_err(|e| e.to_string())?;
    let address = format!(
        "{}:{}",
        state["addresses"][0].as_str().unwrap_or("127.0.0.1"),
        state["port"]
    );
    Ok((processes, address))
}

struct Client {
    stream: TcpStream,
    decoder: ReplyDecoder,
    buf: Vec<u8>,
    id: u64,
}

impl Client {
    fn call(&mut self, body: RequestBody, payload: &[u8]) -> Result<i64, String> {
        self.id += 1;
        let bytes =
            encode_request(&Request { id: self.id, body }, payload).map_err(|e| e.to_string())?;
        self.stream.write_all(&bytes).map_err(|e| e.to_string())?;
        loop {
            if let Some((reply, _)) = self.decoder.next_reply().map_err(|e| e.to_string())? {
                return Ok(reply.retval);
            }
            let n = self.stream.read(&mut self.buf).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("the OSD closed the connection".to_string());
            }
            self.decoder.push(&self.buf[..n]);
        }
    }
}

fn rw(offset: u64, len: u32) -> Rw {
    Rw {
        inode: INODE,
        offset,
        len,
        ..Rw::default()
    }
}

/// T1Q1 random 4 KiB ops for `seconds`.
fn measure(client: &mut Client, write: bool, seconds: u64) -> Result<RunStats, String> {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    let data = vec![0x5au8; 4096];
    let mut recorder = LatencyRecorder::default();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(seconds) {
        let offset = rng.gen_range(0..SPAN / 4096) * 4096;
        let began = Instant::now();
        let retval = if write {
            client.call(RequestBody::Write(rw(offset, 4096)), &data)?
        } else {
            client.call(RequestBody::Read(rw(offset, 4096)), &[])?
        };
        recorder.record(began.elapsed());
        if retval != 4096 {
            return Err(format!("op at {offset} failed: {retval}"));
        }
    }
    Ok(recorder.finish(start.elapsed(), 4096))
}

fn run(args: Args) -> Result<(), String> {
    if fio::fio_version().is_none() {
        return Err(
            "fio is not installed (apt install fio); it measures the raw device".to_string(),
        );
    }
    std::fs::create_dir_all(&args.dir).map_err(|e| format!("{}: {e}", args.dir.display()))?;
    let seconds = if args.short { 2 } else { args.runtime };
    let raw_file = args.dir.join("raw.bin");
    fio::prefill(&raw_file, SPAN)?;
    let raw_job = |rw: &'static str, fdatasync: bool| FioJob {
        rw,
        block_size: 4096,
        iodepth: 1,
        fdatasync,
        runtime_s: seconds,
        size: SPAN,
    };
    let mut rows = Vec::new();
    for disable_fsync in [false, true] {
        let (_processes, address) = start_cluster(&args.dir, disable_fsync)?;
        let stream = TcpStream::connect(&address).map_err(|e| format!("{address}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let mut client = Client {
            stream,
            decoder: ReplyDecoder::new(),
            buf: vec![0u8; 1 << 20],
            id: 0,
        };
        // Fill the span so reads find data.
        let block = vec![0xa5u8; BLOCK as usize];
        for offset in (0..SPAN).step_by(BLOCK as usize) {
            client.call(RequestBody::Write(rw(offset, BLOCK as u32)), &block)?;
        }
        let ours_write = measure(&mut client, true, seconds)?;
        let raw_write = fio::run(&raw_file, &raw_job("randwrite", !disable_fsync))?;
        let name = if disable_fsync {
            "T1Q1 4k write, --disable_data_fsync vs raw write"
        } else {
            "T1Q1 4k write, fsync every write vs raw write+fdatasync"
        };
        let limit = if disable_fsync { 2.0 } else { 1.5 };
        rows.push(Row {
            name: name.to_string(),
            metric: Metric::LatencyUs,
            raw: raw_write,
            ours: ours_write,
            target: Some(Target::AtMost(limit)),
        });
        if !disable_fsync {
            let ours_read = measure(&mut client, false, seconds)?;
            let raw_read = fio::run(&raw_file, &raw_job("randread", false))?;
            let limit = (raw_read.lat_avg_us + 40.0) / raw_read.lat_avg_us;
            rows.push(Row {
                name: "T1Q1 4k read (target: raw + 40 us)".to_string(),
                metric: Metric::LatencyUs,
                raw: raw_read,
                ours: ours_read,
                target: Some(Target::AtMost(limit)),
            });
        }
    }
    let configuration = vec![
        "2 vitastor-osd processes on 1 GiB files (same filesystem as the raw file), 1 PG, pool size 2, one client connection to the primary".to_string(),
        format!("{seconds} s per run over a {} MiB span; raw = fio io_uring direct=1 QD1", SPAN >> 20),
    ];
    report::publish(
        &args.results,
        "OSD: T1Q1 latency through the wire protocol",
        &configuration,
        &rows,
    )
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("bench-osd: {message}");
            ExitCode::FAILURE
        }
    }
}
