//! libfio_vitastor.so: fio loads it with `-ioengine=external:/path/libfio_vitastor.so` and
//! asks for `get_ioengine`; we hand the C glue (src/engine.c, compiled against fio's
//! headers) a table of the client library's C entry points and return its engine.
//!
//! Options: `-etcd=host:port`, `-etcd_prefix=/vitastor`, `-image=NAME` or
//! `-pool=N -inode=N`, `-size_override=BYTES` (fio's own `-size` limits the tested range).

use std::ffi::{c_char, c_int, c_void};
use vitastor_client::capi::{self, IoHandler, Iovec, ReadHandler, VitastorC};

/// Must match `struct vitastor_api` in engine.c field by field.
#[repr(C)]
pub struct Api {
    create: unsafe extern "C" fn(*const c_char, *const c_char) -> *mut VitastorC,
    destroy: unsafe extern "C" fn(*mut VitastorC),
    open_image: unsafe extern "C" fn(*mut VitastorC, *const c_char) -> *mut c_void,
    open_inode: unsafe extern "C" fn(*mut VitastorC, u64, u64) -> *mut c_void,
    close_watch: unsafe extern "C" fn(*mut VitastorC, *mut c_void),
    inode_get_size: unsafe extern "C" fn(*mut c_void) -> u64,
    inode_get_num: unsafe extern "C" fn(*mut c_void) -> u64,
    read: unsafe extern "C" fn(
        *mut VitastorC,
        u64,
        u64,
        u64,
        *mut Iovec,
        c_int,
        ReadHandler,
        *mut c_void,
    ),
    write: unsafe extern "C" fn(
        *mut VitastorC,
        u64,
        u64,
        u64,
        u64,
        *mut Iovec,
        c_int,
        IoHandler,
        *mut c_void,
    ),
    sync: unsafe extern "C" fn(*mut VitastorC, IoHandler, *mut c_void),
}

extern "C" {
    fn vitastor_fio_engine(table: *const Api) -> *mut c_void;
}

static API: Api = Api {
    create: capi::vitastor_c_create,
    destroy: capi::vitastor_c_destroy,
    open_image: capi::vitastor_c_open_image,
    open_inode: capi::vitastor_c_open_inode,
    close_watch: capi::vitastor_c_close_watch,
    inode_get_size: capi::vitastor_c_inode_get_size,
    inode_get_num: capi::vitastor_c_inode_get_num,
    read: capi::vitastor_c_read,
    write: capi::vitastor_c_write,
    sync: capi::vitastor_c_sync,
};

/// fio's entry point for external engines that cannot export a static `ioengine`.
///
/// # Safety
/// `ops` must point to writable storage for one pointer (fio passes its own).
#[no_mangle]
pub unsafe extern "C" fn get_ioengine(ops: *mut *mut c_void) {
    // SAFETY: the glue only copies the table and returns a pointer to its static engine.
    unsafe { *ops = vitastor_fio_engine(&API) };
}
