//! The OSD's etcd side: the connection and its timeouts, registering `/osd/state/<n>`
//! under a lease (only if absent), following the keys under the prefix across etcd
//! restarts, reporting `/osd/stats/<n>`, and carrying out the daemon's [`EtcdAction`]s in
//! order. The lease itself (keep-alive, fencing, re-registration) is in `lease.rs`.
//!
//! Nothing here ends the process when etcd goes away: every call has a timeout, failed
//! calls are retried with a backoff, and the watch resumes after the last revision it
//! applied (or reloads everything after a compaction; see [`WatchCursor`]).

use super::Node;
use crate::cluster::PgKey;
use crate::daemon::EtcdAction;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp, WatchOptions,
};
use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;
use vitastor_proto::etcd::watch::{Backoff, KeyChange, WatchBatch, WatchCursor, WatchStep};

pub use vitastor_proto::etcd::endpoints;

/// Timing of everything the OSD does with etcd, with Vitastor's option names.
#[derive(Debug, Clone)]
pub struct EtcdTiming {
    /// `etcd_report_interval`: period of lease keep-alives and of `/osd/stats` reports.
    pub report_interval: Duration,
    /// `max_etcd_attempts`: keep-alive attempts that fit in the lease after a missed one.
    pub max_attempts: u32,
    /// `etcd_quick_timeout`: limit of one keep-alive attempt.
    pub quick_timeout: Duration,
    /// `etcd_slow_timeout`: limit of every other etcd call.
    pub slow_timeout: Duration,
    /// `etcd_keepalive_timeout`: an etcd connection whose HTTP/2 pings go unanswered
    /// this long is dropped and reopened (a silently dead connection would otherwise
    /// hold the watch for ever).
    pub keepalive_timeout: Duration,
}

impl EtcdTiming {
    /// Vitastor's rule: the lease lives one report interval plus every keep-alive attempt
    /// that may follow a missed one (`etcd_report_interval + max_etcd_attempts *
    /// etcd_quick_timeout`, rounded up to whole seconds as etcd wants).
    pub fn lease_ttl_s(&self) -> u64 {
        let attempts_ms = u64::from(self.max_attempts) * self.quick_timeout.as_millis() as u64;
        self.report_interval.as_secs().max(1) + attempts_ms.div_ceil(1000)
    }

    /// How long before etcd could expire the lease this OSD stops serving: a fifth of the
    /// TTL, at least a second. It covers what can still happen after the deadline is
    /// seen (an op already past its check) and clock-rate differences with etcd.
    pub fn lease_margin_ms(&self) -> u64 {
        (self.lease_ttl_s() * 1000 / 5).max(1000)
    }

    /// From the send time of a keep-alive etcd answered (ms on the OSD's monotonic clock)
    /// to the instant this OSD must have stopped serving. etcd restarts the TTL when it
    /// receives the keep-alive, which is after we sent it, so this is strictly early.
    pub fn lease_deadline_ms(&self, sent_ms: u64) -> u64 {
        sent_ms + self.lease_ttl_s() * 1000 - self.lease_margin_ms()
    }
}

pub struct Etcd {
    pub client: Client,
    pub prefix: String,
    /// The lease this OSD's keys live under; replaced when etcd lost the old one.
    pub lease: Rc<Cell<i64>>,
    pub timing: EtcdTiming,
}

/// Runs `call` with `limit`; a timeout is an error like any other.
pub async fn limited<T, E: std::fmt::Display>(
    limit: Duration,
    what: &str,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(format!("{what}: {error}")),
        Err(_) => Err(format!("{what}: no answer from etcd in {limit:?}")),
    }
}

/// Whether an etcd error can go away by itself (etcd restarting, a broken connection, a
/// leader election) as opposed to a request etcd will always refuse.
fn is_transient(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::GRpcStatus(status) => {
            // InvalidArgument, NotFound, AlreadyExists, PermissionDenied,
            // ResourceExhausted, FailedPrecondition, OutOfRange, Unimplemented,
            // Unauthenticated: asking again gives the same answer.
            !matches!(status.code() as i32, 3 | 5 | 6 | 7 | 8 | 9 | 11 | 12 | 16)
        }
        _ => true,
    }
}

