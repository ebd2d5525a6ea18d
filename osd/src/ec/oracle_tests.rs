//! The codec against jerasure itself: a small C program (`jerasure_oracle.c`) built at test
//! time with the system `cc` against Debian's libjerasure-dev and libgf-complete-dev
//! (installed by scripts/setup.sh) prints jerasure's coding matrix and parity, which must
//! equal ours for every k in 1..=8 and m in 1..=4, on random data of several lengths.

use super::matrix::vandermonde_coding_matrix;
use super::{ErasureCode, Kernel, Scheme};
use rand::{Rng, SeedableRng};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

const ORACLE_SOURCE: &str = include_str!("jerasure_oracle.c");
const PACKAGES: &str = "libjerasure-dev and libgf-complete-dev (run scripts/setup.sh)";

/// Builds the oracle; fails (does not skip) when jerasure is missing, since setup installs it.
fn build_oracle() -> PathBuf {
    assert!(
        std::path::Path::new("/usr/include/jerasure.h").exists(),
        "jerasure's headers are missing: install {PACKAGES}"
    );
    let dir = std::env::temp_dir().join(format!("vitastor-ec-oracle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let source = dir.join("jerasure_oracle.c");
    let binary = dir.join("jerasure_oracle");
    std::fs::write(&source, ORACLE_SOURCE).unwrap();
    let output = Command::new("cc")
        .args(["-O1", "-I/usr/include/jerasure", "-o"])
        .arg(&binary)
        .arg(&source)
        .args(["-lJerasure", "-lgf_complete"])
        .output()
        .expect("running cc (install build-essential)");
    assert!(
        output.status.success(),
        "building the jerasure oracle failed (install {PACKAGES}):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    binary
}

struct OracleOutput {
    matrix: Vec<u8>,
    parity: Vec<Vec<u8>>,
}

fn run_oracle(oracle: &PathBuf, k: usize, m: usize, data: &[Vec<u8>]) -> OracleOutput {
    let size = data[0].len();
    let mut child = Command::new(oracle)
        .args([k.to_string(), m.to_string(), size.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        for chunk in data {
            stdin.write_all(chunk).unwrap();
        }
    }
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "oracle {k}+{m} size {size} failed");
    let text = String::from_utf8(output.stdout).unwrap();
    let mut lines = text.lines();
    let matrix = lines
        .next()
        .and_then(|line| line.strip_prefix("matrix"))
        .expect("matrix line")
        .split_whitespace()
        .map(|c| c.parse::<u8>().expect("coefficient in 0..=255"))
        .collect();
    let parity = lines
        .map(|line| {
            let hex = line.strip_prefix("parity").expect("parity line").trim();
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect()
        })
        .collect();
    OracleOutput { matrix, parity }
}

#[test]
fn matrix_and_parity_equal_jerasure() {
    let oracle = build_oracle();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let kernels: Vec<Kernel> = [Kernel::Scalar, Kernel::Ssse3, Kernel::Avx2, Kernel::Gfni]
        .into_iter()
        .filter(|kernel| kernel.is_available())
        .collect();
    for k in 1..=8 {
        for m in 1..=4 {
            let ours = vandermonde_coding_matrix(k, m);
            for size in [1, 13, 64, 4096, 4101] {
                let data: Vec<Vec<u8>> = (0..k)
                    .map(|_| (0..size).map(|_| rng.gen()).collect())
                    .collect();
                let theirs = run_oracle(&oracle, k, m, &data);
                let flat: Vec<u8> = (0..m).flat_map(|i| ours.row(i).to_vec()).collect();
                assert_eq!(flat, theirs.matrix, "coding matrix {k}+{m}");
                assert_eq!(theirs.parity.len(), m);

                let mut schemes = vec![Scheme::ReedSolomon];
                if m == 1 {
                    schemes.push(Scheme::Xor);
                }
                let refs: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
                for &scheme in &schemes {
                    for &kernel in &kernels {
                        let code = ErasureCode::with_kernel(scheme, k, m, kernel).unwrap();
                        let mut parity = vec![vec![0x55u8; size]; m];
                        let mut outs: Vec<&mut [u8]> =
                            parity.iter_mut().map(|p| p.as_mut_slice()).collect();
                        code.encode(&refs, &mut outs);
                        assert_eq!(
                            parity, theirs.parity,
                            "{scheme:?} {k}+{m} parity, size {size}, kernel {kernel:?}"
                        );
                    }
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(oracle.parent().unwrap());
}
