//! Identify data structures (4096 bytes each), built from the subsystem's configuration.
//!
//! Identify Controller, the fields we set (byte offsets):
//!
//! ```text
//!   0 vid | 4 sn[20] | 24 mn[40] | 64 fr[8] | 72 rab | 76 cmic | 77 mdts | 78 cntlid
//!  80 ver | 92 oaes | 96 ctratt | 111 cntrltype | 128 crdt1..3 | 256 oacs | 258 acl
//! 259 aerl | 260 frmw | 261 lpa | 262 elpe | 320 kas (100 ms) | 342 anatt | 343 anacap
//! 344 anagrpmax | 348 nanagrpid | 512 sqes | 513 cqes | 514 maxcmd | 516 nn | 520 oncs
//! 525 vwc | 536 sgls | 540 mnan | 768 subnqn[256] | 1792 ioccsz | 1796 iorcsz
//! 1800 icdoff | 1802 fcatt | 1803 msdbd
//! ```
//!
//! Identify Namespace: `0 nsze | 8 ncap | 16 nuse | 24 nsfeat | 25 nlbaf | 26 flbas
//! | 30 nmic | 33 dlfeat | 92 anagrpid | 104 nguid[16] | 128 lbaf[0]`.

use crate::command::{put_ascii, put_nul_padded};
use crate::config::{NamespaceConfig, SubsystemConfig, DISCOVERY_NQN};
use crate::controller::{Controller, MDTS_POW2, QUEUE_ENTRIES_MAX, VERSION};
use crate::device::BLOCK_BYTES;

pub const IDENTIFY_BYTES: usize = 4096;
/// In-capsule data accepted on every queue: the Linux host sends up to 8 KiB in-capsule
/// on the admin queue and uses IOCCSZ on I/O queues.
pub const IN_CAPSULE_DATA_MAX_BYTES: usize = 8192;
/// The firmware revision reported (Identify and the firmware slot log).
pub const FIRMWARE_REVISION: &str = "0.1.0";
/// Identify CNS values.
pub mod cns {
    pub const NAMESPACE: u8 = 0x00;
    pub const CONTROLLER: u8 = 0x01;
    pub const ACTIVE_NS_LIST: u8 = 0x02;
    pub const NS_DESCRIPTORS: u8 = 0x03;
}

fn put_u16(buf: &mut [u8], at: usize, value: u16) {
    buf[at..at + 2].copy_from_slice(&value.to_le_bytes());
}

