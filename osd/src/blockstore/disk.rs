//! The seam between the blockstore and a disk: submit requests, reap completions.
//!
//! The blockstore drives every disk the same way from one thread: it submits reads, writes
//! and fsyncs tagged with a number, then polls for `(tag, result)` completions, which may
//! arrive in any order. [`super::uring::UringDisk`] does this with io_uring on a real file
//! or device; [`super::sim::SimDisk`] does it in memory and can crash, tear and flip bits.

/// What a request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoKind {
    Read,
    Write,
    /// Make every write completed before this request was submitted durable.
    Fsync,
}

/// One disk request. `buf`/`len` describe memory owned by the blockstore that stays valid
/// and untouched until the request's completion has been reaped.
#[derive(Debug, Clone, Copy)]
pub struct IoRequest {
    pub tag: u64,
    pub kind: IoKind,
    pub offset: u64,
    pub buf: *mut u8,
    pub len: usize,
}

/// A finished request: bytes transferred, or a negative errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoCompletion {
    pub tag: u64,
    pub result: i32,
}

/// A disk driven from a single thread.
pub trait Disk {
    /// Size of the device in bytes.
    fn size(&self) -> u64;

    /// Queues a request.
    ///
    /// # Safety
    /// `req.buf` must point to `req.len` bytes that stay valid, and are neither read nor
    /// written by anyone else, until the completion for `req.tag` has been returned by
    /// [`Disk::poll`] (for a read the disk writes into them; for a write it reads them).
    unsafe fn submit(&mut self, req: IoRequest);

    /// Sends queued requests to the device and appends finished ones to `out`, waiting
    /// until at least `min_complete` are available (0 = do not wait).
    fn poll(&mut self, min_complete: usize, out: &mut Vec<IoCompletion>) -> std::io::Result<()>;

    /// Requests submitted and not yet reaped.
    fn in_flight(&self) -> usize;

    /// Requests queued by [`Disk::submit`] that the device has not been handed yet (the
    /// next [`Disk::poll`] hands them over). The OSD polls only when the device signals a
    /// completion, so a request left here after a poll would wait for an unrelated event.
    fn unsubmitted(&self) -> usize;

    /// Makes `len` bytes at `offset` read as zeros without writing them, when the device
    /// can (a hole in a file, WRITE ZEROES on a block device). Only while nothing is in
    /// flight. `Ok(false)` means "not supported: write the zeros yourself".
    fn zero_range(&mut self, _offset: u64, _len: u64) -> std::io::Result<bool> {
        Ok(false)
    }
}
