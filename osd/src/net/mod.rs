//! The real driver of the daemon: TCP connections, the blockstore's io_uring eventfd and
//! etcd, all on one thread (a tokio current-thread runtime). Every event is handed to the
//! [`Osd`] on this thread and its actions are carried out right after; no op crosses a
//! thread. Thin on purpose: the decisions live in [`crate::daemon`].

pub mod etcd;
mod etcd_queue;
mod lease;
pub mod liveness;

use crate::blockstore::prepare::{claim_osd_num, ClaimError};
use crate::blockstore::uring::UringDisk;
use crate::blockstore::{Blockstore, BlockstoreConfig};
use crate::cluster::ClusterView;
use crate::daemon::{Action, ConnId, Osd, OsdSettings};
use etcd::{Etcd, EtcdTiming};
use liveness::{Liveness, LivenessOverrides, LivenessSettings, PeerFailure};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use vitastor_proto::backoff::Backoff;
use vitastor_proto::etcd::ImmediateCommit;
use vitastor_proto::wire::show_config::{ShowConfigReply, ShowConfigRequest};
use vitastor_proto::wire::{encode_request, ReplyDecoder, Request, RequestBody};

#[derive(Debug, Clone)]
pub struct DaemonOptions {
    pub osd_num: u64,
    pub data_device: PathBuf,
    pub etcd_address: String,
    pub etcd_prefix: String,
    pub bind_address: String,
    /// 0 = any free port.
    pub port: u16,
    pub immediate_commit: ImmediateCommit,
    pub disable_data_fsync: bool,
    /// Lease keep-alives, stats reports and etcd call timeouts (lease TTL =
    /// report interval + max attempts x quick timeout, as in Vitastor).
    pub etcd: EtcdTiming,
    /// Skip the exclusive lock on the data device.
    pub disable_flock: bool,
    /// Command-line overrides of `osd_idle_timeout`, `osd_ping_timeout` and
    /// `peer_connect_timeout` (otherwise taken from `/config/global`).
    pub liveness: LivenessOverrides,
}

/// Pause between attempts to reach a peer that could not be connected. The first attempt
/// after a connection drops is immediate: a crashed peer refuses it, and that refusal is
/// the fast failover signal ([`liveness`]).
const PEER_RECONNECT_PAUSE: Duration = Duration::from_millis(500);
/// Cap of the reconnect backoff: a peer that stays unreachable while it keeps its
/// registration (only possible while etcd is away, or the lease would be revoked) is
/// tried every 2 s at most, and its failure logged as often.
const PEER_RECONNECT_MAX: Duration = Duration::from_secs(2);
/// First and longest pause after a failed accept (out of descriptors, say).
const ACCEPT_RETRY_MIN: Duration = Duration::from_millis(100);
const ACCEPT_RETRY_MAX: Duration = Duration::from_secs(2);

/// The wall clock in UNIX seconds (0 if it is before 1970).
fn unix_now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A client connection's reply queue and what it holds.
type ClientLink = (UnboundedSender<Vec<u8>>, Rc<QueueGauge>);

/// Outbound connection to a peer OSD.
enum PeerLink {
    Connecting,
    Up(UnboundedSender<Vec<u8>>),
}

struct Node {
    osd: RefCell<Osd<UringDisk>>,
    view: RefCell<ClusterView>,
    inbound: RefCell<HashMap<ConnId, ClientLink>>,
    peers: RefCell<HashMap<u64, PeerLink>>,
    etcd_actions: Rc<etcd_queue::EtcdQueue>,
    next_conn: Cell<ConnId>,
    osd_num: u64,
    /// Zero of the monotonic clock handed to the Osd ([`Osd::set_clock`]).
    started: Instant,
    liveness: Liveness,
    liveness_overrides: LivenessOverrides,
    /// (when, objects, bytes) copied by recovery at the last stats report.
    recovery_sample: Cell<Option<(Instant, u64, u64)>>,
    /// Woken on every view change: a peer loop waiting out its reconnect backoff tries
    /// at once when the cluster changed (a restarted peer registered again, say).
    view_changes: tokio::sync::Notify,
    /// The monotonic ms the timer loop sleeps until ([`Osd::next_timer_ms`] when it
    /// armed), and its wake-up when an event made an earlier deadline.
    timer_armed_ms: Cell<u64>,
    timer_rearm: tokio::sync::Notify,
}

