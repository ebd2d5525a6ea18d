//! `/config/global`: cluster-wide settings.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// When a write is durable (Vitastor's `immediate_commit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ImmediateCommit {
    /// Every write is durable when acknowledged.
    All,
    /// Small (journaled) writes are durable when acknowledged; big ones after SYNC.
    Small,
    /// Writes are durable after SYNC.
    #[default]
    None,
}

impl ImmediateCommit {
    pub fn as_str(self) -> &'static str {
        match self {
            ImmediateCommit::All => "all",
            ImmediateCommit::Small => "small",
            ImmediateCommit::None => "none",
        }
    }
}

impl std::str::FromStr for ImmediateCommit {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "all" => Ok(ImmediateCommit::All),
            "small" => Ok(ImmediateCommit::Small),
            "none" => Ok(ImmediateCommit::None),
            other => Err(format!(
                "immediate_commit = {other:?}: must be all, small or none"
            )),
        }
    }
}

pub const DEFAULT_BLOCK_SIZE: u32 = 128 * 1024;
pub const DEFAULT_BITMAP_GRANULARITY: u32 = 4096;
pub const DEFAULT_OSD_OUT_TIME_S: u64 = 600;

/// Vitastor's defaults and minimums for the connection liveness options (its
/// docs/config/network.en.md and client.en.md): an OSD connection that received nothing for
/// `osd_idle_timeout` gets a PING; no answer within `osd_ping_timeout` drops it.
pub const DEFAULT_OSD_IDLE_TIMEOUT_S: u64 = 5;
pub const DEFAULT_OSD_PING_TIMEOUT_S: u64 = 5;
/// Limit on one TCP connect plus handshake to an OSD.
pub const DEFAULT_PEER_CONNECT_TIMEOUT_S: u64 = 5;
/// Pause before a client retries a request that failed on a broken connection or found
/// its PG without an active primary (woken earlier by any cluster state change).
pub const DEFAULT_CLIENT_RETRY_INTERVAL_MS: u64 = 50;
pub const DEFAULT_CLIENT_MAX_DIRTY_BYTES: u64 = 32 << 20;
pub const DEFAULT_CLIENT_MAX_DIRTY_OPS: u64 = 1024;
pub const MIN_CLIENT_RETRY_INTERVAL_MS: u64 = 10;
/// Pause before a client retries a request an OSD refused with -EPIPE (PG not active
/// there yet), also woken earlier by any cluster state change.
pub const DEFAULT_UP_WAIT_RETRY_INTERVAL_MS: u64 = 500;
pub const MIN_UP_WAIT_RETRY_INTERVAL_MS: u64 = 50;

