//! The OSD: the blockstore (local storage engine, see [`blockstore`]), the daemon's decision
//! logic ([`daemon`]: messenger protocol, PGs, peering, replication) and its drivers
//! ([`net`]: TCP and etcd on one thread).

pub mod blockstore;
pub mod cluster;
pub mod daemon;
pub mod ec;
pub mod net;
