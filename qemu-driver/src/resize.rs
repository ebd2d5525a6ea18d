//! `qemu-img resize` / block_resize: the image's size lives in its etcd config
//! (`/config/inode/<pool>/<inode>`), so a resize is a guarded etcd transaction, as
//! `vitastor-cli modify --resize` does it: the config is rewritten only if nobody changed
//! it since it was read. A shrink deletes the data past the new end first, so a later grow
//! reads zeros there.

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use std::time::{Duration, Instant};
use vitastor_client::{ClientError, Image};
use vitastor_proto::etcd::{keys, InodeConfig};

/// How long the client may take to see its own change through the etcd watch.
const RESIZE_VISIBLE_TIMEOUT_MS: u64 = 10_000;

pub async fn resize(image: &Image, size: u64) -> Result<(), ClientError> {
    let (mut etcd, prefix) = image.client().etcd();
    let key = format!(
        "{prefix}{}{}/{}",
        keys::CONFIG_INODE,
        image.pool,
        image.number
    );
    let response = etcd
        .get(key.as_str(), None)
        .await
        .map_err(|e| ClientError::Etcd(e.to_string()))?;
    let Some(kv) = response.kvs().first() else {
        return Err(ClientError::NoSuchImage(key));
    };
    let revision = kv.mod_revision();
    let mut config: InodeConfig = serde_json::from_slice(kv.value())
        .map_err(|e| ClientError::InvalidConfig(format!("{key}: {e}")))?;
    if config.readonly {
        return Err(ClientError::ReadOnly);
    }
    if size < config.size {
        let object = image.object_size()?;
        let from = size.div_ceil(object) * object;
        let to = config.size.div_ceil(object) * object;
        if from < to {
            image.trim_objects(from, to - from).await?;
        }
        if from > size {
            let tail = (from.min(config.size) - size) as usize;
            image.write(size, &vec![0; tail]).await?;
        }
    }
    config.size = size;
    let value = serde_json::to_string(&config).expect("an inode config serializes");
    let txn = Txn::new()
        .when([Compare::mod_revision(
            key.as_str(),
            CompareOp::Equal,
            revision,
        )])
        .and_then([TxnOp::put(key.as_str(), value, None)]);
    let response = etcd
        .txn(txn)
        .await
        .map_err(|e| ClientError::Etcd(e.to_string()))?;
    if !response.succeeded() {
        return Err(ClientError::Etcd(format!(
            "{key} changed while resizing; try again"
        )));
    }
    let deadline = Instant::now() + Duration::from_millis(RESIZE_VISIBLE_TIMEOUT_MS);
    while image.size() != size {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ClientError::Timeout(RESIZE_VISIBLE_TIMEOUT_MS));
        }
        image.client().wait_for_change(left).await;
    }
    Ok(())
}
