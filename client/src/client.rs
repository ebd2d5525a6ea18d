//! The client: cluster state from etcd, OSD connections, and image I/O.
//!
//! Every request is split at object boundaries; each piece goes to the primary of its PG
//! (only while `/pg/state` says the PG is active on that primary) and is retried when the
//! OSD answers -EPIPE (PG not active there), the connection breaks, or no primary is
//! active, after the next cluster state change or a pause (`client_retry_interval`
//! doubling to 1 s with jitter, at least `up_wait_retry_interval` after -EPIPE), until it
//! completes or the caller's timeout passes. A connection that is refused or stops answering PINGs gets the OSD's lease
//! revoked ([`crate::liveness`]), so its PGs move in about a second instead of after the
//! lease TTL.
//!
//! Ordering (Vitastor's): writes run in parallel; a SYNC waits for the writes before it,
//! and writes after it wait for the SYNC (a fair read-write lock: writes share it, SYNC
//! takes it alone). With `immediate_commit` other than `all`, acknowledged writes are
//! kept until a SYNC covers them; if a SYNC fails on a broken connection or a PG that
//! moved, they are written again before the SYNC is retried.

use crate::conn::{ConnSettings, ConnectError, ConnectionLost, OsdConnection};
use crate::error::{ClientError, Result};
use crate::state::ClientState;
use futures_util::future::try_join_all;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, RwLock};
use vitastor_proto::backoff::Backoff;
use vitastor_proto::errno;
use vitastor_proto::etcd::watch::WatchCursor;
use vitastor_proto::etcd::{endpoints, GlobalConfig, ImmediateCommit, InodeConfig};
use vitastor_proto::placement::split_at_objects;
use vitastor_proto::wire::request::Rw;
use vitastor_proto::wire::{ReplyBody, RequestBody};
use vitastor_proto::PoolId;

/// Alignment every request must have (the OSDs' bitmap granularity).
pub const ALIGNMENT: u64 = 4096;

/// Cap of a request's retry backoff. Retries also wake on any cluster state change (a
/// new primary, an OSD back up), so the cap only bounds how late a retry notices a
/// recovery that etcd does not announce; it keeps a client whose etcd and OSDs are gone
/// (fio at a high iodepth) from spinning.
const RETRY_MAX: Duration = Duration::from_secs(1);

/// A request's retry backoff: from `client_retry_interval` (Vitastor's fixed retry
/// period) doubling to [`RETRY_MAX`], jittered.
fn retry_backoff(settings: &GlobalConfig) -> Backoff {
    let min = settings
        .client_retry_interval()
        .max(Duration::from_millis(1));
    Backoff::new(min, RETRY_MAX.max(min))
}

#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub etcd_address: String,
    pub etcd_prefix: String,
    /// Give up on a request after this long (None = retry forever, as Vitastor does).
    pub request_timeout: Option<Duration>,
    /// Overrides of Vitastor's options of the same names; None = `/config/global`'s value
    /// or Vitastor's default. Seconds: PING an OSD connection after this much silence.
    pub osd_idle_timeout: Option<u64>,
    /// Seconds to wait for a PING answer before the connection is given up.
    pub osd_ping_timeout: Option<u64>,
    /// Seconds for a connect plus handshake to an OSD.
    pub peer_connect_timeout: Option<u64>,
    /// Milliseconds before retrying after a broken connection or an inactive PG.
    pub client_retry_interval: Option<u64>,
    /// Milliseconds before retrying a request an OSD answered with -EPIPE.
    pub up_wait_retry_interval: Option<u64>,
    /// How long a request waits for a usable `/pg/config` while the key holds a value
    /// that cannot be parsed and no valid one was ever seen (Vitastor's
    /// `client_wait_up_timeout`, 16 s); then it fails naming the key.
    pub client_wait_up_timeout: Duration,
}

