//! Statistics keys: `/osd/inodestats/<n>`, `/osd/space/<n>` (written by OSDs),
//! `/inode/stats/<pool>/<inode>`, `/pool/stats/<pool>`, `/stats` (aggregates written by the
//! monitor), and `/mon/master` (the master monitor's lease-bound record).
//!
//! Counters are numbers; every struct accepts unknown fields so newer writers do not break
//! older readers.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One op counter: how many, how many bytes, how long in total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct OpCounter {
    #[serde(default)]
    pub count: u64,
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub usec: u64,
}

/// Per-inode op counters of one OSD or of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct InodeOpStats {
    #[serde(default)]
    pub read: OpCounter,
    #[serde(default)]
    pub write: OpCounter,
    #[serde(default)]
    pub delete: OpCounter,
}

/// `/osd/inodestats/<n>`: `{"<pool>": {"<inode>": {"read": .., "write": .., "delete": ..}}}`.
pub type OsdInodeStats = BTreeMap<String, BTreeMap<String, InodeOpStats>>;

/// `/osd/space/<n>`: `{"<pool>": {"<inode>": used_bytes}}`.
pub type OsdSpace = BTreeMap<String, BTreeMap<String, u64>>;

/// `/inode/stats/<pool>/<inode>`: cluster-wide per-image counters and usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct InodeStats {
    #[serde(default)]
    pub raw_used: u64,
    #[serde(flatten)]
    pub ops: InodeOpStats,
}

/// `/pool/stats/<pool>`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct PoolStats {
    #[serde(default)]
    pub used_raw_tb: f64,
    #[serde(default)]
    pub total_raw_tb: f64,
    #[serde(default)]
    pub raw_to_usable: f64,
    #[serde(default)]
    pub space_efficiency: f64,
    #[serde(default)]
    pub pg_real_size: u64,
}

/// Object counts by state, summed over PGs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ObjectCounts {
    #[serde(default)]
    pub object: u64,
    #[serde(default)]
    pub clean: u64,
    #[serde(default)]
    pub misplaced: u64,
    #[serde(default)]
    pub degraded: u64,
    #[serde(default)]
    pub incomplete: u64,
}

/// `/stats`: cluster-wide aggregates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ClusterStats {
    #[serde(default)]
    pub op_stats: BTreeMap<String, OpCounter>,
    #[serde(default)]
    pub subop_stats: BTreeMap<String, OpCounter>,
    #[serde(default)]
    pub recovery_stats: BTreeMap<String, OpCounter>,
    #[serde(default)]
    pub object_counts: ObjectCounts,
}

/// `/mon/master`: who the master monitor is (the key lives under the master's lease).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MonMaster {
    #[serde(default)]
    pub ip: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// `/index/maxid/<pool>`: the last image number allocated in a pool (a bare JSON number).
pub type MaxId = u64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_parse_and_accept_unknown_fields() {
        let inode: OsdInodeStats = serde_json::from_str(
            r#"{"1":{"5":{"read":{"count":3,"usec":90,"bytes":12288},"write":{"count":1},"x":1}}}"#,
        )
        .unwrap();
        assert_eq!(inode["1"]["5"].read.bytes, 12288);
        let space: OsdSpace = serde_json::from_str(r#"{"1":{"5":131072}}"#).unwrap();
        assert_eq!(space["1"]["5"], 131072);
        let pool: PoolStats = serde_json::from_str(
            r#"{"used_raw_tb":0.5,"total_raw_tb":2,"pg_real_size":2,"new":true}"#,
        )
        .unwrap();
        assert_eq!(pool.pg_real_size, 2);
        let stats: ClusterStats =
            serde_json::from_str(r#"{"object_counts":{"object":10,"clean":9,"degraded":1}}"#)
                .unwrap();
        assert_eq!(stats.object_counts.degraded, 1);
        let master: MonMaster = serde_json::from_str(r#"{"ip":["127.0.0.1"]}"#).unwrap();
        assert_eq!(master.ip.len(), 1);
        assert_eq!(serde_json::from_str::<MaxId>("17").unwrap(), 17);
        assert!(serde_json::from_str::<OsdSpace>(r#"{"1":{"5":"lots"}}"#).is_err());
        let image: InodeStats =
            serde_json::from_str(r#"{"raw_used":4096,"write":{"count":2}}"#).unwrap();
        assert_eq!(image.raw_used, 4096);
        assert_eq!(image.ops.write.count, 2);
    }
}
