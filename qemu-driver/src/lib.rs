//! block-vitastor.so (cargo names the file `libblock_vitastor.so`): a QEMU block driver for
//! `vitastor:` filenames. `src/driver.c` is the only code that touches QEMU's structs (it
//! is compiled against QEMU's headers by build.rs and registers the driver from a
//! constructor when the library is preloaded into a QEMU process); this file is the
//! interface it calls: one client per opened image, with its own runtime threads, and
//! completions delivered by calling the C callback on one of them.
//!
//! Everything here is called from QEMU's threads: open/close block (QEMU opens images
//! synchronously), I/O only spawns a task and returns.

mod resize;

use std::ffi::{c_char, c_int, c_long, c_void, CStr};
use std::sync::Arc;
use vitastor_client::{Client, ClientError, ClientOptions, Image};

/// One opened image: its client (with the runtime that drives it) and the image.
pub struct VitastorImage {
    runtime: tokio::runtime::Runtime,
    image: Arc<Image>,
}

/// `void done(void *opaque, long retval)`: retval is >= 0 or a negative errno.
pub type Done = extern "C" fn(opaque: *mut c_void, retval: c_long);

/// A pointer owned by the C caller that crosses to the runtime's threads (the caller keeps
/// it valid until its callback).
#[derive(Clone, Copy)]
struct SendPtr(*mut c_void);
// SAFETY: the pointee belongs to the C caller, who keeps it alive until the callback; it is
// touched by one task at a time.
unsafe impl Send for SendPtr {}

fn errno_of(error: &ClientError) -> c_long {
    -c_long::from(error.errno())
}

/// Copies `message` (truncated, NUL-terminated) into the caller's buffer.
///
/// # Safety
/// `buffer` is NULL or points to `len` writable bytes.
unsafe fn set_error(buffer: *mut c_char, len: usize, message: &str) {
    if buffer.is_null() || len == 0 {
        return;
    }
    let n = message.len().min(len - 1);
    // SAFETY: the caller's buffer has `len` bytes; we write n + 1 <= len.
    unsafe {
        std::ptr::copy_nonoverlapping(message.as_ptr(), buffer as *mut u8, n);
        *buffer.add(n) = 0;
    }
}

/// # Safety
/// `pointer` is NULL or a NUL-terminated string.
unsafe fn text(pointer: *const c_char) -> Option<String> {
    if pointer.is_null() {
        return None;
    }
    // SAFETY: the caller passes a NUL-terminated string.
    Some(
        unsafe { CStr::from_ptr(pointer) }
            .to_string_lossy()
            .into_owned(),
    )
}

fn open(
    etcd_host: String,
    etcd_prefix: Option<String>,
    name: Option<String>,
    pool: u64,
    inode: u64,
) -> Result<VitastorImage, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("vitastor-qemu")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the client's threads: {e}"))?;
    let mut options = ClientOptions::new(&etcd_host);
    if let Some(prefix) = etcd_prefix {
        options.etcd_prefix = prefix;
    }
    let image = runtime.block_on(async {
        let client = Client::connect(options).await.map_err(|e| e.to_string())?;
        match &name {
            Some(name) => client.open_image(name).await,
            None => u32::try_from(pool)
                .map_err(|_| ClientError::NoSuchPool(pool.to_string()))
                .and_then(|pool| client.open_inode(pool, inode)),
        }
        .map_err(|e| e.to_string())
    })?;
    Ok(VitastorImage {
        runtime,
        image: Arc::new(image),
    })
}

/// Connects to etcd and opens the image by name (or by pool and inode when `image` is
/// NULL). NULL on failure, with one line saying why in `error`.
///
/// # Safety
/// Strings are NULL or NUL-terminated; `error` points to `error_len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn vitastor_qemu_open(
    etcd_host: *const c_char,
    etcd_prefix: *const c_char,
    image: *const c_char,
    pool: u64,
    inode: u64,
    error: *mut c_char,
    error_len: usize,
) -> *mut VitastorImage {
    // SAFETY: forwarded caller guarantees.
    let (host, prefix, name) = unsafe { (text(etcd_host), text(etcd_prefix), text(image)) };
    let result = match host {
        Some(host) => open(host, prefix, name, pool, inode),
        None => Err("etcd_host is required".to_string()),
    };
    match result {
        Ok(opened) => Box::into_raw(Box::new(opened)),
        Err(message) => {
            // SAFETY: forwarded caller guarantee on the buffer.
            unsafe { set_error(error, error_len, &message) };
            std::ptr::null_mut()
        }
    }
}

