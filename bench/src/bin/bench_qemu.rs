//! `bench-qemu`: `qemu-img bench` (4 KiB, sequential, depth 1 and 32, writes then reads)
//! through the QEMU driver (block-vitastor.so preloaded), beside the same through
//! `vitastor-nbd serve` with QEMU's own nbd driver, and beside a raw file on the same
//! filesystem (cache=none, aio=native), in one run, against a local cluster (etcd,
//! monitor, 2 OSDs on 1 GiB files, 2-replica pool, immediate_commit=all). Needs the
//! release binaries: `cargo build --release -j2 -p vitastor-osd -p vitastor-mon
//! -p vitastor-nbd -p vitastor-qemu` first. Writes `report.md` under `--results`.

use clap::Parser;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use vitastor_testkit::{wait_for, workspace_binary, LocalCluster};

#[derive(Parser, Debug)]
#[command(name = "bench-qemu")]
struct Args {
    #[arg(long, default_value = "bench/results/qemu")]
    results: PathBuf,
    /// Requests per depth-1 run (depth-32 runs send 4 times as many).
    #[arg(long, default_value_t = 20000)]
    count: u64,
    /// 500 requests per run (smoke test).
    #[arg(long)]
    short: bool,
}

const IMAGE_SIZE: u64 = 512 << 20;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One `qemu-img bench` run: requests per second.
fn bench(
    preload: Option<&Path>,
    target: &str,
    extra: &[&str],
    write: bool,
    depth: u32,
    count: u64,
) -> Result<f64, String> {
    let mut command = Command::new("qemu-img");
    command
        .args(["bench", "-f", "raw", "-t", "none", "-s", "4096"])
        .args(["-c", &count.to_string(), "-d", &depth.to_string()])
        .args(extra);
    if write {
        command.arg("-w");
    }
    command.arg(target);
    if let Some(library) = preload {
        command.env("LD_PRELOAD", library);
    }
    let out = command
        .output()
        .map_err(|e| format!("cannot run qemu-img: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        return Err(format!(
            "qemu-img bench {target} failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // "Run completed in 3.380 seconds."
    let seconds: f64 = text
        .lines()
        .find_map(|line| line.strip_prefix("Run completed in "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no run time in qemu-img bench's output: {text}"))?;
    Ok(count as f64 / seconds)
}

fn date() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// "12345 iops (81 us)": IOPS and the mean time a request takes at that depth.
fn cell(iops: f64, depth: u32) -> String {
    format!("{iops:.0} iops ({:.0} us)", f64::from(depth) * 1e6 / iops)
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let count = if args.short { 500 } else { args.count };
    let driver = workspace_binary("libblock_vitastor.so");
    let cluster = LocalCluster::start_sized(
        "bench-qemu",
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
    let vitastor = format!(
        "vitastor:etcd_host={}:image=bench",
        cluster.etcd.address.replace(':', "\\:")
    );
    let socket = cluster.scratch.0.join("nbd.sock");
    let server = Command::new(workspace_binary("vitastor-nbd"))
        .args(["serve", "--etcd_address", &cluster.etcd.address])
        .args(["--image", "bench", "--socket"])
        .arg(&socket)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start vitastor-nbd: {e}"))?;
    let _server = Server(server);
    wait_for("the NBD socket", Duration::from_secs(20), || {
        socket.exists()
    });
    let nbd = format!("nbd+unix:///?socket={}", socket.display());
    let raw_dir = PathBuf::from("target/bench-qemu-raw");
    std::fs::create_dir_all(&raw_dir).map_err(|e| e.to_string())?;
    let raw = raw_dir.join("raw.bin");
    std::fs::File::create(&raw)
        .and_then(|f| f.set_len(IMAGE_SIZE))
        .map_err(|e| format!("cannot create {}: {e}", raw.display()))?;
    let raw_name = raw.to_str().expect("utf-8 path").to_string();

    let mut table = String::from(
        "| test | raw file | QEMU driver | vitastor-nbd + QEMU nbd | driver / raw | driver / nbd |\n|---|---|---|---|---|---|\n",
    );
    // Writes first: the reads then read written blocks on every side.
    for (name, write, depth) in [
        ("4k write, depth 1", true, 1),
        ("4k write, depth 32", true, 32),
        ("4k read, depth 1", false, 1),
        ("4k read, depth 32", false, 32),
    ] {
        let requests = if depth == 1 { count } else { count * 4 };
        let raw_iops = bench(None, &raw_name, &["-i", "native"], write, depth, requests)?;
        let driver_iops = bench(Some(&driver), &vitastor, &[], write, depth, requests)?;
        let nbd_iops = bench(None, &nbd, &[], write, depth, requests)?;
        eprintln!("{name}: raw {raw_iops:.0}, driver {driver_iops:.0}, nbd {nbd_iops:.0} iops");
        table.push_str(&format!(
            "| {name} | {} | {} | {} | {:.2}x | {:.2}x |\n",
            cell(raw_iops, depth),
            cell(driver_iops, depth),
            cell(nbd_iops, depth),
            driver_iops / raw_iops,
            driver_iops / nbd_iops,
        ));
    }
    let _ = std::fs::remove_file(&raw);
    let version = Command::new("qemu-img")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .unwrap_or_default();
    let report = format!(
        "## bench-qemu: qemu-img bench through the QEMU driver, through vitastor-nbd, and on a raw file\n\n\
         - date: {}\n\
         - {version}; `qemu-img bench -f raw -t none -s 4096 -c N -d DEPTH [-w]` (sequential 4 KiB requests from offset 0; N = {count} at depth 1, {} at depth 32)\n\
         - QEMU driver: block-vitastor.so preloaded, `vitastor:` filename -> client library -> 2 vitastor-osd (1 GiB files, 2-replica pool, 8 PGs, immediate_commit=all); etcd and vitastor-mon on the same machine\n\
         - vitastor-nbd: QEMU's nbd driver -> `vitastor-nbd serve` (unix socket) -> the same client library and cluster\n\
         - raw: a {} MiB file on the same filesystem, `-i native` (cache=none: O_DIRECT)\n\
         - in parentheses: depth / IOPS, the mean time one request takes\n\n{table}",
        date(),
        count * 4,
        IMAGE_SIZE >> 20,
    );
    std::fs::create_dir_all(&args.results).map_err(|e| e.to_string())?;
    let path = args.results.join("report.md");
    std::fs::write(&path, &report).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("{report}");
    Ok(())
}
