//! vitastor-nvmf: an NVMe-oF/TCP target that exports cluster images as namespaces,
//! configured with SPDK's JSON-RPC vocabulary.
//!
//! Layers, bottom up: [`pdu`] (the NVMe/TCP codec) and [`command`] (SQE/CQE, statuses);
//! [`identify`] and [`log_page`] (the data structures a host reads); [`controller`] (one
//! controller's registers, features and events) and [`target`] (subsystems, namespaces,
//! hosts, listeners, controllers); [`admin`] and [`io`] (command execution) over
//! [`device`] (the block device seam, with [`qos`]); [`connection`] (one queue pair per
//! TCP connection) and [`listener`]; [`rpc`] (the JSON-RPC control plane) and [`persist`]
//! (the configuration in etcd).

pub mod admin;
pub mod command;
pub mod config;
pub mod connection;
pub mod controller;
pub mod device;
pub mod gateway;
pub mod identify;
pub mod initiator;
pub mod io;
pub mod listener;
pub mod log_page;
pub mod pdu;
pub mod persist;
pub mod qos;
pub mod rpc;
pub mod target;