impl Node {
    /// Carries out everything the daemon asked for (and sends queued disk requests).
    fn dispatch(&self) {
        let mut actions = Vec::new();
        loop {
            {
                let mut osd = self.osd.borrow_mut();
                osd.set_unix_time(unix_now_s());
                osd.set_clock_us(self.clock_us());
                osd.poll_store();
                osd.take_actions(&mut actions);
            }
            if actions.is_empty() {
                let next_timer_ms = self.osd.borrow().next_timer_ms();
                if next_timer_ms < self.timer_armed_ms.get() {
                    self.timer_rearm.notify_one();
                }
                return;
            }
            for action in actions.drain(..) {
                match action {
                    Action::Reply { conn, bytes } => {
                        if let Some((tx, gauge)) = self.inbound.borrow().get(&conn) {
                            gauge.queued(bytes.len());
                            let _ = tx.send(bytes);
                        }
                    }
                    Action::ToPeer { osd, bytes } => {
                        if let Some(PeerLink::Up(tx)) = self.peers.borrow().get(&osd) {
                            let _ = tx.send(bytes);
                        }
                    }
                    Action::Close { conn } => {
                        self.inbound.borrow_mut().remove(&conn);
                    }
                    Action::ClosePeer { osd } => {
                        // Dropping the sender ends the write loop; peer_read_loop sees the
                        // link is no longer up and the peer loop reconnects.
                        if let Some(link) = self.peers.borrow_mut().get_mut(&osd) {
                            *link = PeerLink::Connecting;
                        }
                    }
                    Action::Etcd(action) => {
                        self.etcd_actions.push(action);
                    }
                }
            }
        }
    }

    /// Hands one batch of events to the Osd. The clock goes first, so an OSD that was
    /// frozen past its lease deadline (SIGSTOP, a long stall) stops its PGs before it
    /// looks at anything that arrived meanwhile.
    fn with_osd(&self, f: impl FnOnce(&mut Osd<UringDisk>)) {
        {
            let mut osd = self.osd.borrow_mut();
            osd.set_unix_time(unix_now_s());
            osd.set_clock_us(self.clock_us());
            f(&mut osd);
        }
        self.dispatch();
    }

    /// Microseconds on the Osd's monotonic clock now.
    fn clock_us(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.started)
            .as_micros() as u64
    }

    /// Milliseconds on the Osd's monotonic clock now.
    fn clock_ms(&self) -> u64 {
        self.clock_ms_at(Instant::now())
    }

    fn clock_ms_at(&self, instant: Instant) -> u64 {
        instant.saturating_duration_since(self.started).as_millis() as u64
    }

    fn instant_at_ms(&self, ms: u64) -> Instant {
        self.started + Duration::from_millis(ms)
    }

    /// The peer liveness timeouts in force (the command line over `/config/global`).
    fn liveness_settings(&self) -> LivenessSettings {
        self.liveness_overrides.resolve(&self.view.borrow().global)
    }
}

/// Runs the OSD until its lease is lost or a fatal error occurs.
pub fn run(options: DaemonOptions) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the event loop: {e}"))?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, run_async(options))
}

