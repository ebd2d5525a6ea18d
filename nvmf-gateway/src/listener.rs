//! TCP listeners: one accept loop per (traddr, trsvcid), shared by every subsystem (and
//! the discovery subsystem) that listens there, closed when the last one stops.

use crate::target::Target;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

/// Connections served at once by the whole gateway; more are closed on accept.
pub const CONNECTIONS_MAX: usize = 4096;

pub struct Listeners {
    tasks: Mutex<HashMap<(String, String), tokio::task::JoinHandle<()>>>,
    connections: Arc<Semaphore>,
}

impl Default for Listeners {
    fn default() -> Self {
        Listeners {
            tasks: Mutex::default(),
            connections: Arc::new(Semaphore::new(CONNECTIONS_MAX)),
        }
    }
}

impl Listeners {
    /// Binds `key` unless it is bound already.
    pub async fn ensure(&self, target: &Arc<Target>, key: &(String, String)) -> Result<(), String> {
        if self.tasks.lock().expect("not poisoned").contains_key(key) {
            return Ok(());
        }
        let port: u16 = key
            .1
            .parse()
            .map_err(|_| format!("trsvcid {:?} is not a port number", key.1))?;
        let listener = tokio::net::TcpListener::bind((key.0.as_str(), port))
            .await
            .map_err(|e| format!("cannot listen on {}:{}: {e}", key.0, key.1))?;
        let target = target.clone();
        let listen_key = key.clone();
        let connections = self.connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!("accept on {}:{}: {error}", listen_key.0, listen_key.1);
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(permit) = connections.clone().try_acquire_owned() else {
                    tracing::warn!("{peer}: refused, {CONNECTIONS_MAX} connections already");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let target = target.clone();
                let listen_key = listen_key.clone();
                tokio::spawn(async move {
                    let closed = crate::connection::serve(stream, target, listen_key).await;
                    tracing::debug!("{peer}: connection closed: {closed:?}");
                    drop(permit);
                });
            }
        });
        let mut tasks = self.tasks.lock().expect("not poisoned");
        if let Some(old) = tasks.insert(key.clone(), task) {
            old.abort();
        }
        Ok(())
    }

    /// Stops listening at `key` when nothing is configured there any more.
    pub fn release_unused(&self, target: &Target, key: &(String, String)) {
        if target.listener_in_use(key) {
            return;
        }
        if let Some(task) = self.tasks.lock().expect("not poisoned").remove(key) {
            task.abort();
        }
    }

    pub fn stop_all(&self) {
        for (_, task) in self.tasks.lock().expect("not poisoned").drain() {
            task.abort();
        }
    }
}
