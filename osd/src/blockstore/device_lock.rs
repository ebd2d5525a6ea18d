//! One user per device: an exclusive `flock` on the open data device, taken by
//! `vitastor-osd` for its whole life and by every `vitastor-disk` command that writes, so a
//! second OSD or a `prepare` on a device in use is refused instead of destroying it.
//!
//! The lock is on the descriptor the I/O goes through (the one registered with io_uring),
//! so it is held until the last I/O of its owner is over, even when the owner is killed:
//! the kernel tears a dead process's ring down (and lets go of its files) a moment after
//! the process is gone. A lock whose holder has already exited is therefore waited for,
//! briefly ([`DEAD_HOLDER_WAIT_MS`]); a live holder is reported at once, by pid and command
//! line, found through `/proc/locks`.
//!
//! Read-only inspection (`vitastor-disk dump-*`) takes no lock: reading a live device is
//! harmless, and a shared lock would conflict with the OSD's exclusive one.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a lock still held by a process that has exited is waited for.
pub const DEAD_HOLDER_WAIT_MS: u64 = 5000;
/// First and longest pause between lock attempts while a dead holder's lock lingers.
const RETRY_MS: u64 = 20;
const RETRY_MAX_MS: u64 = 500;
/// Longest holder command line quoted in a message.
const CMDLINE_MAX_CHARS: usize = 300;

/// A process holding a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// Its arguments, space-separated (empty if unknown).
    pub cmdline: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceLockError {
    #[error("{} is in use by another process{}", path.display(), describe(holder))]
    InUse {
        path: PathBuf,
        holder: Option<Holder>,
    },
    #[error("cannot lock {}: {error} (--disable_flock skips the lock)", path.display())]
    Failed {
        path: PathBuf,
        error: std::io::Error,
    },
}

fn describe(holder: &Option<Holder>) -> String {
    match holder {
        Some(Holder { pid, cmdline }) if !cmdline.is_empty() => format!(" (pid {pid}: {cmdline})"),
        Some(Holder { pid, .. }) => format!(" (pid {pid})"),
        None => String::new(),
    }
}

/// Takes an exclusive lock on `file` (the device at `path`), held until every descriptor
/// of that open file is closed. Fails at once when a live process holds it.
pub fn lock_exclusive(file: &File, path: &Path) -> Result<(), DeviceLockError> {
    let failed = |error: std::io::Error| DeviceLockError::Failed {
        path: path.to_path_buf(),
        error,
    };
    let deadline = Instant::now() + Duration::from_millis(DEAD_HOLDER_WAIT_MS);
    let mut retry = vitastor_proto::backoff::Backoff::new(
        Duration::from_millis(RETRY_MS),
        Duration::from_millis(RETRY_MAX_MS),
    );
    loop {
        // SAFETY: flock on a descriptor we own; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(());
        }
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(failed(error));
        }
        let metadata = file.metadata().map_err(failed)?;
        let holder = live_holder(metadata.dev(), metadata.ino());
        if holder.is_some() || Instant::now() >= deadline {
            return Err(DeviceLockError::InUse {
                path: path.to_path_buf(),
                holder,
            });
        }
        let left = deadline.saturating_duration_since(Instant::now());
        std::thread::sleep(retry.next_delay().min(left));
    }
}

/// The live process holding an flock on the file `(dev, ino)`, from `/proc/locks`.
fn live_holder(dev: u64, ino: u64) -> Option<Holder> {
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    flock_holders(&locks, dev, ino)
        .into_iter()
        .find(|&pid| process_is_alive(pid))
        .map(|pid| Holder {
            pid,
            cmdline: cmdline(pid),
        })
}

/// Pids of the flock holders (not waiters) of the file `(dev, ino)` in `/proc/locks` text.
///
/// A line reads `1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF`: the device of the
/// file's filesystem as hex `major:minor`, then the inode number in decimal. Waiters have
/// `->` after the id.
pub fn flock_holders(proc_locks: &str, dev: u64, ino: u64) -> Vec<u32> {
    let wanted = (dev_major(dev), dev_minor(dev), ino);
    proc_locks
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(1) != Some(&"FLOCK") {
                return None;
            }
            let pid: u32 = fields.get(4)?.parse().ok()?;
            let mut file = fields.get(5)?.split(':');
            let major = u64::from_str_radix(file.next()?, 16).ok()?;
            let minor = u64::from_str_radix(file.next()?, 16).ok()?;
            let inode: u64 = file.next()?.parse().ok()?;
            ((major, minor, inode) == wanted && pid != 0).then_some(pid)
        })
        .collect()
}

/// glibc's encoding of `dev_t` (what `stat` returns).
fn dev_major(dev: u64) -> u64 {
    ((dev >> 8) & 0xfff) | ((dev >> 32) & 0xffff_f000)
}

fn dev_minor(dev: u64) -> u64 {
    (dev & 0xff) | ((dev >> 12) & 0xffff_ff00)
}

/// Whether `pid` exists and has not exited (a zombie has closed its files).
fn process_is_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S ...": the state follows the last ')' (comm may contain one).
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| state != "Z" && state != "X")
}

/// `/proc/<pid>/cmdline` as one printable line.
fn cmdline(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let text: String = String::from_utf8_lossy(&raw)
        .split('\0')
        .filter(|arg| !arg.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > CMDLINE_MAX_CHARS {
        let cut: String = text.chars().take(CMDLINE_MAX_CHARS).collect();
        format!("{cut} ...")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::OpenOptionsExt;

    #[test]
    fn parses_proc_locks() {
        // dev 0x0801 = major 8, minor 1.
        let text = "\
1: POSIX  ADVISORY  WRITE 99 08:01:5678 0 EOF
2: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF
2: -> FLOCK  ADVISORY  WRITE 4321 08:01:5678 0 EOF
3: FLOCK  ADVISORY  WRITE 777 08:01:5679 0 EOF
4: FLOCK  ADVISORY  READ 55 fd:10:5678 0 EOF
garbage
";
        assert_eq!(flock_holders(text, 0x0801, 5678), vec![1234]);
        assert_eq!(flock_holders(text, 0xfd10, 5678), vec![55]);
        assert!(flock_holders(text, 0x0802, 5678).is_empty());
        // Large majors and minors (glibc's dev_t split).
        let (major, minor): (u64, u64) = (0x45123, 0x8967);
        let dev = ((major & 0xfff) << 8)
            | ((major & !0xfff) << 32)
            | (minor & 0xff)
            | ((minor & !0xff) << 12);
        assert_eq!((dev_major(dev), dev_minor(dev)), (0x45123, 0x8967));
    }

    #[test]
    fn second_lock_names_this_process() {
        let path = std::env::temp_dir().join(format!("device-lock-{}", std::process::id()));
        std::fs::write(&path, [0u8; 4096]).unwrap();
        let open = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(&path)
                .unwrap()
        };
        let first = open();
        lock_exclusive(&first, &path).unwrap();
        let second = open();
        let error = lock_exclusive(&second, &path).unwrap_err();
        let message = error.to_string();
        let _ = std::fs::remove_file(&path);
        assert!(
            message.starts_with(&format!(
                "{} is in use by another process (pid {}: ",
                path.display(),
                std::process::id()
            )),
            "{message}"
        );
        assert!(!message.contains('\n'));
        drop(first);
        lock_exclusive(&second, &path).unwrap();
    }
}
