//! Following the keys under the prefix across etcd outages: the decision part of every
//! daemon's and client's etcd watch, without I/O.
//!
//! Each of them keeps a copy of what etcd holds, built by one full read and then kept
//! current by a watch. A watch stream dies when etcd restarts or the connection breaks;
//! dying must not stop the process. The rule, in one place so the OSD, the monitor and the
//! client follow it alike:
//!
//! ```text
//!            +---------- full read (get --prefix) at revision R ----------+
//!            v                                                             |
//!   [reload: changes = every key read as a put + every key we knew that    |
//!    the read no longer has as a delete]                                   |
//!            |                                                             |
//!            v                                                             |
//!   watch from revision + 1 --events--> apply, revision = newest event     |
//!            |                                                             |
//!            +-- stream error / ended / canceled: wait (backoff), watch    |
//!            |   again from revision + 1 (nothing missed, nothing twice)   |
//!            +-- canceled with compact_revision (history we need is gone) -+
//! ```
//!
//! A reload is expressed as key changes rather than a fresh copy so that each consumer's
//! `apply` keeps its rules (an invalid value leaves the last valid one in force).

use std::collections::BTreeSet;

/// A put (`value: Some`) or delete (`None`) of `key` (relative to the prefix) at etcd
/// revision `mod_revision`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyChange {
    pub key: String,
    pub value: Option<Vec<u8>>,
    pub mod_revision: i64,
}

/// One message of a watch stream, reduced to what the cursor decides on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchBatch {
    pub canceled: bool,
    /// Non-zero when etcd canceled the watch because the revision it should start at was
    /// compacted away.
    pub compact_revision: i64,
    pub events: Vec<KeyChange>,
}

/// What to do after a watch message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchStep {
    /// Apply these changes (possibly none); the watch goes on.
    Apply(Vec<KeyChange>),
    /// The watch is over; start a new one at [`WatchCursor::start_revision`].
    Rewatch,
    /// Events we need are compacted: read everything again ([`WatchCursor::reload`]).
    Reload,
}

/// The revision up to which changes have been applied and the keys that exist at it.
#[derive(Debug, Clone, Default)]
pub struct WatchCursor {
    revision: i64,
    keys: BTreeSet<String>,
    loaded: bool,
    /// Watch streams in a row that ended without delivering a message.
    silent_ends: u32,
}

impl WatchCursor {
    pub fn new() -> WatchCursor {
        WatchCursor::default()
    }

    /// Whether a full read was applied (until then a watch has nothing to resume from).
    pub fn is_loaded(&self) -> bool {
        self.loaded
    }

    /// The last revision whose changes are applied.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Where the next watch starts: right after what we have, so nothing is missed or
    /// applied twice.
    pub fn start_revision(&self) -> i64 {
        self.revision + 1
    }

    /// A full read at `revision` returned `items` (key, value, mod_revision): the changes
    /// that turn what was applied before into exactly that state. Keys that disappeared
    /// come out as deletes at `revision`.
    pub fn reload(&mut self, revision: i64, items: Vec<(String, Vec<u8>, i64)>) -> Vec<KeyChange> {
        let fresh: BTreeSet<String> = items.iter().map(|(key, _, _)| key.clone()).collect();
        let mut changes: Vec<KeyChange> = self
            .keys
            .difference(&fresh)
            .map(|key| KeyChange {
                key: key.clone(),
                value: None,
                mod_revision: revision,
            })
            .collect();
        changes.extend(
            items
                .into_iter()
                .map(|(key, value, mod_revision)| KeyChange {
                    key,
                    value: Some(value),
                    mod_revision,
                }),
        );
        self.keys = fresh;
        self.revision = revision;
        self.loaded = true;
        self.silent_ends = 0;
        changes
    }

    /// Decides on one watch message. Events at or before the applied revision (a stream
    /// that replays what a reload already covered) are dropped.
    pub fn on_watch(&mut self, batch: WatchBatch) -> WatchStep {
        self.silent_ends = 0;
        if batch.compact_revision > 0 {
            return WatchStep::Reload;
        }
        if batch.canceled {
            return WatchStep::Rewatch;
        }
        let applied = self.revision;
        let mut changes = Vec::with_capacity(batch.events.len());
        for event in batch.events {
            if event.mod_revision <= applied {
                continue;
            }
            self.revision = self.revision.max(event.mod_revision);
            match event.value {
                Some(_) => self.keys.insert(event.key.clone()),
                None => self.keys.remove(&event.key),
            };
            changes.push(event);
        }
        WatchStep::Apply(changes)
    }

    /// The stream ended or failed (etcd restarted, the connection broke). Normally:
    /// watch again from where we are. A second stream in a row that ended without a
    /// single message may mean etcd refuses our start revision in a way the stream does
    /// not report (a cancel folded into the creation reply): read everything instead of
    /// retrying the same revision for ever.
    pub fn on_stream_end(&mut self, delivered_any: bool) -> WatchStep {
        if delivered_any {
            self.silent_ends = 0;
            return WatchStep::Rewatch;
        }
        self.silent_ends += 1;
        if self.silent_ends >= 2 {
            WatchStep::Reload
        } else {
            WatchStep::Rewatch
        }
    }
}

/// The shared retry backoff (kept here too for the existing imports).
pub use crate::backoff::Backoff;

