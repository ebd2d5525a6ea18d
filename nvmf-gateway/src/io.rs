//! I/O commands on a namespace: Read, Write, Flush, Write Zeroes, Dataset Management.
//! Each is checked (namespace, ANA state, range, transfer size), admitted by the bdev's
//! QoS, run on its device and counted.
//!
//! A cluster error that is not the command's fault (a timeout, an unreachable OSD) is
//! answered with a path error, so a multipath host retries on another gateway.

use crate::admin::Outcome;
use crate::command::{io_op, Sqe, Status};
use crate::config::AnaState;
use crate::controller::{Controller, TRANSFER_MAX_BYTES};
use crate::device::{IoError, BLOCK_BYTES};
use crate::target::{Bdev, Target};
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Ranges one Dataset Management command may carry (NR is 8 bits, 0's based).
pub const DSM_RANGES_MAX: usize = 256;
pub const DSM_RANGE_BYTES: usize = 16;

/// Internal path error: the host may retry on another path.
const PATH_ERROR: Status = Status::path(0x00);

fn status_of(error: &IoError) -> Status {
    match error.errno {
        libc_errno::EROFS => Status::WRITE_TO_READ_ONLY,
        libc_errno::EINVAL => Status::INVALID_FIELD,
        libc_errno::ENOENT => Status::NAMESPACE_NOT_READY,
        _ => PATH_ERROR,
    }
}

/// The errno values the client reports (Linux numbers).
mod libc_errno {
    pub const ENOENT: i32 = 2;
    pub const EINVAL: i32 = 22;
    pub const EROFS: i32 = 30;
}

/// Byte range of `slba` + `nlb` (0's based) blocks, if inside the device.
fn block_range(bdev: &Bdev, slba: u64, nlb: u32) -> Result<(u64, u64), Status> {
    let blocks = u64::from(nlb) + 1;
    let size_blocks = bdev.device.size_bytes() / BLOCK_BYTES;
    match slba.checked_add(blocks) {
        Some(end) if end <= size_blocks => Ok((slba * BLOCK_BYTES, blocks * BLOCK_BYTES)),
        _ => Err(Status::LBA_OUT_OF_RANGE),
    }
}

fn add_latency(counter: &std::sync::atomic::AtomicU64, start: Instant) {
    counter.fetch_add(start.elapsed().as_micros() as u64, Ordering::Relaxed);
}

/// Runs one I/O command; `data` is the write data the host sent.
pub async fn execute(
    target: &Target,
    controller: &Controller,
    sqe: &Sqe,
    data: Vec<u8>,
) -> Outcome {
    let Some(view) = target.namespace_view(controller, sqe.nsid()) else {
        return Outcome::status(Status::INVALID_NAMESPACE);
    };
    if view.ana_state == AnaState::Inaccessible {
        return Outcome::status(Status::ANA_INACCESSIBLE);
    }
    let bdev = view.bdev;
    let slba = sqe.u64_at(40);
    let nlb = sqe.cdw(12) & 0xffff;
    match sqe.opcode() {
        io_op::READ => {
            let (offset, len) = match block_range(&bdev, slba, nlb) {
                Ok(range) => range,
                Err(status) => return Outcome::status(status),
            };
            if len > u64::from(TRANSFER_MAX_BYTES) || len != u64::from(sqe.sgl_length_bytes()) {
                return Outcome::status(Status::SGL_INVALID_DATA_LENGTH);
            }
            bdev.qos.admit(false, len).await;
            let start = Instant::now();
            match bdev.device.read(offset, len).await {
                Ok(data) => {
                    assert_eq!(data.len() as u64, len, "the device returns what was asked");
                    bdev.stats.num_read_ops.fetch_add(1, Ordering::Relaxed);
                    bdev.stats.bytes_read.fetch_add(len, Ordering::Relaxed);
                    add_latency(&bdev.stats.read_latency_us, start);
                    Outcome::data(data)
                }
                Err(error) => {
                    tracing::warn!("read {offset}+{len} of {}: {}", bdev.name(), error.message);
                    Outcome::status(status_of(&error))
                }
            }
        }
        io_op::WRITE => {
            let (offset, len) = match block_range(&bdev, slba, nlb) {
                Ok(range) => range,
                Err(status) => return Outcome::status(status),
            };
            if len != data.len() as u64 {
                return Outcome::status(Status::SGL_INVALID_DATA_LENGTH);
            }
            if bdev.device.read_only() {
                return Outcome::status(Status::WRITE_TO_READ_ONLY);
            }
            bdev.qos.admit(true, len).await;
            let start = Instant::now();
            match bdev.device.write(offset, data).await {
                Ok(()) => {
                    bdev.stats.num_write_ops.fetch_add(1, Ordering::Relaxed);
                    bdev.stats.bytes_written.fetch_add(len, Ordering::Relaxed);
                    add_latency(&bdev.stats.write_latency_us, start);
                    Outcome::ok(0)
                }
                Err(error) => {
                    tracing::warn!("write {offset}+{len} of {}: {}", bdev.name(), error.message);
                    Outcome::status(status_of(&error))
                }
            }
        }
        io_op::FLUSH => match bdev.device.flush().await {
            Ok(()) => Outcome::ok(0),
            Err(error) => Outcome::status(status_of(&error)),
        },
        io_op::WRITE_ZEROES => {
            let (offset, len) = match block_range(&bdev, slba, nlb) {
                Ok(range) => range,
                Err(status) => return Outcome::status(status),
            };
            if bdev.device.read_only() {
                return Outcome::status(Status::WRITE_TO_READ_ONLY);
            }
            bdev.qos.admit(true, 0).await;
            match bdev.device.write_zeroes(offset, len).await {
                Ok(()) => {
                    bdev.stats.num_write_ops.fetch_add(1, Ordering::Relaxed);
                    Outcome::ok(0)
                }
                Err(error) => Outcome::status(status_of(&error)),
            }
        }
        io_op::DATASET_MANAGEMENT => dataset_management(&bdev, sqe, &data).await,
        _ => Outcome::status(Status::INVALID_OPCODE),
    }
}

/// Dataset Management: only the deallocate attribute does anything (a hint: whole
/// objects are deleted).
async fn dataset_management(bdev: &Bdev, sqe: &Sqe, data: &[u8]) -> Outcome {
    let ranges = (sqe.cdw(10) & 0xff) as usize + 1;
    assert!(ranges <= DSM_RANGES_MAX, "NR is 8 bits");
    if data.len() < ranges * DSM_RANGE_BYTES {
        return Outcome::status(Status::SGL_INVALID_DATA_LENGTH);
    }
    let deallocate = sqe.cdw(11) & (1 << 2) != 0;
    if !deallocate {
        return Outcome::ok(0);
    }
    if bdev.device.read_only() {
        return Outcome::status(Status::WRITE_TO_READ_ONLY);
    }
    let size_blocks = bdev.device.size_bytes() / BLOCK_BYTES;
    for range in data[..ranges * DSM_RANGE_BYTES].chunks_exact(DSM_RANGE_BYTES) {
        let blocks = u64::from(u32::from_le_bytes([range[4], range[5], range[6], range[7]]));
        let slba = u64::from_le_bytes(range[8..16].try_into().expect("8 bytes"));
        if blocks == 0 {
            continue;
        }
        match slba.checked_add(blocks) {
            Some(end) if end <= size_blocks => {}
            _ => return Outcome::status(Status::LBA_OUT_OF_RANGE),
        }
        bdev.qos.admit(true, 0).await;
        if let Err(error) = bdev
            .device
            .deallocate(slba * BLOCK_BYTES, blocks * BLOCK_BYTES)
            .await
        {
            return Outcome::status(status_of(&error));
        }
        bdev.stats.num_unmap_ops.fetch_add(1, Ordering::Relaxed);
        bdev.stats
            .bytes_unmapped
            .fetch_add(blocks * BLOCK_BYTES, Ordering::Relaxed);
    }
    Outcome::ok(0)
}
