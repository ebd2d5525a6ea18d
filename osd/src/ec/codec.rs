//! [`ErasureCode`]: encode a stripe's parity and rebuild lost chunks, for one pool's
//! scheme and k+m.

use super::cache::{Pattern, PlanCache};
use super::gf;
use super::kernel::{Kernel, Row};
use super::matrix::{vandermonde_coding_matrix, Matrix};
use super::{Error, Scheme, MAX_CHUNKS};
use std::sync::Mutex;

/// Computes `dsts[r]` as `rows[r]` of `srcs`: all-ones rows with the XOR loop, the others
/// together so the SIMD kernels share each pass over the sources among up to four rows.
fn apply_rows(kernel: Kernel, rows: &[Row], srcs: &[&[u8]], dsts: &mut [&mut [u8]]) {
    assert_eq!(rows.len(), dsts.len());
    if rows.iter().all(|row| row.xor) {
        for dst in dsts.iter_mut() {
            kernel.xor(srcs, dst);
        }
    } else {
        kernel.dot(rows, srcs, dsts);
    }
}

/// How to rebuild the targets of one erasure pattern from its k sources.
#[derive(Debug)]
struct DecodePlan {
    /// One combination of the sources per rebuilt chunk, in chunk order.
    targets: Vec<Row>,
}

/// One chunk of a stripe handed to [`ErasureCode::reconstruct`].
#[derive(Debug)]
pub enum Chunk<'a> {
    /// Available: may be read as a source.
    Present(&'a [u8]),
    /// Lost, and wanted: rebuilt into this buffer.
    Rebuild(&'a mut [u8]),
    /// Lost (or not read), and not wanted.
    Absent,
}

/// The codec of one pool: its scheme, k data chunks and m parity chunks per stripe.
///
/// Chunk i of a stripe is data for i < k and parity i - k otherwise (Vitastor's slot
/// order in the PG's OSD set). All chunks of one call have the same length, which can be
/// anything: a partial write encodes the same byte range of every chunk.
pub struct ErasureCode {
    scheme: Scheme,
    k: usize,
    m: usize,
    kernel: Kernel,
    /// The m x k coding matrix: parity i = sum over j of matrix[i][j] * data j.
    matrix: Matrix,
    encode_rows: Vec<Row>,
    /// Behind a mutex so the codec can be shared between threads; held to look up a plan
    /// (and to build it on a miss, which only happens when the erasure pattern changes).
    decode_plans: Mutex<PlanCache<DecodePlan>>,
}

impl std::fmt::Debug for ErasureCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErasureCode")
            .field("scheme", &self.scheme)
            .field("k", &self.k)
            .field("m", &self.m)
            .field("kernel", &self.kernel)
            .finish()
    }
}

impl ErasureCode {
    /// A codec with the fastest kernel this CPU supports.
    pub fn new(scheme: Scheme, k: usize, m: usize) -> Result<ErasureCode, Error> {
        ErasureCode::with_kernel(scheme, k, m, Kernel::detect())
    }

