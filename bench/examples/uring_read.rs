//! Diagnostic: random 4 KiB reads at depth 32 straight through UringDisk (no blockstore).
use rand::{Rng, SeedableRng};
use std::time::Instant;
use vitastor_osd::blockstore::disk::{Disk, IoCompletion, IoKind, IoRequest};
use vitastor_osd::blockstore::uring::UringDisk;
use vitastor_osd::blockstore::AlignedBuf;

fn main() {
    let path = std::env::args().nth(1).expect("path");
    let mut disk = UringDisk::open(std::path::Path::new(&path)).unwrap();
    let size = disk.size() / 4096;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
    let mut bufs: Vec<AlignedBuf> = (0..32).map(|_| AlignedBuf::new(4096)).collect();
    for (i, buf) in bufs.iter_mut().enumerate() {
        let offset = rng.gen_range(0..size) * 4096;
        unsafe {
            disk.submit(IoRequest {
                tag: i as u64,
                kind: IoKind::Read,
                offset,
                buf: buf.as_mut_ptr(),
                len: 4096,
            })
        };
    }
    let start = Instant::now();
    let mut done: Vec<IoCompletion> = Vec::new();
    let mut ops = 0u64;
    while start.elapsed().as_secs() < 5 {
        disk.poll(1, &mut done).unwrap();
        for c in done.drain(..) {
            ops += 1;
            let offset = rng.gen_range(0..size) * 4096;
            let buf = &mut bufs[c.tag as usize];
            unsafe {
                disk.submit(IoRequest {
                    tag: c.tag,
                    kind: IoKind::Read,
                    offset,
                    buf: buf.as_mut_ptr(),
                    len: 4096,
                })
            };
        }
    }
    println!("{:.0} iops", ops as f64 / start.elapsed().as_secs_f64());
}
