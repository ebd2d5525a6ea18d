//! Walking the journal ring at open, and telling a torn write from damage at rest.
//!
//! The walk follows the chain of entries from the header's start: each must be sealed,
//! carry the next sequence number, a session no older than the previous entry's nor (from
//! the header's session start sequence on) than the header's session, and (small writes)
//! intact data. Where the chain breaks, the walk looks ahead (up to [`LOST_RUN_MAX`]
//! sequence numbers, anywhere in the part of the ring not walked yet) for the entry that
//! continues it, records a [`Gap`] and goes on; with no continuation the journal ends
//! there. A valid entry with a *newer* sequence number where the next one was expected
//! means the header is stale, which is corruption (open fails).
//!
//! A gap is either a torn write of the crash (entries in flight together complete in any
//! order, so a later one may have landed) or damage at rest of an entry that had been
//! durable. Only the second may be skipped: a torn entry's successors were never durable
//! either, and applying them without it could expose half an update. The rule, for a gap
//! at sequence number `s`:
//!
//! | evidence on disk | meaning | replay |
//! |---|---|---|
//! | nothing valid continues the chain (only zeros, or entries of an older session or sequence) | torn tail | the journal ends at `s` (no log line: the normal result of a crash); but if the clean-shutdown end or the session start is `> s`, open fails: durable entries are lost and nothing names their objects |
//! | the header was written at a clean shutdown with end sequence `> s` | `s` was durable: corruption | ERROR; keep what follows |
//! | the header's session start sequence `> s` (the last open replayed `s` and fsynced) | corruption | ERROR; keep what follows |
//! | a valid later entry says "durable below" `> s` (it was appended after an fsync covering `s`) | corruption | ERROR; keep what follows |
//! | valid later entries, but none of the above | torn write among writes in flight, or damage to an entry whose fsync no later entry saw (the last sync before a kill or power loss): cannot tell | WARN with the count of valid entries dropped; the journal ends at `s` |
//!
//! The proofs are checked in this order; the first gap without one ends the journal, so
//! every gap replay skips or keeps is proven corruption.
//!
//! For corruption: an unreadable entry is lost; the next entry names its object and
//! version ("previous entry" field), which is marked damaged ([`super::damage`]). An
//! unreadable run of more than one entry, or one whose object nothing names, cannot be
//! attributed: open fails. An entry whose header is intact but whose data fails its
//! checksums is kept with those checksums (reads of those sectors fail) and its object is
//! marked damaged. Redirected writes whose block fails its checksums follow the same rule
//! (checked after the walk, see `verify_big_writes`).

use super::bitmap::bitmap_bytes;
use super::disk::Disk;
use super::error::BlockstoreError;
use super::journal_format::{EntryHeader, EntryKind, JournalHeader, FLAG_DELETED, NO_BLOCK};
use super::layout::SECTOR;
use super::store::Blockstore;
use vitastor_proto::ObjectId;

/// Longest run of unreadable entries the walk looks past.
pub(super) const LOST_RUN_MAX: u64 = 16;
/// At most this many gaps are recorded; the walk ends at the next one (a journal this
/// damaged is better rebuilt from peers).
pub(super) const GAPS_MAX: usize = 64;

pub(super) enum Stop {
    /// End of the journal (torn, stale or empty space).
    End,
    /// A valid entry newer than expected: the start we replay from is stale.
    Overwritten(u64),
}

/// Where the chain of entries broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Gap {
    /// Sequence number of the first entry that cannot be used as it stands.
    pub seq: u64,
    /// Entries missing from `seq` on; 0 = the entry is there but its data is bad.
    pub lost: u64,
    /// Index in the walked entries of the entry after the missing ones (for bad data: of
    /// the entry itself).
    pub index: usize,
    /// Ring position and bytes of the missing entries (they keep their place in the ring
    /// until the journal start passes them); unused for bad data.
    pub pos: u64,
    pub bytes: u64,
    /// Object and version of the last missing entry (or of the bad-data entry), if known.
    pub object: Option<(ObjectId, u64)>,
}

/// What the walk found.
pub(super) struct Walk {
    pub entries: Vec<(EntryHeader, u64)>,
    pub gaps: Vec<Gap>,
    /// Ring position where the walk stopped.
    pub stop_pos: u64,
}

/// Why a gap at some sequence number is damage at rest and not a torn write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Proof {
    CleanShutdown,
    /// The last open replayed it and made that durable.
    EarlierSession,
    /// The entry with this sequence number was appended after an fsync that covered it.
    LaterEntry(u64),
}

