//! Recovery yields to client I/O: a pause after each background copy, tuned every
//! `recovery_tune_interval` from how busy clients and recovery kept this OSD (Vitastor's
//! options and meaning).
//!
//! Utilization is busy time over wall time (the sum of the latencies of the ops that
//! finished in a round, over the round's length; it can exceed 1 with parallel ops).
//! From the clients' utilization `c` the wanted recovery utilization `r` is interpolated
//! linearly: `c <= client_util_low` => `util_high`, `c >= client_util_high` =>
//! `util_low`. With copies of average latency `L` running `depth` at a time, each
//! followed by a pause `S`, recovery utilization is `depth x L / (L + S)`, so the pause
//! that gives `r` is `S = L x (depth / r - 1)`. The pause used is the average of the
//! last `recovery_tune_agg_interval` rounds' (pauses above `sleep_cutoff_us` are
//! outliers and skipped; below `sleep_min_us` the pause is 0). A fixed
//! `recovery_sleep_us` applies when tuning is off (`recovery_tune_interval` = 0).

use std::collections::VecDeque;
use vitastor_proto::etcd::GlobalConfig;

/// Vitastor's defaults.
const TUNE_INTERVAL_S: u64 = 1;
const UTIL_LOW: f64 = 0.1;
const UTIL_HIGH: f64 = 1.0;
const CLIENT_UTIL_LOW: f64 = 0.0;
const CLIENT_UTIL_HIGH: f64 = 0.5;
const AGG_INTERVAL: usize = 10;
const SLEEP_MIN_US: u64 = 10;
const SLEEP_CUTOFF_US: u64 = 10_000_000;

#[derive(Debug, Default)]
pub(super) struct RecoveryTuner {
    round_started_us: u64,
    client_busy_us: u64,
    recovery_busy_us: u64,
    recovery_ops: u64,
    /// The pauses computed in the last rounds (at most `recovery_tune_agg_interval`).
    pauses_us: VecDeque<u64>,
    /// The pause in force after each copy.
    pause_us: u64,
    /// No background copy starts before this (monotonic microseconds).
    pub next_copy_at_us: u64,
}

impl RecoveryTuner {
    pub fn client_op_done(&mut self, latency_us: u64) {
        self.client_busy_us += latency_us;
    }

    /// A background copy finished at `now_us` after `latency_us`: the next one waits the
    /// pause.
    pub fn copy_done(&mut self, now_us: u64, latency_us: u64, global: &GlobalConfig) {
        self.recovery_busy_us += latency_us;
        self.recovery_ops += 1;
        self.next_copy_at_us = now_us + self.pause(global);
    }

    fn pause(&self, global: &GlobalConfig) -> u64 {
        if global.recovery_tune_interval == Some(0) {
            global.recovery_sleep_us.unwrap_or(0)
        } else {
            self.pause_us
        }
    }

    /// Ends the round if it is over; returns the new pause when it changed.
    pub fn tick(&mut self, now_us: u64, depth: usize, global: &GlobalConfig) -> Option<u64> {
        let interval_s = global.recovery_tune_interval.unwrap_or(TUNE_INTERVAL_S);
        let round_us = now_us.saturating_sub(self.round_started_us);
        if interval_s == 0 || round_us < interval_s * 1_000_000 {
            return None;
        }
        let client = self.client_busy_us as f64 / round_us as f64;
        let wanted = wanted_recovery_util(client, global);
        let ops = std::mem::take(&mut self.recovery_ops);
        let busy = std::mem::take(&mut self.recovery_busy_us);
        self.client_busy_us = 0;
        self.round_started_us = now_us;
        if ops == 0 {
            return None;
        }
        let latency = busy as f64 / ops as f64;
        let pause = if wanted <= 0.0 {
            global
                .recovery_tune_sleep_cutoff_us
                .unwrap_or(SLEEP_CUTOFF_US)
        } else {
            (latency * (depth as f64 / wanted - 1.0)).max(0.0) as u64
        };
        let cutoff = global
            .recovery_tune_sleep_cutoff_us
            .unwrap_or(SLEEP_CUTOFF_US);
        if pause <= cutoff {
            self.pauses_us.push_back(pause);
        }
        let keep = global
            .recovery_tune_agg_interval
            .map_or(AGG_INTERVAL, |n| n.max(1) as usize);
        while self.pauses_us.len() > keep {
            self.pauses_us.pop_front();
        }
        let count = self.pauses_us.len().max(1) as u64;
        let mut average = self.pauses_us.iter().sum::<u64>() / count;
        if average < global.recovery_tune_sleep_min_us.unwrap_or(SLEEP_MIN_US) {
            average = 0;
        }
        let changed = average != self.pause_us;
        self.pause_us = average;
        changed.then_some(average)
    }
}

/// Linear from `util_high` at low client load down to `util_low` at high client load.
fn wanted_recovery_util(client: f64, global: &GlobalConfig) -> f64 {
    let low = global.recovery_tune_util_low.unwrap_or(UTIL_LOW);
    let high = global.recovery_tune_util_high.unwrap_or(UTIL_HIGH);
    let client_low = global
        .recovery_tune_client_util_low
        .unwrap_or(CLIENT_UTIL_LOW);
    let client_high = global
        .recovery_tune_client_util_high
        .unwrap_or(CLIENT_UTIL_HIGH);
    if client <= client_low {
        return high;
    }
    if client >= client_high || client_high <= client_low {
        return low;
    }
    high + (low - high) * (client - client_low) / (client_high - client_low)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_clients_slow_recovery_down_and_idle_clients_let_it_run() {
        let global = GlobalConfig::default();
        let mut tuner = RecoveryTuner::default();
        // Clients busy 80% of each second; copies of 2 ms back to back.
        for second in 1..=10u64 {
            tuner.client_op_done(800_000);
            for _ in 0..100 {
                tuner.copy_done(second * 1_000_000, 2_000, &global);
            }
            tuner.tick(second * 1_000_000, 1, &global);
        }
        // Wanted utilization 0.1 at depth 1: pause = 2 ms x (1 / 0.1 - 1) = 18 ms.
        assert_eq!(tuner.pause_us, 18_000);
        tuner.copy_done(11_000_000, 2_000, &global);
        assert_eq!(tuner.next_copy_at_us, 11_018_000);
        // Idle clients: no pause once the average catches up.
        for second in 11..=30u64 {
            for _ in 0..100 {
                tuner.copy_done(second * 1_000_000, 2_000, &global);
            }
            tuner.tick(second * 1_000_000, 1, &global);
        }
        assert_eq!(tuner.pause_us, 0);
    }

    #[test]
    fn the_wanted_utilization_is_interpolated() {
        let global = GlobalConfig::default();
        assert_eq!(wanted_recovery_util(0.0, &global), 1.0);
        assert!((wanted_recovery_util(0.25, &global) - 0.55).abs() < 1e-9);
        assert_eq!(wanted_recovery_util(0.9, &global), 0.1);
    }

    #[test]
    fn a_fixed_sleep_applies_without_tuning() {
        let global = GlobalConfig {
            recovery_tune_interval: Some(0),
            recovery_sleep_us: Some(5_000),
            ..GlobalConfig::default()
        };
        let mut tuner = RecoveryTuner::default();
        tuner.copy_done(1_000, 100, &global);
        assert_eq!(tuner.next_copy_at_us, 6_000);
        assert_eq!(tuner.tick(10_000_000, 1, &global), None);
    }
}
