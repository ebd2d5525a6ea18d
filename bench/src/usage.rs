//! CPU and disk use of a stretch of time, from `/proc`: the machine's CPUs, some
//! processes' CPU time, the busy time of the disk holding a directory.

use serde_json::{json, Value};
use std::path::Path;

/// Counters of the machine's CPUs, some processes' CPU time and the disk's busy time,
/// from `/proc`; the difference of two samples says what the copy window used.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// All CPUs, in clock ticks (`/proc/stat`): busy and busy + idle.
    machine_busy_ticks: u64,
    machine_all_ticks: u64,
    /// User + system time of the sampled processes, in clock ticks.
    process_ticks: u64,
    /// Milliseconds the disk holding the cluster had I/O in flight (`/proc/diskstats`).
    disk_busy_ms: Option<u64>,
}

/// Linux reports `/proc` times in USER_HZ units, 100 per second on every architecture
/// this runs on.
const TICKS_PER_S: f64 = 100.0;

impl Usage {
    pub fn sample(pids: &[u32], disk: Option<(u64, u64)>) -> Usage {
        let numbers = |line: &str| -> Vec<u64> {
            line.split_whitespace()
                .filter_map(|f| f.parse().ok())
                .collect()
        };
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let cpu = stat.lines().next().map(numbers).unwrap_or_default();
        let field = |v: &[u64], i: usize| v.get(i).copied().unwrap_or(0);
        // user nice system idle iowait irq softirq steal
        let busy: u64 = [0, 1, 2, 5, 6, 7].iter().map(|&i| field(&cpu, i)).sum();
        let idle = field(&cpu, 3) + field(&cpu, 4);
        let process_ticks = process_ticks(pids);
        let disk_busy_ms = disk.and_then(|(major, minor)| {
            let stats = std::fs::read_to_string("/proc/diskstats").ok()?;
            stats.lines().find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let number = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
                // major minor name, then io_ticks is the 13th field.
                (number(0)? == major && number(1)? == minor).then(|| number(12))?
            })
        });
        Usage {
            machine_busy_ticks: busy,
            machine_all_ticks: busy + idle,
            process_ticks,
            disk_busy_ms,
        }
    }

    /// (machine CPU busy %, the processes' CPU in % of one core, disk busy %) from `self`
    /// to `later`, over `window_ms`.
    pub fn since(&self, later: &Usage, window_ms: u64) -> Value {
        let window_s = window_ms.max(1) as f64 / 1000.0;
        let all = later
            .machine_all_ticks
            .saturating_sub(self.machine_all_ticks)
            .max(1);
        let busy = later
            .machine_busy_ticks
            .saturating_sub(self.machine_busy_ticks);
        let process_s = later.process_ticks.saturating_sub(self.process_ticks) as f64 / TICKS_PER_S;
        json!({
            "machine_cpu_busy_pct": busy as f64 * 100.0 / all as f64,
            "osd_cpu_s": process_s,
            "osd_cpu_pct_of_one_core": process_s * 100.0 / window_s,
            "disk_busy_pct": self.disk_busy_ms.zip(later.disk_busy_ms).map(|(a, b)| {
                b.saturating_sub(a) as f64 * 100.0 / (window_s * 1000.0)
            }),
        })
    }
}

/// User + system time of the processes `pids` so far, in clock ticks (`/proc/PID/stat`;
/// a process that is gone counts 0).
pub fn process_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .map(|pid| {
            let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // After the command name: state is field 3, utime 14 and stime 15.
            let rest = text.rsplit_once(')').map_or("", |(_, rest)| rest);
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let at = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
            at(11).unwrap_or(0) + at(12).unwrap_or(0)
        })
        .sum()
}

/// CPU seconds of `ticks` clock ticks.
pub fn ticks_to_s(ticks: u64) -> f64 {
    ticks as f64 / TICKS_PER_S
}

/// (major, minor) of the device holding `dir`, as `/proc/diskstats` names it.
pub fn disk_of(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(dir).ok()?.dev();
    // glibc's gnu_dev_major / gnu_dev_minor.
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    Some((major, minor))
}
