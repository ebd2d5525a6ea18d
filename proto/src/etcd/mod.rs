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

pub use global::{parse_interval_s, GlobalConfig, ImmediateCommit};
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

/// Parses a JSON value of type `T` from etcd, naming the key (and, for an object, the
/// offending field) in the error.
pub fn parse_value<T: serde::de::DeserializeOwned>(
    key: &str,
    json: &[u8],
) -> Result<T, SchemaError> {
    serde_json::from_slice(json).map_err(|error| {
        let field = serde_json::from_slice(json)
            .ok()
            .and_then(|value| bad_field::<T>(&value));
        match field {
            Some(field) => SchemaError::new(format!("{key} field {field}"), error.to_string()),
            None => SchemaError::new(key, format!("invalid JSON: {error}")),
        }
    })
}

/// Parses one JSON object of type `T`, naming the offending field in the error.
pub fn from_value_named<T: serde::de::DeserializeOwned>(
    what: &str,
    value: serde_json::Value,
) -> Result<T, SchemaError> {
    let field = bad_field::<T>(&value);
    serde_json::from_value(value).map_err(|error| match field {
        Some(field) => SchemaError::new(format!("{what} field {field}"), error.to_string()),
        None => SchemaError::new(what, error.to_string()),
    })
}

/// Which field of an object makes it fail to parse as `T` (serde's own errors name a
/// missing field but not one of the wrong type): the field whose removal makes the
/// object parse, or turns the error into "missing field" of that very field. `None` when
/// it parses or no single field is to blame. Runs only on errors, so its cost is moot.
fn bad_field<T: serde::de::DeserializeOwned>(value: &serde_json::Value) -> Option<String> {
    let object = value.as_object()?;
    let error = serde_json::from_value::<T>(value.clone()).err()?;
    let message = error.to_string();
    if let Some(rest) = message.strip_prefix("missing field `") {
        return rest.split('`').next().map(str::to_string);
    }
    object.keys().find_map(|field| {
        let mut without = object.clone();
        without.remove(field);
        match serde_json::from_value::<T>(serde_json::Value::Object(without)) {
            Ok(_) => Some(field.clone()),
            Err(e)
                if e.to_string()
                    .starts_with(&format!("missing field `{field}`")) =>
            {
                Some(field.clone())
            }
            Err(_) => None,
        }
    })
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

    /// Issue 18: errors name the key and the field, also for a field of the wrong type.
    #[test]
    fn errors_name_the_key_and_the_field() {
        let error = super::parse_value::<super::InodeConfig>(
            "/config/inode/1/2",
            br#"{"name":"a","size":"x"}"#,
        )
        .unwrap_err();
        assert_eq!(error.what, "/config/inode/1/2 field size");
        let error =
            super::parse_value::<super::InodeConfig>("/config/inode/1/2", br#"{"size":4096}"#)
                .unwrap_err();
        assert_eq!(error.what, "/config/inode/1/2 field name");
        let error =
            super::parse_value::<super::InodeConfig>("/config/inode/1/2", b"{bad").unwrap_err();
        assert_eq!(error.what, "/config/inode/1/2");
        let (pools, errors) = super::parse_pools(
            br#"{"1":{"name":"a","scheme":"replicated","pg_size":2,"pg_minsize":1,"pg_count":4},
                 "2":{"name":"b","scheme":"replicatd","pg_size":2,"pg_minsize":1,"pg_count":4}}"#,
        )
        .unwrap();
        assert_eq!(pools.len(), 1);
        assert_eq!(errors[0].what, "pool 2 field scheme", "{}", errors[0]);
    }
}