/// `/config/global`. Every field is optional in etcd; accessors apply Vitastor's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct GlobalConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immediate_commit: Option<ImmediateCommit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bitmap_granularity: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub osd_out_time: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement_levels: Option<BTreeMap<String, u32>>,
    /// Seconds (minimum 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub osd_idle_timeout: Option<u64>,
    /// Seconds (minimum 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub osd_ping_timeout: Option<u64>,
    /// Seconds (minimum 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_connect_timeout: Option<u64>,
    /// Milliseconds (minimum 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_retry_interval: Option<u64>,
    /// Milliseconds (minimum 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_wait_retry_interval: Option<u64>,
    /// Bytes of acknowledged, not yet SYNCed writes a client keeps (it holds a copy of
    /// each to replay); past it the client SYNCs by itself. Only without
    /// immediate_commit=all. Vitastor's default: 32 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_max_dirty_bytes: Option<u64>,
    /// The same limit counted in write operations. Vitastor's default: 1024.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_max_dirty_ops: Option<u64>,
    /// Background recovery and rebalance copies in flight per OSD (Vitastor: default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_queue_depth: Option<u64>,
    /// Copies from one PG before recovery moves to the next one (Vitastor: default 128).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_pg_switch: Option<u64>,
    /// Pause copies of degraded objects (too few copies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_recovery: Option<bool>,
    /// Pause copies of misplaced objects (enough copies, some outside the PG's set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_rebalance: Option<bool>,
    /// Pause after each recovery copy (microseconds; auto-tuned unless
    /// `recovery_tune_interval` is 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_sleep_us: Option<u64>,
    /// Seconds between recovery auto-tuning rounds (0 = no auto-tuning; default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_tune_interval: Option<u64>,
    /// Recovery utilization wanted when client utilization is high (default 0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_tune_util_low: Option<f64>,
    /// Recovery utilization wanted when client utilization is low (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_tune_util_high: Option<f64>,
    /// Client utilization considered low (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_tune_client_util_low: Option<f64>,
    /// Client utilization considered high (default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_tune_client_util_high: Option<f64>,
    /// Tuning rounds averaged into the pause (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_tune_agg_interval: Option<u64>,
    /// Tuned pauses below this many microseconds become 0 (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_tune_sleep_min_us: Option<u64>,
    /// Tuned pauses above this many microseconds are ignored as outliers (default 10 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_tune_sleep_cutoff_us: Option<u64>,
    /// Scrub every PG every `scrub_interval` (default false: only when `next_scrub` is
    /// set in its `/pg/history`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_scrub: Option<bool>,
    /// Stop running scrubs and start none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_scrub: Option<bool>,
    /// "30d" (default), "12h", "3600" (seconds); units s, m, h, d, M (30 d), y (365 d).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrub_interval: Option<serde_json::Value>,
    /// Objects compared at once per OSD (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrub_queue_depth: Option<u64>,
    /// Pause between two objects' comparisons (milliseconds, default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrub_sleep: Option<u64>,
}

/// Vitastor's default `scrub_interval`.
pub const DEFAULT_SCRUB_INTERVAL_S: u64 = 30 * 86_400;

/// Seconds in a Vitastor time interval: a number of seconds, or a number with a unit
/// (s, m, h, d, M = 30 days, y = 365 days). `None` for anything else.
pub fn parse_interval_s(value: &serde_json::Value) -> Option<u64> {
    if let Some(seconds) = value.as_u64() {
        return Some(seconds);
    }
    let text = value.as_str()?.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let unit_s = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "M" => 30 * 86_400,
        "y" => 365 * 86_400,
        _ => return None,
    };
    number.checked_mul(unit_s)
}

impl GlobalConfig {
    /// `scrub_interval` in seconds (an unparsable value falls back to the default).
    pub fn scrub_interval_s(&self) -> u64 {
        self.scrub_interval
            .as_ref()
            .and_then(parse_interval_s)
            .unwrap_or(DEFAULT_SCRUB_INTERVAL_S)
    }
    pub fn block_size(&self) -> u32 {
        self.block_size.unwrap_or(DEFAULT_BLOCK_SIZE)
    }
    pub fn bitmap_granularity(&self) -> u32 {
        self.bitmap_granularity
            .unwrap_or(DEFAULT_BITMAP_GRANULARITY)
    }
    pub fn osd_out_time_s(&self) -> u64 {
        self.osd_out_time.unwrap_or(DEFAULT_OSD_OUT_TIME_S)
    }
    pub fn immediate_commit(&self) -> ImmediateCommit {
        self.immediate_commit.unwrap_or_default()
    }
    pub fn osd_idle_timeout(&self) -> Duration {
        seconds_at_least_1(self.osd_idle_timeout, DEFAULT_OSD_IDLE_TIMEOUT_S)
    }
    pub fn osd_ping_timeout(&self) -> Duration {
        seconds_at_least_1(self.osd_ping_timeout, DEFAULT_OSD_PING_TIMEOUT_S)
    }
    pub fn peer_connect_timeout(&self) -> Duration {
        seconds_at_least_1(self.peer_connect_timeout, DEFAULT_PEER_CONNECT_TIMEOUT_S)
    }
    pub fn client_retry_interval(&self) -> Duration {
        let ms = self
            .client_retry_interval
            .unwrap_or(DEFAULT_CLIENT_RETRY_INTERVAL_MS);
        Duration::from_millis(ms.max(MIN_CLIENT_RETRY_INTERVAL_MS))
    }
    pub fn client_max_dirty_bytes(&self) -> u64 {
        self.client_max_dirty_bytes
            .unwrap_or(DEFAULT_CLIENT_MAX_DIRTY_BYTES)
    }
    pub fn client_max_dirty_ops(&self) -> u64 {
        self.client_max_dirty_ops
            .unwrap_or(DEFAULT_CLIENT_MAX_DIRTY_OPS)
    }
    pub fn up_wait_retry_interval(&self) -> Duration {
        let ms = self
            .up_wait_retry_interval
            .unwrap_or(DEFAULT_UP_WAIT_RETRY_INTERVAL_MS);
        Duration::from_millis(ms.max(MIN_UP_WAIT_RETRY_INTERVAL_MS))
    }

