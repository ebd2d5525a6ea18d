//! The JSON-RPC 2.0 control plane on a Unix socket, with SPDK's method names and params so
//! SPDK's own `rpc.py` drives the gateway unchanged.
//!
//! A connection carries a stream of JSON values (no framing; see [`stream`]); each is a
//! request or a batch (an array). Requests run one at a time across all connections (the
//! gateway's `rpc_lock`), replies go back in order, compact, one per line.

pub mod methods;
pub mod params;
pub mod stream;

use crate::gateway::Gateway;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// JSON-RPC error codes.
pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// Requests one batch may hold.
pub const BATCH_REQUESTS_MAX: usize = 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
}

impl RpcError {
    pub fn invalid_params(message: impl Into<String>) -> RpcError {
        RpcError {
            code: INVALID_PARAMS,
            message: message.into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> RpcError {
        RpcError {
            code: INTERNAL_ERROR,
            message: message.into(),
        }
    }
}

impl From<crate::target::ConfigError> for RpcError {
    fn from(error: crate::target::ConfigError) -> RpcError {
        RpcError::invalid_params(error.0)
    }
}

fn error_reply(id: Value, error: &RpcError) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": error.code, "message": error.message}})
}

/// Answers one request object; None for a notification (no id).
async fn handle_request(gateway: &Gateway, request: &Value) -> Option<Value> {
    let Some(object) = request.as_object() else {
        return Some(error_reply(
            Value::Null,
            &RpcError {
                code: INVALID_REQUEST,
                message: "a request must be an object".into(),
            },
        ));
    };
    let id = object.get("id").cloned();
    let Some(method) = object.get("method").and_then(Value::as_str) else {
        return Some(error_reply(
            id.unwrap_or(Value::Null),
            &RpcError {
                code: INVALID_REQUEST,
                message: "method: missing".into(),
            },
        ));
    };
    let result = {
        let _serial = gateway.rpc_lock.lock().await;
        methods::call(gateway, method, object.get("params")).await
    };
    if let Err(error) = &result {
        tracing::info!("RPC {method}: error {}: {}", error.code, error.message);
    }
    let id = id?;
    Some(match result {
        Ok(value) => json!({"jsonrpc": "2.0", "id": id, "result": value}),
        Err(error) => error_reply(id, &error),
    })
}

/// Answers a request or a batch.
pub async fn handle_value(gateway: &Gateway, value: &Value) -> Option<Value> {
    match value {
        Value::Array(batch) => {
            if batch.is_empty() || batch.len() > BATCH_REQUESTS_MAX {
                return Some(error_reply(
                    Value::Null,
                    &RpcError {
                        code: INVALID_REQUEST,
                        message: format!("a batch holds 1 to {BATCH_REQUESTS_MAX} requests"),
                    },
                ));
            }
            let mut replies = Vec::new();
            for request in batch {
                if let Some(reply) = handle_request(gateway, request).await {
                    replies.push(reply);
                }
            }
            (!replies.is_empty()).then_some(Value::Array(replies))
        }
        request => handle_request(gateway, request).await,
    }
}

async fn serve_connection(gateway: Arc<Gateway>, mut socket: tokio::net::UnixStream) {
    let mut values = stream::JsonStream::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        values.push(&buf[..n]);
        loop {
            match values.next_value() {
                Ok(Some(value)) => {
                    if let Some(reply) = handle_value(&gateway, &value).await {
                        let mut text = reply.to_string();
                        text.push('\n');
                        if socket.write_all(text.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    let message = match error {
                        stream::StreamError::Parse(m) => m,
                        stream::StreamError::TooLarge => "request too large".into(),
                    };
                    let reply = error_reply(
                        Value::Null,
                        &RpcError {
                            code: PARSE_ERROR,
                            message,
                        },
                    );
                    let _ = socket.write_all(format!("{reply}\n").as_bytes()).await;
                    return;
                }
            }
        }
    }
}

/// Serves the RPC socket until the task is dropped.
pub async fn serve(gateway: Arc<Gateway>, path: &Path) -> Result<(), String> {
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)
        .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    loop {
        match listener.accept().await {
            Ok((socket, _)) => {
                tokio::spawn(serve_connection(gateway.clone(), socket));
            }
            Err(error) => {
                tracing::warn!("RPC accept: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}
