//! A simulated disk for tests: in memory, seeded, and able to fail the way disks do.
//!
//! It keeps two images: `current` (what reads see) and `durable` (what survives power
//! loss). A write lands in `current` when it completes and in `durable` only when an fsync
//! submitted after its completion completes. [`SimDisk::crash`] builds the disk a reboot
//! would find: the durable image plus, for every write not yet covered by an fsync, one of
//! "lost", "landed" or "torn" (only some 512-byte pieces landed), chosen by the seed.
//! [`SimDisk::flip_bit`] corrupts data at rest.
//!
//! Reads copy their data at submission and writes snapshot theirs, so the simulator never
//! touches caller memory after `submit` returns; completions are handed out in a seeded
//! random order to exercise the blockstore's handling of reordering.

use super::disk::{Disk, IoCompletion, IoKind, IoRequest};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Granularity at which a crash may tear a write.
pub const TEAR_UNIT: usize = 512;

struct Pending {
    tag: u64,
    kind: IoKind,
    offset: u64,
    data: Vec<u8>,
    result: i32,
    /// For fsync: writes with a completion number below this are covered.
    covers_below: u64,
}

struct Unsynced {
    completion_no: u64,
    offset: u64,
    data: Vec<u8>,
}

/// Counters of what the simulated disk was asked to do.
#[derive(Debug, Default, Clone, Copy)]
pub struct SimStats {
    pub reads: u64,
    pub writes: u64,
    pub fsyncs: u64,
}

pub struct SimDisk {
    current: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<Pending>,
    unsynced: Vec<Unsynced>,
    writes_completed: u64,
    /// Requests submitted since the last poll: the device starts them (and can complete
    /// them) only when polled, as io_uring does with its submission queue.
    unsubmitted: usize,
    rng: SmallRng,
    /// Complete requests in random order (true) or in submission order.
    pub reorder: bool,
    /// Writes at or beyond this offset fail with -EIO (fault injection); u64::MAX = off.
    pub fail_writes_from: u64,
    /// Every fsync fails with -EIO (fault injection).
    pub fail_fsyncs: bool,
    pub stats: SimStats,
}

impl SimDisk {
    pub fn new(size: u64, seed: u64) -> SimDisk {
        let image = vec![0u8; size as usize];
        SimDisk::from_image(image, seed)
    }

    fn from_image(image: Vec<u8>, seed: u64) -> SimDisk {
        SimDisk {
            current: image.clone(),
            durable: image,
            pending: Vec::new(),
            unsynced: Vec::new(),
            writes_completed: 0,
            unsubmitted: 0,
            rng: SmallRng::seed_from_u64(seed),
            reorder: true,
            fail_writes_from: u64::MAX,
            fail_fsyncs: false,
            stats: SimStats::default(),
        }
    }

    /// The disk as it would be found after a power loss now. Consumes the simulator, so
    /// requests still in flight are abandoned (their memory is never touched again).
    pub fn crash(mut self, seed: u64) -> SimDisk {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut image = std::mem::take(&mut self.durable);
        let in_flight_writes = self
            .pending
            .drain(..)
            .filter(|p| p.kind == IoKind::Write && p.result >= 0)
            .map(|p| (p.offset, p.data));
        let unsynced = self.unsynced.drain(..).map(|u| (u.offset, u.data));
        for (offset, data) in unsynced.chain(in_flight_writes) {
            match rng.gen_range(0..3) {
                0 => {}
                1 => image[offset as usize..offset as usize + data.len()].copy_from_slice(&data),
                _ => {
                    for (i, piece) in data.chunks(TEAR_UNIT).enumerate() {
                        if rng.gen_bool(0.5) {
                            let at = offset as usize + i * TEAR_UNIT;
                            image[at..at + piece.len()].copy_from_slice(piece);
                        }
                    }
                }
            }
        }
        SimDisk::from_image(image, seed ^ 0x5eed)
    }

    /// A clean shutdown image: everything completed is kept (as if fsynced).
    pub fn reopen(mut self, seed: u64) -> SimDisk {
        assert!(
            self.pending.is_empty(),
            "invariant: reopen only after all I/O completed"
        );
        SimDisk::from_image(std::mem::take(&mut self.current), seed)
    }

    /// An independent copy of what reads see now (for inspecting a disk without touching it).
    pub fn snapshot(&self, seed: u64) -> SimDisk {
        SimDisk::from_image(self.current.clone(), seed)
    }

    /// Flips one bit at rest (in both images), as media corruption would.
    pub fn flip_bit(&mut self, offset: u64, bit: u8) {
        self.current[offset as usize] ^= 1 << (bit % 8);
        self.durable[offset as usize] ^= 1 << (bit % 8);
    }

    /// The bytes reads would see now.
    pub fn contents(&self) -> &[u8] {
        &self.current
    }

    fn complete(&mut self, index: usize, out: &mut Vec<IoCompletion>) {
        let pending = if self.reorder {
            self.pending.swap_remove(index)
        } else {
            self.pending.remove(index)
        };
        match pending.kind {
            IoKind::Read => {}
            IoKind::Write => {
                if pending.result >= 0 {
                    let at = pending.offset as usize;
                    self.current[at..at + pending.data.len()].copy_from_slice(&pending.data);
                    self.unsynced.push(Unsynced {
                        completion_no: self.writes_completed,
                        offset: pending.offset,
                        data: pending.data,
                    });
                    self.writes_completed += 1;
                }
            }
            IoKind::Fsync => {
                let covers = pending.covers_below;
                let durable = &mut self.durable;
                self.unsynced.retain(|u| {
                    if u.completion_no < covers {
                        let at = u.offset as usize;
                        durable[at..at + u.data.len()].copy_from_slice(&u.data);
                        false
                    } else {
                        true
                    }
                });
            }
        }
        out.push(IoCompletion {
            tag: pending.tag,
            result: pending.result,
        });
    }
}

