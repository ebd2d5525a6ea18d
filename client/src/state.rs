//! What the client knows of the cluster: the shared [`ClusterView`] (pools, PG map, PG
//! states, OSD states) plus images: `/config/inode/<pool>/<n>` and `/index/image/<name>`.
//!
//! Like the daemons, the client takes the state key by key: an invalid value keeps the
//! last valid one, and when there is none the key's error is remembered, so that opening
//! that one image (or an image of that one pool) fails with the key and field at fault
//! while every other image works.

use std::collections::BTreeMap;
use vitastor_proto::cluster::ClusterView;
use vitastor_proto::etcd::{keys, parse_value, ImageIndex, InodeConfig};
use vitastor_proto::placement::Striping;
use vitastor_proto::PoolId;

/// An inode config (the error names the key and field).
fn parse_inode(key: &str, json: &[u8]) -> Result<InodeConfig, vitastor_proto::etcd::SchemaError> {
    parse_value(key, json)
}

#[derive(Debug, Clone, Default)]
pub struct ClientState {
    pub view: ClusterView,
    /// (pool, local inode number) -> config.
    pub inodes: BTreeMap<(u32, u64), InodeConfig>,
    pub images: BTreeMap<String, ImageIndex>,
    /// Inode configs whose current value is invalid: the name (when the JSON still has a
    /// string `name`) and the error naming the key and field.
    pub invalid_inodes: BTreeMap<(u32, u64), (Option<String>, String)>,
    /// `/index/image/<name>` entries whose current value is invalid, with the error.
    pub invalid_images: BTreeMap<String, String>,
}

impl ClientState {
    /// Applies a put or delete of `key` (relative to the prefix); invalid values are
    /// logged and ignored.
    pub fn apply(&mut self, key: &str, value: Option<&[u8]>) {
        if let Some(rest) = key.strip_prefix(keys::CONFIG_INODE) {
            let Some((pool, inode)) = rest
                .split_once('/')
                .and_then(|(p, i)| Some((p.parse::<u32>().ok()?, i.parse::<u64>().ok()?)))
            else {
                tracing::warn!(key, "ignoring an inode key that is not <pool>/<inode>");
                return;
            };
            self.invalid_inodes.remove(&(pool, inode));
            match value {
                None => {
                    self.inodes.remove(&(pool, inode));
                }
                Some(json) => match parse_inode(key, json) {
                    Ok(config) => {
                        self.inodes.insert((pool, inode), config);
                    }
                    Err(error) => {
                        tracing::warn!(key, "ignoring invalid inode config: {error}");
                        let name = serde_json::from_slice::<serde_json::Value>(json)
                            .ok()
                            .and_then(|v| v["name"].as_str().map(str::to_string));
                        self.invalid_inodes
                            .insert((pool, inode), (name, error.to_string()));
                    }
                },
            }
        } else if let Some(name) = key.strip_prefix(keys::INDEX_IMAGE) {
            self.invalid_images.remove(name);
            match value {
                None => {
                    self.images.remove(name);
                }
                Some(json) => match parse_value::<ImageIndex>(key, json) {
                    Ok(index) => {
                        self.images.insert(name.to_string(), index);
                    }
                    Err(error) => {
                        tracing::warn!(key, "ignoring invalid image index: {error}");
                        self.invalid_images
                            .insert(name.to_string(), error.to_string());
                    }
                },
            }
        } else {
            self.view.apply(key, value);
        }
    }

    /// The image named `name`: from `/index/image/<name>`, or else the inode whose config
    /// carries that name (images created by hand with etcdctl have no index entry).
    pub fn find_image(&self, name: &str) -> Option<(u32, u64)> {
        if let Some(index) = self.images.get(name) {
            return Some((index.pool_id, index.id));
        }
        self.inodes
            .iter()
            .find(|(_, config)| config.name == name)
            .map(|(key, _)| *key)
    }

    /// Why image `name` cannot be opened although something by that name exists: its
    /// index entry or its inode config is invalid (and there is no valid one).
    pub fn image_error(&self, name: &str) -> Option<String> {
        if let Some(error) = self.invalid_images.get(name) {
            if !self.images.contains_key(name) {
                return Some(error.clone());
            }
        }
        self.invalid_inodes
            .iter()
            .find(|(key, (invalid_name, _))| {
                invalid_name.as_deref() == Some(name) && !self.inodes.contains_key(key)
            })
            .map(|(_, (_, error))| error.clone())
    }

    /// Why inode `number` of `pool` cannot be opened although its keys exist: the pool's
    /// entry in `/config/pools` or the inode's config is invalid (with no valid one).
    pub fn inode_error(&self, pool: u32, number: u64) -> Option<String> {
        let pool_known = PoolId::new(pool).is_ok_and(|id| self.view.pools.contains_key(&id));
        if !pool_known {
            if let Some(error) = self.view.invalid_pools.get(&pool) {
                return Some(error.clone());
            }
        }
        if !self.inodes.contains_key(&(pool, number)) {
            return self
                .invalid_inodes
                .get(&(pool, number))
                .map(|(_, error)| error.clone());
        }
        None
    }

    /// Striping of a pool, if it exists.
    pub fn striping(&self, pool: u32) -> Option<Striping> {
        let config = self.view.pools.get(&PoolId::new(pool).ok()?)?;
        Some(Striping {
            block_size: config
                .block_size
                .unwrap_or_else(|| self.view.global.block_size()),
            data_chunks: config.data_chunks(),
            pg_count: config.pg_count,
            pg_stripe_size: config.pg_stripe_size.unwrap_or(0),
        })
    }

    /// Where requests for a PG go: its primary, if the PG is active there.
    pub fn active_primary(&self, pool: u32, pg: u32) -> Option<u64> {
        let item = self.view.pg_config.get(&(pool, pg))?;
        if item.pause || item.primary == 0 {
            return None;
        }
        let state = self.view.pg_states.get(&(pool, pg))?;
        (state.primary == item.primary && state.base_state() == Some("active"))
            .then_some(item.primary)
    }

    /// `host:port` of an up OSD.
    pub fn osd_address(&self, osd: u64) -> Option<String> {
        let state = self.view.osd_states.get(&osd)?;
        let host = state.addresses.first()?;
        Some(format!("{host}:{}", state.port))
    }
}
