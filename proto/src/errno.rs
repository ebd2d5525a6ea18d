//! Linux errno values used as negative `retval` on the wire and as blockstore results.
//! Numbers are the Linux x86_64/aarch64 ones, which is what Vitastor's clients expect.

pub const EPERM: i32 = 1;
pub const ENOENT: i32 = 2;
pub const EINTR: i32 = 4;
pub const EIO: i32 = 5;
pub const EBUSY: i32 = 16;
pub const EEXIST: i32 = 17;
pub const EINVAL: i32 = 22;
pub const ENOSPC: i32 = 28;
pub const EROFS: i32 = 30;
pub const EPIPE: i32 = 32;
/// Vitastor reports a data checksum mismatch as -EDOM.
pub const EDOM: i32 = 33;
pub const ERANGE: i32 = 34;
pub const ENOTSUP: i32 = 95;

/// Short symbolic name of an errno for logs and JSON output.
pub fn name(errno: i32) -> &'static str {
    match errno.abs() {
        EPERM => "EPERM",
        ENOENT => "ENOENT",
        EINTR => "EINTR",
        EIO => "EIO",
        EBUSY => "EBUSY",
        EEXIST => "EEXIST",
        EINVAL => "EINVAL",
        ENOSPC => "ENOSPC",
        EROFS => "EROFS",
        EPIPE => "EPIPE",
        EDOM => "EDOM",
        ERANGE => "ERANGE",
        ENOTSUP => "ENOTSUP",
        _ => "E?",
    }
}