async fn run_async(options: DaemonOptions) -> Result<(), String> {
    let device = options.data_device.display();
    let (mut disk, event_fd) =
        UringDisk::open_with_eventfd(&options.data_device).map_err(|e| format!("{device}: {e}"))?;
    // The lock lives with the disk, i.e. as long as this process; the device is claimed
    // (its superblock durably names this OSD) before we register in etcd.
    if !options.disable_flock {
        disk.lock_exclusive(&options.data_device)
            .map_err(|e| e.to_string())?;
    }
    claim_osd_num(&mut disk, options.osd_num).map_err(|e| match e {
        ClaimError::OtherOsd { .. } => format!("{device} {e}"),
        ClaimError::Store(e) => format!("{device}: {e}"),
    })?;
    let config = BlockstoreConfig {
        disable_fsync: options.disable_data_fsync,
        ..BlockstoreConfig::default()
    };
    let store = Blockstore::open(disk, config)
        .map_err(|e| format!("{}: {e}", options.data_device.display()))?;
    let listener = TcpListener::bind((options.bind_address.as_str(), options.port))
        .await
        .map_err(|e| {
            format!(
                "cannot listen on {}:{}: {e}",
                options.bind_address, options.port
            )
        })?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();

    let timing = options.etcd.clone();
    let ttl = timing.lease_ttl_s();
    let mut etcd =
        Etcd::connect(&options.etcd_address, &options.etcd_prefix, timing.clone()).await?;
    etcd.grant_lease().await?;
    let host = hostname();
    let state = serde_json::json!({
        "state": "up",
        "addresses": [options.bind_address],
        "host": host,
        "port": port,
        "primary_enabled": true,
        "blockstore_enabled": true,
    });
    let state_key = etcd.key(&format!("/osd/state/{}", options.osd_num));
    if !etcd.create_leased(&state_key, &state.to_string()).await? {
        return Err(format!(
            "OSD {} is already running: {state_key} exists (if that OSD died, its lease expires within {ttl} s)",
            options.osd_num
        ));
    }
    tracing::info!(
        osd = options.osd_num,
        port,
        lease_ttl_s = ttl,
        lease_margin_ms = timing.lease_margin_ms(),
        "registered in etcd"
    );

    let mut settings = OsdSettings::new(options.osd_num);
    settings.immediate_commit = options.immediate_commit;
    settings.lease_timeout = ttl;
    let etcd_actions = Rc::new(etcd_queue::EtcdQueue::default());
    let node = Rc::new(Node {
        osd: RefCell::new(Osd::new(settings, store)),
        view: RefCell::new(ClusterView::default()),
        inbound: RefCell::new(HashMap::new()),
        peers: RefCell::new(HashMap::new()),
        view_changes: tokio::sync::Notify::new(),
        timer_armed_ms: Cell::new(0),
        timer_rearm: tokio::sync::Notify::new(),
        etcd_actions: etcd_actions.clone(),
        next_conn: Cell::new(1),
        osd_num: options.osd_num,
        started: Instant::now(),
        liveness: Liveness::new(&options.etcd_address, &options.etcd_prefix),
        liveness_overrides: options.liveness,
        recovery_sample: Cell::new(None),
    });
    // The lease is fresh: serve until it could expire, even before the first keep-alive.
    let granted_ms = node.clock_ms();
    node.with_osd(|osd| osd.set_lease_deadline(Some(timing.lease_deadline_ms(granted_ms))));

    let mut cursor = vitastor_proto::etcd::watch::WatchCursor::new();
    etcd::reload(&node, &mut etcd, &mut cursor).await?;

    tokio::task::spawn_local(accept_loop(node.clone(), listener));
    tokio::task::spawn_local(disk_loop(node.clone(), event_fd));
    tokio::task::spawn_local(timer_loop(node.clone()));
    tokio::task::spawn_local(etcd::action_loop(node.clone(), etcd.handle(), etcd_actions));
    tokio::task::spawn_local(etcd::watch_loop(node.clone(), etcd.handle(), cursor));
    let stats_key = etcd.key(&format!("/osd/stats/{}", options.osd_num));
    let stats_options = options.clone();
    let stats_host = host.clone();
    tokio::task::spawn_local(etcd::stats_loop(
        node.clone(),
        etcd.handle(),
        stats_key,
        move |node: &Node| stats_json(node, &stats_host, &stats_options),
    ));
    view_changed(&node);

    // Keep-alives on a connection of their own: a large read or a backlog of writes on
    // the shared one must not delay them.
    let mut lease_etcd = Etcd::connect(&options.etcd_address, &options.etcd_prefix, timing).await?;
    lease_etcd.lease = etcd.lease.clone();
    let registration = lease::Registration {
        osd_num: options.osd_num,
        key: state_key,
        value: state.to_string(),
    };
    let lease_loop = lease::lease_loop(node.clone(), lease_etcd, registration);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot handle SIGTERM: {e}"))?;
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| format!("cannot handle SIGINT: {e}"))?;
    tokio::select! {
        // A clean stop: revoking the lease removes /osd/state and our /pg/state keys
        // at once, so peers and the monitor react now instead of after the TTL.
        // Acknowledged writes are already durable as immediate_commit promises.
        _ = terminate.recv() => stop_cleanly(&node, &mut etcd).await,
        _ = interrupt.recv() => stop_cleanly(&node, &mut etcd).await,
        // Only a fatal condition ends it (our OSD number taken over while the lease was
        // gone); etcd outages do not.
        result = lease_loop => {
            node.with_osd(|osd| osd.on_lease_lost());
            result
        }
    }
}

