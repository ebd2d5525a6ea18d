//! Get Log Page data: error, SMART, firmware slot, changed namespaces, commands supported
//! and effects, ANA, and the discovery log. Each builder returns the whole page; the
//! caller cuts out the offset and length the host asked for.
//!
//! ```text
//! ANA (0x0C):       0 chgcnt u64 | 8 ngrps u16 | 16.. group descriptors:
//!                   0 grpid u32 | 4 nnsids u32 | 8 chgcnt u64 | 16 state u8 | 32.. nsids u32
//! Discovery (0x70): 0 genctr u64 | 8 numrec u64 | 16 recfmt u16 | 1024.. 1024-byte entries:
//!                   0 trtype | 1 adrfam | 2 subtype | 3 treq | 4 portid u16 | 6 cntlid u16
//!                   8 asqsz u16 | 32 trsvcid[32] | 256 subnqn[256] | 512 traddr[256]
//!                   768 tsas (TCP: sectype byte)
//! ```

use crate::command::put_nul_padded;
use crate::command::{admin_op, io_op};
use crate::config::{ListenAddress, NamespaceConfig, SubsystemConfig};
use crate::controller::QUEUE_ENTRIES_MAX;
use crate::identify::FIRMWARE_REVISION;
use crate::target::IoStats;
use std::sync::atomic::Ordering;

/// Log page identifiers.
pub mod lid {
    pub const ERROR: u8 = 0x01;
    pub const SMART: u8 = 0x02;
    pub const FIRMWARE_SLOT: u8 = 0x03;
    pub const CHANGED_NS: u8 = 0x04;
    pub const COMMANDS_EFFECTS: u8 = 0x05;
    pub const ANA: u8 = 0x0c;
    pub const DISCOVERY: u8 = 0x70;
}

pub const DISCOVERY_HEADER_BYTES: usize = 1024;
pub const DISCOVERY_ENTRY_BYTES: usize = 1024;

/// Error information: one all-zero entry (no errors are logged).
pub fn error_log() -> Vec<u8> {
    vec![0u8; 64]
}

/// SMART / health: no warnings, a plausible temperature, spare 100 %, and the data
/// units and commands counted over the subsystem's bdevs.
pub fn smart(stats: &[&IoStats]) -> Vec<u8> {
    let mut page = vec![0u8; 512];
    page[1..3].copy_from_slice(&313u16.to_le_bytes()); // 40 degrees C in Kelvin
    page[3] = 100; // available spare
    page[4] = 10; // spare threshold
    let sum =
        |f: &dyn Fn(&IoStats) -> u64| -> u128 { stats.iter().map(|s| u128::from(f(s))).sum() };
    // Data units are thousands of 512-byte units, rounded up.
    let units = |bytes: u128| bytes.div_ceil(512_000);
    let read = units(sum(&|s| s.bytes_read.load(Ordering::Relaxed)));
    let written = units(sum(&|s| s.bytes_written.load(Ordering::Relaxed)));
    page[32..48].copy_from_slice(&read.to_le_bytes());
    page[48..64].copy_from_slice(&written.to_le_bytes());
    let reads = sum(&|s| s.num_read_ops.load(Ordering::Relaxed));
    let writes = sum(&|s| s.num_write_ops.load(Ordering::Relaxed));
    page[64..80].copy_from_slice(&reads.to_le_bytes());
    page[80..96].copy_from_slice(&writes.to_le_bytes());
    page
}

pub fn firmware_slot() -> Vec<u8> {
    let mut page = vec![0u8; 512];
    page[0] = 1; // slot 1 active
    crate::command::put_ascii(&mut page[8..16], FIRMWARE_REVISION);
    page
}

/// Changed namespace list; `None` (overflow) is reported as 0xFFFFFFFF first.
pub fn changed_namespaces(list: Option<Vec<u32>>) -> Vec<u8> {
    let mut page = vec![0u8; 4096];
    match list {
        None => page[0..4].copy_from_slice(&u32::MAX.to_le_bytes()),
        Some(list) => {
            for (i, nsid) in list.iter().take(1024).enumerate() {
                page[i * 4..i * 4 + 4].copy_from_slice(&nsid.to_le_bytes());
            }
        }
    }
    page
}

/// Commands supported and effects: admin at 0.., I/O at 1024..; bit 0 supported, bit 1
/// changes logical block content.
pub fn commands_effects() -> Vec<u8> {
    let mut page = vec![0u8; 4096];
    let mut set = |base: usize, opcode: u8, effects: u32| {
        let at = base + usize::from(opcode) * 4;
        page[at..at + 4].copy_from_slice(&effects.to_le_bytes());
    };
    for op in [
        admin_op::GET_LOG_PAGE,
        admin_op::IDENTIFY,
        admin_op::ABORT,
        admin_op::SET_FEATURES,
        admin_op::GET_FEATURES,
        admin_op::ASYNC_EVENT_REQUEST,
        admin_op::KEEP_ALIVE,
    ] {
        set(0, op, 1);
    }
    set(1024, io_op::FLUSH, 1);
    set(1024, io_op::READ, 1);
    for op in [io_op::WRITE, io_op::WRITE_ZEROES, io_op::DATASET_MANAGEMENT] {
        set(1024, op, 0b11);
    }
    page
}

