//! The in-memory index of flushed ("clean") objects, laid out densely by block number so
//! that it costs a fixed, small amount of memory per block.
//!
//! Memory per data block (128 KiB blocks, 4 KiB granularity = 32 sectors):
//!
//! | part | bytes |
//! |---|---|
//! | object id | 16 |
//! | version | 8 |
//! | bitmap | 4 |
//! | hash table slot (u32 block number + 1 control byte, at most 2x over-allocated) | 5-10 |
//! | allocation bitmap | 1/8 |
//! | tombstone flag (bitset) | 1/8 |
//! | **total** | **~33-38 bytes = 264-304 MiB per TB of data** |
//! | optional: per-sector crc32c kept in memory | +128 = +1 GiB per TB |
//!
//! A block may hold a tombstone instead of data: the object's newest flushed version is a
//! deletion. It has an empty bitmap (reads give zeros with the tombstone's version) and is
//! listed as deleted; the per-block flag says which.
//!
//! The checksums are kept in memory only when they fit the configured budget
//! (`csum_memory_limit_bytes`); otherwise a read fetches the block's 4 KiB metadata slot
//! in parallel with the data.

use super::bitmap::bitmap_bytes;
use super::meta_format::MetaEntry;
use hashbrown::HashTable;
use std::hash::BuildHasher;
use vitastor_proto::ObjectId;

pub struct CleanIndex {
    sectors: u32,
    bitmap_len: usize,
    oids: Vec<ObjectId>,
    /// 0 = no clean object in this block.
    versions: Vec<u64>,
    bitmaps: Vec<u8>,
    /// One bit per block: the clean object there is a tombstone.
    tombstones: Vec<u64>,
    csums: Option<Vec<u32>>,
    table: HashTable<u32>,
    hasher: hashbrown::DefaultHashBuilder,
    count: usize,
}

/// A clean object as seen by readers.
#[derive(Debug, Clone, Copy)]
pub struct CleanRef<'a> {
    pub block: u32,
    pub version: u64,
    pub bitmap: &'a [u8],
    /// `None` when checksums are not kept in memory.
    pub csums: Option<&'a [u32]>,
    /// The version is a deletion: no data, reads give zeros.
    pub tombstone: bool,
}

impl CleanIndex {
    pub fn new(blocks: u32, sectors: u32, csums_in_memory: bool) -> CleanIndex {
        let bitmap_len = bitmap_bytes(sectors);
        CleanIndex {
            sectors,
            bitmap_len,
            oids: vec![ObjectId::default(); blocks as usize],
            versions: vec![0; blocks as usize],
            bitmaps: vec![0; blocks as usize * bitmap_len],
            tombstones: vec![0; (blocks as usize).div_ceil(64)],
            csums: csums_in_memory.then(|| vec![0; blocks as usize * sectors as usize]),
            table: HashTable::with_capacity(blocks as usize),
            hasher: hashbrown::DefaultHashBuilder::default(),
            count: 0,
        }
    }

    /// Bytes this index occupies (what the memory table in the module docs counts).
    pub fn memory_bytes(&self) -> usize {
        self.oids.len() * (std::mem::size_of::<ObjectId>() + 8)
            + self.bitmaps.len()
            + self.tombstones.len() * 8
            + self.csums.as_ref().map_or(0, |c| c.len() * 4)
            + self.table.capacity() * (std::mem::size_of::<u32>() + 1)
    }

    pub fn csums_in_memory(&self) -> bool {
        self.csums.is_some()
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn block_of(&self, oid: &ObjectId) -> Option<u32> {
        let hash = self.hasher.hash_one(oid);
        self.table
            .find(hash, |block| self.oids[*block as usize] == *oid)
            .copied()
    }

    pub fn get(&self, oid: &ObjectId) -> Option<CleanRef<'_>> {
        let block = self.block_of(oid)?;
        Some(self.at(block))
    }

    /// The owner of a block, if a clean object lives there.
    pub fn owner(&self, block: u32) -> Option<ObjectId> {
        (self.versions.get(block as usize).copied().unwrap_or(0) != 0)
            .then(|| self.oids[block as usize])
    }

