//! fio on the raw device, for the side-by-side numbers: same block size, depth and
//! pattern as our run, `ioengine=io_uring`, `direct=1`, on a file of the same filesystem.

use crate::stats::RunStats;
use std::path::Path;
use std::process::Command;

/// One fio job. `fdatasync` = sync after every write.
#[derive(Debug, Clone)]
pub struct FioJob {
    pub rw: &'static str,
    pub block_size: u64,
    pub iodepth: u32,
    pub fdatasync: bool,
    pub runtime_s: u64,
    pub size: u64,
}

impl FioJob {
    /// A sequential write of `size` bytes in `block_size` pieces at depth 8, run to the
    /// end: fills an image or file so that reads hit written blocks.
    pub fn fill(size: u64, block_size: u64) -> FioJob {
        FioJob {
            rw: "write",
            block_size,
            iodepth: 8,
            fdatasync: false,
            runtime_s: 0,
            size,
        }
    }
}

pub fn fio_version() -> Option<String> {
    let out = Command::new("fio").arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Fills `path` (creating it) with `size` bytes of data so reads hit real blocks.
pub fn prefill(path: &Path, size: u64) -> Result<(), String> {
    run(path, &FioJob::fill(size, 1 << 20)).map(|_| ())
}

/// Runs one job on a file and returns what fio measured.
pub fn run(path: &Path, job: &FioJob) -> Result<RunStats, String> {
    run_with(
        &[
            format!("--filename={}", path.display()),
            "--ioengine=io_uring".to_string(),
            "--direct=1".to_string(),
        ],
        job,
    )
}

/// Runs one job through fio's nbd engine against `uri` (`nbd+unix:///?socket=...`).
pub fn run_nbd(uri: &str, job: &FioJob) -> Result<RunStats, String> {
    run_with(&["--ioengine=nbd".to_string(), format!("--uri={uri}")], job)
}

/// Runs one job with the given target/engine arguments.
pub fn run_with(target: &[String], job: &FioJob) -> Result<RunStats, String> {
    run_with_sync(target, job, "--fdatasync=1")
}

/// [`run_with`] with `sync_arg` after every write when the job syncs (`--fsync=1` for
/// engines that take no fdatasync, like Vitastor's).
pub fn run_with_sync(target: &[String], job: &FioJob, sync_arg: &str) -> Result<RunStats, String> {
    let mut command = Command::new("fio");
    command
        .arg("--name=raw")
        .args(target)
        .arg(format!("--size={}", job.size))
        .arg(format!("--rw={}", job.rw))
        .arg(format!("--bs={}", job.block_size))
        .arg(format!("--iodepth={}", job.iodepth))
        .arg("--randrepeat=0")
        .arg("--output-format=json");
    if job.fdatasync {
        command.arg(sync_arg);
    }
    if job.runtime_s > 0 {
        command
            .arg(format!("--runtime={}", job.runtime_s))
            .arg("--time_based");
    }
    let out = command
        .output()
        .map_err(|error| format!("cannot run fio (is it installed?): {error}"))?;
    if !out.status.success() {
        return Err(format!(
            "fio failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        ));
    }
    parse_output(&out.stdout, job)
}

/// A randwrite of 32 MiB (4k, QD16) with `verify=crc32c` through `target`: an error
/// when fio finds a block that does not read back as written.
pub fn verified_run(target: &[String]) -> Result<(), String> {
    let verified = Command::new("fio")
        .args([
            "--name=verify",
            "--rw=randwrite",
            "--bs=4k",
            "--iodepth=16",
            "--size=32m",
        ])
        .args([
            "--verify=crc32c",
            "--verify_state_save=0",
            "--do_verify=1",
            "--verify_fatal=1",
        ])
        .args(target)
        .output()
        .map_err(|e| format!("cannot run fio: {e}"))?;
    if !verified.status.success() {
        return Err(format!(
            "the verified fio run failed: {}{}",
            String::from_utf8_lossy(&verified.stdout),
            String::from_utf8_lossy(&verified.stderr)
        ));
    }
    Ok(())
}

/// Extracts IOPS, bandwidth and latency from fio's JSON output.
pub fn parse_output(json: &[u8], job: &FioJob) -> Result<RunStats, String> {
    // Some engines print notes before the JSON document: start at its first line.
    let start = json
        .windows(2)
        .position(|w| w == b"\n{")
        .map_or(0, |p| p + 1);
    let json = if json.first() == Some(&b'{') {
        json
    } else {
        &json[start..]
    };
    let value: serde_json::Value =
        serde_json::from_slice(json).map_err(|error| format!("fio output is not JSON: {error}"))?;
    let side = if job.rw.contains("read") {
        "read"
    } else {
        "write"
    };
    let stats = &value["jobs"][0][side];
    let number = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    let ops = stats["total_ios"].as_u64().unwrap_or(0);
    // With fdatasync, a "write" is the write plus its fdatasync: add the sync latency.
    let mut lat_avg_us = number(&stats["lat_ns"]["mean"]) / 1000.0;
    let mut lat_p99_us = number(&stats["clat_ns"]["percentile"]["99.000000"]) / 1000.0;
    if job.fdatasync {
        let sync = &value["jobs"][0]["sync"];
        lat_avg_us += number(&sync["lat_ns"]["mean"]) / 1000.0;
        lat_p99_us += number(&sync["lat_ns"]["percentile"]["99.000000"]) / 1000.0;
    }
    let iops = if job.fdatasync && lat_avg_us > 0.0 {
        1e6 / lat_avg_us * f64::from(job.iodepth)
    } else {
        number(&stats["iops"])
    };
    Ok(RunStats {
        ops,
        iops,
        bandwidth_mb_s: number(&stats["bw_bytes"]) / 1e6,
        lat_avg_us,
        lat_p99_us,
        cpu_us_per_op: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fio_json() {
        let json = br#"{"jobs":[{"write":{"total_ios":1000,"iops":500.5,"bw_bytes":2050048,"lat_ns":{"mean":60000.0},"clat_ns":{"percentile":{"99.000000":90000}}},"sync":{"lat_ns":{"mean":40000.0,"percentile":{"99.000000":70000}}}}]}"#;
        let job = FioJob {
            rw: "randwrite",
            block_size: 4096,
            iodepth: 1,
            fdatasync: true,
            runtime_s: 1,
            size: 1 << 20,
        };
        let stats = parse_output(json, &job).unwrap();
        assert_eq!(stats.ops, 1000);
        assert!((stats.lat_avg_us - 100.0).abs() < 1e-9);
        assert!((stats.lat_p99_us - 160.0).abs() < 1e-9);
        assert!((stats.iops - 10000.0).abs() < 1e-6);
        let no_sync = FioJob {
            fdatasync: false,
            ..job
        };
        assert!((parse_output(json, &no_sync).unwrap().iops - 500.5).abs() < 1e-9);
        assert!(parse_output(b"not json", &no_sync).is_err());
    }
}