    /// Checks the block size and bitmap granularity rules shared with pools.
    pub fn validate(&self) -> Result<(), super::SchemaError> {
        super::pool::check_block_geometry(
            "config/global",
            self.block_size(),
            self.bitmap_granularity(),
        )
    }
}

/// A seconds option as Vitastor reads it: 0 and values below the minimum of 1 s become 1 s.
fn seconds_at_least_1(value: Option<u64>, default: u64) -> Duration {
    Duration::from_secs(value.unwrap_or(default).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_parse_as_vitastor_writes_them() {
        let parse = |v: serde_json::Value| parse_interval_s(&v);
        assert_eq!(parse(serde_json::json!("30d")), Some(30 * 86_400));
        assert_eq!(parse(serde_json::json!("12h")), Some(12 * 3600));
        assert_eq!(parse(serde_json::json!("90")), Some(90));
        assert_eq!(parse(serde_json::json!(45)), Some(45));
        assert_eq!(parse(serde_json::json!("2M")), Some(60 * 86_400));
        assert_eq!(parse(serde_json::json!("1y")), Some(365 * 86_400));
        assert_eq!(parse(serde_json::json!("5 weeks")), None);
        assert_eq!(parse(serde_json::json!("d")), None);
    }

    #[test]
    fn facts_example_parses() {
        let json = r#"{"immediate_commit":"all","block_size":131072,"bitmap_granularity":4096,"osd_out_time":600,"placement_levels":{"dc":90,"host":100,"osd":110},"some_future_key":1}"#;
        let global: GlobalConfig = serde_json::from_str(json).unwrap();
        assert_eq!(global.immediate_commit(), ImmediateCommit::All);
        assert_eq!(
            global
                .placement_levels
                .as_ref()
                .and_then(|levels| levels.get("host")),
            Some(&100)
        );
        assert!(global.validate().is_ok());
        assert_eq!(GlobalConfig::default().block_size(), 131072);
        assert!(
            serde_json::from_str::<GlobalConfig>(r#"{"immediate_commit":"sometimes"}"#).is_err()
        );
    }

    #[test]
    fn liveness_options_have_vitastors_defaults_and_minimums() {
        let defaults = GlobalConfig::default();
        assert_eq!(defaults.osd_idle_timeout(), Duration::from_secs(5));
        assert_eq!(defaults.osd_ping_timeout(), Duration::from_secs(5));
        assert_eq!(defaults.peer_connect_timeout(), Duration::from_secs(5));
        assert_eq!(defaults.client_retry_interval(), Duration::from_millis(50));
        assert_eq!(
            defaults.up_wait_retry_interval(),
            Duration::from_millis(500)
        );
        let json = r#"{"osd_idle_timeout":0,"osd_ping_timeout":2,"peer_connect_timeout":3,"client_retry_interval":1,"up_wait_retry_interval":20}"#;
        let set: GlobalConfig = serde_json::from_str(json).unwrap();
        assert_eq!(set.osd_idle_timeout(), Duration::from_secs(1));
        assert_eq!(set.osd_ping_timeout(), Duration::from_secs(2));
        assert_eq!(set.peer_connect_timeout(), Duration::from_secs(3));
        assert_eq!(set.client_retry_interval(), Duration::from_millis(10));
        assert_eq!(set.up_wait_retry_interval(), Duration::from_millis(50));
    }
}
