//! The implementations bench-ec compares, behind one trait: our codec with each kernel,
//! `reed-solomon-erasure`'s GF(2^8) slice helpers, and ISA-L (loaded at run time from
//! Debian's libisal2, so the bench builds without it and reports why it was skipped).
//! All are fed jerasure's coding matrix and the same decoding rows, so their outputs are
//! byte-identical (checked before timing).

use std::ffi::{c_int, c_void};
use vitastor_osd::ec::{Chunk, ErasureCode, Kernel, Scheme};

pub trait Candidate {
    fn name(&self) -> String;
    /// The m parity chunks of the k data chunks.
    fn encode(&mut self, data: &[&[u8]], parity: &mut [&mut [u8]]);
    /// Rebuilds the lost chunks (the pattern given at construction) into `out`, from the
    /// stripe's other chunks (`stripe` has all k + m; the lost ones are not read).
    fn decode(&mut self, stripe: &[&[u8]], out: &mut [&mut [u8]]);
}

/// The erasure pattern every candidate decodes: which chunks are lost, which k are read,
/// and the decoding rows (one per lost chunk, over the read chunks).
pub struct Pattern {
    pub lost: Vec<usize>,
    pub sources: Vec<usize>,
    pub rows: Vec<Vec<u8>>,
}

impl Pattern {
    /// `lost` data chunks, rebuilt from the lowest-numbered k others (as our codec does).
    pub fn new(code: &ErasureCode, lost: &[usize]) -> Pattern {
        let (k, m) = (code.data_chunks(), code.parity_chunks());
        assert!(
            lost.iter().all(|&i| i < k),
            "the benchmark loses data chunks"
        );
        let sources: Vec<usize> = (0..k + m).filter(|i| !lost.contains(i)).take(k).collect();
        let inverse = code
            .decode_matrix(&sources)
            .expect("MDS: any k chunks decode");
        let rows = lost.iter().map(|&d| inverse.row(d).to_vec()).collect();
        Pattern {
            lost: lost.to_vec(),
            sources,
            rows,
        }
    }
}

/// Our codec (osd/src/ec) with a given kernel.
pub struct Ours {
    code: ErasureCode,
    lost: Vec<usize>,
}

impl Ours {
    pub fn new(
        scheme: Scheme,
        k: usize,
        m: usize,
        kernel: Kernel,
        lost: &[usize],
    ) -> Result<Ours, String> {
        let code = ErasureCode::with_kernel(scheme, k, m, kernel).map_err(|e| e.to_string())?;
        Ok(Ours {
            code,
            lost: lost.to_vec(),
        })
    }
}

impl Candidate for Ours {
    fn name(&self) -> String {
        format!("ours {}", self.code.kernel().name())
    }

    fn encode(&mut self, data: &[&[u8]], parity: &mut [&mut [u8]]) {
        self.code.encode(data, parity);
    }

    fn decode(&mut self, stripe: &[&[u8]], out: &mut [&mut [u8]]) {
        let mut outs = out.iter_mut();
        let mut chunks: Vec<Chunk<'_>> = stripe
            .iter()
            .enumerate()
            .map(|(i, chunk)| {
                if self.lost.contains(&i) {
                    Chunk::Rebuild(outs.next().expect("one buffer per lost chunk"))
                } else {
                    Chunk::Present(chunk)
                }
            })
            .collect();
        self.code
            .reconstruct(&mut chunks)
            .expect("k chunks are present");
    }
}

/// `reed-solomon-erasure`'s `galois_8::mul_slice` / `mul_slice_xor` (pure Rust build),
/// driven by the same matrices: one pass over the output per source.
pub struct RsErasure {
    matrix: Vec<Vec<u8>>,
    pattern: Pattern,
}

impl RsErasure {
    pub fn new(code: &ErasureCode, pattern: Pattern) -> RsErasure {
        let matrix = (0..code.parity_chunks())
            .map(|i| code.coding_matrix().row(i).to_vec())
            .collect();
        RsErasure { matrix, pattern }
    }

    fn combine(row: &[u8], srcs: &[&[u8]], dst: &mut [u8]) {
        use reed_solomon_erasure::galois_8::{mul_slice, mul_slice_xor};
        mul_slice(row[0], srcs[0], dst);
        for (&c, src) in row.iter().zip(srcs).skip(1) {
            mul_slice_xor(c, src, dst);
        }
    }
}

impl Candidate for RsErasure {
    fn name(&self) -> String {
        "reed-solomon-erasure".to_string()
    }

    fn encode(&mut self, data: &[&[u8]], parity: &mut [&mut [u8]]) {
        for (row, out) in self.matrix.iter().zip(parity.iter_mut()) {
            RsErasure::combine(row, data, out);
        }
    }