/// The rule of the module table: whether the gap at `seq` was durable. `claims` are the
/// (seq, durable below) of the valid entries walked.
pub(super) fn durability_proof(
    header: &JournalHeader,
    seq: u64,
    claims: &[(u64, u64)],
) -> Option<Proof> {
    if header.clean_end_seq > seq {
        return Some(Proof::CleanShutdown);
    }
    if header.session_start_seq > seq {
        return Some(Proof::EarlierSession);
    }
    claims
        .iter()
        .find(|(later, durable_below)| *later > seq && *durable_below > seq)
        .map(|(later, _)| Proof::LaterEntry(*later))
}

impl<D: Disk> Blockstore<D> {
    /// Checks one entry at `pos` in the mirror; the flag says whether its data (small
    /// writes) matches its checksums.
    fn parse_entry_at(
        &self,
        pos: u64,
        expected_seq: u64,
        min_session: u64,
    ) -> Result<(EntryHeader, bool), Stop> {
        if pos + SECTOR > self.journal.size {
            return Err(Stop::End);
        }
        let sectors = self.sb.sectors_per_block();
        let entry = EntryHeader::decode(
            self.journal.slice(pos, SECTOR),
            self.sb.format_id,
            bitmap_bytes(sectors),
        )
        .ok_or(Stop::End)?;
        if entry.seq != expected_seq {
            return Err(
                if entry.seq > expected_seq && entry.session >= min_session {
                    Stop::Overwritten(entry.seq)
                } else {
                    Stop::End
                },
            );
        }
        if entry.session < min_session
            || pos + entry.entry_bytes() > self.journal.size
            || !self.entry_is_consistent(&entry)
        {
            return Err(Stop::End);
        }
        let mut intact = true;
        if entry.kind == EntryKind::SmallWrite {
            let granularity = u64::from(self.sb.bitmap_granularity);
            let data = self.journal.slice(pos + SECTOR, u64::from(entry.len));
            intact = data
                .chunks(granularity as usize)
                .zip(&entry.csums)
                .all(|(piece, csum)| crc32c::crc32c(piece) == *csum);
        }
        Ok((entry, intact))
    }

    /// Field sanity of a sealed entry, so replay never indexes out of range.
    pub(super) fn entry_is_consistent(&self, e: &EntryHeader) -> bool {
        let granularity = self.sb.bitmap_granularity;
        let sectors = self.sb.sectors_per_block() as usize;
        let blocks = self.sb.block_count;
        let range_ok = e.len > 0
            && e.offset.is_multiple_of(granularity)
            && e.len.is_multiple_of(granularity)
            && u64::from(e.offset) + u64::from(e.len) <= u64::from(self.sb.block_size)
            && e.csums.len() == (e.len / granularity) as usize;
        match e.kind {
            EntryKind::SmallWrite => {
                range_ok && u64::from(e.data_sectors) * SECTOR == u64::from(e.len)
            }
            EntryKind::BigWrite => range_ok && e.data_sectors == 0 && u64::from(e.block) < blocks,
            EntryKind::Flush => {
                let deleted = e.flags & FLAG_DELETED != 0;
                e.data_sectors == 0
                    && (e.old_block == NO_BLOCK || u64::from(e.old_block) < blocks)
                    && ((deleted && e.block == NO_BLOCK)
                        || (u64::from(e.block) < blocks && e.csums.len() == sectors))
            }
            EntryKind::Purge => {
                e.data_sectors == 0 && (e.block == NO_BLOCK || u64::from(e.block) < blocks)
            }
            EntryKind::Stabilize | EntryKind::Rollback | EntryKind::Delete => e.data_sectors == 0,
        }
    }

    /// The smallest session an entry with sequence number `seq` may carry after one of
    /// session `previous`: from where the newest session began, its entries must carry it
    /// (an older session's entry there was not replayed when that session began, and a
    /// later torn write over the same sector may have completed it since).
    fn min_session(header: &JournalHeader, seq: u64, previous: u64) -> u64 {
        if header.session_start_seq != 0 && seq >= header.session_start_seq {
            previous.max(header.session)
        } else {
            previous
        }
    }

    /// After a break at `pos` (where `expected` should have been): the valid entry with
    /// the smallest sequence number in `expected+1 ..= expected+LOST_RUN_MAX` within the
    /// next `budget` bytes of the ring, and its position.
    fn find_continuation(
        &self,
        header: &JournalHeader,
        pos: u64,
        expected: u64,
        previous_session: u64,
        budget: u64,
    ) -> Option<(EntryHeader, bool, u64)> {
        let bitmap_len = bitmap_bytes(self.sb.sectors_per_block());
        let mut best: Option<(EntryHeader, bool, u64)> = None;
        for k in 1..budget / SECTOR {
            let at = (pos + k * SECTOR) % self.journal.size;
            let Some(found) = EntryHeader::decode(
                self.journal.slice(at, SECTOR),
                self.sb.format_id,
                bitmap_len,
            ) else {
                continue;
            };
            let in_range = found.seq > expected && found.seq <= expected + LOST_RUN_MAX;
            if !in_range || best.as_ref().is_some_and(|(b, _, _)| b.seq <= found.seq) {
                continue;
            }
            let min_session = Self::min_session(header, found.seq, previous_session);
            if let Ok((entry, intact)) = self.parse_entry_at(at, found.seq, min_session) {
                let next = entry.seq == expected + 1;
                best = Some((entry, intact, at));
                if next {
                    break;
                }
            }
        }
        best
    }

