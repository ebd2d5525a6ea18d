//! Waits between retries: exponential with a cap and jitter, shared by every retry loop
//! of the client, the OSD and the monitor.
//!
//! - Exponential from `min` to the cap `max`: a dead peer (etcd, an OSD) costs one
//!   attempt per `max` however long it stays dead, so a waiting process uses no
//!   measurable CPU (issue 18: a client with 64 requests retrying every 50 ms burned a
//!   few % of a core per fio job while its etcd and OSDs were gone).
//! - Jitter: each wait is drawn from `[d/2, d]` ("equal jitter"), so the clients and
//!   OSDs that lost the same peer at the same moment do not all come back in lockstep.
//! - `reset` after a success: a live peer is never waited on for long.

use std::cell::Cell;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// 100 ms doubling to 2 s: a restarted etcd is back within a few hundred ms of
    /// answering again, and a long outage costs one attempt every 2 s or less.
    pub fn standard() -> Backoff {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(2))
    }

    pub fn new(min: Duration, max: Duration) -> Backoff {
        assert!(
            min <= max && !min.is_zero(),
            "backoff bounds: 0 < min <= max"
        );
        Backoff {
            min,
            max,
            next: min,
        }
    }

    /// The un-jittered wait of the next attempt (doubles on every call up to the cap).
    pub fn next_base(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// The wait before the next attempt: the base delay with equal jitter, in
    /// `[base/2, base]`, and never below `min`.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next_base();
        let half = base / 2;
        let jitter = half.mul_f64(unit_random());
        (half + jitter).max(self.min.min(base))
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    // Distinct per thread and per process even within one clock tick.
    let local = 0u8;
    let address = &local as *const u8 as u64;
    (nanos ^ address.rotate_left(32) ^ u64::from(std::process::id())) | 1
}

/// A number in [0, 1) from a per-thread xorshift generator: jitter needs spread, not
/// unpredictability.
fn unit_random() -> f64 {
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        (x >> 11) as f64 / (1u64 << 53) as f64
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_its_cap_and_resets() {
        let mut backoff = Backoff::standard();
        let bases: Vec<u64> = (0..7)
            .map(|_| backoff.next_base().as_millis() as u64)
            .collect();
        assert_eq!(bases, vec![100, 200, 400, 800, 1600, 2000, 2000]);
        backoff.reset();
        assert_eq!(backoff.next_base(), Duration::from_millis(100));
    }

    #[test]
    fn delays_are_jittered_within_half_and_full_base() {
        let mut delays = Vec::new();
        for _ in 0..200 {
            let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_secs(2));
            for _ in 0..10 {
                backoff.next_delay();
            }
            let delay = backoff.next_delay();
            assert!(delay >= Duration::from_secs(1) && delay <= Duration::from_secs(2));
            delays.push(delay);
        }
        delays.sort();
        delays.dedup();
        assert!(delays.len() > 100, "spread out: {} distinct", delays.len());
        let mut first = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
        assert!(
            first.next_delay() >= Duration::from_millis(50),
            "never below min"
        );
    }
}
