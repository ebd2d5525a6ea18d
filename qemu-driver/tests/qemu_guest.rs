//! qemu-system-x86_64 (TCG) with its disks on vitastor images through the preloaded
//! driver: `-drive ...,if=virtio` (requests in the main loop's AioContext) and a second
//! disk on an iothread (requests in the iothread's AioContext). The guest writes random
//! data to each with O_DIRECT and reads it back, and the host then reads the same bytes
//! through `vitastor-nbd serve`.

mod common;

use common::*;
use std::time::Duration;
use vitastor_testkit::guest;
use vitastor_testkit::sha256_hex;

const IMAGE_SIZE: u64 = 16 << 20;
/// Another size, so the guest can tell the two disks apart.
const IOTHREAD_IMAGE_SIZE: u64 = 24 << 20;
/// Where the guest writes (4 KiB blocks): 1 MiB starting 12 KiB past 4 MiB, so it crosses
/// object boundaries at an offset that is not object-aligned.
const SEEK_BLOCKS: u64 = 1027;
const COUNT_BLOCKS: u64 = 256;

#[test]
fn guest_disks_on_vitastor_images() {
    let Some(kernel) = guest::kernel_or_skip("guest_disks_on_vitastor_images") else {
        return;
    };
    let driver = driver();
    let cluster = cluster("qemu-guest");
    create_image(&cluster, "vmdisk", 1, IMAGE_SIZE, false);
    create_image(&cluster, "iodisk", 2, IOTHREAD_IMAGE_SIZE, false);
    let dir = cluster.scratch.0.clone();

    let script = format!(
        "for d in vda vdb; do\n\
         for i in $(seq 1 100); do [ -b /dev/$d ] && break; sleep 0.1; done\n\
         dd if=/dev/urandom of=/tmp/data bs=4096 count={COUNT_BLOCKS} 2>/dev/null\n\
         dd if=/tmp/data of=/dev/$d bs=4096 seek={SEEK_BLOCKS} oflag=direct || exit 1\n\
         dd if=/dev/$d of=/tmp/back bs=4096 skip={SEEK_BLOCKS} count={COUNT_BLOCKS} iflag=direct || exit 2\n\
         case $(cat /sys/block/$d/size) in {vm_sectors}) s=vmdisk;; {io_sectors}) s=iodisk;; *) s=$d;; esac\n\
         echo \"GUEST-RESULT $s-written=$(sha256sum < /tmp/data | cut -d' ' -f1)\"\n\
         echo \"GUEST-RESULT $s-read=$(sha256sum < /tmp/back | cut -d' ' -f1)\"\n\
         done\n",
        vm_sectors = IMAGE_SIZE / 512,
        io_sectors = IOTHREAD_IMAGE_SIZE / 512,
    );
    let initrd = guest::Initramfs::new(&dir, &kernel)
        .modules(&["virtio_pci", "virtio_blk"])
        .build(&script);
    let drive = format!(
        "file={},format=raw,if=virtio,cache=none",
        filename(&cluster, "vmdisk").replace(',', ",,")
    );
    let iothread_drive = format!(
        "file={},format=raw,if=none,id=iodisk,cache=none",
        filename(&cluster, "iodisk").replace(',', ",,")
    );
    let qemu_args: Vec<String> = [
        "-drive",
        &drive,
        "-object",
        "iothread,id=io1",
        "-drive",
        &iothread_drive,
        "-device",
        "virtio-blk-pci,drive=iodisk,iothread=io1",
        "-nic",
        "none",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let preload = driver.to_str().expect("utf-8 path").to_string();
    let run = guest::boot(
        &kernel,
        &initrd,
        &qemu_args,
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
    // The guest names each disk by its size (the PCI order of the two is QEMU's choice).
    for image in ["vmdisk", "iodisk"] {
        let written = run
            .result(&format!("{image}-written"))
            .unwrap_or_else(|| panic!("no result for {image}:\n{}", run.console));
        let read = run.result(&format!("{image}-read"));
        assert_eq!(read.as_deref(), Some(written.as_str()), "{}", run.console);
        // The host reads the same bytes through vitastor-nbd serve.
        let data = read_through_nbd(&cluster, image);
        let start = (SEEK_BLOCKS * 4096) as usize;
        let end = start + (COUNT_BLOCKS * 4096) as usize;
        assert_eq!(sha256_hex(&data[start..end]), written, "{image}");
        assert!(
            data[..start].iter().all(|&b| b == 0),
            "{image}: bytes before changed"
        );
        assert!(
            data[end..].iter().all(|&b| b == 0),
            "{image}: bytes after changed"
        );
    }
}
