//! Fast failure detection between OSDs: how a peer's death or hang becomes a revoked etcd
//! lease in well under its TTL.
//!
//! Without this, a crashed or frozen OSD keeps its `/osd/state` and `/pg/state` keys until
//! its lease expires (TTL 15 s by default), and every client request that reaches one of
//! its PGs waits that long. Two signals are cheap and certain enough to act on:
//!
//! - **Connection refused** (Ceph's `osd_fast_fail_on_connection_refused`): when a process
//!   dies, its kernel resets its connections and refuses new ones on its port at once. A
//!   refused connect to the address an OSD registered means that registration's process is
//!   gone, so its lease can be revoked. The check reads `/osd/state/<n>` first and only then
//!   connects to the address found there: the OSD binds its port before it registers, so a
//!   refusal after the read proves that the instance holding the lease we read is not
//!   listening. A restarted instance has a new lease, which is never touched.
//! - **No answer to a PING** within `osd_ping_timeout` on a connection that received nothing
//!   for `osd_idle_timeout` (Vitastor's options and meaning): the process is alive but
//!   useless (SIGSTOP, a stall). The connection is dropped, which repeers the PGs without
//!   the peer, and its lease is revoked so the monitor moves its PGs; when it resumes it
//!   finds its lease gone and stops serving.
//!
//! PINGs travel on a separate small connection to the peer: the daemon owns the reply
//! stream of the data connection and matches every reply there to its own requests, so a
//! foreign reply in that stream would be noise at best. A frozen process answers neither
//! connection, and every byte that arrives on the data connection also counts as a sign
//! of life, so the side connection only carries traffic while the data connection is idle.

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vitastor_proto::backoff::Backoff;
use vitastor_proto::etcd::{endpoints, GlobalConfig, OsdState};
use vitastor_proto::wire::{encode_request, Opcode, ReplyDecoder, Request, RequestBody};

/// Command-line overrides of the liveness options; unset ones come from `/config/global`
/// (and can change online there).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LivenessOverrides {
    /// Seconds.
    pub osd_idle_timeout: Option<u64>,
    /// Seconds.
    pub osd_ping_timeout: Option<u64>,
    /// Seconds.
    pub peer_connect_timeout: Option<u64>,
}

/// The liveness timeouts in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LivenessSettings {
    pub idle_timeout: Duration,
    pub ping_timeout: Duration,
    pub connect_timeout: Duration,
}

impl LivenessOverrides {
    /// The settings from `global`, with the command line taking precedence.
    pub fn resolve(&self, global: &GlobalConfig) -> LivenessSettings {
        let mut merged = global.clone();
        merged.osd_idle_timeout = self.osd_idle_timeout.or(global.osd_idle_timeout);
        merged.osd_ping_timeout = self.osd_ping_timeout.or(global.osd_ping_timeout);
        merged.peer_connect_timeout = self.peer_connect_timeout.or(global.peer_connect_timeout);
        LivenessSettings {
            idle_timeout: merged.osd_idle_timeout(),
            ping_timeout: merged.osd_ping_timeout(),
            connect_timeout: merged.peer_connect_timeout(),
        }
    }
}

/// Why a healthy-looking data connection was given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerFailure {
    /// The peer's port refused the ping connection: the process is gone.
    Refused,
    /// Nothing arrived within the ping timeout after a PING.
    Unresponsive(Duration),
}

/// The OSD's liveness actions in etcd, on their own etcd connection so that they never
/// queue behind the daemon's PG-state writes.
pub struct Liveness {
    etcd_address: String,
    prefix: String,
    client: RefCell<Option<etcd_client::Client>>,
}

/// etcd requests of a liveness check must not hang the peer's reconnect loop.
const ETCD_TIMEOUT: Duration = Duration::from_secs(5);

/// First and longest pause before a broken side connection is opened again.
const SIDE_RETRY_PAUSE: Duration = Duration::from_millis(100);
const SIDE_RETRY_MAX: Duration = Duration::from_secs(1);

/// Id of the PINGs on the side connection (nothing else is sent there).
const PING_ID: u64 = 1;

impl Liveness {
    pub fn new(etcd_address: &str, prefix: &str) -> Liveness {
        Liveness {
            etcd_address: etcd_address.to_string(),
            prefix: prefix.trim_end_matches('/').to_string(),
            client: RefCell::new(None),
        }
    }