    /// Walks the ring from the header's start (see the module table).
    pub(super) fn walk_journal(&self, header: &JournalHeader) -> Result<Walk, BlockstoreError> {
        let size = self.journal.size;
        let mut walk = Walk {
            entries: Vec::new(),
            gaps: Vec::new(),
            stop_pos: header.start_pos,
        };
        let mut pos = header.start_pos;
        let mut expected = header.start_seq;
        let mut session = 0;
        let mut consumed = 0;
        while consumed < size {
            let min_session = Self::min_session(header, expected, session);
            let found = match self.parse_entry_at(pos, expected, min_session) {
                Ok((entry, intact)) => Ok((entry, intact, pos)),
                // An entry that did not fit in the tail of the ring starts at 0.
                Err(stop) => match (pos != 0)
                    .then(|| self.parse_entry_at(0, expected, min_session).ok())
                    .flatten()
                {
                    Some((entry, intact)) => Ok((entry, intact, 0)),
                    None => Err(stop),
                },
            };
            let (entry, intact, at, lost) = match found {
                Ok((entry, intact, at)) => (entry, intact, at, 0),
                Err(Stop::Overwritten(seq)) => {
                    return Err(BlockstoreError::Corrupted {
                        what: "journal",
                        detail: format!(
                            "expected entry {expected} at ring position {pos} but found newer entry {seq}: the journal header is stale or damaged"
                        ),
                    })
                }
                Err(Stop::End) => {
                    if walk.gaps.len() >= GAPS_MAX {
                        break;
                    }
                    let budget = size - consumed;
                    let Some((entry, intact, at)) =
                        self.find_continuation(header, pos, expected, session, budget)
                    else {
                        break;
                    };
                    let lost = entry.seq - expected;
                    (entry, intact, at, lost)
                }
            };
            let skipped = (at + size - pos) % size;
            if consumed + skipped + entry.entry_bytes() > size {
                break;
            }
            consumed += skipped + entry.entry_bytes();
            if lost > 0 {
                assert!(skipped > 0, "invariant: a lost entry takes ring space");
                walk.gaps.push(Gap {
                    seq: expected,
                    lost,
                    index: walk.entries.len(),
                    pos,
                    bytes: skipped,
                    object: entry.prev,
                });
            }
            if !intact {
                walk.gaps.push(Gap {
                    seq: entry.seq,
                    lost: 0,
                    index: walk.entries.len(),
                    pos: at,
                    bytes: 0,
                    object: Some((entry.oid, entry.version)),
                });
            }
            session = entry.session;
            expected = entry.seq + 1;
            pos = (at + entry.entry_bytes()) % size;
            walk.entries.push((entry, at));
        }
        walk.stop_pos = pos;
        Ok(walk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(clean_end_seq: u64, session_start_seq: u64) -> JournalHeader {
        JournalHeader {
            generation: 1,
            start_pos: 0,
            start_seq: 10,
            clean_end_seq,
            session: 3,
            session_start_seq,
        }
    }

    /// One case per row of the module table.
    #[test]
    fn durability_proof_follows_the_table() {
        // Later entries 21 and 22 were appended before any fsync covered 20.
        let unsynced = [(21, 15), (22, 15)];
        assert_eq!(durability_proof(&header(0, 12), 20, &unsynced), None);
        assert_eq!(durability_proof(&header(0, 12), 20, &[]), None);
        assert_eq!(
            durability_proof(&header(23, 12), 20, &unsynced),
            Some(Proof::CleanShutdown)
        );
        assert_eq!(
            durability_proof(&header(0, 21), 20, &unsynced),
            Some(Proof::EarlierSession)
        );
        let synced = [(21, 15), (22, 21)];
        assert_eq!(
            durability_proof(&header(0, 12), 20, &synced),
            Some(Proof::LaterEntry(22))
        );
        // A claim only counts from a later entry, and only above the gap.
        assert_eq!(durability_proof(&header(0, 12), 20, &[(19, 30)]), None);
        assert_eq!(durability_proof(&header(0, 12), 20, &[(21, 20)]), None);
    }
}
