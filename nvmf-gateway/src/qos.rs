//! Per-bdev QoS (`bdev_set_qos_limit`): IOPS and MB/s limits, enforced by delaying a
//! command until its share of each limit is free.
//!
//! Each limit is a virtual clock (GCRA): a command of cost `c` against a rate `r` per
//! second reserves `c / r` seconds starting at `max(now - burst, clock)`, and waits until
//! its reservation starts. The burst (`QOS_BURST_MS` worth of the rate) lets a short idle
//! period be used up at once, as SPDK's time-slice limits do; reservations never pile up
//! more than the burst in the past, so an idle device does not bank unlimited credit.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Credit an idle device may bank, as time at the limit's rate.
const QOS_BURST_MS: u64 = 100;

/// The limits of one bdev; 0 = unlimited. MB are 2^20 bytes (SPDK's unit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QosLimits {
    #[serde(default)]
    pub rw_ios_per_sec: u64,
    #[serde(default)]
    pub rw_mbytes_per_sec: u64,
    #[serde(default)]
    pub r_mbytes_per_sec: u64,
    #[serde(default)]
    pub w_mbytes_per_sec: u64,
}

/// One rate limit's virtual clock.
#[derive(Debug, Default)]
struct Bucket {
    /// When the last reservation ends.
    clock: Option<Instant>,
}

impl Bucket {
    /// Reserves `cost` units at `rate` per second; returns when the reservation starts.
    fn reserve(&mut self, now: Instant, cost: u64, rate: u64) -> Instant {
        assert!(rate > 0, "only limited buckets reserve");
        let burst = Duration::from_millis(QOS_BURST_MS);
        let earliest = now.checked_sub(burst).unwrap_or(now);
        let start = self.clock.map_or(earliest, |clock| clock.max(earliest));
        let length = Duration::from_secs_f64(cost as f64 / rate as f64);
        self.clock = Some(start + length);
        // A command waits only for what it owes beyond the burst.
        start.max(now)
    }
}

#[derive(Debug, Default)]
struct QosState {
    limits: QosLimits,
    ios: Bucket,
    rw_bytes: Bucket,
    r_bytes: Bucket,
    w_bytes: Bucket,
}

/// A bdev's QoS: its limits and clocks.
#[derive(Debug, Default)]
pub struct Qos {
    state: Mutex<QosState>,
}

impl Qos {
    pub fn set_limits(&self, limits: QosLimits) {
        let mut state = self.state.lock().expect("not poisoned");
        *state = QosState {
            limits,
            ..QosState::default()
        };
    }

    pub fn limits(&self) -> QosLimits {
        self.state.lock().expect("not poisoned").limits
    }

    /// When a command of `bytes` may start (now when no limit applies).
    pub fn reserve(&self, now: Instant, is_write: bool, bytes: u64) -> Instant {
        let mut state = self.state.lock().expect("not poisoned");
        let limits = state.limits;
        let mut start = now;
        if limits.rw_ios_per_sec > 0 {
            start = start.max(state.ios.reserve(now, 1, limits.rw_ios_per_sec));
        }
        let mb = |n: u64| n.saturating_mul(1 << 20);
        if limits.rw_mbytes_per_sec > 0 {
            start = start.max(
                state
                    .rw_bytes
                    .reserve(now, bytes, mb(limits.rw_mbytes_per_sec)),
            );
        }
        if !is_write && limits.r_mbytes_per_sec > 0 {
            start = start.max(
                state
                    .r_bytes
                    .reserve(now, bytes, mb(limits.r_mbytes_per_sec)),
            );
        }
        if is_write && limits.w_mbytes_per_sec > 0 {
            start = start.max(
                state
                    .w_bytes
                    .reserve(now, bytes, mb(limits.w_mbytes_per_sec)),
            );
        }
        start
    }

    /// Waits until a command of `bytes` may run.
    pub async fn admit(&self, is_write: bool, bytes: u64) {
        let now = Instant::now();
        let start = self.reserve(now, is_write, bytes);
        if start > now {
            tokio::time::sleep_until(start.into()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_never_waits() {
        let qos = Qos::default();
        let now = Instant::now();
        for _ in 0..1000 {
            assert_eq!(qos.reserve(now, true, 1 << 20), now);
        }
    }

    #[test]
    fn iops_limit_spaces_commands() {
        let qos = Qos::default();
        qos.set_limits(QosLimits {
            rw_ios_per_sec: 100,
            ..QosLimits::default()
        });
        let now = Instant::now();
        // 100 ms of burst at 100 IOPS = 10 commands at once, then 10 ms apart.
        let starts: Vec<Instant> = (0..30).map(|_| qos.reserve(now, false, 4096)).collect();
        let waiting = starts.iter().filter(|s| **s > now).count();
        assert!((19..=21).contains(&waiting), "{waiting} waited");
        let last = starts[29].duration_since(now);
        assert!(
            last >= Duration::from_millis(180) && last <= Duration::from_millis(210),
            "{last:?}"
        );
    }

    #[test]
    fn byte_limits_apply_by_direction() {
        let qos = Qos::default();
        qos.set_limits(QosLimits {
            w_mbytes_per_sec: 1,
            ..QosLimits::default()
        });
        let now = Instant::now();
        for _ in 0..10 {
            assert_eq!(qos.reserve(now, false, 1 << 20), now, "reads are free");
        }
        qos.reserve(now, true, 1 << 20);
        let second = qos.reserve(now, true, 1 << 20);
        assert!(second.duration_since(now) >= Duration::from_millis(850));
    }
}
