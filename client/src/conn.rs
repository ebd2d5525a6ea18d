//! One TCP connection to one OSD: requests are tagged with ids, written by a writer task
//! (several per write syscall when they queue up), and replies are matched to their
//! callers by a reader task. When the connection breaks, every caller waiting on it gets
//! `ConnectionLost` and retries elsewhere.
//!
//! A pinger task keeps the connection honest: after `osd_idle_timeout` without a byte
//! from the OSD it sends a PING, and without an answer (or any other byte) within
//! `osd_ping_timeout` it fails the connection, so requests stuck on a frozen OSD become
//! retryable instead of waiting for the OSD's lease to expire. The caller hears about it
//! through the `on_unresponsive` callback (the client revokes the OSD's lease).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use vitastor_proto::wire::show_config::{ShowConfigReply, ShowConfigRequest};
use vitastor_proto::wire::{encode_request, Reply, ReplyDecoder, Request, RequestBody};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLost;

/// Why a connection could not be made. A refusal is singled out: it proves that nothing
/// listens at the address (the OSD process is gone), which allows a fast failover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectError {
    Refused(String),
    Other(String),
    /// A connect to this OSD failed recently; the next attempt may start after this long.
    BackingOff(Duration),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Refused(text) | ConnectError::Other(text) => f.write_str(text),
            ConnectError::BackingOff(wait) => write!(
                f,
                "a connect failed recently; next attempt in {} ms",
                wait.as_millis()
            ),
        }
    }
}

/// The timeouts a connection works with (Vitastor's option names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnSettings {
    pub osd_idle_timeout: Duration,
    pub osd_ping_timeout: Duration,
    pub peer_connect_timeout: Duration,
}

/// Asked anew before every PING so online changes of `/config/global` apply.
pub type SettingsSource = Arc<dyn Fn() -> ConnSettings + Send + Sync>;
/// Called once when the OSD did not answer a PING in time, with how long it was silent.
pub type OnUnresponsive = Box<dyn FnOnce(Duration) + Send>;

type Waiter = oneshot::Sender<(Reply, Vec<u8>)>;

pub struct OsdConnection {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    pending: Arc<Mutex<HashMap<u64, Waiter>>>,
    next_id: AtomicU64,
    closed: Arc<AtomicBool>,
    /// Reader and writer tasks, aborted when the pinger gives the connection up (that
    /// drops the socket).
    tasks: Vec<AbortHandle>,
}