async fn stop_cleanly(node: &Rc<Node>, etcd: &mut Etcd) -> Result<(), String> {
    tracing::info!("stopping on a signal: releasing the etcd lease");
    node.with_osd(|osd| osd.on_lease_lost());
    let lease = etcd.lease.get();
    let revoke = etcd.client.lease_revoke(lease);
    if let Err(error) =
        etcd::limited(etcd.timing.quick_timeout, "cannot revoke the lease", revoke).await
    {
        tracing::warn!("{error} (it expires by itself)");
    }
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}

/// Objects and bytes copied per second since the previous stats report (what
/// `vitastor-cli status` shows as the recovery rate and uses for its ETA).
fn recovery_rate(
    node: &Node,
    recovery: &std::collections::BTreeMap<&'static str, (u64, u64)>,
) -> serde_json::Value {
    let (count, bytes) = recovery
        .values()
        .fold((0, 0), |(c, b), (count, bytes)| (c + count, b + bytes));
    let now = Instant::now();
    let previous = node.recovery_sample.replace(Some((now, count, bytes)));
    let (ops, bps) = match previous {
        Some((then, old_count, old_bytes)) => {
            let secs = now.duration_since(then).as_secs_f64().max(0.001);
            (
                (count.saturating_sub(old_count)) as f64 / secs,
                (bytes.saturating_sub(old_bytes)) as f64 / secs,
            )
        }
        None => (0.0, 0.0),
    };
    serde_json::json!({"ops": ops.round(), "bps": bps.round()})
}

fn stats_json(node: &Node, host: &str, options: &DaemonOptions) -> String {
    let osd = node.osd.borrow();
    let counters = osd.counters();
    let table = |map: &std::collections::BTreeMap<&'static str, (u64, u64)>| {
        let mut out = serde_json::Map::new();
        for (name, (count, bytes)) in map {
            out.insert(
                name.to_string(),
                serde_json::json!({"count": count, "bytes": bytes}),
            );
        }
        serde_json::Value::Object(out)
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    serde_json::json!({
        "time": format!("{now:.3}"),
        "size": osd.store().size_bytes(),
        "free": osd.store().free_bytes(),
        "data_block_size": osd.store().block_size(),
        "bitmap_granularity": osd.store().bitmap_granularity(),
        "immediate_commit": options.immediate_commit.as_str(),
        "host": host,
        "op_stats": table(&counters.ops),
        "subop_stats": table(&counters.subops),
        "recovery_stats": table(&counters.recovery),
        "recovery_rate": recovery_rate(node, &counters.recovery),
    })
    .to_string()
}

/// Hands the new view to the daemon and connects to OSDs that came up.
fn view_changed(node: &Rc<Node>) {
    let view = node.view.borrow().clone();
    for (&num, _) in view.osd_states.iter() {
        if num == node.osd_num || !view.is_up(num) || node.peers.borrow().contains_key(&num) {
            continue;
        }
        node.peers.borrow_mut().insert(num, PeerLink::Connecting);
        tokio::task::spawn_local(peer_loop(node.clone(), num));
    }
    node.with_osd(|osd| osd.on_view(&view));
    node.view_changes.notify_waiters();
}

async fn accept_loop(node: Rc<Node>, listener: TcpListener) {
    let mut backoff = Backoff::new(ACCEPT_RETRY_MIN, ACCEPT_RETRY_MAX);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                backoff.reset();
                stream
            }
            Err(error) => {
                tracing::warn!("accept failed: {error}");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = node.next_conn.get();
        node.next_conn.set(conn + 1);
        let (read, write) = stream.into_split();
        let (tx, rx) = unbounded_channel();
        let gauge = Rc::new(QueueGauge::default());
        node.inbound.borrow_mut().insert(conn, (tx, gauge.clone()));
        node.osd.borrow_mut().on_connect(conn);
        tokio::task::spawn_local(write_loop(write, rx, Some(gauge.clone())));
        tokio::task::spawn_local(inbound_read_loop(node.clone(), conn, read, gauge));
    }
}