impl Etcd {
    /// A client for `address` (connections are opened lazily and reopened after
    /// failures by the client itself).
    pub async fn connect(address: &str, prefix: &str, timing: EtcdTiming) -> Result<Etcd, String> {
        let options = ConnectOptions::new()
            .with_connect_timeout(timing.quick_timeout.max(Duration::from_secs(1)))
            .with_keep_alive(
                timing.report_interval.max(Duration::from_secs(1)),
                timing.keepalive_timeout,
            )
            .with_keep_alive_while_idle(true);
        let client = Client::connect(endpoints(address), Some(options))
            .await
            .map_err(|e| format!("cannot connect to etcd at {address}: {e}"))?;
        Ok(Etcd {
            client,
            prefix: prefix.trim_end_matches('/').to_string(),
            lease: Rc::new(Cell::new(0)),
            timing,
        })
    }

    /// Another handle on the same connection and lease.
    pub fn handle(&self) -> Etcd {
        Etcd {
            client: self.client.clone(),
            prefix: self.prefix.clone(),
            lease: self.lease.clone(),
            timing: self.timing.clone(),
        }
    }

    pub fn key(&self, relative: &str) -> String {
        format!("{}{relative}", self.prefix)
    }

    /// Grants a new lease of the configured TTL and makes it ours.
    pub async fn grant_lease(&mut self) -> Result<i64, String> {
        let ttl = self.timing.lease_ttl_s() as i64;
        let lease = limited(
            self.timing.slow_timeout,
            "cannot get an etcd lease",
            self.client.lease_grant(ttl, None),
        )
        .await?
        .id();
        self.lease.set(lease);
        Ok(lease)
    }

