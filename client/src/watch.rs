//! Keeps the client's [`ClientState`] current across etcd outages.
//!
//! While etcd is away the client keeps what it knew and goes on sending I/O to the OSDs
//! it knows; when etcd answers again the watch resumes after the last revision applied
//! (or everything is read again when that history was compacted), so OSDs that came back
//! on new ports meanwhile are found. The decisions are [`WatchCursor`]'s.

use crate::state::ClientState;
use etcd_client::{GetOptions, WatchOptions};
use std::sync::{Mutex, Weak};
use std::time::Duration;
use tokio::sync::watch;
use vitastor_proto::etcd::watch::{Backoff, KeyChange, WatchBatch, WatchCursor, WatchStep};

/// Limit of one etcd read or watch start; the client never waits on etcd longer.
const ETCD_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// What the watch task needs of the client; it ends when the client is dropped.
pub(crate) struct Follower {
    pub etcd: etcd_client::Client,
    pub prefix: String,
    pub cursor: WatchCursor,
    pub notify: watch::Sender<u64>,
}

/// Reads every key under `prefix`: `(key relative to the prefix, value, mod_revision)`
/// and the revision of the read.
#[allow(clippy::type_complexity)]
pub(crate) async fn load(
    etcd: &mut etcd_client::Client,
    prefix: &str,
) -> Result<(Vec<(String, Vec<u8>, i64)>, i64), String> {
    let get = etcd.get(
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
    Ok((items, revision))
}

pub(crate) fn apply(state: &mut ClientState, changes: &[KeyChange]) {
    for change in changes {
        state.apply(&change.key, change.value.as_deref());
    }
}

impl Follower {
    /// Applies `changes` to the client's state (if it still exists) and wakes waiting
    /// requests; false once the client is gone.
    fn deliver(&self, state: &Weak<Mutex<ClientState>>, changes: &[KeyChange]) -> bool {
        let Some(state) = state.upgrade() else {
            return false;
        };
        apply(&mut state.lock().expect("not poisoned"), changes);
        self.notify.send_modify(|n| *n += 1);
        true
    }

    /// Follows etcd until the client is dropped: watch from the cursor's revision; after
    /// a failure wait (100 ms doubling to 2 s) and watch again from there, or reload.
    pub(crate) async fn run(mut self, state: Weak<Mutex<ClientState>>) {
        let mut backoff = Backoff::standard();
        let mut reload_first = false;
        let mut outage_logged = false;
        loop {
            if state.strong_count() == 0 {
                return;
            }
            if reload_first {
                match load(&mut self.etcd, &self.prefix).await {
                    Ok((items, revision)) => {
                        let changes = self.cursor.reload(revision, items);
                        if !self.deliver(&state, &changes) {
                            return;
                        }
                        tracing::info!(revision, "reloaded the cluster state from etcd");
                        reload_first = false;
                    }
                    Err(error) => {
                        tracing::debug!("cannot read the cluster state from etcd: {error}");
                        tokio::time::sleep(backoff.next_delay()).await;
                        continue;
                    }
                }
            }
            let options = WatchOptions::new()
                .with_prefix()
                .with_start_revision(self.cursor.start_revision());
            let watch = self.etcd.watch(self.prefix.clone() + "/", Some(options));
            let (_watcher, mut stream) = match tokio::time::timeout(ETCD_CALL_TIMEOUT, watch).await
            {
                Ok(Ok(pair)) => pair,
                failed => {
                    if !outage_logged {
                        outage_logged = true;
                        let reason = match failed {
                            Ok(Err(error)) => error.to_string(),
                            _ => format!("no answer in {ETCD_CALL_TIMEOUT:?}"),
                        };
                        tracing::warn!(
                            "cannot watch etcd ({reason}); serving I/O with the last known cluster state and retrying"
                        );
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            };
            if outage_logged {
                outage_logged = false;
                tracing::info!(revision = self.cursor.revision(), "watching etcd again");
            }
            let mut delivered = false;
            let step = loop {
                match stream.message().await {
                    Ok(Some(response)) => {
                        delivered = true;
                        backoff.reset();
                        match self
                            .cursor
                            .on_watch(WatchBatch::from_response(&self.prefix, &response))
                        {
                            WatchStep::Apply(changes) => {
                                if !self.deliver(&state, &changes) {
                                    return;
                                }
                            }
                            other => break other,
                        }
                    }
                    Ok(None) => break self.cursor.on_stream_end(delivered),
                    Err(error) => {
                        tracing::warn!("the etcd watch failed ({error}); watching again");
                        break self.cursor.on_stream_end(delivered);
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
}