/// Bytes read from a client socket at once, into one buffer shared by every connection
/// of this (single) thread: an idle connection owns no read buffer (3000 idle clients
/// used to hold 256 KiB each).
pub const INBOUND_READ_CHUNK_BYTES: usize = 256 << 10;

thread_local! {
    static INBOUND_READ_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0u8; INBOUND_READ_CHUNK_BYTES]);
}

async fn inbound_read_loop(
    node: Rc<Node>,
    conn: ConnId,
    read: OwnedReadHalf,
    gauge: Rc<QueueGauge>,
) {
    loop {
        // Backpressure: a client that does not read its replies stops being read.
        while gauge.bytes.get() > REPLY_QUEUE_MAX_BYTES {
            gauge.drained.notified().await;
        }
        if read.readable().await.is_err() {
            break;
        }
        // No await between the read and its handling: the shared buffer is free again
        // before any other connection's task runs.
        let closed = INBOUND_READ_BUF.with_borrow_mut(|buf| match read.try_read(buf) {
            Ok(0) => true,
            Ok(n) => {
                node.with_osd(|osd| osd.on_bytes(conn, &buf[..n]));
                false
            }
            Err(error) => error.kind() != std::io::ErrorKind::WouldBlock,
        });
        if closed || !node.inbound.borrow().contains_key(&conn) {
            break; // gone, or closed by the daemon (bad input)
        }
    }
    node.inbound.borrow_mut().remove(&conn);
    node.with_osd(|osd| osd.on_disconnect(conn));
}

/// Messages sent with one `writev` at most (the kernel's IOV_MAX is 1024).
const WRITE_BATCH_MAX_MESSAGES: usize = 256;

/// Bytes of replies queued for one client connection past which the OSD stops reading
/// its requests until the client has taken some (a client that sends without reading
/// must not grow the OSD without bound). Checked between socket reads: the replies to
/// the requests of one read (up to [`INBOUND_READ_CHUNK_BYTES`] of them) can come on top;
/// a limit of ops in flight per connection would bound that too (not built yet).
pub const REPLY_QUEUE_MAX_BYTES: usize = 64 << 20;

/// Bytes queued for a connection's write loop and not yet written, and the wake-up of a
/// reader waiting for them to drain below [`REPLY_QUEUE_MAX_BYTES`].
#[derive(Default)]
struct QueueGauge {
    bytes: Cell<usize>,
    drained: tokio::sync::Notify,
}

impl QueueGauge {
    fn queued(&self, bytes: usize) {
        self.bytes.set(self.bytes.get() + bytes);
    }

    fn written(&self, bytes: usize) {
        let before = self.bytes.get();
        debug_assert!(bytes <= before, "invariant: writes only what was queued");
        self.bytes.set(before - bytes);
        if before > REPLY_QUEUE_MAX_BYTES && before - bytes <= REPLY_QUEUE_MAX_BYTES {
            self.drained.notify_one();
        }
    }
}

