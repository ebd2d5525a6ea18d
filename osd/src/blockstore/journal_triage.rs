//! Deciding, gap by gap, what replay keeps (the rule is the table in
//! [`super::journal_walk`]): the first gap nothing proves durable is a torn write and ends
//! the journal; every gap before it is corruption, reported as an ERROR with counts, and
//! what it lost is marked damaged when the entries are applied.

use super::journal_format::{EntryHeader, JournalHeader};
use super::journal_walk::{durability_proof, Gap, Proof, Walk};
use super::BlockstoreError;
use std::collections::{BTreeSet, HashSet};
use vitastor_proto::ObjectId;

/// An unreadable entry that had been durable: its object loses that version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LostEntry {
    pub seq: u64,
    pub oid: ObjectId,
    pub version: u64,
    /// Its place in the ring (kept until the journal start passes it, so the next replay
    /// finds the damage again).
    pub pos: u64,
    pub bytes: u64,
}

/// The entries replay applies, and the corruption it found among them.
pub(super) struct Triage {
    pub entries: Vec<(EntryHeader, u64)>,
    pub lost: Vec<LostEntry>,
    /// Sequence numbers of kept entries whose data fails its checksums.
    pub bad_data: BTreeSet<u64>,
    /// Where the walk stopped (for error messages).
    pub stop_pos: u64,
    /// (seq, durable below) of every entry walked, dropped ones included: a valid entry's
    /// claim holds whether or not replay applies it.
    claims: Vec<(u64, u64)>,
}

impl Triage {
    /// Applies the rule to the gaps of the walk.
    pub fn new(header: &JournalHeader, walk: Walk) -> Result<Triage, BlockstoreError> {
        let claims = walk
            .entries
            .iter()
            .map(|(e, _)| (e.seq, e.durable_below))
            .collect();
        let mut triage = Triage {
            claims,
            entries: walk.entries,
            lost: Vec::new(),
            bad_data: BTreeSet::new(),
            stop_pos: walk.stop_pos,
        };
        for gap in &walk.gaps {
            let Some(proof) = durability_proof(header, gap.seq, &triage.claims) else {
                triage.cut(gap.seq, gap.index, "is torn or damaged");
                break;
            };
            triage.accept(gap, proof)?;
        }
        Ok(triage)
    }

    /// Records a proven gap as corruption.
    fn accept(&mut self, gap: &Gap, proof: Proof) -> Result<(), BlockstoreError> {
        if gap.lost == 0 {
            tracing::error!(seq = gap.seq, object = ?gap.object, ?proof, "journal entry data fails its checksums although it was durable: corruption; kept, object marked damaged");
            self.bad_data.insert(gap.seq);
            return Ok(());
        }
        let last = gap.seq + gap.lost - 1;
        match gap.object {
            Some((oid, version)) if gap.lost == 1 => {
                tracing::error!(seq = gap.seq, %oid, version, ?proof, "journal entry is unreadable although it was durable: corruption; skipped, later entries kept, object marked damaged");
                self.lost.push(LostEntry {
                    seq: gap.seq,
                    oid,
                    version,
                    pos: gap.pos,
                    bytes: gap.bytes,
                });
                Ok(())
            }
            _ => Err(BlockstoreError::Corrupted {
                what: "journal",
                detail: format!(
                    "entries {}..={last} at ring position {} are unreadable although they were durable ({proof:?}), and nothing names their objects",
                    gap.seq, gap.pos
                ),
            }),
        }
    }

    /// Ends the journal at sequence number `seq` (entry index `index`): a torn write.
    fn cut(&mut self, seq: u64, index: usize, what: &str) {
        let dropped = &self.entries[index..];
        if !dropped.is_empty() {
            let objects: HashSet<ObjectId> = dropped.iter().map(|(e, _)| e.oid).collect();
            tracing::warn!(
                seq,
                dropped_entries = dropped.len(),
                dropped_objects = objects.len(),
                "journal entry {what} and nothing proves it was durable (a write in flight at the crash?): replay ends there and drops the valid entries after it"
            );
        }
        self.entries.truncate(index);
        self.lost.retain(|l| l.seq < seq);
        self.bad_data.retain(|s| *s < seq);
    }

    /// Applies the rule to redirected writes whose block fails its checksums (`bad`:
    /// indices into `entries`, ascending).
    pub fn big_writes(&mut self, header: &JournalHeader, bad: &[usize]) {
        for &index in bad {
            let seq = self.entries[index].0.seq;
            match durability_proof(header, seq, &self.claims) {
                Some(proof) => {
                    let (entry, _) = &self.entries[index];
                    tracing::error!(seq, oid = %entry.oid, version = entry.version, ?proof, "redirected write's block fails its checksums although it was durable: corruption; kept, object marked damaged");
                    self.bad_data.insert(seq);
                }
                None => {
                    self.cut(
                        seq,
                        index,
                        "(a redirected write) did not fully reach the disk",
                    );
                    return;
                }
            }
        }
    }

    /// One ERROR line with the counts, if anything was corrupted.
    pub fn report(&self) {
        if self.lost.is_empty() && self.bad_data.is_empty() {
            return;
        }
        let objects: HashSet<ObjectId> = self
            .lost
            .iter()
            .map(|l| l.oid)
            .chain(
                self.entries
                    .iter()
                    .filter(|(e, _)| self.bad_data.contains(&e.seq))
                    .map(|(e, _)| e.oid),
            )
            .collect();
        tracing::error!(
            entries_skipped = self.lost.len(),
            entries_with_bad_data = self.bad_data.len(),
            objects_affected = objects.len(),
            entries_kept = self.entries.len(),
            "journal corruption found at open: damaged objects are marked for recovery from peers"
        );
    }

    /// Sequence number after the last entry (or `start_seq` if there is none).
    pub fn end_seq(&self, start_seq: u64) -> u64 {
        self.entries.last().map_or(start_seq, |(e, _)| e.seq + 1)
    }

    /// (seq, ring position, bytes) of everything that stays in the ring, in order.
    pub fn ring_positions(&self) -> Vec<(u64, u64, u64)> {
        let mut positions: Vec<(u64, u64, u64)> = self
            .entries
            .iter()
            .map(|(e, pos)| (e.seq, *pos, e.entry_bytes()))
            .chain(self.lost.iter().map(|l| (l.seq, l.pos, l.bytes)))
            .collect();
        positions.sort_unstable();
        positions
    }
}
