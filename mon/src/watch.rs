//! The monitor's view of etcd across outages: a task that reads everything once, then
//! watches, and hands the main loop batches of key changes. When the stream breaks it
//! waits (100 ms doubling to 2 s) and resumes after the last revision it delivered; when
//! etcd compacted that history it reads everything again and delivers the difference
//! (deleted keys as deletes). The decisions are [`WatchCursor`]'s.

use etcd_client::{Client, GetOptions, WatchOptions};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use vitastor_proto::etcd::watch::{Backoff, KeyChange, WatchBatch, WatchCursor, WatchStep};

/// Limit of one etcd read or watch start.
const ETCD_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads every key under `prefix` into `cursor`; the changes to apply.
pub async fn load(
    client: &mut Client,
    prefix: &str,
    cursor: &mut WatchCursor,
) -> Result<Vec<KeyChange>, String> {
    let get = client.get(
        prefix.to_string() + "/",
        Some(GetOptions::new().with_prefix()),
    );
    let response = match tokio::time::timeout(ETCD_CALL_TIMEOUT, get).await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => return Err(error.to_string()),
        Err(_) => return Err(format!("no answer in {ETCD_CALL_TIMEOUT:?}")),
    };
    let revision = response.header().map_or(0, |h| h.revision());
    let items = response
        .kvs()
        .iter()
        .filter_map(|kv| {
            let key = kv.key_str().ok()?.strip_prefix(prefix)?.to_string();
            Some((key, kv.value().to_vec(), kv.mod_revision()))
        })
        .collect();
    Ok(cursor.reload(revision, items))
}

/// Follows etcd from `cursor` (already loaded) until the receiver is gone.
pub async fn follow(
    mut client: Client,
    prefix: String,
    mut cursor: WatchCursor,
    sink: UnboundedSender<Vec<KeyChange>>,
) {
    let mut backoff = Backoff::standard();
    let mut reload_first = false;
    loop {
        if reload_first {
            match load(&mut client, &prefix, &mut cursor).await {
                Ok(changes) => {
                    tracing::info!(
                        revision = cursor.revision(),
                        "reloaded the cluster state from etcd"
                    );
                    if sink.send(changes).is_err() {
                        return;
                    }
                    reload_first = false;
                }
                Err(error) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        "cannot read {prefix}/ from etcd ({error}); retrying in {delay:?}"
                    );
                    tokio::time::sleep(delay).await;
                    continue;
                }
            }
        }
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(cursor.start_revision());
        let watch = client.watch(prefix.clone() + "/", Some(options));
        let (_watcher, mut stream) = match tokio::time::timeout(ETCD_CALL_TIMEOUT, watch).await {
            Ok(Ok(pair)) => pair,
            failed => {
                let reason = match failed {
                    Ok(Err(error)) => error.to_string(),
                    _ => format!("no answer in {ETCD_CALL_TIMEOUT:?}"),
                };
                let delay = backoff.next_delay();
                tracing::warn!("cannot watch etcd ({reason}); retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        let mut delivered = false;
        let step = loop {
            match stream.message().await {
                Ok(Some(response)) => {
                    delivered = true;
                    backoff.reset();
                    match cursor.on_watch(WatchBatch::from_response(&prefix, &response)) {
                        WatchStep::Apply(changes) => {
                            if sink.send(changes).is_err() {
                                return;
                            }
                        }
                        other => break other,
                    }
                }
                Ok(None) => {
                    tracing::warn!("the etcd watch ended; watching again");
                    break cursor.on_stream_end(delivered);
                }
                Err(error) => {
                    tracing::warn!("the etcd watch failed ({error}); watching again");
                    break cursor.on_stream_end(delivered);
                }
            }
        };
        if step == WatchStep::Reload {
            tracing::warn!("etcd compacted the changes after our revision: reloading");
            reload_first = true;
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}