/// Writes everything queued for one connection: what has piled up goes out with one
/// vectored write, without copying the messages into one buffer. A client connection's
/// `gauge` counts what is queued (for backpressure); peer links have none.
async fn write_loop(
    mut write: OwnedWriteHalf,
    mut rx: UnboundedReceiver<Vec<u8>>,
    gauge: Option<Rc<QueueGauge>>,
) {
    let mut batch: Vec<Vec<u8>> = Vec::new();
    while let Some(bytes) = rx.recv().await {
        batch.clear();
        batch.push(bytes);
        while batch.len() < WRITE_BATCH_MAX_MESSAGES {
            match rx.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        if write_all_vectored(&mut write, &batch).await.is_err() {
            break;
        }
        if let Some(gauge) = &gauge {
            gauge.written(batch.iter().map(Vec::len).sum());
        }
    }
    let _ = write.shutdown().await;
}

/// Writes every byte of `messages`, in order, with as few `writev` calls as it takes.
async fn write_all_vectored(
    write: &mut OwnedWriteHalf,
    messages: &[Vec<u8>],
) -> std::io::Result<()> {
    let mut slices: Vec<std::io::IoSlice<'_>> = messages
        .iter()
        .filter(|m| !m.is_empty())
        .map(|m| std::io::IoSlice::new(m))
        .collect();
    let mut rest = slices.as_mut_slice();
    while !rest.is_empty() {
        let written = write.write_vectored(rest).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        std::io::IoSlice::advance_slices(&mut rest, written);
    }
    Ok(())
}

async fn disk_loop(node: Rc<Node>, event_fd: OwnedFd) {
    // SAFETY: the OwnedFd is moved into the AsyncFd, so the descriptor stays open and the
    // same for the AsyncFd's whole life.
    let fd = match unsafe { AsyncFd::register(event_fd) } {
        Ok(fd) => fd,
        Err(error) => {
            tracing::error!("cannot watch the io_uring eventfd: {error}");
            std::process::exit(1);
        }
    };
    // No tick: the blockstore hands every request to the device before its poll returns,
    // so each step of its work is announced by a completion (and the eventfd).
    loop {
        let Ok(mut guard) = fd.readable().await else {
            return;
        };
        let mut counter = [0u8; 8];
        // SAFETY: reads 8 bytes into a local array from our own nonblocking eventfd.
        unsafe { libc::read(fd.get_ref().as_raw_fd(), counter.as_mut_ptr().cast(), 8) };
        guard.clear_ready();
        node.dispatch();
    }
}

/// Runs the daemon's time-based work (lease deadline, retries, recovery pauses, scrub
/// checks) when [`Osd::next_timer_ms`] says, re-armed by `dispatch` when an event made
/// an earlier deadline.
async fn timer_loop(node: Rc<Node>) {
    loop {
        let next_ms = node.osd.borrow().next_timer_ms();
        node.timer_armed_ms.set(next_ms);
        let at = node.started + Duration::from_millis(next_ms);
        tokio::select! {
            () = tokio::time::sleep_until(at.into()) => node.dispatch(),
            () = node.timer_rearm.notified() => {}
        }
    }
}

/// Keeps a connection to peer `num` while it is up: connect, handshake, serve its replies,
/// and watch its liveness. A peer that refuses connections or stops answering PINGs is
/// dropped at once (its PGs repeer without it) and its etcd lease revoked, so the monitor
/// moves its PGs without waiting for the lease to expire.
async fn peer_loop(node: Rc<Node>, num: u64) {
    let mut pause = false;
    let mut backoff = Backoff::new(PEER_RECONNECT_PAUSE, PEER_RECONNECT_MAX);
    loop {
        if pause {
            tokio::select! {
                () = tokio::time::sleep(backoff.next_delay()) => {}
                () = node.view_changes.notified() => backoff.reset(),
            }
        }
        pause = true;
        let address = {
            let view = node.view.borrow();
            match view.osd_states.get(&num) {
                Some(state) if state.state == "up" => {
                    state.addresses.first().map(|a| (a.clone(), state.port))
                }
                _ => None,
            }
        };
        let Some((host, port)) = address else {
            node.peers.borrow_mut().remove(&num);
            return;
        };
        let settings = node.liveness_settings();
        let (read, write, leftover) =
            match connect_peer(node.osd_num, num, &host, port, settings.connect_timeout).await {
                Ok(connected) => {
                    backoff.reset();
                    connected
                }
                Err(PeerConnectError::Refused(error)) => {
                    tracing::warn!(peer = num, "cannot connect: {error}");
                    node.liveness.revoke_if_refused(num, &host, port).await;
                    continue;
                }
                Err(PeerConnectError::Other(error)) => {
                    tracing::warn!(peer = num, "cannot connect: {error}");
                    continue;
                }
            };
        let (tx, rx) = unbounded_channel();
        node.peers.borrow_mut().insert(num, PeerLink::Up(tx));
        tokio::task::spawn_local(write_loop(write, rx, None));
        node.with_osd(|osd| {
            osd.on_peer_connected(num);
            if !leftover.is_empty() {
                osd.on_peer_bytes(num, &leftover);
            }
        });
        let last_rx = Cell::new(Instant::now());
        let failure = tokio::select! {
            () = peer_read_loop(&node, num, read, &last_rx) => None,
            failure = liveness::watch_peer(&host, port, &last_rx, || node.liveness_settings()) => Some(failure),
        };
        // Dropping the sender ends the write loop, which closes the connection.
        node.peers.borrow_mut().insert(num, PeerLink::Connecting);
        node.with_osd(|osd| osd.on_peer_down(num));
        match failure {
            None => {
                tracing::warn!(peer = num, "connection to the peer lost");
                pause = false;
            }
            Some(PeerFailure::Refused) => {
                tracing::warn!(peer = num, "the peer refuses new connections");
                node.liveness.revoke_if_refused(num, &host, port).await;
            }
            Some(PeerFailure::Unresponsive(silent)) => {
                tracing::warn!(peer = num, "the peer does not answer pings; dropped it");
                // Only an OSD that is itself in good standing accuses others: one that
                // was frozen past its own lease deadline saw everyone as silent.
                let mut in_good_standing = false;
                node.with_osd(|osd| in_good_standing = osd.lease_ok());
                if in_good_standing {
                    node.liveness
                        .revoke_unresponsive(num, &host, port, silent)
                        .await;
                }
            }
        }
    }
}

async fn peer_read_loop(node: &Node, num: u64, mut read: OwnedReadHalf, last_rx: &Cell<Instant>) {
    let mut buf = vec![0u8; 256 << 10];
    loop {
        match read.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                last_rx.set(Instant::now());
                node.with_osd(|osd| osd.on_peer_bytes(num, &buf[..n]));
            }
        }
        if !matches!(node.peers.borrow().get(&num), Some(PeerLink::Up(_))) {
            return;
        }
    }
}