    fn at(&self, block: u32) -> CleanRef<'_> {
        let b = block as usize;
        let sectors = self.sectors as usize;
        CleanRef {
            block,
            version: self.versions[b],
            bitmap: &self.bitmaps[b * self.bitmap_len..(b + 1) * self.bitmap_len],
            csums: self
                .csums
                .as_ref()
                .map(|c| &c[b * sectors..(b + 1) * sectors]),
            tombstone: self.tombstones[b / 64] & (1 << (b % 64)) != 0,
        }
    }

    /// Makes `entry` the clean state of its object; returns the block the object used to
    /// live in, if it was another one.
    pub fn insert(&mut self, entry: &MetaEntry) -> Option<u32> {
        let old = self.remove(&entry.oid);
        let b = entry.block as usize;
        debug_assert_eq!(
            self.versions[b], 0,
            "invariant: a block holds one clean object"
        );
        self.oids[b] = entry.oid;
        self.versions[b] = entry.version.max(1);
        self.bitmaps[b * self.bitmap_len..(b + 1) * self.bitmap_len].copy_from_slice(&entry.bitmap);
        if entry.tombstone {
            self.tombstones[b / 64] |= 1 << (b % 64);
        } else {
            self.tombstones[b / 64] &= !(1 << (b % 64));
        }
        let sectors = self.sectors as usize;
        if let Some(csums) = self.csums.as_mut() {
            csums[b * sectors..(b + 1) * sectors].copy_from_slice(&entry.csums);
        }
        let hash = self.hasher.hash_one(entry.oid);
        let oids = &self.oids;
        let hasher = &self.hasher;
        self.table.insert_unique(hash, entry.block, |block| {
            hasher.hash_one(oids[*block as usize])
        });
        self.count += 1;
        old.filter(|old| *old != entry.block)
    }

    /// Forgets an object; returns the block it lived in.
    pub fn remove(&mut self, oid: &ObjectId) -> Option<u32> {
        let hash = self.hasher.hash_one(oid);
        let oids = &self.oids;
        let found = self
            .table
            .find_entry(hash, |block| oids[*block as usize] == *oid)
            .ok()?;
        let (block, _) = found.remove();
        self.versions[block as usize] = 0;
        self.count -= 1;
        Some(block)
    }

    /// Every clean object (in block order).
    pub fn iter(&self) -> impl Iterator<Item = (ObjectId, CleanRef<'_>)> + '_ {
        (0..self.versions.len() as u32)
            .filter(|b| self.versions[*b as usize] != 0)
            .map(|b| (self.oids[b as usize], self.at(b)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(inode: u64, block: u32, version: u64) -> MetaEntry {
        MetaEntry {
            oid: ObjectId { inode, stripe: 0 },
            version,
            block,
            bitmap: vec![0xff; 4],
            csums: vec![block; 32],
            tombstone: false,
        }
    }

    #[test]
    fn insert_move_remove() {
        let mut index = CleanIndex::new(16, 32, true);
        assert_eq!(index.insert(&entry(1, 3, 5)), None);
        assert_eq!(index.insert(&entry(2, 4, 1)), None);
        assert_eq!(
            index
                .get(&ObjectId {
                    inode: 1,
                    stripe: 0
                })
                .map(|c| (c.block, c.version)),
            Some((3, 5))
        );
        assert_eq!(index.insert(&entry(1, 7, 6)), Some(3));
        assert_eq!(index.owner(3), None);
        assert_eq!(
            index.owner(7),
            Some(ObjectId {
                inode: 1,
                stripe: 0
            })
        );
        assert_eq!(
            index
                .get(&ObjectId {
                    inode: 1,
                    stripe: 0
                })
                .and_then(|c| c.csums)
                .map(|c| c[0]),
            Some(7)
        );
        assert_eq!(index.len(), 2);
        assert_eq!(
            index.remove(&ObjectId {
                inode: 2,
                stripe: 0
            }),
            Some(4)
        );
        assert_eq!(index.iter().count(), 1);
        let mut tombstone = entry(1, 9, 8);
        tombstone.tombstone = true;
        tombstone.bitmap = vec![0; 4];
        assert_eq!(index.insert(&tombstone), Some(7));
        let oid = ObjectId {
            inode: 1,
            stripe: 0,
        };
        assert!(index
            .get(&oid)
            .is_some_and(|c| c.tombstone && c.version == 8));
        assert_eq!(index.insert(&entry(1, 9, 9)), None);
        assert!(index.get(&oid).is_some_and(|c| !c.tombstone));
    }

    #[test]
    fn memory_per_terabyte_stays_under_budget() {
        // 1 TiB of 128 KiB blocks = 8 Mi blocks; measure a 1/64 slice and scale.
        let blocks = (1u32 << 23) / 64;
        let index = CleanIndex::new(blocks, 32, false);
        let per_tb_mib = index.memory_bytes() as f64 * 64.0 / (1 << 20) as f64;
        assert!(per_tb_mib < 600.0, "{per_tb_mib} MiB per TB");
    }
}
