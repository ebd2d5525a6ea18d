//! Errors of opening a blockstore and of individual operations.

use vitastor_proto::errno;

/// Why a blockstore could not be formatted or opened. Each variant prints as one line an
/// operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum BlockstoreError {
    #[error("bad superblock: {0}")]
    BadSuperblock(String),
    #[error("invalid format options: {0}")]
    InvalidFormat(String),
    #[error("block size mismatch: the device is formatted with block_size {on_disk}, but {requested} was requested")]
    BlockSizeMismatch { on_disk: u32, requested: u32 },
    #[error("corrupted {what}: {detail}")]
    Corrupted { what: &'static str, detail: String },
    #[error("disk I/O failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("disk returned {} during {what}", errno::name(*errno))]
    Disk { what: &'static str, errno: i32 },
}

/// A failed operation: an errno (what goes on the wire) and a message for logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} ({}): {message}", errno::name(*errno), -errno)]
pub struct OpError {
    pub errno: i32,
    pub message: String,
}

impl OpError {
    pub fn new(errno: i32, message: impl Into<String>) -> OpError {
        OpError {
            errno,
            message: message.into(),
        }
    }
}
