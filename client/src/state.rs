//! What the client knows of the cluster: the shared [`ClusterView`] (pools, PG map, PG
//! states, OSD states) plus images: `/config/inode/<pool>/<n>` and `/index/image/<name>`.

use std::collections::BTreeMap;
use vitastor_proto::cluster::ClusterView;
use vitastor_proto::etcd::{keys, parse_value, ImageIndex, InodeConfig};
use vitastor_proto::placement::Striping;
use vitastor_proto::PoolId;

#[derive(Debug, Clone, Default)]
pub struct ClientState {
    pub view: ClusterView,
    /// (pool, local inode number) -> config.
    pub inodes: BTreeMap<(u32, u64), InodeConfig>,
    pub images: BTreeMap<String, ImageIndex>,
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
            match value {
                None => {
                    self.inodes.remove(&(pool, inode));
                }
                Some(json) => match parse_value::<InodeConfig>(key, json) {
                    Ok(config) => {
                        self.inodes.insert((pool, inode), config);
                    }
                    Err(error) => tracing::warn!(key, "ignoring invalid inode config: {error}"),
                },
            }
        } else if let Some(name) = key.strip_prefix(keys::INDEX_IMAGE) {
            match value {
                None => {
                    self.images.remove(name);
                }
                Some(json) => match parse_value::<ImageIndex>(key, json) {
                    Ok(index) => {
                        self.images.insert(name.to_string(), index);
                    }
                    Err(error) => tracing::warn!(key, "ignoring invalid image index: {error}"),
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
