//! Small dense matrices over GF(2^8): jerasure's Vandermonde coding matrix and the
//! inversion that turns any k surviving rows of the generator into a decoding matrix.

use super::gf;

/// A row-major `rows x cols` matrix of field elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matrix {
    rows: usize,
    cols: usize,
    data: Vec<u8>,
}

impl Matrix {
    pub fn zero(rows: usize, cols: usize) -> Matrix {
        Matrix {
            rows,
            cols,
            data: vec![0; rows * cols],
        }
    }

    pub fn identity(n: usize) -> Matrix {
        let mut matrix = Matrix::zero(n, n);
        for i in 0..n {
            matrix.set(i, i, 1);
        }
        matrix
    }

    /// A matrix from its rows, all of the same length.
    pub fn from_rows(rows: &[&[u8]]) -> Matrix {
        let cols = rows.first().map_or(0, |row| row.len());
        let mut data = Vec::with_capacity(rows.len() * cols);
        for row in rows {
            assert_eq!(row.len(), cols, "rows of different lengths");
            data.extend_from_slice(row);
        }
        Matrix {
            rows: rows.len(),
            cols,
            data,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn get(&self, row: usize, col: usize) -> u8 {
        assert!(row < self.rows && col < self.cols);
        self.data[row * self.cols + col]
    }

    pub fn set(&mut self, row: usize, col: usize, value: u8) {
        assert!(row < self.rows && col < self.cols);
        self.data[row * self.cols + col] = value;
    }

    pub fn row(&self, row: usize) -> &[u8] {
        assert!(row < self.rows);
        &self.data[row * self.cols..(row + 1) * self.cols]
    }

    fn swap_rows(&mut self, a: usize, b: usize) {
        if a != b {
            for col in 0..self.cols {
                self.data.swap(a * self.cols + col, b * self.cols + col);
            }
        }
    }

    /// self * other.
    pub fn multiply(&self, other: &Matrix) -> Matrix {
        assert_eq!(self.cols, other.rows, "matrix shapes do not chain");
        let mut product = Matrix::zero(self.rows, other.cols);
        for i in 0..self.rows {
            for j in 0..other.cols {
                let mut sum = 0;
                for t in 0..self.cols {
                    sum ^= gf::mul(self.get(i, t), other.get(t, j));
                }
                product.set(i, j, sum);
            }
        }
        product
    }

    /// The inverse of a square matrix by Gauss-Jordan elimination, or None when singular.
    pub fn invert(&self) -> Option<Matrix> {
        assert_eq!(self.rows, self.cols, "only square matrices have inverses");
        let n = self.rows;
        let mut work = self.clone();
        let mut inverse = Matrix::identity(n);
        for col in 0..n {
            let pivot = (col..n).find(|&row| work.get(row, col) != 0)?;
            work.swap_rows(col, pivot);
            inverse.swap_rows(col, pivot);
            let scale = gf::inv(work.get(col, col));
            for j in 0..n {
                work.set(col, j, gf::mul(work.get(col, j), scale));
                inverse.set(col, j, gf::mul(inverse.get(col, j), scale));
            }
            for row in 0..n {
                let factor = work.get(row, col);
                if row == col || factor == 0 {
                    continue;
                }
                for j in 0..n {
                    let w = work.get(row, j) ^ gf::mul(factor, work.get(col, j));
                    work.set(row, j, w);
                    let v = inverse.get(row, j) ^ gf::mul(factor, inverse.get(col, j));
                    inverse.set(row, j, v);
                }
            }
        }
        Some(inverse)
    }
}

/// jerasure's `reed_sol_vandermonde_coding_matrix(k, m, 8)`: the `m x k` coding matrix
/// Vitastor's OSDs encode with, so that our parity chunks are byte-identical to theirs.
///
/// Definition (jerasure's "big Vandermonde distribution matrix", rows = k + m, cols = k):
/// 1. start from row 0 = (1, 0, ..., 0), row i = (i^0, i^1, ..., i^(k-1)) for
///    0 < i < rows - 1, and the last row = (0, ..., 0, 1);
/// 2. for each column i >= 1, bring a row with a non-zero entry in column i to row i,
///    scale column i so that entry is 1, and subtract multiples of column i from every
///    other column to clear the rest of row i: the top k rows become the identity
///    (column operations keep every k x k submatrix invertible, which is the MDS property);
/// 3. scale each column (in the bottom m rows only) so row k is all ones, which makes the
///    first parity chunk the plain XOR of the data;
/// 4. scale each later row so its first entry is 1.
///
/// The bottom m rows are the coding matrix. `k + m <= 256` so the row indices are
/// distinct field elements.
pub fn vandermonde_coding_matrix(k: usize, m: usize) -> Matrix {
    assert!(
        k >= 1 && m >= 1,
        "k = {k}, m = {m}: both must be at least 1"
    );
    assert!(k + m <= 256, "k + m = {} exceeds GF(2^8)'s 256", k + m);
    let rows = k + m;
    let mut big = Matrix::zero(rows, k);
    big.set(0, 0, 1);
    for i in 1..rows - 1 {
        let mut power = 1u8;
        for j in 0..k {
            big.set(i, j, power);
            power = gf::mul(power, i as u8);
        }
    }
    big.set(rows - 1, k - 1, 1);

    for i in 1..k {
        let pivot = (i..rows)
            .find(|&row| big.get(row, i) != 0)
            .expect("a Vandermonde matrix has a non-zero entry below the diagonal");
        big.swap_rows(i, pivot);
        let diagonal = big.get(i, i);
        if diagonal != 1 {
            let scale = gf::inv(diagonal);
            for row in 0..rows {
                big.set(row, i, gf::mul(big.get(row, i), scale));
            }
        }
        for j in 0..k {
            let factor = big.get(i, j);
            if j == i || factor == 0 {
                continue;
            }
            for row in 0..rows {
                let value = big.get(row, j) ^ gf::mul(factor, big.get(row, i));
                big.set(row, j, value);
            }
        }
    }

    for j in 0..k {
        let entry = big.get(k, j);
        if entry != 1 {
            let scale = gf::inv(entry);
            for row in k..rows {
                big.set(row, j, gf::mul(big.get(row, j), scale));
            }
        }
    }
    for row in k + 1..rows {
        let entry = big.get(row, 0);
        if entry != 1 {
            let scale = gf::inv(entry);
            for j in 0..k {
                big.set(row, j, gf::mul(big.get(row, j), scale));
            }
        }
    }

    let mut coding = Matrix::zero(m, k);
    for i in 0..m {
        for j in 0..k {
            coding.set(i, j, big.get(k + i, j));
        }
    }
    coding
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_matrices_from_jerasure() {
        // Printed by libjerasure 2.0 (Debian 12) for reed_sol_vandermonde_coding_matrix.
        assert_eq!(vandermonde_coding_matrix(1, 1).data, [1]);
        assert_eq!(vandermonde_coding_matrix(2, 2).data, [1, 1, 1, 143]);
        assert_eq!(
            vandermonde_coding_matrix(4, 2).data,
            [1, 1, 1, 1, 1, 70, 143, 200]
        );
        assert_eq!(
            vandermonde_coding_matrix(3, 3).data,
            [1, 1, 1, 1, 196, 83, 1, 245, 244]
        );
    }

    #[test]
    fn first_row_and_first_column_are_ones() {
        for k in 1..=20 {
            for m in 1..=6 {
                let matrix = vandermonde_coding_matrix(k, m);
                assert!(matrix.row(0).iter().all(|&c| c == 1), "{k}+{m}");
                assert!((0..m).all(|i| matrix.get(i, 0) == 1), "{k}+{m}");
            }
        }
    }

    #[test]
    fn every_square_submatrix_of_the_generator_is_invertible() {
        // The MDS property for small codes: any k of the k + m rows of [I; C] decode.
        for (k, m) in [(2, 2), (3, 3), (4, 2), (4, 4), (5, 3)] {
            let coding = vandermonde_coding_matrix(k, m);
            let n = k + m;
            for chosen in 0u32..(1 << n) {
                if chosen.count_ones() as usize != k {
                    continue;
                }
                let rows: Vec<Vec<u8>> = (0..n)
                    .filter(|i| chosen & (1 << i) != 0)
                    .map(|i| {
                        if i < k {
                            (0..k).map(|j| u8::from(i == j)).collect()
                        } else {
                            coding.row(i - k).to_vec()
                        }
                    })
                    .collect();
                let refs: Vec<&[u8]> = rows.iter().map(|r| r.as_slice()).collect();
                let square = Matrix::from_rows(&refs);
                let inverse = square.invert().expect("MDS code: every k rows invert");
                assert_eq!(square.multiply(&inverse), Matrix::identity(k));
            }
        }
    }

    #[test]
    fn largest_code_builds() {
        let matrix = vandermonde_coding_matrix(128, 128);
        assert_eq!(matrix.rows(), 128);
        assert_eq!(matrix.cols(), 128);
        let matrix = vandermonde_coding_matrix(254, 2);
        assert!(matrix.row(0).iter().all(|&c| c == 1));
    }

    #[test]
    fn singular_matrix_has_no_inverse() {
        let singular = Matrix::from_rows(&[&[1, 2], &[2, 4]]);
        assert!(singular.invert().is_none());
    }
}
