//! `/config/global`: cluster-wide settings.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
}

impl GlobalConfig {
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

    /// Checks the block size and bitmap granularity rules shared with pools.
    pub fn validate(&self) -> Result<(), super::SchemaError> {
        super::pool::check_block_geometry(
            "config/global",
            self.block_size(),
            self.bitmap_granularity(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