#[cfg(feature = "etcd-client")]
impl WatchBatch {
    /// A watch message in the cursor's terms: keys relative to `prefix` (keys outside it
    /// are dropped). Shared by the OSD, the monitor and the client.
    pub fn from_response(prefix: &str, response: &etcd_client::WatchResponse) -> WatchBatch {
        let events = response
            .events()
            .iter()
            .filter_map(|event| {
                let kv = event.kv()?;
                let key = kv.key_str().ok()?.strip_prefix(prefix)?.to_string();
                let value = match event.event_type() {
                    etcd_client::EventType::Put => Some(kv.value().to_vec()),
                    etcd_client::EventType::Delete => None,
                };
                Some(KeyChange {
                    key,
                    value,
                    mod_revision: kv.mod_revision(),
                })
            })
            .collect();
        WatchBatch {
            canceled: response.canceled(),
            compact_revision: response.compact_revision(),
            events,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str, revision: i64) -> KeyChange {
        KeyChange {
            key: key.into(),
            value: Some(value.as_bytes().to_vec()),
            mod_revision: revision,
        }
    }

    fn delete(key: &str, revision: i64) -> KeyChange {
        KeyChange {
            key: key.into(),
            value: None,
            mod_revision: revision,
        }
    }

    fn item(key: &str, value: &str, revision: i64) -> (String, Vec<u8>, i64) {
        (key.into(), value.as_bytes().to_vec(), revision)
    }

    #[test]
    fn resumes_after_the_last_applied_event() {
        let mut cursor = WatchCursor::new();
        assert!(!cursor.is_loaded());
        let changes = cursor.reload(10, vec![item("/a", "1", 5), item("/b", "2", 10)]);
        assert_eq!(changes, vec![put("/a", "1", 5), put("/b", "2", 10)]);
        assert_eq!(cursor.start_revision(), 11);
        let step = cursor.on_watch(WatchBatch {
            events: vec![put("/a", "3", 11), delete("/b", 12)],
            ..WatchBatch::default()
        });
        assert_eq!(
            step,
            WatchStep::Apply(vec![put("/a", "3", 11), delete("/b", 12)])
        );
        // The stream broke: the next watch starts after revision 12.
        assert_eq!(cursor.start_revision(), 13);
        // A canceled watch without compaction: watch again from the same place.
        let step = cursor.on_watch(WatchBatch {
            canceled: true,
            ..WatchBatch::default()
        });
        assert_eq!(step, WatchStep::Rewatch);
        assert_eq!(cursor.start_revision(), 13);
    }

    #[test]
    fn replayed_events_are_not_applied_twice() {
        let mut cursor = WatchCursor::new();
        cursor.reload(20, vec![item("/a", "1", 20)]);
        let step = cursor.on_watch(WatchBatch {
            events: vec![put("/a", "0", 19), put("/a", "1", 20), put("/a", "2", 21)],
            ..WatchBatch::default()
        });
        assert_eq!(step, WatchStep::Apply(vec![put("/a", "2", 21)]));
        assert_eq!(cursor.revision(), 21);
    }

    #[test]
    fn events_of_one_transaction_share_a_revision() {
        let mut cursor = WatchCursor::new();
        cursor.reload(5, vec![]);
        let step = cursor.on_watch(WatchBatch {
            events: vec![put("/a", "1", 6), put("/b", "1", 6)],
            ..WatchBatch::default()
        });
        assert_eq!(
            step,
            WatchStep::Apply(vec![put("/a", "1", 6), put("/b", "1", 6)])
        );
    }

    #[test]
    fn compaction_reloads_and_deletes_what_disappeared() {
        let mut cursor = WatchCursor::new();
        cursor.reload(
            10,
            vec![item("/a", "1", 3), item("/b", "1", 4), item("/c", "1", 5)],
        );
        cursor.on_watch(WatchBatch {
            events: vec![put("/d", "1", 11)],
            ..WatchBatch::default()
        });
        let step = cursor.on_watch(WatchBatch {
            canceled: true,
            compact_revision: 50,
            events: vec![],
        });
        assert_eq!(step, WatchStep::Reload);
        // Meanwhile /b and /d were deleted, /a changed and /e appeared.
        let changes = cursor.reload(
            60,
            vec![item("/a", "2", 55), item("/c", "1", 5), item("/e", "1", 58)],
        );
        assert_eq!(
            changes,
            vec![
                delete("/b", 60),
                delete("/d", 60),
                put("/a", "2", 55),
                put("/c", "1", 5),
                put("/e", "1", 58),
            ]
        );
        assert_eq!(cursor.start_revision(), 61);
        // A later reload with nothing changed deletes nothing.
        let again = cursor.reload(
            61,
            vec![item("/a", "2", 55), item("/c", "1", 5), item("/e", "1", 58)],
        );
        assert!(again.iter().all(|c| c.value.is_some()));
    }

    #[test]
    fn streams_that_end_silently_twice_lead_to_a_reload() {
        let mut cursor = WatchCursor::new();
        cursor.reload(7, vec![]);
        assert_eq!(cursor.on_stream_end(false), WatchStep::Rewatch);
        assert_eq!(cursor.on_stream_end(false), WatchStep::Reload);
        cursor.reload(8, vec![]);
        assert_eq!(cursor.on_stream_end(false), WatchStep::Rewatch);
        cursor.on_watch(WatchBatch::default());
        assert_eq!(cursor.on_stream_end(false), WatchStep::Rewatch);
        assert_eq!(cursor.on_stream_end(true), WatchStep::Rewatch);
        assert_eq!(cursor.on_stream_end(false), WatchStep::Rewatch);
    }
}