/// Stops the client (requests still in flight are dropped; QEMU drains before closing).
///
/// # Safety
/// `image` from `vitastor_qemu_open` (or NULL), not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn vitastor_qemu_close(image: *mut VitastorImage) {
    if !image.is_null() {
        // SAFETY: created by Box::into_raw in vitastor_qemu_open.
        let opened = unsafe { Box::from_raw(image) };
        opened.runtime.shutdown_background();
    }
}

/// # Safety
/// `image` from `vitastor_qemu_open`.
unsafe fn opened<'a>(image: *mut VitastorImage) -> &'a VitastorImage {
    // SAFETY: the caller passes a live handle.
    unsafe { &*image }
}

/// The image's size now (it follows `vitastor-cli modify --resize` through etcd).
///
/// # Safety
/// `image` from `vitastor_qemu_open`.
#[no_mangle]
pub unsafe extern "C" fn vitastor_qemu_size(image: *mut VitastorImage) -> u64 {
    // SAFETY: caller guarantee.
    unsafe { opened(image) }.image.size()
}

/// # Safety
/// `image` from `vitastor_qemu_open`.
#[no_mangle]
pub unsafe extern "C" fn vitastor_qemu_readonly(image: *mut VitastorImage) -> c_int {
    // SAFETY: caller guarantee.
    c_int::from(unsafe { opened(image) }.image.readonly())
}

/// Bytes of image data per object (the unit a discard can free); 0 if unknown.
///
/// # Safety
/// `image` from `vitastor_qemu_open`.
#[no_mangle]
pub unsafe extern "C" fn vitastor_qemu_object_size(image: *mut VitastorImage) -> u64 {
    // SAFETY: caller guarantee.
    unsafe { opened(image) }.image.object_size().unwrap_or(0)
}

/// Runs `work` on the image's runtime and reports its result to `done`.
fn spawn<F>(opened: &VitastorImage, done: Done, opaque: *mut c_void, work: F)
where
    F: std::future::Future<Output = Result<c_long, ClientError>> + Send + 'static,
{
    let opaque = SendPtr(opaque);
    opened.runtime.spawn(async move {
        let opaque = opaque;
        let retval = work.await.unwrap_or_else(|e| errno_of(&e));
        done(opaque.0, retval);
    });
}

/// The iovecs as (address, length) pairs.
///
/// # Safety
/// `iov` points to `count` iovecs (or count <= 0).
unsafe fn iovecs(iov: *const libc::iovec, count: c_int) -> Vec<(usize, usize)> {
    if iov.is_null() || count <= 0 {
        return Vec::new();
    }
    // SAFETY: caller guarantee.
    unsafe { std::slice::from_raw_parts(iov, count as usize) }
        .iter()
        .map(|v| (v.iov_base as usize, v.iov_len))
        .collect()
}

/// Reads `len` bytes at `offset` into the iovecs.
///
/// # Safety
/// `image` live; the iovecs hold `len` bytes and stay valid until `done` is called.
#[no_mangle]
pub unsafe extern "C" fn vitastor_qemu_read(
    image: *mut VitastorImage,
    offset: u64,
    len: u64,
    iov: *const libc::iovec,
    iovcnt: c_int,
    done: Done,
    opaque: *mut c_void,
) {
    // SAFETY: caller guarantees.
    let (opened, buffers) = unsafe { (opened(image), iovecs(iov, iovcnt)) };
    let target = opened.image.clone();
    spawn(opened, done, opaque, async move {
        let data = target.read(offset, len).await?;
        let mut from = 0usize;
        for (address, size) in buffers {
            let n = size.min(data.len() - from);
            // SAFETY: the caller's buffer has `size` bytes and outlives the callback.
            unsafe { std::ptr::copy_nonoverlapping(data[from..].as_ptr(), address as *mut u8, n) };
            from += n;
        }
        Ok(len as c_long)
    });
}

