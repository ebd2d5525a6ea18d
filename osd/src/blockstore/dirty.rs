//! Versions of objects that live in the journal (not yet flushed to their block).
//!
//! Each object with journaled versions has a chain ordered by version. Stable versions
//! always form a prefix of the chain (stabilize(v) marks everything <= v). The flusher
//! only takes a prefix of stable, completed entries; rollback only removes an unstable
//! suffix. The flusher also waits until every journal entry up to the ones that wrote and
//! stabilized a version has completed, so that after its fsync replay is sure to reach
//! them (replay stops at the first entry that did not make it to disk).

use vitastor_proto::ObjectId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirtyKind {
    /// Data lives in the journal at ring position `data_pos`.
    Small {
        offset: u32,
        len: u32,
        data_pos: u64,
        csums: Box<[u32]>,
    },
    /// Data was redirected to a fresh `block`; sectors outside `offset..offset+len` read as zeros.
    Big {
        block: u32,
        offset: u32,
        len: u32,
        csums: Box<[u32]>,
    },
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirtyEntry {
    pub version: u64,
    /// Sequence number of the journal entry that created this version.
    pub seq: u64,
    pub stable: bool,
    /// Sequence number of the journal entry that made this version stable (its own, a
    /// later stable write's, or a stabilize entry's).
    pub stable_seq: u64,
    /// The entry's disk writes have completed (readers ignore versions still in flight).
    pub written: bool,
    pub kind: DirtyKind,
}

impl DirtyEntry {
    pub fn new(version: u64, seq: u64, stable: bool, written: bool, kind: DirtyKind) -> DirtyEntry {
        DirtyEntry {
            version,
            seq,
            stable,
            stable_seq: if stable { seq } else { 0 },
            written,
            kind,
        }
    }

    pub fn big_block(&self) -> Option<u32> {
        match self.kind {
            DirtyKind::Big { block, .. } => Some(block),
            _ => None,
        }
    }
}

pub type DirtyMap = hashbrown::HashMap<ObjectId, Vec<DirtyEntry>>;
