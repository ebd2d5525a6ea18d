//! Region kernels: the inner loops that combine whole chunks. Two operations cover both
//! encoding and decoding: `dot` (each output = a GF(2^8) linear combination of the
//! sources; the SIMD kernels fill up to four outputs per pass, reading each source block
//! once) and `xor` (one output = the XOR of the sources: XOR parity, and decode rows that
//! are all ones). Each output is written once, with all sources folded in per block, so a
//! chunk is stored once instead of once per source.
//!
//! [`Kernel`] picks the implementation: portable scalar table lookups, split-nibble
//! shuffles (SSSE3 `pshufb`, AVX2 `vpshufb`) or GFNI affine transforms, detected at run
//! time. The SIMD paths process
//! whole blocks and hand the tail (any length, any alignment) to the scalar code.

use super::gf;

/// One output chunk as a linear combination of the sources: the coefficients and their
/// split-nibble tables, prepared once per encode matrix or decode plan.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub coeffs: Vec<u8>,
    pub tables: Vec<[u8; 32]>,
    /// `gf::affine_matrix` of each coefficient, for the GFNI kernel.
    pub affine: Vec<u64>,
    /// Every coefficient is 1: the output is the XOR of the sources.
    pub xor: bool,
}

impl Row {
    pub fn new(coeffs: &[u8]) -> Row {
        Row {
            coeffs: coeffs.to_vec(),
            tables: coeffs.iter().map(|&c| gf::nibble_tables(c)).collect(),
            affine: coeffs.iter().map(|&c| gf::affine_matrix(c)).collect(),
            xor: coeffs.iter().all(|&c| c == 1),
        }
    }
}

/// Which implementation of the region loops runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Product table lookups, one byte at a time (XOR a word at a time).
    Scalar,
    /// Split-nibble multiplication with 16-byte `pshufb`.
    Ssse3,
    /// Split-nibble multiplication with 32-byte `vpshufb`.
    Avx2,
    /// One GFNI affine transform (`vgf2p8affineqb`) per 32 bytes and coefficient.
    Gfni,
}

impl Kernel {
    /// The fastest kernel this CPU supports.
    pub fn detect() -> Kernel {
        [Kernel::Gfni, Kernel::Avx2, Kernel::Ssse3]
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
            #[cfg(target_arch = "x86_64")]
            Kernel::Gfni => {
                std::arch::is_x86_feature_detected!("gfni")
                    && std::arch::is_x86_feature_detected!("avx2")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Ssse3 | Kernel::Avx2 | Kernel::Gfni => false,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
            Kernel::Ssse3 => "ssse3",
            Kernel::Avx2 => "avx2",
            Kernel::Gfni => "gfni",
        }
    }

    /// `dsts[r] = sum over j of rows[r].coeffs[j] * srcs[j]`. The SIMD kernels compute up
    /// to four outputs per pass over the sources.
    pub(crate) fn dot(self, rows: &[Row], srcs: &[&[u8]], dsts: &mut [&mut [u8]]) {
        assert!(!srcs.is_empty(), "a combination needs at least one source");
        assert_eq!(rows.len(), dsts.len());
        assert!(rows
            .iter()
            .all(|row| row.coeffs.len() == srcs.len() && row.tables.len() == srcs.len()));
        let len = srcs[0].len();
        assert!(
            srcs.iter().all(|src| src.len() == len) && dsts.iter().all(|dst| dst.len() == len),
            "lengths differ"
        );
        const GROUP: usize = 4;
        for (rows, dsts) in rows.chunks(GROUP).zip(dsts.chunks_mut(GROUP)) {
            let done = self.dot_simd(rows, srcs, dsts);
            if done < len {
                let tails: Vec<&[u8]> = srcs.iter().map(|src| &src[done..]).collect();
                for (row, dst) in rows.iter().zip(dsts.iter_mut()) {
                    dot_scalar(&row.coeffs, &tails, &mut dst[done..]);
                }
            }
        }
    }