    fn decode(&mut self, stripe: &[&[u8]], out: &mut [&mut [u8]]) {
        let srcs: Vec<&[u8]> = self.pattern.sources.iter().map(|&i| stripe[i]).collect();
        for (row, dst) in self.pattern.rows.iter().zip(out.iter_mut()) {
            RsErasure::combine(row, &srcs, dst);
        }
    }
}

type InitTables = unsafe extern "C" fn(c_int, c_int, *mut u8, *mut u8);
type EncodeData = unsafe extern "C" fn(c_int, c_int, c_int, *mut u8, *mut *mut u8, *mut *mut u8);

/// ISA-L's `ec_init_tables` + `ec_encode_data` (its runtime-dispatched SIMD), as
/// Vitastor's OSDs use it: tables built once from jerasure's matrix, or from the decoding
/// rows for the decode pattern.
pub struct Isal {
    encode_data: EncodeData,
    k: usize,
    m: usize,
    encode_tables: Vec<u8>,
    decode_tables: Vec<u8>,
    pattern: Pattern,
}

impl Isal {
    /// Loads libisal.so.2 (Debian's libisal2, pulled in by libisal-dev).
    pub fn new(code: &ErasureCode, pattern: Pattern) -> Result<Isal, String> {
        // SAFETY: dlopen/dlsym with NUL-terminated names; the symbols have these C
        // signatures in ISA-L's erasure_code.h, and the handle is never closed, so the
        // function pointers stay valid.
        let (init_tables, encode_data) = unsafe {
            let handle = libc::dlopen(c"libisal.so.2".as_ptr(), libc::RTLD_NOW);
            if handle.is_null() {
                return Err("libisal.so.2 not found (install libisal-dev)".to_string());
            }
            let symbol = |name: &std::ffi::CStr| -> Result<*mut c_void, String> {
                let pointer = libc::dlsym(handle, name.as_ptr());
                if pointer.is_null() {
                    Err(format!("libisal.so.2 lacks {name:?}"))
                } else {
                    Ok(pointer)
                }
            };
            (
                std::mem::transmute::<*mut c_void, InitTables>(symbol(c"ec_init_tables")?),
                std::mem::transmute::<*mut c_void, EncodeData>(symbol(c"ec_encode_data")?),
            )
        };
        let (k, m) = (code.data_chunks(), code.parity_chunks());
        let tables = |rows: &[Vec<u8>]| {
            let mut flat: Vec<u8> = rows.iter().flatten().copied().collect();
            let mut tables = vec![0u8; 32 * k * rows.len()];
            // SAFETY: `flat` is rows x k coefficients and `tables` 32 * k * rows bytes, the
            // sizes ec_init_tables reads and writes.
            unsafe {
                init_tables(
                    k as c_int,
                    rows.len() as c_int,
                    flat.as_mut_ptr(),
                    tables.as_mut_ptr(),
                )
            };
            tables
        };
        let coding: Vec<Vec<u8>> = (0..m)
            .map(|i| code.coding_matrix().row(i).to_vec())
            .collect();
        let encode_tables = tables(&coding);
        let decode_tables = tables(&pattern.rows);
        Ok(Isal {
            encode_data,
            k,
            m,
            encode_tables,
            decode_tables,
            pattern,
        })
    }

    fn run(&self, tables: &[u8], srcs: &[&[u8]], dsts: &mut [&mut [u8]]) {
        let len = dsts[0].len();
        assert_eq!(srcs.len(), self.k);
        assert!(srcs.iter().all(|s| s.len() == len) && dsts.iter().all(|d| d.len() == len));
        assert_eq!(tables.len(), 32 * self.k * dsts.len());
        let mut src_ptrs: Vec<*mut u8> = srcs.iter().map(|s| s.as_ptr() as *mut u8).collect();
        let mut dst_ptrs: Vec<*mut u8> = dsts.iter_mut().map(|d| d.as_mut_ptr()).collect();
        // SAFETY: k sources and dsts.len() outputs of `len` bytes each (asserted above);
        // ISA-L only reads the sources and the tables.
        unsafe {
            (self.encode_data)(
                len as c_int,
                self.k as c_int,
                dsts.len() as c_int,
                tables.as_ptr() as *mut u8,
                src_ptrs.as_mut_ptr(),
                dst_ptrs.as_mut_ptr(),
            )
        };
    }
}

impl Candidate for Isal {
    fn name(&self) -> String {
        "isa-l".to_string()
    }

    fn encode(&mut self, data: &[&[u8]], parity: &mut [&mut [u8]]) {
        assert_eq!(parity.len(), self.m);
        self.run(&self.encode_tables, data, parity);
    }

    fn decode(&mut self, stripe: &[&[u8]], out: &mut [&mut [u8]]) {
        assert_eq!(out.len(), self.pattern.lost.len());
        let srcs: Vec<&[u8]> = self.pattern.sources.iter().map(|&i| stripe[i]).collect();
        self.run(&self.decode_tables, &srcs, out);
    }
}
