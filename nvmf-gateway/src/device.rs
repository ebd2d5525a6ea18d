//! What a namespace reads and writes: the [`BlockDevice`] seam. The gateway serves cluster
//! images through [`ImageDevice`]; tests plug in [`MemoryDevice`], which speaks the same
//! interface, so the protocol is tested without a cluster.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use vitastor_client::{Image, ALIGNMENT};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The block size every namespace advertises: the cluster's request alignment, so no
/// command ever needs a read-modify-write (which could undo a concurrent write).
pub const BLOCK_BYTES: u64 = ALIGNMENT;

/// An I/O failure with the errno the backend reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoError {
    pub errno: i32,
    pub message: String,
}

pub type IoResult<T> = Result<T, IoError>;

/// A device of whole blocks; every offset and length given here is a multiple of
/// [`BLOCK_BYTES`] and inside [`BlockDevice::size_bytes`] (the caller checked).
pub trait BlockDevice: Send + Sync {
    fn size_bytes(&self) -> u64;
    fn read_only(&self) -> bool;
    fn read(&self, offset_bytes: u64, len_bytes: u64) -> BoxFuture<'_, IoResult<Vec<u8>>>;
    fn write(&self, offset_bytes: u64, data: Vec<u8>) -> BoxFuture<'_, IoResult<()>>;
    fn write_zeroes(&self, offset_bytes: u64, len_bytes: u64) -> BoxFuture<'_, IoResult<()>>;
    fn flush(&self) -> BoxFuture<'_, IoResult<()>>;
    /// A hint: the range may read as zeros afterwards (or keep its data).
    fn deallocate(&self, offset_bytes: u64, len_bytes: u64) -> BoxFuture<'_, IoResult<()>>;
}

/// A cluster image.
pub struct ImageDevice {
    pub image: Image,
}

fn io_error(error: vitastor_client::ClientError) -> IoError {
    IoError {
        errno: error.errno(),
        message: error.to_string(),
    }
}

impl BlockDevice for ImageDevice {
    fn size_bytes(&self) -> u64 {
        self.image.size()
    }

    fn read_only(&self) -> bool {
        self.image.readonly()
    }

    fn read(&self, offset_bytes: u64, len_bytes: u64) -> BoxFuture<'_, IoResult<Vec<u8>>> {
        Box::pin(async move {
            self.image
                .read(offset_bytes, len_bytes)
                .await
                .map_err(io_error)
        })
    }

    fn write(&self, offset_bytes: u64, data: Vec<u8>) -> BoxFuture<'_, IoResult<()>> {
        Box::pin(async move {
            self.image
                .write(offset_bytes, &data)
                .await
                .map_err(io_error)
        })
    }

    fn write_zeroes(&self, offset_bytes: u64, len_bytes: u64) -> BoxFuture<'_, IoResult<()>> {
        Box::pin(async move {
            self.image
                .write_zeroes(offset_bytes, len_bytes)
                .await
                .map_err(io_error)
        })
    }

    fn flush(&self) -> BoxFuture<'_, IoResult<()>> {
        Box::pin(async move { self.image.sync().await.map_err(io_error) })
    }

    /// Whole objects inside the range are deleted; the partial ends keep their data
    /// (deallocate is a hint, and zeroing them would cost writes the host did not ask for).
    fn deallocate(&self, offset_bytes: u64, len_bytes: u64) -> BoxFuture<'_, IoResult<()>> {
        Box::pin(async move {
            let object_bytes = self.image.object_size().map_err(io_error)?;
            let start = offset_bytes.div_ceil(object_bytes) * object_bytes;
            let end = (offset_bytes + len_bytes) / object_bytes * object_bytes;
            if start < end {
                self.image
                    .trim_objects(start, end - start)
                    .await
                    .map_err(io_error)?;
            }
            Ok(())
        })
    }
}

/// An in-memory device for tests.
pub struct MemoryDevice {
    data: Mutex<Vec<u8>>,
    read_only: bool,
}

impl MemoryDevice {
    pub fn new(size_bytes: u64, read_only: bool) -> MemoryDevice {
        assert_eq!(size_bytes % BLOCK_BYTES, 0, "whole blocks");
        MemoryDevice {
            data: Mutex::new(vec![0; size_bytes as usize]),
            read_only,
        }
    }

    fn range(&self, offset_bytes: u64, len_bytes: u64) -> std::ops::Range<usize> {
        assert_eq!(offset_bytes % BLOCK_BYTES, 0, "the caller aligns offsets");
        assert_eq!(len_bytes % BLOCK_BYTES, 0, "the caller aligns lengths");
        assert!(
            offset_bytes + len_bytes <= self.size_bytes(),
            "inside the device"
        );
        offset_bytes as usize..(offset_bytes + len_bytes) as usize
    }
}

impl BlockDevice for MemoryDevice {
    fn size_bytes(&self) -> u64 {
        self.data.lock().expect("not poisoned").len() as u64
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read(&self, offset_bytes: u64, len_bytes: u64) -> BoxFuture<'_, IoResult<Vec<u8>>> {
        let range = self.range(offset_bytes, len_bytes);
        let data = self.data.lock().expect("not poisoned")[range].to_vec();
        Box::pin(async move { Ok(data) })
    }

    fn write(&self, offset_bytes: u64, data: Vec<u8>) -> BoxFuture<'_, IoResult<()>> {
        let range = self.range(offset_bytes, data.len() as u64);
        self.data.lock().expect("not poisoned")[range].copy_from_slice(&data);
        Box::pin(async move { Ok(()) })
    }

    fn write_zeroes(&self, offset_bytes: u64, len_bytes: u64) -> BoxFuture<'_, IoResult<()>> {
        let range = self.range(offset_bytes, len_bytes);
        self.data.lock().expect("not poisoned")[range].fill(0);
        Box::pin(async move { Ok(()) })
    }

    fn flush(&self) -> BoxFuture<'_, IoResult<()>> {
        Box::pin(async move { Ok(()) })
    }

    fn deallocate(&self, offset_bytes: u64, len_bytes: u64) -> BoxFuture<'_, IoResult<()>> {
        self.write_zeroes(offset_bytes, len_bytes)
    }
}
