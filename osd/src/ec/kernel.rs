//! Region kernels: the inner loops that combine whole chunks. Two operations cover both
//! encoding and decoding: `dot` (one output = a GF(2^8) linear combination of the sources)
//! and `xor` (one output = the XOR of the sources; the all-ones rows such as XOR parity
//! and jerasure's first parity row). Each output is written once, with all sources
//! folded in per block, so a chunk is stored once instead of once per source.
//!
//! [`Kernel`] picks the implementation: portable scalar table lookups, or split-nibble
//! shuffles (SSSE3 `pshufb`, AVX2 `vpshufb`) detected at run time. The SIMD paths process
//! whole blocks and hand the tail (any length, any alignment) to the scalar code.

use super::gf;

/// Which implementation of the region loops runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Product table lookups, one byte at a time (XOR a word at a time).
    Scalar,
    /// Split-nibble multiplication with 16-byte `pshufb`.
    Ssse3,
    /// Split-nibble multiplication with 32-byte `vpshufb`.
    Avx2,
}

impl Kernel {
    /// The fastest kernel this CPU supports.
    pub fn detect() -> Kernel {
        [Kernel::Avx2, Kernel::Ssse3]
            .into_iter()
            .find(|kernel| kernel.is_available())
            .unwrap_or(Kernel::Scalar)
    }

    /// Whether this CPU can run the kernel.
    pub fn is_available(self) -> bool {
        match self {
            Kernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Ssse3 => std::arch::is_x86_feature_detected!("ssse3"),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Ssse3 | Kernel::Avx2 => false,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
            Kernel::Ssse3 => "ssse3",
            Kernel::Avx2 => "avx2",
        }
    }

    /// `dst = sum of coeffs[j] * srcs[j]`; `tables[j]` is `gf::nibble_tables(coeffs[j])`.
    pub(crate) fn dot(self, coeffs: &[u8], tables: &[[u8; 32]], srcs: &[&[u8]], dst: &mut [u8]) {
        assert!(!srcs.is_empty(), "a combination needs at least one source");
        assert_eq!(coeffs.len(), srcs.len());
        assert_eq!(tables.len(), srcs.len());
        assert!(
            srcs.iter().all(|src| src.len() == dst.len()),
            "lengths differ"
        );
        let done = match self {
            Kernel::Scalar => 0,
            #[cfg(target_arch = "x86_64")]
            Kernel::Ssse3 => {
                assert!(self.is_available());
                // SAFETY: the CPU has SSSE3 (checked above) and every source is as long as
                // dst (asserted above), which is all the kernel reads and writes.
                unsafe { super::x86::dot_ssse3(tables, srcs, dst) }
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => {
                assert!(self.is_available());
                // SAFETY: as above, with AVX2.
                unsafe { super::x86::dot_avx2(tables, srcs, dst) }
            }
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Ssse3 | Kernel::Avx2 => unreachable!("not available on this CPU"),
        };
        if done < dst.len() {
            let tails: Vec<&[u8]> = srcs.iter().map(|src| &src[done..]).collect();
            dot_scalar(coeffs, &tails, &mut dst[done..]);
        }
    }

    /// `dst = XOR of srcs`.
    pub(crate) fn xor(self, srcs: &[&[u8]], dst: &mut [u8]) {
        assert!(!srcs.is_empty(), "a combination needs at least one source");
        assert!(
            srcs.iter().all(|src| src.len() == dst.len()),
            "lengths differ"
        );
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => {
                assert!(self.is_available());
                // SAFETY: the CPU has AVX2; the function is safe code compiled for it.
                unsafe { super::x86::xor_avx2(srcs, dst) }
            }
            _ => xor_portable(srcs, dst),
        }
    }
}

/// Product-table combination, one byte at a time; coefficients 0 and 1 take shortcuts.
pub(crate) fn dot_scalar(coeffs: &[u8], srcs: &[&[u8]], dst: &mut [u8]) {
    let mut first = true;
    for (&c, src) in coeffs.iter().zip(srcs) {
        match (c, first) {
            (0, _) => continue,
            (1, true) => dst.copy_from_slice(src),
            (1, false) => xor_into(dst, src),
            (_, true) => {
                let row = &gf::MUL[c as usize];
                for (d, &s) in dst.iter_mut().zip(src.iter()) {
                    *d = row[s as usize];
                }
            }
            (_, false) => {
                let row = &gf::MUL[c as usize];
                for (d, &s) in dst.iter_mut().zip(src.iter()) {
                    *d ^= row[s as usize];
                }
            }
        }
        first = false;
    }
    if first {
        dst.fill(0);
    }
}

