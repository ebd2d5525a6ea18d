//! The C ABI (`include/vitastor_c.h`): a client with its own runtime threads; completions
//! are delivered by calling the caller's callback on one of them.
//!
//! Safety contract (the header says the same): pointers come from the caller, iovecs must
//! stay valid until the callback, a handle is used only before `vitastor_c_close_watch`.

use crate::{Client, ClientError, ClientOptions, Image};
use std::ffi::{c_char, c_int, c_long, c_void, CStr};

pub struct VitastorC {
    runtime: tokio::runtime::Runtime,
    client: Client,
}

/// `struct iovec`.
pub type Iovec = libc::iovec;

pub type ReadHandler = extern "C" fn(opaque: *mut c_void, retval: c_long, version: u64);
pub type IoHandler = extern "C" fn(opaque: *mut c_void, retval: c_long);

/// A raw pointer that may cross to the runtime's threads (the C caller guarantees it
/// stays valid until its callback).
#[derive(Clone, Copy)]
struct SendPtr(*mut c_void);
// SAFETY: the pointee is owned by the C caller, who promises validity until the callback;
// the library never dereferences `opaque`, and iov buffers are accessed by one task.
unsafe impl Send for SendPtr {}
// SAFETY: shared references only copy the address; the buffer is written by one task.
unsafe impl Sync for SendPtr {}

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

/// Connects; NULL on failure (the reason goes to stderr).
///
/// # Safety
/// `etcd_address` must be a NUL-terminated string; `etcd_prefix` NULL or one.
#[no_mangle]
pub unsafe extern "C" fn vitastor_c_create(
    etcd_address: *const c_char,
    etcd_prefix: *const c_char,
) -> *mut VitastorC {
    // SAFETY: forwarded caller guarantees.
    let Some(address) = (unsafe { text(etcd_address) }) else {
        eprintln!("vitastor_c_create: etcd_address is NULL");
        return std::ptr::null_mut();
    };
    let mut options = ClientOptions::new(&address);
    // SAFETY: as above.
    if let Some(prefix) = unsafe { text(etcd_prefix) } {
        options.etcd_prefix = prefix;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("vitastor_c_create: cannot start threads: {error}");
            return std::ptr::null_mut();
        }
    };
    match runtime.block_on(Client::connect(options)) {
        Ok(client) => Box::into_raw(Box::new(VitastorC { runtime, client })),
        Err(error) => {
            eprintln!("vitastor_c_create: {error}");
            std::ptr::null_mut()
        }
    }
}

/// # Safety
/// `client` must come from `vitastor_c_create` and not be used afterwards.
#[no_mangle]
pub unsafe extern "C" fn vitastor_c_destroy(client: *mut VitastorC) {
    if !client.is_null() {
        // SAFETY: created by Box::into_raw in vitastor_c_create.
        let client = unsafe { Box::from_raw(client) };
        client.runtime.shutdown_background();
    }
}

fn errno_of(error: &ClientError) -> c_long {
    -c_long::from(error.errno())
}

/// # Safety
/// `client` valid; `image` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn vitastor_c_watch_inode(
    client: *mut VitastorC,
    image: *const c_char,
    cb: IoHandler,
    opaque: *mut c_void,
) {
    // SAFETY: caller guarantees a valid client and string.
    let (client, name) = unsafe { (&*client, text(image).unwrap_or_default()) };
    let opaque = SendPtr(opaque);
    let inner = client.client.clone();
    client.runtime.spawn(async move {
        let opaque = opaque;
        let result = match inner.open_image(&name).await {
            Ok(image) => Box::into_raw(Box::new(image)) as c_long,
            Err(error) => errno_of(&error),
        };
        cb(opaque.0, result);
    });
}

/// Opens an image by name and waits for it: a handle, or NULL when it does not exist.
///
/// # Safety
/// `client` valid; `image` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn vitastor_c_open_image(
    client: *mut VitastorC,
    image: *const c_char,
) -> *mut c_void {
    // SAFETY: caller guarantees a valid client and string.
    let (client, name) = unsafe { (&*client, text(image).unwrap_or_default()) };
    match client.runtime.block_on(client.client.open_image(&name)) {
        Ok(image) => Box::into_raw(Box::new(image)) as *mut c_void,
        Err(_) => std::ptr::null_mut(),
    }
}

/// Opens pool/inode (its config must exist): a handle, or NULL.
///
/// # Safety
/// `client` valid.
#[no_mangle]
pub unsafe extern "C" fn vitastor_c_open_inode(
    client: *mut VitastorC,
    pool: u64,
    inode: u64,
) -> *mut c_void {
    // SAFETY: caller guarantees a valid client.
    let client = unsafe { &*client };
    match u32::try_from(pool)
        .map_err(|_| ())
        .and_then(|pool| client.client.open_inode(pool, inode).map_err(|_| ()))
    {
        Ok(image) => Box::into_raw(Box::new(image)) as *mut c_void,
        Err(()) => std::ptr::null_mut(),
    }
}

/// # Safety
/// `handle` from `vitastor_c_watch_inode`, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn vitastor_c_close_watch(_client: *mut VitastorC, handle: *mut c_void) {
    if !handle.is_null() {
        // SAFETY: created by Box::into_raw in vitastor_c_watch_inode.
        drop(unsafe { Box::from_raw(handle as *mut Image) });
    }
}

