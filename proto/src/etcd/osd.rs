//! OSD keys: `/osd/state/<n>`, `/osd/stats/<n>`, `/config/osd/<n>`, `/config/node_placement`.

use super::global::ImmediateCommit;
use super::lenient;
use super::SchemaError;
use serde::{Deserialize, Serialize};

/// `/osd/state/<n>`, written by the OSD under its lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OsdState {
    pub state: String,
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub port: u16,
    #[serde(default = "yes")]
    pub primary_enabled: bool,
    #[serde(default = "yes")]
    pub blockstore_enabled: bool,
}

impl OsdState {
    /// Whether this registration is the instance listening at `host:port`. Liveness
    /// actions check it before revoking the lease they read with it, so a connection
    /// failure seen at an old address never hits an OSD that re-registered elsewhere.
    pub fn listens_at(&self, host: &str, port: u16) -> bool {
        self.port == port && self.addresses.iter().any(|a| a == host)
    }
}

fn yes() -> bool {
    true
}

/// `/osd/stats/<n>`, reported periodically by the OSD.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OsdStats {
    /// Unix time with a fraction, as a string in Vitastor (`"1767225600.1"`); numbers accepted.
    #[serde(deserialize_with = "lenient::number_or_string")]
    pub time: f64,
    pub size: u64,
    pub free: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_block_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bitmap_granularity: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immediate_commit: Option<ImmediateCommit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub op_stats: serde_json::Value,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub subop_stats: serde_json::Value,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub recovery_stats: serde_json::Value,
}

/// `/config/osd/<n>`, set by the administrator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct OsdConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reweight: Option<f64>,
    #[serde(
        default,
        deserialize_with = "lenient::string_or_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub tags: Vec<String>,
    #[serde(default)]
    pub noout: bool,
}

impl OsdConfig {
    pub fn reweight(&self) -> f64 {
        self.reweight.unwrap_or(1.0)
    }

    pub fn validate(&self, osd_num: u64) -> Result<(), SchemaError> {
        let reweight = self.reweight();
        if !reweight.is_finite() || !(0.0..=1.0).contains(&reweight) {
            return Err(SchemaError::new(
                format!("config/osd/{osd_num} reweight"),
                format!("{reweight} is out of range 0..=1"),
            ));
        }
        Ok(())
    }
}

/// One entry of `/config/node_placement` (`{"host1":{"level":"host","parent":"dc1"}}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NodePlacement {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn facts_examples_parse() {
        let state: OsdState = serde_json::from_str(
            r#"{"state":"up","addresses":["127.0.0.1"],"host":"node4","port":37215,"primary_enabled":true,"blockstore_enabled":true}"#,
        )
        .unwrap();
        assert_eq!(state.port, 37215);
        let stats: OsdStats = serde_json::from_str(
            r#"{"time":"1767225600.1","size":100,"free":50,"data_block_size":131072,"bitmap_granularity":4096,"immediate_commit":"all","host":"node4","op_stats":{},"subop_stats":{},"recovery_stats":{}}"#,
        )
        .unwrap();
        assert!((stats.time - 1767225600.1).abs() < 1e-3);
        let config: OsdConfig =
            serde_json::from_str(r#"{"reweight":0.5,"tags":["nvme"],"noout":true}"#).unwrap();
        assert!(config.validate(7).is_ok() && config.noout);
        let bad: OsdConfig = serde_json::from_str(r#"{"reweight":2}"#).unwrap();
        assert!(bad
            .validate(7)
            .unwrap_err()
            .to_string()
            .contains("reweight"));
        let tree: BTreeMap<String, NodePlacement> = serde_json::from_str(
            r#"{"dc1":{"level":"dc"},"host1":{"level":"host","parent":"dc1"},"7":{"parent":"host1"}}"#,
        )
        .unwrap();
        assert_eq!(tree["7"].parent.as_deref(), Some("host1"));
    }
}
