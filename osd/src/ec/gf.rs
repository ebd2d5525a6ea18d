//! GF(2^8) arithmetic with the primitive polynomial x^8 + x^4 + x^3 + x^2 + 1 (0x11d).
//!
//! This is the field jerasure uses for w = 8 (and ISA-L uses too), so coefficients and
//! products here are byte-for-byte the ones Vitastor's OSDs compute. Addition is XOR;
//! multiplication goes through log/antilog tables built at compile time, plus a full
//! 256 x 256 product table (64 KiB) for the scalar region code.

/// The field's reduction polynomial, with the x^8 bit.
pub const POLY: u16 = 0x11d;

/// `EXP[i]` = 2^i for i in 0..510 (doubled so `EXP[log a + log b]` needs no modulo).
pub static EXP: [u8; 512] = build_exp();
/// `LOG[a]` = i with 2^i = a, for a != 0 (`LOG[0]` is unused and 0).
pub static LOG: [u8; 256] = build_log();
/// `MUL[a][b]` = a * b.
pub static MUL: [[u8; 256]; 256] = build_mul();

const fn build_exp() -> [u8; 512] {
    let mut exp = [0u8; 512];
    let mut x: u16 = 1;
    let mut i = 0;
    while i < 512 {
        exp[i] = x as u8;
        x <<= 1;
        if x & 0x100 != 0 {
            x ^= POLY;
        }
        i += 1;
    }
    exp
}

const fn build_log() -> [u8; 256] {
    let exp = build_exp();
    let mut log = [0u8; 256];
    let mut i = 0;
    while i < 255 {
        log[exp[i] as usize] = i as u8;
        i += 1;
    }
    log
}

const fn build_mul() -> [[u8; 256]; 256] {
    let exp = build_exp();
    let log = build_log();
    let mut table = [[0u8; 256]; 256];
    let mut a = 1;
    while a < 256 {
        let mut b = 1;
        while b < 256 {
            table[a][b] = exp[log[a] as usize + log[b] as usize];
            b += 1;
        }
        a += 1;
    }
    table
}

/// a * b in GF(2^8).
#[inline]
pub fn mul(a: u8, b: u8) -> u8 {
    MUL[a as usize][b as usize]
}

/// The multiplicative inverse of a non-zero element.
#[inline]
pub fn inv(a: u8) -> u8 {
    assert!(a != 0, "0 has no inverse in GF(2^8)");
    EXP[255 - LOG[a as usize] as usize]
}

/// a / b for non-zero b.
#[inline]
pub fn div(a: u8, b: u8) -> u8 {
    mul(a, inv(b))
}

/// The two 16-entry tables of the split-nibble method: `c * x` =
/// `low[x & 15] ^ high[x >> 4]`, because multiplication by `c` is linear over XOR.
/// Laid out as `[low; high]`, the shape the SIMD shuffle kernels load.
pub fn nibble_tables(c: u8) -> [u8; 32] {
    let mut tables = [0u8; 32];
    for x in 0..16u8 {
        tables[x as usize] = mul(c, x);
        tables[16 + x as usize] = mul(c, x << 4);
    }
    tables
}

/// Multiplication by `c` as an 8 x 8 matrix over GF(2) (it is linear over XOR), in the
/// layout of x86's GF2P8AFFINEQB: byte `7 - i` holds the input bits that feed output bit i.
/// One such instruction multiplies 32 or 64 bytes by `c`, for any reduction polynomial
/// (GF2P8MULB is fixed to AES's 0x11b, so it does not fit jerasure's field).
pub fn affine_matrix(c: u8) -> u64 {
    let mut matrix = 0u64;
    for i in 0..8 {
        let mut row = 0u8;
        for j in 0..8 {
            if (mul(c, 1 << j) >> i) & 1 != 0 {
                row |= 1 << j;
            }
        }
        matrix |= u64::from(row) << (8 * (7 - i));
    }
    matrix
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shift-and-add multiplication with reduction by 0x11d, the definition the tables
    /// must agree with.
    fn slow_mul(mut a: u8, mut b: u8) -> u8 {
        let mut product = 0u8;
        while b != 0 {
            if b & 1 != 0 {
                product ^= a;
            }
            let carry = a & 0x80 != 0;
            a <<= 1;
            if carry {
                a ^= (POLY & 0xff) as u8;
            }
            b >>= 1;
        }
        product
    }

    #[test]
    fn mul_table_matches_the_polynomial_definition() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                assert_eq!(mul(a, b), slow_mul(a, b), "{a} * {b}");
            }
        }
    }

    #[test]
    fn two_generates_the_multiplicative_group() {
        let mut seen = [false; 256];
        for i in 0..255 {
            assert!(!seen[EXP[i] as usize], "2^{i} repeats");
            seen[EXP[i] as usize] = true;
        }
        assert!(!seen[0]);
        assert_eq!(EXP[255], 1);
        assert_eq!(EXP[8], 0x1d);
    }

    #[test]
    fn inverse_and_division() {
        assert_eq!(inv(1), 1);
        for a in 1..=255u8 {
            assert_eq!(mul(a, inv(a)), 1, "{a}");
            for b in 1..=255u8 {
                assert_eq!(mul(div(a, b), b), a);
            }
        }
        // Known values of jerasure's w=8 field: 2 * 0x80 wraps to 0x1d, 1/2 = 0x8e.
        assert_eq!(mul(2, 0x80), 0x1d);
        assert_eq!(inv(2), 0x8e);
    }

    #[test]
    #[should_panic(expected = "no inverse")]
    fn zero_has_no_inverse() {
        inv(0);
    }

    #[test]
    fn field_laws() {
        for a in 0..=255u8 {
            assert_eq!(mul(a, 0), 0);
            assert_eq!(mul(a, 1), a);
            for b in (0..=255u8).step_by(7) {
                assert_eq!(mul(a, b), mul(b, a));
                for c in (0..=255u8).step_by(13) {
                    assert_eq!(mul(a, b ^ c), mul(a, b) ^ mul(a, c));
                    assert_eq!(mul(mul(a, b), c), mul(a, mul(b, c)));
                }
            }
        }
    }

    #[test]
    fn affine_matrix_multiplies() {
        // GF2P8AFFINEQB's definition: output bit i = parity(matrix byte (7 - i) AND x).
        let affine = |matrix: u64, x: u8| {
            (0..8).fold(0u8, |out, i| {
                let row = (matrix >> (8 * (7 - i))) as u8;
                out | (((row & x).count_ones() & 1) as u8) << i
            })
        };
        for c in 0..=255u8 {
            let matrix = affine_matrix(c);
            for x in 0..=255u8 {
                assert_eq!(affine(matrix, x), mul(c, x), "{c} * {x}");
            }
        }
        assert_eq!(affine_matrix(1), 0x0102_0408_1020_4080);
    }

    #[test]
    fn nibble_tables_split_the_product() {
        for c in 0..=255u8 {
            let tables = nibble_tables(c);
            for x in 0..=255u8 {
                let split = tables[(x & 15) as usize] ^ tables[16 + (x >> 4) as usize];
                assert_eq!(split, mul(c, x), "{c} * {x}");
            }
        }
    }
}
