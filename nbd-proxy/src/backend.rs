//! The cluster image as an NBD [`Backend`]. Unaligned reads are widened to the 4 KiB
//! alignment the cluster needs and cut back; unaligned writes get EINVAL (the server
//! advertises a 4 KiB minimum block size, which qemu and libnbd respect), because a
//! read-modify-write here could undo a concurrent write to the same block.

use crate::server::{Backend, BoxFuture};
use vitastor_client::{Image, ALIGNMENT};

pub struct ImageBackend {
    pub image: Image,
}

impl Backend for ImageBackend {
    fn size(&self) -> u64 {
        self.image.size()
    }

    fn readonly(&self) -> bool {
        self.image.readonly()
    }

    fn read(&self, offset: u64, len: u32) -> BoxFuture<'_, Result<Vec<u8>, i32>> {
        Box::pin(async move {
            let start = offset / ALIGNMENT * ALIGNMENT;
            let end = (offset + u64::from(len)).div_ceil(ALIGNMENT) * ALIGNMENT;
            let data = self
                .image
                .read(start, end - start)
                .await
                .map_err(|e| e.errno())?;
            let from = (offset - start) as usize;
            Ok(data[from..from + len as usize].to_vec())
        })
    }

    fn write(&self, offset: u64, data: Vec<u8>) -> BoxFuture<'_, Result<(), i32>> {
        Box::pin(async move { self.image.write(offset, &data).await.map_err(|e| e.errno()) })
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), i32>> {
        Box::pin(async move { self.image.sync().await.map_err(|e| e.errno()) })
    }

    fn write_zeroes(&self, offset: u64, len: u32) -> BoxFuture<'_, Result<(), i32>> {
        Box::pin(async move {
            self.image
                .write_zeroes(offset, u64::from(len))
                .await
                .map_err(|e| e.errno())
        })
    }

    /// Trim is a hint: whole objects inside the range are deleted, the rest is left alone.
    fn trim(&self, offset: u64, len: u32) -> BoxFuture<'_, Result<(), i32>> {
        Box::pin(async move {
            let object = self.image.object_size().map_err(|e| e.errno())?;
            let start = offset.div_ceil(object) * object;
            let end = (offset + u64::from(len)) / object * object;
            if start < end {
                self.image
                    .trim_objects(start, end - start)
                    .await
                    .map_err(|e| e.errno())?;
            }
            Ok(())
        })
    }
}
