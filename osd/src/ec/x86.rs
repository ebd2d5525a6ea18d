//! x86-64 SIMD region kernels: GF(2^8) multiplication of whole blocks by a coefficient.
//!
//! Split-nibble (SSSE3, AVX2): a product `c * x` is `low[x & 15] ^ high[x >> 4]` (see
//! `gf::nibble_tables`); `pshufb` looks up 16 (SSSE3) or 32 (AVX2, per 128-bit lane) such
//! table entries in one instruction. GFNI: multiplication by `c` is a linear map over
//! GF(2), so one `vgf2p8affineqb` with `gf::affine_matrix(c)` multiplies 32 bytes. Up to [`MAX_ROWS`] outputs are computed in one pass: each source block is
//! loaded and split into nibbles once and folded into every output's accumulator, so the
//! sources are read once per pass rather than once per output (what makes 8+4 fast).
//!
//! Each function processes whole blocks from the start of the buffers and returns how many
//! bytes it wrote; the caller finishes the tail with scalar code. Loads and stores are
//! unaligned, so any offset works.

use std::arch::x86_64::*;

/// The most outputs one pass computes (accumulators stay in registers up to this many).
pub(crate) const MAX_ROWS: usize = 4;

use super::kernel::Row;

/// Checks the layout the kernels rely on; returns the common length.
fn check(rows: &[Row], srcs: &[&[u8]], dsts: &[&mut [u8]]) -> usize {
    let len = dsts[0].len();
    assert!(rows.len() == dsts.len() && dsts.len() <= MAX_ROWS);
    assert!(rows.iter().all(|row| row.tables.len() == srcs.len()));
    assert!(srcs.iter().all(|src| src.len() == len) && dsts.iter().all(|dst| dst.len() == len));
    len
}

/// `dsts[r] = sum of c_rj * srcs[j]` over 16-byte blocks, N = dsts.len() outputs.
///
/// # Safety
/// The CPU must support SSSE3.
#[target_feature(enable = "ssse3")]
pub(crate) unsafe fn dot_ssse3<const N: usize>(
    rows: &[Row],
    srcs: &[&[u8]],
    dsts: &mut [&mut [u8]],
) -> usize {
    let len = check(rows, srcs, dsts);
    assert_eq!(dsts.len(), N);
    let mask = _mm_set1_epi8(0x0f);
    let mut offset = 0;
    while offset + 16 <= len {
        let mut acc = [_mm_setzero_si128(); N];
        for (j, src) in srcs.iter().enumerate() {
            // SAFETY (all loads and stores below): offset + 16 <= len, and every source,
            // output and table row has the length checked above.
            let x = _mm_loadu_si128(src.as_ptr().add(offset) as *const __m128i);
            let low_nibbles = _mm_and_si128(x, mask);
            let high_nibbles = _mm_and_si128(_mm_srli_epi64(x, 4), mask);
            for (acc, row) in acc.iter_mut().zip(rows) {
                let table = row.tables.get_unchecked(j).as_ptr();
                let low = _mm_loadu_si128(table as *const __m128i);
                let high = _mm_loadu_si128(table.add(16) as *const __m128i);
                let product = _mm_xor_si128(
                    _mm_shuffle_epi8(low, low_nibbles),
                    _mm_shuffle_epi8(high, high_nibbles),
                );
                *acc = _mm_xor_si128(*acc, product);
            }
        }
        for (acc, dst) in acc.iter().zip(dsts.iter_mut()) {
            _mm_storeu_si128(dst.as_mut_ptr().add(offset) as *mut __m128i, *acc);
        }
        offset += 16;
    }
    offset
}

/// `dsts[r] = sum of c_rj * srcs[j]` over 32-byte blocks, N = dsts.len() outputs.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn dot_avx2<const N: usize>(
    rows: &[Row],
    srcs: &[&[u8]],
    dsts: &mut [&mut [u8]],
) -> usize {
    let len = check(rows, srcs, dsts);
    assert_eq!(dsts.len(), N);
    let mask = _mm256_set1_epi8(0x0f);
    let mut offset = 0;
    while offset + 32 <= len {
        let mut acc = [_mm256_setzero_si256(); N];
        for (j, src) in srcs.iter().enumerate() {
            // SAFETY (all loads and stores below): offset + 32 <= len, and every source,
            // output and table row has the length checked above.
            let x = _mm256_loadu_si256(src.as_ptr().add(offset) as *const __m256i);
            let low_nibbles = _mm256_and_si256(x, mask);
            let high_nibbles = _mm256_and_si256(_mm256_srli_epi64(x, 4), mask);
            for (acc, row) in acc.iter_mut().zip(rows) {
                let table = row.tables.get_unchecked(j).as_ptr();
                let low = _mm256_broadcastsi128_si256(_mm_loadu_si128(table as *const __m128i));
                let high =
                    _mm256_broadcastsi128_si256(_mm_loadu_si128(table.add(16) as *const __m128i));
                let product = _mm256_xor_si256(
                    _mm256_shuffle_epi8(low, low_nibbles),
                    _mm256_shuffle_epi8(high, high_nibbles),
                );
                *acc = _mm256_xor_si256(*acc, product);
            }
        }
        for (acc, dst) in acc.iter().zip(dsts.iter_mut()) {
            _mm256_storeu_si256(dst.as_mut_ptr().add(offset) as *mut __m256i, *acc);
        }
        offset += 32;
    }
    offset
}

/// `dsts[r] = sum of c_rj * srcs[j]` over 32-byte blocks with one affine transform per
/// coefficient (`gf::affine_matrix`), N = dsts.len() outputs.
///
/// # Safety
/// The CPU must support GFNI and AVX2.
#[target_feature(enable = "gfni,avx2")]
pub(crate) unsafe fn dot_gfni<const N: usize>(
    rows: &[Row],
    srcs: &[&[u8]],
    dsts: &mut [&mut [u8]],
) -> usize {
    let len = check(rows, srcs, dsts);
    assert_eq!(dsts.len(), N);
    assert!(rows.iter().all(|row| row.affine.len() == srcs.len()));
    let mut offset = 0;
    while offset + 32 <= len {
        let mut acc = [_mm256_setzero_si256(); N];
        for (j, src) in srcs.iter().enumerate() {
            // SAFETY (all loads and stores below): offset + 32 <= len, and every source,
            // output and matrix row has the length checked above.
            let x = _mm256_loadu_si256(src.as_ptr().add(offset) as *const __m256i);
            for (acc, row) in acc.iter_mut().zip(rows) {
                let matrix = _mm256_set1_epi64x(*row.affine.get_unchecked(j) as i64);
                let product = _mm256_gf2p8affine_epi64_epi8::<0>(x, matrix);
                *acc = _mm256_xor_si256(*acc, product);
            }
        }
        for (acc, dst) in acc.iter().zip(dsts.iter_mut()) {
            _mm256_storeu_si256(dst.as_mut_ptr().add(offset) as *mut __m256i, *acc);
        }
        offset += 32;
    }
    offset
}

/// The portable XOR loop compiled with AVX2 enabled (the compiler vectorizes it).
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn xor_avx2(srcs: &[&[u8]], dst: &mut [u8]) {
    super::kernel::xor_portable(srcs, dst)
}
