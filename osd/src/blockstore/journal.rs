//! The journal ring in memory: which part of the on-disk ring is in use, where the next
//! entry goes, and an exact copy of the ring's contents (the "mirror").
//!
//! Entries are appended at `next_pos` and never straddle the end of the ring: an entry that
//! does not fit in the tail starts again at position 0 (replay then finds the expected
//! sequence number at 0). Space is given back only when the journal start moves, which
//! happens after the flusher has made everything before the new start durable elsewhere.
//! The mirror means small-write data is read from memory, and entries are written to disk
//! straight from it.

use super::aligned::AlignedBuf;
use super::layout::SECTOR;
use std::collections::VecDeque;

/// Who is appending: stabilize and rollback may use the reserve, because they are what
/// releases versions that pin the journal start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryClass {
    /// Writes and deletes.
    Regular,
    /// Stabilize and rollback.
    Unpin,
}

pub struct JournalRing {
    pub mirror: AlignedBuf,
    /// Disk offset of ring position 0.
    pub disk_offset: u64,
    pub size: u64,
    pub start_pos: u64,
    pub start_seq: u64,
    pub next_pos: u64,
    pub next_seq: u64,
    used: u64,
    /// (seq, position) of every entry from the start, in order.
    entries: VecDeque<(u64, u64)>,
    /// Bytes only stabilize/rollback may use.
    pub reserve_bytes: u64,
    pub header_generation: u64,
    pub session: u64,
    /// The sequence number this session's first entry gets (see `JournalHeader`).
    pub session_start_seq: u64,
    /// (object, version) of the newest entry appended or replayed; the next entry names it
    /// so that replay can tell which object an unreadable entry belonged to.
    pub last_appended: Option<(vitastor_proto::ObjectId, u64)>,
}

impl JournalRing {
    pub fn new(disk_offset: u64, size: u64) -> JournalRing {
        let reserve_bytes = (size / 8 / SECTOR).clamp(2, 64) * SECTOR;
        JournalRing {
            mirror: AlignedBuf::new(size as usize),
            disk_offset,
            size,
            start_pos: 0,
            start_seq: 1,
            next_pos: 0,
            next_seq: 1,
            used: 0,
            entries: VecDeque::new(),
            reserve_bytes,
            header_generation: 0,
            session: 1,
            session_start_seq: 0,
            last_appended: None,
        }
    }

    /// Free bytes each class of entry must leave behind.
    fn kept_free(&self, class: EntryClass) -> u64 {
        match class {
            EntryClass::Regular => self.reserve_bytes,
            EntryClass::Unpin => 0,
        }
    }

    /// Restores the state found by replay: entries `(seq, pos, bytes)` from the start on.
    /// Replay may have skipped a corrupted entry: the bytes between two entries count as
    /// used (they stay in the ring until the start passes them).
    pub fn restore(&mut self, start_pos: u64, start_seq: u64, entries: Vec<(u64, u64, u64)>) {
        self.start_pos = start_pos;
        self.start_seq = start_seq;
        self.next_pos = start_pos;
        self.next_seq = start_seq;
        self.used = 0;
        self.entries.clear();
        for (seq, pos, bytes) in entries {
            assert!(seq >= self.next_seq, "invariant: replayed entries in order");
            if pos < self.next_pos {
                self.used += self.size - self.next_pos + pos;
            } else {
                self.used += pos - self.next_pos;
            }
            self.entries.push_back((seq, pos));
            self.used += bytes;
            self.next_pos = (pos + bytes) % self.size;
            self.next_seq = seq + 1;
        }
        assert!(
            self.used <= self.size,
            "invariant: restored entries fit the ring"
        );
        if self.entries.is_empty() {
            self.start_seq = self.next_seq;
        }
    }

    pub fn used_bytes(&self) -> u64 {
        self.used
    }

    pub fn free_bytes(&self) -> u64 {
        self.size - self.used
    }