impl Disk for SimDisk {
    fn size(&self) -> u64 {
        self.current.len() as u64
    }

    unsafe fn submit(&mut self, req: IoRequest) {
        let end = req.offset.checked_add(req.len as u64);
        let in_range = end.is_some_and(|end| end <= self.size());
        let mut pending = Pending {
            tag: req.tag,
            kind: req.kind,
            offset: req.offset,
            data: Vec::new(),
            result: 0,
            covers_below: 0,
        };
        match req.kind {
            IoKind::Read => {
                self.stats.reads += 1;
                if in_range {
                    let at = req.offset as usize;
                    // SAFETY: the caller guarantees buf..buf+len is valid and exclusively ours.
                    let target = unsafe { std::slice::from_raw_parts_mut(req.buf, req.len) };
                    target.copy_from_slice(&self.current[at..at + req.len]);
                    pending.result = req.len as i32;
                } else {
                    pending.result = -libc::EINVAL;
                }
            }
            IoKind::Write => {
                self.stats.writes += 1;
                if !in_range {
                    pending.result = -libc::EINVAL;
                } else if req.offset + req.len as u64 > self.fail_writes_from {
                    pending.result = -libc::EIO;
                } else {
                    // SAFETY: the caller guarantees buf..buf+len is valid until completion.
                    let source = unsafe { std::slice::from_raw_parts(req.buf, req.len) };
                    pending.data = source.to_vec();
                    pending.result = req.len as i32;
                }
            }
            IoKind::Fsync => {
                self.stats.fsyncs += 1;
                if self.fail_fsyncs {
                    pending.result = -libc::EIO;
                } else {
                    pending.covers_below = self.writes_completed;
                }
            }
        }
        self.pending.push(pending);
        self.unsubmitted += 1;
    }

    fn poll(&mut self, min_complete: usize, out: &mut Vec<IoCompletion>) -> std::io::Result<()> {
        self.unsubmitted = 0;
        if self.pending.is_empty() {
            return Ok(());
        }
        let count = if self.reorder {
            let at_least = min_complete.clamp(1, self.pending.len());
            self.rng.gen_range(at_least..=self.pending.len())
        } else {
            self.pending.len()
        };
        for _ in 0..count {
            let index = if self.reorder {
                self.rng.gen_range(0..self.pending.len())
            } else {
                0
            };
            self.complete(index, out);
        }
        Ok(())
    }

    fn in_flight(&self) -> usize {
        self.pending.len()
    }

    fn unsubmitted(&self) -> usize {
        self.unsubmitted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blockstore::aligned::AlignedBuf;

    fn io(disk: &mut SimDisk, kind: IoKind, offset: u64, buf: &mut AlignedBuf) -> i32 {
        // SAFETY: buf lives until the completion is reaped below.
        unsafe {
            disk.submit(IoRequest {
                tag: 1,
                kind,
                offset,
                buf: buf.as_mut_ptr(),
                len: buf.len(),
            })
        };
        let mut out = Vec::new();
        disk.poll(1, &mut out).unwrap();
        out[0].result
    }

    #[test]
    fn only_fsynced_writes_survive_a_lossy_crash() {
        let mut disk = SimDisk::new(1 << 16, 1);
        let mut data = AlignedBuf::from_slice(&[7u8; 4096]);
        assert_eq!(io(&mut disk, IoKind::Write, 0, &mut data), 4096);
        assert_eq!(io(&mut disk, IoKind::Fsync, 0, &mut AlignedBuf::new(0)), 0);
        let mut later = AlignedBuf::from_slice(&[9u8; 4096]);
        io(&mut disk, IoKind::Write, 4096, &mut later);
        let mut outcomes = std::collections::HashSet::new();
        for seed in 0..50 {
            let disk = SimDisk::from_image(disk.current.clone(), 0);
            let mut copy = disk;
            copy.durable = {
                let mut d = vec![0u8; 1 << 16];
                d[..4096].copy_from_slice(&[7u8; 4096]);
                d
            };
            copy.unsynced.push(Unsynced {
                completion_no: 9,
                offset: 4096,
                data: vec![9u8; 4096],
            });
            let crashed = copy.crash(seed);
            assert!(crashed.current[..4096].iter().all(|b| *b == 7));
            let second = &crashed.current[4096..8192];
            let pieces: Vec<u8> = second.chunks(TEAR_UNIT).map(|c| c[0]).collect();
            assert!(second
                .chunks(TEAR_UNIT)
                .all(|c| c.iter().all(|b| *b == c[0])));
            outcomes.insert(pieces.iter().filter(|b| **b == 9).count());
        }
        // Lost (0 pieces), landed (8) and torn (something in between) all happen.
        assert!(
            outcomes.contains(&0) && outcomes.contains(&8) && outcomes.len() > 2,
            "{outcomes:?}"
        );
    }

    #[test]
    fn out_of_range_and_injected_failures() {
        let mut disk = SimDisk::new(8192, 1);
        let mut buf = AlignedBuf::new(4096);
        assert_eq!(io(&mut disk, IoKind::Read, 8192, &mut buf), -libc::EINVAL);
        disk.fail_writes_from = 4096;
        assert_eq!(io(&mut disk, IoKind::Write, 4096, &mut buf), -libc::EIO);
        assert_eq!(io(&mut disk, IoKind::Write, 0, &mut buf), 4096);
    }
}
