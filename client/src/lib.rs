//! vitastor-client: how every user reaches the data.
//!
//! [`Client`] loads and watches the cluster state in etcd, opens images by name or by
//! pool/inode, splits requests at object boundaries, sends each piece to the active
//! primary of its PG and retries across failovers. [`capi`] exposes it to C (fio engine,
//! QEMU driver); the header is `include/vitastor_client.h`.

pub mod capi;
mod client;
mod conn;
pub mod describe;
mod error;
pub mod fix;
mod list;
mod liveness;
pub mod state;
mod watch;

pub use client::{Client, ClientOptions, Image, ALIGNMENT};
pub use error::{ClientError, Result};
pub use list::ObjectListing;
