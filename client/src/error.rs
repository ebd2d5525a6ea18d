//! Client errors, each with the errno a C caller (fio, QEMU, NBD) gets for it.

use vitastor_proto::errno;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach etcd at {address}: {reason}")]
    EtcdUnreachable { address: String, reason: String },
    #[error("etcd: {0}")]
    Etcd(String),
    #[error("image {0:?} does not exist")]
    NoSuchImage(String),
    #[error("pool {0} does not exist")]
    NoSuchPool(String),
    /// A key the operation needs is invalid in etcd (the text names the key and field);
    /// other images and pools are not affected.
    #[error("invalid cluster configuration: {0}")]
    InvalidConfig(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("image is read-only")]
    ReadOnly,
    #[error("request timed out after {0} ms")]
    Timeout(u64),
    #[error("OSD returned error {0}")]
    Osd(i32),
    #[error("the client is shut down")]
    Closed,
}

impl ClientError {
    /// The positive errno for this error.
    pub fn errno(&self) -> i32 {
        match self {
            ClientError::EtcdUnreachable { .. } | ClientError::Etcd(_) => errno::EIO,
            ClientError::NoSuchImage(_) | ClientError::NoSuchPool(_) => errno::ENOENT,
            ClientError::InvalidArgument(_) | ClientError::InvalidConfig(_) => errno::EINVAL,
            ClientError::ReadOnly => errno::EROFS,
            ClientError::Timeout(_) => libc::ETIMEDOUT,
            ClientError::Osd(code) => code.abs(),
            ClientError::Closed => errno::EPIPE,
        }
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;
