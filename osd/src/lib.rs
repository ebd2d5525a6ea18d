//! The OSD. Today: the blockstore, the OSD's local storage engine (see [`blockstore`]).
//! The daemon (messenger, PGs, peering) builds on it.

pub mod blockstore;
