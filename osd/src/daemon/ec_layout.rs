//! Where the bytes of an EC/XOR stripe live: a stripe (one object of the image) is `k`
//! data chunks of `chunk_size` bytes each, back to back (chunk `c` holds stripe bytes
//! `c * chunk_size ..`), plus `m` parity chunks; chunk `c` is the object
//! `{inode, stripe | c}` on the OSD in slot `c` of the PG's set.
//!
//! A write of stripe bytes `[offset, offset + len)` touches some data chunks, each over an
//! in-chunk range; parity is computed over the *union* of those in-chunk ranges
//! (`[start, end)`), so every chunk of the stripe is written over that one range (see
//! `ec_decide.rs` for why every chunk gets each version).

/// Geometry of one pool's stripes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EcLayout {
    pub k: u32,
    pub m: u32,
    pub chunk_size: u32,
}

/// One data chunk's part of a client range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkPart {
    pub chunk: u32,
    /// Offset inside the chunk.
    pub offset: u32,
    pub len: u32,
    /// Offset of these bytes inside the client's buffer.
    pub buf_offset: u32,
}

impl EcLayout {
    pub fn stripe_size(&self) -> u64 {
        u64::from(self.k) * u64::from(self.chunk_size)
    }

    pub fn chunks(&self) -> u32 {
        self.k + self.m
    }

    /// The data chunk parts of stripe bytes `[offset, offset + len)`, in order.
    pub fn parts(&self, offset: u32, len: u32) -> Vec<ChunkPart> {
        let end = u64::from(offset) + u64::from(len);
        assert!(end <= self.stripe_size(), "a range inside the stripe");
        let size = self.chunk_size;
        let mut parts = Vec::new();
        let mut at = offset;
        while u64::from(at) < end {
            let chunk = at / size;
            let in_chunk = at % size;
            let part_len = (size - in_chunk).min((end - u64::from(at)) as u32);
            parts.push(ChunkPart {
                chunk,
                offset: in_chunk,
                len: part_len,
                buf_offset: at - offset,
            });
            at += part_len;
        }
        parts
    }

    /// The in-chunk range `[start, end)` every chunk is written over for a write of
    /// `[offset, offset + len)`: the union of the touched parts' ranges.
    pub fn write_range(&self, offset: u32, len: u32) -> (u32, u32) {
        let parts = self.parts(offset, len);
        let start = parts.iter().map(|p| p.offset).min().unwrap_or(0);
        let end = parts.iter().map(|p| p.offset + p.len).max().unwrap_or(0);
        (start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LAYOUT: EcLayout = EcLayout {
        k: 2,
        m: 1,
        chunk_size: 128 << 10,
    };

    #[test]
    fn a_write_across_chunks_covers_the_union_of_their_ranges() {
        // The last 8 KiB of chunk 0 and the first 4 KiB of chunk 1.
        let offset = (128 << 10) - 8192;
        let parts = LAYOUT.parts(offset, 12288);
        assert_eq!(parts.len(), 2);
        assert_eq!(
            (parts[0].chunk, parts[0].offset, parts[0].len),
            (0, offset, 8192)
        );
        assert_eq!(
            (parts[1].chunk, parts[1].offset, parts[1].buf_offset),
            (1, 0, 8192)
        );
        assert_eq!(LAYOUT.write_range(offset, 12288), (0, 128 << 10));
        assert_eq!(LAYOUT.write_range(4096, 4096), (4096, 8192));
    }

    proptest! {
        #[test]
        fn parts_tile_the_range(k in 1u32..6, offset in 0u32..(5 << 17), len in 1u32..(5 << 17)) {
            let layout = EcLayout { k, m: 1, chunk_size: 128 << 10 };
            let size = layout.stripe_size() as u32;
            prop_assume!(offset < size);
            let len = len.min(size - offset);
            let parts = layout.parts(offset, len);
            let mut next = 0;
            for part in &parts {
                prop_assert_eq!(part.buf_offset, next);
                prop_assert!(part.offset + part.len <= layout.chunk_size);
                prop_assert_eq!(part.chunk * layout.chunk_size + part.offset, offset + next);
                next += part.len;
            }
            prop_assert_eq!(next, len);
            let (start, end) = layout.write_range(offset, len);
            prop_assert!(parts.iter().all(|p| p.offset >= start && p.offset + p.len <= end));
        }
    }
}
