//! vitastor-nbd: exports a cluster image over NBD ([`server`], [`protocol`]) and attaches
//! it to the kernel's NBD driver ([`kernel`]).

pub mod backend;
pub mod kernel;
pub mod protocol;
pub mod server;