    async fn etcd(&self) -> Result<etcd_client::Client, String> {
        if let Some(client) = self.client.borrow().as_ref() {
            return Ok(client.clone());
        }
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(ETCD_TIMEOUT)
            .with_timeout(ETCD_TIMEOUT);
        let client = etcd_client::Client::connect(endpoints(&self.etcd_address), Some(options))
            .await
            .map_err(|e| format!("cannot connect to etcd at {}: {e}", self.etcd_address))?;
        *self.client.borrow_mut() = Some(client.clone());
        Ok(client)
    }

    /// The lease of OSD `num`'s registration if it is still the one listening at
    /// `host:port` (None: gone, re-registered elsewhere, or not leased).
    async fn registration_at(
        &self,
        num: u64,
        host: &str,
        port: u16,
    ) -> Result<Option<i64>, String> {
        let key = format!("{}/osd/state/{num}", self.prefix);
        let response = self
            .etcd()
            .await?
            .get(key.as_str(), None)
            .await
            .map_err(|e| format!("cannot read {key}: {e}"))?;
        let Some(kv) = response.kvs().first() else {
            return Ok(None);
        };
        let listens = serde_json::from_slice::<OsdState>(kv.value())
            .is_ok_and(|state| state.listens_at(host, port));
        Ok((listens && kv.lease() != 0).then_some(kv.lease()))
    }

    async fn revoke(&self, lease: i64) -> Result<(), String> {
        self.etcd()
            .await?
            .lease_revoke(lease)
            .await
            .map(|_| ())
            .map_err(|e| format!("cannot revoke lease {lease:x}: {e}"))
    }

    /// Called when a connection to OSD `num` at `host:port` was refused: if its current
    /// registration still names that address and a fresh connect is refused too, revokes
    /// its lease. Returns whether it did.
    pub async fn revoke_if_refused(&self, num: u64, host: &str, port: u16) -> bool {
        let result = async {
            let Some(lease) = self.registration_at(num, host, port).await? else {
                return Ok(false);
            };
            if !connect_refused(host, port).await {
                return Ok(false);
            }
            self.revoke(lease).await?;
            Ok::<bool, String>(true)
        }
        .await;
        match result {
            Ok(true) => {
                tracing::warn!("OSD {num} refused connections at {host}:{port}; revoked its lease");
                true
            }
            Ok(false) => false,
            Err(error) => {
                tracing::warn!(peer = num, "fast failure check: {error}");
                false
            }
        }
    }

    /// Called when OSD `num` at `host:port` did not answer a PING in time: revokes the
    /// lease of its registration at that address. Returns whether it did.
    pub async fn revoke_unresponsive(
        &self,
        num: u64,
        host: &str,
        port: u16,
        silent: Duration,
    ) -> bool {
        let result = async {
            let Some(lease) = self.registration_at(num, host, port).await? else {
                return Ok(false);
            };
            self.revoke(lease).await?;
            Ok::<bool, String>(true)
        }
        .await;
        match result {
            Ok(true) => {
                tracing::warn!(
                    "OSD {num} at {host}:{port} did not answer a ping ({:.1} s without a byte); revoked its lease",
                    silent.as_secs_f64()
                );
                true
            }
            Ok(false) => false,
            Err(error) => {
                tracing::warn!(peer = num, "unresponsive peer: {error}");
                false
            }
        }
    }
}

