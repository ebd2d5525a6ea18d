//! The cluster view lives in the protocol crate (shared with the monitor and clients).

pub use vitastor_proto::cluster::*;