/// # Safety
/// `handle` from `vitastor_c_watch_inode`.
#[no_mangle]
pub unsafe extern "C" fn vitastor_c_inode_get_size(handle: *mut c_void) -> u64 {
    // SAFETY: caller guarantees a live handle.
    unsafe { &*(handle as *const Image) }.size()
}

/// # Safety
/// `handle` from `vitastor_c_watch_inode`.
#[no_mangle]
pub unsafe extern "C" fn vitastor_c_inode_get_num(handle: *mut c_void) -> u64 {
    // SAFETY: caller guarantees a live handle.
    unsafe { &*(handle as *const Image) }.inode
}

/// # Safety
/// `handle` from `vitastor_c_watch_inode`.
#[no_mangle]
pub unsafe extern "C" fn vitastor_c_inode_get_readonly(handle: *mut c_void) -> c_int {
    // SAFETY: caller guarantees a live handle.
    c_int::from(unsafe { &*(handle as *const Image) }.readonly())
}

/// The iovecs as (pointer, length) pairs that may cross threads.
unsafe fn iovecs(iov: *const Iovec, count: c_int) -> Vec<(SendPtr, usize)> {
    if iov.is_null() || count <= 0 {
        return Vec::new();
    }
    // SAFETY: caller passes `count` valid iovecs.
    unsafe { std::slice::from_raw_parts(iov, count as usize) }
        .iter()
        .map(|v| (SendPtr(v.iov_base), v.iov_len))
        .collect()
}

fn image_for(client: &Client, inode: u64) -> Result<Image, ClientError> {
    client.open_inode((inode >> 48) as u32, inode & ((1 << 48) - 1))
}

/// # Safety
/// `client` valid; `iov` holds `iovcnt` buffers of `len` bytes in all, valid until `cb`.
#[no_mangle]
pub unsafe extern "C" fn vitastor_c_read(
    client: *mut VitastorC,
    inode: u64,
    offset: u64,
    len: u64,
    iov: *mut Iovec,
    iovcnt: c_int,
    cb: ReadHandler,
    opaque: *mut c_void,
) {
    // SAFETY: caller guarantees.
    let (client, buffers) = unsafe { (&*client, iovecs(iov, iovcnt)) };
    let inner = client.client.clone();
    let opaque = SendPtr(opaque);
    client.runtime.spawn(async move {
        let (opaque, buffers) = (opaque, buffers);
        let result = async {
            let data = image_for(&inner, inode)?.read(offset, len).await?;
            let mut from = 0usize;
            for (pointer, size) in &buffers {
                let n = (*size).min(data.len() - from);
                // SAFETY: the caller's buffer has `size` bytes and outlives the callback.
                unsafe {
                    std::ptr::copy_nonoverlapping(data[from..].as_ptr(), pointer.0 as *mut u8, n)
                };
                from += n;
            }
            Ok::<c_long, ClientError>(len as c_long)
        }
        .await;
        cb(opaque.0, result.unwrap_or_else(|e| errno_of(&e)), 0);
    });
}

/// # Safety
/// As `vitastor_c_read`; the data is copied before this returns.
#[no_mangle]
pub unsafe extern "C" fn vitastor_c_write(
    client: *mut VitastorC,
    inode: u64,
    offset: u64,
    len: u64,
    _check_version: u64,
    iov: *mut Iovec,
    iovcnt: c_int,
    cb: IoHandler,
    opaque: *mut c_void,
) {
    // SAFETY: caller guarantees.
    let (client, buffers) = unsafe { (&*client, iovecs(iov, iovcnt)) };
    let mut data = Vec::with_capacity(len as usize);
    for (pointer, size) in &buffers {
        let take = (*size).min(len as usize - data.len());
        // SAFETY: the caller's buffer has `size` bytes.
        data.extend_from_slice(unsafe { std::slice::from_raw_parts(pointer.0 as *const u8, take) });
    }
    let inner = client.client.clone();
    let opaque = SendPtr(opaque);
    client.runtime.spawn(async move {
        let opaque = opaque;
        let result = async {
            if data.len() as u64 != len {
                return Err(ClientError::InvalidArgument(
                    "iovecs are shorter than len".into(),
                ));
            }
            image_for(&inner, inode)?.write(offset, &data).await?;
            Ok(len as c_long)
        }
        .await;
        cb(opaque.0, result.unwrap_or_else(|e| errno_of(&e)));
    });
}

/// # Safety
/// `client` valid.
#[no_mangle]
pub unsafe extern "C" fn vitastor_c_sync(
    client: *mut VitastorC,
    cb: IoHandler,
    opaque: *mut c_void,
) {
    // SAFETY: caller guarantees.
    let client = unsafe { &*client };
    let inner = client.client.clone();
    let opaque = SendPtr(opaque);
    client.runtime.spawn(async move {
        let opaque = opaque;
        let result = inner
            .sync()
            .await
            .map(|()| 0)
            .unwrap_or_else(|e| errno_of(&e));
        cb(opaque.0, result);
    });
}
