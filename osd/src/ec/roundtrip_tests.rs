//! Every erasure pattern of up to m chunks round-trips: encode random data, lose the
//! chunks, rebuild them from the rest, and get the original bytes back.

use super::{Chunk, ErasureCode, Kernel, Scheme};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

/// Every subset of `0..n` with at most `max` elements, as bitmasks (n <= 12 here).
fn erasure_patterns(n: usize, max: usize) -> impl Iterator<Item = u32> {
    (0u32..1 << n).filter(move |mask| mask.count_ones() as usize <= max)
}

/// Encodes random data, then checks every erasure pattern of up to m chunks. With
/// `spare_absent`, present chunks beyond the k needed are marked absent too.
fn check_all_patterns(code: &ErasureCode, len: usize, seed: u64, spare_absent: bool) {
    let (k, m) = (code.data_chunks(), code.parity_chunks());
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut stripe: Vec<Vec<u8>> = (0..k)
        .map(|_| (0..len).map(|_| rng.gen()).collect())
        .collect();
    let mut parity = vec![vec![0u8; len]; m];
    {
        let data: Vec<&[u8]> = stripe.iter().map(|d| d.as_slice()).collect();
        let mut outs: Vec<&mut [u8]> = parity.iter_mut().map(|p| p.as_mut_slice()).collect();
        code.encode(&data, &mut outs);
    }
    stripe.extend(parity);

    for lost in erasure_patterns(k + m, m) {
        let mut rebuilt: Vec<Vec<u8>> = (0..k + m).map(|_| vec![0xeeu8; len]).collect();
        let mut present_seen = 0;
        let mut chunks: Vec<Chunk<'_>> = stripe
            .iter()
            .zip(rebuilt.iter_mut())
            .enumerate()
            .map(|(i, (original, out))| {
                if lost & (1 << i) != 0 {
                    Chunk::Rebuild(out.as_mut_slice())
                } else {
                    present_seen += 1;
                    if spare_absent && present_seen > k {
                        Chunk::Absent
                    } else {
                        Chunk::Present(original.as_slice())
                    }
                }
            })
            .collect();
        code.reconstruct(&mut chunks).unwrap();
        for i in (0..k + m).filter(|i| lost & (1 << i) != 0) {
            assert_eq!(
                rebuilt[i], stripe[i],
                "{code:?}: chunk {i} of lost set {lost:#b}, length {len}"
            );
        }
    }
}

fn available_kernels() -> Vec<Kernel> {
    [Kernel::Scalar, Kernel::Ssse3, Kernel::Avx2, Kernel::Gfni]
        .into_iter()
        .filter(|kernel| kernel.is_available())
        .collect()
}

#[test]
fn every_pattern_of_every_code_up_to_8_plus_4() {
    for k in 1..=8 {
        for m in 1..=4 {
            let code = ErasureCode::new(Scheme::ReedSolomon, k, m).unwrap();
            // 67 bytes: one SIMD block, a half block and a scalar tail.
            check_all_patterns(&code, 67, (k * 10 + m) as u64, false);
        }
        let xor = ErasureCode::new(Scheme::Xor, k, 1).unwrap();
        check_all_patterns(&xor, 67, k as u64, true);
    }
}

#[test]
fn reed_solomon_with_one_parity_chunk_is_xor() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    for k in 1..=12 {
        let data: Vec<Vec<u8>> = (0..k)
            .map(|_| (0..100).map(|_| rng.gen()).collect())
            .collect();
        let refs: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
        let xor: Vec<u8> = (0..100)
            .map(|i| data.iter().fold(0, |acc, d| acc ^ d[i]))
            .collect();
        for scheme in [Scheme::Xor, Scheme::ReedSolomon] {
            let code = ErasureCode::new(scheme, k, 1).unwrap();
            assert!(code.coding_matrix().row(0).iter().all(|&c| c == 1));
            let mut parity = vec![0u8; 100];
            code.encode(&refs, &mut [&mut parity]);
            assert_eq!(parity, xor, "{scheme:?} {k}+1");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A partial write encodes one byte range of every chunk: its parity is that range of
    /// the whole stripe's parity, at any offset and length.
    #[test]
    fn a_byte_range_encodes_to_the_same_range_of_parity(
        k in 1usize..=8,
        m in 1usize..=4,
        start in 0usize..200,
        range_len in 0usize..300,
        seed in any::<u64>(),
    ) {
        let len = start + range_len + 17;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let data: Vec<Vec<u8>> = (0..k).map(|_| (0..len).map(|_| rng.gen()).collect()).collect();
        let code = ErasureCode::new(Scheme::ReedSolomon, k, m).unwrap();
        let mut whole = vec![vec![0u8; len]; m];
        let mut whole_refs: Vec<&mut [u8]> = whole.iter_mut().map(|p| p.as_mut_slice()).collect();
        let refs: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
        code.encode(&refs, &mut whole_refs);
        let range = start..start + range_len;
        let mut part = vec![vec![0u8; range_len]; m];
        let mut part_refs: Vec<&mut [u8]> = part.iter_mut().map(|p| p.as_mut_slice()).collect();
        let range_refs: Vec<&[u8]> = data.iter().map(|d| &d[range.clone()]).collect();
        code.encode(&range_refs, &mut part_refs);
        for (part, whole) in part.iter().zip(&whole) {
            prop_assert_eq!(&part[..], &whole[range.clone()]);
        }
    }

    /// Random shapes up to 8+4, lengths (incl. 0 and odd ones), kernels and data.
    #[test]
    fn every_erasure_pattern_round_trips(
        k in 1usize..=8,
        m in 1usize..=4,
        len in prop_oneof![0usize..160, 4090usize..4100],
        xor in any::<bool>(),
        kernel_pick in any::<prop::sample::Index>(),
        spare_absent in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let kernels = available_kernels();
        let kernel = kernels[kernel_pick.index(kernels.len())];
        let (scheme, m) = if xor { (Scheme::Xor, 1) } else { (Scheme::ReedSolomon, m) };
        let code = ErasureCode::with_kernel(scheme, k, m, kernel).unwrap();
        check_all_patterns(&code, len, seed, spare_absent);
    }
}
