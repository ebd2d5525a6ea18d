//! qemu-system-x86_64 (TCG) with its disk on a vitastor image through the preloaded
//! driver: the guest writes random data to /dev/vda with O_DIRECT and reads it back, and
//! the host then reads the same bytes through `vitastor-nbd serve`.

mod common;

use common::*;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;
use vitastor_testkit::guest;

const IMAGE_SIZE: u64 = 16 << 20;
/// Where the guest writes (4 KiB blocks): 1 MiB starting 12 KiB past 4 MiB, so it crosses
/// object boundaries at an offset that is not object-aligned.
const SEEK_BLOCKS: u64 = 1027;
const COUNT_BLOCKS: u64 = 256;

fn sha256_hex(data: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run sha256sum");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(data)
        .expect("feed sha256sum");
    let out = child.wait_with_output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn guest_disk_on_a_vitastor_image() {
    let Some(kernel) = guest::kernel_or_skip("guest_disk_on_a_vitastor_image") else {
        return;
    };
    let driver = driver();
    let cluster = cluster("qemu-guest");
    create_image(&cluster, "vmdisk", 1, IMAGE_SIZE, false);
    let dir = cluster.scratch.0.clone();

    let script = format!(
        "for i in $(seq 1 100); do [ -b /dev/vda ] && break; sleep 0.1; done\n\
         dd if=/dev/urandom of=/tmp/data bs=4096 count={COUNT_BLOCKS} 2>/dev/null\n\
         dd if=/tmp/data of=/dev/vda bs=4096 seek={SEEK_BLOCKS} oflag=direct || exit 1\n\
         dd if=/dev/vda of=/tmp/back bs=4096 skip={SEEK_BLOCKS} count={COUNT_BLOCKS} iflag=direct || exit 2\n\
         echo \"GUEST-RESULT written=$(sha256sum < /tmp/data | cut -d' ' -f1)\"\n\
         echo \"GUEST-RESULT read=$(sha256sum < /tmp/back | cut -d' ' -f1)\"\n"
    );
    let initrd = guest::Initramfs::new(&dir, &kernel)
        .modules(&["virtio_pci", "virtio_blk"])
        .build(&script);
    let drive = format!(
        "file={},format=raw,if=virtio,cache=none",
        filename(&cluster, "vmdisk").replace(',', ",,")
    );
    let preload = driver.to_str().expect("utf-8 path").to_string();
    let run = guest::boot(
        &kernel,
        &initrd,
        &[
            "-drive".to_string(),
            drive,
            "-nic".to_string(),
            "none".to_string(),
        ],
        &[("LD_PRELOAD", &preload)],
        Duration::from_secs(240),
        &dir.join("console.log"),
    );
    assert!(
        !run.timed_out && run.exit == Some(0),
        "the guest failed (exit {:?}, timed out: {}):\n{}",
        run.exit,
        run.timed_out,
        run.console
    );
    let written = run
        .result("written")
        .expect("the guest reports what it wrote");
    assert_eq!(
        run.result("read").as_deref(),
        Some(written.as_str()),
        "{}",
        run.console
    );

    // The host reads the same bytes through vitastor-nbd serve.
    let image = read_through_nbd(&cluster, "vmdisk");
    let start = (SEEK_BLOCKS * 4096) as usize;
    let end = start + (COUNT_BLOCKS * 4096) as usize;
    assert_eq!(sha256_hex(&image[start..end]), written);
    assert!(
        image[..start].iter().all(|&b| b == 0),
        "bytes before the write changed"
    );
    assert!(
        image[end..].iter().all(|&b| b == 0),
        "bytes after the write changed"
    );
}
