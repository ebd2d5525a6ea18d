//! Where an object lives: byte offset -> stripe -> PG.
//!
//! - `stripe_size = block_size * data_chunks` (data_chunks = 1 for replicated pools,
//!   `pg_size - parity_chunks` for EC/XOR).
//! - `stripe = offset - offset % stripe_size`.
//! - `pg = (stripe / pg_stripe_size) % pg_count + 1` where `pg_stripe_size` defaults to the
//!   stripe size. The inode is not part of the formula.
//! - On secondaries of EC pools the chunk number is OR-ed into the low bits of `stripe`.

use crate::ids::{ObjectId, PgNum};

/// Low bits of `stripe` that carry the EC chunk index on secondaries.
pub const EC_CHUNK_BITS: u32 = 12;
pub const EC_CHUNK_MASK: u64 = (1 << EC_CHUNK_BITS) - 1;

/// The striping parameters of one pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Striping {
    pub block_size: u32,
    pub data_chunks: u32,
    pub pg_count: u32,
    /// 0 = default (`block_size * data_chunks`).
    pub pg_stripe_size: u64,
}

impl Striping {
    /// Bytes of image data in one object (stripe).
    pub fn stripe_size(&self) -> u64 {
        u64::from(self.block_size) * u64::from(self.data_chunks.max(1))
    }

    pub fn effective_pg_stripe_size(&self) -> u64 {
        if self.pg_stripe_size == 0 {
            self.stripe_size()
        } else {
            self.pg_stripe_size.max(self.stripe_size())
        }
    }

    /// The object holding byte `offset` of `inode`.
    pub fn object_of(&self, inode: u64, offset: u64) -> ObjectId {
        let stripe_size = self.stripe_size();
        ObjectId {
            inode,
            stripe: offset - offset % stripe_size,
        }
    }

    /// The PG of an object's stripe (chunk bits are ignored).
    pub fn pg_of(&self, stripe: u64) -> PgNum {
        pg_of_stripe(stripe, self.effective_pg_stripe_size(), self.pg_count)
    }
}

/// `pg = (stripe / pg_stripe_size) % pg_count + 1`. Chunk bits in `stripe` are masked off.
/// A `pg_stripe_size` or `pg_count` of 0 is treated as 1 so the function is total.
pub fn pg_of_stripe(stripe: u64, pg_stripe_size: u64, pg_count: u32) -> PgNum {
    let stripe = stripe & !EC_CHUNK_MASK;
    let pg_stripe_size = pg_stripe_size.max(1);
    let pg_count = u64::from(pg_count.max(1));
    let pg = (stripe / pg_stripe_size) % pg_count + 1;
    PgNum::new(pg as u32).expect("invariant: pg is computed as x % n + 1 >= 1")
}

/// Splits `[offset, offset+len)` of an image at object boundaries, returning
/// `(object, offset inside the object, length)` pieces in order.
pub fn split_at_objects(
    striping: &Striping,
    inode: u64,
    offset: u64,
    len: u64,
) -> Vec<(ObjectId, u64, u64)> {
    let stripe_size = striping.stripe_size();
    let mut pieces = Vec::new();
    let mut position = offset;
    let end = offset.saturating_add(len);
    while position < end {
        let oid = striping.object_of(inode, position);
        let inside = position - oid.stripe;
        let piece = (stripe_size - inside).min(end - position);
        pieces.push((oid, inside, piece));
        position += piece;
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn replicated_example() {
        let striping = Striping {
            block_size: 131072,
            data_chunks: 1,
            pg_count: 256,
            pg_stripe_size: 0,
        };
        assert_eq!(
            striping.object_of(5, 131072 * 3 + 17),
            ObjectId {
                inode: 5,
                stripe: 131072 * 3
            }
        );
        assert_eq!(striping.pg_of(0).get(), 1);
        assert_eq!(striping.pg_of(131072 * 3).get(), 4);
        assert_eq!(striping.pg_of(131072 * 256).get(), 1);
    }

    #[test]
    fn ec_stripe_covers_data_chunks() {
        // EC 4+2: 4 data chunks of 128 KiB per stripe.
        let striping = Striping {
            block_size: 131072,
            data_chunks: 4,
            pg_count: 32,
            pg_stripe_size: 0,
        };
        assert_eq!(striping.stripe_size(), 524288);
        assert_eq!(striping.object_of(1, 524288 + 1000).stripe, 524288);
        assert_eq!(striping.pg_of(524288).get(), 2);
        // The chunk number in the low bits does not change the PG.
        assert_eq!(striping.pg_of(524288 | 3).get(), 2);
    }

    proptest! {
        #[test]
        fn pg_is_in_range(stripe: u64, pg_stripe_size: u64, pg_count: u32) {
            let pg = pg_of_stripe(stripe, pg_stripe_size, pg_count).get();
            prop_assert!(pg >= 1 && pg <= pg_count.max(1));
        }

        #[test]
        fn split_covers_the_range(offset in 0u64..(1 << 40), len in 0u64..(1 << 24), data_chunks in 1u32..8) {
            let striping = Striping { block_size: 131072, data_chunks, pg_count: 64, pg_stripe_size: 0 };
            let pieces = split_at_objects(&striping, 1, offset, len);
            let mut position = offset;
            for (oid, inside, piece_len) in pieces {
                prop_assert_eq!(oid.stripe + inside, position);
                prop_assert!(inside + piece_len <= striping.stripe_size());
                prop_assert!(piece_len > 0);
                position += piece_len;
            }
            prop_assert_eq!(position, offset + len);
        }
    }
}