/// Whether a new TCP connection to `host:port` is refused right now (a timeout or any
/// other error is not proof of death).
async fn connect_refused(host: &str, port: u16) -> bool {
    let connect = TcpStream::connect((host, port));
    matches!(
        tokio::time::timeout(Duration::from_secs(1), connect).await,
        Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

/// Watches a data connection whose last received byte is at `last_rx` (updated by its
/// reader): while bytes keep arriving it only sleeps; after `idle_timeout` of silence it
/// PINGs the peer on a side connection. Returns when the peer failed; never returns while
/// it is healthy. `settings` is asked anew each round so online changes apply.
pub async fn watch_peer(
    host: &str,
    port: u16,
    last_rx: &Cell<Instant>,
    settings: impl Fn() -> LivenessSettings,
) -> PeerFailure {
    let mut side: Option<SideLink> = None;
    let mut side_retry = Backoff::new(SIDE_RETRY_PAUSE, SIDE_RETRY_MAX);
    loop {
        let current = settings();
        let idle = last_rx.get().elapsed();
        if idle < current.idle_timeout {
            tokio::time::sleep(current.idle_timeout - idle).await;
            continue;
        }
        let sent = Instant::now();
        let answered = async {
            if side.is_none() {
                side = Some(SideLink::connect(host, port).await?);
            }
            side.as_mut().expect("connected above").ping().await
        };
        match tokio::time::timeout(current.ping_timeout, answered).await {
            Ok(Ok(())) => {
                // Alive: treat the answer like traffic so the next PING waits a full idle
                // period.
                last_rx.set(last_rx.get().max(Instant::now()));
                side_retry.reset();
            }
            Ok(Err(SideError::Refused)) => return PeerFailure::Refused,
            Ok(Err(SideError::Broken)) => {
                // A side connection that keeps breaking must not make this loop spin;
                // silence on the data connection still ends in the ping timeout.
                side = None;
                tokio::time::sleep(side_retry.next_delay()).await;
            }
            Err(_) if last_rx.get() > sent => side = None, // data arrived meanwhile
            // This process itself stood still far longer than the timeout (frozen,
            // starved of CPU): the peer had no fair chance to answer. Ask again.
            Err(_) if sent.elapsed() > current.ping_timeout * 2 => side = None,
            Err(_) => return PeerFailure::Unresponsive(last_rx.get().elapsed()),
        }
    }
}

enum SideError {
    Refused,
    /// Any other failure: reconnect and try again within the same ping timeout.
    Broken,
}

/// The side connection that carries PINGs (no handshake needed: every OSD answers PING
/// on any connection).
struct SideLink {
    stream: TcpStream,
    decoder: ReplyDecoder,
}

impl SideLink {
    async fn connect(host: &str, port: u16) -> Result<SideLink, SideError> {
        match TcpStream::connect((host, port)).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                Ok(SideLink {
                    stream,
                    decoder: ReplyDecoder::new(),
                })
            }
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                Err(SideError::Refused)
            }
            // Do not spin on a failing connect: let the ping timeout decide.
            Err(_) => std::future::pending().await,
        }
    }

    async fn ping(&mut self) -> Result<(), SideError> {
        let request = Request {
            id: PING_ID,
            body: RequestBody::Ping,
        };
        let bytes = encode_request(&request, &[]).map_err(|_| SideError::Broken)?;
        self.stream
            .write_all(&bytes)
            .await
            .map_err(|_| SideError::Broken)?;
        let mut buf = [0u8; 512];
        loop {
            match self.decoder.next_reply() {
                Ok(Some((reply, _))) if reply.opcode == Opcode::Ping => return Ok(()),
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(_) => return Err(SideError::Broken),
            }
            match self.stream.read(&mut buf).await {
                Ok(0) | Err(_) => return Err(SideError::Broken),
                Ok(n) => self.decoder.push(&buf[..n]),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_overrides_global_config() {
        let global: GlobalConfig =
            serde_json::from_str(r#"{"osd_idle_timeout":2,"osd_ping_timeout":3}"#).unwrap();
        let none = LivenessOverrides::default().resolve(&global);
        assert_eq!(none.idle_timeout, Duration::from_secs(2));
        assert_eq!(none.ping_timeout, Duration::from_secs(3));
        assert_eq!(none.connect_timeout, Duration::from_secs(5));
        let set = LivenessOverrides {
            osd_ping_timeout: Some(1),
            ..LivenessOverrides::default()
        }
        .resolve(&global);
        assert_eq!(set.ping_timeout, Duration::from_secs(1));
        assert_eq!(set.idle_timeout, Duration::from_secs(2));
    }

    #[test]
    fn a_closed_port_counts_as_refused_and_an_open_one_does_not() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            assert!(!connect_refused("127.0.0.1", port).await);
            drop(listener);
            assert!(connect_refused("127.0.0.1", port).await);
        });
    }

    #[test]
    fn a_silent_peer_is_reported_after_idle_plus_ping_timeout() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            // Accepts connections (the kernel does even for a stopped process) and never
            // answers.
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let last_rx = Cell::new(Instant::now());
            let settings = || LivenessSettings {
                idle_timeout: Duration::from_millis(50),
                ping_timeout: Duration::from_millis(100),
                connect_timeout: Duration::from_secs(1),
            };
            let failure = watch_peer("127.0.0.1", port, &last_rx, settings).await;
            assert!(
                matches!(failure, PeerFailure::Unresponsive(d) if d >= Duration::from_millis(150))
            );
            drop(listener);
            let failure = watch_peer("127.0.0.1", port, &last_rx, settings).await;
            assert_eq!(failure, PeerFailure::Refused);
        });
    }
}
