//! Typed identifiers. Ranges are guaranteed by construction where the type has a range.
//!
//! | id | representation | rule |
//! |---|---|---|
//! | `PoolId` | u32 on the wire/etcd, 1..=65535 | top 16 bits of a global inode |
//! | `Inode` | u64 | `pool_id << 48 \| local_inode`, local < 2^48 |
//! | `ObjectId` | `{inode: u64, stripe: u64}` | stripe = byte offset rounded down to the stripe size |
//! | `PgNum` | u32, 1-based | `(stripe / pg_stripe_size) % pg_count + 1` |
//! | `OsdNum` | u64, 0 = empty slot | |
//! | `Version` | u64 | epoch in the top 48 bits, counter in the low 16 |

use serde::{Deserialize, Serialize};
use std::fmt;

/// Bits of a global inode number that hold the image number inside its pool.
pub const POOL_ID_BITS: u32 = 16;
pub const INODE_LOCAL_BITS: u32 = 64 - POOL_ID_BITS;
pub const MAX_POOL_ID: u32 = (1 << POOL_ID_BITS) - 1;
pub const MAX_LOCAL_INODE: u64 = (1 << INODE_LOCAL_BITS) - 1;

/// A pool number, 1..=65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct PoolId(u16);

impl PoolId {
    pub fn new(id: u32) -> Result<Self, String> {
        if id == 0 || id > MAX_POOL_ID {
            return Err(format!("pool id {id} is out of range 1..={MAX_POOL_ID}"));
        }
        Ok(PoolId(id as u16))
    }
    pub fn get(self) -> u32 {
        u32::from(self.0)
    }
}

impl TryFrom<u32> for PoolId {
    type Error = String;
    fn try_from(id: u32) -> Result<Self, String> {
        PoolId::new(id)
    }
}

impl From<PoolId> for u32 {
    fn from(id: PoolId) -> u32 {
        id.get()
    }
}

impl fmt::Display for PoolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A global inode number: `pool_id << 48 | local_inode`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Inode(pub u64);

impl Inode {
    pub fn new(pool: PoolId, local: u64) -> Result<Self, String> {
        if local > MAX_LOCAL_INODE {
            return Err(format!(
                "inode number {local} does not fit in {INODE_LOCAL_BITS} bits"
            ));
        }
        Ok(Inode((u64::from(pool.get()) << INODE_LOCAL_BITS) | local))
    }
    /// The pool part; `None` for inode numbers with a zero pool part (invalid in a cluster).
    pub fn pool(self) -> Option<PoolId> {
        PoolId::new((self.0 >> INODE_LOCAL_BITS) as u32).ok()
    }
    pub fn local(self) -> u64 {
        self.0 & MAX_LOCAL_INODE
    }
}

impl fmt::Display for Inode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// An object: one stripe of one inode. On secondaries of EC pools the chunk index is OR-ed
/// into the low bits of `stripe` (see [`crate::placement::EC_CHUNK_BITS`]).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct ObjectId {
    pub inode: u64,
    pub stripe: u64,
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}:{:x}", self.inode, self.stripe)
    }
}

/// An object version: epoch (top 48 bits) and counter (low 16 bits).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Version(pub u64);

impl Version {
    pub const COUNTER_BITS: u32 = 16;
    pub fn new(epoch: u64, counter: u16) -> Result<Self, String> {
        if epoch >> (64 - Self::COUNTER_BITS) != 0 {
            return Err(format!("epoch {epoch} does not fit in 48 bits"));
        }
        Ok(Version((epoch << Self::COUNTER_BITS) | u64::from(counter)))
    }
    pub fn epoch(self) -> u64 {
        self.0 >> Self::COUNTER_BITS
    }
    pub fn counter(self) -> u16 {
        (self.0 & 0xffff) as u16
    }
}

/// An object at one version (Vitastor's `obj_ver_id`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct ObjectVersion {
    pub oid: ObjectId,
    pub version: u64,
}

/// A placement group number, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct PgNum(u32);

impl PgNum {
    pub fn new(pg: u32) -> Result<Self, String> {
        if pg == 0 {
            return Err("PG numbers start at 1".to_string());
        }
        Ok(PgNum(pg))
    }
    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for PgNum {
    type Error = String;
    fn try_from(pg: u32) -> Result<Self, String> {
        PgNum::new(pg)
    }
}

impl From<PgNum> for u32 {
    fn from(pg: PgNum) -> u32 {
        pg.0
    }
}

impl fmt::Display for PgNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An OSD number; 0 means "no OSD" (an empty slot in a PG set).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct OsdNum(pub u64);

impl OsdNum {
    pub const EMPTY: OsdNum = OsdNum(0);
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for OsdNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pool_id_range() {
        assert!(PoolId::new(0).is_err());
        assert!(PoolId::new(65536).is_err());
        assert_eq!(PoolId::new(65535).map(PoolId::get), Ok(65535));
    }

    #[test]
    fn pg_is_one_based() {
        assert!(PgNum::new(0).is_err());
        assert!(serde_json::from_str::<PgNum>("0").is_err());
        assert_eq!(
            serde_json::from_str::<PgNum>("7").map(PgNum::get).ok(),
            Some(7)
        );
    }

    proptest! {
        #[test]
        fn inode_encoding_round_trips(pool in 1u32..=MAX_POOL_ID, local in 0u64..=MAX_LOCAL_INODE) {
            let pool_id = PoolId::new(pool).unwrap();
            let inode = Inode::new(pool_id, local).unwrap();
            prop_assert_eq!(inode.0, (u64::from(pool) << 48) | local);
            prop_assert_eq!(inode.pool(), Some(pool_id));
            prop_assert_eq!(inode.local(), local);
        }

        #[test]
        fn version_round_trips(epoch in 0u64..(1 << 48), counter: u16) {
            let version = Version::new(epoch, counter).unwrap();
            prop_assert_eq!(version.epoch(), epoch);
            prop_assert_eq!(version.counter(), counter);
        }
    }

    #[test]
    fn too_large_values_are_rejected() {
        let pool = PoolId::new(1).unwrap();
        assert!(Inode::new(pool, 1 << 48).is_err());
        assert!(Version::new(1 << 48, 0).is_err());
    }
}
