//! The gateway process's state beside the target: listeners, cluster clients, the etcd
//! store of the configuration, and the fail-fast opening of bdevs.

use crate::config::BdevConfig;
use crate::device::{BlockDevice, ImageDevice, BLOCK_BYTES};
use crate::listener::Listeners;
use crate::persist::Store;
use crate::target::Target;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use vitastor_client::{Client, ClientOptions};

/// How long `bdev_vitastor_create` may take to connect, open the image and read its
/// first block before it fails (SPDK's DAOS lesson: fail the call, never register a
/// bdev that cannot do I/O).
pub const BDEV_OPEN_TIMEOUT: Duration = Duration::from_secs(15);

/// Options of the cluster clients the gateway opens.
#[derive(Debug, Clone)]
pub struct ClusterDefaults {
    pub etcd_address: Option<String>,
    pub etcd_prefix: String,
    /// A cluster request that has not completed after this long fails (with a path
    /// error, so a multipath host retries on the other gateway); None = retry forever.
    pub request_timeout: Option<Duration>,
}

pub struct Gateway {
    pub target: Arc<Target>,
    pub listeners: Listeners,
    pub defaults: ClusterDefaults,
    /// Cluster clients by (etcd address, prefix).
    clients: tokio::sync::Mutex<HashMap<(String, String), Client>>,
    pub store: Option<Store>,
    /// Serializes RPCs: each runs alone, as on SPDK's RPC thread, so a listener is never
    /// bound twice and the stored configuration follows the calls' order.
    pub rpc_lock: tokio::sync::Mutex<()>,
}

/// A read-only view of a device (`read_only: true` on create).
struct ReadOnly(Arc<dyn BlockDevice>);

impl BlockDevice for ReadOnly {
    fn size_bytes(&self) -> u64 {
        self.0.size_bytes()
    }
    fn read_only(&self) -> bool {
        true
    }
    fn read(
        &self,
        offset: u64,
        len: u64,
    ) -> crate::device::BoxFuture<'_, crate::device::IoResult<Vec<u8>>> {
        self.0.read(offset, len)
    }
    fn write(
        &self,
        offset: u64,
        data: Vec<u8>,
    ) -> crate::device::BoxFuture<'_, crate::device::IoResult<()>> {
        self.0.write(offset, data)
    }
    fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
    ) -> crate::device::BoxFuture<'_, crate::device::IoResult<()>> {
        self.0.write_zeroes(offset, len)
    }
    fn flush(&self) -> crate::device::BoxFuture<'_, crate::device::IoResult<()>> {
        self.0.flush()
    }
    fn deallocate(
        &self,
        offset: u64,
        len: u64,
    ) -> crate::device::BoxFuture<'_, crate::device::IoResult<()>> {
        self.0.deallocate(offset, len)
    }
}

impl Gateway {
    pub fn new(defaults: ClusterDefaults, store: Option<Store>) -> Gateway {
        Gateway {
            target: Arc::new(Target::new()),
            listeners: Listeners::default(),
            defaults,
            clients: tokio::sync::Mutex::default(),
            store,
            rpc_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// A client of the cluster at (address, prefix), connected once and reused.
    pub async fn client(&self, address: &str, prefix: &str) -> Result<Client, String> {
        let key = (address.to_string(), prefix.to_string());
        let mut clients = self.clients.lock().await;
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let mut options = ClientOptions::new(address);
        options.etcd_prefix = prefix.to_string();
        options.request_timeout = self.defaults.request_timeout;
        let client = Client::connect(options)
            .await
            .map_err(|e| format!("cannot connect to the cluster at {address}: {e}"))?;
        clients.insert(key, client.clone());
        Ok(client)
    }

    /// Opens the bdev's image and reads its first block; any failure fails the call.
    pub async fn open_bdev(&self, config: &BdevConfig) -> Result<Arc<dyn BlockDevice>, String> {
        let open = async {
            let address = config
                .etcd_address
                .clone()
                .or_else(|| self.defaults.etcd_address.clone())
                .ok_or("etcd_address: missing (the gateway was started without one)")?;
            let prefix = config
                .etcd_prefix
                .clone()
                .unwrap_or_else(|| self.defaults.etcd_prefix.clone());
            let client = self.client(&address, &prefix).await?;
            let image = match (&config.image, config.pool, config.inode) {
                (Some(name), _, _) => client
                    .open_image(name)
                    .await
                    .map_err(|e| format!("image {name}: {e}"))?,
                (None, Some(pool), Some(inode)) => client
                    .open_inode(pool, inode)
                    .map_err(|e| format!("pool {pool} inode {inode}: {e}"))?,
                _ => return Err("give image, or pool and inode".to_string()),
            };
            let size = image.size();
            if size < BLOCK_BYTES || size % BLOCK_BYTES != 0 {
                return Err(format!(
                    "image size {size} is not a positive multiple of 4 KiB"
                ));
            }
            image
                .read(0, BLOCK_BYTES)
                .await
                .map_err(|e| format!("reading the image failed: {e}"))?;
            let device: Arc<dyn BlockDevice> = Arc::new(ImageDevice { image });
            Ok(if config.read_only {
                Arc::new(ReadOnly(device))
            } else {
                device
            })
        };
        match tokio::time::timeout(BDEV_OPEN_TIMEOUT, open).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "the cluster did not answer within {} s",
                BDEV_OPEN_TIMEOUT.as_secs()
            )),
        }
    }

    /// Stores the configuration after a change (when a store is configured).
    pub async fn save(&self) -> Result<(), String> {
        match &self.store {
            Some(store) => store.save(&self.target.config()).await,
            None => Ok(()),
        }
    }
}
