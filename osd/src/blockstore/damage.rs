//! Objects this store knows it cannot return correctly: the set the OSD recovers from
//! peers (read repair, recovery after a corrupted journal).
//!
//! An object enters the set when
//! - replay finds one of its journal entries corrupted (the entry was durable, so this is
//!   damage at rest, not a torn write; see [`super::journal_walk`]): either the entry is
//!   unreadable and lost ([`DamageReason::LostEntry`]), or its data sectors fail their
//!   checksums and are kept with those checksums ([`DamageReason::BadJournalData`]);
//! - a redirected block that replay checks fails its checksums ([`DamageReason::BadData`]);
//! - a read hits a sector whose checksum fails ([`DamageReason::BadData`]).
//!
//! It leaves the set when a stable version newer than the damaged one replaces the whole
//! object (a write covering the whole block, or a delete), when the object is purged, or
//! when the OSD calls [`Blockstore::clear_damaged`] after restoring it from peers. A
//! repair from a peer's copy is therefore a whole-block write at a version newer than
//! [`DamagedObject::version`] (a lost entry's version may be newer than
//! [`Blockstore::object_version`]), stable or stabilized.
//!
//! Bad data keeps its original checksums all the way (the flusher copies them into the
//! metadata slot), so every later read of those sectors fails again, across restarts. A
//! lost entry leaves no such trace, so a [`DamageReason::LostEntry`] object fails every
//! read (its other versions may be stale) and its versions are not flushed; the lost entry
//! holds the journal start, so the next replay finds it again. The OSD must therefore
//! repair such objects soon: until then the journal cannot be trimmed past the loss and
//! eventually fills (writes then get -ENOSPC). The repair write itself (a whole-block write
//! of such an object) may use the journal's reserve, as stabilize and rollback do, since
//! it is what lets the start move.

use super::dirty::DirtyKind;
use super::disk::Disk;
use super::store::Blockstore;
use std::collections::BTreeMap;
use vitastor_proto::ObjectId;

/// Why an object is in the damaged set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DamageReason {
    /// A journal entry of the object (journal sequence number `seq`) was unreadable and is
    /// lost. Every read of the object fails until it is repaired.
    LostEntry { seq: u64 },
    /// Journaled data of the object fails its checksums (reads of those sectors fail).
    BadJournalData,
    /// Data in a block fails its checksums (reads of those sectors fail).
    BadData,
    /// An operator named this copy bad (`vitastor-cli fix --bad-osds`): every read fails
    /// until the primary rewrites the object from the good copies. Kept in memory only:
    /// after a restart the copy reads as before and the next scrub finds it again.
    Condemned,
}

/// One damaged object: the newest version known to be affected, and why. After a lost
/// entry `version` may be newer than [`Blockstore::object_version`]: the store never saw
/// that version applied. A repair must write a newer version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DamagedObject {
    pub version: u64,
    pub reason: DamageReason,
}

impl<D: Disk> Blockstore<D> {
    /// Objects whose newest version this store cannot fully read back (lost or corrupted
    /// at rest). The OSD recovers them from peers, then rewrites them (which clears the
    /// mark) or calls [`Blockstore::clear_damaged`].
    pub fn damaged_objects(&self) -> &BTreeMap<ObjectId, DamagedObject> {
        &self.damaged
    }

    /// Forgets the damage of `oid` (the OSD restored it from peers by writes that cover
    /// every written sector). Returns whether it was marked.
    pub fn clear_damaged(&mut self, oid: &ObjectId) -> bool {
        self.damaged.remove(oid).is_some()
    }

    /// Marks `oid` damaged at `version`. A lost entry outranks bad data (it also fails
    /// reads of the sectors that checksum fine), and the oldest lost entry is the one that
    /// holds the journal start.
    pub(super) fn mark_damaged(&mut self, oid: ObjectId, version: u64, reason: DamageReason) {
        let damage = self
            .damaged
            .entry(oid)
            .or_insert(DamagedObject { version, reason });
        damage.version = damage.version.max(version);
        match (damage.reason, reason) {
            (DamageReason::LostEntry { seq: old }, DamageReason::LostEntry { seq }) => {
                damage.reason = DamageReason::LostEntry { seq: old.min(seq) }
            }
            (DamageReason::LostEntry { .. }, _) => {}
            (_, new) => damage.reason = new,
        }
    }

    /// Whether a journal entry of `oid` is lost (its versions must not be flushed).
    pub(super) fn has_lost_entry(&self, oid: &ObjectId) -> bool {
        self.damaged
            .get(oid)
            .is_some_and(|d| matches!(d.reason, DamageReason::LostEntry { .. }))
    }

    /// Why every read of `oid` must fail, if it must: a journal entry of it is lost, or an
    /// operator condemned the copy.
    pub(super) fn unreadable(&self, oid: &ObjectId) -> Option<DamageReason> {
        self.damaged
            .get(oid)
            .map(|d| d.reason)
            .filter(|r| matches!(r, DamageReason::LostEntry { .. } | DamageReason::Condemned))
    }

    /// Marks this store's copy of `oid` bad on an operator's word (`vitastor-cli fix`):
    /// no read returns it any more, and a whole-object rewrite at a newer version (the
    /// primary's repair) clears the mark. Returns false if the store has no such object.
    pub fn condemn(&mut self, oid: ObjectId) -> bool {
        let version = self.object_version(&oid);
        if version == 0 {
            return false;
        }
        self.mark_damaged(oid, version, DamageReason::Condemned);
        true
    }

    /// The oldest lost journal entry still marked: the journal start must not pass it.
    pub(super) fn oldest_lost_seq(&self) -> Option<u64> {
        self.damaged
            .values()
            .filter_map(|d| match d.reason {
                DamageReason::LostEntry { seq } => Some(seq),
                _ => None,
            })
            .min()
    }

    /// Ends the damage of `oid` once a *stable* version newer than the damaged one
    /// replaces the whole object (a whole-block write, or a tombstone): then nothing can
    /// bring back a state that depends on the damaged data. Unstable versions do not count:
    /// a rollback would drop them and expose the damaged state again.
    pub(super) fn clear_damage_if_replaced(&mut self, oid: &ObjectId) {
        let Some(damage) = self.damaged.get(oid) else {
            return;
        };
        let block_size = self.sb.block_size;
        let replaced = self.dirty.get(oid).is_some_and(|chain| {
            chain.iter().any(|e| {
                e.stable
                    && e.version > damage.version
                    && match e.kind {
                        DirtyKind::Big { offset, len, .. } => offset == 0 && len == block_size,
                        DirtyKind::Delete => true,
                        DirtyKind::Small { .. } => false,
                    }
            })
        });
        if replaced {
            self.damaged.remove(oid);
        }
    }
}
