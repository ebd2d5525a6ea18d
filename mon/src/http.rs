//! A minimal HTTP/1.x endpoint for Prometheus: `GET /metrics` returns the latest text the
//! monitor rendered; anything else gets 404. One request per connection.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Longest request head accepted; Prometheus sends a few hundred bytes.
const MAX_HEAD: usize = 8192;

pub async fn serve(listener: TcpListener, metrics: Rc<RefCell<String>>) {
    // A failing accept (out of descriptors) is retried later and later, up to 2 s.
    let mut retry =
        vitastor_proto::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                retry.reset();
                tokio::task::spawn_local(answer(stream, metrics.clone()));
            }
            Err(error) => {
                tracing::warn!("metrics endpoint: accept failed: {error}");
                tokio::time::sleep(retry.next_delay()).await;
            }
        }
    }
}

async fn answer(mut stream: TcpStream, metrics: Rc<RefCell<String>>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let complete = tokio::time::timeout(Duration::from_secs(5), async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        true
    })
    .await
    .unwrap_or(false);
    if !complete {
        return;
    }
    let request_line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let request_line = String::from_utf8_lossy(request_line);
    let mut words = request_line.split_whitespace();
    let response = match (words.next(), words.next()) {
        (Some("GET"), Some("/metrics")) => {
            let body = metrics.borrow().clone();
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        }
        _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
    };
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}