impl ClientOptions {
    pub fn new(etcd_address: &str) -> ClientOptions {
        ClientOptions {
            etcd_address: etcd_address.to_string(),
            etcd_prefix: "/vitastor".to_string(),
            request_timeout: None,
            osd_idle_timeout: None,
            osd_ping_timeout: None,
            peer_connect_timeout: None,
            client_retry_interval: None,
            up_wait_retry_interval: None,
            client_wait_up_timeout: Duration::from_secs(16),
        }
    }

    /// `/config/global` with these overrides applied (its accessors give the values in
    /// force, defaults and minimums included).
    fn merged(&self, global: &GlobalConfig) -> GlobalConfig {
        let mut merged = global.clone();
        merged.osd_idle_timeout = self.osd_idle_timeout.or(global.osd_idle_timeout);
        merged.osd_ping_timeout = self.osd_ping_timeout.or(global.osd_ping_timeout);
        merged.peer_connect_timeout = self.peer_connect_timeout.or(global.peer_connect_timeout);
        merged.client_retry_interval = self.client_retry_interval.or(global.client_retry_interval);
        merged.up_wait_retry_interval = self
            .up_wait_retry_interval
            .or(global.up_wait_retry_interval);
        merged
    }
}

/// A write acknowledged but not yet covered by a SYNC (immediate_commit != all).
#[derive(Debug, Clone)]
struct UnsyncedWrite {
    inode: u64,
    offset: u64,
    data: Vec<u8>,
}

/// The writes a SYNC must cover (and replay if a primary lost them), bounded by
/// `client_max_dirty_bytes` / `client_max_dirty_ops`: past either the writer SYNCs.
#[derive(Debug, Default)]
struct Unsynced {
    writes: Vec<UnsyncedWrite>,
    bytes: u64,
}

struct Inner {
    options: ClientOptions,
    prefix: String,
    etcd: etcd_client::Client,
    state: Arc<Mutex<ClientState>>,
    /// Bumped on every batch of etcd changes.
    changes: watch::Receiver<u64>,
    connections: Mutex<HashMap<u64, Arc<OsdConnection>>>,
    /// OSDs whose lease revocation is being checked right now (one check at a time each,
    /// however many requests hit the failure).
    revoking: Mutex<HashSet<u64>>,
    /// OSDs a connect to failed: no new attempt before the instant, whatever the number
    /// of requests waiting for them (one attempt per OSD per backoff period, not one per
    /// request), and the backoff that sets it. Cleared by a successful connect.
    connect_failures: Mutex<HashMap<u64, (Instant, Backoff)>>,
    /// One connect attempt per OSD at a time: the requests that find no connection take
    /// turns here, so when a penalty expires one of them connects and the others reuse
    /// the connection or see the new penalty (not 64 connects at once at fio's iodepth).
    connect_turns: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<()>>>>,
    sync_order: RwLock<()>,
    unsynced: Mutex<Unsynced>,
    watch_task: tokio::task::JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.watch_task.abort();
    }
}

/// A connected client; cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// One image (inode) opened for I/O.
#[derive(Clone)]
pub struct Image {
    client: Client,
    pub pool: u32,
    /// Local inode number inside the pool.
    pub number: u64,
    /// Full inode number (`pool << 48 | number`).
    pub inode: u64,
}

