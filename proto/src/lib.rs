//! What crosses a process boundary, defined once: typed ids, the object -> stripe -> PG
//! math, the etcd schema (serde types with validation) and the wire protocol's packets.
//!
//! This crate does no I/O. Everything here is pure and is tested with property tests;
//! decoders never panic on any input (see `fuzz/` for the cargo-fuzz target).

pub mod backoff;
pub mod cluster;
pub mod errno;
pub mod etcd;
pub mod ids;
pub mod placement;
pub mod size;
pub mod wire;

pub use ids::{Inode, ObjectId, ObjectVersion, OsdNum, PgNum, PoolId, Version};