/// Why a peer could not be connected: a refusal is proof that nothing listens at the
/// address (see [`liveness`]); anything else is not.
enum PeerConnectError {
    Refused(String),
    Other(String),
}

/// Connects and exchanges SHOW_CONFIG within `timeout` each; checks that the peer is the
/// OSD we expect.
async fn connect_peer(
    me: u64,
    num: u64,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<(OwnedReadHalf, OwnedWriteHalf, Vec<u8>), PeerConnectError> {
    let other = PeerConnectError::Other;
    let connect = TcpStream::connect((host, port));
    let mut stream = match tokio::time::timeout(timeout, connect).await {
        Err(_) => return Err(other("connect timed out".to_string())),
        Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(PeerConnectError::Refused(error.to_string()))
        }
        Ok(Err(error)) => return Err(other(error.to_string())),
        Ok(Ok(stream)) => stream,
    };
    let _ = stream.set_nodelay(true);
    let hello = serde_json::to_vec(&ShowConfigRequest {
        osd_num: me,
        features: Default::default(),
    })
    .map_err(|e| other(e.to_string()))?;
    let request = Request {
        id: 0,
        body: RequestBody::ShowConfig {
            json_len: hello.len() as u64,
        },
    };
    let bytes = encode_request(&request, &hello).map_err(|e| other(e.to_string()))?;
    stream
        .write_all(&bytes)
        .await
        .map_err(|e| other(e.to_string()))?;
    let mut decoder = ReplyDecoder::new();
    let mut buf = vec![0u8; 64 << 10];
    let reply = loop {
        let read = tokio::time::timeout(timeout, stream.read(&mut buf));
        let n = read
            .await
            .map_err(|_| other("handshake timed out".to_string()))?
            .map_err(|e| other(e.to_string()))?;
        if n == 0 {
            return Err(other("closed during the handshake".to_string()));
        }
        decoder.push(&buf[..n]);
        if let Some(reply) = decoder.next_reply().map_err(|e| other(e.to_string()))? {
            break reply;
        }
    };
    let config = ShowConfigReply::parse(&reply.1)
        .map_err(|e| other(format!("bad SHOW_CONFIG reply: {e}")))?;
    if config.osd_num != num {
        return Err(other(format!(
            "{host}:{port} is OSD {}, not {num}",
            config.osd_num
        )));
    }
    let leftover = decoder.take_buffered();
    let (read, write) = stream.into_split();
    Ok((read, write, leftover))
}