impl Client {
    /// Connects to etcd, loads the cluster state and starts watching it.
    pub async fn connect(options: ClientOptions) -> Result<Client> {
        let unreachable = |reason: String| ClientError::EtcdUnreachable {
            address: options.etcd_address.clone(),
            reason,
        };
        let connect = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(10))
            // A connection that stops answering pings is reopened, so a silently dead
            // one cannot hold the watch (Vitastor's etcd_keepalive_timeout default).
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(30))
            .with_keep_alive_while_idle(true);
        let mut etcd =
            etcd_client::Client::connect(endpoints(&options.etcd_address), Some(connect))
                .await
                .map_err(|e| unreachable(e.to_string()))?;
        let prefix = options.etcd_prefix.trim_end_matches('/').to_string();
        let (items, revision) = crate::watch::load(&mut etcd, &prefix)
            .await
            .map_err(unreachable)?;
        let mut cursor = WatchCursor::new();
        let mut state = ClientState::default();
        crate::watch::apply(&mut state, &cursor.reload(revision, items));
        let state = Arc::new(Mutex::new(state));
        let (notify, changes) = watch::channel(0u64);
        // The watch follows etcd across outages for as long as the client lives.
        let follower = crate::watch::Follower {
            etcd: etcd.clone(),
            prefix: prefix.clone(),
            cursor,
            notify,
        };
        let watch_task = tokio::spawn(follower.run(Arc::downgrade(&state)));
        let inner = Arc::new(Inner {
            options,
            prefix,
            etcd,
            state,
            changes,
            connections: Mutex::default(),
            revoking: Mutex::default(),
            connect_failures: Mutex::default(),
            connect_turns: Mutex::default(),
            sync_order: RwLock::new(()),
            unsynced: Mutex::default(),
            watch_task,
        });
        Ok(Client { inner })
    }

    /// A copy of the current cluster state.
    pub fn state(&self) -> ClientState {
        self.inner.state.lock().expect("not poisoned").clone()
    }

    /// The etcd client and prefix (for the CLI's metadata operations).
    pub fn etcd(&self) -> (etcd_client::Client, String) {
        (self.inner.etcd.clone(), self.inner.prefix.clone())
    }

    /// Waits until the cluster state changes or `timeout` passes.
    pub async fn wait_for_change(&self, timeout: Duration) {
        let mut changes = self.inner.changes.clone();
        changes.mark_unchanged();
        let _ = tokio::time::timeout(timeout, changes.changed()).await;
    }

    /// Opens an image by name.
    pub async fn open_image(&self, name: &str) -> Result<Image> {
        let found = self
            .inner
            .state
            .lock()
            .expect("not poisoned")
            .find_image(name);
        let Some((pool, number)) = found else {
            let state = self.inner.state.lock().expect("not poisoned");
            return Err(match state.image_error(name) {
                Some(error) => ClientError::InvalidConfig(error),
                None => ClientError::NoSuchImage(name.to_string()),
            });
        };
        self.open_inode(pool, number)
    }

    /// Opens an image by pool and inode number; the inode config must exist.
    pub fn open_inode(&self, pool: u32, number: u64) -> Result<Image> {
        let state = self.inner.state.lock().expect("not poisoned");
        let pool_id = PoolId::new(pool).map_err(ClientError::InvalidArgument)?;
        if let Some(error) = state.inode_error(pool, number) {
            return Err(ClientError::InvalidConfig(error));
        }
        if !state.view.pools.contains_key(&pool_id) {
            return Err(ClientError::NoSuchPool(pool.to_string()));
        }
        if !state.inodes.contains_key(&(pool, number)) {
            return Err(ClientError::NoSuchImage(format!(
                "pool {pool} inode {number}"
            )));
        }
        if number == 0 || number >= 1 << 48 {
            return Err(ClientError::InvalidArgument(format!(
                "inode number {number}"
            )));
        }
        Ok(Image {
            client: self.clone(),
            pool,
            number,
            inode: u64::from(pool) << 48 | number,
        })
    }

    fn immediate_commit_all(&self, pool: u32) -> bool {
        let state = self.inner.state.lock().expect("not poisoned");
        let pool_setting = PoolId::new(pool)
            .ok()
            .and_then(|id| state.view.pools.get(&id))
            .and_then(|p| p.immediate_commit);
        pool_setting.unwrap_or_else(|| state.view.global.immediate_commit()) == ImmediateCommit::All
    }

    /// The options in force: `/config/global` as etcd has it now, with the client's
    /// overrides.
    fn settings(&self) -> GlobalConfig {
        let state = self.inner.state.lock().expect("not poisoned");
        self.inner.options.merged(&state.view.global)
    }

    pub(crate) async fn connection(
        &self,
        osd: u64,
        address: &str,
    ) -> std::result::Result<Arc<OsdConnection>, ConnectError> {
        if let Some(existing) = self.live_connection(osd) {
            return Ok(existing);
        }
        let turn = self
            .inner
            .connect_turns
            .lock()
            .expect("not poisoned")
            .entry(osd)
            .or_default()
            .clone();
        let _turn = turn.lock().await;
        if let Some(existing) = self.live_connection(osd) {
            return Ok(existing);
        }
        if let Some(wait) = self.connect_penalty(osd) {
            return Err(ConnectError::BackingOff(wait));
        }
        let result = self.connect_now(osd, address).await;
        match &result {
            Ok(_) => self.connect_succeeded(osd),
            Err(_) => self.connect_failed(osd, &self.settings()),
        }
        result
    }

    fn live_connection(&self, osd: u64) -> Option<Arc<OsdConnection>> {
        let connections = self.inner.connections.lock().expect("not poisoned");
        connections.get(&osd).filter(|c| !c.is_closed()).cloned()
    }

    /// Connects to `osd` at `address` (the caller holds the OSD's connect turn).
    async fn connect_now(
        &self,
        osd: u64,
        address: &str,
    ) -> std::result::Result<Arc<OsdConnection>, ConnectError> {
        let weak = Arc::downgrade(&self.inner);
        let settings = Arc::new(move || {
            let global = weak
                .upgrade()
                .map(|inner| {
                    let state = inner.state.lock().expect("not poisoned");
                    inner.options.merged(&state.view.global)
                })
                .unwrap_or_default();
            ConnSettings {
                osd_idle_timeout: global.osd_idle_timeout(),
                osd_ping_timeout: global.osd_ping_timeout(),
                peer_connect_timeout: global.peer_connect_timeout(),
            }
        });
        // A client that stops hearing from an OSD only drops its connection (the requests
        // waiting on it fail with a retryable error): the OSD's peers, which ping each
        // other on the cluster network, revoke the lease of a hung OSD. A client on a
        // flaky link of its own must not take a healthy OSD out of the cluster.
        let failed_address = address.to_string();
        let on_unresponsive = Box::new(move |silent: Duration| {
            tracing::warn!(
                osd,
                address = failed_address.as_str(),
                "no answer to a ping for {:.1} s; dropping the connection",
                silent.as_secs_f64()
            );
        });
        // Give up early when the OSD leaves the view meanwhile: a frozen OSD accepts TCP
        // connections but never answers the handshake, and its lease may be revoked long
        // before the connect timeout.
        let mut changes = self.inner.changes.clone();
        changes.mark_unchanged();
        let connect = OsdConnection::connect(osd, address, settings, on_unresponsive);
        tokio::pin!(connect);
        let connection = loop {
            tokio::select! {
                result = &mut connect => break result?,
                changed = changes.changed() => {
                    let moved = changed.is_err() || {
                        let state = self.inner.state.lock().expect("not poisoned");
                        state.osd_address(osd).as_deref() != Some(address)
                    };
                    if moved {
                        return Err(ConnectError::Other(format!(
                            "OSD {osd} left {address} while we were connecting"
                        )));
                    }
                }
            }
        };
        self.inner
            .connections
            .lock()
            .expect("not poisoned")
            .insert(osd, connection.clone());
        Ok(connection)
    }

    /// Revokes the lease of OSD `osd` registered at `address` when it refused a
    /// connection; see [`crate::liveness`]. Only one check per OSD runs at a time.
    async fn revoke_lease(&self, osd: u64, address: &str) {
        if !self
            .inner
            .revoking
            .lock()
            .expect("not poisoned")
            .insert(osd)
        {
            return;
        }
        let (etcd, prefix) = (self.inner.etcd.clone(), self.inner.prefix.as_str());
        crate::liveness::revoke_if_refused(etcd, prefix, osd, address).await;
        self.inner
            .revoking
            .lock()
            .expect("not poisoned")
            .remove(&osd);
    }

    /// How long until the next connect to `osd` may be tried, if one failed recently.
    fn connect_penalty(&self, osd: u64) -> Option<Duration> {
        let failures = self.inner.connect_failures.lock().expect("not poisoned");
        let (until, _) = failures.get(&osd)?;
        until.checked_duration_since(Instant::now())
    }

    fn connect_failed(&self, osd: u64, settings: &GlobalConfig) {
        let mut failures = self.inner.connect_failures.lock().expect("not poisoned");
        let (until, backoff) = failures
            .entry(osd)
            .or_insert_with(|| (Instant::now(), retry_backoff(settings)));
        *until = Instant::now() + backoff.next_delay();
    }

    fn connect_succeeded(&self, osd: u64) {
        self.inner
            .connect_failures
            .lock()
            .expect("not poisoned")
            .remove(&osd);
    }

    fn forget_connection(&self, osd: u64) {
        let mut connections = self.inner.connections.lock().expect("not poisoned");
        if connections.get(&osd).is_some_and(|c| c.is_closed()) {
            connections.remove(&osd);
        }
    }

    /// Sends one piece (inside one object) to the active primary of its PG, retrying
    /// across failovers until it gets a definite answer.
    async fn send_piece(
        &self,
        pool: u32,
        stripe: u64,
        body: RequestBody,
        payload: &[u8],
        started: Instant,
    ) -> Result<(i64, Vec<u8>, u32)> {
        // The first retry after a lost connection is immediate (a crashed OSD refuses the
        // reconnect, which starts the failover); later ones wait.
        let mut reconnect_now = true;
        let mut pg_config_logged = false;
        let mut retry: Option<Backoff> = None;
        loop {
            if let Some(limit) = self.inner.options.request_timeout {
                if started.elapsed() >= limit {
                    return Err(ClientError::Timeout(limit.as_millis() as u64));
                }
            }
            let target = {
                let state = self.inner.state.lock().expect("not poisoned");
                let striping = state
                    .striping(pool)
                    .ok_or_else(|| ClientError::NoSuchPool(pool.to_string()))?;
                let pg = striping.pg_of(stripe).get();
                state
                    .active_primary(pool, pg)
                    .and_then(|osd| Some((osd, state.osd_address(osd)?)))
            };
            let settings = self.settings();
            let retry = retry.get_or_insert_with(|| retry_backoff(&settings));
            let Some((osd, address)) = target else {
                self.wait_for_pg_config(started, &mut pg_config_logged)?;
                self.wait_for_change(retry.next_delay()).await;
                continue;
            };
            let connection = match self.connection(osd, &address).await {
                Ok(connection) => connection,
                Err(ConnectError::BackingOff(wait)) => {
                    self.wait_for_change(wait.min(retry.next_delay())).await;
                    continue;
                }
                Err(ConnectError::Refused(error)) => {
                    tracing::debug!("{error}; checking whether it is dead");
                    self.revoke_lease(osd, &address).await;
                    self.wait_for_change(retry.next_delay()).await;
                    continue;
                }
                Err(ConnectError::Other(error)) => {
                    tracing::debug!("{error}; retrying");
                    self.wait_for_change(retry.next_delay()).await;
                    continue;
                }
            };
            match connection.call(body, payload).await {
                Ok((reply, _)) if reply.retval == -i64::from(errno::EPIPE) => {
                    let delay = retry.next_delay().max(settings.up_wait_retry_interval());
                    self.wait_for_change(delay).await;
                }
                Ok((reply, data)) => {
                    let bitmap_len = match reply.body {
                        ReplyBody::Rw { bitmap_len, .. } => bitmap_len,
                        _ => 0,
                    };
                    return Ok((reply.retval, data, bitmap_len));
                }
                Err(ConnectionLost) => {
                    self.forget_connection(osd);
                    if !std::mem::take(&mut reconnect_now) {
                        self.wait_for_change(retry.next_delay()).await;
                    }
                }
            }
        }
    }

    /// A request found no primary: if that is because `/pg/config` cannot be parsed and
    /// there is no valid map to go on with, say so once, and fail after
    /// `client_wait_up_timeout` with the key's error instead of waiting silently forever.
    /// It proceeds by itself once the key is valid (the watch applies it).
    fn wait_for_pg_config(&self, started: Instant, logged: &mut bool) -> Result<()> {
        let error = {
            let state = self.inner.state.lock().expect("not poisoned");
            if !state.view.pg_config.is_empty() {
                return Ok(());
            }
            match &state.view.pg_config_error {
                Some(error) => error.clone(),
                None => return Ok(()),
            }
        };
        let limit = self.inner.options.client_wait_up_timeout;
        if started.elapsed() >= limit {
            return Err(ClientError::InvalidConfig(format!(
                "{error}; no valid PG map after waiting {} s",
                limit.as_secs()
            )));
        }
        if !std::mem::replace(logged, true) {
            tracing::warn!(
                "waiting up to {} s for a valid /pg/config: {error}",
                limit.as_secs()
            );
        }
        Ok(())
    }

    /// Reads `len` bytes at `offset` of `inode`; never-written ranges read as zeros.
    pub async fn read(&self, inode: u64, offset: u64, len: u64) -> Result<Vec<u8>> {
        let pool = (inode >> 48) as u32;
        let striping = self.striping(pool)?;
        let started = Instant::now();
        let pieces = split_at_objects(&striping, inode, offset, len);
        let parts = try_join_all(pieces.into_iter().map(|(oid, _, piece_len)| {
            let piece_offset = offset.max(oid.stripe);
            let rw = Rw {
                inode,
                offset: piece_offset,
                len: piece_len as u32,
                ..Rw::default()
            };
            async move {
                let (retval, data, bitmap_len) = self
                    .send_piece(pool, oid.stripe, RequestBody::Read(rw), &[], started)
                    .await?;
                if retval < 0 {
                    return Err(ClientError::Osd(retval as i32));
                }
                let start = (bitmap_len as usize).min(data.len());
                let mut bytes = data[start..].to_vec();
                bytes.resize(piece_len as usize, 0);
                Ok(bytes)
            }
        }))
        .await?;
        Ok(parts.concat())
    }

    /// Writes `data` at `offset` of `inode`.
    pub async fn write(&self, inode: u64, offset: u64, data: &[u8]) -> Result<()> {
        let pool = (inode >> 48) as u32;
        let order = self.inner.sync_order.read().await;
        self.write_unordered(inode, offset, data).await?;
        if self.immediate_commit_all(pool) {
            return Ok(());
        }
        let over_limit = {
            let mut unsynced = self.inner.unsynced.lock().expect("not poisoned");
            unsynced.bytes += data.len() as u64;
            unsynced.writes.push(UnsyncedWrite {
                inode,
                offset,
                data: data.to_vec(),
            });
            let settings = self.settings();
            unsynced.bytes > settings.client_max_dirty_bytes()
                || unsynced.writes.len() as u64 > settings.client_max_dirty_ops()
        };
        drop(order);
        if over_limit {
            // As Vitastor's client does: the copies kept for replay are bounded.
            self.sync().await?;
        }
        Ok(())
    }

    /// Bytes and writes acknowledged and not yet covered by a SYNC.
    pub fn unsynced(&self) -> (u64, usize) {
        let unsynced = self.inner.unsynced.lock().expect("not poisoned");
        (unsynced.bytes, unsynced.writes.len())
    }

    async fn write_unordered(&self, inode: u64, offset: u64, data: &[u8]) -> Result<()> {
        let pool = (inode >> 48) as u32;
        let striping = self.striping(pool)?;
        let started = Instant::now();
        let pieces = split_at_objects(&striping, inode, offset, data.len() as u64);
        try_join_all(pieces.into_iter().map(|(oid, _, piece_len)| {
            let piece_offset = offset.max(oid.stripe);
            let from = (piece_offset - offset) as usize;
            let payload = &data[from..from + piece_len as usize];
            let rw = Rw {
                inode,
                offset: piece_offset,
                len: piece_len as u32,
                ..Rw::default()
            };
            async move {
                let (retval, _, _) = self
                    .send_piece(pool, oid.stripe, RequestBody::Write(rw), payload, started)
                    .await?;
                if retval < 0 {
                    return Err(ClientError::Osd(retval as i32));
                }
                Ok(())
            }
        }))
        .await?;
        Ok(())
    }

    /// Deletes whole objects in `[offset, offset+len)` of `inode` (both aligned to objects).
    pub async fn delete_objects(&self, inode: u64, offset: u64, len: u64) -> Result<()> {
        let pool = (inode >> 48) as u32;
        let striping = self.striping(pool)?;
        let started = Instant::now();
        let _order = self.inner.sync_order.read().await;
        let pieces = split_at_objects(&striping, inode, offset, len);
        try_join_all(pieces.into_iter().map(|(oid, _, _)| {
            let rw = Rw {
                inode,
                offset: oid.stripe,
                ..Rw::default()
            };
            async move {
                let (retval, _, _) = self
                    .send_piece(pool, oid.stripe, RequestBody::Delete(rw), &[], started)
                    .await?;
                if retval < 0 && retval != -i64::from(errno::ENOENT) {
                    return Err(ClientError::Osd(retval as i32));
                }
                Ok(())
            }
        }))
        .await?;
        Ok(())
    }

    /// Makes every write acknowledged before this call durable.
    pub async fn sync(&self) -> Result<()> {
        let _order = self.inner.sync_order.write().await;
        let unsynced =
            std::mem::take(&mut *self.inner.unsynced.lock().expect("not poisoned")).writes;
        if unsynced.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let mut sync_retry: Option<Backoff> = None;
        loop {
            // SYNC every primary currently serving a PG of the written objects.
            let mut targets: Vec<(u32, u64)> = Vec::new();
            for write in &unsynced {
                let pool = (write.inode >> 48) as u32;
                let striping = self.striping(pool)?;
                let stripe = striping.object_of(write.inode, write.offset).stripe;
                if !targets
                    .iter()
                    .any(|&(p, s)| p == pool && striping.pg_of(s) == striping.pg_of(stripe))
                {
                    targets.push((pool, stripe));
                }
            }
            let results = try_join_all(targets.iter().map(|&(pool, stripe)| {
                self.send_piece(pool, stripe, RequestBody::Sync, &[], started)
            }))
            .await?;
            if results.iter().all(|(retval, _, _)| *retval >= 0) {
                return Ok(());
            }
            // A primary lost unsynced data (restart): write it again, then SYNC again,
            // after a pause that grows while SYNCs keep failing.
            tracing::info!("SYNC failed; replaying {} unsynced writes", unsynced.len());
            let backoff = sync_retry.get_or_insert_with(|| retry_backoff(&self.settings()));
            tokio::time::sleep(backoff.next_delay()).await;
            for write in &unsynced {
                self.write_unordered(write.inode, write.offset, &write.data)
                    .await?;
            }
        }
    }

    fn striping(&self, pool: u32) -> Result<vitastor_proto::placement::Striping> {
        self.inner
            .state
            .lock()
            .expect("not poisoned")
            .striping(pool)
            .ok_or_else(|| ClientError::NoSuchPool(pool.to_string()))
    }
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Image(pool {}, inode {})", self.pool, self.number)
    }
}

