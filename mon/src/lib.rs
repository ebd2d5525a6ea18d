//! vitastor-mon: decides where every PG lives and never touches data.
//!
//! Pure parts (no I/O, tested on synthetic clusters): [`tree`] (failure domains),
//! [`placement`] (the LP). The etcd-facing daemon comes on top.

pub mod placement;
pub mod tree;
