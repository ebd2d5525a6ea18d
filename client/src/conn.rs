//! One TCP connection to one OSD: requests are tagged with ids, written by a writer task
//! (several per write syscall when they queue up), and replies are matched to their
//! callers by a reader task. When the connection breaks, every caller waiting on it gets
//! `ConnectionLost` and retries elsewhere.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use vitastor_proto::wire::show_config::ShowConfigRequest;
use vitastor_proto::wire::{encode_request, Reply, ReplyDecoder, Request, RequestBody};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLost;

type Waiter = oneshot::Sender<(Reply, Vec<u8>)>;

pub struct OsdConnection {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    pending: Arc<Mutex<HashMap<u64, Waiter>>>,
    next_id: AtomicU64,
    closed: Arc<AtomicBool>,
}

impl OsdConnection {
    /// Connects and does the SHOW_CONFIG handshake.
    pub async fn connect(osd: u64, address: &str) -> Result<Arc<OsdConnection>, String> {
        let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(address))
            .await
            .map_err(|_| format!("connecting to OSD {osd} at {address} timed out"))?
            .map_err(|e| format!("cannot connect to OSD {osd} at {address}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (mut read, mut write) = stream.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let pending: Arc<Mutex<HashMap<u64, Waiter>>> = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        tokio::spawn(async move {
            while let Some(mut bytes) = rx.recv().await {
                while let Ok(more) = rx.try_recv() {
                    bytes.extend_from_slice(&more);
                }
                if write.write_all(&bytes).await.is_err() {
                    break;
                }
            }
        });
        let (reader_pending, reader_closed) = (pending.clone(), closed.clone());
        tokio::spawn(async move {
            let mut decoder = ReplyDecoder::new();
            let mut buffer = vec![0u8; 256 * 1024];
            'read: loop {
                let n = match read.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
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
        });
        let hello = serde_json::to_vec(&ShowConfigRequest::default()).expect("serializes");
        let body = RequestBody::ShowConfig {
            json_len: hello.len() as u64,
        };
        let (reply, _) =
            tokio::time::timeout(Duration::from_secs(5), connection.call(body, &hello))
                .await
                .map_err(|_| format!("OSD {osd} at {address} did not answer SHOW_CONFIG"))?
                .map_err(|_| format!("OSD {osd} at {address} closed the connection"))?;
        if reply.retval < 0 {
            return Err(format!("OSD {osd} refused SHOW_CONFIG: {}", reply.retval));
        }
        Ok(connection)
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
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