impl Drop for OsdConnection {
    fn drop(&mut self) {
        // The reader would otherwise keep the socket open until the OSD closes it.
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl OsdConnection {
    /// Connects and does the SHOW_CONFIG handshake, each step within the connect timeout.
    pub async fn connect(
        osd: u64,
        address: &str,
        settings: SettingsSource,
        on_unresponsive: OnUnresponsive,
    ) -> Result<Arc<OsdConnection>, ConnectError> {
        let timeout = settings().peer_connect_timeout;
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
            Err(_) => {
                return Err(ConnectError::Other(format!(
                    "connecting to OSD {osd} at {address} timed out"
                )))
            }
            Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Err(ConnectError::Refused(format!(
                    "OSD {osd} refused the connection at {address}"
                )))
            }
            Ok(Err(error)) => {
                return Err(ConnectError::Other(format!(
                    "cannot connect to OSD {osd} at {address}: {error}"
                )))
            }
            Ok(Ok(stream)) => stream,
        };
        let _ = stream.set_nodelay(true);
        let (mut read, mut write) = stream.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let pending: Arc<Mutex<HashMap<u64, Waiter>>> = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let since = Instant::now();
        // Milliseconds after `since` of the last byte received.
        let last_rx = Arc::new(AtomicU64::new(0));
        let writer = tokio::spawn(async move {
            while let Some(mut bytes) = rx.recv().await {
                while let Ok(more) = rx.try_recv() {
                    bytes.extend_from_slice(&more);
                }
                if write.write_all(&bytes).await.is_err() {
                    break;
                }
            }
        });
        let (reader_pending, reader_closed, reader_rx) =
            (pending.clone(), closed.clone(), last_rx.clone());
        let reader = tokio::spawn(async move {
            let mut decoder = ReplyDecoder::new();
            let mut buffer = vec![0u8; 256 * 1024];
            'read: loop {
                let n = match read.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                reader_rx.store(since.elapsed().as_millis() as u64, Ordering::Relaxed);
                decoder.push(&buffer[..n]);
                loop {
                    match decoder.next_reply() {
                        Ok(Some((reply, payload))) => {
                            let waiter = reader_pending
                                .lock()
                                .expect("not poisoned")
                                .remove(&reply.id);
                            if let Some(waiter) = waiter {
                                let _ = waiter.send((reply, payload));
                            }
                        }
                        Ok(None) => break,
                        Err(error) => {
                            tracing::warn!(osd, "bad reply from OSD, closing: {error}");
                            break 'read;
                        }
                    }
                }
            }
            reader_closed.store(true, Ordering::SeqCst);
            // Dropping the senders wakes every waiter with ConnectionLost.
            reader_pending.lock().expect("not poisoned").clear();
        });
        let connection = Arc::new(OsdConnection {
            tx,
            pending,
            next_id: AtomicU64::new(1),
            closed,
            tasks: vec![reader.abort_handle(), writer.abort_handle()],
        });
        let hello = serde_json::to_vec(&ShowConfigRequest::default()).expect("serializes");
        let body = RequestBody::ShowConfig {
            json_len: hello.len() as u64,
        };
        let (reply, payload) = tokio::time::timeout(timeout, connection.call(body, &hello))
            .await
            .map_err(|_| {
                ConnectError::Other(format!("OSD {osd} at {address} did not answer SHOW_CONFIG"))
            })?
            .map_err(|_| {
                ConnectError::Other(format!("OSD {osd} at {address} closed the connection"))
            })?;
        if reply.retval < 0 {
            return Err(ConnectError::Other(format!(
                "OSD {osd} refused SHOW_CONFIG: {}",
                reply.retval
            )));
        }
        // Either form (JSON + NUL as Vitastor's OSD and ours send, or bare JSON).
        let config = ShowConfigReply::parse(&payload).map_err(|error| {
            ConnectError::Other(format!("OSD {osd} sent a bad SHOW_CONFIG reply: {error}"))
        })?;
        if config.osd_num != osd {
            return Err(ConnectError::Other(format!(
                "{address} is OSD {}, not OSD {osd} (outdated address)",
                config.osd_num
            )));
        }
        tokio::spawn(ping_loop(
            Arc::downgrade(&connection),
            since,
            last_rx,
            settings,
            on_unresponsive,
        ));
        Ok(connection)
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Gives the connection up: every waiting caller gets `ConnectionLost` now and the
    /// socket is closed.
    fn fail(&self) {
        self.closed.store(true, Ordering::SeqCst);
        for task in &self.tasks {
            task.abort();
        }
        self.pending.lock().expect("not poisoned").clear();
    }

    /// Sends one request and waits for its reply.
    pub async fn call(
        &self,
        body: RequestBody,
        payload: &[u8],
    ) -> Result<(Reply, Vec<u8>), ConnectionLost> {
        if self.is_closed() {
            return Err(ConnectionLost);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let bytes = encode_request(&Request { id, body }, payload).map_err(|_| ConnectionLost)?;
        let (waiter, reply) = oneshot::channel();
        self.pending
            .lock()
            .expect("not poisoned")
            .insert(id, waiter);
        if self.tx.send(bytes).is_err() || self.is_closed() {
            self.pending.lock().expect("not poisoned").remove(&id);
            return Err(ConnectionLost);
        }
        reply.await.map_err(|_| ConnectionLost)
    }
}

/// PINGs the OSD after `osd_idle_timeout` of silence; fails the connection when neither
/// the answer nor any other byte arrives within `osd_ping_timeout`. Ends with the
/// connection.
async fn ping_loop(
    connection: Weak<OsdConnection>,
    since: Instant,
    last_rx: Arc<AtomicU64>,
    settings: SettingsSource,
    on_unresponsive: OnUnresponsive,
) {
    let last = || since + Duration::from_millis(last_rx.load(Ordering::Relaxed));
    loop {
        let current = settings();
        let idle = last().elapsed();
        if idle < current.osd_idle_timeout {
            tokio::time::sleep(current.osd_idle_timeout - idle).await;
            continue;
        }
        let Some(strong) = connection.upgrade() else {
            return;
        };
        if strong.is_closed() {
            return;
        }
        let sent = Instant::now();
        let ping = tokio::time::timeout(
            current.osd_ping_timeout,
            strong.call(RequestBody::Ping, &[]),
        )
        .await;
        match ping {
            Ok(Ok(_)) => {
                // An answer counts as traffic: the next PING waits a full idle period.
                let now = since.elapsed().as_millis() as u64;
                last_rx.fetch_max(now, Ordering::Relaxed);
            }
            Ok(Err(ConnectionLost)) => return,
            Err(_) if last() >= sent => {} // other replies arrived meanwhile
            Err(_) => {
                strong.fail();
                on_unresponsive(last().elapsed());
                return;
            }
        }
    }
}
