//! Data block allocation. A block freed while journal entries may still mention it is held
//! back ("pending") until the journal start has durably moved past the entry that freed
//! it; otherwise a replay could find another object's data in a block it expects to hold
//! an older write.

pub struct Allocator {
    used: Vec<u64>,
    free_count: u64,
    /// Next block to look at (round robin keeps fresh writes spread out).
    cursor: u32,
    /// (journal seq of the entry that freed it, block).
    pending: Vec<(u64, u32)>,
    blocks: u32,
}

impl Allocator {
    pub fn new(blocks: u32) -> Allocator {
        Allocator {
            used: vec![0; (blocks as usize).div_ceil(64)],
            free_count: u64::from(blocks),
            cursor: 0,
            pending: Vec::new(),
            blocks,
        }
    }

    pub fn is_used(&self, block: u32) -> bool {
        self.used[block as usize / 64] & (1 << (block % 64)) != 0
    }

    pub fn mark_used(&mut self, block: u32) {
        if !self.is_used(block) {
            self.used[block as usize / 64] |= 1 << (block % 64);
            self.free_count -= 1;
        }
    }

    fn mark_free(&mut self, block: u32) {
        if self.is_used(block) {
            self.used[block as usize / 64] &= !(1 << (block % 64));
            self.free_count += 1;
        }
    }

    pub fn allocate(&mut self) -> Option<u32> {
        if self.free_count == 0 {
            return None;
        }
        for step in 0..self.blocks {
            let block = (self.cursor + step) % self.blocks;
            if !self.is_used(block) {
                self.mark_used(block);
                self.cursor = (block + 1) % self.blocks;
                return Some(block);
            }
        }
        None
    }

    /// Frees `block` once the journal start passes `freed_at_seq`.
    pub fn free_later(&mut self, block: u32, freed_at_seq: u64) {
        self.pending.push((freed_at_seq, block));
    }

    /// Releases pending blocks freed by entries before `journal_start_seq`.
    pub fn release_before(&mut self, journal_start_seq: u64) -> usize {
        let mut released = Vec::new();
        self.pending.retain(|(seq, block)| {
            let release = *seq < journal_start_seq;
            if release {
                released.push(*block);
            }
            !release
        });
        for block in &released {
            self.mark_free(*block);
        }
        released.len()
    }

    pub fn free_blocks(&self) -> u64 {
        self.free_count
    }

    pub fn pending_blocks(&self) -> usize {
        self.pending.len()
    }

    pub fn total_blocks(&self) -> u32 {
        self.blocks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_blocks_wait_for_the_journal() {
        let mut alloc = Allocator::new(3);
        let blocks: Vec<u32> = (0..3).filter_map(|_| alloc.allocate()).collect();
        assert_eq!(blocks.len(), 3);
        assert_eq!(alloc.allocate(), None);
        alloc.free_later(1, 10);
        assert_eq!(alloc.allocate(), None);
        assert_eq!(alloc.release_before(10), 0);
        assert_eq!(alloc.release_before(11), 1);
        assert_eq!(alloc.allocate(), Some(1));
    }
}