    /// Creates `key` with `value` under our lease only if it does not exist; false if it
    /// does.
    pub async fn create_leased(&mut self, key: &str, value: &str) -> Result<bool, String> {
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value, Some(self.leased()))]);
        let response = limited(
            self.timing.slow_timeout,
            &format!("etcd txn on {key}"),
            self.client.txn(txn),
        )
        .await?;
        Ok(response.succeeded())
    }

    fn leased(&self) -> PutOptions {
        PutOptions::new().with_lease(self.lease.get())
    }

    /// Puts `key` under our lease only if it carries our lease now; false if it does not
    /// (it is gone, or someone else holds it).
    async fn put_if_ours(&mut self, key: &str, value: &str) -> Result<bool, etcd_client::Error> {
        let txn = Txn::new()
            .when([Compare::lease(key, CompareOp::Equal, self.lease.get())])
            .and_then([TxnOp::put(key, value, Some(self.leased()))]);
        Ok(self.client.txn(txn).await?.succeeded())
    }

    /// Writes `/pg/history` only if it still holds `expected` (compared as parsed JSON,
    /// `None` = absent) and our lease holds `/pg/state`: the primary that decided on the
    /// old history must not overwrite what the monitor or another primary wrote since.
    async fn put_history_if(
        &mut self,
        key: &str,
        state_key: &str,
        expected: Option<&str>,
        value: &str,
    ) -> Result<bool, etcd_client::Error> {
        use vitastor_proto::etcd::PgHistory;
        let current = self.client.get(key, None).await?;
        let kv = current.kvs().first();
        let parse = |bytes: &[u8]| serde_json::from_slice::<PgHistory>(bytes).ok();
        let same = match (kv, expected) {
            (None, None) => true,
            (Some(kv), Some(expected)) => {
                let stored = parse(kv.value());
                stored.is_some() && stored == parse(expected.as_bytes())
            }
            _ => false,
        };
        if !same {
            return Ok(false);
        }
        let revision_matches = match kv {
            Some(kv) => Compare::mod_revision(key, CompareOp::Equal, kv.mod_revision()),
            None => Compare::create_revision(key, CompareOp::Equal, 0),
        };
        let txn = Txn::new()
            .when([
                revision_matches,
                Compare::lease(state_key, CompareOp::Equal, self.lease.get()),
            ])
            .and_then([TxnOp::put(key, value, None)]);
        Ok(self.client.txn(txn).await?.succeeded())
    }

    /// Carries out one action. `Ok(true)`: done (for a claim: the PG is ours);
    /// `Ok(false)`: etcd refused on purpose (a claim of a PG someone else holds, a write
    /// to a key that is not ours).
    async fn execute(&mut self, action: &EtcdAction) -> Result<bool, etcd_client::Error> {
        let pg_key = |base: &str, pg: &PgKey| format!("{}{base}{}/{}", self.prefix, pg.0, pg.1);
        match action {
            EtcdAction::ClaimPg { pg, value } => {
                // Ours if absent, or already ours: a re-claim after a short etcd outage
                // finds the key still under our (still valid) lease.
                let key = pg_key("/pg/state/", pg);
                let create = Txn::new()
                    .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(
                        key.as_str(),
                        value.as_str(),
                        Some(self.leased()),
                    )]);
                if self.client.txn(create).await?.succeeded() {
                    return Ok(true);
                }
                self.put_if_ours(&key, value).await
            }
            EtcdAction::PutPgState { pg, value } => {
                let key = pg_key("/pg/state/", pg);
                let done = self.put_if_ours(&key, value).await?;
                if !done {
                    tracing::warn!(key, "not writing a PG state this OSD does not hold");
                }
                Ok(done)
            }
            EtcdAction::ReleasePg { pg } => {
                let key = pg_key("/pg/state/", pg);
                let txn = Txn::new()
                    .when([Compare::lease(
                        key.as_str(),
                        CompareOp::Equal,
                        self.lease.get(),
                    )])
                    .and_then([TxnOp::delete(key.as_str(), None)]);
                let done = self.client.txn(txn).await?.succeeded();
                if !done {
                    tracing::info!(key, "PG state already gone or not ours: nothing to release");
                }
                Ok(done)
            }
            EtcdAction::PutPgStats { pg, value } => {
                let key = pg_key("/pgstats/", pg);
                self.client.put(key, value.as_str(), None).await?;
                Ok(true)
            }
            EtcdAction::PutPgHistory {
                pg,
                expected,
                id: _,
                value,
            } => {
                let key = pg_key("/pg/history/", pg);
                let state_key = pg_key("/pg/state/", pg);
                self.put_history_if(&key, &state_key, expected.as_deref(), value)
                    .await
            }
        }
    }
}

/// Carries out the daemon's etcd actions one by one, in order. A transient failure (etcd
/// down or restarting) is retried with a backoff for as long as it takes, so nothing the
/// daemon asked for is lost or reordered across an outage; every action is idempotent
/// (conditional or a plain put). A request etcd refuses for good is given up after a few
/// attempts.
pub(super) async fn action_loop(
    node: Rc<Node>,
    mut etcd: Etcd,
    queue: Rc<super::etcd_queue::EtcdQueue>,
) {
    const PERMANENT_ATTEMPTS: u32 = 5;
    loop {
        let action = queue.next().await;
        let mut backoff = Backoff::standard();
        let mut refused = 0;
        let result = loop {
            let attempt = tokio::time::timeout(etcd.timing.slow_timeout, etcd.execute(&action));
            let error = match attempt.await {
                Ok(Ok(done)) => break Some(done),
                Ok(Err(error)) if !is_transient(&error) => {
                    refused += 1;
                    if refused >= PERMANENT_ATTEMPTS {
                        tracing::error!("etcd refused {action:?}: {error}; giving up");
                        break None;
                    }
                    error.to_string()
                }
                Ok(Err(error)) => error.to_string(),
                Err(_) => format!("no answer in {:?}", etcd.timing.slow_timeout),
            };
            let delay = backoff.next_delay();
            let waiting = queue.waiting();
            tracing::warn!(
                "etcd write failed ({error}); retrying in {delay:?} ({waiting} more waiting)"
            );
            tokio::time::sleep(delay).await;
        };
        match action {
            EtcdAction::ClaimPg { pg, .. } => {
                let ok = result.unwrap_or(false);
                node.with_osd(|osd| osd.on_pg_claimed(pg, ok));
            }
            EtcdAction::PutPgHistory { pg, id, .. } => {
                let ok = result.unwrap_or(false);
                node.with_osd(|osd| osd.on_history_written(pg, id, ok));
            }
            _ => {}
        }
    }
}

