//! x86-64 SIMD region kernels: split-nibble GF(2^8) multiplication with byte shuffles.
//!
//! A product `c * x` is `low[x & 15] ^ high[x >> 4]` (see `gf::nibble_tables`); `pshufb`
//! looks up 16 (SSSE3) or 32 (AVX2, per 128-bit lane) such table entries in one
//! instruction. Each function processes whole blocks from the start of the buffers and
//! returns how many bytes it wrote; the caller finishes the tail with scalar code.
//!
//! Callers guarantee the CPU feature and that every source is at least `dst.len()` long;
//! loads and stores are unaligned, so any offset works.

use std::arch::x86_64::*;

/// `dst = sum of c_j * srcs[j]` over 32-byte blocks; returns the bytes done.
///
/// # Safety
/// The CPU must support SSSE3 and every source must be at least `dst.len()` bytes long.
#[target_feature(enable = "ssse3")]
pub(crate) unsafe fn dot_ssse3(tables: &[[u8; 32]], srcs: &[&[u8]], dst: &mut [u8]) -> usize {
    debug_assert_eq!(tables.len(), srcs.len());
    debug_assert!(srcs.iter().all(|src| src.len() >= dst.len()));
    let mask = _mm_set1_epi8(0x0f);
    let len = dst.len();
    let mut offset = 0;
    while offset + 32 <= len {
        let mut acc0 = _mm_setzero_si128();
        let mut acc1 = _mm_setzero_si128();
        for (table, src) in tables.iter().zip(srcs) {
            let low = _mm_loadu_si128(table.as_ptr() as *const __m128i);
            let high = _mm_loadu_si128(table.as_ptr().add(16) as *const __m128i);
            let p = src.as_ptr().add(offset);
            let x0 = _mm_loadu_si128(p as *const __m128i);
            let x1 = _mm_loadu_si128(p.add(16) as *const __m128i);
            let l0 = _mm_shuffle_epi8(low, _mm_and_si128(x0, mask));
            let h0 = _mm_shuffle_epi8(high, _mm_and_si128(_mm_srli_epi64(x0, 4), mask));
            let l1 = _mm_shuffle_epi8(low, _mm_and_si128(x1, mask));
            let h1 = _mm_shuffle_epi8(high, _mm_and_si128(_mm_srli_epi64(x1, 4), mask));
            acc0 = _mm_xor_si128(acc0, _mm_xor_si128(l0, h0));
            acc1 = _mm_xor_si128(acc1, _mm_xor_si128(l1, h1));
        }
        let q = dst.as_mut_ptr().add(offset);
        _mm_storeu_si128(q as *mut __m128i, acc0);
        _mm_storeu_si128(q.add(16) as *mut __m128i, acc1);
        offset += 32;
    }
    offset
}

/// `dst = sum of c_j * srcs[j]` over 64-byte blocks, then one 32-byte block if it fits;
/// returns the bytes done.
///
/// # Safety
/// The CPU must support AVX2 and every source must be at least `dst.len()` bytes long.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn dot_avx2(tables: &[[u8; 32]], srcs: &[&[u8]], dst: &mut [u8]) -> usize {
    debug_assert_eq!(tables.len(), srcs.len());
    debug_assert!(srcs.iter().all(|src| src.len() >= dst.len()));
    let mask = _mm256_set1_epi8(0x0f);
    let len = dst.len();
    let mut offset = 0;
    while offset + 64 <= len {
        let mut acc0 = _mm256_setzero_si256();
        let mut acc1 = _mm256_setzero_si256();
        for (table, src) in tables.iter().zip(srcs) {
            let low = _mm256_broadcastsi128_si256(_mm_loadu_si128(table.as_ptr() as *const _));
            let high =
                _mm256_broadcastsi128_si256(_mm_loadu_si128(table.as_ptr().add(16) as *const _));
            let p = src.as_ptr().add(offset);
            let x0 = _mm256_loadu_si256(p as *const __m256i);
            let x1 = _mm256_loadu_si256(p.add(32) as *const __m256i);
            let l0 = _mm256_shuffle_epi8(low, _mm256_and_si256(x0, mask));
            let h0 = _mm256_shuffle_epi8(high, _mm256_and_si256(_mm256_srli_epi64(x0, 4), mask));
            let l1 = _mm256_shuffle_epi8(low, _mm256_and_si256(x1, mask));
            let h1 = _mm256_shuffle_epi8(high, _mm256_and_si256(_mm256_srli_epi64(x1, 4), mask));
            acc0 = _mm256_xor_si256(acc0, _mm256_xor_si256(l0, h0));
            acc1 = _mm256_xor_si256(acc1, _mm256_xor_si256(l1, h1));
        }
        let q = dst.as_mut_ptr().add(offset);
        _mm256_storeu_si256(q as *mut __m256i, acc0);
        _mm256_storeu_si256(q.add(32) as *mut __m256i, acc1);
        offset += 64;
    }
    if offset + 32 <= len {
        let mut acc = _mm256_setzero_si256();
        for (table, src) in tables.iter().zip(srcs) {
            let low = _mm256_broadcastsi128_si256(_mm_loadu_si128(table.as_ptr() as *const _));
            let high =
                _mm256_broadcastsi128_si256(_mm_loadu_si128(table.as_ptr().add(16) as *const _));
            let x = _mm256_loadu_si256(src.as_ptr().add(offset) as *const __m256i);
            let l = _mm256_shuffle_epi8(low, _mm256_and_si256(x, mask));
            let h = _mm256_shuffle_epi8(high, _mm256_and_si256(_mm256_srli_epi64(x, 4), mask));
            acc = _mm256_xor_si256(acc, _mm256_xor_si256(l, h));
        }
        _mm256_storeu_si256(dst.as_mut_ptr().add(offset) as *mut __m256i, acc);
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
