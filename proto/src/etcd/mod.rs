//! serde types for every etcd value the cluster reads or writes (keys under `/vitastor`),
//! with validation that names the offending field and value.
//!
//! Unknown extra fields are accepted and ignored, as Vitastor does: none of these types use
//! `deny_unknown_fields`.

pub mod global;
pub mod inode;
mod lenient;
pub mod osd;
pub mod pg;
pub mod pool;
pub mod stats;
pub mod watch;

pub use global::{GlobalConfig, ImmediateCommit};
pub use inode::{ImageIndex, InodeConfig};
pub use osd::{NodePlacement, OsdConfig, OsdState, OsdStats};
pub use pg::{PgConfig, PgConfigItem, PgHistory, PgState, PgStats};
pub use pool::{parse_pools, PoolConfig, PoolScheme};
pub use stats::{ClusterStats, InodeStats, MonMaster, OsdInodeStats, OsdSpace, PoolStats};

use std::fmt;

/// A value that failed to parse or validate: `what` names the key or field path
/// (`pools["1"].pg_size`), `problem` says what is wrong with which value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SchemaError {
    pub what: String,
    pub problem: String,
}

impl SchemaError {
    pub fn new(what: impl Into<String>, problem: impl Into<String>) -> Self {
        SchemaError {
            what: what.into(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.problem)
    }
}

/// `127.0.0.1:2379`, `http://...`, `.../v3` and comma-separated lists, as Vitastor accepts.
pub fn endpoints(etcd_address: &str) -> Vec<String> {
    etcd_address
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|address| {
            let address = address.trim_end_matches('/').trim_end_matches("/v3");
            if address.contains("://") {
                address.to_string()
            } else {
                format!("http://{address}")
            }
        })
        .collect()
}

/// Parses a JSON value of type `T` from etcd, naming the key in the error.
pub fn parse_value<T: serde::de::DeserializeOwned>(
    key: &str,
    json: &[u8],
) -> Result<T, SchemaError> {
    serde_json::from_slice(json)
        .map_err(|error| SchemaError::new(key, format!("invalid JSON: {error}")))
}

/// The well-known keys, relative to the prefix (default `/vitastor`).
pub mod keys {
    pub const DEFAULT_PREFIX: &str = "/vitastor";
    pub const CONFIG_GLOBAL: &str = "/config/global";
    pub const CONFIG_POOLS: &str = "/config/pools";
    pub const CONFIG_OSD: &str = "/config/osd/";
    pub const CONFIG_NODE_PLACEMENT: &str = "/config/node_placement";
    pub const CONFIG_INODE: &str = "/config/inode/";
    pub const INDEX_IMAGE: &str = "/index/image/";
    pub const INDEX_MAXID: &str = "/index/maxid/";
    pub const PG_CONFIG: &str = "/pg/config";
    pub const PG_STATE: &str = "/pg/state/";
    pub const PG_HISTORY: &str = "/pg/history/";
    pub const PGSTATS: &str = "/pgstats/";
    pub const OSD_STATE: &str = "/osd/state/";
    pub const OSD_STATS: &str = "/osd/stats/";
    pub const MON_MASTER: &str = "/mon/master";
    pub const OSD_INODESTATS: &str = "/osd/inodestats/";
    pub const OSD_SPACE: &str = "/osd/space/";
    pub const INODE_STATS: &str = "/inode/stats/";
    pub const POOL_STATS: &str = "/pool/stats/";
    pub const STATS: &str = "/stats";
}

#[cfg(test)]
mod tests {
    #[test]
    fn endpoints_accept_vitastor_forms() {
        assert_eq!(
            super::endpoints("127.0.0.1:2379/v3,http://10.0.0.1:2379"),
            vec!["http://127.0.0.1:2379", "http://10.0.0.1:2379"]
        );
    }
}