/// Reads every key under the prefix: `(key relative to the prefix, value, mod_revision)`
/// and the revision of the read.
#[allow(clippy::type_complexity)]
pub async fn load(etcd: &mut Etcd) -> Result<(Vec<(String, Vec<u8>, i64)>, i64), String> {
    let response = limited(
        etcd.timing.slow_timeout,
        &format!("cannot read {}/ from etcd", etcd.prefix),
        etcd.client.get(
            etcd.prefix.clone() + "/",
            Some(GetOptions::new().with_prefix()),
        ),
    )
    .await?;
    let revision = response.header().map_or(0, |h| h.revision());
    let items = response
        .kvs()
        .iter()
        .filter_map(|kv| {
            let key = kv.key_str().ok()?.strip_prefix(&etcd.prefix)?.to_string();
            Some((key, kv.value().to_vec(), kv.mod_revision()))
        })
        .collect();
    Ok((items, revision))
}

/// Applies key changes to the node's cluster view and hands it over if anything changed.
fn apply_changes(node: &Rc<Node>, changes: Vec<KeyChange>) {
    let mut changed = false;
    {
        let mut view = node.view.borrow_mut();
        for change in &changes {
            changed |= view.apply(&change.key, change.value.as_deref());
        }
    }
    if changed {
        super::view_changed(node);
    }
}

/// Reads everything into the view (first start, or after a compaction).
pub(super) async fn reload(
    node: &Rc<Node>,
    etcd: &mut Etcd,
    cursor: &mut WatchCursor,
) -> Result<(), String> {
    let (items, revision) = load(etcd).await?;
    let changes = cursor.reload(revision, items);
    apply_changes(node, changes);
    Ok(())
}

/// Keeps the node's view current for the life of the process: watches from the cursor's
/// revision, and after any failure waits (100 ms doubling to 2 s) and watches again from
/// where it stopped, or reloads when etcd no longer has that history.
pub(super) async fn watch_loop(node: Rc<Node>, mut etcd: Etcd, mut cursor: WatchCursor) {
    let mut backoff = Backoff::standard();
    let mut reload_first = !cursor.is_loaded();
    loop {
        if reload_first {
            if let Err(error) = reload(&node, &mut etcd, &mut cursor).await {
                let delay = backoff.next_delay();
                tracing::warn!("{error}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                continue;
            }
            tracing::info!(
                revision = cursor.revision(),
                "reloaded the cluster state from etcd"
            );
            reload_first = false;
        }
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(cursor.start_revision());
        let started = limited(
            etcd.timing.slow_timeout,
            "cannot watch etcd",
            etcd.client.watch(etcd.prefix.clone() + "/", Some(options)),
        )
        .await;
        let (_watcher, mut stream) = match started {
            Ok(pair) => pair,
            Err(error) => {
                let delay = backoff.next_delay();
                tracing::warn!("{error}; retrying in {delay:?}");
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
                    match cursor.on_watch(WatchBatch::from_response(&etcd.prefix, &response)) {
                        WatchStep::Apply(changes) => apply_changes(&node, changes),
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
            tracing::warn!(
                revision = cursor.revision(),
                "etcd no longer has the changes after our revision: reloading everything"
            );
            reload_first = true;
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Reports `/osd/stats/<n>` every report interval; a report etcd does not take in time
/// is skipped (the next one carries the same counters).
pub(super) async fn stats_loop(
    node: Rc<Node>,
    mut etcd: Etcd,
    stats_key: String,
    stats: impl Fn(&Node) -> String,
) {
    let mut ticker = tokio::time::interval(etcd.timing.report_interval.max(Duration::from_secs(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let value = stats(&node);
        let put = etcd.client.put(stats_key.as_str(), value, None);
        if let Err(error) = limited(etcd.timing.slow_timeout, "cannot report stats", put).await {
            tracing::debug!("{error}");
        }
    }
}
