//! vitastor-mon: decides where every PG lives and never touches data.
//!
//! Pure parts (no I/O, tested on synthetic clusters): [`tree`] (failure domains),
//! [`placement`] (the LP), [`state`] (what etcd holds), [`plan`] (the decision), [`stats`]
//! (aggregates and Prometheus text). The etcd-facing daemon is in [`daemon`].

pub mod daemon;
mod http;
pub mod placement;
pub mod plan;
pub mod state;
pub mod stats;
pub mod tree;
mod watch;
