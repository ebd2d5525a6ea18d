//! Bit sets over the sectors (bitmap_granularity units) of one block, stored as bytes
//! (bit i of byte i/8), the way they are written to disk and sent on the wire.

pub fn bitmap_bytes(sectors: u32) -> usize {
    (sectors as usize).div_ceil(8)
}

pub fn get(bitmap: &[u8], sector: u32) -> bool {
    bitmap
        .get(sector as usize / 8)
        .is_some_and(|byte| byte & (1 << (sector % 8)) != 0)
}

pub fn set(bitmap: &mut [u8], sector: u32) {
    if let Some(byte) = bitmap.get_mut(sector as usize / 8) {
        *byte |= 1 << (sector % 8);
    }
}

pub fn set_range(bitmap: &mut [u8], first: u32, count: u32) {
    for sector in first..first + count {
        set(bitmap, sector);
    }
}

pub fn union(into: &mut [u8], other: &[u8]) {
    for (a, b) in into.iter_mut().zip(other) {
        *a |= *b;
    }
}
