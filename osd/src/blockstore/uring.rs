//! The real disk driver: a file or block device opened with O_DIRECT and driven through
//! io_uring. Thin on purpose: all decisions live in the blockstore.
//!
//! Opening does not lock; a writer that must be the device's only user calls
//! [`UringDisk::lock_exclusive`] ([`super::device_lock`]) before its first write.

use super::device_lock::{self, DeviceLockError};
use super::disk::{Disk, IoCompletion, IoKind, IoRequest};
use io_uring::{opcode, types, IoUring};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// Submission queue depth; more requests than this are submitted in several batches.
const RING_ENTRIES: u32 = 256;

pub struct UringDisk {
    ring: IoUring,
    /// Kept open for the ring, whose fixed file 0 refers to it (and for fallocate).
    file: File,
    size: u64,
    in_flight: usize,
    /// Entries pushed to the submission queue since the last `io_uring_enter`.
    unsubmitted: usize,
}

impl UringDisk {
    /// Opens `path` read-write with O_DIRECT. Fails clearly when the kernel has no io_uring
    /// or the filesystem does not support O_DIRECT.
    pub fn open(path: &Path) -> std::io::Result<UringDisk> {
        Self::open_with(path, true, Self::new_ring)
    }

    /// Opens `path` read-only with O_DIRECT, to inspect a device (possibly one an OSD is
    /// using) without any chance of writing it: writes fail with EBADF.
    pub fn open_read_only(path: &Path) -> std::io::Result<UringDisk> {
        Self::open_with(path, false, Self::new_ring)
    }

    /// Takes the exclusive lock that makes this process the only user of the device at
    /// `path` (this disk's file), until the disk is dropped or the process exits.
    pub fn lock_exclusive(&self, path: &Path) -> Result<(), DeviceLockError> {
        device_lock::lock_exclusive(&self.file, path)
    }

    /// Like [`UringDisk::open`], for a thread that also waits for other events (sockets):
    /// completions are posted as they happen and signalled on the returned eventfd, which
    /// the thread's reactor watches, calling [`Disk::poll`] when it becomes readable.
    pub fn open_with_eventfd(path: &Path) -> std::io::Result<(UringDisk, OwnedFd)> {
        let disk = Self::open_with(path, true, || IoUring::new(RING_ENTRIES))?;
        // SAFETY: eventfd takes no pointers; the returned descriptor is checked below and
        // then owned by the OwnedFd.
        let raw = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let event_fd = unsafe { OwnedFd::from_raw_fd(raw) };
        disk.ring.submitter().register_eventfd(raw)?;
        Ok((disk, event_fd))
    }

    fn open_with(
        path: &Path,
        writable: bool,
        new_ring: impl FnOnce() -> std::io::Result<IoUring>,
    ) -> std::io::Result<UringDisk> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(writable)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .map_err(|error| {
                std::io::Error::new(
                    error.kind(),
                    format!("cannot open {} with O_DIRECT: {error}", path.display()),
                )
            })?;
        let size = file.seek(SeekFrom::End(0))?;
        let ring = new_ring().map_err(|error| {
            std::io::Error::new(
                error.kind(),
                format!("io_uring is not available on this kernel: {error}"),
            )
        })?;
        ring.submitter().register_files(&[file.as_raw_fd()])?;
        Ok(UringDisk {
            ring,
            file,
            size,
            in_flight: 0,
            unsubmitted: 0,
        })
    }

    /// A ring for one thread: completions are delivered when this thread waits for them
    /// (no interrupts to run task work elsewhere), which is what a single-threaded OSD
    /// wants. Kernels older than 6.1 lack these flags and get a plain ring.
    fn new_ring() -> std::io::Result<IoUring> {
        let tuned = IoUring::builder()
            .setup_coop_taskrun()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(RING_ENTRIES);
        match tuned {
            Ok(ring) => Ok(ring),
            Err(_) => IoUring::new(RING_ENTRIES),
        }
    }

    fn reap(&mut self, out: &mut Vec<IoCompletion>) {
        for cqe in self.ring.completion() {
            self.in_flight -= 1;
            out.push(IoCompletion {
                tag: cqe.user_data(),
                result: cqe.result(),
            });
        }
    }
}

impl Drop for UringDisk {
    /// Hands the file back to the kernel now rather than when the ring is torn down
    /// (asynchronously, after the process may have exited), so the device lock is free
    /// as soon as its owner is gone. With requests in flight the ring keeps the file until
    /// they end.
    fn drop(&mut self) {
        if self.in_flight == 0 {
            let _ = self.ring.submitter().unregister_files();
        }
    }
}

impl Disk for UringDisk {
    fn size(&self) -> u64 {
        self.size
    }

    unsafe fn submit(&mut self, req: IoRequest) {
        // The file is registered with the ring as fixed file 0 (saves a lookup per op).
        let fd = types::Fixed(0);
        let entry = match req.kind {
            IoKind::Read => opcode::Read::new(fd, req.buf, req.len as u32)
                .offset(req.offset)
                .build(),
            IoKind::Write => opcode::Write::new(fd, req.buf, req.len as u32)
                .offset(req.offset)
                .build(),
            IoKind::Fsync => opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
        }
        .user_data(req.tag);
        loop {
            // SAFETY: the caller guarantees the buffer outlives the request (Disk::submit).
            let pushed = unsafe { self.ring.submission().push(&entry) };
            if pushed.is_ok() {
                break;
            }
            // The submission queue is full: hand what is queued to the kernel and retry.
            match self.ring.submit() {
                Ok(_) => self.unsubmitted = 0,
                Err(error) => tracing::error!("io_uring submit failed: {error}"),
            }
        }
        self.in_flight += 1;
        self.unsubmitted += 1;
    }

    fn poll(&mut self, min_complete: usize, out: &mut Vec<IoCompletion>) -> std::io::Result<()> {
        let before = out.len();
        self.reap(out);
        let still_needed = min_complete
            .saturating_sub(out.len() - before)
            .min(self.in_flight);
        loop {
            match self.ring.submit_and_wait(still_needed) {
                Ok(_) => {
                    self.unsubmitted = 0;
                    break;
                }
                Err(error) if error.raw_os_error() == Some(libc::EINTR) => continue,
                Err(error) if error.raw_os_error() == Some(libc::EBUSY) => {
                    self.reap(out);
                    continue;
                }
                Err(error) => return Err(error),
            }
        }
        self.reap(out);
        Ok(())
    }

    fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn unsubmitted(&self) -> usize {
        self.unsubmitted
    }

    fn zero_range(&mut self, offset: u64, len: u64) -> std::io::Result<bool> {
        let fd = self.file.as_raw_fd();
        let metadata = self.file.metadata()?;
        if metadata.file_type().is_file() {
            // A hole reads as zeros; KEEP_SIZE leaves the file size alone.
            let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
            // SAFETY: fallocate on our own open descriptor; no memory is passed.
            let done =
                unsafe { libc::fallocate(fd, mode, offset as libc::off_t, len as libc::off_t) }
                    == 0;
            return Ok(done);
        }
        // Block device: BLKZEROOUT (uses WRITE ZEROES when the device has it).
        const BLKZEROOUT: libc::c_ulong = 0x127f;
        let range: [u64; 2] = [offset, len];
        // SAFETY: BLKZEROOUT reads a {start, length} pair of u64 from the pointer we pass,
        // which points to such an array that lives across the call.
        let done = unsafe { libc::ioctl(fd, BLKZEROOUT, range.as_ptr()) } == 0;
        Ok(done)
    }
}