fn put_u32(buf: &mut [u8], at: usize, value: u32) {
    buf[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn put_u64(buf: &mut [u8], at: usize, value: u64) {
    buf[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

/// Identify Controller of an I/O controller.
pub fn controller(ctrl: &Controller, subsystem: &SubsystemConfig, crdt: [u16; 3]) -> Vec<u8> {
    let mut id = vec![0u8; IDENTIFY_BYTES];
    common_controller_fields(&mut id, ctrl, &subsystem.nqn);
    put_ascii(&mut id[4..24], &subsystem.serial_number);
    put_ascii(&mut id[24..64], &subsystem.model_number);
    // CMIC: multi-port, multi-controller, and ANA reporting when asked: with it a Linux
    // host joins the paths of two gateways into one multipath namespace.
    id[76] = 0b011 | if subsystem.ana_reporting { 1 << 3 } else { 0 };
    // OAES: namespace attribute notices, ANA change notices.
    put_u32(
        &mut id,
        92,
        (1 << 8) | if subsystem.ana_reporting { 1 << 11 } else { 0 },
    );
    id[111] = 1; // cntrltype: I/O controller
    put_u16(&mut id, 128, crdt[0]);
    put_u16(&mut id, 130, crdt[1]);
    put_u16(&mut id, 132, crdt[2]);
    if subsystem.ana_reporting {
        id[342] = 10; // ANATT: seconds to leave the transition state
                      // ANACAP: reports optimized, non-optimized, inaccessible; group ids do not change
                      // while a namespace is attached (bit 6).
        id[343] = 0b0100_1011;
        put_u32(&mut id, 344, subsystem.max_namespaces);
        put_u32(&mut id, 348, subsystem.max_namespaces);
    }
    put_u32(&mut id, 516, subsystem.max_namespaces);
    // ONCS: Dataset Management (bit 2), Write Zeroes (bit 3).
    put_u16(&mut id, 520, (1 << 2) | (1 << 3));
    // VWC: a volatile write cache is present (Flush syncs the cluster's unsynced writes).
    id[525] = 1;
    put_u32(&mut id, 540, subsystem.max_namespaces);
    id
}

/// Identify Controller of a discovery controller.
pub fn discovery_controller(ctrl: &Controller) -> Vec<u8> {
    let mut id = vec![0u8; IDENTIFY_BYTES];
    common_controller_fields(&mut id, ctrl, DISCOVERY_NQN);
    put_ascii(&mut id[4..24], "vitastor-discovery");
    put_ascii(&mut id[24..64], "Vitastor NVMe-oF discovery");
    id[111] = 2; // cntrltype: discovery controller
    id
}

fn common_controller_fields(id: &mut [u8], ctrl: &Controller, nqn: &str) {
    put_ascii(&mut id[64..72], FIRMWARE_REVISION);
    id[72] = 6; // RAB
    id[77] = MDTS_POW2;
    put_u16(id, 78, ctrl.cntlid);
    put_u32(id, 80, VERSION);
    id[259] = 3; // AERL: 4 outstanding
    id[260] = 0b11; // FRMW: slot 1 read-only, one slot
                    // LPA: SMART per namespace (bit 0), commands supported and effects (bit 1),
                    // extended data for Get Log Page (bit 2).
    id[261] = 0b111;
    id[262] = 0; // ELPE: one error log entry
    put_u16(id, 320, 1); // KAS: keep-alive granularity 100 ms
    id[512] = 0x66; // SQES: 64 bytes
    id[513] = 0x44; // CQES: 16 bytes
    put_u16(id, 514, QUEUE_ENTRIES_MAX);
    // SGLS: SGLs supported (bit 0), SGL data block address as offset (bit 20).
    put_u32(id, 536, 1 | (1 << 20));
    put_nul_padded(&mut id[768..1024], nqn);
    put_u32(id, 1792, ((64 + IN_CAPSULE_DATA_MAX_BYTES) / 16) as u32); // IOCCSZ
    put_u32(id, 1796, 1); // IORCSZ: 16 bytes
    put_u16(id, 1800, 0); // ICDOFF
    id[1802] = 0; // FCATT: dynamic controller model
    id[1803] = 1; // MSDBD
}

/// Identify Namespace for an active namespace.
pub fn namespace(ns: &NamespaceConfig, size_bytes: u64, ana_reporting: bool) -> Vec<u8> {
    let mut id = vec![0u8; IDENTIFY_BYTES];
    let blocks = size_bytes / BLOCK_BYTES;
    put_u64(&mut id, 0, blocks);
    put_u64(&mut id, 8, blocks);
    put_u64(&mut id, 16, blocks);
    id[24] = 1 << 3; // NSFEAT: NGUID and EUI64 are never reused
    id[25] = 0; // NLBAF: one format
    id[26] = 0; // FLBAS: format 0
    id[30] = 1; // NMIC: may be attached to two or more controllers
    id[33] = 0; // DLFEAT: deallocated blocks read unspecified (trim is a hint)
    if ana_reporting {
        put_u32(&mut id, 92, ns.anagrpid);
    }
    id[104..120].copy_from_slice(&ns.nguid);
    // LBA format 0: no metadata, 2^12 = 4096-byte blocks, best performance.
    put_u32(&mut id, 128, (BLOCK_BYTES.trailing_zeros()) << 16);
    id
}

/// Active namespace list: nsids above `after`, ascending, at most 1024.
pub fn active_namespaces(nsids: &[u32], after: u32) -> Vec<u8> {
    let mut id = vec![0u8; IDENTIFY_BYTES];
    let mut listed: Vec<u32> = nsids.iter().copied().filter(|n| *n > after).collect();
    listed.sort_unstable();
    for (i, nsid) in listed.iter().take(IDENTIFY_BYTES / 4).enumerate() {
        put_u32(&mut id, i * 4, *nsid);
    }
    id
}

/// Namespace identification descriptors: NGUID (type 2) and UUID (type 3).
pub fn namespace_descriptors(ns: &NamespaceConfig) -> Vec<u8> {
    let mut id = vec![0u8; IDENTIFY_BYTES];
    id[0] = 2;
    id[1] = 16;
    id[4..20].copy_from_slice(&ns.nguid);
    id[20] = 3;
    id[21] = 16;
    id[24..40].copy_from_slice(&ns.uuid);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_list_is_sorted_and_filtered() {
        let list = active_namespaces(&[5, 1, 3], 1);
        assert_eq!(&list[0..4], &3u32.to_le_bytes());
        assert_eq!(&list[4..8], &5u32.to_le_bytes());
        assert_eq!(&list[8..12], &[0; 4]);
    }

    #[test]
    fn namespace_reports_4k_blocks_and_the_identity() {
        let ns = NamespaceConfig {
            nsid: 1,
            bdev_name: "b".into(),
            uuid: [1; 16],
            nguid: [2; 16],
            anagrpid: 1,
        };
        let id = namespace(&ns, 1 << 20, true);
        assert_eq!(u64::from_le_bytes(id[0..8].try_into().unwrap()), 256);
        assert_eq!(id[128 + 2], 12);
        assert_eq!(&id[104..120], &[2; 16]);
        assert_eq!(u32::from_le_bytes(id[92..96].try_into().unwrap()), 1);
        let desc = namespace_descriptors(&ns);
        assert_eq!((desc[0], desc[1], desc[20], desc[21]), (2, 16, 3, 16));
        assert_eq!(&desc[24..40], &[1; 16]);
    }
}