    /// Whether an entry of `bytes` would fit now.
    pub fn fits(&self, bytes: u64, class: EntryClass) -> bool {
        let skip = if self.next_pos + bytes > self.size {
            self.size - self.next_pos
        } else {
            0
        };
        self.used + skip + bytes + self.kept_free(class) <= self.size
    }

    /// Appends an entry of `bytes`; returns `(seq, pos)` or `None` when the ring is full.
    pub fn append(&mut self, bytes: u64, class: EntryClass) -> Option<(u64, u64)> {
        if !self.fits(bytes, class) {
            return None;
        }
        let mut pos = self.next_pos;
        if pos + bytes > self.size {
            self.used += self.size - pos;
            pos = 0;
        }
        self.used += bytes;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.next_pos = (pos + bytes) % self.size;
        self.entries.push_back((seq, pos));
        Some((seq, pos))
    }

    /// Where the journal would start if everything before `seq` were dropped.
    pub fn position_of(&self, seq: u64) -> u64 {
        self.entries
            .iter()
            .find(|(s, _)| *s >= seq)
            .map_or(self.next_pos, |(_, pos)| *pos)
    }

    /// Drops every entry before `new_start_seq` (already durable elsewhere).
    pub fn trim(&mut self, new_start_seq: u64) {
        while self
            .entries
            .front()
            .is_some_and(|(seq, _)| *seq < new_start_seq)
        {
            self.entries.pop_front();
        }
        match self.entries.front() {
            None => {
                self.start_pos = self.next_pos;
                self.start_seq = self.next_seq;
                self.used = 0;
            }
            Some(&(seq, pos)) => {
                self.start_pos = pos;
                self.start_seq = seq;
                self.used = if self.next_pos > pos {
                    self.next_pos - pos
                } else {
                    self.size - pos + self.next_pos
                };
            }
        }
    }

    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    pub fn slice_mut(&mut self, pos: u64, bytes: u64) -> &mut [u8] {
        &mut self.mirror[pos as usize..(pos + bytes) as usize]
    }

    pub fn slice(&self, pos: u64, bytes: u64) -> &[u8] {
        &self.mirror[pos as usize..(pos + bytes) as usize]
    }

    pub fn ptr_at(&mut self, pos: u64) -> *mut u8 {
        // SAFETY: pos is inside the mirror (callers pass positions returned by append).
        unsafe { self.mirror.as_mut_ptr().add(pos as usize) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_wrap_and_trim() {
        let mut ring = JournalRing::new(8192, 16 * SECTOR);
        ring.reserve_bytes = SECTOR;
        let (s1, p1) = ring.append(4 * SECTOR, EntryClass::Regular).unwrap();
        let (s2, p2) = ring.append(8 * SECTOR, EntryClass::Regular).unwrap();
        assert_eq!((s1, p1, s2, p2), (1, 0, 2, 4 * SECTOR));
        assert!(
            ring.append(4 * SECTOR, EntryClass::Regular).is_none(),
            "the reserve is kept"
        );
        assert!(ring.fits(4 * SECTOR, EntryClass::Unpin));
        ring.trim(2);
        assert_eq!(
            (ring.start_pos, ring.start_seq, ring.used_bytes()),
            (4 * SECTOR, 2, 8 * SECTOR)
        );
        // 4 sectors left at the end, 4 free at the beginning: a 6-sector entry wraps to 0.
        assert!(ring.append(6 * SECTOR, EntryClass::Unpin).is_none());
        let (s3, p3) = ring.append(4 * SECTOR, EntryClass::Unpin).unwrap();
        assert_eq!((s3, p3), (3, 12 * SECTOR));
        let (s4, p4) = ring.append(2 * SECTOR, EntryClass::Regular).unwrap();
        assert_eq!((s4, p4), (4, 0));
        ring.trim(5);
        assert_eq!(
            (ring.used_bytes(), ring.start_pos, ring.start_seq),
            (0, 2 * SECTOR, 5)
        );
    }
}
