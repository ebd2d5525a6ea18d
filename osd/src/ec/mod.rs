//! Erasure coding for EC and XOR pools: a stripe is `k` data chunks plus `m` parity chunks,
//! and any `k` of the `k + m` chunks rebuild the others.
//!
//! - `ec` (alias `jerasure`) pools: Reed-Solomon over GF(2^8) ([`gf`], polynomial 0x11d)
//!   with jerasure's `reed_sol_vandermonde_coding_matrix(k, m, 8)` ([`matrix`]), which is
//!   what Vitastor's OSDs encode with (through jerasure or ISA-L), so parity written by
//!   either implementation is readable by the other.
//! - `xor` pools: one parity chunk, the XOR of the data chunks. jerasure's matrix for
//!   m = 1 is a row of ones, so this is the same code as Reed-Solomon k+1.
//!
//! [`ErasureCode`] is what the primary OSD uses; [`Kernel`] selects the region loops
//! (scalar tables, or SSSE3/AVX2 split-nibble shuffles detected at run time).
//!
//! Limits: `k >= 1`, `m >= 1` and `k + m <= 256` (GF(2^8) has 256 elements, and the
//! Vandermonde construction needs a distinct element per chunk). This matches Vitastor's
//! pool rules, whose `pg_size` is at most 256; pools further require `pg_size >= 3` and
//! `parity_chunks <= pg_size - 2` (so `k >= 2`), and `parity_chunks == 1` for xor.

mod cache;
mod codec;
pub mod gf;
mod kernel;
pub mod matrix;
#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod oracle_tests;
#[cfg(test)]
mod roundtrip_tests;

pub use codec::{Chunk, ErasureCode};
pub use kernel::Kernel;

/// The most chunks (`k + m`) a stripe can have: the size of GF(2^8).
pub const MAX_CHUNKS: usize = 256;

/// How parity is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `xor` pools: exactly one parity chunk, the XOR of the data chunks.
    Xor,
    /// `ec` / `jerasure` pools: Reed-Solomon with jerasure's Vandermonde matrix.
    ReedSolomon,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{scheme:?} {k}+{m}: {reason}")]
    InvalidShape {
        scheme: Scheme,
        k: usize,
        m: usize,
        reason: &'static str,
    },
    #[error("the {} kernel is not supported by this CPU", .0.name())]
    KernelUnavailable(Kernel),
    #[error("only {present} chunks present, {k} needed to reconstruct")]
    TooFewChunks { present: usize, k: usize },
}