    /// The SIMD part of `dot` for up to four outputs: returns the bytes done (0 for the
    /// scalar kernel).
    fn dot_simd(self, rows: &[Row], srcs: &[&[u8]], dsts: &mut [&mut [u8]]) -> usize {
        #[cfg(target_arch = "x86_64")]
        {
            use super::x86;
            const _: () = assert!(x86::MAX_ROWS >= 4);
            assert!(self.is_available(), "{self:?} is not supported by this CPU");
            // SAFETY: the CPU feature each function is compiled for was checked above; the
            // functions check the buffer lengths themselves.
            unsafe {
                match (self, dsts.len()) {
                    (Kernel::Scalar, _) => 0,
                    (Kernel::Ssse3, 1) => x86::dot_ssse3::<1>(rows, srcs, dsts),
                    (Kernel::Ssse3, 2) => x86::dot_ssse3::<2>(rows, srcs, dsts),
                    (Kernel::Ssse3, 3) => x86::dot_ssse3::<3>(rows, srcs, dsts),
                    (Kernel::Ssse3, 4) => x86::dot_ssse3::<4>(rows, srcs, dsts),
                    (Kernel::Avx2, 1) => x86::dot_avx2::<1>(rows, srcs, dsts),
                    (Kernel::Avx2, 2) => x86::dot_avx2::<2>(rows, srcs, dsts),
                    (Kernel::Avx2, 3) => x86::dot_avx2::<3>(rows, srcs, dsts),
                    (Kernel::Avx2, 4) => x86::dot_avx2::<4>(rows, srcs, dsts),
                    (Kernel::Gfni, 1) => x86::dot_gfni::<1>(rows, srcs, dsts),
                    (Kernel::Gfni, 2) => x86::dot_gfni::<2>(rows, srcs, dsts),
                    (Kernel::Gfni, 3) => x86::dot_gfni::<3>(rows, srcs, dsts),
                    (Kernel::Gfni, 4) => x86::dot_gfni::<4>(rows, srcs, dsts),
                    (_, rows) => unreachable!("groups have 1 to 4 rows, not {rows}"),
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (rows, srcs, dsts);
            assert_eq!(
                self,
                Kernel::Scalar,
                "{self:?} is not supported by this CPU"
            );
            0
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
            Kernel::Avx2 | Kernel::Gfni => {
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
        [Kernel::Scalar, Kernel::Ssse3, Kernel::Avx2, Kernel::Gfni]
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
                    let mut out = vec![0xaau8; len + 1];
                    kernel.dot(&[Row::new(&coeffs)], &srcs, &mut [&mut out[1..]]);
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
    fn several_outputs_per_pass_equal_one_at_a_time() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        for kernel in all_kernels() {
            for rows in 1..=9 {
                for len in [0, 15, 16, 31, 32, 33, 100, 4096 + 5] {
                    let buffers: Vec<Vec<u8>> = (0..3)
                        .map(|_| (0..len).map(|_| rng.gen()).collect())
                        .collect();
                    let srcs: Vec<&[u8]> = buffers.iter().map(|b| b.as_slice()).collect();
                    let coeffs: Vec<Vec<u8>> = (0..rows)
                        .map(|_| (0..3).map(|_| rng.gen()).collect())
                        .collect();
                    let row_list: Vec<Row> = coeffs.iter().map(|c| Row::new(c)).collect();
                    let mut outs = vec![vec![0u8; len]; rows];
                    let mut out_refs: Vec<&mut [u8]> =
                        outs.iter_mut().map(|o| o.as_mut_slice()).collect();
                    kernel.dot(&row_list, &srcs, &mut out_refs);
                    for (row, out) in coeffs.iter().zip(&outs) {
                        assert_eq!(*out, reference_dot(row, &srcs, len), "{kernel:?} {rows}");
                    }
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