/// Writes the iovecs' `len` bytes at `offset` (copied before this returns); `fua` adds a
/// SYNC after the write, before `done`.
///
/// # Safety
/// `image` live; the iovecs hold `len` bytes.
#[no_mangle]
#[allow(clippy::too_many_arguments)] // the C interface: one request, one call
pub unsafe extern "C" fn vitastor_qemu_write(
    image: *mut VitastorImage,
    offset: u64,
    len: u64,
    iov: *const libc::iovec,
    iovcnt: c_int,
    fua: c_int,
    done: Done,
    opaque: *mut c_void,
) {
    // SAFETY: caller guarantees.
    let (opened, buffers) = unsafe { (opened(image), iovecs(iov, iovcnt)) };
    let mut data = Vec::with_capacity(len as usize);
    for (address, size) in buffers {
        let take = size.min(len as usize - data.len());
        // SAFETY: the caller's buffer has `size` bytes.
        data.extend_from_slice(unsafe { std::slice::from_raw_parts(address as *const u8, take) });
    }
    let target = opened.image.clone();
    spawn(opened, done, opaque, async move {
        if data.len() as u64 != len {
            return Err(ClientError::InvalidArgument(
                "iovecs are shorter than len".into(),
            ));
        }
        target.write(offset, &data).await?;
        if fua != 0 {
            target.sync().await?;
        }
        Ok(len as c_long)
    });
}

/// SYNC: every write acknowledged before is durable when `done` is called.
///
/// # Safety
/// `image` live.
#[no_mangle]
pub unsafe extern "C" fn vitastor_qemu_sync(
    image: *mut VitastorImage,
    done: Done,
    opaque: *mut c_void,
) {
    // SAFETY: caller guarantee.
    let opened = unsafe { opened(image) };
    let target = opened.image.clone();
    spawn(opened, done, opaque, async move {
        target.sync().await?;
        Ok(0)
    });
}

/// Discard: the whole objects inside the range are deleted (they read as zeros); the
/// partial objects at its edges are left alone (a discard is only a hint).
///
/// # Safety
/// `image` live.
#[no_mangle]
pub unsafe extern "C" fn vitastor_qemu_discard(
    image: *mut VitastorImage,
    offset: u64,
    len: u64,
    done: Done,
    opaque: *mut c_void,
) {
    // SAFETY: caller guarantee.
    let opened = unsafe { opened(image) };
    let target = opened.image.clone();
    spawn(opened, done, opaque, async move {
        let object = target.object_size()?;
        let first = offset.div_ceil(object) * object;
        let end = (offset + len) / object * object;
        if first < end {
            target.trim_objects(first, end - first).await?;
        }
        Ok(0)
    });
}

/// Zeroes the range (whole objects deleted, partial ones written with zeros).
///
/// # Safety
/// `image` live.
#[no_mangle]
pub unsafe extern "C" fn vitastor_qemu_write_zeroes(
    image: *mut VitastorImage,
    offset: u64,
    len: u64,
    done: Done,
    opaque: *mut c_void,
) {
    // SAFETY: caller guarantee.
    let opened = unsafe { opened(image) };
    let target = opened.image.clone();
    spawn(opened, done, opaque, async move {
        target.write_zeroes(offset, len).await?;
        Ok(0)
    });
}

/// Changes the image's size in its etcd config, like `vitastor-cli modify --resize`
/// (shrinking deletes the data past the new end first); `done` is called once this
/// client sees the new size.
///
/// # Safety
/// `image` live.
#[no_mangle]
pub unsafe extern "C" fn vitastor_qemu_resize(
    image: *mut VitastorImage,
    size: u64,
    done: Done,
    opaque: *mut c_void,
) {
    // SAFETY: caller guarantee.
    let opened = unsafe { opened(image) };
    let target = opened.image.clone();
    spawn(opened, done, opaque, async move {
        resize::resize(&target, size).await?;
        Ok(0)
    });
}
