//! Latency and throughput of one benchmark run.

use std::time::Duration;

/// What one side (raw device or ours) achieved in one test.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunStats {
    pub ops: u64,
    pub iops: f64,
    pub bandwidth_mb_s: f64,
    pub lat_avg_us: f64,
    pub lat_p99_us: f64,
    /// CPU time per op of the measured process, when known.
    pub cpu_us_per_op: Option<f64>,
}

/// Collects per-op latencies (in nanoseconds).
#[derive(Default)]
pub struct LatencyRecorder {
    samples_ns: Vec<u64>,
}

impl LatencyRecorder {
    pub fn record(&mut self, latency: Duration) {
        self.samples_ns.push(latency.as_nanos() as u64);
    }

    pub fn finish(mut self, elapsed: Duration, bytes_per_op: u64) -> RunStats {
        let ops = self.samples_ns.len() as u64;
        if ops == 0 {
            return RunStats::default();
        }
        self.samples_ns.sort_unstable();
        let sum: u64 = self.samples_ns.iter().sum();
        let p99_index = ((ops as f64 * 0.99).ceil() as usize).clamp(1, ops as usize) - 1;
        let seconds = elapsed.as_secs_f64();
        RunStats {
            ops,
            iops: ops as f64 / seconds,
            bandwidth_mb_s: (ops * bytes_per_op) as f64 / seconds / 1e6,
            lat_avg_us: sum as f64 / ops as f64 / 1000.0,
            lat_p99_us: self.samples_ns[p99_index] as f64 / 1000.0,
            cpu_us_per_op: None,
        }
    }
}

/// User + system CPU time of this process so far.
pub fn process_cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a rusage struct into the pointer we pass; it is zeroed and
    // properly sized.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let to_duration = |tv: libc::timeval| Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000);
    to_duration(usage.ru_utime) + to_duration(usage.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_rates() {
        let mut recorder = LatencyRecorder::default();
        for us in 1..=100 {
            recorder.record(Duration::from_micros(us));
        }
        let stats = recorder.finish(Duration::from_secs(1), 4096);
        assert_eq!(stats.ops, 100);
        assert!((stats.lat_avg_us - 50.5).abs() < 1e-9);
        assert!((stats.lat_p99_us - 99.0).abs() < 1e-9);
        assert!((stats.iops - 100.0).abs() < 1e-9);
    }
}