impl Image {
    /// The image's config as etcd has it now (size, readonly, name).
    pub fn config(&self) -> Result<InodeConfig> {
        let state = self.client.inner.state.lock().expect("not poisoned");
        state
            .inodes
            .get(&(self.pool, self.number))
            .cloned()
            .ok_or_else(|| {
                ClientError::NoSuchImage(format!("pool {} inode {}", self.pool, self.number))
            })
    }

    /// Size and read-only flag, read under the state lock without copying the config
    /// (every request checks them).
    fn limits(&self) -> Result<(u64, bool)> {
        let state = self.client.inner.state.lock().expect("not poisoned");
        state
            .inodes
            .get(&(self.pool, self.number))
            .map(|c| (c.size, c.readonly))
            .ok_or_else(|| {
                ClientError::NoSuchImage(format!("pool {} inode {}", self.pool, self.number))
            })
    }

    pub fn size(&self) -> u64 {
        self.limits().map(|(size, _)| size).unwrap_or(0)
    }

    /// Whether writes are refused (also when the image is gone).
    pub fn readonly(&self) -> bool {
        self.limits().map(|(_, readonly)| readonly).unwrap_or(true)
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Checks alignment and bounds; returns whether the image is read-only.
    fn check_range(&self, offset: u64, len: u64) -> Result<bool> {
        let (size, readonly) = self.limits()?;
        if !offset.is_multiple_of(ALIGNMENT) || !len.is_multiple_of(ALIGNMENT) {
            return Err(ClientError::InvalidArgument(format!(
                "offset {offset} and length {len} must be multiples of {ALIGNMENT}"
            )));
        }
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(ClientError::InvalidArgument(format!(
                "range {offset}+{len} is past the image end ({size})"
            )));
        }
        Ok(readonly)
    }