/// dst ^= src, a word at a time.
fn xor_into(dst: &mut [u8], src: &[u8]) {
    let mut dst_words = dst.chunks_exact_mut(8);
    let mut src_words = src.chunks_exact(8);
    for (d, s) in (&mut dst_words).zip(&mut src_words) {
        let value =
            u64::from_ne_bytes(d.try_into().unwrap()) ^ u64::from_ne_bytes(s.try_into().unwrap());
        d.copy_from_slice(&value.to_ne_bytes());
    }
    for (d, s) in dst_words
        .into_remainder()
        .iter_mut()
        .zip(src_words.remainder())
    {
        *d ^= s;
    }
}

/// XOR of all sources into dst, 64 bytes at a time with every source folded in per block;
/// written so the compiler vectorizes it (for the baseline target, and for AVX2 when
/// inlined into a `target_feature` function).
#[inline(always)]
pub(crate) fn xor_portable(srcs: &[&[u8]], dst: &mut [u8]) {
    const BLOCK: usize = 64;
    let full = dst.len() / BLOCK * BLOCK;
    for offset in (0..full).step_by(BLOCK) {
        let mut acc = [0u8; BLOCK];
        for src in srcs {
            let block: &[u8; BLOCK] = src[offset..offset + BLOCK].try_into().unwrap();
            for i in 0..BLOCK {
                acc[i] ^= block[i];
            }
        }
        dst[offset..offset + BLOCK].copy_from_slice(&acc);
    }
    dst[full..].copy_from_slice(&srcs[0][full..]);
    for src in &srcs[1..] {
        xor_into(&mut dst[full..], &src[full..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn all_kernels() -> Vec<Kernel> {
        [Kernel::Scalar, Kernel::Ssse3, Kernel::Avx2]
            .into_iter()
            .filter(|kernel| kernel.is_available())
            .collect()
    }

    fn reference_dot(coeffs: &[u8], srcs: &[&[u8]], len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| {
                coeffs
                    .iter()
                    .zip(srcs)
                    .fold(0, |acc, (&c, src)| acc ^ gf::mul(c, src[i]))
            })
            .collect()
    }

    #[test]
    fn kernels_agree_on_every_length_and_offset() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for kernel in all_kernels() {
            for sources in 1..=5 {
                for len in (0..200).chain([4095, 4096, 4097]) {
                    let offset = rng.gen_range(0..8);
                    let buffers: Vec<Vec<u8>> = (0..sources)
                        .map(|_| (0..len + offset).map(|_| rng.gen()).collect())
                        .collect();
                    let srcs: Vec<&[u8]> = buffers.iter().map(|b| &b[offset..]).collect();
                    let mut coeffs: Vec<u8> = (0..sources).map(|_| rng.gen()).collect();
                    coeffs[0] = [0, 1, rng.gen()][len % 3];
                    let tables: Vec<[u8; 32]> =
                        coeffs.iter().map(|&c| gf::nibble_tables(c)).collect();
                    let mut out = vec![0xaau8; len + 1];
                    kernel.dot(&coeffs, &tables, &srcs, &mut out[1..]);
                    assert_eq!(
                        out[1..],
                        reference_dot(&coeffs, &srcs, len),
                        "{kernel:?} dot, {sources} sources, len {len}"
                    );
                    assert_eq!(out[0], 0xaa, "wrote before dst");

                    let ones = vec![1u8; sources];
                    kernel.xor(&srcs, &mut out[1..]);
                    assert_eq!(out[1..], reference_dot(&ones, &srcs, len), "{kernel:?} xor");
                }
            }
        }
    }

    #[test]
    fn detect_picks_an_available_kernel() {
        assert!(Kernel::detect().is_available());
        assert!(Kernel::Scalar.is_available());
    }
}