/// The ANA log: one group per namespace's ANA group, with the state this listener
/// reports for it. `groups_only` (LSP bit 0, RGO) leaves out the nsid lists.
pub fn ana(
    change_count: u64,
    namespaces: &[NamespaceConfig],
    state_of: &dyn Fn(u32) -> u8,
    groups_only: bool,
) -> Vec<u8> {
    let mut groups: Vec<u32> = namespaces.iter().map(|ns| ns.anagrpid).collect();
    groups.sort_unstable();
    groups.dedup();
    let mut page = vec![0u8; 16];
    page[0..8].copy_from_slice(&change_count.to_le_bytes());
    page[8..10].copy_from_slice(&(groups.len() as u16).to_le_bytes());
    for group in groups {
        let nsids: Vec<u32> = namespaces
            .iter()
            .filter(|ns| ns.anagrpid == group)
            .map(|ns| ns.nsid)
            .collect();
        let mut desc = vec![0u8; 32];
        desc[0..4].copy_from_slice(&group.to_le_bytes());
        let listed = if groups_only { 0 } else { nsids.len() as u32 };
        desc[4..8].copy_from_slice(&listed.to_le_bytes());
        desc[8..16].copy_from_slice(&change_count.to_le_bytes());
        desc[16] = state_of(group);
        if !groups_only {
            for nsid in nsids {
                desc.extend_from_slice(&nsid.to_le_bytes());
            }
        }
        page.extend_from_slice(&desc);
    }
    page
}

/// One discovery log entry: an NVMe subsystem reachable at a TCP address.
fn discovery_entry(subsystem: &SubsystemConfig, address: &ListenAddress, portid: u16) -> Vec<u8> {
    let mut entry = vec![0u8; DISCOVERY_ENTRY_BYTES];
    entry[0] = 3; // trtype: TCP
    entry[1] = if address.adrfam.eq_ignore_ascii_case("ipv6") {
        2
    } else {
        1
    };
    entry[2] = 2; // subtype: NVMe subsystem
    entry[3] = 2; // treq: secure channel not required
    entry[4..6].copy_from_slice(&portid.to_le_bytes());
    entry[6..8].copy_from_slice(&0xffffu16.to_le_bytes()); // dynamic controllers
    entry[8..10].copy_from_slice(&QUEUE_ENTRIES_MAX.to_le_bytes());
    crate::command::put_ascii(&mut entry[32..64], &address.trsvcid);
    put_nul_padded(&mut entry[256..512], &subsystem.nqn);
    crate::command::put_ascii(&mut entry[512..768], &address.traddr);
    entry[768] = 1; // TSAS for TCP: sectype none
    entry
}

/// The discovery log a host sees: every listener of every subsystem it may connect to.
pub fn discovery(genctr: u64, subsystems: &[SubsystemConfig], hostnqn: &str) -> Vec<u8> {
    let mut entries = Vec::new();
    for subsystem in subsystems.iter().filter(|s| s.host_allowed(hostnqn)) {
        for listener in &subsystem.listeners {
            let portid = listener.address.trsvcid.parse::<u16>().unwrap_or(0);
            entries.push(discovery_entry(subsystem, &listener.address, portid));
        }
    }
    let mut page = vec![0u8; DISCOVERY_HEADER_BYTES];
    page[0..8].copy_from_slice(&genctr.to_le_bytes());
    page[8..16].copy_from_slice(&(entries.len() as u64).to_le_bytes());
    for entry in entries {
        page.extend_from_slice(&entry);
    }
    page
}

/// The part of a page the host asked for, zero-filled past the page's end.
pub fn window(page: &[u8], offset_bytes: u64, len_bytes: usize) -> Vec<u8> {
    let mut out = vec![0u8; len_bytes];
    if let Ok(start) = usize::try_from(offset_bytes) {
        if start < page.len() {
            let n = (page.len() - start).min(len_bytes);
            out[..n].copy_from_slice(&page[start..start + n]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_lists_only_allowed_subsystems() {
        let listener = crate::config::ListenerConfig {
            address: ListenAddress {
                trtype: "TCP".into(),
                adrfam: "IPv4".into(),
                traddr: "127.0.0.1".into(),
                trsvcid: "4420".into(),
            },
            ana_states: Default::default(),
        };
        let sub = |nqn: &str, any: bool| SubsystemConfig {
            nqn: nqn.into(),
            serial_number: "S".into(),
            model_number: "M".into(),
            allow_any_host: any,
            hosts: vec!["nqn.host1".into()],
            min_cntlid: 1,
            max_cntlid: 10,
            ana_reporting: false,
            max_namespaces: 32,
            namespaces: vec![],
            listeners: vec![listener.clone()],
        };
        let subs = vec![sub("nqn.a", false), sub("nqn.b", true)];
        let page = discovery(7, &subs, "nqn.host2");
        assert_eq!(u64::from_le_bytes(page[8..16].try_into().unwrap()), 1);
        assert_eq!(&page[1024 + 256..1024 + 261], b"nqn.b");
        let page = discovery(7, &subs, "nqn.host1");
        assert_eq!(u64::from_le_bytes(page[8..16].try_into().unwrap()), 2);
        assert_eq!(page.len(), 1024 * 3);
        assert_eq!(&page[1024 + 32..1024 + 36], b"4420");
    }

    #[test]
    fn window_pads_and_cuts() {
        let page = vec![1u8; 10];
        assert_eq!(window(&page, 8, 4), vec![1, 1, 0, 0]);
        assert_eq!(window(&page, 100, 2), vec![0, 0]);
    }
}