    pub async fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.check_range(offset, len)?;
        if len == 0 {
            return Ok(Vec::new());
        }
        self.client.read(self.inode, offset, len).await
    }

    pub async fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        if self.check_range(offset, data.len() as u64)? {
            return Err(ClientError::ReadOnly);
        }
        if data.is_empty() {
            return Ok(());
        }
        self.client.write(self.inode, offset, data).await
    }

    /// Zeroes a range: whole objects are deleted (they read as zeros), partial ones written.
    pub async fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        if self.check_range(offset, len)? {
            return Err(ClientError::ReadOnly);
        }
        let striping = self.client.striping(self.pool)?;
        let object = striping.stripe_size();
        let end = offset + len;
        let first_whole = offset.div_ceil(object) * object;
        let last_whole = end / object * object;
        if first_whole < last_whole {
            if offset < first_whole {
                self.write(offset, &vec![0; (first_whole - offset) as usize])
                    .await?;
            }
            self.client
                .delete_objects(self.inode, first_whole, last_whole - first_whole)
                .await?;
            if last_whole < end {
                self.write(last_whole, &vec![0; (end - last_whole) as usize])
                    .await?;
            }
            Ok(())
        } else {
            self.write(offset, &vec![0; len as usize]).await
        }
    }

    pub async fn sync(&self) -> Result<()> {
        self.client.sync().await
    }

    /// Bytes of image data per object.
    pub fn object_size(&self) -> Result<u64> {
        Ok(self.client.striping(self.pool)?.stripe_size())
    }

    /// Deletes the whole objects in `[offset, offset+len)` (object-aligned): they read as
    /// zeros afterwards. Used for trim and by `vitastor-cli rm`.
    pub async fn trim_objects(&self, offset: u64, len: u64) -> Result<()> {
        if self.limits()?.1 {
            return Err(ClientError::ReadOnly);
        }
        self.client.delete_objects(self.inode, offset, len).await
    }
}
