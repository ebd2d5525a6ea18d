//! Page-aligned byte buffers, as O_DIRECT I/O requires.

use std::alloc::{alloc, alloc_zeroed, dealloc, Layout};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// Alignment of every I/O buffer and of every disk offset and length.
pub const IO_ALIGN: usize = 4096;

/// A zero-initialised heap buffer aligned to [`IO_ALIGN`]. Its address is stable for its
/// whole life, which is what lets the io_uring driver hand it to the kernel.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: AlignedBuf owns its allocation exclusively, like a Box<[u8]>.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes (rounded up to a whole number of pages for the
    /// allocation; `len()` is what was asked for).
    pub fn new(len: usize) -> AlignedBuf {
        if len == 0 {
            // Empty buffers (placeholders for moved-out data) allocate nothing.
            return AlignedBuf {
                ptr: NonNull::dangling(),
                len: 0,
            };
        }
        let layout = Self::layout(len);
        // SAFETY: the layout has a non-zero size (at least IO_ALIGN) and a valid alignment.
        let raw = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        AlignedBuf { ptr, len }
    }

    /// A copy of `data`. Not zeroed first: every byte is written once (the payload
    /// copy is on every write's path; zeroing it first cost as much as the copy).
    pub fn from_slice(data: &[u8]) -> AlignedBuf {
        if data.is_empty() {
            return AlignedBuf::new(0);
        }
        let layout = Self::layout(data.len());
        // SAFETY: the layout has a non-zero size (at least IO_ALIGN) and a valid alignment.
        let raw = unsafe { alloc(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        // SAFETY: the allocation holds layout.size() >= data.len() bytes that nothing else
        // references; the copy initialises the first data.len() and the fill the rest of
        // the allocation (disk writes may cover a whole page), so `Deref` sees only
        // initialised bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), raw, data.len());
            std::ptr::write_bytes(raw.add(data.len()), 0, layout.size() - data.len());
        }
        AlignedBuf {
            ptr,
            len: data.len(),
        }
    }

    fn layout(len: usize) -> Layout {
        let size = len.div_ceil(IO_ALIGN).max(1) * IO_ALIGN;
        Layout::from_size_align(size, IO_ALIGN)
            .expect("invariant: page-multiple sizes form a valid layout")
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr is a live allocation of at least len bytes, initialised (zeroed).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in deref, and &mut self guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.len == 0 {
            return;
        }
        // SAFETY: allocated in `new` with exactly this layout.
        unsafe { dealloc(self.ptr.as_ptr(), Self::layout(self.len)) }
    }
}

impl Clone for AlignedBuf {
    fn clone(&self) -> AlignedBuf {
        AlignedBuf::from_slice(self)
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBuf({} bytes)", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_and_zeroed() {
        for len in [0, 1, 4096, 12345] {
            let mut buf = AlignedBuf::new(len);
            assert!(len == 0 || (buf.as_mut_ptr() as usize).is_multiple_of(IO_ALIGN));
            assert_eq!(buf.len(), len);
            assert!(buf.iter().all(|b| *b == 0));
        }
        let copy = AlignedBuf::from_slice(b"abc").clone();
        assert_eq!(&copy[..], b"abc");
    }
}
