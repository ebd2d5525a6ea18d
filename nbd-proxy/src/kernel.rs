//! Attaching an export to the kernel's NBD driver (`map`, `unmap`, `ls`) with the classic
//! ioctl interface: the kernel gets one end of a socketpair (no negotiation, simple
//! replies), this process serves the other end and blocks in `NBD_DO_IT` on a thread until
//! the device is unmapped.
//!
//! On a kernel without NBD (no `/dev/nbd*`, as on the development machine) every command
//! fails with a message saying so. `tests/nbd_kernel_guest.rs` exercises map, I/O, ls,
//! unmap and a `kill -9` during writes with a real kernel, in a TCG guest.

use std::path::{Path, PathBuf};

const NBD_SET_SOCK: libc::c_ulong = 0xab00;
const NBD_SET_BLKSIZE: libc::c_ulong = 0xab01;
const NBD_SET_SIZE: libc::c_ulong = 0xab02;
const NBD_DO_IT: libc::c_ulong = 0xab03;
const NBD_CLEAR_SOCK: libc::c_ulong = 0xab04;
const NBD_DISCONNECT: libc::c_ulong = 0xab08;
const NBD_SET_TIMEOUT: libc::c_ulong = 0xab09;
const NBD_SET_FLAGS: libc::c_ulong = 0xab0a;

pub const NO_NBD: &str = "the kernel has no NBD support here: no /dev/nbd* devices (load it with `modprobe nbd`, or export the image with `vitastor-nbd serve` and use a userspace NBD client such as qemu or nbdcopy)";

/// `/dev/nbdN` devices, by number.
pub fn devices() -> Result<Vec<PathBuf>, String> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/dev")
        .map_err(|e| format!("cannot list /dev: {e}"))?
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            let number = name.strip_prefix("nbd")?.parse::<u32>().ok()?;
            Some((number, Path::new("/dev").join(name)))
        })
        .collect();
    if found.is_empty() {
        return Err(NO_NBD.to_string());
    }
    found.sort();
    Ok(found.into_iter().map(|(_, path)| path).collect())
}

/// The PID serving a device, if it is attached.
pub fn attached_pid(device: &Path) -> Option<u32> {
    let name = device.file_name()?.to_str()?;
    std::fs::read_to_string(format!("/sys/block/{name}/pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn ioctl(
    fd: libc::c_int,
    request: libc::c_ulong,
    arg: libc::c_ulong,
    what: &str,
) -> Result<(), String> {
    // SAFETY: NBD ioctls take an integer argument (or none); fd is an open NBD device.
    let result = unsafe { libc::ioctl(fd, request as _, arg) };
    if result < 0 {
        return Err(format!("{what}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn open_device(device: &Path) -> Result<std::fs::File, String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)
        .map_err(|e| format!("cannot open {}: {e}", device.display()))
}

/// Configures `device` for an export of `size` bytes with `flags`, hands it `kernel_fd`
/// and blocks in NBD_DO_IT until the device is disconnected.
pub fn attach_and_run(
    device: &Path,
    kernel_fd: libc::c_int,
    size: u64,
    flags: u16,
) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let file = open_device(device)?;
    let fd = file.as_raw_fd();
    ioctl(fd, NBD_SET_BLKSIZE, 4096, "NBD_SET_BLKSIZE")?;
    ioctl(fd, NBD_SET_SIZE, size as libc::c_ulong, "NBD_SET_SIZE")?;
    ioctl(
        fd,
        NBD_SET_FLAGS,
        libc::c_ulong::from(flags),
        "NBD_SET_FLAGS",
    )?;
    ioctl(fd, NBD_SET_TIMEOUT, 0, "NBD_SET_TIMEOUT")?;
    ioctl(fd, NBD_SET_SOCK, kernel_fd as libc::c_ulong, "NBD_SET_SOCK")?;
    let result = ioctl(fd, NBD_DO_IT, 0, "NBD_DO_IT");
    let _ = ioctl(fd, NBD_CLEAR_SOCK, 0, "NBD_CLEAR_SOCK");
    result
}

/// Detaches a mapped device (its server process then exits).
pub fn unmap(device: &Path) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    devices()?;
    let file = open_device(device)?;
    ioctl(file.as_raw_fd(), NBD_DISCONNECT, 0, "NBD_DISCONNECT")?;
    let _ = ioctl(file.as_raw_fd(), NBD_CLEAR_SOCK, 0, "NBD_CLEAR_SOCK");
    Ok(())
}

/// The first device nobody serves.
pub fn free_device() -> Result<PathBuf, String> {
    devices()?
        .into_iter()
        .find(|d| attached_pid(d).is_none())
        .ok_or_else(|| "every /dev/nbd* device is in use".to_string())
}