    /// A codec with a given kernel (benchmarks and tests compare them).
    pub fn with_kernel(
        scheme: Scheme,
        k: usize,
        m: usize,
        kernel: Kernel,
    ) -> Result<ErasureCode, Error> {
        let invalid = |reason| Error::InvalidShape {
            scheme,
            k,
            m,
            reason,
        };
        if k == 0 {
            return Err(invalid("needs at least one data chunk"));
        }
        if m == 0 {
            return Err(invalid("needs at least one parity chunk"));
        }
        if k + m > MAX_CHUNKS {
            return Err(invalid("GF(2^8) codes have at most 256 chunks"));
        }
        if scheme == Scheme::Xor && m != 1 {
            return Err(invalid("xor has exactly one parity chunk"));
        }
        if !kernel.is_available() {
            return Err(Error::KernelUnavailable(kernel));
        }
        // jerasure's matrix for m = 1 is a row of ones: XOR parity is the same code.
        let matrix = vandermonde_coding_matrix(k, m);
        debug_assert!(scheme == Scheme::ReedSolomon || matrix.row(0).iter().all(|&c| c == 1));
        let encode_rows = (0..m).map(|i| Row::new(matrix.row(i))).collect();
        // A plan rebuilds at most m chunks from k sources: 32 table bytes + 1 coefficient each.
        let plan_bytes = m * k * 33;
        Ok(ErasureCode {
            scheme,
            k,
            m,
            kernel,
            matrix,
            encode_rows,
            decode_plans: Mutex::new(PlanCache::new(plan_bytes)),
        })
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Data chunks per stripe.
    pub fn data_chunks(&self) -> usize {
        self.k
    }

    /// Parity chunks per stripe.
    pub fn parity_chunks(&self) -> usize {
        self.m
    }

    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// The m x k coding matrix (jerasure's; all ones for xor).
    pub fn coding_matrix(&self) -> &Matrix {
        &self.matrix
    }

    /// Computes the m parity chunks of the k data chunks. Every slice has the same
    /// length, which may be any number of bytes (a byte range of the stripe).
    pub fn encode(&self, data: &[&[u8]], parity: &mut [&mut [u8]]) {
        assert_eq!(
            data.len(),
            self.k,
            "encode takes k = {} data chunks",
            self.k
        );
        assert_eq!(
            parity.len(),
            self.m,
            "encode fills m = {} parity chunks",
            self.m
        );
        let len = data[0].len();
        assert!(
            data.iter().all(|chunk| chunk.len() == len)
                && parity.iter().all(|chunk| chunk.len() == len),
            "all chunks of a stripe range have the same length"
        );
        apply_rows(self.kernel, &self.encode_rows, data, parity);
    }

    /// Rebuilds every [`Chunk::Rebuild`] chunk (data or parity) from k of the
    /// [`Chunk::Present`] ones. `chunks` has k + m entries in chunk order, all buffers of
    /// one length. Reads the lowest-numbered present chunks, so present data chunks are
    /// preferred (their rows of the generator are the identity).
    ///
    /// Fails only when fewer than k chunks are present; nothing is written then.
    pub fn reconstruct(&self, chunks: &mut [Chunk<'_>]) -> Result<(), Error> {
        let n = self.k + self.m;
        assert_eq!(chunks.len(), n, "reconstruct takes k + m = {n} chunks");
        // One pass: the common length, and the pattern (the first k present chunks are
        // the sources) as bit masks, so a cached plan is found without allocating.
        let mut len = None;
        let mut pattern = Pattern::default();
        let mut present = 0;
        for (i, chunk) in chunks.iter().enumerate() {
            let chunk_len = match chunk {
                Chunk::Present(buf) => {
                    if present < self.k {
                        pattern.add_source(i);
                    }
                    present += 1;
                    buf.len()
                }
                Chunk::Rebuild(buf) => {
                    pattern.add_target(i);
                    buf.len()
                }
                Chunk::Absent => continue,
            };
            assert_eq!(
                *len.get_or_insert(chunk_len),
                chunk_len,
                "all chunks of a stripe range have the same length"
            );
        }
        if present < self.k {
            return Err(Error::TooFewChunks { present, k: self.k });
        }
        if pattern.targets() == 0 {
            return Ok(());
        }
        let plan = self
            .decode_plans
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(pattern, || {
                self.build_plan(&pattern.source_list(), &pattern.target_list())
            });

        let mut srcs: Vec<&[u8]> = Vec::with_capacity(self.k);
        let mut dsts: Vec<&mut [u8]> = Vec::with_capacity(pattern.targets());
        for chunk in chunks.iter_mut() {
            match chunk {
                Chunk::Present(buf) if srcs.len() < self.k => srcs.push(buf),
                Chunk::Rebuild(buf) => dsts.push(buf),
                _ => {}
            }
        }
        debug_assert_eq!(srcs.len(), self.k);
        apply_rows(self.kernel, &plan.targets, &srcs, &mut dsts);
        Ok(())
    }

    /// Decoding rows: with G = [I; C] the (k + m) x k generator and G_S its rows for the
    /// sources, data = G_S^-1 * sources, so chunk t = G[t] * G_S^-1 * sources.
    fn build_plan(&self, sources: &[usize], targets: &[usize]) -> DecodePlan {
        assert_eq!(sources.len(), self.k);
        let decode = self
            .decode_matrix(sources)
            .expect("any k rows of an MDS generator are invertible");
        let targets = targets
            .iter()
            .map(|&t| {
                let row = self.generator_row(t);
                let coeffs: Vec<u8> = (0..self.k)
                    .map(|j| (0..self.k).fold(0, |acc, i| acc ^ gf::mul(row[i], decode.get(i, j))))
                    .collect();
                Row::new(&coeffs)
            })
            .collect();
        DecodePlan { targets }
    }

    /// The inverse of the generator's rows for the k source chunks, if they are distinct.
    pub fn decode_matrix(&self, sources: &[usize]) -> Option<Matrix> {
        assert_eq!(sources.len(), self.k);
        let rows: Vec<Vec<u8>> = sources.iter().map(|&s| self.generator_row(s)).collect();
        let refs: Vec<&[u8]> = rows.iter().map(|row| row.as_slice()).collect();
        Matrix::from_rows(&refs).invert()
    }

    /// Row `chunk` of the generator [I; C]: a unit row for data, a coding row for parity.
    fn generator_row(&self, chunk: usize) -> Vec<u8> {
        assert!(chunk < self.k + self.m);
        if chunk < self.k {
            (0..self.k).map(|j| u8::from(j == chunk)).collect()
        } else {
            self.matrix.row(chunk - self.k).to_vec()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shareable_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ErasureCode>();
    }

    #[test]
    fn shape_limits() {
        let rs = Scheme::ReedSolomon;
        assert!(ErasureCode::new(rs, 0, 1).is_err());
        assert!(ErasureCode::new(rs, 1, 0).is_err());
        assert!(ErasureCode::new(rs, 255, 1).is_ok());
        assert!(ErasureCode::new(rs, 200, 57).is_err());
        assert!(ErasureCode::new(Scheme::Xor, 4, 2).is_err());
        let error = ErasureCode::new(Scheme::Xor, 2, 0).unwrap_err();
        assert_eq!(
            error.to_string(),
            "Xor 2+0: needs at least one parity chunk"
        );
    }

    #[test]
    fn too_few_chunks_is_an_error_and_writes_nothing() {
        let code = ErasureCode::new(Scheme::ReedSolomon, 2, 2).unwrap();
        let a = [1u8; 8];
        let mut out = [0u8; 8];
        let mut chunks = [
            Chunk::Present(&a),
            Chunk::Rebuild(&mut out),
            Chunk::Absent,
            Chunk::Absent,
        ];
        assert_eq!(
            code.reconstruct(&mut chunks),
            Err(Error::TooFewChunks { present: 1, k: 2 })
        );
        assert_eq!(out, [0; 8]);
    }

    #[test]
    #[should_panic(expected = "same length")]
    fn encode_rejects_uneven_chunks() {
        let code = ErasureCode::new(Scheme::Xor, 2, 1).unwrap();
        let mut parity = [0u8; 4];
        code.encode(&[&[0; 4], &[0; 5]], &mut [&mut parity]);
    }
}
